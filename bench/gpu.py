"""The GPU rows, in one run (issues #12 and #14): what a session lent a GPU runs first.

    bench/gpu.sh                                   # on the GPU machine: wheels, then this script
    .venv/bin/python bench/gpu.py --quick          # here, on CPU: checks the script itself

Measures, on whatever device the registry picks (CUDA when there is one):

1. runtime: what FOOLING_RUNTIME=auto chose for each bundled model and why (on CUDA: float32,
   fp16/bf16 autocast and CUDA graphs, each timed and checked against float32);
2. batching: EfficientNet-Lite0 scoring from 16 concurrent callers through the server's Scorer,
   batching on and off: images per second and p50/p99 latency;
3. cppn_1000: CPPN MAP-Elites over all 1000 ImageNet classes (the paper's run): evaluations per
   second, and the minutes the paper's 2 million evaluations would take;
4. showcase: the ten showcase classes as bench/fooling.py runs them, auto runtime, every class a
   stepping stone, grouped rendering: evaluations per second and the median best confidence;
5. engine: classroom jobs per minute through one local job runner (what one Ray engine runs: the
   per-engine unit of docs/deploy.md's capacity table).

Writes JSON (--json) and prints it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from app.fooling.base import model_score_fn  # noqa: E402
from app.fooling.cppn import CppnEncoding  # noqa: E402
from app.fooling.evolution import EvolutionParams, map_elites  # noqa: E402
from app.jobs.runner import JobRunner  # noqa: E402
from app.jobs.spec import JobSpec  # noqa: E402
from app.jobs.store import JobStore  # noqa: E402
from app.models.registry import Registry  # noqa: E402
from app.serving import compute  # noqa: E402
from app.serving.lab import Lab  # noqa: E402
from app.settings import Settings  # noqa: E402
from bench.load import classroom_job  # noqa: E402

EFFNET = "efficientnet-lite0-imagenet"
PAPER_EVALUATIONS = 2_000_000


def runtime_choices(settings: Settings) -> list[dict]:
    reg = Registry(replace(settings, preload="lenet-mnist," + EFFNET))
    compute.run(reg.load_all)
    return [{"model": e.id, "device": reg.device, "runtime": e.runtime, "reason": e.runtime_reason}
            for e in reg.list() if e.available]


async def _callers(scorer, x: torch.Tensor, seconds: float, clients: int) -> tuple[list[float], float]:
    """``clients`` callers scoring one image each, as fast as answers come, for ``seconds``."""
    lat: list[float] = []

    async def client(stop: float) -> None:
        while time.perf_counter() < stop:
            t = time.perf_counter()
            await scorer.probabilities(EFFNET, x)
            lat.append(time.perf_counter() - t)

    await scorer.probabilities(EFFNET, x)  # warm
    t0 = time.perf_counter()
    await asyncio.gather(*(client(t0 + seconds) for _ in range(clients)))
    return sorted(lat), time.perf_counter() - t0


def batching(settings: Settings, seconds: float, clients: int = 16) -> list[dict]:
    rows = []
    for on in (True, False):
        lab = Lab.create(replace(settings, batching=on, preload=EFFNET))
        compute.run(lab.registry.load_all)
        x = torch.rand(1, *lab.registry.get(EFFNET).input_shape)
        lat, took = asyncio.run(_callers(lab.scorer, x, seconds, clients))
        rows.append({"batching": on, "clients": clients, "images_per_s": len(lat) / took,
                     "p50_ms": 1000 * statistics.median(lat), "p99_ms": 1000 * lat[int(0.99 * (len(lat) - 1))],
                     "scorer": lab.scorer.stats()})
        lab.close()
    return rows


def cppn_1000(settings: Settings, seconds: float, population: int) -> dict:
    reg = Registry(replace(settings, preload=EFFNET))
    entry = reg.load(EFFNET)
    forward = reg.forward_model(EFFNET)
    chunk = entry.batch_limit.get(reg.device.split(":")[0]) or 1024
    enc = CppnEncoding(entry.input_shape, reg.device)
    params = EvolutionParams(population=population, generations=10**9, stop_at=None, stepping_stones="all")
    gen = map_elites(model_score_fn(forward, chunk), enc, list(range(entry.num_classes)), entry.num_classes, params)
    t0 = time.perf_counter()
    snap = next(gen)
    while time.perf_counter() - t0 < seconds:
        snap = next(gen)
    took = time.perf_counter() - t0
    rate = snap.evaluations / took
    conf = snap.confidence
    return {"population": population, "seconds": took, "evaluations": snap.evaluations, "evals_per_s": rate,
            "minutes_for_2M": PAPER_EVALUATIONS / rate / 60, "median_best": float(conf.median()),
            "over_99": int((conf >= 0.99).sum()), "runtime": entry.runtime}


def engine_unit(settings: Settings, jobs: int, workers: int, generations: int) -> dict:
    data = Path(tempfile.mkdtemp(prefix="fl-gpu-engine-"))
    lab = Lab.create(replace(settings, preload="lenet-mnist", data_dir=data, workers=workers,
                             queue_size=10_000, max_jobs_per_client=10_000, max_jobs_per_address=10_000))
    compute.run(lab.registry.load_all)
    runner = JobRunner(lab, JobStore(data))
    t0 = time.perf_counter()
    ids = [runner.submit(JobSpec(**classroom_job(generations, i)), f"bench-{i}") for i in range(jobs)]
    def running(job_id: str) -> bool:
        job = runner.live(job_id)
        return job is not None and not job.finished

    while any(running(i) for i in ids):
        time.sleep(0.05)
    took = time.perf_counter() - t0
    runner.close()
    lab.close()
    return {"jobs": jobs, "workers": workers, "generations": generations, "seconds": took,
            "jobs_per_min": jobs / took * 60}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="seconds, not minutes: to check the script on CPU")
    ap.add_argument("--json", default="bench/results/gpu.json")
    ap.add_argument("--only", nargs="*", default=["runtime", "batching", "cppn_1000", "showcase", "engine"])
    args = ap.parse_args()
    quick = args.quick
    settings = replace(Settings.from_env(), download_weights=False, data_dir=Path(tempfile.mkdtemp(prefix="fl-gpu-")),
                       onnx_dir=ROOT / "data" / "onnx")
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    res: dict = {"machine": platform.node(), "torch": torch.__version__,
                 "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}

    def part(name: str, fn) -> None:
        if name not in args.only:
            return
        t = time.perf_counter()
        try:
            res[name] = fn()
        except Exception as exc:  # one part failing must not cost the others' device time
            res[name] = {"error": f"{type(exc).__name__}: {exc}"}
        print(f"{name} ({time.perf_counter() - t:.0f} s): {json.dumps(res[name])[:600]}", file=sys.stderr, flush=True)
        out.write_text(json.dumps(res, indent=2) + "\n")  # after each part: a run cut short keeps what it measured

    part("runtime", lambda: runtime_choices(settings))
    part("batching", lambda: batching(settings, 2.0 if quick else 15.0))
    part("cppn_1000", lambda: cppn_1000(settings, 5.0 if quick else 60.0, 32 if quick else 256))
    if "showcase" in args.only:
        from bench import fooling

        part("showcase", lambda: fooling.showcase(settings, 5.0 if quick else 60.0,
                                                  runs=(("auto", "all", "grouped"), ("torch", "targets", "grouped"))))
    part("engine", lambda: engine_unit(settings, 4 if quick else 16, 4, 20 if quick else 200))
    print(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
