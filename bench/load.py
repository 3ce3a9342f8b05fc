"""A classroom on one server: N students each start a job and watch its event stream while M
clients keep scoring images. Prints a Markdown table for the README.

    .venv/bin/python bench/load.py                    # starts its own server, N = 10 and 50
    .venv/bin/python bench/load.py --url http://127.0.0.1:8000 --students 10

Reports, per N: jobs completed, events delivered, scoring p50/p99 latency and throughput, the
slowest and fastest job's steps per second (fairness), and the server's peak memory (RSS).
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import statistics
import sys
import time
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.live_server import LiveServer  # noqa: E402


def digit_png() -> bytes:
    from app.data import mnist

    x, _ = mnist.load(ROOT / "data", train=False)
    buf = io.BytesIO()
    Image.fromarray((x[0, 0].numpy() * 255).astype(np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


async def student(url: str, i: int, generations: int, out: list[dict]) -> None:
    # Each student is a browser of their own: their own cookie jar, hence their own signed identity.
    async with httpx.AsyncClient(base_url=url, timeout=120) as client:
        await client.get("/healthz")  # first visit: the server sets this student's fl_client cookie
        await _student(client, i, generations, out)


async def _student(client: httpx.AsyncClient, i: int, generations: int, out: list[dict]) -> None:
    body = {"model": "lenet-mnist", "method": "map-elites", "encoding": "direct", "targets": "all",
            "population": 50, "generations": generations, "seed": i, "params": {"stop_at": None}}
    r = await client.post("/api/v1/jobs", json=body)
    if r.status_code != 201:
        out.append({"student": i, "rejected": r.status_code})
        return
    job_id = r.json()["id"]
    events = 0
    async with client.stream("GET", f"/api/v1/jobs/{job_id}/events", timeout=None) as s:
        async for line in s.aiter_lines():
            if line.startswith("event: "):
                events += 1
                if line == "event: close":
                    break
    j = (await client.get(f"/api/v1/jobs/{job_id}")).json()
    out.append({"student": i, "status": j["status"], "steps": j["progress"]["step"],
                "elapsed": j["progress"]["elapsed"], "events": events})


async def scorer(client: httpx.AsyncClient, png: bytes, stop: asyncio.Event, lat: list[float]) -> None:
    while not stop.is_set():
        t = time.perf_counter()
        r = await client.post("/api/v1/score", files={"file": ("d.png", png, "image/png")},
                              data={"model": "lenet-mnist"})
        if r.status_code == 200:
            lat.append(time.perf_counter() - t)


async def run(url: str, n: int, m: int, generations: int, pid: int | None) -> dict:
    limits = httpx.Limits(max_connections=n + m + 8)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=120) as client:
        png = digit_png()
        stop, lat, results = asyncio.Event(), [], []
        peak = [rss_mb(pid) if pid else float("nan")]

        async def watch_memory() -> None:
            while not stop.is_set() and pid:
                peak[0] = max(peak[0], rss_mb(pid))
                await asyncio.sleep(0.25)

        t0 = time.perf_counter()
        scorers = [asyncio.create_task(scorer(client, png, stop, lat)) for _ in range(m)]
        mem = asyncio.create_task(watch_memory())
        await asyncio.gather(*(student(url, i, generations, results) for i in range(n)))
        wall = time.perf_counter() - t0
        stop.set()
        await asyncio.gather(*scorers, mem)
    done = [r for r in results if r.get("status") == "done"]
    rates = [r["steps"] / r["elapsed"] for r in done if r["elapsed"] > 0]
    lat.sort()
    return {"students": n, "scorers": m, "generations": generations, "wall_s": wall,
            "completed": len(done), "rejected": sum(1 for r in results if "rejected" in r),
            "events": sum(r.get("events", 0) for r in results),
            "score_requests": len(lat), "score_per_s": len(lat) / wall,
            "p50_ms": 1000 * statistics.median(lat) if lat else None,
            "p99_ms": 1000 * lat[int(0.99 * (len(lat) - 1))] if lat else None,
            "slowest_steps_per_s": min(rates) if rates else None,
            "fastest_steps_per_s": max(rates) if rates else None, "peak_rss_mb": peak[0]}


def markdown(rows: list[dict], workers: int) -> str:
    out = [f"Server: lenet-mnist, {workers} job workers, 2-core CPU. Each student: map-elites, direct, "
           f"all 10 digits, population 50, {rows[0]['generations']} generations, watching its SSE stream.", "",
           "| students | scoring clients | jobs done | rejected | events | wall s | score req/s | p50 ms | p99 ms "
           "| slowest job steps/s | fastest job steps/s | peak RSS MB |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        out.append(f"| {r['students']} | {r['scorers']} | {r['completed']} | {r['rejected']} | {r['events']} | "
                   f"{r['wall_s']:.1f} | {r['score_per_s']:.0f} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | "
                   f"{r['slowest_steps_per_s']:.1f} | {r['fastest_steps_per_s']:.1f} | {r['peak_rss_mb']:.0f} |")
    return "\n".join(out)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--url")
    ap.add_argument("--students", type=int, nargs="*", default=[10, 50])
    ap.add_argument("--scorers", type=int, default=4)
    ap.add_argument("--generations", type=int, default=200)
    ap.add_argument("--workers", type=int, default=int(os.environ.get("FOOLING_WORKERS", "4")))
    ap.add_argument("--json", default="bench/results/load.json")
    args = ap.parse_args()
    rows = []
    for n in args.students:
        server = None
        url, pid = args.url, None
        if url is None:
            import tempfile

            server = LiveServer(Path(tempfile.mkdtemp(prefix="fl-load-")), FOOLING_WORKERS=str(args.workers),
                                FOOLING_QUEUE_SIZE=str(max(64, n)), FOOLING_EVENTS_PER_SECOND="5").start()
            url, pid = server.url, server.proc.pid
        try:
            rows.append(asyncio.run(run(url, n, args.scorers, args.generations, pid)))
        finally:
            if server:
                server.stop()
        print(json.dumps(rows[-1]), file=sys.stderr)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")
    print(markdown(rows, args.workers))
    return 0


if __name__ == "__main__":
    sys.exit(main())
