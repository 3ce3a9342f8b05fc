"""Dynamic batching: concurrent callers share forward passes; failures stay with their batch."""

from __future__ import annotations

import asyncio
import io
import threading
import time

import httpx
import numpy as np
import pytest
import torch
from PIL import Image

from app.main import create_app
from app.serving.batching import Batcher
from tests.conftest import make_settings, png_bytes


def test_batcher_coalesces_and_splits_results_in_order():
    calls = []
    gate = threading.Event()

    def forward(xs):
        gate.wait(5)
        x = torch.cat(xs)
        calls.append(len(x))
        return x.sum(dim=(1, 2, 3), keepdim=False).unsqueeze(1)

    b = Batcher(forward, max_batch=64, max_wait_s=0.05)
    xs = [torch.full((k, 1, 2, 2), float(i)) for i, k in enumerate([1, 3, 2, 1, 4])]
    futs = [b.submit(x) for x in xs]
    gate.set()
    for i, (x, f) in enumerate(zip(xs, futs, strict=True)):
        out = f.result(5)
        assert out.shape == (len(x), 1) and torch.all(out == 4.0 * i)
    assert sum(calls) == 11 and len(calls) < 5  # fewer passes than callers
    b.close()


@pytest.mark.parametrize("lanes", [1, 2])
def test_lanes_let_that_many_batches_be_out_at_once(lanes):
    """With lanes=2 (the Ray backend: one per engine) a second batch starts while the first still
    waits on its engine; with one lane it queues behind it."""
    inside, most, lock = [0], [0], threading.Lock()

    def forward(xs):
        with lock:
            inside[0] += 1
            most[0] = max(most[0], inside[0])
        time.sleep(0.3)
        with lock:
            inside[0] -= 1
        return torch.cat(xs).flatten(1)

    b = Batcher(forward, max_batch=1, max_wait_s=0.0, lanes=lanes)
    futs = [b.submit(torch.zeros(1, 1, 1, 1)) for _ in range(2)]
    for f in futs:
        f.result(5)
    b.close()
    assert most[0] == lanes and b.batches == 2


def test_batcher_respects_max_batch_counting_images():
    sizes = []
    def forward(xs):
        x = torch.cat(xs)
        sizes.append(len(x))
        return x[:, :1, 0, 0]

    b = Batcher(forward, max_batch=4, max_wait_s=0.05)
    futs = [b.submit(torch.zeros(1, 1, 1, 1)) for _ in range(10)]
    [f.result(5) for f in futs]
    assert max(sizes) <= 4 and sum(sizes) == 10
    big = b.submit(torch.zeros(9, 1, 1, 1)).result(5)  # a request larger than max_batch still runs
    assert len(big) == 9
    b.close()


def test_batcher_error_fails_only_that_batch():
    def forward(xs):
        x = torch.cat(xs)
        if (x < 0).any():
            raise ValueError("bad batch")
        return x[:, :1, 0, 0]

    b = Batcher(forward, max_batch=8, max_wait_s=0.0)
    with pytest.raises(ValueError):
        b.submit(-torch.ones(1, 1, 1, 1)).result(5)
    assert b.submit(torch.ones(2, 1, 1, 1)).result(5).shape == (2, 1)  # the thread lives on
    b.close()


def _digit_files(n):
    rng = np.random.default_rng(0)
    return [png_bytes(Image.fromarray(rng.integers(0, 256, (28, 28), dtype=np.uint8))) for _ in range(n)]


async def _concurrent_scores(batching: bool, n: int):
    app = create_app(make_settings(batching=batching, batch_max_wait_ms=20, preload="lenet-mnist"))
    async with app.router.lifespan_context(app):
        lab = app.state.lab
        await asyncio.to_thread(lab.registry.ready.wait, 60)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            files = _digit_files(n)
            rs = await asyncio.gather(*[
                client.post("/api/v1/score", files={"file": (f"{i}.png", f, "image/png")}, data={"top_k": "10"})
                for i, f in enumerate(files)
            ])
        stats = lab.scorer.stats()
        direct = lab.scorer.forward("lenet-mnist", torch.stack([
            torch.from_numpy(np.array(Image.open(io.BytesIO(f)))).float().div(255)[None]
            for f in files]))
    return rs, stats, direct


@pytest.mark.anyio
async def test_concurrent_requests_are_coalesced_with_same_answers():
    rs, stats, direct = await _concurrent_scores(True, 24)
    assert all(r.status_code == 200 for r in rs)
    assert stats["lenet-mnist"]["images"] == 24
    assert stats["lenet-mnist"]["batches"] < 24
    for r, p in zip(rs, direct, strict=True):
        top = r.json()["results"][0]["top"]
        got = torch.zeros(10)
        for t in top:
            got[t["index"]] = t["confidence"]
        torch.testing.assert_close(got, p, atol=1e-5, rtol=1e-4)


@pytest.mark.anyio
async def test_batching_off_runs_each_request_alone():
    rs, stats, _ = await _concurrent_scores(False, 8)
    assert all(r.status_code == 200 for r in rs)
    assert stats == {}  # no batcher was made


@pytest.fixture
def anyio_backend():
    return "asyncio"


def test_participants_move_in_rounds_and_leaving_stops_the_wait():
    """Two repeat callers: every forward pass carries both (they move in rounds); once one leaves,
    the other is not held up waiting for it."""

    sizes: list[int] = []

    def forward(xs):
        sizes.append(sum(len(x) for x in xs))
        return torch.cat(xs)

    b = Batcher(forward, max_batch=1000, max_wait_s=1.0, name="rounds")
    results: dict[int, list] = {0: [], 1: []}

    def job(i: int, steps: int) -> None:
        with b.participant() as p:
            for s in range(steps):
                time.sleep(0.002 * (i + 1))  # uneven work between submits
                results[i].append(p.submit(torch.full((3, 1), float(i * 100 + s))))

    threads = [threading.Thread(target=job, args=(i, 20)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert all(len(r) == 20 for r in results.values())
    assert results[1][5].flatten().tolist() == [105.0] * 3  # each caller gets its own rows back
    assert sizes.count(6) >= 19  # both jobs' rows in (almost) every pass
    t0 = time.perf_counter()
    with b.participant() as p:
        p.submit(torch.zeros((2, 1)))
    assert time.perf_counter() - t0 < 0.5  # nobody else participates: no 1 s wait
    b.close()
