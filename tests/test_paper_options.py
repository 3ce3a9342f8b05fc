"""The paper's code as options: colour genes (rgb / hsv / hls), raw-index CPPN inputs, SBX crossover.
Each is checked against its definition, and through the engine, the API and the command line."""

from __future__ import annotations

import colorsys
import json
import math

import pytest
import torch

from app.fooling.base import last, model_score_fn
from app.fooling.color import to_rgb
from app.fooling.cppn import CppnEncoding, coordinates
from app.fooling.direct import DirectEncoding, sbx
from app.fooling.evolution import EvolutionParams, evolve, map_elites
from app.fooling.methods import MethodError, build
from app.settings import ROOT


@pytest.fixture(scope="module")
def lenet(lab):
    return lab.registry.model("lenet-mnist")


@pytest.mark.parametrize("space,reference", [("hsv", colorsys.hsv_to_rgb), ("hls", colorsys.hls_to_rgb)])
def test_colour_genes_convert_as_colorsys_does(space, reference):
    genes = torch.rand(1, 3, 7, 5, generator=torch.Generator().manual_seed(1))
    rgb = to_rgb(genes, space)
    for y in range(7):
        for x in range(5):
            assert torch.allclose(rgb[0, :, y, x], torch.tensor(reference(*genes[0, :, y, x].tolist())), atol=1e-5)
    assert to_rgb(genes, "rgb") is genes
    # hls8, the paper's code: int(gene * 255) as an OpenCV hue byte (2 degrees each): 0.5 -> 254 degrees
    g = torch.tensor([0.5, 0.5, 1.0]).view(1, 3, 1, 1)
    want = colorsys.hls_to_rgb(254 / 360, 0.5, 1.0)
    assert torch.allclose(to_rgb(g, "hls8").flatten(), torch.tensor(want), atol=1e-5)
    assert torch.allclose(to_rgb(torch.tensor([0.9, 0.5, 1.0]).view(1, 3, 1, 1), "hls8").flatten(),
                          torch.tensor(colorsys.hls_to_rgb((229 * 2 % 360) / 360, 0.5, 1.0)), atol=1e-5)  # wraps
    grey = torch.rand(2, 1, 4, 4)
    assert to_rgb(grey, "hls") is grey  # a grey value has no colour space


def test_direct_genes_are_read_in_their_colour_space():
    genes = DirectEncoding((3, 8, 8), "cpu").init(4, torch.Generator().manual_seed(0))
    assert torch.equal(DirectEncoding((3, 8, 8), "cpu").render(genes), genes)
    hls = DirectEncoding((3, 8, 8), "cpu", color="hls").render(genes)
    assert torch.allclose(hls, to_rgb(genes, "hls")) and not torch.allclose(hls, genes)
    with pytest.raises(ValueError, match="color"):
        DirectEncoding((3, 8, 8), "cpu", color="cmyk")


def test_pixel_inputs_are_raw_indices_and_change_the_image():
    c = coordinates(5, 7, "cpu", inputs="pixels").view(4, 5, 7)
    assert c[0, 2].tolist() == list(range(7)) and c[1, :, 3].tolist() == list(range(5))  # x: column, y: row
    assert abs(float(c[2, 2, 3])) < 1e-6  # the distance is measured on the [-1, 1] grid
    assert math.isclose(float(c[2, 0, 0]), math.sqrt(2), rel_tol=1e-6)
    assert (c[3] == 1).all()
    unit, pixels = CppnEncoding((1, 28, 28), "cpu"), CppnEncoding((1, 28, 28), "cpu", inputs="pixels")
    g = unit.init(8, torch.Generator().manual_seed(3))
    assert not torch.allclose(unit.render(g), pixels.render(g))
    rgb = CppnEncoding((3, 16, 16), "cpu", color="rgb")
    g3 = rgb.init(4, torch.Generator().manual_seed(3))
    assert not torch.allclose(rgb.render(g3), CppnEncoding((3, 16, 16), "cpu").render(g3))  # hls by default


def test_sbx_children_stay_in_bounds_and_keep_the_parents_mean():
    gen = torch.Generator().manual_seed(0)
    a, b = torch.full((400, 784), 0.2), torch.full((400, 784), 0.8)
    child = sbx(a, b, gen)
    assert child.min() >= 0 and child.max() <= 1
    crossed = (child != a).float().mean().item()
    assert crossed > 0.99  # every gene where the parents differ (the code has no per-gene rate)
    moved = child[child != a]
    assert abs(moved.mean().item() - 0.5) < 0.02  # the two children are symmetric about the parents' mean
    assert torch.equal(sbx(a, a.clone(), gen), a)  # equal parents: nothing to cross
    near = sbx(a, b, gen, eta=1e6)[child != a]  # a huge distribution index: children at the parents
    assert ((near - 0.2).abs() < 1e-3).logical_or((near - 0.8).abs() < 1e-3).float().mean() > 0.9


@pytest.mark.parametrize("engine", [map_elites, evolve])
def test_crossover_changes_the_search_and_stays_reproducible(lenet, engine):
    def run(crossover: str, seed: int = 0):
        return list(engine(model_score_fn(lenet), DirectEncoding((1, 28, 28), "cpu"), [1, 7], 10,
                           EvolutionParams(population=40, generations=30, seed=seed, stop_at=None,
                                           crossover=crossover)))
    steps, b, plain = run("sbx"), run("sbx")[-1], run("none")[-1]
    a = steps[-1]
    assert torch.equal(a.images, b.images) and not torch.equal(a.images, plain.images)
    assert a.evaluations == plain.evaluations and (a.confidence > steps[0].confidence).all()  # it still climbs
    with pytest.raises(ValueError, match="direct encoding"):
        last(engine(model_score_fn(lenet), CppnEncoding((1, 28, 28), "cpu"), [1], 10,
                    EvolutionParams(generations=1, crossover="sbx")))


def test_build_takes_the_options_and_refuses_them_where_they_mean_nothing(lab, lenet):
    entry = lab.registry.get("lenet-mnist")
    score = model_score_fn(lenet)
    for encoding, options in (("cppn", {"cppn_inputs": "pixels", "color": "hsv"}), ("direct", {"color": "hls"}),
                              ("direct", {"crossover": "sbx"})):
        snap = last(build("map-elites", entry, lenet, score, [2], encoding, 0, {**options, "generations": 2}))
        assert snap.step == 2
    for encoding, method, options, says in (
            ("cppn", "map-elites", {"crossover": "sbx"}, "direct encoding"),
            ("direct", "map-elites", {"cppn_inputs": "pixels"}, "cppn encoding"),
            ("direct", "gradient", {"color": "hls"}, "no genes"),
            ("cppn", "evolve", {"color": "cmyk"}, "color must be one of")):
        with pytest.raises(MethodError, match=says):
            build(method, entry, lenet, score, [2], encoding, 0, options)


def test_the_options_through_the_api(client):
    base = {"model": "lenet-mnist", "method": "map-elites", "targets": [3], "generations": 2}
    for encoding, params in (("cppn", {"cppn_inputs": "pixels", "color": "hls"}), ("direct", {"crossover": "sbx"})):
        r = client.post("/api/v1/jobs", json={**base, "encoding": encoding, "params": params})
        assert r.status_code == 201, r.text
    for encoding, params, field in (("direct", {"crossover": "two-point"}, "params.crossover"),
                                    ("direct", {"color": "cmyk"}, "params.color"),
                                    ("cppn", {"cppn_inputs": "degrees"}, "params.cppn_inputs"),
                                    ("cppn", {"crossover": "sbx"}, "params")):
        r = client.post("/api/v1/jobs", json={**base, "encoding": encoding, "params": params})
        assert r.status_code == 422 and r.json()["field"] == field, r.text
    schemas = client.get("/openapi.json").json()["components"]["schemas"]
    props = next(s["properties"]["params"]["properties"] for s in schemas.values()
                 if "color" in s.get("properties", {}).get("params", {}).get("properties", {}))
    assert props["color"]["enum"] == ["rgb", "hsv", "hls", "hls8"] and props["crossover"]["enum"] == ["none", "sbx"]
    assert props["cppn_inputs"]["enum"] == ["unit", "pixels"]


def test_the_options_as_plain_words_on_the_command_line(tmp_path):
    from app.cli.main import main  # in this process (test_cli.py runs the script itself)

    for encoding, param in (("cppn", "cppn_inputs=pixels"), ("direct", "color=hls"), ("direct", "crossover=sbx")):
        out = tmp_path / param.split("=")[0]
        assert main(["fool", "--model", "lenet-mnist", "--method", "map-elites", "--encoding", encoding,
                     "--targets", "4", "--generations", "3", "--param", param, "--out", str(out), "--quiet"]) == 0
        key, value = param.split("=")
        assert json.loads((out / "summary.json").read_text())["settings"]["params"][key] == value


@pytest.mark.parametrize("model_id", ["lenet-mnist", "efficientnet-lite0-imagenet"])
def test_every_model_says_what_it_makes_of_noise(client, lab, model_id):
    """GET /api/v1/models/{id} carries the noise baseline, measured through the server's scoring:
    the same numbers as scoring the same noise directly, and kept after the first request."""
    from app.fooling.baseline import noise_images, noise_summary

    first = client.get(f"/api/v1/models/{model_id}")
    assert first.status_code == 200
    got = first.json()["noise_baseline"]
    entry = lab.registry.get(model_id)
    with torch.inference_mode():
        x = noise_images(entry.input_shape)
        want = noise_summary(torch.cat([torch.softmax(lab.registry.model(model_id)(x[i:i + 50]), 1)
                                        for i in range(0, len(x), 50)]), entry.labels)
    assert got["n"] == want["n"] == len(x) and got["top_label"] == want["top_label"] in entry.labels
    assert abs(got["median"] - want["median"]) < 1e-3 and abs(got["p95"] - want["p95"]) < 1e-3
    assert 0 <= got["median"] <= got["p95"] <= 1
    assert client.get(f"/api/v1/models/{model_id}").json()["noise_baseline"] == got
    assert "noise_baseline" not in client.get("/api/v1/models").json()["models"][0]  # the list stays cheap


def test_the_run_page_loads_the_noise_line_beside_the_run(client):
    job = client.post("/api/v1/jobs", json={"model": "lenet-mnist", "method": "map-elites", "targets": [3],
                                            "generations": 2}).json()
    page = client.get(f"/jobs/{job['id']}").text
    assert 'hx-get="/models/lenet-mnist/noise"' in page
    line = client.get("/models/lenet-mnist/noise")
    b = client.get("/api/v1/models/lenet-mnist").json()["noise_baseline"]
    assert line.status_code == 200 and f"{b['n']} uniform-noise images" in line.text
    assert f"{b['median'] * 100:.1f}%" in line.text and b["top_label"] in line.text
    assert client.get("/models/no-such-model/noise").status_code == 204


def test_the_mean_image_lenet_subtracts_it_itself_and_can_be_fooled(tmp_path):
    """lenet-mnist-mean (`train-lenet --mean-image`, as the paper's Caffe LeNet) takes images in [0, 1]
    like every model and subtracts the training set's mean image inside its wrapper."""
    from app.models.builtin import MEAN_LENET
    from app.models.registry import Registry
    from tests.conftest import make_settings

    registry = Registry(make_settings(preload=MEAN_LENET))
    registry.load_all()
    entry = registry.get(MEAN_LENET)
    assert entry.available and "mean image" in entry.title and entry.meta["test_accuracy"] > 0.98
    model = registry.model(MEAN_LENET)
    mean = torch.load(ROOT / "models" / f"{MEAN_LENET}.mean.pt", weights_only=True)
    assert mean.shape == (1, 1, 28, 28) and 0.05 < float(mean.mean()) < 0.2  # MNIST is mostly black
    x = torch.rand(4, 1, 28, 28)
    with torch.inference_mode():
        assert torch.allclose(model(x), model.net(x - mean), atol=1e-5)
    snap = last(map_elites(model_score_fn(model), DirectEncoding((1, 28, 28), "cpu"), [3], 10,
                           EvolutionParams(population=100, generations=400, seed=0)))
    assert float(snap.confidence[0]) > 0.99
