"""The model registry: built-ins, unavailable torchvision weights, bring-your-own formats."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch
from torch import nn

from app.models import builtin
from app.models.registry import Registry
from app.settings import ROOT
from tests.conftest import make_settings


def test_models_endpoint_lists_every_model(client, lab):
    r = client.get("/api/v1/models")
    assert r.status_code == 200
    models = {m["id"]: m for m in r.json()["models"]}
    assert {"lenet-mnist", "efficientnet-lite0-imagenet", "alexnet-imagenet"} <= set(models)
    lenet = models["lenet-mnist"]
    assert lenet["available"] and lenet["input_shape"] == [1, 28, 28] and lenet["num_classes"] == 10
    assert lenet["labels"] == [str(i) for i in range(10)] and lenet["device"] == lab.registry.device
    eff = models["efficientnet-lite0-imagenet"]
    assert eff["available"] and eff["num_classes"] == 1000 and eff["labels"][779] == "school bus"
    for m in models.values():
        assert m["available"] or m["reason"]
    assert "labels" not in client.get("/api/v1/models?labels=false").json()["models"][0]
    assert client.get("/api/v1/models/lenet-mnist").json()["id"] == "lenet-mnist"
    assert client.get("/api/v1/models/nope").status_code == 404


def test_models_resident_in_eval_mode_without_grad(lab):
    for model_id in ("lenet-mnist", "efficientnet-lite0-imagenet"):
        model = lab.registry.model(model_id)
        assert not model.training
        assert all(not p.requires_grad for p in model.parameters())
        assert lab.registry.model(model_id) is model  # loaded once, kept


def test_alexnet_listed_and_unavailable_with_reason_when_not_cached(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    reg = Registry(make_settings(preload="alexnet-imagenet"))
    reg.load_all()
    e = reg.get("alexnet-imagenet")
    assert not e.available and str(tmp_path) in e.reason and "fetch-weights" in e.reason


def test_the_copies_of_torchvisions_names_are_torchvisions():
    # ImageNet's class names and the weights' file names are kept in app/ so that starting the
    # server or the command line does not import torchvision; they must stay what torchvision says.
    import os

    import torchvision.models as tvm

    for weights in (tvm.ResNet18_Weights, tvm.AlexNet_Weights, tvm.ResNet50_Weights):
        assert builtin.imagenet_labels() == list(weights.IMAGENET1K_V1.meta["categories"])
    for model_id, (arch, enum, *_, file) in builtin.TORCHVISION.items():
        url = getattr(tvm, enum).IMAGENET1K_V1.url
        assert os.path.basename(url) == file and hasattr(tvm, arch), model_id


def test_torchvision_weights_load_when_cached(tmp_path, monkeypatch):
    # Stand in for a cached download: a real AlexNet state dict at torch's cache path.
    import torchvision

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    path = builtin.cached_weights_path("alexnet-imagenet")
    path.parent.mkdir(parents=True)
    torch.save(torchvision.models.alexnet(weights=None).state_dict(), path)
    reg = Registry(make_settings(preload="alexnet-imagenet"))
    reg.load_all()
    e = reg.get("alexnet-imagenet")
    assert e.available, e.reason
    out = reg.model("alexnet-imagenet")(torch.rand(2, 3, 224, 224))
    assert out.shape == (2, 1000)


def test_download_failure_is_reported_not_raised(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))

    def no_network(entry):
        raise OSError("Name or service not known")

    monkeypatch.setattr(builtin, "download_torchvision_weights", no_network)
    reg = Registry(make_settings(preload="lenet-mnist", download_weights=True))
    reg.load_all()
    t = reg.start_background_downloads()
    t.join(30)
    e = reg.get("alexnet-imagenet")
    assert not e.available and "download failed" in e.reason and "Name or service" in e.reason


def test_lenet_weights_match_metadata():
    meta = json.loads((ROOT / "models" / "lenet-mnist.meta.json").read_text())
    digest = hashlib.sha256((ROOT / "models" / "lenet-mnist.pt").read_bytes()).hexdigest()
    assert digest == meta["sha256"]
    assert meta["test_accuracy"] >= 0.99 and "train-lenet" in meta["command"]


def test_lenet_accuracy_on_real_test_set(lab, mnist_test):
    x, y = mnist_test
    with torch.inference_mode():
        pred = torch.cat([lab.registry.model("lenet-mnist")(x[i : i + 2500]).argmax(1) for i in range(0, 10000, 2500)])
    assert (pred == y).float().mean().item() >= 0.99


class TinyNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.fc = nn.Linear(4, 5)

    def forward(self, x):
        return self.fc(self.conv(x).mean((2, 3)))


def _descriptor(folder: Path, name: str, file: str, **extra) -> None:
    (folder / f"{name}.txt").write_text("\n".join(f"class {i}" for i in range(5)))
    spec = {"file": file, "labels": f"{name}.txt", "input_shape": [3, 16, 16],
            "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25], **extra}
    (folder / f"{name}.model.json").write_text(json.dumps(spec))


@pytest.fixture(scope="module")
def byo_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("byo")
    torch.manual_seed(0)
    net = TinyNet().eval()
    x = torch.rand(2, 3, 16, 16)
    ep = torch.export.export(net, (x,), dynamic_shapes={"x": {0: torch.export.Dim("batch", min=1, max=4096)}})
    torch.export.save(ep, str(folder / "tiny.pt2"))
    _descriptor(folder, "tiny-export", "tiny.pt2", title="Tiny (export)")
    torch.onnx.export(net, (x,), str(folder / "tiny.onnx"), input_names=["x"],
                      dynamic_axes={"x": {0: "batch"}}, dynamo=False)
    _descriptor(folder, "tiny-onnx", "tiny.onnx")
    with pytest.warns(Warning):  # TorchScript is deprecated in 2.14 but still accepted
        torch.jit.save(torch.jit.trace(net, x), str(folder / "tiny.pt"))
    _descriptor(folder, "tiny-script", "tiny.pt")
    (folder / "broken.model.json").write_text("{not json")
    _descriptor(folder, "badshape", "tiny.pt2", input_shape=[2, 16, 16])
    torch.save(net.state_dict(), folder / "net_state.pt")
    return folder, net


def test_bring_your_own_models(byo_dir):
    folder, net = byo_dir
    reg = Registry(make_settings(models_dir=folder, preload="all"))
    ids = {e.id for e in reg.list()}
    assert {"tiny-export", "tiny-onnx", "tiny-script"} <= ids
    assert "broken" not in ids and "badshape" not in ids  # skipped with a log line, start-up goes on
    reg.load_all()
    x = torch.rand(3, 3, 16, 16)
    ref = net((x - 0.5) / 0.25)
    for model_id in ("tiny-export", "tiny-onnx", "tiny-script"):
        e = reg.get(model_id)
        assert e.available, (model_id, e.reason)
        assert e.labels[4] == "class 4" and e.input_shape == (3, 16, 16)
        torch.testing.assert_close(reg.model(model_id)(x), ref, atol=1e-4, rtol=1e-4)
    assert reg.get("tiny-onnx").differentiable is False
    assert reg.get("tiny-export").differentiable is True
    # Gradients reach the input through an exported program (the gradient methods need this).
    xg = x.clone().requires_grad_(True)
    reg.model("tiny-export")(xg).sum().backward()
    assert xg.grad is not None and xg.grad.abs().sum() > 0


def test_pickled_state_dict_is_never_loaded_as_model(byo_dir, tmp_path):
    folder, _ = byo_dir
    (tmp_path / "x.txt").write_text("a\nb\n")
    (tmp_path / "x.pt").write_bytes((folder / "net_state.pt").read_bytes())
    (tmp_path / "x.model.json").write_text(json.dumps({"file": "x.pt", "labels": "x.txt", "input_shape": [3, 16, 16]}))
    reg = Registry(make_settings(models_dir=tmp_path, preload="x"))
    reg.load_all()
    assert not reg.get("x").available  # a pickle is not a TorchScript archive: refused, not unpickled


class _Payload:
    """Unpickling this runs code: it creates the file named in it."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        import pathlib
        return (pathlib.Path.touch, (pathlib.Path(self.marker),))


def _with_entry(src, dst, suffix: str, data: bytes, extra: str | None = None) -> None:
    """A copy of a .pt2 archive with the entry ending in ``suffix`` replaced (or ``extra`` added)."""
    import zipfile

    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        prefix = zin.namelist()[0].split("/")[0]
        for info in zin.infolist():
            zout.writestr(info, data if info.filename.endswith(suffix) else zin.read(info))
        if extra:
            zout.writestr(f"{prefix}/{extra}", data)


def test_pt2_archive_that_would_run_code_is_refused(byo_dir, tmp_path):
    import io
    import pickle

    folder, _ = byo_dir
    marker = tmp_path / "pwned"
    evil = io.BytesIO()
    torch.save(_Payload(str(marker)), evil)  # a torch.save zip whose data.pkl calls Path.touch
    cases = {
        "sample": ("data/sample_inputs/model.pt", evil.getvalue(), None),  # torch retries unrestricted
        "opaque": ("never-matches", pickle.dumps(_Payload(str(marker))), "data/constants/opaque_0"),
    }
    for name, (suffix, data, extra) in cases.items():
        _with_entry(folder / "tiny.pt2", tmp_path / f"{name}.pt2", suffix, data, extra)
        _descriptor(tmp_path, name, f"{name}.pt2")
    # Without the check, torch.export.load really runs the payload: the threat is real.
    with pytest.raises(Exception):  # noqa: B017 (whatever it raises after unpickling)
        torch.export.load(str(tmp_path / "sample.pt2"))
    assert marker.exists()
    marker.unlink()
    reg = Registry(make_settings(models_dir=tmp_path, preload="sample,opaque"))
    reg.load_all()
    for name in cases:
        entry = reg.get(name)
        assert not entry.available and "refused" in entry.reason, (name, entry.reason)
    assert not marker.exists()  # nothing ran
    # the honest archive still loads
    reg = Registry(make_settings(models_dir=folder, preload="tiny-export"))
    reg.load_all()
    assert reg.get("tiny-export").available
