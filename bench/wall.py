"""The class wall under a full room: N students in one room each run a job, and the wall follows
all N tiles over its one event stream. Prints a Markdown table for docs/benchmarks.md.

    .venv/bin/python bench/wall.py                 # starts its own server; 100 tiles, 30 s
    .venv/bin/python bench/wall.py --tiles 50 --seconds 20 --no-browser
    .venv/bin/python bench/wall.py --idle-walls 100 --tiles 100   # a class watching an idle room

--idle-walls N: the room's 100 jobs finish first; then N students (each its own browser, a member
of the room) open the wall at once, and the server's CPU is measured with no wall open and with
all N open (every wall of a room shares one reader of it), beside /healthz latency.

Measures, on the stream (a plain HTTP client): tile frames a second in all and per tile (the
server sends at most 2 per tile), the longest gap between two frames of one tile (how stale a tile
can get), and /healthz latency meanwhile (the event loop is not held up). In Chromium (Debian's,
through Playwright; skipped with --no-browser): frames the page applied a second, animation frames a
second and long tasks (>50 ms) while the wall updates, and the page's heap.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.live_server import LiveServer  # noqa: E402

ADMIN = "wall-bench-token"
TEACHER = {"Authorization": f"Bearer {ADMIN}"}  # the wall is for the room's members and the instructor
JOB = {"model": "lenet-mnist", "method": "map-elites", "encoding": "direct", "population": 10,
       "generations": 20_000, "params": {"stop_at": None}}


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def fill_room(url: str, n: int) -> tuple[str, list[str]]:
    async with httpx.AsyncClient(base_url=url, timeout=60) as admin:
        code = (await admin.post("/api/v1/rooms", json={"title": "bench"},
                                 headers={"Authorization": f"Bearer {ADMIN}"})).json()["code"]
    jobs = []

    async def student(i: int) -> None:
        async with httpx.AsyncClient(base_url=url, timeout=60) as c:
            await c.get("/")
            r = await c.post(f"/api/v1/rooms/{code}/join", json={"nickname": f"student{i}"})
            r.raise_for_status()
            r = await c.post("/api/v1/jobs", json={**JOB, "targets": [i % 10], "seed": i})
            r.raise_for_status()
            jobs.append(r.json()["id"])

    await asyncio.gather(*(student(i) for i in range(n)))
    return code, jobs


async def follow(url: str, code: str, seconds: float) -> dict:
    frames: dict[str, list[float]] = {}
    health: list[float] = []
    stop = time.monotonic() + seconds

    async def probe() -> None:
        async with httpx.AsyncClient(base_url=url, timeout=30) as c:
            while time.monotonic() < stop:
                t = time.perf_counter()
                await c.get("/healthz")
                health.append(time.perf_counter() - t)
                await asyncio.sleep(0.25)

    async def stream() -> None:
        async with httpx.AsyncClient(base_url=url, timeout=None, headers=TEACHER) as c, \
                c.stream("GET", f"/api/v1/rooms/{code}/events") as r:
            event = None
            async for line in r.aiter_lines():
                if line.startswith("event: "):
                    event = line[7:]
                elif line.startswith("data: ") and event == "tile":
                    frames.setdefault(json.loads(line[6:])["id"], []).append(time.monotonic())
                if time.monotonic() > stop:
                    return

    t0 = time.monotonic()
    await asyncio.gather(stream(), probe())
    took = time.monotonic() - t0
    warm = t0 + 5  # after every tile's first frame has gone out
    rates = [sum(1 for t in ts if t >= warm) / (took - 5) for ts in frames.values()]
    gaps = [max(b - a for a, b in zip(ts, ts[1:], strict=False)) for ts in frames.values() if len(ts) > 1]
    return {"tiles": len(frames), "seconds": took, "frames_per_s": sum(rates),
            "per_tile_median": statistics.median(rates), "per_tile_max": max(rates),
            "worst_gap_s": max(gaps) if gaps else None, "median_gap_s": statistics.median(gaps) if gaps else None,
            "healthz_p50_ms": 1e3 * statistics.median(health),
            "healthz_max_ms": 1e3 * max(health)}


def in_browser(url: str, code: str, seconds: float) -> dict:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox", "--disable-gpu"])
        pg = b.new_context(viewport={"width": 1920, "height": 1080}, extra_http_headers=TEACHER).new_page()
        pg.goto(f"{url}/r/{code}/wall", wait_until="load")
        pg.wait_for_timeout(5000)  # every tile made
        pg.evaluate("""() => { window.__long = []; window.__raf = 0;
            new PerformanceObserver((l) => l.getEntries().forEach((e) => window.__long.push(e.duration)))
              .observe({entryTypes: ['longtask']});
            const tick = () => { window.__raf += 1; requestAnimationFrame(tick); }; requestAnimationFrame(tick);
            window.__f0 = window.wallStats.frames; }""")
        pg.wait_for_timeout(seconds * 1000)
        out = pg.evaluate("""() => ({tiles: window.wallStats.tiles, frames: window.wallStats.frames - window.__f0,
            raf: window.__raf, long: window.__long,
            heap: performance.memory ? performance.memory.usedJSHeapSize : null})""")
        pg.screenshot(path=str(ROOT / "test-artifacts" / "wall-bench-1920.png"))
        b.close()
    return {"tiles": out["tiles"], "frames_per_s": out["frames"] / seconds, "animation_fps": out["raf"] / seconds,
            "long_tasks": len(out["long"]), "longest_task_ms": max(out["long"], default=0),
            "heap_mb": out["heap"] / 2**20 if out["heap"] else None}


async def idle_walls(url: str, pid: int, n_jobs: int, n_walls: int, seconds: float) -> dict:
    """CPU with no wall open, then with ``n_walls`` members' walls open on a room of ``n_jobs``
    finished jobs; /healthz meanwhile."""
    async with httpx.AsyncClient(base_url=url, timeout=60, headers=TEACHER) as admin:
        code = (await admin.post("/api/v1/rooms", json={"title": "idle"})).json()["code"]
    limits = httpx.Limits(max_connections=4)
    members = [httpx.AsyncClient(base_url=url, timeout=None, limits=limits) for _ in range(max(n_jobs, n_walls))]
    try:
        async def member(i: int, c: httpx.AsyncClient) -> str | None:
            await c.get("/healthz")
            (await c.post(f"/api/v1/rooms/{code}/join", json={"nickname": f"s{i}"})).raise_for_status()
            if i >= n_jobs:
                return None
            r = await c.post("/api/v1/jobs", json={**JOB, "generations": 5, "targets": [i % 10], "seed": i})
            r.raise_for_status()
            return r.json()["id"]

        jobs = [j for j in await asyncio.gather(*(member(i, c) for i, c in enumerate(members))) if j]
        for job_id in jobs:
            while (await members[0].get(f"/api/v1/jobs/{job_id}")).json()["status"] in ("queued", "running"):
                await asyncio.sleep(0.2)

        async def cpu_over(s: float) -> float:
            c0, t0 = cpu_seconds(pid), time.monotonic()
            await asyncio.sleep(s)
            return (cpu_seconds(pid) - c0) / (time.monotonic() - t0)

        idle = await cpu_over(seconds)
        tiles = [0] * n_walls
        stop = asyncio.Event()

        async def wall(i: int) -> None:
            async with members[i].stream("GET", f"/api/v1/rooms/{code}/events") as r:
                r.raise_for_status()
                async for line in r.aiter_lines():
                    if line.startswith("event: tile"):
                        tiles[i] += 1
                    if stop.is_set():
                        return

        health: list[float] = []

        async def probe() -> None:
            async with httpx.AsyncClient(base_url=url, timeout=30) as c:
                while not stop.is_set():
                    t = time.perf_counter()
                    await c.get("/healthz")
                    health.append(time.perf_counter() - t)
                    await asyncio.sleep(0.1)

        walls = [asyncio.create_task(wall(i)) for i in range(n_walls)]
        prober = asyncio.create_task(probe())
        await asyncio.sleep(5)  # every wall has had its first frame of every tile
        open_cpu = await cpu_over(seconds)
        stop.set()
        for w in walls:
            w.cancel()
        await asyncio.gather(*walls, prober, return_exceptions=True)
    finally:
        await asyncio.gather(*(c.aclose() for c in members))
    health.sort()
    return {"jobs": len(jobs), "walls": n_walls, "seconds": seconds, "cpu_cores_no_wall": idle,
            "cpu_cores_walls_open": open_cpu, "tiles_per_wall_min": min(tiles), "tiles_per_wall_max": max(tiles),
            "healthz_p50_ms": 1e3 * statistics.median(health),
            "healthz_p99_ms": 1e3 * health[int(0.99 * (len(health) - 1))],
            "healthz_max_ms": 1e3 * health[-1]}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tiles", type=int, default=100)
    ap.add_argument("--seconds", type=float, default=30)
    ap.add_argument("--no-browser", action="store_true")
    ap.add_argument("--json", default=None, help="default: bench/results/wall.json (wall-idle.json with --idle-walls)")
    ap.add_argument("--idle-walls", type=int, default=0, help="walls on a room of --tiles finished jobs")
    args = ap.parse_args()
    if args.idle_walls:
        return idle_main(args)
    args.json = args.json or "bench/results/wall.json"
    (ROOT / "test-artifacts").mkdir(exist_ok=True)
    server = LiveServer(Path(tempfile.mkdtemp(prefix="fl-wall-")), FOOLING_ADMIN_TOKEN=ADMIN,
                        FOOLING_WORKERS=str(args.tiles), FOOLING_MAX_JOBS_PER_CLIENT="4",
                        FOOLING_QUEUE_SIZE=str(args.tiles + 8)).start()
    try:
        code, jobs = asyncio.run(fill_room(server.url, args.tiles))
        cpu0, t0 = cpu_seconds(server.proc.pid), time.monotonic()
        browser: dict = {}
        thread = None
        if not args.no_browser:  # the browser watches while the stream client measures
            thread = threading.Thread(target=lambda: browser.update(in_browser(server.url, code, args.seconds - 6)))
            thread.start()
        stream = asyncio.run(follow(server.url, code, args.seconds))
        if thread:
            thread.join()
        cpu = (cpu_seconds(server.proc.pid) - cpu0) / (time.monotonic() - t0)
    finally:
        server.stop()
    res = {"date": time.strftime("%Y-%m-%d"), "tiles": args.tiles, "stream": stream, "browser": browser,
           "server_cpu_cores": cpu}
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(res, indent=2) + "\n")
    s = stream
    print(f"| running jobs (tiles) | stream frames/s | per tile (median, max) | worst tile gap | /healthz p50 / max "
          f"| server CPU |\n|---|---|---|---|---|---|\n| {s['tiles']} | {s['frames_per_s']:.0f} | "
          f"{s['per_tile_median']:.2f}, {s['per_tile_max']:.2f} | {s['worst_gap_s']:.1f} s | "
          f"{s['healthz_p50_ms']:.0f} / {s['healthz_max_ms']:.0f} ms | {cpu:.2f} cores |")
    if browser:
        print(f"\nChromium at 1920x1080: {browser['tiles']} tiles, {browser['frames_per_s']:.0f} frames applied a "
              f"second, {browser['animation_fps']:.0f} animation frames a second, {browser['long_tasks']} long tasks "
              f"(longest {browser['longest_task_ms']:.0f} ms), heap {browser['heap_mb'] or 0:.0f} MB.")
    return 0


def idle_main(args) -> int:
    server = LiveServer(Path(tempfile.mkdtemp(prefix="fl-wall-idle-")), FOOLING_ADMIN_TOKEN=ADMIN,
                        FOOLING_WORKERS="4", FOOLING_QUEUE_SIZE=str(args.tiles + 8)).start()
    try:
        res = asyncio.run(idle_walls(server.url, server.proc.pid, args.tiles, args.idle_walls, args.seconds))
    finally:
        server.stop()
    res["date"] = time.strftime("%Y-%m-%d")
    path = Path(args.json or "bench/results/wall-idle.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(res, indent=2) + "\n")
    print(f"| idle jobs (tiles) | walls open | server CPU, no wall | server CPU, walls open | tiles per wall "
          f"| /healthz p50 / p99 / max |\n|---|---|---|---|---|---|\n| {res['jobs']} | {res['walls']} | "
          f"{100 * res['cpu_cores_no_wall']:.1f}% | {100 * res['cpu_cores_walls_open']:.1f}% | "
          f"{res['tiles_per_wall_min']}-{res['tiles_per_wall_max']} | {res['healthz_p50_ms']:.1f} / "
          f"{res['healthz_p99_ms']:.1f} / {res['healthz_max_ms']:.1f} ms |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
