"""``fooling-lab fool``: run one method from the command line and write its results.

Writes OUT/<index>_<label>.png for each target's best image, OUT/grid.png (a labelled grid like
the paper's figures) and OUT/summary.json (settings, seed, per target: label, confidence, step
reached, evaluations, seconds).
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

from app.cli.progress import StepProgress, wanted
from app.fooling.base import SUCCESS, history_point, model_score_fn, resolve_targets
from app.fooling.figures import confidence_curve, labelled_grid
from app.fooling.methods import ADVERSARIAL, build, method_options
from app.jobs.limits import check_params
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

def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower()[:40] or "class"


DEFAULT_CPU_BUDGET = 600.0  # seconds


class Unavailable(RuntimeError):
    """The chosen model cannot be used here (and why)."""


def run(args) -> dict:
    """Run the method, write its files into args.out, and return the summary (as in summary.json)."""
    settings = Settings.from_env()
    registry = Registry(settings)
    try:
        entry = registry.load(args.model)
    except UnknownModel:
        raise Unavailable(f"unknown model {args.model!r}; known models: "
                          f"{', '.join(e.id for e in registry.list())}") from None
    if not entry.available:
        raise Unavailable(f"model {args.model} is not available: {entry.reason}")
    model = registry.model(args.model)
    image = None
    if args.image:
        image = to_model_input(decode(Path(args.image).read_bytes(), settings.max_image_pixels),
                               entry.input_shape, entry.preprocess)
    targets = None
    if args.targets is not None or args.method not in ADVERSARIAL:
        targets = resolve_targets(args.targets or "all", entry.labels)
    params = parse_params(args.param or [])
    check_params(params)  # the API's checks: a bad value is one line naming its parameter
    options = method_options(params, generations=args.generations, steps=args.steps, population=args.population)
    # Scoring runs in the model's forward runtime (ONNX Runtime where FOOLING_RUNTIME chose it); gradients
    # use the PyTorch module. In PyTorch a model may have a best batch (EfficientNet on a CPU: 2).
    forward = registry.forward_model(args.model)
    chunk = 1024 if entry.forward is not None else entry.batch_limit.get(registry.device.split(":")[0]) or 1024
    gen = build(args.method, entry, model, model_score_fn(forward, chunk), targets, args.encoding, args.seed,
                options, image)

    budget = args.max_seconds
    if budget is None and args.method in ("evolve", "map-elites") and registry.device == "cpu" \
            and entry.input_shape[1] * entry.input_shape[2] > 64 * 64:
        budget = DEFAULT_CPU_BUDGET  # ImageNet-size evolution on a CPU never "finishes": bound it
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    reached: dict[int, tuple[int, int, float]] = {}
    history: list[dict] = []
    snap = None
    logged = 0.0
    stopped_by_budget = False
    bar = StepProgress(wanted(args.quiet), options.get("generations") or options.get("steps"),
                       f"{args.method} on {entry.id}")
    for snap in gen:
        now = time.perf_counter() - t0
        for i, c in enumerate(snap.confidence.tolist()):
            if c >= SUCCESS and i not in reached:
                reached[i] = (snap.step, snap.evaluations, now)
        if now - logged >= args.history_every or snap.step == 0:
            logged = now
            history.append(history_point(snap, now))
        bar.update(snap)
        if budget is not None and now >= budget:
            stopped_by_budget = True
            break
    bar.close()
    seconds = time.perf_counter() - t0
    if not history or history[-1]["step"] != snap.step:
        history.append(history_point(snap, seconds))
    results = []
    for i, (t, img, conf) in enumerate(zip(snap.targets, snap.images, snap.confidence, strict=True)):
        name = f"{i:02d}_{t}_{_slug(entry.labels[t])}.png"
        (out / name).write_bytes(to_png(img))
        step, evals, secs = reached.get(i, (None, None, None))
        results.append({"target": t, "label": entry.labels[t], "confidence": float(conf), "file": name,
                        "reached_9999_at_step": step, "reached_9999_after_evaluations": evals,
                        "reached_9999_after_seconds": None if secs is None else round(secs, 3)})
    labelled_grid(snap, entry.labels).save(out / "grid.png")
    summary = {
        "model": entry.id, "method": args.method, "encoding": args.encoding, "seed": args.seed,
        "options": options, "device": registry.device, "image": args.image,
        "steps": snap.step, "evaluations": snap.evaluations, "seconds": round(seconds, 3),
        "ten_crop": bool(options.get("ten_crop", False)), "max_seconds": budget,
        "runtime": {"name": entry.runtime if args.method in ("evolve", "map-elites", "random") else "torch",
                    "reason": entry.runtime_reason},
        "stopped_by_budget": stopped_by_budget, "results": results,
        "history": history, "extra": snap.extra,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    if len(history) > 1:
        confidence_curve(history, f"{entry.id}: {args.method} ({args.encoding})").save(out / "curve.png")
    return summary


def describe(summary: dict, out: str) -> str:
    """The one-line human summary of a run."""
    results = summary["results"]
    return (f"{len(results)} targets, min confidence {min(r['confidence'] for r in results):.4%}, "
            f"{summary['evaluations']} evaluations, {summary['seconds']:.1f} s -> {out}")
