"""Input smoothing as a defence: Gaussian blur, median filter and bit-depth reduction in front of
LeNet. As the strength grows: confidence on fooling images beside accuracy on real test digits,
and whether evolution against the smoothed network still reaches 99.99%."""

from __future__ import annotations

import torch
from torch import nn

from app.data import mnist
from app.experiments.common import Context, evolve_fooling, plot
from app.models import filters


def gaussian(strength: float):
    return (lambda x: x) if strength <= 0 else (lambda x: filters.blur(x, strength))


def median(strength: float):
    return lambda x: filters.median(x, int(strength))


def bit_depth(strength: float):
    return lambda x: filters.bit_depth(x, int(strength))


FILTERS = {  # name -> (make filter, strengths from none to strong)
    "gaussian blur (sigma)": (gaussian, [0.0, 0.5, 1.0, 1.5, 2.0]),
    "median filter (size)": (median, [1, 3, 5]),
    "bit depth (bits)": (bit_depth, [8, 4, 2, 1]),
}


class Smoothed(nn.Module):
    """The filter in front of the network, so that evolution sees only the defended model."""

    def __init__(self, model: nn.Module, fn) -> None:
        super().__init__()
        self.model, self.fn = model, fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(self.fn(x))


@torch.inference_mode()
def measure(model, fn, fooling, targets, x, y) -> tuple[float, float]:
    probs = torch.softmax(model(fn(fooling)), -1)
    conf = float(probs.gather(1, targets[:, None]).mean())
    acc = float((model(fn(x)).argmax(1) == y).float().mean())
    return conf, acc


def run(ctx: Context) -> dict:
    model = ctx.model("lenet-mnist")
    targets = torch.arange(10)
    ctx.log("evolving fooling images against the plain network")
    fooling, evo = evolve_fooling(model, targets.tolist(), ctx.seed, 300 if ctx.quick else 3000)
    x, y = mnist.load(ctx.settings.data_dir, train=False)
    n = 1000 if ctx.quick else len(x)
    x, y = x[:n], y[:n]
    results = {}
    for name, (make, strengths) in FILTERS.items():
        rows = []
        for s in strengths:
            conf, acc = measure(model, make(s), fooling, targets, x, y)
            rows.append({"strength": s, "fooling_confidence": conf, "test_accuracy": acc})
            ctx.log(f"{name} {s}: fooling {conf:.4f}, accuracy {acc:.4f}")
        results[name] = rows
        slug = name.split(" (")[0].replace(" ", "-")
        plot(ctx.out / f"smoothing-{slug}.png", f"{name}: defence and its cost", name.split("(")[1].rstrip(")"),
             "mean / share", {"confidence on fooling images": (strengths, [r["fooling_confidence"] for r in rows]),
                              "accuracy on real test digits": (strengths, [r["test_accuracy"] for r in rows])},
             ylim=(0, 1.02))
    # does evolution against the smoothed network still win?
    ctx.log("evolving against the blurred network (sigma 1)")
    _, against = evolve_fooling(Smoothed(model, gaussian(1.0)), targets.tolist(), ctx.seed,
                                300 if ctx.quick else 3000)
    return {"test_images": n, "fooling_evolution": evo, "filters": results,
            "evolution_against_blur_sigma_1": against,
            "plots": [f"smoothing-{k.split(' (')[0].replace(' ', '-')}.png" for k in FILTERS]}
