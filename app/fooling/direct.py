"""Direct encoding: the genome is the image itself, one number per pixel and channel."""

from __future__ import annotations

import math

import torch

from app.fooling.color import COLORS, to_rgb


def polynomial_mutation(x: torch.Tensor, rate: float, eta: float, gen: torch.Generator) -> torch.Tensor:
    """Deb's polynomial mutation as in the paper's Sferes code: each gene, independently with
    probability ``rate``, moves by a delta in [-1, 1] (on the [0, 1] scale) drawn with
    distribution index ``eta``, then is clipped to [0, 1]."""
    out = x.flatten().clone()
    n = out.numel()
    if rate <= 0 or n == 0:
        return out.view_as(x)
    # Draw the hit genes directly instead of one random number per gene (4x faster): a
    # Poisson(-n ln(1 - rate)) number of uniform picks hits each gene independently with
    # probability exactly ``rate``; duplicates are merged so the result is deterministic.
    lam = torch.tensor([-n * math.log1p(-min(rate, 1 - 1e-9))], device=x.device)
    k = int(torch.poisson(lam, generator=gen))
    hit = torch.zeros(n, dtype=torch.bool, device=x.device)
    hit[torch.randint(n, (k,), generator=gen, device=x.device)] = True
    idx = hit.nonzero().squeeze(1)
    u = torch.rand(len(idx), generator=gen, device=x.device)
    e = 1.0 / (eta + 1.0)
    delta = torch.where(u < 0.5, (2 * u).pow(e) - 1, 1 - (2 * (1 - u)).pow(e))
    out[idx] = (out[idx] + delta).clamp_(0, 1)
    return out.view_as(x)


CROSS_RATE = 0.5  # the paper's code: a pair of parents is crossed with this probability ...
ETA_C = 10.0  # ... by SBX with this distribution index


def sbx(a: torch.Tensor, b: torch.Tensor, gen: torch.Generator, eta: float = ETA_C) -> torch.Tensor:
    """Deb's simulated binary crossover, bounded to [0, 1], as in the paper's Sferes code
    (gen/evo_float_image.hpp): for each row, one of the two children of parents a[i] and b[i].
    Every gene where the parents differ is crossed; the two children's genes are swapped with
    probability 1/2, so the child kept is either one. Where they are equal the gene is kept (the
    code leaves such a gene at its fresh child's 0.5, a quirk not copied: see docs/paper.md)."""
    y1, y2 = torch.minimum(a, b), torch.maximum(a, b)
    gap = (y2 - y1).clamp_min(1e-14)
    u = torch.rand(a.shape, generator=gen, device=a.device)
    e = 1.0 / (eta + 1.0)

    def spread(beta: torch.Tensor) -> torch.Tensor:
        alpha = 2.0 - beta.pow(-(eta + 1.0))
        return torch.where(u <= 1.0 / alpha, (u * alpha).pow(e), (1.0 / (2.0 - u * alpha)).pow(e))

    c1 = (0.5 * ((y1 + y2) - spread(1.0 + 2.0 * y1 / gap) * gap)).clamp(0, 1)
    c2 = (0.5 * ((y1 + y2) + spread(1.0 + 2.0 * (1.0 - y2) / gap) * gap)).clamp(0, 1)
    swap = torch.rand(a.shape, generator=gen, device=a.device) < 0.5
    return torch.where((a - b).abs() > 1e-14, torch.where(swap, c2, c1), a)


class DirectEncoding:
    """Genomes are (N, C, H, W) genes in [0, 1]: the image itself, read as ``color`` (rgb, hsv or hls)
    where it has three channels."""

    name = "direct"

    def __init__(self, shape: tuple[int, int, int], device, eta: float = 15.0, color: str = "rgb") -> None:
        if color not in COLORS:
            raise ValueError(f"color must be one of {', '.join(COLORS)}, not {color!r}")
        self.shape, self.device, self.eta, self.color = shape, device, eta, color

    def init(self, n: int, gen: torch.Generator) -> torch.Tensor:
        return torch.rand((n, *self.shape), generator=gen, device=self.device)

    def mutate(self, genomes: torch.Tensor, gen: torch.Generator, rate: float) -> torch.Tensor:
        return polynomial_mutation(genomes, rate, self.eta, gen)

    def crossover(self, genomes: torch.Tensor, partners: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """Row i crossed with partners[i] (SBX) with probability CROSS_RATE, else row i as it was."""
        rows = (torch.rand(len(genomes), generator=gen, device=genomes.device) < CROSS_RATE).nonzero().squeeze(1)
        out = genomes.clone()
        if len(rows):
            out[rows] = sbx(genomes[rows], partners[rows], gen)
        return out

    def render(self, genomes: torch.Tensor) -> torch.Tensor:
        return to_rgb(genomes, self.color)

    @staticmethod
    def take(genomes: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        return genomes[idx]

    @staticmethod
    def put(genomes: torch.Tensor, idx: torch.Tensor, new: torch.Tensor, new_idx: torch.Tensor) -> None:
        genomes[idx] = new[new_idx]

    @staticmethod
    def select(parents: torch.Tensor, children: torch.Tensor, rows: torch.Tensor,
               from_children: torch.Tensor) -> torch.Tensor:
        """Survivors: row i is children[rows[i]] where from_children[i], else parents[rows[i]]."""
        mask = from_children.view(-1, *([1] * (parents.ndim - 1)))
        return torch.where(mask, children[rows], parents[rows])
