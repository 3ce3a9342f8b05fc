"""What each model makes of random images: the paper's "random images get low confidence", measured.

Uniform noise on the 8-bit grid (the direct encoding's generation 0), seed 0, scored by each
available model; the same functions as GET /api/v1/models/{id}'s `noise_baseline`, with more images.
Writes bench/results/noise.json.

    .venv/bin/python bench/noise.py --n 10000 1000
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from app.fooling.baseline import NOISE_SEED, noise_images, noise_summary  # noqa: E402
from app.models.registry import Registry  # noqa: E402
from app.settings import Settings  # noqa: E402

OUT = ROOT / "bench" / "results" / "noise.json"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, nargs=2, default=[10_000, 1000], metavar=("SMALL", "IMAGENET"),
                    help="images at MNIST size and at ImageNet size")
    args = ap.parse_args()
    registry = Registry(Settings.from_env())
    registry.load_all()
    rows = {}
    for entry in registry.list():
        if not entry.available:
            continue
        model = registry.model(entry.id)
        n = args.n[0] if entry.input_shape[1] * entry.input_shape[2] <= 64 * 64 else args.n[1]
        t0 = time.perf_counter()
        x = noise_images(entry.input_shape, n, NOISE_SEED)
        with torch.inference_mode():
            probs = torch.cat([torch.softmax(model(x[i:i + 50]), 1) for i in range(0, n, 50)])
        rows[entry.id] = {**noise_summary(probs, entry.labels), "seconds": round(time.perf_counter() - t0, 1)}
        print(entry.id, rows[entry.id], flush=True)
    OUT.write_text(json.dumps({"date": time.strftime("%Y-%m-%d"), "torch": torch.__version__, "models": rows},
                              indent=2) + "\n")
    print(f"wrote {OUT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
