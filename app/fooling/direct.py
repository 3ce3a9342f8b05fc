"""Direct encoding: the genome is the image itself, one number per pixel and channel."""

from __future__ import annotations

import math

import torch


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


class DirectEncoding:
    """Genomes are (N, C, H, W) images on the 8-bit grid."""

    name = "direct"

    def __init__(self, shape: tuple[int, int, int], device, eta: float = 15.0) -> None:
        self.shape, self.device, self.eta = shape, device, eta

    def init(self, n: int, gen: torch.Generator) -> torch.Tensor:
        return torch.rand((n, *self.shape), generator=gen, device=self.device)

    def mutate(self, genomes: torch.Tensor, gen: torch.Generator, rate: float) -> torch.Tensor:
        return polynomial_mutation(genomes, rate, self.eta, gen)

    def render(self, genomes: torch.Tensor) -> torch.Tensor:
        return genomes

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
