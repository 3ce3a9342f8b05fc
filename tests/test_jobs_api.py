"""Jobs over HTTP: start, follow, control, download, limits and errors, on a real LeNet."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path

import pytest
import torch
from fastapi.testclient import TestClient

from app.jobs import run as run_module
from app.main import create_app
from app.serving.imaging import to_png
from app.web.identity import CLIENT_COOKIE, Signer
from app.web.views import view
from tests.conftest import make_settings, start_local_ray, stop_local_ray, wait_ready
from tests.helpers import wait, wait_parked, wait_step

TRUNCATED = to_png(torch.rand((1, 28, 28)))[:60]  # a PNG cut short: header fine, pixels missing
LONG = {"model": "lenet-mnist", "method": "map-elites", "generations": 20000, "population": 50,
        "params": {"stop_at": None}}


@pytest.fixture(scope="module", params=["local", "ray"])
def jc(request, tmp_path_factory):
    """An app with small limits and its own data directory, on each job backend: the same REST
    contract whether jobs run in the server or on a Ray engine (a local instance, one engine)."""
    ray = start_local_ray() if request.param == "ray" else None
    settings = make_settings(preload="lenet-mnist", data_dir=tmp_path_factory.mktemp("jobs"), workers=2,
                             queue_size=2, max_jobs_per_client=3, max_generations=50_000,
                             events_per_second=20.0, secret_key=SECRET, backend=request.param,
                             ray_cpu_engines=1, ray_engine_jobs=2)
    try:
        with TestClient(create_app(settings)) as c:
            wait_ready(c)
            c.backend = request.param
            yield c
    finally:
        if ray:
            stop_local_ray(ray)


def local_only(c, why: str) -> None:
    if getattr(c, "backend", "local") != "local":
        pytest.skip(f"the local runner's internals: {why}")


SECRET = "jobs-api-test-secret"


def who(name: str) -> dict:
    """A browser of its own: the signed client cookie the server would have given it."""
    return {"Cookie": f"{CLIENT_COOKIE}={Signer(SECRET.encode()).sign(CLIENT_COOKIE, f'client-{name}')}"}


def start(c, body: dict, client: str = "a") -> dict:
    r = c.post("/api/v1/jobs", json=body, headers=who(client))
    assert r.status_code == 201, r.text
    return r.json()


def events(c, job_id: str, headers: dict | None = None) -> list[tuple[str, dict, str | None]]:
    out, name, data, eid = [], None, None, None
    with c.stream("GET", f"/api/v1/jobs/{job_id}/events", headers=headers or {}) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        for line in r.iter_lines():
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                data = json.loads(line[6:])
            elif line.startswith("id: "):
                eid = line[4:]
            elif line == "" and name:
                out.append((name, data, eid))
                if name == "close":
                    break
                name, data, eid = None, None, None
    return out


def test_map_elites_job_runs_to_999_and_saves_everything(jc):
    made = start(jc, {"model": "lenet-mnist", "method": "map-elites", "targets": "all", "seed": 0,
                      "population": 100, "generations": 3000})
    assert made["status"] == "queued" and set(made["links"]) >= {"self", "events", "page", "cancel"}
    job = wait(jc, made["id"])
    assert len(job["targets"]) == 10 and job["settings"]["seed"] == 0
    assert all(t["confidence"] >= 0.9999 for t in job["targets"])
    assert job["history"] and job["progress"]["evaluations"] > 0
    png = jc.get(job["targets"][7]["image"])
    assert png.status_code == 200 and png.headers["content-type"] == "image/png"
    r = jc.post("/api/v1/score", files={"file": ("7.png", png.content, "image/png")},
                data={"model": "lenet-mnist", "top_k": "1"})
    assert r.json()["results"][0]["top"][0]["index"] == 7
    for name in ("grid.png", "curve.png", "summary.json"):
        assert jc.get(f"/api/v1/jobs/{made['id']}/{name}").status_code == 200
    summary = jc.get(f"/api/v1/jobs/{made['id']}/summary.json").json()
    assert summary["settings"]["method"] == "map-elites" and len(summary["targets"]) == 10


def test_sse_stream_reads_to_final_event_and_reconnect_gets_result(jc):
    made = start(jc, {"model": "lenet-mnist", "method": "gradient", "targets": [1, 2, 3], "steps": 300})
    evs = events(jc, made["id"])
    names = [e[0] for e in evs]
    assert names[0] == "state" and names[-2:] == ["final", "close"]
    final = evs[-2][1]
    assert final["status"] == "done" and len(final["targets"]) == 3
    steps = [d["step"] for n, d, _ in evs if n == "snapshot"]
    assert steps == sorted(steps)
    again = events(jc, made["id"], headers={"Last-Event-ID": evs[-2][2] or "0"})
    assert [e[0] for e in again] == ["state", "final", "close"]
    assert again[1][1]["targets"] == final["targets"]


def test_stream_of_a_running_job_throttles_and_shows_progress(jc):
    made = start(jc, {**LONG, "targets": [0, 1]})
    wait_step(jc, made["id"], 1)
    got, t0 = [], time.time()
    with jc.stream("GET", f"/api/v1/jobs/{made['id']}/events") as r:
        for line in r.iter_lines():
            if line.startswith("data: "):
                got.append(json.loads(line[6:]))
            if len(got) >= 8:
                break
    elapsed = time.time() - t0
    jc.post(f"/api/v1/jobs/{made['id']}/cancel", headers=who("a"))
    snaps = [d for d in got[1:] if "step" in d]
    assert len(snaps) >= 5 and snaps[-1]["step"] > snaps[0]["step"]
    assert elapsed >= (len(got) - 2) / 20.0 * 0.9  # at most 20 frames a second in this app
    assert all(t["image"].startswith(f"/api/v1/jobs/{made['id']}/images/") for t in snaps[-1]["targets"])
    assert "top" in snaps[-1]["targets"][0]
    wait(jc, made["id"], ("cancelled",))


def test_cancel_keeps_best_so_far(jc):
    made = start(jc, {**LONG, "targets": "all"})
    wait_step(jc, made["id"], 3)
    r = jc.post(f"/api/v1/jobs/{made['id']}/cancel", headers=who("a"))
    assert r.status_code == 200
    job = wait(jc, made["id"], ("cancelled",))
    assert len(job["targets"]) == 10 and jc.get(job["targets"][0]["image"]).status_code == 200
    assert jc.post(f"/api/v1/jobs/{made['id']}/cancel", headers=who("a")).status_code == 409


def test_pause_step_resume(jc):
    made = start(jc, {**LONG, "targets": [4]})
    wait_step(jc, made["id"], 2)
    assert jc.post(f"/api/v1/jobs/{made['id']}/step", headers=who("a")).status_code == 409  # not paused
    assert jc.post(f"/api/v1/jobs/{made['id']}/pause", headers=who("a")).json()["status"] == "paused"
    before = wait_parked(jc, made["id"])
    for _ in range(3):
        assert jc.post(f"/api/v1/jobs/{made['id']}/step", headers=who("a")).status_code == 200
    wait_step(jc, made["id"], before + 3)
    assert wait_parked(jc, made["id"]) == before + 3  # exactly three steps, then it holds again
    assert jc.get(f"/api/v1/jobs/{made['id']}").json()["status"] == "paused"
    jc.post(f"/api/v1/jobs/{made['id']}/resume", headers=who("a"))
    wait_step(jc, made["id"], before + 10)
    jc.post(f"/api/v1/jobs/{made['id']}/cancel", headers=who("a"))
    wait(jc, made["id"], ("cancelled",))


def test_same_seed_same_result(jc):
    body = {"model": "lenet-mnist", "method": "map-elites", "targets": [2, 5], "population": 30,
            "generations": 15, "seed": 7, "params": {"stop_at": None}}
    a, b = (wait(jc, start(jc, body)["id"]) for _ in range(2))
    assert [t["confidence"] for t in a["targets"]] == [t["confidence"] for t in b["targets"]]
    assert jc.get(a["targets"][0]["image"]).content == jc.get(b["targets"][0]["image"]).content


def data_url(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode()


def test_adversarial_job_from_data_url_and_from_upload(jc, mnist_test):
    x, y = mnist_test
    i = int((y == 7).nonzero()[0])
    png = to_png(x[i])
    made = start(jc, {"model": "lenet-mnist", "method": "pgd", "targets": [3], "steps": 40,
                      "params": {"epsilon": 0.3}, "image": data_url(png)})
    job = wait(jc, made["id"])
    assert job["targets"][0]["index"] == 3 and job["targets"][0]["confidence"] > 0.5
    assert job["extra"]["linf"][0] <= 0.3 + 0.5 / 255 + 1e-6
    assert jc.get(f"/api/v1/jobs/{made['id']}/input.png").content == png
    up = jc.post("/api/v1/uploads", files={"file": ("seven.png", png, "image/png")})
    assert up.status_code == 201
    made = start(jc, {"model": "lenet-mnist", "method": "fgsm", "params": {"epsilon": 0.2}, "upload": up.json()["id"]})
    job = wait(jc, made["id"])
    assert job["targets"] and job["extra"]["linf"][0] <= 0.2 + 0.5 / 255 + 1e-6


@pytest.mark.parametrize("body,status,field", [
    ({"method": "magic"}, 422, "method"),
    ({"model": "no-such-model"}, 404, "model"),
    ({"targets": [10]}, 422, "targets"),
    ({"targets": "most"}, 422, "targets"),
    ({"generations": 10**9}, 422, "generations"),
    ({"population": 0}, 422, "population"),
    ({"method": "gradient", "generations": 5}, 422, "generations"),
    ({"params": {"no_such_knob": 1}}, 422, "params"),
    ({"unexpected": 1}, 422, "unexpected"),
    ({"method": "pgd"}, 422, "image"),
    ({"method": "pgd", "image": "not a data url"}, 422, "image"),
    ({"method": "pgd", "image": "data:image/png;base64," + base64.b64encode(TRUNCATED).decode()}, 400, "image"),
    ({"method": "pgd", "image": "data:image/png;base64," + base64.b64encode(b"hello").decode()}, 415, "image"),
    ({"method": "pgd", "upload": "nosuchupload1"}, 404, "upload"),
    ({"method": "pgd", "upload": "../../etc/passwd"}, 422, "upload"),
])
def test_bad_job_requests_get_clear_errors(jc, body, status, field):
    r = jc.post("/api/v1/jobs", json={"model": "lenet-mnist", **body}, headers=who("bad"))
    assert r.status_code == status, r.text
    assert r.json()["field"] == field and r.json()["detail"]


def test_failing_job_records_error_and_worker_survives(jc, monkeypatch):
    local_only(jc, "the engine is patched in this process")
    # a nonsense parameter is refused up front now...
    r = jc.post("/api/v1/jobs", json={"model": "lenet-mnist", "generations": 5, "params": {"mutation_rate": "lots"}})
    assert r.status_code == 422 and r.json()["field"] == "params.mutation_rate"

    # ...so make the engine itself fail while it runs
    def exploding(*args, **kwargs):
        def steps():
            raise RuntimeError("engine exploded")
            yield

        return steps()

    monkeypatch.setattr(run_module, "build", exploding)
    made = start(jc, {"model": "lenet-mnist", "method": "map-elites", "generations": 5})
    job = wait(jc, made["id"], ("failed", "done"))
    assert job["status"] == "failed" and "engine exploded" in job["error"]
    monkeypatch.undo()
    ok = start(jc, {"model": "lenet-mnist", "method": "map-elites", "generations": 3, "targets": [1]})
    assert wait(jc, ok["id"])["status"] == "done"


def cancel_all(c, jobs):
    for j in jobs:
        assert c.post(f"/api/v1/jobs/{j['id']}/cancel",
                      headers={"Authorization": f"Bearer {j['control_token']}"}).status_code in (200, 409)
    for j in jobs:
        wait(c, j["id"], ("cancelled", "done"))


def test_queue_full_answers_429_with_retry_after(jc):
    running = [start(jc, {**LONG, "targets": [i]}, client=f"q{i}") for i in range(2)]  # both workers busy
    for j in running:
        wait_step(jc, j["id"], 1)
    queued = [start(jc, {**LONG, "targets": [i]}, client=f"w{i}") for i in range(2)]  # the queue (2) is full
    r = jc.post("/api/v1/jobs", json={**LONG, "targets": [0]}, headers=who("other"))
    assert r.status_code == 429 and int(r.headers["Retry-After"]) > 0 and "queue" in r.json()["detail"]
    cancel_all(jc, running + queued)


def test_per_client_cap_answers_429(jc):
    mine = [start(jc, {**LONG, "targets": [i]}, client="capped") for i in range(3)]  # cap is 3
    r = jc.post("/api/v1/jobs", json={**LONG, "targets": [3]}, headers=who("capped"))
    assert r.status_code == 429 and "limit 3" in r.json()["detail"] and r.headers["Retry-After"]
    other = start(jc, {"model": "lenet-mnist", "method": "random", "params": {"batches": 1, "batch_size": 10}},
                  client="someone-else")  # another client still gets in (one queue slot is free)
    cancel_all(jc, mine)
    wait(jc, other["id"])


def test_ids_are_random_and_file_routes_take_ids_only(jc):
    ids = {start(jc, {"model": "lenet-mnist", "method": "random", "params": {"batches": 1, "batch_size": 10}},
                 client=f"ids{i}")["id"] for i in range(3)}
    for i in ids:
        wait(jc, i)
    assert len(ids) == 3 and all(len(i) >= 16 and not i.isdigit() for i in ids)
    for bad in ("/api/v1/jobs/..%2F..%2Fetc/grid.png", "/api/v1/jobs/x/grid.png",
                "/api/v1/jobs/aaaaaaaaaaaa/..%2Fjobs.sqlite3", "/api/v1/jobs/aaaaaaaaaaaa/images/..%2F1.png"):
        r = jc.get(bad)
        assert r.status_code in (404, 422) and r.headers["content-type"].startswith("application/json")
    assert jc.get("/api/v1/jobs/aaaaaaaaaaaa").status_code == 404


def test_list_is_newest_first(jc):
    a = start(jc, {"model": "lenet-mnist", "method": "random", "params": {"batches": 1, "batch_size": 10}}, "list")
    wait(jc, a["id"])
    b = start(jc, {"model": "lenet-mnist", "method": "random", "params": {"batches": 1, "batch_size": 10}}, "list")
    wait(jc, b["id"])
    listed = jc.get("/api/v1/jobs?limit=5").json()
    ids = [j["id"] for j in listed["jobs"]]
    assert ids.index(b["id"]) < ids.index(a["id"]) and listed["total"] >= 2
    assert jc.get("/api/v1/jobs?limit=0").status_code == 422


def test_upload_rejects_non_images(jc):
    r = jc.post("/api/v1/uploads", files={"file": ("x.png", b"not an image", "image/png")})
    assert r.status_code in (400, 415) and r.json()["field"] == "file"


def test_jobs_share_forward_passes(jc):
    """Two evolution jobs on one model at once: the job batcher runs fewer forward passes than the
    populations it was sent (some passes carried both jobs)."""
    local_only(jc, "the batcher's counts are read in this process (on Ray, the engine batches)")
    lab = jc.app.state.lab
    stats0 = lab.scorer.stats().get("jobs:lenet-mnist", {"batches": 0, "images": 0})
    jobs = [start(jc, {**LONG, "generations": 300, "targets": [i]}, client=f"share{i}") for i in range(2)]
    for j in jobs:
        wait(jc, j["id"])
    st = lab.scorer.stats()["jobs:lenet-mnist"]
    batches, images = st["batches"] - stats0["batches"], st["images"] - stats0["images"]
    assert images >= 2 * 301 * 50 and batches < images / 50


def test_closed_streams_free_their_listeners_and_do_not_hold_the_job(jc):
    made = start(jc, {**LONG, "targets": [6]}, client="listener")
    wait_step(jc, made["id"], 1)
    runner = jc.app.state.runner
    for _ in range(3):  # open a stream, read its first frames, hang up
        with jc.stream("GET", f"/api/v1/jobs/{made['id']}/events") as r:
            n = 0
            for line in r.iter_lines():
                n += line.startswith("event: ")
                if n >= 2:
                    break
    step_before = jc.get(f"/api/v1/jobs/{made['id']}").json()["progress"]["step"]
    t0 = time.time()
    while runner.live(made["id"]).listeners and time.time() - t0 < 5:
        time.sleep(0.05)
    assert not runner.live(made["id"]).listeners  # nothing left waiting for the gone clients
    wait_step(jc, made["id"], step_before + 5)  # and the job went on regardless
    cancel_all(jc, [made])


class _Finishing:
    """A live job that finishes after its status has been read ``reads`` times; its record is
    written before that (as Board.finish does)."""

    def __init__(self, reads: int, records: list[dict]) -> None:
        self.reads, self.records = reads, records
        self.id, self.version, self.error = "j" * 16, 3, None
        self.run = type("R", (), {"snap": None, "history": []})()

    @property
    def status(self) -> str:
        self.reads -= 1
        if self.reads < 0:
            self.records[0] = {**self.records[0], "status": "cancelled",
                               "result": {"targets": [], "stop_reason": "paused longer than 3 s"}}
            return "cancelled"
        return "paused"

    @property
    def finished(self) -> bool:
        return self.status == "cancelled"

    def elapsed(self) -> float:
        return 1.0


@pytest.mark.parametrize("reads", [0, 1, 2, 3])
def test_a_job_finishing_as_it_is_read_is_never_shown_finished_without_its_result(reads):
    """Whenever the status flips during GET /api/v1/jobs/{id}, a finished answer carries the result
    (stop_reason); an active one is the live frame."""
    records = [{"status": "paused", "created": 0, "updated": 0, "spec": {}, "error": None, "result": None,
                "progress": {"step": 4}}]
    job = _Finishing(reads, records)
    fake = type("Run", (), {"record": lambda self, _id: records[0], "live": lambda self, _id: job,
                            "store": type("S", (), {"root": Path("/nonexistent")})()})()
    out = view(fake, job.id)
    if out["status"] == "cancelled":
        assert out["stop_reason"] == "paused longer than 3 s" and out["progress"]["step"] == 4
    else:
        assert out["status"] == "paused" and out["targets"] == []
