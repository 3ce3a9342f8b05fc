"""What every experiment shares: its context (seed, size, output folder, models) and plotting."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from app.fooling.base import SUCCESS, model_score_fn
from app.fooling.direct import DirectEncoding
from app.fooling.evolution import EvolutionParams, map_elites
from app.models.registry import Registry
from app.settings import Settings


@dataclass
class Context:
    seed: int
    quick: bool
    out: Path
    settings: Settings = field(default_factory=Settings.from_env)
    _registry: Registry | None = None

    @property
    def registry(self) -> Registry:
        if self._registry is None:
            self._registry = Registry(self.settings)
        return self._registry

    def model(self, model_id: str) -> torch.nn.Module:
        entry = self.registry.load(model_id)
        if not entry.available:
            raise RuntimeError(f"{model_id} is not available: {entry.reason}")
        return self.registry.model(model_id)

    def log(self, message: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def evolve_fooling(model: torch.nn.Module, targets: list[int], seed: int, generations: int,
                   population: int = 100, shape: tuple[int, int, int] = (1, 28, 28)) -> tuple[torch.Tensor, dict]:
    """Direct-encoding MAP-Elites against ``model``; returns (best images, numbers)."""
    snap, reached = None, None
    t0 = time.perf_counter()
    for snap in map_elites(model_score_fn(model), DirectEncoding(shape, "cpu"), targets, 10,
                           EvolutionParams(population=population, generations=generations, seed=seed)):
        if reached is None and bool((snap.confidence >= SUCCESS).all()):
            reached = snap.evaluations
    return snap.images, {"confidence": snap.confidence.tolist(), "evaluations": snap.evaluations,
                         "evaluations_to_all_9999": reached, "seconds": round(time.perf_counter() - t0, 2),
                         "at_9999": int((snap.confidence >= SUCCESS).sum())}


def plot(path: Path, title: str, xlabel: str, ylabel: str, series: dict[str, tuple[list, list]],
         logx: bool = False, ylim: tuple[float, float] | None = (0, 1.02)) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4), dpi=110)
    for name, (xs, ys) in series.items():
        ax.plot(xs, ys, marker="o", label=name)
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if logx:
        ax.set_xscale("log")
    if ylim:
        ax.set_ylim(*ylim)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path.name


def bars(path: Path, title: str, ylabel: str, values: dict[str, float], logy: bool = False) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4), dpi=110)
    colours = ["#ffb000", "#5fd38d", "#6aa7ff", "#ff7a59"]
    ax.bar(list(values), [v or 0 for v in values.values()], color=colours[: len(values)])
    for i, v in enumerate(values.values()):
        ax.text(i, v or 0, "not reached" if v is None else f"{v:,.0f}", ha="center", va="bottom")
    ax.set_title(title)
    ax.set_ylabel(ylabel)
    if logy:
        ax.set_yscale("log")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path.name
