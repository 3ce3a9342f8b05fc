"""Shared fixtures: one resident app for the API tests, real MNIST digits, a real photo."""

from __future__ import annotations

import io
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from app.data import mnist
from app.main import create_app
from app.settings import ROOT, Settings

BUNDLED = "lenet-mnist,efficientnet-lite0-imagenet"


def make_settings(**overrides) -> Settings:
    base = dict(preload=BUNDLED, download_weights=False)
    base.update(overrides)
    return Settings(**base)


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
