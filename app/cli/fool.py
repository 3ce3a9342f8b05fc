"""``fooling-lab fool``: run one method from the command line and write its results.

It drives the same Run as a job on the server, so OUT holds exactly what a job's downloads hold:
``<position>.png`` for each target's best image, grid.png (a labelled grid like the paper's
figures), curve.png, summary.json (settings, seed, per target: label, confidence, when it reached
99.99%; the curve), and input.png for a job on a real image.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from pydantic import ValidationError

from app.cli.progress import StepProgress, wanted
from app.files import write_whole
from app.fooling.base import model_score_fn, resolve_targets
from app.fooling.info import ADVERSARIAL, EVOLUTIONARY
from app.jobs.limits import check_params
from app.jobs.run import Run, runtime_of
from app.jobs.spec import JobSpec
from app.models.entry import UnknownModel
from app.models.registry import Registry
from app.serving.imaging import decode, to_model_input, to_png
from app.settings import Settings

PARAM_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")
WORDS = {"true": True, "false": False, "none": None, "null": None}


def parse_params(items: list[str]) -> dict:
    """``--param NAME=VALUE`` as the shell passes it: a number, true/false, null, JSON (a list or
    an object) or a plain word (``stepping_stones=all``); a bare ``NAME`` is true."""
    params = {}
    for item in items:
        key, eq, value = item.partition("=")
        if not PARAM_NAME.match(key):
            raise ValueError(f"--param {item!r}: write NAME=VALUE, e.g. --param epsilon=0.1")
        if not eq:
            parsed = True
        elif value.strip().lower() in WORDS:
            parsed = WORDS[value.strip().lower()]
        else:
            try:
                parsed = json.loads(value)
            except json.JSONDecodeError:
                if value[:1] in "[{\"":
                    raise ValueError(f"--param {key}: {value!r} is not valid JSON") from None
                parsed = value  # a plain word
        params[key.replace("-", "_")] = parsed
    return params

DEFAULT_CPU_BUDGET = 600.0  # seconds


class Unavailable(RuntimeError):
    """The chosen model cannot be used here (and why)."""


def run(args) -> dict:
    """Run the method and write into args.out the files a job's downloads hold (``<position>.png``
    per target, grid.png, curve.png, summary.json, input.png for an image's job); return the summary."""
    settings = Settings.from_env()
    registry = Registry(settings)
    try:
        entry = registry.load(args.model)
    except UnknownModel:
        raise Unavailable(f"unknown model {args.model!r}; known models: "
                          f"{', '.join(e.id for e in registry.list())}") from None
    if not entry.available:
        raise Unavailable(f"model {args.model} is not available: {entry.reason}")
    image = None
    if args.image:
        image = to_model_input(decode(Path(args.image).read_bytes(), settings.max_image_pixels),
                               entry.input_shape, entry.preprocess)
    params = parse_params(args.param or [])
    check_params(params)  # the API's checks: a bad value is one line naming its parameter
    budget = args.max_seconds
    if budget is None and args.method in EVOLUTIONARY and registry.device == "cpu" \
            and entry.input_shape[1] * entry.input_shape[2] > 64 * 64:
        budget = DEFAULT_CPU_BUDGET  # ImageNet-size evolution on a CPU never "finishes": bound it
    try:
        spec = JobSpec(model=args.model, method=args.method, encoding=args.encoding, seed=args.seed,
                       targets=_targets(args.targets, args.method), generations=args.generations, steps=args.steps,
                       population=args.population, params=params, max_seconds=budget)
    except ValidationError as exc:
        raise ValueError("; ".join(f"--{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())) from None
    targets = None
    if spec.targets is not None or not spec.adversarial:
        targets = resolve_targets(spec.targets if spec.targets is not None else "all", entry.labels)
    job = Run(spec, entry.labels, targets, image=image, options=spec.options(),
              runtime=runtime_of(spec.method, entry, registry.device), history_every=args.history_every)
    # Scoring runs in the model's forward runtime (ONNX Runtime where FOOLING_RUNTIME chose it); gradients
    # use the PyTorch module. In PyTorch a model may have a best batch (EfficientNet on a CPU: 2).
    forward = registry.forward_model(args.model)
    chunk = 1024 if entry.forward is not None else entry.batch_limit.get(registry.device.split(":")[0]) or 1024
    job.start(entry, registry.model(args.model), model_score_fn(forward, chunk))

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    bar = StepProgress(wanted(args.quiet), job.options.get("generations") or job.options.get("steps"),
                       f"{args.method} on {entry.id}")
    while (snap := job.step()) is not None:
        bar.update(snap)
    bar.close()
    if image is not None:
        write_whole(out / "input.png", to_png(image))
    job.save(out, "done")
    return json.loads((out / "summary.json").read_text())


def _targets(text: str | None, method: str) -> list[int | str] | str | None:
    """--targets as the API takes it: "all", or indices and names (adversarial: none, untargeted)."""
    if text is None:
        return None if method in ADVERSARIAL else "all"
    if text.strip().lower() == "all":
        return "all"
    return [int(t) if t.isdigit() else t for t in (t.strip() for t in text.split(",")) if t]


def describe(summary: dict, out: str) -> str:
    """The one-line human summary of a run."""
    targets = summary["targets"]
    return (f"{len(targets)} targets, min confidence {min(t['confidence'] for t in targets):.4%}, "
            f"{summary['evaluations']} evaluations, {summary['seconds']:.1f} s -> {out}")
