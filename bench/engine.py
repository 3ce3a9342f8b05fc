"""What one Ray engine holds, measured without the web server, and what a cluster would hold.

    .venv/bin/python bench/engine.py                     # this machine: one CPU engine, all cores
    .venv/bin/python bench/engine.py --project 1x1 2x4 4x8

Starts a local Ray instance with one engine (as FOOLING_BACKEND=ray does) and measures:

* jobs: --jobs classroom jobs (bench/load.py's: LeNet, MAP-Elites, direct, all 10 digits,
  population 50, --generations) handed to the engine at once, FOOLING_RAY_ENGINE_JOBS running
  together; jobs per minute from the first submit to the last final frame;
* the API side of those jobs: this process follows every job's frames as the web server's mirror
  does (the latest frame, at most FOOLING_EVENTS_PER_SECOND), and its CPU seconds per frame give
  how many running jobs one web-server core can follow;
* scoring: Engine.score with batches as the server's batcher sends them (LeNet 64, EfficientNet-
  Lite0 8), from 4 callers at once, images per second.

--project NxG prints, for N machines with G GPUs (one engine each), the jobs per minute and
scoring rate the engines would hold (N*G times one engine) and the ceiling the one web server puts
on running jobs; the per-engine numbers are this run's (on a GPU machine, run it there).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
import uuid
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.load import classroom_job  # noqa: E402


def follow(engine, job_id: str, frames: list[int], cpu: list[float]) -> None:
    """The web server's mirror of one job, minus the store: take each latest frame and decode it."""
    import ray

    n, spent = 0, 0.0
    gen = engine.frames.options(_generator_backpressure_num_objects=1).remote(job_id)
    for ref in gen:
        t = time.thread_time()
        frame = ray.get(ref)
        if "snap" in frame:
            _ = frame["snap"]["images"].float() / 255  # as the mirror does
        spent += time.thread_time() - t
        n += 1
    frames.append(n)
    cpu.append(spent)


def run_jobs(engine, count: int, generations: int) -> dict:
    import ray

    frames: list[int] = []
    cpu: list[float] = []
    t0 = time.perf_counter()
    threads = []
    for i in range(count):
        job_id = uuid.uuid4().hex[:16]
        ray.get(engine.submit.remote(job_id, classroom_job(generations, i), f"bench-{i}", None))
        th = threading.Thread(target=follow, args=(engine, job_id, frames, cpu))
        th.start()
        threads.append(th)
    for th in threads:
        th.join()
    wall = time.perf_counter() - t0
    return {"jobs": count, "generations": generations, "wall_s": wall, "jobs_per_min": count / wall * 60,
            "frames": sum(frames), "mirror_cpu_ms_per_frame": 1000 * sum(cpu) / max(1, sum(frames))}


def run_scoring(engine, model: str, shape: tuple[int, ...], batch: int, seconds: float, callers: int = 4) -> dict:
    import ray

    x = np.random.default_rng(0).random((batch, *shape), dtype=np.float32)
    ray.get(engine.score.remote(model, x))  # warm
    done = [0]
    stop = time.perf_counter() + seconds
    lock = threading.Lock()

    def caller() -> None:
        while time.perf_counter() < stop:
            ray.get(engine.score.remote(model, x))
            with lock:
                done[0] += batch

    t0 = time.perf_counter()
    threads = [threading.Thread(target=caller) for _ in range(callers)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    return {"model": model, "batch": batch, "callers": callers, "images_per_s": done[0] / (time.perf_counter() - t0)}


def project(row: dict, spec: str, events_per_s: float) -> str:
    """One line of the paper estimate: N machines with G GPUs, one engine per GPU."""
    n, g = (int(v) for v in spec.lower().split("x"))
    engines = n * g
    jobs = engines * row["jobs"]["jobs_per_min"]
    scoring = engines * row["scoring"][0]["images_per_s"]
    # One web-server core follows this many running jobs (each sends events_per_s frames a second).
    follow = 1000 / max(1e-6, row["jobs"]["mirror_cpu_ms_per_frame"]) / events_per_s
    return f"| {n} x {g} | {engines} | {jobs:,.0f} | {scoring:,.0f} | {follow:,.0f} |"


def main() -> int:
    import ray

    from app.jobs.ray.cluster import NAMESPACE, cluster_gpus
    from app.jobs.ray.engine import start_engines
    from app.settings import Settings

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--jobs", type=int, default=16)
    ap.add_argument("--engine-jobs", type=int, default=4, help="FOOLING_RAY_ENGINE_JOBS")
    ap.add_argument("--generations", type=int, default=200)
    ap.add_argument("--seconds", type=float, default=10.0, help="per scoring measurement")
    ap.add_argument("--project", nargs="*", default=["1x1", "1x4", "4x8"], help="NxG: N machines with G GPUs")
    ap.add_argument("--json", default="bench/results/engine.json")
    args = ap.parse_args()

    settings = Settings.from_env()
    # The engine alone on this machine: it takes every core (no web server beside it here).
    settings = replace(settings, backend="ray", ray_cpu_engines=1, ray_engine_jobs=args.engine_jobs,
                       torch_threads=settings.torch_threads or (os.cpu_count() or 1),
                       preload="lenet-mnist,efficientnet-lite0-imagenet", events_per_second=5.0)
    ray.init(namespace=NAMESPACE, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": str(ROOT)}})
    try:
        engine = start_engines(settings, cluster_gpus())[0]
        info = ray.get(engine.info.remote(), timeout=600)
        row = {"device": info["device"], "cores": os.cpu_count(), "engine_jobs": args.engine_jobs,
               "jobs": run_jobs(engine, args.jobs, args.generations), "scoring": []}
        for model, shape, batch in (("lenet-mnist", (1, 28, 28), 64),
                                    ("efficientnet-lite0-imagenet", (3, 224, 224), 8)):
            if model in info["models"]:
                row["scoring"].append(run_scoring(engine, model, shape, batch, args.seconds))
        ray.kill(engine)
    finally:
        ray.shutdown()
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(row, indent=2) + "\n")
    j = row["jobs"]
    print(f"One engine ({row['device']}, {row['cores']} cores, {args.engine_jobs} jobs at once): "
          f"{j['jobs_per_min']:.1f} classroom jobs/min; mirror {j['mirror_cpu_ms_per_frame']:.2f} CPU ms per frame")
    for s in row["scoring"]:
        print(f"  scoring {s['model']}: {s['images_per_s']:,.0f} images/s (batches of {s['batch']}, "
              f"{s['callers']} callers)")
    print("\n| machines x GPUs | engines | classroom jobs/min | LeNet scoring img/s "
          "| running jobs one server core follows |")
    print("|---|---|---|---|---|")
    for spec in args.project:
        print(project(row, spec, settings.events_per_second))
    return 0


if __name__ == "__main__":
    sys.exit(main())
