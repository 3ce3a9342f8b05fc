"""``python -m app fool``: run one method from the command line and write its results.

Writes OUT/<index>_<label>.png for each target's best image, OUT/grid.png (a labelled grid like
the paper's figures) and OUT/summary.json (settings, seed, per target: label, confidence, step
reached, evaluations, seconds).
"""

from __future__ import annotations

import json
import re
import sys
import time
from pathlib import Path

from PIL import Image, ImageDraw

from app.fooling.base import Snapshot, model_score_fn, resolve_targets
from app.fooling.methods import ADVERSARIAL, build
from app.imaging import decode, to_model_input, to_png
from app.models.registry import Registry
from app.settings import Settings


def labelled_grid(snap: Snapshot, labels: list[str], cell: int = 112, cols: int = 5) -> Image.Image:
    rows = (len(snap.targets) + cols - 1) // cols
    cols = min(cols, len(snap.targets))
    pad = 28
    grid = Image.new("RGB", (cols * cell, rows * (cell + pad)), "white")
    draw = ImageDraw.Draw(grid)
    for i, (t, img, conf) in enumerate(zip(snap.targets, snap.images, snap.confidence, strict=True)):
        arr = (img.clamp(0, 1) * 255).round().byte()
        pil = Image.fromarray(arr[0].numpy() if arr.shape[0] == 1 else arr.permute(1, 2, 0).numpy())
        x, y = (i % cols) * cell, (i // cols) * (cell + pad)
        grid.paste(pil.convert("RGB").resize((cell, cell), Image.NEAREST), (x, y))
        draw.text((x + 4, y + cell + 2), f"{labels[t][:16]}", fill="black")
        draw.text((x + 4, y + cell + 14), f"{100 * float(conf):.2f}%", fill="black")
    return grid


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower()[:40] or "class"


SUCCESS = 0.9999  # the paper's bar: "99.99% confidence"


def progress(snap: Snapshot) -> str:
    c = snap.confidence
    done = int((c >= SUCCESS).sum())
    return (f"\rstep {snap.step:5d} | evals {snap.evaluations:8d} | min {float(c.min()):.4%} | "
            f"mean {float(c.mean()):.4%} | {done}/{len(c)} >= 99.99%")


def run(args) -> int:
    settings = Settings.from_env()
    registry = Registry(settings)
    entry = registry.load(args.model)
    if not entry.available:
        print(f"model {args.model} is not available: {entry.reason}", file=sys.stderr)
        return 2
    model = registry.model(args.model)
    image = None
    if args.image:
        image = to_model_input(decode(Path(args.image).read_bytes(), settings.max_image_pixels),
                               entry.input_shape, entry.preprocess)
    targets = None
    if args.targets is not None or args.method not in ADVERSARIAL:
        targets = resolve_targets(args.targets or "all", entry.labels)
    options = {}
    if args.generations is not None:
        options["generations"] = args.generations
    if args.population is not None:
        options["population"] = args.population
    if args.steps is not None:
        options["steps"] = args.steps
    for item in args.param or []:
        key, _, value = item.partition("=")
        options[key.replace("-", "_")] = json.loads(value) if value else True
    gen = build(args.method, entry, model, model_score_fn(model), targets, args.encoding, args.seed, options, image)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    reached: dict[int, tuple[int, int, float]] = {}
    snap = None
    shown = 0.0
    for snap in gen:
        for i, c in enumerate(snap.confidence.tolist()):
            if c >= SUCCESS and i not in reached:
                reached[i] = (snap.step, snap.evaluations, time.perf_counter() - t0)
        if not args.quiet and time.perf_counter() - shown > 0.25:  # a live line, redrawn 4 times a second
            shown = time.perf_counter()
            print(progress(snap), end="", file=sys.stderr, flush=True)
    if not args.quiet:
        print(progress(snap), file=sys.stderr)
    seconds = time.perf_counter() - t0
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
        "ten_crop": False, "results": results,
        "extra": snap.extra,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"{len(results)} targets, min confidence {min(r['confidence'] for r in results):.4%}, "
          f"{snap.evaluations} evaluations, {seconds:.1f} s -> {out}")
    return 0
