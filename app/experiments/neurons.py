"""Neuron visualisation: gradient ascent on the mean activation of one channel of a layer, with
jitter and blur regularisation, shown as a grid per layer, for LeNet and EfficientNet-Lite0.
What each unit responds to, as a picture: the same tool that makes fooling images."""

from __future__ import annotations

import torch
from torch import nn

from app.experiments.common import Context
from app.fooling.gradient import jitter_image
from app.models.filters import blur


def visualise(model: nn.Module, layer: nn.Module, channels: list[int], shape: tuple[int, int, int], steps: int,
              seed: int, lr: float = 0.05, jitter: int = 2, blur_every: int = 4) -> tuple[torch.Tensor, list[float]]:
    """One image per channel, optimised together as a batch."""
    gen = torch.Generator().manual_seed(seed)
    x = (0.5 + 0.05 * torch.randn((len(channels), *shape), generator=gen)).clamp(0, 1).requires_grad_(True)
    opt = torch.optim.Adam([x], lr=lr)
    grab: dict[str, torch.Tensor] = {}
    hook = layer.register_forward_hook(lambda _m, _i, out: grab.__setitem__("out", out))
    idx = torch.tensor(channels)
    try:
        for step in range(1, steps + 1):
            model(jitter_image(x, jitter, gen) if jitter else x)
            act = grab["out"][torch.arange(len(channels)), idx].mean((1, 2))  # image i drives channel i
            opt.zero_grad(set_to_none=True)
            (-act.sum()).backward()
            opt.step()
            with torch.no_grad():
                x.clamp_(0, 1)
                if blur_every and step % blur_every == 0:
                    x.copy_(blur(x, 0.5))
    finally:
        hook.remove()
    return x.detach(), act.detach().tolist()


def grid(path, images: torch.Tensor, title: str, cols: int = 8) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = (len(images) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 1.2, rows * 1.3 + 0.5), dpi=110, squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for i, (ax, img) in enumerate(zip(axes.flat, images, strict=False)):
        arr = img.permute(1, 2, 0).numpy()
        ax.imshow(arr[..., 0] if arr.shape[2] == 1 else arr, cmap="gray" if arr.shape[2] == 1 else None,
                  interpolation="nearest", vmin=0, vmax=1)
        ax.set_title(f"ch {i}", fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path.name


def run(ctx: Context) -> dict:
    out: dict = {"layers": [], "plots": []}
    lenet = ctx.model("lenet-mnist").eval()
    n = 8 if ctx.quick else 20
    for name, layer in (("conv1", lenet.net.features[0]), ("conv2", lenet.net.features[2])):
        ctx.log(f"lenet {name}")
        imgs, acts = visualise(lenet, layer, list(range(n)), (1, 28, 28), 60 if ctx.quick else 200, ctx.seed)
        out["plots"].append(grid(ctx.out / f"neurons-lenet-{name}.png", imgs, f"LeNet {name}: {n} channels"))
        out["layers"].append({"model": "lenet-mnist", "layer": name, "channels": n, "activation": acts})
    entry = ctx.registry.load("efficientnet-lite0-imagenet")
    if entry.available:
        eff = ctx.registry.model(entry.id).eval()
        blocks = (3, 11) if ctx.quick else (1, 3, 7, 11, 15)
        size, steps, k = (96, 20, 8) if ctx.quick else (160, 80, 16)
        for b in blocks:
            ctx.log(f"efficientnet block {b}")
            imgs, acts = visualise(eff, eff.net._blocks[b], list(range(k)), (3, size, size), steps, ctx.seed)
            out["plots"].append(grid(ctx.out / f"neurons-efficientnet-block{b}.png", imgs,
                                     f"EfficientNet-Lite0 block {b}: {k} channels"))
            out["layers"].append({"model": entry.id, "layer": f"block {b}", "channels": k, "activation": acts})
    return out
