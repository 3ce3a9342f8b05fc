"""Scoring benchmark: API throughput and latency against a running server, beside raw forward speed.

    .venv/bin/python bench/score.py                 # starts its own servers (batching on, then off)
    .venv/bin/python bench/score.py --url http://127.0.0.1:8000 --models lenet-mnist

First POST /api/v1/score/tensor (a .npy batch per request, 1 and 2 clients). Then, for each
model: images/s and p50/p99 latency with 1, 16 and 64 concurrent clients (one image per
request), with dynamic batching on and off, and the model's raw forward throughput at batch 1 and
at its best batch size, measured in the same run (while no server is running). Keeps the results in
bench/results/score.json and prints markdown() of them (docs/benchmarks.md holds it, checked).
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx  # only to poll readiness
import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from app.models.registry import Registry  # noqa: E402
from app.settings import Settings  # noqa: E402

BATCHES = {"lenet-mnist": [1, 16, 64, 256, 1024], "efficientnet-lite0-imagenet": [1, 2, 4, 8, 16, 32]}
RUNTIME: dict[str, str] = {}  # model id -> the forward runtime its raw rate was measured in


def sample_image(model_id: str) -> bytes:
    buf = io.BytesIO()
    if model_id == "lenet-mnist":
        from app.data import mnist

        x, _ = mnist.load(ROOT / "data", train=False)
        Image.fromarray((x[0, 0].numpy() * 255).astype(np.uint8)).save(buf, format="PNG")
    else:
        import matplotlib

        photo = Image.open(Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg")
        photo.convert("RGB").resize((224, 224)).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def raw_throughput(model_id: str, seconds: float) -> dict[int, float]:
    env = Settings.from_env()  # FOOLING_RUNTIME and FOOLING_ONNX_DIR as the server will see them
    reg = Registry(Settings(**{**env.__dict__, "preload": model_id, "download_weights": False}))
    reg.load_all()
    model = reg.forward_model(model_id)  # what the server runs: ONNX Runtime where FOOLING_RUNTIME chose it
    RUNTIME[model_id] = reg.get(model_id).runtime
    shape = reg.get(model_id).input_shape
    out = {}
    for bs in BATCHES.get(model_id, [1, 8, 32]):
        x = torch.rand(bs, *shape, device=reg.device)
        best = 0.0
        with torch.inference_mode():
            model(x)
            for _ in range(3):  # best of three: this machine's timings wander
                n, t0 = 0, time.perf_counter()
                while time.perf_counter() - t0 < seconds / 3:
                    model(x)
                    n += bs
                if reg.device.startswith("cuda"):
                    torch.cuda.synchronize()
                best = max(best, n / (time.perf_counter() - t0))
        out[bs] = best
    return out


def multipart_request(host: str, model_id: str, image: bytes) -> bytes:
    """One complete HTTP/1.1 request, built once: the load generator only writes bytes, so its own
    CPU use stays small beside the server's on a 2-core machine."""
    boundary = "benchboundary7f3a"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\n{model_id}\r\n"
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"top_k\"\r\n\r\n1\r\n"
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"x\"\r\n"
            f"Content-Type: application/octet-stream\r\n\r\n").encode() + image + f"\r\n--{boundary}--\r\n".encode()
    head = (f"POST /api/v1/score HTTP/1.1\r\nHost: {host}\r\nContent-Type: multipart/form-data; "
            f"boundary={boundary}\r\nContent-Length: {len(body)}\r\n\r\n").encode()
    return head + body


async def _exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes) -> int:
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = next(int(line.split(b":")[1]) for line in head.lower().split(b"\r\n")
                  if line.startswith(b"content-length:"))
    await reader.readexactly(length)
    return status


async def load(url: str, model_id: str, image: bytes, clients: int, seconds: float) -> dict:
    host, port = url.split("//")[1].split(":")
    request = multipart_request(host, model_id, image)
    latencies: list[float] = []
    errors = 0

    async def one_client(stop: float) -> None:
        nonlocal errors
        reader, writer = await asyncio.open_connection(host, int(port))
        try:
            while time.perf_counter() < stop:
                t = time.perf_counter()
                try:
                    ok = await _exchange(reader, writer, request) == 200
                except (OSError, asyncio.IncompleteReadError):
                    ok = False
                    writer.close()
                    reader, writer = await asyncio.open_connection(host, int(port))
                if ok:
                    latencies.append(time.perf_counter() - t)
                else:
                    errors += 1
        finally:
            writer.close()

    await one_client(time.perf_counter() + 0.5)  # warm-up: first-request costs stay out of the numbers
    latencies.clear()
    t0 = time.perf_counter()
    await asyncio.gather(*(one_client(t0 + seconds) for _ in range(clients)))
    wall = time.perf_counter() - t0
    latencies.sort()
    q = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else latencies * 99
    return {"rps": len(latencies) / wall, "p50": q[49] * 1000, "p99": q[98] * 1000, "errors": errors,
            "n": len(latencies)}


def npy_rows(model_id: str, rows: int) -> bytes:
    """``rows`` copies of the sample image as one uint8 (N, C, H, W) .npy body."""
    img = Image.open(io.BytesIO(sample_image(model_id)))
    if model_id.startswith("lenet"):
        arr = np.asarray(img.convert("L"), dtype=np.uint8)[None]
    else:
        arr = np.asarray(img.convert("RGB"), dtype=np.uint8).transpose(2, 0, 1)
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(np.broadcast_to(arr, (rows, *arr.shape))))
    return buf.getvalue()


def tensor_throughput(url: str, model_id: str, rows: int, clients: int, seconds: float) -> dict:
    """Images/s through POST /api/v1/score/tensor: ``clients`` threads each sending ``rows`` images
    per request, back to back (with two, one's upload and JSON overlap the other's forward pass)."""
    from concurrent.futures import ThreadPoolExecutor

    body = npy_rows(model_id, rows)

    def client(stop: float) -> tuple[int, int]:
        done = errors = 0
        with httpx.Client(timeout=600) as c:
            while time.perf_counter() < stop:
                r = c.post(f"{url}/api/v1/score/tensor?model={model_id}&top_k=5", content=body,
                           headers={"content-type": "application/x-npy"})
                if r.status_code == 200:
                    done += len(r.json()["results"])
                else:
                    errors += 1
        return done, errors

    best, errors = 0.0, 0
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(client, [time.perf_counter()] * clients))  # a warm-up request each
        for _ in range(3):  # best of three, as for the raw rate: this machine's timings wander
            t0 = time.perf_counter()
            results = list(pool.map(client, [t0 + seconds / 3] * clients))
            best = max(best, sum(d for d, _ in results) / (time.perf_counter() - t0))
            errors += sum(e for _, e in results)
    return {"ips": best, "errors": errors}


def start_server(batching: bool, models: list[str]) -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, FOOLING_BATCHING="1" if batching else "0", FOOLING_PRELOAD=",".join(models),
               FOOLING_DOWNLOAD_WEIGHTS="0")
    proc = subprocess.Popen([sys.executable, "-m", "uvicorn", "app.main:app", "--port", str(port),
                             "--log-level", "warning"], cwd=ROOT, env=env)
    url = f"http://127.0.0.1:{port}"
    t0 = time.time()
    while True:
        try:
            if httpx.get(url + "/readyz", timeout=2).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.time() - t0 > 120:
            raise SystemExit("server did not start")
        time.sleep(0.3)


@contextmanager
def serving(url: str | None, batching: bool, models: list[str]) -> Iterator[str]:
    """The given server's URL, or one of our own for the block (stopped after it)."""
    proc, url = (None, url) if url else start_server(batching, models)
    try:
        yield url
    finally:
        if proc:
            proc.terminate()
            proc.wait(10)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", help="benchmark this running server instead of starting our own")
    ap.add_argument("--models", default="lenet-mnist,efficientnet-lite0-imagenet")
    ap.add_argument("--clients", default="1,16,64")
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--tensor-only", action="store_true", help="only POST /api/v1/score/tensor against raw")
    ap.add_argument("--json", default="bench/results/score.json", help="where to keep the results ('' for nowhere)")
    args = ap.parse_args()
    models = args.models.split(",")
    clients = [int(c) for c in args.clients.split(",")]

    raw = {m: raw_throughput(m, min(args.seconds, 3.0)) for m in models}
    tensor_rows = []
    with serving(args.url, True, models) as url:
        for m in models:
            n = 1024 if m.startswith("lenet") else 64
            for c in (1, 2):
                r = tensor_throughput(url, m, n, c, args.seconds)
                tensor_rows.append((m, n, c, r))
                print(f"{m} tensor rows={n} clients={c}: {r}", file=sys.stderr)
    for m in models:  # raw again, with no server running: the best of both is the bar
        again = raw_throughput(m, min(args.seconds, 3.0))
        raw[m] = {bs: max(rate, again.get(bs, 0.0)) for bs, rate in raw[m].items()}
    rows = []
    modes = [] if args.tensor_only else [None] if args.url else [True, False]
    for batching in modes:
        with serving(args.url, batching, models) as url:
            for m in models:
                image = sample_image(m)
                for c in clients:
                    r = asyncio.run(load(url, m, image, c, args.seconds))
                    rows.append((m, batching, c, r))
                    print(f"{m} batching={batching} clients={c}: {r}", file=sys.stderr)

    device = "cuda" if torch.cuda.is_available() else f"cpu ({os.cpu_count()} cores)"
    res = {"date": time.strftime("%Y-%m-%d"), "device": device, "torch": torch.__version__,
           "seconds": args.seconds, "runtime": {m: RUNTIME.get(m, "?") for m in models},
           "raw": {m: {str(bs): rate for bs, rate in raw[m].items()} for m in models},
           "tensor": [{"model": m, "rows": n, "clients": c, **r} for m, n, c, r in tensor_rows],
           "png": [{"model": m, "batching": batching, "clients": c, **r} for m, batching, c, r in rows]}
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(res, indent=2) + "\n")
    print(markdown(res))


def markdown(res: dict) -> str:
    """The tables for docs/benchmarks.md, from one run's results (bench/results/score.json)."""
    def best(m: str) -> tuple[str, float]:
        return max(res["raw"][m].items(), key=lambda kv: kv[1])

    out = [f"Device: {res['device']}, torch {res['torch']}, {res['date']}, {res['seconds']:.0f} s per row.", "",
           "POST /api/v1/score/tensor (one .npy array per request) against the raw forward rate:", ""]
    out += table(["model", "runtime", "raw best (img/s @ batch)", "rows per request", "clients", "API img/s",
                  "% of raw best", "errors"],
                 [[r["model"], res["runtime"][r["model"]], f"{best(r['model'])[1]:.0f} @ {best(r['model'])[0]}",
                   r["rows"], r["clients"], f"{r['ips']:.0f}", f"{100 * r['ips'] / best(r['model'])[1]:.0f}%",
                   r["errors"]] for r in res["tensor"]])
    if res["png"]:
        out += ["", "POST /api/v1/score (one PNG per request):", ""]
        out += table(["model", "runtime", "raw batch 1 (img/s)", "raw best (img/s @ batch)", "batching", "clients",
                      "API img/s", "% of raw best", "p50 ms", "p99 ms", "errors"],
                     [[r["model"], res["runtime"][r["model"]], f"{res['raw'][r['model']]['1']:.0f}",
                       f"{best(r['model'])[1]:.0f} @ {best(r['model'])[0]}",
                       "n/a" if r["batching"] is None else ("on" if r["batching"] else "off"), r["clients"],
                       f"{r['rps']:.0f}", f"{100 * r['rps'] / best(r['model'])[1]:.0f}%", f"{r['p50']:.1f}",
                       f"{r['p99']:.1f}", r["errors"]] for r in res["png"]])
    return "\n".join(out)


def table(columns: list[str], rows: list[list]) -> list[str]:
    """A Markdown table's lines."""
    return ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns),
            *("| " + " | ".join(str(v) for v in row) + " |" for row in rows)]

if __name__ == "__main__":
    main()
