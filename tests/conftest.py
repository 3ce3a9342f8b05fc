"""Shared fixtures: one resident app for the API tests, real MNIST digits, a real photo."""

from __future__ import annotations

import io
import os
import time
from pathlib import Path

import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image

from app.data import mnist
from app.main import create_app
from app.settings import ROOT, Settings

BUNDLED = "lenet-mnist,efficientnet-lite0-imagenet"


# Exports for ONNX Runtime (and its once-per-machine timing) are shared by every test's app, so a
# test never waits for an export: the first app of the run makes them (app/models/runtime.py).
ONNX_DIR = ROOT / "data" / "onnx"


def make_settings(**overrides) -> Settings:
    base = dict(preload=BUNDLED, download_weights=False, onnx_dir=ONNX_DIR)
    base.update(overrides)
    return Settings(**base)


def start_local_ray():
    """A local Ray cluster of 2 CPUs for the Ray backend's tests, started here (the app then joins
    it rather than starting its own), whatever the machine's size. Returns the ray module."""
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, namespace="fooling-lab", include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": str(ROOT)}})
    return ray


def stop_local_ray(ray) -> None:
    """Kill the detached engines (they would outlive the cluster's driver otherwise) and stop Ray."""
    import gc

    for actor in ray.util.list_named_actors(all_namespaces=True):
        if actor["namespace"] == "fooling-lab" and actor["name"].startswith("engine-"):
            ray.kill(ray.get_actor(actor["name"], namespace="fooling-lab"))
    gc.collect()
    ray.shutdown()


def wait_ready(client: TestClient, timeout: float = 120) -> None:
    t0 = time.time()
    while client.get("/readyz").status_code != 200:
        assert time.time() - t0 < timeout, "models did not load"
        time.sleep(0.05)


@pytest.fixture(scope="session")
def client(tmp_path_factory):
    # Jobs and uploads go to a scratch data directory, never the checkout's data/.
    with TestClient(create_app(make_settings(data_dir=tmp_path_factory.mktemp("data")))) as c:
        wait_ready(c)
        yield c


@pytest.fixture(scope="session")
def lab(client):
    return client.app.state.lab


@pytest.fixture(scope="session")
def mnist_test():
    return mnist.load(ROOT / "data", train=False)


def png_bytes(img: Image.Image, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


@pytest.fixture(scope="session")
def grace_hopper() -> Path:
    import matplotlib

    path = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    assert path.is_file()
    return path


def early_and_last(gen, mid: int = 3):
    """The first snapshot in which at least ``mid`` targets have a confidence well below 1 (between
    0.01 and 0.99), and the last snapshot."""
    early = snap = None
    for snap in gen:
        if early is None and sum(0.01 < float(c) < 0.99 for c in snap.confidence) >= mid:
            early = snap
    return early, snap


def assert_pngs_rescore(client, snap, model: str = "lenet-mnist", need_mid: int = 3) -> None:
    """Saved PNGs score again, through the API, to the confidence the method recorded (within 1e-4).
    At least ``need_mid`` of them must be well below 1, where a wrong image would show."""
    from app.serving.imaging import to_png

    files = [("file", (f"{i}.png", to_png(img), "image/png")) for i, img in enumerate(snap.images)]
    r = client.post("/api/v1/score", files=files, data={"model": model, "top_k": "10"})
    assert r.status_code == 200
    confs = [float(c) for c in snap.confidence]
    assert sum(0.01 < c < 0.99 for c in confs) >= need_mid, confs
    for target, res, conf in zip(snap.targets, r.json()["results"], confs, strict=True):
        got = {t["index"]: t["confidence"] for t in res["top"]}[target]
        assert abs(got - conf) < 1e-4, (target, got, conf)


# `make test` runs two workers that each take whole modules (pytest-xdist, --dist loadfile), in
# collection order: the longest modules go first, so that neither worker is left alone at the end.
LONGEST_FIRST = ["test_browser", "test_experiments", "test_fuzz", "test_ray_cluster", "test_contract", "test_cli",
                 "test_cppn", "test_jobs_api", "test_ray_backend", "test_fooling", "test_trust", "test_course_server"]


def pytest_collection_modifyitems(items) -> None:
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.stem, len(rank)))  # stable: a module keeps its own order


def pytest_configure(config) -> None:
    """With workers (`make test`), the controller makes the ONNX exports and their timing once, before
    the workers start, so that the workers, their servers and Ray engines do not each make them.
    Each worker then takes its share of the cores for PyTorch and OpenMP (its servers and
    subprocesses inherit it): two workers of two threads each on two cores spend much of their time
    waiting on each other's spinning threads."""
    if hasattr(config, "workerinput"):
        share = str(max(1, (os.cpu_count() or 1) // int(config.workerinput["workercount"])))
        os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = share
        torch.set_num_threads(int(share))
        return
    if not getattr(config.option, "numprocesses", None):
        return
    from app.models.registry import Registry

    Registry(make_settings()).load_all()
