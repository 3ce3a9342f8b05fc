"""How three genes (or three CPPN outputs) per pixel become an RGB pixel.

The paper says HSV; its code reads both encodings' colour genes as OpenCV HLS on 8 bits, where a
hue byte counts 2 degrees, so int(gene * 255) spans 510 degrees and wraps (``hls8``). This lab's
direct encoding reads genes as RGB by default and its CPPNs as HLS with the hue over one turn
(``hls``); the ``color`` parameter picks any of the four for either encoding.
"""

from __future__ import annotations

import torch

COLORS = ("rgb", "hsv", "hls", "hls8")


def hls_to_rgb(h: torch.Tensor, lum: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """HLS -> RGB, all in [0, 1], stacked on a new dimension 1 (as OpenCV's HLS2RGB on floats)."""
    a = s * torch.minimum(lum, 1 - lum)
    chans = []
    for n in (0, 8, 4):
        k = (n + h * 12) % 12
        chans.append(lum - a * torch.clamp(torch.minimum(k - 3, 9 - k), -1, 1))
    return torch.stack(chans, 1)


def hsv_to_rgb(h: torch.Tensor, s: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """HSV -> RGB, all in [0, 1], stacked on a new dimension 1."""
    chans = []
    for n in (5, 3, 1):
        k = (n + h * 6) % 6
        chans.append(v - v * s * torch.clamp(torch.minimum(k, 4 - k), 0, 1))
    return torch.stack(chans, 1)


def to_rgb(x: torch.Tensor, color: str) -> torch.Tensor:
    """(N, 3, ...) values in ``color``'s channel order -> RGB. One-channel images pass unchanged:
    a grey value has no colour space."""
    if x.shape[1] == 1 or color == "rgb":
        return x
    if color == "hls":
        return hls_to_rgb(x[:, 0], x[:, 1], x[:, 2])
    if color == "hls8":  # the paper's code: int(gene * 255) as an 8-bit OpenCV hue, which counts 2 degrees
        hue = (torch.floor(x[:, 0] * 255) * 2 / 360) % 1.0  # a step: hues wrap past 360 (0-150 twice as often)
        return hls_to_rgb(hue, x[:, 1], x[:, 2])
    if color == "hsv":
        return hsv_to_rgb(x[:, 0], x[:, 1], x[:, 2])
    raise ValueError(f"color must be one of {', '.join(COLORS)}, not {color!r}")
