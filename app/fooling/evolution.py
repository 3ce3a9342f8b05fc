"""Evolutionary fooling: MAP-Elites over all targets at once, and plain single-target evolution.

Both work with any encoding that offers init / mutate / render / take / put (direct pixels or
CPPNs). Every generation is one batched render and one batched forward pass.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch

from app.fooling.base import EliteArchive, ScoreFn, Snapshot, evaluate


@dataclass
class EvolutionParams:
    population: int = 200  # offspring per generation (the paper's code: 200 for MNIST, 400 ImageNet)
    generations: int = 1000
    mutation_rate: float = 0.1
    # The paper halves the per-gene rate every 1000 generations; its released code keeps it fixed.
    halve_every: int = 0  # 0: constant rate (the code); 1000: the paper's schedule
    stop_at: float | None = 0.9999  # stop once every target is at least this confident; None: never
    # MAP-Elites cells: "targets" (one per target class) or "all" (every class of the model, as in the
    # paper's runs: a lineage may pass through other classes on its way; only targets are reported)
    stepping_stones: str = "targets"
    # MAP-Elites parents: "uniform" over occupied cells (the paper), or "unfinished": only from cells
    # still below stop_at while there are any. Children still compete for every cell, finished ones
    # included; measured on LeNet, all ten digits at 99.99% take 2-3x fewer evaluations.
    parents: str = "unfinished"
    # "none" (this lab's default, and the paper's text) or "sbx": the paper's code also crosses direct-
    # encoded parents (simulated binary crossover, p 0.5, eta 10) before mutating. CPPNs have none.
    crossover: str = "none"
    seed: int = 0

    def rate_at(self, generation: int) -> float:
        if self.halve_every > 0:
            return self.mutation_rate * 0.5 ** (generation // self.halve_every)
        return self.mutation_rate


def check_crossover(params: EvolutionParams, encoding) -> None:
    if params.crossover not in ("none", "sbx"):
        raise ValueError("crossover must be none or sbx")
    if params.crossover == "sbx" and not hasattr(encoding, "crossover"):
        raise ValueError(f"crossover=sbx applies to the direct encoding (the paper's code crosses no CPPNs), "
                         f"not {encoding.name}")


def _generator(device, seed: int) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed)


def map_elites(score: ScoreFn, encoding, targets: list[int], num_classes: int,
               params: EvolutionParams) -> Iterator[Snapshot]:
    """MAP-Elites with one cell per target class, as in the paper's code: generation 0 is random;
    then parents are drawn uniformly (with replacement) from occupied cells (by default only those
    still below ``stop_at``), mutated, scored on all classes, and each child replaces the elite of
    every cell it beats."""
    device = encoding.device
    gen = _generator(device, params.seed)
    if params.stepping_stones not in ("targets", "all"):
        raise ValueError("stepping_stones must be targets or all")
    if params.parents not in ("unfinished", "uniform"):
        raise ValueError("parents must be unfinished or uniform")
    check_crossover(params, encoding)
    focus = params.parents == "unfinished" and params.stop_at is not None
    every = params.stepping_stones == "all"
    cells = list(range(num_classes)) if every else targets
    # Every class kept: images are stored on their 8-bit grid (what was scored), a quarter of float32.
    archive = EliteArchive(cells, encoding.shape, num_classes, device, dtype=torch.uint8 if every else None)
    report = torch.tensor(targets, device=device) if every else None  # the rows shown: the targets
    genomes = encoding.init(params.population, gen)
    elites = None
    evaluations = 0
    for step in range(params.generations + 1):
        if step > 0:
            pool = archive.occupied
            if focus:
                unfinished = pool & (archive.confidence < params.stop_at)
                pool = unfinished if bool(unfinished.any()) else pool
            occupied = pool.nonzero().squeeze(1)
            pick = occupied[torch.randint(len(occupied), (params.population,), generator=gen, device=device)]
            genomes = encoding.take(elites, pick)
            if params.crossover == "sbx":  # each with another elite from the same pool
                mate = occupied[torch.randint(len(occupied), (params.population,), generator=gen, device=device)]
                genomes = encoding.crossover(genomes, encoding.take(elites, mate), gen)
            genomes = encoding.mutate(genomes, gen, params.rate_at(step))
        images, probs = evaluate(score, encoding.render(genomes))
        evaluations += len(images)
        winners = archive.offer(images, probs)
        won = winners >= 0
        if elites is None:
            elites = encoding.take(genomes, winners.clamp_min(0))
        elif won.any():
            encoding.put(elites, won.nonzero().squeeze(1), genomes, winners[won])
        yield archive.snapshot(step, evaluations, rows=report, occupied=int(archive.occupied.sum()))
        shown = archive.confidence if report is None else archive.confidence[report]
        if params.stop_at is not None and bool((shown >= params.stop_at).all()):
            return


def evolve(score: ScoreFn, encoding, targets: list[int], num_classes: int,
           params: EvolutionParams) -> Iterator[Snapshot]:
    """Single-target evolution: an independent (mu + lambda) population per target, all targets
    scored together in one forward pass. Each generation every parent makes one child; the best
    ``population`` of parents and children survive (truncation selection)."""
    if params.stepping_stones != "targets":
        raise ValueError("stepping_stones applies to map-elites (evolve keeps one population per target)")
    check_crossover(params, encoding)
    device = encoding.device
    gen = _generator(device, params.seed)
    n_t, pop = len(targets), params.population
    tgt = torch.tensor(targets, device=device)
    archive = EliteArchive(targets, encoding.shape, num_classes, device)
    genomes = encoding.init(n_t * pop, gen)  # target-major: rows [t*pop, (t+1)*pop) belong to target t
    images, probs = evaluate(score, encoding.render(genomes))
    fitness = probs.view(n_t, pop, -1).gather(2, tgt.view(n_t, 1, 1).expand(n_t, pop, 1)).squeeze(2)
    evaluations = len(images)
    offset = torch.arange(n_t, device=device) * pop  # first row of each target's population
    archive.offer_own(images, probs, fitness.argmax(1) + offset)
    yield archive.snapshot(0, evaluations)
    for step in range(1, params.generations + 1):
        parents = genomes
        if params.crossover == "sbx":  # each with another member of its own target's population
            mate = torch.randint(pop, (n_t, pop), generator=gen, device=device) + offset[:, None]
            parents = encoding.crossover(genomes, encoding.take(genomes, mate.flatten()), gen)
        children = encoding.mutate(parents, gen, params.rate_at(step))
        c_images, c_probs = evaluate(score, encoding.render(children))
        evaluations += len(c_images)
        c_fit = c_probs.view(n_t, pop, -1).gather(2, tgt.view(n_t, 1, 1).expand(n_t, pop, 1)).squeeze(2)
        both = torch.cat([fitness, c_fit], 1)  # (T, 2*pop)
        fitness, keep = both.topk(pop, dim=1)
        from_children = keep >= pop
        src = torch.where(from_children, keep - pop, keep) + offset[:, None]  # row within its own pool
        genomes = encoding.select(genomes, children, src.flatten(), from_children.flatten())
        archive.offer_own(c_images, c_probs, c_fit.argmax(1) + offset)
        yield archive.snapshot(step, evaluations)
        if params.stop_at is not None and bool((archive.confidence >= params.stop_at).all()):
            return
