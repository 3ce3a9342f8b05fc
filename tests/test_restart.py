"""Kill the server hard while jobs run; on restart finished results are intact and cut-off jobs
say interrupted. And a polite stop does not hang on open event streams."""

from __future__ import annotations

import threading
import time

import httpx

from tests.live_server import LiveServer

LONG = {"model": "lenet-mnist", "method": "map-elites", "generations": 20000, "population": 50,
        "params": {"stop_at": None}}


def wait(url: str, job_id: str, statuses: tuple[str, ...], timeout: float = 60) -> dict:
    t0 = time.time()
    while True:
        j = httpx.get(f"{url}/api/v1/jobs/{job_id}").json()
        if j["status"] in statuses:
            return j
        assert time.time() - t0 < timeout, j["status"]
        time.sleep(0.05)


def test_sigkill_then_restart(tmp_path):
    server = LiveServer(tmp_path, FOOLING_WORKERS="1").start()
    url = server.url
    done = httpx.post(f"{url}/api/v1/jobs", json={"model": "lenet-mnist", "method": "map-elites", "targets": [3, 8],
                                                  "population": 50, "generations": 400}).json()
    before = wait(url, done["id"], ("done",))
    grid = httpx.get(f"{url}/api/v1/jobs/{done['id']}/grid.png").content
    running = httpx.post(f"{url}/api/v1/jobs", json=LONG).json()
    wait(url, running["id"], ("running",))
    queued = httpx.post(f"{url}/api/v1/jobs", json=LONG).json()
    assert httpx.get(f"{url}/api/v1/jobs/{queued['id']}").json()["status"] == "queued"
    server.kill()

    again = LiveServer(tmp_path, port=server.port).start()
    after = httpx.get(f"{url}/api/v1/jobs/{done['id']}").json()
    assert after["status"] == "done" and after["targets"] == before["targets"]
    assert httpx.get(f"{url}/api/v1/jobs/{done['id']}/grid.png").content == grid
    assert httpx.get(url + after["targets"][0]["image"]).status_code == 200
    for job in (running, queued):
        j = httpx.get(f"{url}/api/v1/jobs/{job['id']}").json()
        assert j["status"] == "interrupted" and "stopped" in j["error"]
    # the restarted server takes new work
    new = httpx.post(f"{url}/api/v1/jobs", json={"model": "lenet-mnist", "method": "random",
                                                 "params": {"batches": 1, "batch_size": 10}}).json()
    assert wait(url, new["id"], ("done",))["status"] == "done"
    again.stop()


def test_shutdown_does_not_hang_on_open_streams(tmp_path):
    server = LiveServer(tmp_path).start()
    job = httpx.post(f"{server.url}/api/v1/jobs", json=LONG).json()
    wait(server.url, job["id"], ("running",))
    got: list[str] = []

    def listen() -> None:
        try:
            with httpx.stream("GET", f"{server.url}/api/v1/jobs/{job['id']}/events", timeout=30) as r:
                for line in r.iter_lines():
                    got.append(line)
        except httpx.HTTPError:
            pass

    listeners = [threading.Thread(target=listen) for _ in range(3)]
    for t in listeners:
        t.start()
    t0 = time.time()  # wait until every stream has had a frame: then they are all open
    while sum(line == "event: state" for line in got) < 3 or not any(line == "event: snapshot" for line in got):
        assert time.time() - t0 < 30, got[-5:]
        time.sleep(0.02)
    took = server.stop(timeout=20)
    assert took < 10  # uvicorn would otherwise wait for the streams forever
    for t in listeners:
        t.join(5)
    assert any(line.startswith("event: snapshot") for line in got)
    assert any(line == "event: close" for line in got)  # streams were told, not just cut
