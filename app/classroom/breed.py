"""Breeding by hand, Picbreeder-style, on the CPPN encoding.

A lineage is a seed and a list of steps; each step names the images chosen as parents (by a person,
or by the network: its most confident images). The chosen images stay; every other place is a
mutated child of one of them. Genomes are never stored: replaying the steps from the seed gives the
same images, so a lineage is a few bytes in the database and a link anyone can open.
"""

from __future__ import annotations

from dataclasses import fields

import torch

from app.cache import LRU
from app.fooling.cppn import CppnEncoding, CppnGenomes
from app.serving.imaging import quantize

SIZES = (9, 12, 16)  # 3x3, 3x4 (the default) and 4x4 grids
DEFAULT_SIZE = 12
NETWORK_PICKS = 3  # how many images the network keeps when it chooses
WARM_UP = 3  # mutations of generation 0, so the first grid is not ten plain gradients


def _gen(seed: int, step: int) -> torch.Generator:
    # One stream per (seed, step): a step's children do not depend on how earlier steps drew.
    return torch.Generator().manual_seed(seed * 100_003 + step)


def _cat(a: CppnGenomes, b: CppnGenomes) -> CppnGenomes:
    return CppnGenomes(**{f.name: torch.cat([getattr(a, f.name), getattr(b, f.name)]) for f in fields(a)})


def encoding_for(input_shape: tuple[int, int, int]) -> CppnEncoding:
    return CppnEncoding(input_shape, "cpu")


def first(enc: CppnEncoding, size: int, seed: int) -> CppnGenomes:
    gen = _gen(seed, 0)
    g = enc.init(size, gen)
    for _ in range(WARM_UP):
        g = enc.mutate(g, gen)
    return g


def breed(enc: CppnEncoding, g: CppnGenomes, picks: list[int], seed: int, step: int) -> CppnGenomes:
    """The next generation: the picked images first, unchanged, then children of random picks."""
    if not picks or any(not 0 <= p < len(g) for p in picks):
        raise ValueError(f"picks must be positions 0..{len(g) - 1}")
    gen = _gen(seed, step)
    keep = torch.tensor(sorted(set(picks)))
    parents = keep[torch.randint(len(keep), (len(g) - len(keep),), generator=gen)]
    children = enc.mutate(enc.take(g, parents), gen)
    return _cat(enc.take(g, keep), children)


def replay(enc: CppnEncoding, seed: int, size: int, steps: list[dict]) -> CppnGenomes:
    """The genomes after ``steps`` (each {"picks": [...], "by": "person" | "network"})."""
    g = first(enc, size, seed)
    for i, step in enumerate(steps, start=1):
        g = breed(enc, g, step["picks"], seed, i)
    return g


def render(enc: CppnEncoding, g: CppnGenomes) -> torch.Tensor:
    """Images on the 8-bit grid: what is shown, downloaded and scored."""
    return quantize(enc.render(g))


def network_picks(probs: torch.Tensor, k: int = NETWORK_PICKS) -> list[int]:
    """The network's choice: its k most confident images (top-1 probability), best first."""
    return probs.max(1).values.topk(min(k, len(probs))).indices.tolist()


MAX_GENERATIONS = 500  # steps one lineage may take (replaying it from its seed stays cheap)


class Lineages:
    """Genomes and images of recently seen lineage generations, kept so that a step does not replay
    the whole lineage and a page's images are rendered once; a miss replays the lineage from its
    seed (the same images, by construction). Shared by request threads: the cache has a lock."""

    def __init__(self, size: int = 128) -> None:
        self._cache: LRU[object] = LRU(size)
        self._get, self._put = self._cache.get, self._cache.put

    def genomes(self, shape: tuple[int, int, int], lineage: dict, generation: int) -> CppnGenomes:
        key = ("genomes", lineage["id"], tuple(shape), generation)
        g = self._get(key)
        if g is None:
            enc, steps = encoding_for(shape), lineage["steps"][:generation]
            prev = self._get(("genomes", lineage["id"], tuple(shape), generation - 1)) if generation > 0 else None
            if prev is not None:  # one step on from the generation before
                g = breed(enc, prev, steps[-1]["picks"], lineage["seed"], generation)
            else:
                g = replay(enc, lineage["seed"], lineage["size"], steps)
            self._put(key, g)
        return g

    def images(self, shape: tuple[int, int, int], lineage: dict, generation: int) -> torch.Tensor:
        key = ("images", lineage["id"], tuple(shape), generation)
        out = self._get(key)
        if out is None:
            out = render(encoding_for(shape), self.genomes(shape, lineage, generation))
            self._put(key, out)
        return out

    def cached_images(self, shape: tuple[int, int, int], lineage: dict, generation: int) -> torch.Tensor | None:
        """The generation's images if they were rendered lately (a page's image requests then cost nothing)."""
        return self._get(("images", lineage["id"], tuple(shape), generation))
