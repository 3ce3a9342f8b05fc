"""``python -m app experiment NAME --seed S --out DIR [--quick]``: run one experiment, write its
numbers (results.json) and plots (PNG) into DIR."""

from __future__ import annotations

import importlib
import json
import time
from pathlib import Path

from app.experiments.common import Context
from app.settings import Settings

# name -> (module:function in app.experiments taking a Context, title shown in the app)
EXPERIMENTS = {
    "retrain": ("retrain:run", "Retraining with a fooling class (n+1)"),
    "transfer": ("networks:run_transfer", "Do fooling images transfer between networks?"),
    "ensemble": ("networks:run_ensemble", "Fooling an ensemble"),
    "smoothing": ("smoothing:run", "Input smoothing as a defence"),
    "volume": ("volume:run", "How much of image space fools the network"),
    "logistic": ("logistic:run", "The 10-D logistic-regression example"),
    "neurons": ("neurons:run", "What single neurons respond to"),
    "blackbox": ("blackbox:run", "Black box or not"),
}
TITLES = {name: title for name, (_, title) in EXPERIMENTS.items()}


def run(name: str, seed: int, out: str | Path, quick: bool, settings: Settings | None = None) -> dict:
    if name not in EXPERIMENTS:
        known = ", ".join(EXPERIMENTS)
        raise ValueError(f"unknown experiment {name!r}; available: {known}")
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    ctx = Context(seed=seed, quick=quick, out=folder, settings=settings or Settings.from_env())
    t0 = time.perf_counter()
    module, func = EXPERIMENTS[name][0].split(":")
    result = getattr(importlib.import_module(f"app.experiments.{module}"), func)(ctx)
    result = {"experiment": name, "seed": seed, "quick": quick, "seconds": round(time.perf_counter() - t0, 2),
              **result}
    (folder / "results.json").write_text(json.dumps(result, indent=2) + "\n")
    return result
