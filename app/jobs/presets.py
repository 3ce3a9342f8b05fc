"""Ready-made runs for the Lab and for instructors' demo mode: one click, a fixed seed, a known story."""

from __future__ import annotations

from dataclasses import dataclass, field

from app.settings import ROOT

SHOWCASE = ["school bus", "computer keyboard", "chainlink fence", "bagel", "paddle", "projector",
            "king penguin", "starfish", "baseball", "electric guitar"]
SAMPLE_SEVEN = ROOT / "static" / "samples" / "mnist-test-7.png"  # a real MNIST test digit (index 0)


@dataclass(frozen=True)
class Preset:
    name: str
    title: str
    story: str
    spec: dict = field(default_factory=dict)
    sample_image: str | None = None  # file under static/samples used as the job's image


PRESETS = [
    Preset("every-digit-from-noise", "Every digit from noise",
           "Direct encoding, MAP-Elites over all ten digits: random pixels evolve until LeNet is "
           "99.99% sure of each digit. No image looks like a digit.",
           {"model": "lenet-mnist", "method": "map-elites", "encoding": "direct", "targets": "all",
            "population": 100, "generations": 3000, "seed": 0}),
    Preset("digits-as-patterns", "Digits as regular patterns (CPPN)",
           "Indirect encoding: compositional pattern-producing networks evolve stripes, rings and "
           "waves that LeNet calls digits with 99.99% confidence, as in the paper's Figure 5.",
           {"model": "lenet-mnist", "method": "map-elites", "encoding": "cppn", "targets": "all",
            "population": 100, "generations": 3000, "seed": 0}),
    Preset("school-bus-from-stripes", "A school bus from stripes",
           "Gradient ascent through a CPPN: the network's weights are tuned until EfficientNet sees a "
           "school bus in a colourful pattern.",
           {"model": "efficientnet-lite0-imagenet", "method": "gradient", "encoding": "cppn",
            "targets": ["school bus"], "steps": 300, "seed": 0, "params": {"stop_at": 0.99}}),
    Preset("invisible-7-to-3", "A small change turns a 7 into a 3",
           "Targeted PGD on a real test digit: a change of at most 0.2 per pixel (faint, but visible if you "
           "look), and LeNet reads 3.",
           {"model": "lenet-mnist", "method": "pgd", "targets": [3], "steps": 40, "seed": 0,
            "params": {"epsilon": 0.2, "step_size": 0.01}}, sample_image="mnist-test-7.png"),
    Preset("showcase-gradient", "Ten ImageNet classes by gradient ascent",
           "Pixel gradient ascent on the paper's showcase classes: 99% within a few steps.",
           {"model": "efficientnet-lite0-imagenet", "method": "gradient", "encoding": "direct",
            "targets": SHOWCASE, "steps": 100, "seed": 0, "params": {"stop_at": 0.99}}),
    Preset("noise-baseline", "How sure is LeNet about pure noise?",
           "The honest baseline: 10,000 uniform-noise images scored. One might expect low confidence; "
           "see what this LeNet does.",
           {"model": "lenet-mnist", "method": "random", "targets": "all", "seed": 0,
            "params": {"batches": 10, "batch_size": 1000}}),
    Preset("imagenet-cppn-evolution", "ImageNet CPPN evolution (10-minute budget)",
           "The paper's headline method on the CPU: MAP-Elites with CPPNs over the showcase classes, "
           "stopped after ten minutes. Watch the curve climb.",
           {"model": "efficientnet-lite0-imagenet", "method": "map-elites", "encoding": "cppn",
            "targets": SHOWCASE, "population": 32, "generations": 20000, "seed": 0, "max_seconds": 600}),
]
BY_NAME = {p.name: p for p in PRESETS}
