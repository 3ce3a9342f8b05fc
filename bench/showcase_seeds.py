"""The ImageNet evolution claim on several seeds, through the command line a user runs.

For each seed: `python -m app fool` with CPPN MAP-Elites on EfficientNet-Lite0 over the ten
showcase classes (every class a stepping stone, 32 offspring a generation), for a fixed number of
generations, not a time budget, so that the result does not depend on how busy the machine was.
Writes bench/results/showcase-seeds.json: each seed's best confidence per class, its median over
the ten, evaluations and seconds; and the median and range of the per-seed medians.

    .venv/bin/python bench/showcase_seeds.py --seeds 0 1 2 --generations 2000
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from app.jobs.presets import SHOWCASE  # noqa: E402

OUT = ROOT / "bench" / "results" / "showcase-seeds.json"


def command(seed: int, generations: int, out: Path) -> list[str]:
    return [sys.executable, "-m", "app", "fool", "--model", "efficientnet-lite0-imagenet", "--method", "map-elites",
            "--encoding", "cppn", "--targets", ",".join(SHOWCASE), "--population", "32",
            "--generations", str(generations), "--param", "stepping_stones=all", "--param", "stop_at=null",
            "--seed", str(seed), "--max-seconds", "86400", "--out", str(out), "--quiet"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--generations", type=int, default=2000)
    args = ap.parse_args()
    runs = []
    for seed in args.seeds:
        with tempfile.TemporaryDirectory() as tmp:
            cmd = command(seed, args.generations, Path(tmp))
            t0 = time.perf_counter()
            subprocess.run(cmd, cwd=ROOT, check=True)
            seconds = time.perf_counter() - t0
            summary = json.loads((Path(tmp) / "summary.json").read_text())
        best = {t["label"]: round(t["confidence"], 6) for t in summary["targets"]}
        runs.append({"seed": seed, "evaluations": summary["evaluations"], "seconds": round(seconds, 1),
                     "median": round(statistics.median(best.values()), 6), "best": best})
        print(f"seed {seed}: median {runs[-1]['median']:.4f} after {runs[-1]['evaluations']} evaluations "
              f"({seconds:.0f} s)", flush=True)
    medians = [r["median"] for r in runs]
    result = {"date": time.strftime("%Y-%m-%d"), "device": "cpu", "command": command(args.seeds[0], args.generations,
                                                                                  Path("OUT"))[1:],
              "generations": args.generations, "seeds": args.seeds, "runs": runs,
              "median_of_medians": round(statistics.median(medians), 6), "min_median": min(medians),
              "max_median": max(medians)}
    OUT.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {OUT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
