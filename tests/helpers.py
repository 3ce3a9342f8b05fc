"""Helpers the test modules share: browsers of their own, and waiting for jobs and experiments."""

from __future__ import annotations

import time

from fastapi.testclient import TestClient

# A short and a long LeNet MAP-Elites job (the Ray backend's tests run both on one engine and on a cluster)
QUICK_MAP_ELITES = {"model": "lenet-mnist", "method": "map-elites", "encoding": "direct", "targets": [1, 7],
                    "generations": 60, "population": 50, "seed": 1}
LONG_MAP_ELITES = {**QUICK_MAP_ELITES, "generations": 20000, "params": {"stop_at": None}}


def browser(app) -> TestClient:
    """A fresh browser: its own cookie jar, hence its own identity once the server has set it."""
    c = TestClient(app)
    c.get("/")
    return c


def wait(c, job_id: str, statuses=("done",), timeout: float = 120) -> dict:
    """Until the job has one of ``statuses``; one it did not expect (failed, interrupted) fails at once."""
    t0 = time.time()
    while True:
        j = c.get(f"/api/v1/jobs/{job_id}").json()
        if j["status"] in statuses:
            return j
        assert j["status"] not in ("failed", "interrupted") or j["status"] in statuses, j
        assert time.time() - t0 < timeout, j["status"]
        time.sleep(0.05)


def wait_step(c, job_id: str, at_least: int, timeout: float = 60) -> dict:
    t0 = time.time()
    while True:
        j = c.get(f"/api/v1/jobs/{job_id}").json()
        if j["progress"]["step"] >= at_least:
            return j
        assert time.time() - t0 < timeout
        time.sleep(0.02)


def wait_parked(c, job_id: str, timeout: float = 30) -> int:
    """Wait until a paused job holds no worker (it cannot step until told to); return its step. On
    an engine, seen from outside: paused, and its step holds for half a second."""
    t0 = time.time()
    if getattr(c, "backend", "local") != "local":  # other modules' apps run the local backend
        last, since = None, time.time()
        while True:
            j = c.get(f"/api/v1/jobs/{job_id}").json()
            if j["status"] != "paused" or j["progress"]["step"] != last:
                last, since = j["progress"]["step"], time.time()
            elif time.time() - since > 0.5:
                return last
            assert time.time() - t0 < timeout
            time.sleep(0.02)
    job = c.app.state.runner.live(job_id)
    while job.parked_at is None or job.step_credits:
        assert time.time() - t0 < timeout
        time.sleep(0.01)
    return c.get(f"/api/v1/jobs/{job_id}").json()["progress"]["step"]


def wait_experiment(c: TestClient, exp_id: str, statuses: tuple[str, ...], timeout: float = 60) -> dict:
    t0 = time.time()
    while (st := c.get(f"/api/v1/experiments/{exp_id}").json())["status"] not in statuses:
        assert time.time() - t0 < timeout, st
        time.sleep(0.1)
    return st
