"""The Ray backend on a cluster of two nodes (Ray's own test cluster, on this machine): the API
joins it by FOOLING_RAY_ADDRESS, its two engines run on the worker node and take one job each
(least loaded first), and losing that node mid-job leaves both jobs interrupted with their best
images while scoring goes on here; a new node takes the engines back and the next job runs."""

from __future__ import annotations

import gc
import time

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from app.main import create_app
from tests.conftest import make_settings, png_bytes, wait_ready
from tests.helpers import LONG_MAP_ELITES as LONG
from tests.helpers import QUICK_MAP_ELITES as QUICK
from tests.helpers import wait

ray = pytest.importorskip("ray")
cluster_utils = pytest.importorskip("ray.cluster_utils")


def test_a_lost_node_interrupts_its_jobs_and_a_new_node_takes_over(tmp_path):
    # The head has no CPUs for actors, so the engine must live on the worker node.
    cluster = cluster_utils.Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    node = cluster.add_node(num_cpus=2)
    settings = make_settings(preload="lenet-mnist", data_dir=tmp_path, backend="ray", ray_address=cluster.address,
                             ray_cpu_engines=2, ray_engine_jobs=2)
    try:
        with TestClient(create_app(settings)) as c:
            wait_ready(c)
            assert c.get("/readyz").json()["scoring"] == "engines"  # auto, on a cluster
            engines = [ray.get_actor(f"engine-{i}", namespace="fooling-lab") for i in range(2)]
            ids = [c.post("/api/v1/jobs", json={**LONG, "seed": i}).json()["id"] for i in range(2)]
            t0 = time.time()
            for job_id in ids:
                while not (j := c.get(f"/api/v1/jobs/{job_id}").json()).get("targets") or j["progress"]["step"] < 5:
                    assert time.time() - t0 < 60
                    time.sleep(0.1)
            while [e["jobs"] for e in c.get("/readyz").json()["engines"]] != [1, 1]:  # the pool's next refresh
                assert time.time() - t0 < 60, "one job on each engine"
                time.sleep(0.1)

            cluster.remove_node(node)
            t0 = time.time()
            blank = png_bytes(Image.new("L", (28, 28)))
            r = c.post("/api/v1/score", files={"file": ("b.png", blank, "image/png")}, data={"model": "lenet-mnist"})
            assert r.status_code == 200 and time.time() - t0 < 8, "scoring goes on here while no engine answers"
            for job_id in ids:
                job = wait(c, job_id, ("interrupted",), timeout=30)
                assert time.time() - t0 < 15, "a lost node is noticed in seconds"
                assert job["targets"] and "engine" in job["error"]
                assert c.get(f"/api/v1/jobs/{job_id}/images/0.png").status_code == 200

            cluster.add_node(num_cpus=2)  # Ray restarts the engines there (max_restarts=-1)
            nxt = wait(c, c.post("/api/v1/jobs", json=QUICK).json()["id"], ("done",), timeout=180)
            assert nxt["progress"]["step"] > 0
            t0 = time.time()
            while not all(e["alive"] for e in c.get("/readyz").json()["engines"]):
                assert time.time() - t0 < 60
                time.sleep(0.5)
            for engine in engines:
                ray.kill(engine)
    finally:
        gc.collect()
        ray.shutdown()
        cluster.shutdown()
