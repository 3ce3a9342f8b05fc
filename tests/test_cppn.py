"""CPPN encoding: the batched genomes must stay valid feed-forward networks, render what a plain
one-network-at-a-time evaluation renders, and fool LeNet on every digit."""

from __future__ import annotations

import colorsys
import json

import pytest
import torch

from app.fooling.base import last, model_score_fn, ten_crop_score
from app.fooling.color import hls_to_rgb
from app.fooling.cppn import _FUNCS, N_IN, WEIGHT_RANGE, CppnEncoding, coordinates
from app.fooling.evolution import EvolutionParams, map_elites
from app.fooling.methods import build
from app.serving.imaging import to_png
from tests.conftest import assert_pngs_rescore, early_and_last


def evolved(enc: CppnEncoding, n: int = 16, rounds: int = 30, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    g = enc.init(n, gen)
    for _ in range(rounds):
        g = enc.mutate(g, gen)
    return g


def reference_render(enc: CppnEncoding, g, i: int, h: int, w: int) -> torch.Tensor:
    """One network, node by node in key order, with plain Python bookkeeping."""
    coords = coordinates(h, w, "cpu")
    values = {s: coords[s] for s in range(N_IN)}
    live = [s for s in range(enc.slots) if g.alive[i, s] and s >= N_IN]
    for node in sorted(live, key=lambda s: float(g.key[i, s])):
        pre = torch.zeros(h * w)
        for src in values:
            if g.link[i, src, node]:
                pre = pre + (float(g.weight[i, src, node]) * 2 * WEIGHT_RANGE - WEIGHT_RANGE) * values[src]
        values[node] = _FUNCS[int(g.act[i, node])](pre)
    outs = torch.stack([values[s] for s in range(N_IN, enc.first_hidden)]).abs().clamp(0, 1)
    if enc.n_out == 1:
        return outs.view(1, h, w)
    return hls_to_rgb(outs[0:1], outs[1:2], outs[2:3]).view(3, h, w)


def test_init_is_inputs_to_outputs_only():
    enc = CppnEncoding((3, 32, 32), "cpu")
    g = enc.init(8, torch.Generator().manual_seed(0))
    assert int(g.alive.sum(1).max()) == N_IN + 3  # no hidden nodes
    assert g.link[:, :N_IN, N_IN:N_IN + 3].all() and int(g.link.sum()) == 8 * 12


def test_mutation_keeps_networks_feed_forward_and_grows_them():
    enc = CppnEncoding((1, 28, 28), "cpu", max_hidden=12)
    g = evolved(enc, n=64, rounds=40)
    hidden = g.alive[:, enc.first_hidden:].sum(1)
    assert hidden.max() > 0 and hidden.max() <= 12
    src_key, dst_key = g.key[:, :, None], g.key[:, None, :]
    assert not (g.link & (src_key >= dst_key)).any()  # links only go forward
    ends_alive = g.alive[:, :, None] & g.alive[:, None, :]
    assert not (g.link & ~ends_alive).any()  # no link touches an empty slot
    assert not g.link[:, :, :N_IN].any()  # nothing feeds an input
    assert not g.link[:, N_IN:enc.first_hidden, :].any()  # outputs feed nothing
    assert g.weight.min() >= 0 and g.weight.max() <= 1


@pytest.mark.parametrize("shape", [(1, 12, 10), (3, 9, 11)])
def test_batched_render_matches_one_network_at_a_time(shape):
    enc = CppnEncoding(shape, "cpu", max_hidden=10)
    g = evolved(enc, n=6, rounds=25, seed=3)
    images = enc.render(g)
    assert images.shape == (6, *shape) and images.min() >= 0 and images.max() <= 1
    for i in range(6):
        # float32 rounding differs between the batched and the plain sums; weights up to 10 amplify it
        assert torch.allclose(images[i], reference_render(enc, g, i, shape[1], shape[2]), atol=1e-4)


def test_same_genome_renders_at_any_resolution():
    enc = CppnEncoding((1, 28, 28), "cpu")
    g = evolved(enc, n=4)
    small = enc.render(g)
    big = enc.render(g, size=(55, 55))  # the 28-pixel grid is every other point of the 55-pixel one
    assert big.shape == (4, 1, 55, 55)
    assert torch.allclose(big[:, :, ::2, ::2], small, atol=1e-5)


def test_render_in_chunks_equals_render_at_once():
    enc = CppnEncoding((3, 16, 16), "cpu")
    g = evolved(enc, n=10)
    whole = enc.render(g)
    enc.render_chunk = enc.slots * 16 * 16 * 3  # three networks at a time
    assert torch.equal(enc.render(g), whole)


def test_hls_to_rgb_matches_colorsys():
    gen = torch.Generator().manual_seed(0)
    h, lum, s = torch.rand((3, 50), generator=gen)
    rgb = hls_to_rgb(h, lum, s)
    for i in range(50):
        expected = colorsys.hls_to_rgb(float(h[i]), float(lum[i]), float(s[i]))
        assert torch.allclose(rgb[i], torch.tensor(expected), atol=1e-5)


def test_ten_crop_averages_ten_crops():
    def fake(x):  # "probabilities": mean of the left and right halves, so flips matter
        w = x.shape[3]
        return torch.stack([x[..., : w // 2].mean((1, 2, 3)), x[..., w // 2:].mean((1, 2, 3))], 1)

    x = torch.rand((2, 3, 28, 28), generator=torch.Generator().manual_seed(0))
    got = ten_crop_score(fake, scale=32 / 28)(x)
    big = torch.nn.functional.interpolate(x, size=(32, 32), mode="bilinear", align_corners=False)
    crops = [big[:, :, y:y + 28, c:c + 28] for y, c in ((0, 0), (0, 4), (4, 0), (4, 4), (2, 2))]
    crops += [c.flip(3) for c in crops]
    assert torch.allclose(got, torch.stack([fake(c) for c in crops]).mean(0), atol=1e-6)


def rescored(client, images, model="lenet-mnist"):
    files = [("file", (f"{i}.png", to_png(img), "image/png")) for i, img in enumerate(images)]
    r = client.post("/api/v1/score", files=files, data={"model": model, "top_k": "10"})
    assert r.status_code == 200
    return r.json()["results"]


def test_map_elites_cppn_fools_all_digits_and_pngs_score_the_same(client, lab):
    lenet = lab.registry.model("lenet-mnist")
    enc = CppnEncoding((1, 28, 28), "cpu")
    early, snap = early_and_last(map_elites(model_score_fn(lenet), enc, list(range(10)), 10,
                                            EvolutionParams(population=100, generations=1000, seed=0)))
    assert (snap.confidence >= 0.9999).all(), snap.confidence
    assert_pngs_rescore(client, early)  # at confidences well below 1, where a wrong pixel would show
    assert_pngs_rescore(client, snap, need_mid=0)


def test_cppn_images_are_regular_not_noise(lab):
    """CPPN images are smooth patterns: neighbouring pixels differ far less than in uniform noise."""
    enc = CppnEncoding((1, 28, 28), "cpu")
    images = enc.render(evolved(enc, n=50, rounds=20))
    def roughness(x):
        return (x[..., 1:] - x[..., :-1]).abs().mean()
    assert roughness(images) < 0.5 * roughness(torch.rand_like(images))


def test_gradient_through_cppn_fools_all_digits(client, lab):
    entry = lab.registry.get("lenet-mnist")
    lenet = lab.registry.model("lenet-mnist")
    snap = last(build("gradient", entry, lenet, model_score_fn(lenet), list(range(10)), encoding="cppn",
                      seed=0, options={"steps": 300}))
    assert (snap.confidence >= 0.9999).all(), snap.confidence
    for digit, res in enumerate(rescored(client, snap.images)):
        assert {t["index"]: t["confidence"] for t in res["top"]}[digit] >= 0.9999


def test_gradient_through_cppn_on_imagenet(lab):
    entry = lab.registry.get("efficientnet-lite0-imagenet")
    model = lab.registry.model(entry.id)
    target = entry.labels.index("king penguin")
    snap = last(build("gradient", entry, model, model_score_fn(model), [target], encoding="cppn", seed=0,
                      options={"steps": 80, "stop_at": 0.99}))
    assert snap.images.shape == (1, 3, 224, 224)
    assert float(snap.confidence[0]) >= 0.99, snap.confidence


def test_cli_cppn_budget_history_and_curve(tmp_path):
    out = tmp_path / "run"
    from app.cli.main import main  # the command line's entry, in this process (test_cli.py runs the script)

    assert main(["fool", "--model", "lenet-mnist", "--method", "evolve", "--encoding", "cppn", "--targets", "3,8",
                 "--seed", "1", "--population", "20", "--generations", "100000", "--max-seconds", "2",
                 "--history-every", "0.1", "--param", "stop_at=null", "--out", str(out), "--quiet"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["stop_reason"] == "time budget (2 s)" and summary["settings"]["encoding"] == "cppn"
    assert summary["ten_crop"] is False
    hist = summary["history"]
    assert len(hist) >= 3 and all(b["evaluations"] > a["evaluations"] for a, b in zip(hist, hist[1:], strict=False))
    assert all(b["max"] >= a["max"] for a, b in zip(hist, hist[1:], strict=False))  # elites never get worse
    assert (out / "curve.png").is_file() and (out / "grid.png").is_file()
