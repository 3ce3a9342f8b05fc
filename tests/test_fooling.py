"""Fooling engines on the real LeNet: they must reach 99.99%, be reproducible, and save what they scored."""

from __future__ import annotations

import json

import pytest
import torch

from app.fooling.attacks import AttackParams, fgsm, pgd
from app.fooling.base import last, model_score_fn, resolve_targets
from app.fooling.baseline import random_images
from app.fooling.direct import DirectEncoding, polynomial_mutation
from app.fooling.evolution import EvolutionParams, evolve, map_elites
from app.fooling.gradient import GradientParams, gradient_ascent
from app.fooling.methods import MethodError, build
from tests.conftest import assert_pngs_rescore, early_and_last


@pytest.fixture(scope="module")
def lenet(lab):
    return lab.registry.model("lenet-mnist")


def test_resolve_targets():
    labels = ["cat", "dog", "school bus"]
    assert resolve_targets("all", labels) == [0, 1, 2]
    assert resolve_targets("2,cat", labels) == [2, 0]
    assert resolve_targets("School Bus", labels) == [2]
    for bad in ("7", "giraffe", ""):
        with pytest.raises(ValueError):
            resolve_targets(bad, labels)


def test_polynomial_mutation_rate_and_bounds():
    gen = torch.Generator().manual_seed(0)
    x = torch.full((200, 784), 0.5)
    y = polynomial_mutation(x, 0.1, 15.0, gen)
    changed = (y != x).float().mean().item()
    assert 0.09 < changed < 0.11 and y.min() >= 0 and y.max() <= 1
    assert polynomial_mutation(x, 0.0, 15.0, gen).equal(x)


def test_map_elites_direct_fools_all_digits_and_pngs_score_the_same(client, lenet):
    enc = DirectEncoding((1, 28, 28), "cpu")
    early, snap = early_and_last(map_elites(model_score_fn(lenet), enc, list(range(10)), 10,
                                            EvolutionParams(population=100, generations=2000, seed=0)))
    assert (snap.confidence >= 0.9999).all(), snap.confidence
    assert snap.images.shape == (10, 1, 28, 28)
    assert_pngs_rescore(client, early)  # at confidences well below 1, where a wrong pixel would show
    assert_pngs_rescore(client, snap, need_mid=0)


def test_same_seed_same_images_other_seed_differs(lenet):
    def run(seed):
        return last(map_elites(model_score_fn(lenet), DirectEncoding((1, 28, 28), "cpu"), [3, 5], 10,
                               EvolutionParams(population=50, generations=20, seed=seed, stop_at=None)))
    a, b, c = run(1), run(1), run(2)
    assert torch.equal(a.images, b.images) and torch.equal(a.confidence, b.confidence)
    assert not torch.equal(a.images, c.images)


def test_steps_can_be_stopped_and_report_progress(lenet):
    gen = map_elites(model_score_fn(lenet), DirectEncoding((1, 28, 28), "cpu"), list(range(10)), 10,
                     EvolutionParams(population=50, generations=1000, seed=0, stop_at=None))
    snaps = [next(gen) for _ in range(5)]
    gen.close()
    assert [s.step for s in snaps] == [0, 1, 2, 3, 4]
    assert [s.evaluations for s in snaps] == [50, 100, 150, 200, 250]
    assert all((b.confidence >= a.confidence).all() for a, b in zip(snaps, snaps[1:], strict=False))
    assert snaps[-1].probs.shape == (10, 10)


def test_single_target_evolution_reaches_9999(lenet):
    snap = last(evolve(model_score_fn(lenet), DirectEncoding((1, 28, 28), "cpu"), [1, 7], 10,
                       EvolutionParams(population=64, generations=1500, seed=0)))
    assert (snap.confidence >= 0.9999).all(), snap.confidence


def test_halving_schedule():
    p = EvolutionParams(mutation_rate=0.1, halve_every=1000)
    assert p.rate_at(999) == 0.1 and p.rate_at(1000) == 0.05 and p.rate_at(2500) == 0.025
    assert EvolutionParams().rate_at(5000) == 0.1


def test_gradient_ascent_all_digits(lenet):
    snap = last(gradient_ascent(lenet, list(range(10)), (1, 28, 28), 10, GradientParams(steps=300)))
    assert (snap.confidence >= 0.9999).all()
    assert snap.images.min() >= 0 and snap.images.max() <= 1


def test_pgd_targeted_success_and_budget(lenet, mnist_test):
    x, y = mnist_test
    with torch.no_grad():
        ok = (lenet(x[:300]).argmax(1) == y[:300]).nonzero().squeeze(1)[:100]
    xs, target = x[ok], (y[ok] + 1) % 10
    snap = last(pgd(lenet, xs, target, AttackParams(epsilon=0.3, step_size=0.01, steps=40)))
    assert sum(snap.extra["success"]) >= 95
    assert max(snap.extra["linf"]) <= 0.3 + 0.5 / 255 + 1e-6  # budget, plus half an 8-bit step
    assert snap.images.min() >= 0 and snap.images.max() <= 1
    zero = last(pgd(lenet, xs[:5], target[:5], AttackParams(epsilon=0.0, steps=3)))
    assert max(zero.extra["linf"]) <= 0.5 / 255 + 1e-6  # epsilon 0 leaves the image unchanged


def test_fgsm_matches_formula_and_torchattacks(lenet, mnist_test):
    torchattacks = pytest.importorskip("torchattacks")
    x, y = mnist_test[0][:20], mnist_test[1][:20]
    x_req = x.clone().requires_grad_(True)
    torch.nn.functional.cross_entropy(lenet(x_req), y).backward()
    expected = (x + 0.1 * x_req.grad.sign()).clamp(0, 1)
    # Untargeted FGSM on the true labels (here the model's predictions equal them for these 20).
    assert (lenet(x).argmax(1) == y).all()
    snap = last(fgsm(lenet, x, None, AttackParams(epsilon=0.1)))
    assert torch.allclose(snap.images, torch.round(expected * 255) / 255)
    ta = torchattacks.FGSM(lenet, eps=0.1)(x, y)
    assert torch.allclose(ta, expected, atol=1e-6)


def test_pgd_matches_torchattacks_without_random_start(lenet, mnist_test):
    torchattacks = pytest.importorskip("torchattacks")
    x, y = mnist_test[0][:16], mnist_test[1][:16]
    target = (y + 3) % 10
    atk = torchattacks.PGD(lenet, eps=0.2, alpha=0.02, steps=10, random_start=False)
    atk.set_mode_targeted_by_label(quiet=True)
    theirs = atk(x, target)
    snap = last(pgd(lenet, x, target, AttackParams(epsilon=0.2, step_size=0.02, steps=10, random_start=False)))
    # Compare before quantisation: rerun our update rule to its final float state.
    from app.fooling import attacks

    adv = x.clone()
    for _ in range(10):
        adv = adv - 0.02 * attacks._grad(lenet, adv, target).sign()
        adv = (x + (adv - x).clamp(-0.2, 0.2)).clamp(0, 1).detach()
    assert torch.allclose(adv, theirs, atol=1e-6)
    assert torch.allclose(snap.images, torch.round(theirs * 255) / 255, atol=1 / 255 + 1e-6)


def test_random_baseline_reports_honest_numbers(lenet):
    snap = last(random_images(model_score_fn(lenet), DirectEncoding((1, 28, 28), "cpu"), list(range(10)), 10,
                              batches=2, batch_size=500, seed=0))
    e = snap.extra
    assert snap.evaluations == 1000 and 0 <= e["median_top_confidence"] <= 1
    assert abs(sum(e["class_shares"]) - 1) < 1e-5 and 0 < e["most_common_share"] <= 1


def test_gradient_methods_refuse_black_boxes(lab):
    entry = lab.registry.get("lenet-mnist")
    box = type(entry)(**{**entry.__dict__, "differentiable": False})
    with pytest.raises(MethodError, match="black box"):
        build("gradient", box, lab.registry.model("lenet-mnist"), None, [1])
    with pytest.raises(MethodError, match="--image"):
        build("pgd", entry, lab.registry.model("lenet-mnist"), None, None)
    with pytest.raises(MethodError, match="unknown method"):
        build("magic", entry, lab.registry.model("lenet-mnist"), None, [1])


def test_cli_fool_writes_pngs_grid_and_summary(tmp_path, capsys):
    from app.cli.main import main  # the command line's own entry, in this process (test_cli.py runs the script)

    out = tmp_path / "run"
    assert main(["fool", "--model", "lenet-mnist", "--method", "map-elites", "--encoding", "direct", "--targets", "all",
                 "--seed", "0", "--out", str(out), "--quiet"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["settings"]["seed"] == 0 and summary["settings"]["method"] == "map-elites"
    assert len(summary["targets"]) == 10
    assert all(t["confidence"] >= 0.9999 and (out / t["file"]).is_file() for t in summary["targets"])
    assert (out / "grid.png").is_file()
    capsys.readouterr()
    assert main(["fool", "--method", "pgd", "--out", str(tmp_path / "b"), "--quiet"]) == 2
    assert "--image" in capsys.readouterr().err


def test_gradient_over_many_targets_takes_turns_in_slices(client, lenet):
    """A gradient job's targets run in slices that take turns: no step touches more than a slice,
    and the merged result is as good as all at once."""
    entry = client.app.state.lab.registry.get("lenet-mnist")
    sizes: list[int] = []

    class Counting(torch.nn.Module):
        def forward(self, x):
            sizes.append(len(x))
            return lenet(x)

    gen = build("gradient", entry, Counting(), None, list(range(10)), seed=0, options={"steps": 300, "chunk": 3})
    first = next(gen)
    assert first.step == 0 and (first.confidence[3:] == 0).all()  # later slices have not started yet
    early, snap = early_and_last(gen)
    assert max(sizes) <= 3  # each turn backpropagates one slice only
    assert snap.targets == list(range(10)) and (snap.confidence >= 0.9999).all(), snap.confidence
    assert_pngs_rescore(client, snap, need_mid=0)  # each cell holds the image made for its own target


def test_map_elites_with_every_class_as_a_stepping_stone_reports_only_the_targets(client, lenet):
    """stepping_stones=all: cells for all ten digits (parents come from any of them), targets shown."""
    enc = DirectEncoding((1, 28, 28), "cpu")
    params = EvolutionParams(population=50, generations=300, seed=2, stepping_stones="all")
    snaps = list(map_elites(model_score_fn(lenet), enc, [3, 8], 10, params))
    snap = snaps[-1]
    assert snap.targets == [3, 8] and snap.images.shape == (2, 1, 28, 28)
    assert snaps[0].extra["occupied"] > 2  # other classes hold cells too
    assert (snap.images * 255 - (snap.images * 255).round()).abs().max() < 1e-4  # the 8-bit grid, exactly
    with torch.inference_mode():
        again = torch.softmax(lenet(snap.images), 1)[torch.arange(2), torch.tensor([3, 8])]
    assert torch.allclose(again, snap.confidence, atol=1e-5)  # what is reported is what scores
    assert (snap.confidence >= 0.9999).all() or snap.step == 300  # stops on the targets alone
    with pytest.raises(ValueError):
        last(evolve(model_score_fn(lenet), enc, [3], 10, EvolutionParams(generations=2, stepping_stones="all")))


def test_map_elites_draws_parents_only_from_unfinished_cells(lenet):
    """parents=unfinished (the default): once a digit is at 99.99%, no parent comes from its cell;
    uniform (the paper) keeps drawing from it."""

    class Watched(DirectEncoding):
        picks: list[torch.Tensor] = []

        def take(self, genomes, idx):
            self.picks.append(idx.clone())
            return super().take(genomes, idx)

    for parents in ("unfinished", "uniform"):
        enc = Watched((1, 28, 28), "cpu")
        enc.picks = []
        params = EvolutionParams(population=50, generations=120, seed=1, parents=parents)
        finished_then = [(s.confidence >= 0.9999).clone() for s in map_elites(model_score_fn(lenet), enc,
                                                                             list(range(10)), 10, params)]
        # take() runs once for the first elites, then once per generation after the snapshot before it
        parent_picks = enc.picks[1:]
        from_finished = [bool(done[pick].any()) for done, pick in zip(finished_then[:-1], parent_picks, strict=True)
                         if 0 < int(done.sum()) < 10]
        assert from_finished, "some digits finish before the others"
        assert any(from_finished) == (parents == "uniform"), parents
    with pytest.raises(ValueError, match="parents"):
        last(map_elites(model_score_fn(lenet), enc, [1], 10, EvolutionParams(generations=1, parents="best")))


def test_stepping_stones_through_the_api(client):
    ok = client.post("/api/v1/jobs", json={"model": "lenet-mnist", "method": "map-elites", "targets": [1],
                                           "generations": 3, "params": {"stepping_stones": "all"}})
    assert ok.status_code == 201, ok.text
    for bad, field in (({"method": "evolve"}, "params"), ({"params": {"stepping_stones": "some"}},
                                                          "params.stepping_stones"),
                       ({"params": {"parents": "best"}}, "params.parents"),
                       ({"method": "evolve", "params": {"parents": "uniform"}}, "params")):
        body = {"model": "lenet-mnist", "method": "map-elites", "targets": [1], "params": {"stepping_stones": "all"}}
        r = client.post("/api/v1/jobs", json={**body, **bad})
        assert r.status_code == 422 and r.json()["field"] == field, r.text
