"""``python -m app experiment NAME --seed S --out DIR [--quick]``: run one experiment, write its
numbers (results.json) and plots (PNG) into DIR."""

from __future__ import annotations

import importlib
import json
import time
from pathlib import Path

from app.experiments.common import Context

# name -> module in app.experiments with run(ctx); later issues' experiments join as they land
EXPERIMENTS = {"logistic": "logistic", "volume": "volume", "smoothing": "smoothing"}
PLANNED = ("retrain", "transfer", "ensemble", "neurons", "blackbox")


def run(name: str, seed: int, out: str, quick: bool) -> dict:
    if name not in EXPERIMENTS:
        known = ", ".join(EXPERIMENTS)
        extra = f" ({name} is not built yet)" if name in PLANNED else ""
        raise ValueError(f"unknown experiment {name!r}{extra}; available: {known}")
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    ctx = Context(seed=seed, quick=quick, out=folder)
    t0 = time.perf_counter()
    result = importlib.import_module(f"app.experiments.{EXPERIMENTS[name]}").run(ctx)
    result = {"experiment": name, "seed": seed, "quick": quick, "seconds": round(time.perf_counter() - t0, 2),
              **result}
    (folder / "results.json").write_text(json.dumps(result, indent=2) + "\n")
    return result
