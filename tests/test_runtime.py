"""Forward-only work through ONNX Runtime: the same probabilities as PyTorch (within 1e-4) for every
bundled model, exports cached and keyed by the weights, a model that cannot export falls back to
PyTorch, the choice is shown in /api/v1/models and in each job's summary."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from app.models import runtime
from app.models.registry import Registry
from app.serving.imaging import to_model_input
from tests.conftest import ONNX_DIR, make_settings


@pytest.fixture(scope="module")
def onnx_registry():
    reg = Registry(make_settings(runtime="onnx"))
    reg.load_all()
    return reg


def photos(grace_hopper: Path) -> list[Image.Image]:
    """20 photographs: the real photo, its crops at several places and scales, flipped and turned."""
    photo = Image.open(grace_hopper).convert("RGB")
    w, h = photo.size
    out = [photo]
    for i in range(19):
        s = 0.45 + 0.05 * (i % 8)
        cw, ch = int(w * s), int(h * s)
        x0, y0 = (i * 37) % (w - cw), (i * 53) % (h - ch)
        crop = photo.crop((x0, y0, x0 + cw, y0 + ch))
        if i % 3 == 1:
            crop = crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        if i % 4 == 2:
            crop = crop.rotate(15 * (i % 5), expand=True)
        out.append(crop)
    return out


def test_every_bundled_model_gives_the_same_probabilities_in_both_runtimes(onnx_registry, mnist_test,
                                                                             grace_hopper):
    digits = mnist_test[0][:200]
    pictures = torch.stack([to_model_input(p, (3, 224, 224), "center-crop") for p in photos(grace_hopper)])
    checked = 0
    for entry in onnx_registry.list():
        if not entry.available:
            continue
        assert entry.runtime == "onnx" and entry.forward is not None, entry.runtime_reason
        x = digits if entry.input_shape == (1, 28, 28) else pictures
        with torch.inference_mode():
            eager = torch.softmax(entry.model(x), 1)
            ort = torch.softmax(entry.forward(x), 1)
        assert (eager - ort).abs().max().item() < 1e-4, entry.id
        assert (eager.argmax(1) == ort.argmax(1)).float().mean().item() >= 0.99
        checked += 1
    assert checked >= 2  # LeNet and EfficientNet-Lite0 at least


def test_exports_are_cached_and_keyed_by_the_weights(onnx_registry, tmp_path):
    entry = onnx_registry.get("lenet-mnist")
    path = entry.forward.path
    assert path.parent == ONNX_DIR and path.is_file()
    digest = runtime.weights_digest(entry.model)
    assert digest[:16] in path.name and torch.__version__ in path.name
    before = path.stat().st_mtime_ns
    again = Registry(make_settings(runtime="onnx", preload="lenet-mnist"))
    again.load_all()
    assert again.get("lenet-mnist").forward.path == path and path.stat().st_mtime_ns == before  # not re-exported
    other = nn.Sequential(nn.Flatten(), nn.Linear(784, 10))
    assert runtime.weights_digest(other) != digest


def test_a_model_that_cannot_export_falls_back_to_pytorch_with_a_reason(tmp_path, caplog):
    class Custom(nn.Module):  # a Python-side op the exporter cannot trace into ONNX
        def forward(self, x):
            return torch.from_numpy(np.fft.fft(x.flatten(1).numpy()).real[:, :10].astype(np.float32))

    with caplog.at_level(logging.WARNING):
        forward, choice = runtime.prepare(Custom(), "custom-fft", (1, 28, 28), "onnx", "cpu", tmp_path, 1)
    assert forward is None and choice.name == "torch" and "ONNX Runtime unavailable" in choice.reason
    assert "falls back" in caplog.text or "using PyTorch" in caplog.text


def test_runtime_torch_and_auto_choose_as_documented(tmp_path):
    net = nn.Sequential(nn.Flatten(), nn.Linear(784, 10)).eval()
    forward, choice = runtime.prepare(net, "tiny", (1, 28, 28), "torch", "cpu", tmp_path, 1)
    assert forward is None and choice.reason == "FOOLING_RUNTIME=torch"
    forward, choice = runtime.prepare(net, "tiny", (1, 28, 28), "auto", "cuda", tmp_path, 1)
    assert forward is None and choice.name == "torch" and "CUDA" in choice.reason
    forward, choice = runtime.prepare(net, "tiny", (1, 28, 28), "auto", "cpu", tmp_path, 1)
    assert choice.name in ("torch", "onnx") and "images/s in ONNX Runtime" in choice.reason
    assert list(tmp_path.glob("tiny-*.timing.json"))  # measured once, then read
    with pytest.raises(ValueError):
        runtime.prepare(net, "tiny", (1, 28, 28), "tensorrt", "cpu", tmp_path, 1)


def test_models_list_and_job_summary_say_which_runtime(client):
    models = {m["id"]: m for m in client.get("/api/v1/models?labels=false").json()["models"]}
    eff = models["efficientnet-lite0-imagenet"]
    assert eff["runtime"] in ("onnx", "torch") and eff["runtime_reason"]
    made = client.post("/api/v1/jobs", json={"model": "lenet-mnist", "method": "map-elites", "targets": [3],
                                             "generations": 3}).json()
    grad = client.post("/api/v1/jobs", json={"model": "lenet-mnist", "method": "gradient", "targets": [3],
                                             "steps": 3}).json()
    import time

    for job_id, expect in ((made["id"], models["lenet-mnist"]["runtime"]), (grad["id"], "torch")):
        t0 = time.time()
        while (r := client.get(f"/api/v1/jobs/{job_id}/summary.json")).status_code != 200:
            assert time.time() - t0 < 60
            time.sleep(0.05)
        assert r.json()["runtime"]["name"] == expect and r.json()["runtime"]["reason"]


def test_pngs_from_an_onnx_run_rescore_in_either_runtime(client, tmp_path):
    """A job whose forward passes ran in ONNX Runtime: its saved PNGs score again, through
    /api/v1/score, to the confidence it recorded, on a server in ONNX Runtime and on one in PyTorch."""
    import time

    from fastapi.testclient import TestClient

    from app.main import create_app
    from tests.conftest import wait_ready

    with TestClient(create_app(make_settings(runtime="onnx", preload="lenet-mnist", data_dir=tmp_path))) as onnx:
        wait_ready(onnx)
        made = onnx.post("/api/v1/jobs", json={"model": "lenet-mnist", "method": "map-elites", "targets": "all",
                                               "generations": 40, "seed": 1, "params": {"stop_at": None}}).json()
        t0 = time.time()
        while (job := onnx.get(f"/api/v1/jobs/{made['id']}").json())["status"] != "done":
            assert time.time() - t0 < 120
            time.sleep(0.05)
        assert onnx.get(f"/api/v1/jobs/{made['id']}/summary.json").json()["runtime"]["name"] == "onnx"
        pngs = [onnx.get(t["image"].split("?")[0]).content for t in job["targets"]]
        mid = 0
        for server in (onnx, client):  # client: the suite's server, runtime auto
            for t, png in zip(job["targets"], pngs, strict=True):
                r = server.post("/api/v1/score", files={"file": ("x.png", png, "image/png")},
                                data={"model": "lenet-mnist", "top_k": "10"}).json()["results"][0]["top"]
                got = next(p["confidence"] for p in r if p["index"] == t["index"])
                assert abs(got - t["confidence"]) < 1e-4, (t["label"], got, t["confidence"])
                mid += 0.01 < t["confidence"] < 0.99
        assert mid >= 2  # some confidences well below 1, where a wrong image would show


def test_faster_variants_are_kept_only_where_they_agree(onnx_registry):
    """The CUDA path's chooser (exercised here on CPU): a variant that changes probabilities by more
    than 1e-4 or fails is never used; one that agrees is measured; autocast is judged by its gap."""
    lenet = onnx_registry.model("lenet-mnist")

    class Same:
        name = "same"

        def __call__(self, x):
            return lenet(x)

    class Shifted:  # what a lossy variant does: logits a little off
        name = "shifted"

        def __call__(self, x):
            return lenet(x) + torch.linspace(0, 0.5, 10)

    class Broken:
        name = "broken"

        def __call__(self, x):
            raise RuntimeError("cannot capture")

    bf16 = runtime.AutocastForward(lenet, "cpu", torch.bfloat16)
    forward, choice, measured = runtime.pick_faster(lenet, [bf16, Shifted(), Broken(), Same()], (1, 28, 28),
                                                    batch=64)
    rows = {m["name"]: m for m in measured}
    assert rows["autocast bfloat16"]["agrees"] == (rows["autocast bfloat16"]["gap"] <= runtime.AGREEMENT)
    assert rows["shifted"]["gap"] > runtime.AGREEMENT and rows["shifted"]["per_s"] is None
    assert "shifted off (differs by" in choice.reason
    assert rows["broken"]["agrees"] is False and "cannot capture" in rows["broken"]["error"]
    assert rows["same"]["agrees"] and rows["same"]["gap"] == 0 and rows["same"]["per_s"] > 0
    assert forward is None or forward.name in ("same", "autocast bfloat16")
    assert forward is not None or rows["float32"]["per_s"] >= max(r.get("per_s") or 0 for r in measured)
    assert choice.name == "torch"


def test_graph_batch_sizes_pad_by_at_most_a_third():
    sizes = [runtime.graph_rows(n) for n in range(1, 1025)]
    assert sizes[:8] == [1, 2, 3, 4, 6, 6, 8, 8]
    assert all(n <= r and 3 * (r - n) < r for n, r in zip(range(1, 1025), sizes, strict=True))  # < 1/3 padding
    assert len(set(sizes)) == 20  # graphs captured at most, batches 1-1024


def test_graphed_forward_pads_slices_and_survives_a_late_capture_failure(onnx_registry, caplog):
    """GraphedForward's bookkeeping, on CPU: a stand-in capture replays the model into fixed
    tensors, as a CUDA graph does. Outputs match the model row for row whatever the padding; a
    size whose capture fails once graphs are in use runs eagerly; a first failure is raised."""
    lenet = onnx_registry.model("lenet-mnist")

    class CpuGraphs(runtime.GraphedForward):
        fail: set[int] = set()
        captured: list[int] = []

        def _capture(self, rows):
            if rows in self.fail:
                raise RuntimeError("capture refused")
            self.captured.append(rows)
            static_in = torch.zeros((rows, *self.input_shape))
            static_out = torch.zeros((rows, 10))
            return (lambda: static_out.copy_(self.model(static_in))), static_in, static_out

    graphs = CpuGraphs(lenet, (1, 28, 28), max_rows=8)
    x = torch.rand(13, 1, 28, 28)
    with torch.no_grad():  # called outside inference mode, as a caller may
        out = graphs(x)
    assert torch.allclose(out, lenet(x), atol=1e-5)
    assert graphs.captured == [8, 6]  # 13 rows in chunks of 8 and 5: padded to 8 and 6
    graphs.fail = {3}
    with caplog.at_level("WARNING"):
        assert torch.allclose(graphs(x[:3]), lenet(x[:3]), atol=1e-5)
    assert "batch 3 failed, running it eagerly" in caplog.text and 3 not in graphs.captured
    fresh = CpuGraphs(lenet, (1, 28, 28))
    fresh.fail, fresh.captured = {1}, []
    with pytest.raises(RuntimeError, match="capture refused"):
        fresh(x[:1])
