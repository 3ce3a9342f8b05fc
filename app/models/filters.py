"""Image filters on batches in [0, 1]: what input-smoothing defences, squeezing detectors and the
gradient methods' regularisers put in front of a network. All keep the shape."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of an image batch (reflect padding), differentiable."""
    r = max(1, int(round(2 * sigma)))
    k = torch.exp(-torch.arange(-r, r + 1, device=x.device, dtype=x.dtype) ** 2 / (2 * sigma**2))
    k = k / k.sum()
    c = x.shape[1]
    x = F.conv2d(F.pad(x, (r, r, 0, 0), mode="reflect"), k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(F.pad(x, (0, 0, r, r), mode="reflect"), k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def median(x: torch.Tensor, k: int) -> torch.Tensor:
    """Median filter over k x k windows. An even k (Xu et al.'s 2 x 2) pads one more pixel after
    than before, so the output keeps the input's size."""
    if k <= 1:
        return x
    before, after = (k - 1) // 2, k // 2
    patches = F.unfold(F.pad(x, (before, after, before, after), mode="reflect"), k)  # (N, C*k*k, H*W)
    n, c = x.shape[:2]
    return patches.view(n, c, k * k, -1).median(2).values.view_as(x)


def bit_depth(x: torch.Tensor, bits: int) -> torch.Tensor:
    """Each value rounded to the nearest of 2**bits levels."""
    levels = 2**bits - 1
    return torch.round(x * levels) / levels
