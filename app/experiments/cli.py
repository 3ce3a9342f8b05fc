"""``python -m app experiment NAME --seed S --out DIR [--quick]``: run one experiment, write its
numbers (results.json) and plots (PNG) into DIR."""

from __future__ import annotations

import importlib
import json
import time
from pathlib import Path

from app.experiments.common import Context
from app.settings import Settings

# name -> module in app.experiments with run(ctx); later issues' experiments join as they land
EXPERIMENTS = {"logistic": "logistic:run", "volume": "volume:run", "smoothing": "smoothing:run",
               "retrain": "retrain:run", "transfer": "networks:run_transfer", "ensemble": "networks:run_ensemble",
               "blackbox": "blackbox:run", "neurons": "neurons:run"}


def run(name: str, seed: int, out: str | Path, quick: bool, settings: Settings | None = None) -> dict:
    if name not in EXPERIMENTS:
        known = ", ".join(EXPERIMENTS)
        raise ValueError(f"unknown experiment {name!r}; available: {known}")
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    ctx = Context(seed=seed, quick=quick, out=folder, settings=settings or Settings.from_env())
    t0 = time.perf_counter()
    module, func = EXPERIMENTS[name].split(":")
    result = getattr(importlib.import_module(f"app.experiments.{module}"), func)(ctx)
    result = {"experiment": name, "seed": seed, "quick": quick, "seconds": round(time.perf_counter() - t0, 2),
              **result}
    (folder / "results.json").write_text(json.dumps(result, indent=2) + "\n")
    return result
