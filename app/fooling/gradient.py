"""Gradient ascent on a class score (Simonyan et al. 2013), in pixels or through a CPPN.

Objective: the unnormalised logit of each target minus an L2 penalty, optionally with jitter
and blur, optimised with Adam. All targets are optimised together as one batch.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch

from app.fooling.base import EliteArchive, Snapshot, evaluate, model_device, model_score_fn
from app.models.filters import blur


@dataclass
class GradientParams:
    steps: int = 300
    lr: float | None = None  # Adam step; None: 0.05 for pixels, 0.02 for a CPPN's weights
    l2: float = 0.0  # weight of the L2 penalty on (x - 0.5)
    jitter: int = 0  # random shift of up to this many pixels per step
    blur_every: int = 0  # Gaussian blur (sigma blur_sigma) every n steps; 0: never
    blur_sigma: float = 0.5
    start: str = "noise"  # "noise", "grey", or "image" (then pass start_image)
    stop_at: float | None = 0.9999
    seed: int = 0


def jitter_image(x: torch.Tensor, n: int, gen: torch.Generator) -> torch.Tensor:
    """Shift a batch by the same random offset of up to n pixels (wrapping), for regularisation."""
    dy, dx = (int(v) for v in torch.randint(-n, n + 1, (2,), generator=gen))
    return torch.roll(x, shifts=(dy, dx), dims=(2, 3))


def gradient_ascent(model: torch.nn.Module, targets: list[int], shape: tuple[int, int, int], num_classes: int,
                    params: GradientParams, start_image: torch.Tensor | None = None,
                    param: torch.nn.Module | None = None) -> Iterator[Snapshot]:
    """``param`` (optional) maps nothing to a (T, C, H, W) image batch, e.g. a CPPN; without it the
    pixels themselves are optimised."""
    device = model_device(model)
    gen = torch.Generator().manual_seed(params.seed)
    n = len(targets)
    tgt = torch.tensor(targets, device=device)
    if param is None:
        if params.start == "image" and start_image is not None:
            x0 = start_image.to(device).expand(n, *shape).clone()
        elif params.start == "grey":
            x0 = torch.full((n, *shape), 0.5, device=device)
        else:
            x0 = (0.5 + 0.1 * torch.randn((n, *shape), generator=gen)).clamp(0, 1).to(device)
        pixels = x0.requires_grad_(True)
        opt = torch.optim.Adam([pixels], lr=params.lr or 0.05)

        def render() -> torch.Tensor:
            return pixels
    else:
        opt = torch.optim.Adam(param.parameters(), lr=params.lr or 0.02)
        render = param
    archive = EliteArchive(targets, shape, num_classes, device)
    score = model_score_fn(model)
    for step in range(1, params.steps + 1):
        x = render()
        xin = jitter_image(x, params.jitter, gen) if params.jitter else x
        logits = model(xin)
        objective = logits.gather(1, tgt[:, None]).squeeze(1)
        loss = -objective.sum() + params.l2 * ((x - 0.5) ** 2).flatten(1).sum(1).sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            if param is None:
                pixels.clamp_(0, 1)
                if params.blur_every and step % params.blur_every == 0:
                    pixels.copy_(blur(pixels, params.blur_sigma))
            images, probs = evaluate(score, render().detach())
        # Each target's cell takes only its own image: the i-th image is optimised for target i.
        archive.offer_own(images, probs, torch.arange(n, device=device))
        yield archive.snapshot(step, step * n, objective=objective.detach().cpu().tolist())
        if params.stop_at is not None and bool((archive.confidence >= params.stop_at).all()):
            return
