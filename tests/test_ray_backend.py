"""The Ray backend (FOOLING_BACKEND=ray) behind the same API: a local Ray instance with one CPU
engine runs jobs; events, controls, saved results and the REST names are those of the local
backend; scoring runs on the engine too; an engine killed mid-job leaves its job interrupted with
its best images, scoring goes on meanwhile, and the next job runs on the restarted engine."""

from __future__ import annotations

import http.server
import io
import threading
import time
from dataclasses import replace

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image

from app.main import create_app
from app.settings import ROOT
from tests.conftest import make_settings, png_bytes, start_local_ray, stop_local_ray, wait_ready
from tests.helpers import LONG_MAP_ELITES as LONG
from tests.helpers import QUICK_MAP_ELITES as QUICK
from tests.helpers import wait

ray = pytest.importorskip("ray")



@pytest.fixture(scope="module")
def client(tmp_path_factory):
    ray = start_local_ray()
    data = tmp_path_factory.mktemp("ray")
    (data / "MNIST").symlink_to(ROOT / "data" / "MNIST")  # what defended models calibrate on, read-only
    settings = make_settings(preload="lenet-mnist", data_dir=data, backend="ray",
                             ray_cpu_engines=1, ray_engine_jobs=2, ray_scoring="engines")
    try:
        with TestClient(create_app(settings)) as c:
            wait_ready(c)
            yield c
    finally:
        stop_local_ray(ray)


def test_a_job_runs_on_an_engine_and_saves_like_a_local_one(client):
    r = client.post("/api/v1/jobs", json=QUICK)
    assert r.status_code == 201 and {"self", "events", "page"} <= set(r.json()["links"])
    job = wait(client, r.json()["id"], ("done",), timeout=120)
    assert job["progress"]["step"] > 0 and len(job["targets"]) == 2
    summary = client.get(f"/api/v1/jobs/{job['id']}/summary.json").json()
    assert summary["history"] and summary["settings"]["seed"] == 1
    files = [("file", (f"{t['position']}.png", client.get(t["image"]).content, "image/png")) for t in job["targets"]]
    scored = client.post("/api/v1/score", files=files, data={"model": "lenet-mnist", "top_k": "10"}).json()
    for t, res in zip(job["targets"], scored["results"], strict=True):  # the saved PNGs are what the engine scored
        got = {x["index"]: x["confidence"] for x in res["top"]}[t["index"]]
        assert abs(got - t["confidence"]) < 1e-4


def scored_on_engine(client) -> int:
    return client.get("/readyz").json()["engines"][0]["scored"]


def test_a_job_on_a_defended_model_runs_on_an_engine_and_says_what_the_detector_accepted(client):
    """The engine builds lenet-mnist+msp from the server's MNIST and kept calibration (its own data
    dir is a scratch one): the job runs there and each target says whether the detector accepted it."""
    job = client.post("/api/v1/jobs", json={**QUICK, "model": "lenet-mnist+msp"})
    assert job.status_code == 201, job.text
    done = wait(client, job.json()["id"], timeout=120)
    assert done["settings"]["model"] == "lenet-mnist+msp" and done["targets"]
    assert all(isinstance(t["accepted"], bool) for t in done["targets"]), done["targets"]


def test_scoring_runs_on_the_engine_and_agrees_with_the_array_endpoint(client, mnist_test):
    x, y = mnist_test
    rows = (x[:2] * 255).round().to(torch.uint8).numpy()  # (2, 1, 28, 28), as the array endpoint takes
    pngs = [png_bytes(Image.fromarray(r[0])) for r in rows]
    before = scored_on_engine(client)
    multi = client.post("/api/v1/score", data={"model": "lenet-mnist", "top_k": "10"},
                        files=[("file", (f"{n}.png", p, "image/png")) for n, p in enumerate(pngs)]).json()
    assert [int(r["top"][0]["label"]) for r in multi["results"]] == [int(t) for t in y[:2]]
    buf = io.BytesIO()
    np.save(buf, rows)
    arr = client.post("/api/v1/score/tensor?model=lenet-mnist&top_k=10", content=buf.getvalue(),
                      headers={"content-type": "application/x-npy"})
    assert arr.status_code == 200
    for a, b in zip(multi["results"], arr.json()["results"], strict=True):
        assert a["top"][0]["index"] == b["top"][0]["index"]
        assert abs(a["top"][0]["confidence"] - b["top"][0]["confidence"]) < 1e-4
    t0 = time.time()  # the pool refreshes what engines say about themselves every second
    while scored_on_engine(client) < before + 4:
        assert time.time() - t0 < 10, "the engine scored the 2 + 2 images"
        time.sleep(0.2)


def test_events_and_controls_go_through_the_engine(client):
    job_id = client.post("/api/v1/jobs", json=LONG).json()["id"]
    frames = 0
    with client.stream("GET", f"/api/v1/jobs/{job_id}/events") as r:
        for line in r.iter_lines():
            if line.startswith("event: snapshot"):
                frames += 1
            if frames >= 3:
                break
    assert client.post(f"/api/v1/jobs/{job_id}/pause").status_code == 200
    paused = wait(client, job_id, ("paused",), timeout=30)
    time.sleep(1.0)
    still = client.get(f"/api/v1/jobs/{job_id}").json()["progress"]["step"]
    assert still - paused["progress"]["step"] <= 2, "a paused job does not move on"
    assert client.post(f"/api/v1/jobs/{job_id}/step").status_code == 200
    t0 = time.time()
    while client.get(f"/api/v1/jobs/{job_id}").json()["progress"]["step"] == still:
        assert time.time() - t0 < 30
        time.sleep(0.05)
    assert client.post(f"/api/v1/jobs/{job_id}/cancel").status_code == 200
    done = wait(client, job_id, ("cancelled",), timeout=30)
    assert done["targets"] and client.get(f"/api/v1/jobs/{job_id}/grid.png").status_code == 200


def test_a_killed_engine_interrupts_its_job_keeps_its_best_and_the_next_job_runs(client):
    job_id = client.post("/api/v1/jobs", json=LONG).json()["id"]
    t0 = time.time()
    while not (j := client.get(f"/api/v1/jobs/{job_id}").json()).get("targets") or j["progress"]["step"] < 5:
        assert time.time() - t0 < 60
        time.sleep(0.1)
    ray.kill(ray.get_actor("engine-0", namespace="fooling-lab"), no_restart=False)
    t0 = time.time()
    png = png_bytes(Image.new("L", (28, 28)))
    r = client.post("/api/v1/score", files={"file": ("blank.png", png, "image/png")}, data={"model": "lenet-mnist"})
    assert r.status_code == 200 and len(r.json()["results"][0]["top"]) == 5
    assert time.time() - t0 < 8, "scoring does not wait on the dead engine: it runs here meanwhile"
    job = wait(client, job_id, ("interrupted",), timeout=30)
    assert time.time() - t0 < 20, "nothing waits long on a dead engine"
    assert job["targets"] and "engine" in (job["error"] or "")
    assert client.get(f"/api/v1/jobs/{job_id}/images/0.png").status_code == 200  # the best so far, kept
    nxt = wait(client, client.post("/api/v1/jobs", json=QUICK).json()["id"], ("done",), timeout=180)
    assert nxt["progress"]["step"] > 0


def test_a_restarted_server_cancels_the_jobs_an_earlier_one_left_on_the_engines(client, tmp_path, caplog):
    from app.jobs.ray.runner import RayBackend
    from app.jobs.runner import JobRunner
    from app.jobs.store import JobStore
    from app.serving.lab import Lab

    engine = ray.get_actor("engine-0", namespace="fooling-lab")
    ray.get(engine.submit.remote("orphan-of-a-crash", LONG, "someone", None))  # as a server that then died
    assert ray.get(engine.info.remote())["jobs"] == 1
    # The next server, started with another per-engine job count: the detached engine keeps its own.
    settings = replace(client.app.state.lab.settings, data_dir=tmp_path, ray_engine_jobs=3)
    again = JobRunner(Lab.create(settings), JobStore(tmp_path), RayBackend)
    try:
        t0 = time.time()
        while not again.readiness()[0]:
            assert time.time() - t0 < 60
            time.sleep(0.1)
        t0 = time.time()
        while ray.get(engine.info.remote())["jobs"]:
            assert time.time() - t0 < 10, "the orphan no longer holds one of the engine's job slots"
            time.sleep(0.1)
        assert "ran 1 jobs of an earlier server: cancelled" in caplog.text
        assert "keeps the settings it was started with (ray_engine_jobs=2, not 3)" in caplog.text
    finally:
        again.close()


def test_an_unreachable_cluster_is_said_plainly_or_auto_runs_locally(tmp_path):

    from app.jobs.runner import make_runner
    from app.jobs.store import JobStore
    from app.jobs.workers import Workers
    from app.serving.lab import Lab

    lab = Lab.create(make_settings(preload="lenet-mnist", data_dir=tmp_path, backend="ray",
                                   ray_address="127.0.0.1:1"))
    t0 = time.time()
    with pytest.raises(SystemExit, match="cannot reach the Ray cluster at 127.0.0.1:1"):
        make_runner(lab, JobStore(tmp_path))
    assert time.time() - t0 < 15
    runner = make_runner(replace(lab, settings=replace(lab.settings, backend="auto")), JobStore(tmp_path))
    assert type(runner.backend) is Workers
    runner.close()
    # Something answers at the address, but not Ray (a web server on the wrong port): said as much.
    web = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
    threading.Thread(target=web.serve_forever, daemon=True).start()
    wrong = replace(lab, settings=replace(lab.settings, ray_address=f"127.0.0.1:{web.server_address[1]}"))
    t0 = time.time()
    with pytest.raises(SystemExit, match="answers, but not as a Ray cluster's head"):
        make_runner(wrong, JobStore(tmp_path))
    assert time.time() - t0 < 15
    web.shutdown()


def test_scoring_goes_to_the_engines_on_a_cluster_and_stays_here_on_one_cpu_machine():
    from app.jobs.ray.runner import scoring_place

    local = make_settings(backend="ray")
    assert scoring_place(local, gpus=0) == "server"  # a local instance sharing this machine's cores
    assert scoring_place(local, gpus=2) == "engines"
    assert scoring_place(replace(local, ray_address="10.0.0.5:6379"), gpus=0) == "engines"
    assert scoring_place(replace(local, ray_scoring="engines"), gpus=0) == "engines"
    assert scoring_place(replace(local, ray_scoring="server"), gpus=4) == "server"
    with pytest.raises(ValueError, match="FOOLING_RAY_SCORING"):
        make_settings(ray_scoring="serve")


def test_placement_takes_the_least_loaded_engine_that_holds_the_model():
    from app.jobs.ray.pool import EnginePool

    pool = EnginePool(["engine-a", "engine-b", "engine-c", "engine-d"])  # stand-ins: only their places count
    try:
        pool._info = [{"models": ["lenet-mnist"], "jobs": 2}, {"models": ["lenet-mnist"], "jobs": 0},
                      {"models": ["efficientnet-lite0-imagenet"], "jobs": 0}, None]  # d does not answer
        assert pool.take("lenet-mnist")[0] == 1 and pool.take("lenet-mnist")[0] == 1  # b: 0, then 1 taken
        assert pool.take("lenet-mnist")[0] == 0  # b and a both at 2 now: the first
        assert pool.take("efficientnet-lite0-imagenet")[0] == 2
        assert pool.take("efficientnet-lite0-imagenet+smooth(sigma=2)")[0] == 2  # it builds the defence itself
        assert pool.take("alexnet-imagenet") is None  # nobody holds it: the job waits
        pool.release(1)
        pool.release(1)
        pool.down(1)  # a call to b failed: left out until it answers again
        assert pool.take("lenet-mnist")[0] == 0 and not pool.alive(1)
    finally:
        pool.close()


def test_only_the_final_frame_ends_a_mirrored_job():
    """A frame made just as the engine's job finished can say "done" before the final frame brings its
    images: the mirror must stay running until then, or a client sees "done" with no result
    (CI saw exactly that once, in test_same_seed_same_result[ray])."""
    from app.jobs.job import Job
    from app.jobs.ray.runner import take_frame
    from app.jobs.run import Run
    from app.jobs.spec import JobSpec

    spec = JobSpec(model="lenet-mnist", method="map-elites", targets=[1])
    job = Job("j1", spec, "client-a", time.time(), Run(spec, [str(i) for i in range(10)], [1]))
    job.status = "running"
    base = {"version": 3, "error": None, "stop_reason": None, "runtime": {"device": "cpu"}}
    assert take_frame(job, {**base, "status": "done", "final": False}) is None
    assert job.status == "running" and job.run.snap is None  # not ended, and nothing to observe
    snap = {"step": 15, "evaluations": 450, "targets": [1], "images": torch.zeros((1, 1, 28, 28), dtype=torch.uint8),
            "confidence": torch.tensor([0.5]), "probs": torch.full((1, 10), 0.1), "extra": {}}
    final = {**base, "status": "done", "final": True, "snap": snap, "history": [{"step": 15}], "reached": {}}
    assert take_frame(job, final) == "done"
    assert job.run.snap.step == 15 and job.run.history == [{"step": 15}] and job.run.runtime == {"device": "cpu"}
    assert take_frame(job, {**base, "status": "paused", "final": False}) is None
    assert job.status == "paused"
