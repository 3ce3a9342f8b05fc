"""A CPPN as a differentiable image parameterisation (as in lucent's CPPN param), for gradient
ascent with ``--encoding cppn``: the weights of one small network per target are optimised by
gradient, and the image is whatever that network draws over the coordinate grid.

Because every pixel comes from the same smooth function of (x, y, d), the optimiser can only make
regular, repeated patterns: the look of the paper's evolved CPPN images, reached in seconds.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from app.fooling.color import hls_to_rgb
from app.fooling.cppn import _FUNCS, coordinates


class CppnImage(nn.Module):
    """``n`` independent CPPNs with ``layers`` hidden layers of ``width`` units each. Each hidden
    unit gets one of the paper's four activation functions, drawn once from the seed."""

    def __init__(self, n: int, shape: tuple[int, int, int], width: int = 16, layers: int = 6,
                 seed: int = 0, device="cpu", coord_scale: float = 8.0) -> None:
        super().__init__()
        channels, h, w = shape
        if channels not in (1, 3):
            raise ValueError(f"CPPN images need 1 or 3 channels, not {channels}")
        self.shape, self.n = shape, n
        gen = torch.Generator().manual_seed(seed)
        coords = coordinates(h, w, "cpu")
        coords[:2] *= coord_scale
        self.register_buffer("coords", coords.T.contiguous().to(device))  # (P, 4)
        sizes = [coords.shape[0], *([width] * layers), channels]
        self.weights = nn.ParameterList()
        for fan_in, fan_out in zip(sizes[:-1], sizes[1:], strict=True):
            # variance-preserving start, wide enough that sine units produce several periods
            w0 = torch.randn((n, fan_in, fan_out), generator=gen) * (2.0 / math.sqrt(fan_in))
            self.weights.append(nn.Parameter(w0.to(device)))
        acts = torch.randint(len(_FUNCS), (layers, width), generator=gen)
        # per layer: for each function, which units use it (grouped so each unit pays for one)
        self._groups = [[(acts[i] == k).nonzero().squeeze(1).to(device) for k in range(len(_FUNCS))]
                        for i in range(layers)]

    def forward(self) -> torch.Tensor:
        x = self.coords.expand(self.n, *self.coords.shape)  # (n, P, 4)
        for i, w in enumerate(self.weights[:-1]):
            pre = x @ w
            x = torch.cat([_FUNCS[k](pre[..., idx]) for k, idx in enumerate(self._groups[i]) if len(idx)], -1)
        # the concatenation reorders units; the next layer's weights are learned, so order is moot
        out = torch.sigmoid(x @ self.weights[-1])  # (n, P, C) in (0, 1)
        c, h, w = self.shape
        out = out.transpose(1, 2).reshape(self.n, c, h, w)
        if c == 1:
            return out
        return hls_to_rgb(out[:, 0], out[:, 1], out[:, 2])
