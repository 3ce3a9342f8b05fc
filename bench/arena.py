"""The defence arena's numbers: what each defence costs on real data, and what evolution needs to
get past it (bench/results/arena.json, rendered into README.md and docs/benchmarks.md).

    .venv/bin/python bench/arena.py [--generations 2000] [--seed 0]

For LeNet, every row of the arena (/arena): its clean accuracy and false-positive rate on held-out
MNIST test digits, then direct and CPPN MAP-Elites (population 100, the paper's settings otherwise)
until all ten digits are at >= 99% *accepted* confidence (a detector's rejected image scores
nothing), or the best reached within the generation budget. EfficientNet-Lite0 is listed with
why its defences cannot be measured here (no held-out ImageNet images on this machine).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.fooling.base import model_score_fn  # noqa: E402
from app.fooling.methods import build  # noqa: E402
from app.models.defences import DefenceError  # noqa: E402
from app.models.registry import Registry  # noqa: E402
from app.settings import Settings  # noqa: E402
from app.web.arena import ROWS  # noqa: E402  (the arena's own rows)

BAR = 0.99


def attack(entry, encoding: str, seed: int, generations: int) -> dict:
    """MAP-Elites against ``entry`` until every digit is at BAR (accepted), or the budget ends."""
    gen = build("map-elites", entry, entry.model, model_score_fn(entry.model), list(range(10)), encoding, seed,
                {"population": 100, "generations": generations, "stop_at": BAR})
    t0, reached, snap = time.perf_counter(), None, None
    for snap in gen:
        if reached is None and bool((snap.confidence >= BAR).all()):
            reached = snap.evaluations
            break
    return {"encoding": encoding, "reached": reached is not None, "evaluations": reached or snap.evaluations,
            "seconds": round(time.perf_counter() - t0, 2), "at_99": int((snap.confidence >= BAR).sum()),
            "median": float(snap.confidence.median()), "min": float(snap.confidence.min())}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--generations", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default="bench/results/arena.json")
    args = ap.parse_args()
    reg = Registry(Settings.from_env())
    rows = []
    for suffix in ROWS:
        model_id = "lenet-mnist" + suffix
        entry = reg.load(model_id) if not suffix else reg.get(model_id)
        meta = entry.meta
        row = {"model": "lenet-mnist", "defence": suffix.lstrip("+") or "none", "id": entry.id,
               "clean_accuracy": meta["clean_accuracy"] if suffix else reg.held_out_accuracy(model_id),
               "false_positive_rate": meta.get("false_positive_rate", 0.0),
               "attacks": [attack(entry, enc, args.seed, args.generations) for enc in ("direct", "cppn")]}
        print(json.dumps(row), file=sys.stderr)
        rows.append(row)
    try:
        reg.get("efficientnet-lite0-imagenet+msp")
        imagenet = None
    except DefenceError as exc:
        imagenet = str(exc)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    res = {"date": time.strftime("%Y-%m-%d"), "commit": commit, "seed": args.seed, "generations": args.generations,
           "population": 100, "bar": BAR, "machine": f"{os.cpu_count()}-core {platform.machine()} CPU, no GPU",
           "rows": rows, "efficientnet": imagenet}
    Path(args.json).write_text(json.dumps(res, indent=2) + "\n")
    print(markdown(res))
    return 0


def markdown(res: dict) -> str:
    def cell(a: dict) -> str:
        if a["reached"]:
            return f"{a['evaluations']:,}"
        return f"not in {a['evaluations']:,} ({a['at_99']}/10; median {100 * a['median']:.1f}%)"

    out = [f"LeNet, seed {res['seed']}, population {res['population']}, at most {res['generations']:,} generations "
           f"({res['machine']}, {res['date']}). Evaluations until all ten digits are at ≥ {100 * res['bar']:.0f}% "
           "confidence that the defence accepts:", "",
           "| defence | clean accuracy | false positives on real digits | direct MAP-Elites | CPPN MAP-Elites |",
           "|---|---|---|---|---|"]
    for r in res["rows"]:
        direct, cppn = r["attacks"]
        out.append(f"| `{r['defence']}` | {100 * r['clean_accuracy']:.1f}% | {100 * r['false_positive_rate']:.1f}% | "
                   f"{cell(direct)} | {cell(cppn)} |")
    if res.get("efficientnet"):
        out += ["", f"EfficientNet-Lite0: not measured here; {res['efficientnet']}."]
    return "\n".join(out)


if __name__ == "__main__":
    sys.exit(main())
