"""A classroom on one server: N students each start a job and watch its event stream while M
clients keep scoring images. Prints a Markdown table for docs/benchmarks.md.

    .venv/bin/python bench/load.py                    # starts its own server, N = 10 and 50
    .venv/bin/python bench/load.py --url http://127.0.0.1:8000 --students 10

Reports, per N: jobs completed, events delivered, scoring p50/p99 latency and throughput, the
slowest and fastest job's steps per second (fairness), and the server's peak memory (RSS).

    --hostile       one hostile client beside the students: it throws its cookie away on every
                    request, starts oversized and ordinary jobs, pauses its own, tries to cancel
                    and delete the students' jobs, and holds 300 event streams open; and a
                    cookie-less script that floods uploads, sends a 50 MB JSON body, scrapes the
                    students' room and stuffs the quiz. The students then sit in one room, the
                    server has a disk budget (--disk-budget-mb), and /healthz is timed throughout.
    --rss-jobs 500  then runs that many small jobs one after another and reports the server's RSS
                    after the first 50 and after all of them (finished jobs must keep no tensors).
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import multiprocessing
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

ADMIN = "load-bench-token"


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


async def student(url: str, i: int, generations: int, out: list[dict], ids: list[str], room: str | None = None
                  ) -> None:
    # Each student is a browser of their own: their own cookie jar, hence their own signed identity.
    async with httpx.AsyncClient(base_url=url, timeout=120) as client:
        await client.get("/healthz")  # first visit: the server sets this student's fl_client cookie
        if room:
            (await client.post(f"/api/v1/rooms/{room}/join", json={"nickname": f"student{i}"})).raise_for_status()
        await _student(client, i, generations, out, ids)


def classroom_job(generations: int, seed: int) -> dict:
    """The job each student starts here, and the unit bench/engine.py and bench/gpu.py count."""
    return {"model": "lenet-mnist", "method": "map-elites", "encoding": "direct", "targets": "all",
            "population": 50, "generations": generations, "seed": seed, "params": {"stop_at": None}}


async def _student(client: httpx.AsyncClient, i: int, generations: int, out: list[dict], ids: list[str]) -> None:
    r = await client.post("/api/v1/jobs", json=classroom_job(generations, i))
    if r.status_code != 201:
        out.append({"student": i, "rejected": r.status_code})
        return
    job_id = r.json()["id"]
    ids.append(job_id)
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


async def hostile(url: str, victims: list[str], stop: asyncio.Event, tally: dict, streams: int = 300) -> None:
    """Everything a hostile member of the class might try, until the students are done."""

    def count(what: str, status: int) -> None:
        tally[f"{what} {status}"] = tally.get(f"{what} {status}", 0) + 1

    async def hold_stream(job_id: str) -> None:
        async with httpx.AsyncClient(base_url=url, timeout=None) as c:  # a new identity per stream
            try:
                async with c.stream("GET", f"/api/v1/jobs/{job_id}/events") as r:
                    count("stream", r.status_code)
                    async for _ in r.aiter_lines():  # read slowly, never close: held until the end
                        if stop.is_set():
                            return
                        await asyncio.sleep(1.0)
            except httpx.HTTPError:
                count("stream", 0)

    async with httpx.AsyncClient(base_url=url, timeout=60) as c:
        holders = [asyncio.create_task(hold_stream(victims[i % len(victims)])) for i in range(streams)]
        big = [{"method": "random", "params": {"batch_size": 10**9}},
               {"method": "evolve", "model": "efficientnet-lite0-imagenet", "targets": "all", "population": 1000},
               {"method": "map-elites", "encoding": "cppn", "params": {"max_hidden": 10**6}},
               {"method": "map-elites", "generations": 10**9}, {"method": "map-elites", "params": {"lr": 1e308}}]
        mine: list[tuple[str, str]] = []
        i = 0
        while not stop.is_set():
            c.cookies.clear()  # a new identity for every request
            r = await c.post("/api/v1/jobs", json={"model": "lenet-mnist", **big[i % len(big)]})
            count("oversized job", r.status_code)
            c.cookies.clear()
            r = await c.post("/api/v1/jobs", json={"model": "lenet-mnist", "targets": "all", "generations": 20000,
                                                   "params": {"stop_at": None}})
            count("long job", r.status_code)
            if r.status_code == 201:
                mine.append((r.json()["id"], r.json()["control_token"]))
                p = await c.post(f"/api/v1/jobs/{mine[-1][0]}/pause",
                                 headers={"Authorization": f"Bearer {mine[-1][1]}"})
                count("pause own", p.status_code)
            victim = victims[i % len(victims)]
            count("cancel student", (await c.post(f"/api/v1/jobs/{victim}/cancel")).status_code)
            count("delete student", (await c.delete(f"/api/v1/jobs/{victim}")).status_code)
            i += 1
            await asyncio.sleep(0.2)
        for task in holders:
            task.cancel()
        for job_id, token in mine:  # leave nothing running
            await c.post(f"/api/v1/jobs/{job_id}/cancel", headers={"Authorization": f"Bearer {token}"})


async def cookieless_script(url: str, room: str, stop: asyncio.Event, tally: dict) -> None:
    """A script that keeps no cookies: every request is from the anonymous client of its address."""

    def count(what: str, status: int) -> None:
        tally[f"{what} {status}"] = tally.get(f"{what} {status}", 0) + 1

    noise = np.random.default_rng(0).integers(0, 256, (600, 600, 3), dtype=np.uint8)  # about 1 MB as a PNG
    buf = io.BytesIO()
    Image.fromarray(noise).save(buf, format="PNG")
    photo = buf.getvalue()
    async with httpx.AsyncClient(base_url=url, timeout=60, cookies=None) as c:
        try:
            r = await c.post("/api/v1/quiz/answers", content=b"[" + b"0," * 25_000_000 + b"0]",
                             headers={"content-type": "application/json"})
            count("50 MB JSON", r.status_code)
        except httpx.HTTPError:  # the server may close the connection after its 413
            count("50 MB JSON", 413)
        while not stop.is_set():
            c.cookies.clear()
            count("upload", (await c.post("/api/v1/uploads", files={"file": ("n.png", photo, "image/png")})
                             ).status_code)
            for path in (f"/api/v1/rooms/{room}/jobs", f"/api/v1/rooms/{room}", "/api/v1/jobs?limit=200"):
                c.cookies.clear()
                r = await c.get(path)
                text = r.text.replace(" ", "")
                leaked = r.status_code == 200 and ('"student' in text or f'"room":"{room}"' in text)  # nicknames
                count(f"scrape {path.split('?')[0].replace(room, 'CODE')}{' (leaked)' if leaked else ''}",
                      r.status_code)
            c.cookies.clear()
            count("room quiz", (await c.get(f"/api/v1/quiz/next?room={room}")).status_code)
            c.cookies.clear()
            r = await c.get("/api/v1/quiz/next")
            count("quiz next", r.status_code)
            if r.status_code == 200:
                item = r.json()
                c.cookies.clear()
                count("quiz answer", (await c.post("/api/v1/quiz/answers",
                                                   json={"item": item["id"], "answer": item["options"][0]})
                                      ).status_code)
            c.cookies.clear()
            count("room join", (await c.post(f"/api/v1/rooms/{room}/join", json={"nickname": "student1"})
                                ).status_code)
            await asyncio.sleep(0.1)


def healthz_probe(url: str, stop, out) -> None:
    """/healthz every 50 ms, in a process of its own (a busy client loop would add its own delays):
    how long the server's event loop keeps anyone waiting."""
    lat = []
    with httpx.Client(base_url=url, timeout=30) as c:
        while not stop.is_set():
            t = time.perf_counter()
            c.get("/healthz")
            lat.append(time.perf_counter() - t)
            time.sleep(0.05)
    out.put(lat)


def hostile_clients(url: str, victims: list[str], room: str, stop, out) -> None:
    """The hostile client and the cookie-less script, in a process of their own (as they would be
    on a machine of their own): the students' client loop never waits on them."""

    async def both() -> dict:
        tally: dict[str, int] = {}
        done = asyncio.Event()

        async def until_stopped() -> None:
            while not stop.is_set():
                await asyncio.sleep(0.2)
            done.set()

        await asyncio.gather(until_stopped(), hostile(url, victims, done, tally),
                             cookieless_script(url, room, done, tally))
        return tally

    out.put(asyncio.run(both()))


def disk_bytes(folder: Path) -> int:
    """What the server keeps in its data directory (the bench's own server log there left out)."""
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and not p.name.startswith("server-"))


async def rss_over_jobs(url: str, pid: int, total: int) -> dict:
    """Run ``total`` small jobs, a few at a time; the server's RSS after 50 and after all."""
    out = {}
    async with httpx.AsyncClient(base_url=url, timeout=60) as c:
        done = 0
        while done < total:
            batch = []
            for _ in range(min(4, total - done)):
                c.cookies.clear()
                r = await c.post("/api/v1/jobs", json={"model": "lenet-mnist", "targets": "all", "generations": 30,
                                                       "params": {"stop_at": None}})
                batch.append(r.json()["id"])
            for job_id in batch:
                while (await c.get(f"/api/v1/jobs/{job_id}")).json()["status"] in ("queued", "running"):
                    await asyncio.sleep(0.05)
            done += len(batch)
            for mark in (50, total):
                if done >= mark and f"rss_after_{mark}_jobs_mb" not in out:
                    out[f"rss_after_{mark}_jobs_mb"] = rss_mb(pid)
    return out


async def run(url: str, n: int, m: int, generations: int, pid: int | None, with_hostile: bool = False,
              data_dir: Path | None = None) -> dict:
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
        ids: list[str] = []
        tally: dict[str, int] = {}
        room, peak_disk = None, [0]
        if with_hostile:
            room = (await client.post("/api/v1/rooms", json={"title": "load"},
                                      headers={"Authorization": f"Bearer {ADMIN}"})).json()["code"]

        async def watch_disk() -> None:
            while not stop.is_set() and data_dir:
                peak_disk[0] = max(peak_disk[0], await asyncio.to_thread(disk_bytes, data_dir))
                await asyncio.sleep(1.0)

        mp = multiprocessing.get_context("spawn")
        halt, healths, tallies = mp.Event(), mp.Queue(), mp.Queue()
        procs = [mp.Process(target=healthz_probe, args=(url, halt, healths))]
        procs[0].start()
        extra = [asyncio.create_task(watch_disk())]
        students = [asyncio.create_task(student(url, i, generations, results, ids, room)) for i in range(n)]
        if with_hostile:
            while len(ids) < n and not all(s.done() for s in students):
                await asyncio.sleep(0.05)
            procs.append(mp.Process(target=hostile_clients, args=(url, list(ids), room, halt, tallies)))
            procs[-1].start()
        await asyncio.gather(*students)
        wall = time.perf_counter() - t0
        stop.set()
        halt.set()
        health = await asyncio.to_thread(healths.get)
        if with_hostile:
            tally = await asyncio.to_thread(tallies.get)
        for p in procs:
            p.join()
        await asyncio.gather(*scorers, mem, *extra)
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
            "fastest_steps_per_s": max(rates) if rates else None, "peak_rss_mb": peak[0],
            "healthz_requests": len(health), "healthz_p50_ms": 1000 * statistics.median(health) if health else None,
            "healthz_p99_ms": 1000 * sorted(health)[int(0.99 * (len(health) - 1))] if health else None,
            "peak_data_dir_mb": peak_disk[0] / 2**20 if data_dir else None,
            "hostile": tally if with_hostile else None}


def markdown(rows: list[dict], workers: int | None = None) -> str:
    workers = workers or rows[0]["workers"]
    out = [f"Server: lenet-mnist, {workers} job workers, {rows[0].get('cores', 2)}-core CPU. "
           "Each student: map-elites, direct, "
           f"all 10 digits, population 50, {rows[0]['generations']} generations, watching its SSE stream.", "",
           "| students | scoring clients | jobs done | rejected | events | wall s | score req/s | p50 ms | p99 ms "
           "| slowest job steps/s | fastest job steps/s | peak RSS MB | /healthz p99 ms |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        health = f"{r['healthz_p99_ms']:.1f}" if r.get("healthz_p99_ms") is not None else "–"
        out.append(f"| {r['students']} | {r['scorers']} | {r['completed']} | {r['rejected']} | {r['events']} | "
                   f"{r['wall_s']:.1f} | {r['score_per_s']:.0f} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | "
                   f"{r['slowest_steps_per_s']:.1f} | {r['fastest_steps_per_s']:.1f} | {r['peak_rss_mb']:.0f} | "
                   f"{health} |")
    for r in rows:
        if r.get("hostile"):
            if r.get("peak_data_dir_mb") is not None:
                out += ["", f"Data directory at its largest: {r['peak_data_dir_mb']:.1f} MB, against a disk budget of "
                            f"{r['disk_budget_mb']} MB."]
            out += ["", f"Beside the {r['students']} students, the hostile clients (answers they got, by what they "
                        "tried):",
                    "", "| attempt | status | count |", "|---|---|---|"]
            out += [f"| {k.rsplit(' ', 1)[0]} | {k.rsplit(' ', 1)[1]} | {v} |" for k, v in sorted(r["hostile"].items())]
        rss = {k: v for k, v in r.items() if k.startswith("rss_after_")}
        if rss:
            out += ["", "Server RSS after small jobs run one after another: "
                    + ", ".join(f"{k[len('rss_after_'):-len('_jobs_mb')]} jobs {v:.0f} MB" for k, v in rss.items())]
    return "\n".join(out)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--url")
    ap.add_argument("--students", type=int, nargs="*", default=[10, 50])
    ap.add_argument("--scorers", type=int, default=4)
    ap.add_argument("--generations", type=int, default=200)
    ap.add_argument("--workers", type=int, default=int(os.environ.get("FOOLING_WORKERS", "4")))
    ap.add_argument("--json", default="bench/results/load.json")
    ap.add_argument("--hostile", action="store_true", help="hostile clients beside the students")
    ap.add_argument("--disk-budget-mb", type=int, default=64, help="with --hostile: FOOLING_DISK_BUDGET_MB")
    ap.add_argument("--rss-jobs", type=int, default=0, help="then run this many small jobs and report RSS")
    ap.add_argument("--backend", choices=("local", "ray"), default="local",
                    help="ray: the server runs jobs on one Ray engine with --workers jobs at once (a local instance)")
    ap.add_argument("--ray-scoring", choices=("auto", "engines", "server"), default="auto",
                    help="with --backend ray: where scoring runs (FOOLING_RAY_SCORING; auto here: server)")
    args = ap.parse_args()
    rows = []
    for n in args.students:
        server = None
        url, pid = args.url, None
        if url is None:
            import tempfile

            server = LiveServer(Path(tempfile.mkdtemp(prefix="fl-load-")), FOOLING_WORKERS=str(args.workers),
                                FOOLING_QUEUE_SIZE=str(max(64, n)), FOOLING_EVENTS_PER_SECOND="5",
                                FOOLING_MAX_JOBS_PER_ADDRESS=str(max(256, 2 * n)), FOOLING_BACKEND=args.backend,
                                FOOLING_RAY_CPU_ENGINES="1", FOOLING_RAY_ENGINE_JOBS=str(args.workers),
                                FOOLING_RAY_SCORING=args.ray_scoring, FOOLING_ADMIN_TOKEN=ADMIN,
                                **({"FOOLING_DISK_BUDGET_MB": str(args.disk_budget_mb)} if args.hostile else {})
                                ).start()
            url, pid = server.url, server.proc.pid
        try:
            rows.append(asyncio.run(run(url, n, args.scorers, args.generations, pid, args.hostile,
                                        server.data_dir if server else None)))
            rows[-1]["disk_budget_mb"] = args.disk_budget_mb if args.hostile else None
            rows[-1]["backend"] = args.backend
            rows[-1] |= {"workers": args.workers, "cores": os.cpu_count(), "date": time.strftime("%Y-%m-%d")}
            if args.backend == "ray":
                rows[-1]["ray_scoring"] = args.ray_scoring
            if args.rss_jobs and pid:
                rows[-1] |= asyncio.run(rss_over_jobs(url, pid, args.rss_jobs))
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
