"""Transfer and ensembles: LeNets that differ only in their training seed.

transfer: fooling images evolved against each network, scored by every other network (and by
EfficientNet-Lite0, whose classes differ: its top-1 confidence says whether it is sure of
anything), as a heat map. ensemble: evolution and gradient ascent against the averaged
prediction; do they still reach 99.99%, and at what cost?"""

from __future__ import annotations

import torch
from torch import nn

from app.experiments.common import Context, bars, evolve_fooling
from app.fooling.base import SUCCESS
from app.fooling.gradient import GradientParams, gradient_ascent
from app.models.builtin import lenet_variants
from app.models.defences import Ensemble


def lenets(ctx: Context, count: int) -> dict[str, nn.Module]:
    ids = ["lenet-mnist", *lenet_variants(ctx.settings.models_dir)][:count]
    if len(ids) < 2:
        raise RuntimeError("needs LeNets trained with other seeds: python -m app train-lenet --seed 1 "
                           "--model-id lenet-mnist-s1 (and so on)")
    return {i: ctx.model(i) for i in ids}


@torch.inference_mode()
def probs_of(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return torch.softmax(model(x), -1)


def run_transfer(ctx: Context) -> dict:
    nets = lenets(ctx, 3 if ctx.quick else 5)
    targets = list(range(10))
    gens = 300 if ctx.quick else 3000
    images, evolution = {}, {}
    for name, net in nets.items():
        ctx.log(f"evolving against {name}")
        images[name], evolution[name] = evolve_fooling(net, targets, ctx.seed, gens)
    tgt = torch.tensor(targets)
    matrix, share = [], []
    for a in nets:
        row, srow = [], []
        for net in nets.values():
            p = probs_of(net, images[a]).gather(1, tgt[:, None]).squeeze(1)
            row.append(float(p.mean()))
            srow.append(float((p >= 0.99).float().mean()))
        matrix.append(row)
        share.append(srow)
    effnet = None
    entry = ctx.registry.load("efficientnet-lite0-imagenet")
    if entry.available:
        from PIL import Image

        from app.serving.imaging import to_model_input

        big = ctx.registry.model(entry.id)
        rows = []
        for a in nets:
            pil = [Image.fromarray((img[0] * 255).round().byte().numpy()) for img in images[a]]
            x = torch.stack([to_model_input(p.convert("RGB"), entry.input_shape, "stretch") for p in pil])
            top = probs_of(big, x).max(1)
            rows.append({"evolved_against": a, "mean_top1": float(top.values.mean()),
                         "top1_labels": [entry.labels[int(i)] for i in top.indices]})
        effnet = rows
    names = list(nets)
    heatmap(ctx.out / "transfer.png", names, matrix)
    return {"networks": names, "evolution": evolution, "mean_target_confidence": matrix,
            "share_at_99": share, "efficientnet": effnet, "plots": ["transfer.png"],
            "reading": "row: images evolved against that network; column: the network scoring them"}


def heatmap(path, names: list[str], matrix: list[list[float]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(1.4 * len(names) + 2, 1.2 * len(names) + 1.5), dpi=110)
    im = ax.imshow(matrix, vmin=0, vmax=1, cmap="viridis")
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right")
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("scored by")
    ax.set_ylabel("evolved against")
    for i, row in enumerate(matrix):
        for j, v in enumerate(row):
            ax.text(j, i, f"{v:.2f}", ha="center", va="center", color="white" if v < 0.6 else "black")
    fig.colorbar(im, label="mean confidence in the target digit")
    ax.set_title("Do fooling images transfer between LeNets?")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def run_ensemble(ctx: Context) -> dict:
    nets = lenets(ctx, 3 if ctx.quick else 5)
    members = list(nets.values())
    ens = Ensemble(members).eval()
    targets = list(range(10))
    gens = 500 if ctx.quick else 5000
    steps = 300 if ctx.quick else 2000  # the full ensemble needed about 500
    ctx.log("evolving against one network")
    _, single = evolve_fooling(members[0], targets, ctx.seed, gens)
    ctx.log(f"evolving against the ensemble of {len(members)}")
    images, ensemble = evolve_fooling(ens, targets, ctx.seed, gens)
    per_member = [float(probs_of(m, images).gather(1, torch.tensor(targets)[:, None]).mean()) for m in members]

    def gradient_steps(model: nn.Module) -> dict:
        snap, reached = None, None
        for snap in gradient_ascent(model, targets, (1, 28, 28), 10, GradientParams(steps=steps, seed=ctx.seed)):
            if bool((snap.confidence >= SUCCESS).all()):
                reached = snap.step
                break  # the question is how many steps it takes; the rest would only cost time
        return {"steps_to_all_9999": reached, "steps": snap.step, "min_confidence": float(snap.confidence.min())}

    ctx.log("gradient ascent on one network and on the ensemble")
    g1, ge = gradient_steps(members[0]), gradient_steps(ens)
    bars(ctx.out / "ensemble.png", f"Evaluations until all 10 digits reach 99.99% (budget {gens} generations)",
         "evaluations", {"evolution vs one LeNet": single["evaluations_to_all_9999"],
                         f"evolution vs ensemble of {len(members)}": ensemble["evaluations_to_all_9999"]})
    return {"members": list(nets), "evolution_single": single, "evolution_ensemble": ensemble,
            "ensemble_images_scored_by_each_member": per_member,
            "gradient_single": g1, "gradient_ensemble": ge, "plots": ["ensemble.png"]}
