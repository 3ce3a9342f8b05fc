"""The honest baseline: how confident is the network on random images?

Random images are often said to get low confidence. We measure it: batches of uniform noise (or
random CPPNs) are scored, the archive keeps the best per target, and ``extra`` reports the
distribution (median top confidence, which class wins how often) so a LeNet that calls most
noise "8" shows it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator

import torch

from app.fooling.base import EliteArchive, ScoreFn, Snapshot, evaluate
from app.serving.imaging import quantize


def random_images(score: ScoreFn, encoding, targets: list[int], num_classes: int, batches: int = 10,
                  batch_size: int = 1000, seed: int = 0) -> Iterator[Snapshot]:
    gen = torch.Generator(device=encoding.device).manual_seed(seed)
    archive = EliteArchive(targets, encoding.shape, num_classes, encoding.device)
    wins = torch.zeros(num_classes, dtype=torch.long)
    tops: list[torch.Tensor] = []
    for step in range(1, batches + 1):
        images, probs = evaluate(score, encoding.render(encoding.init(batch_size, gen)))
        archive.offer(images, probs)
        top, arg = probs.max(1)
        tops.append(top.cpu())
        wins += torch.bincount(arg.cpu(), minlength=num_classes)
        allt = torch.cat(tops)
        yield archive.snapshot(
            step, step * batch_size,
            median_top_confidence=float(allt.median()),
            share_top_over_99=float((allt >= 0.99).float().mean()),
            most_common_class=int(wins.argmax()),
            most_common_share=float(wins.max() / wins.sum()),
            class_shares=(wins.float() / wins.sum()).tolist(),
        )


NOISE_SEED = 0


def noise_count(shape: tuple[int, int, int]) -> int:
    """Random images per model for its noise baseline: 1000 at MNIST size (milliseconds), 100 at
    ImageNet size (about 3 s on a 2-core CPU)."""
    return 1000 if shape[1] * shape[2] <= 64 * 64 else 100


def noise_images(shape: tuple[int, int, int], n: int | None = None, seed: int = NOISE_SEED) -> torch.Tensor:
    """Uniform noise on the 8-bit grid (what a PNG stores): the direct encoding's generation 0."""
    n = noise_count(shape) if n is None else n
    return quantize(torch.rand((n, *shape), generator=torch.Generator().manual_seed(seed)))


def noise_summary(probs: torch.Tensor, labels: list[str], seed: int = NOISE_SEED) -> dict:
    """What the network says of random images: their top-1 confidence (median, 95th percentile) and
    the label it gives most often, with its share. One might expect random images to get low confidence;
    this measures it per model (a LeNet calls most noise one digit, confidently)."""
    top, arg = probs.max(1)
    wins = torch.bincount(arg, minlength=len(labels))
    return {"n": len(probs), "median": round(float(top.median()), 6),
            "p95": round(float(torch.quantile(top.double(), 0.95)), 6),
            "top_label": labels[int(wins.argmax())], "top_label_share": round(float(wins.max()) / len(probs), 4),
            "images": "uniform noise on the 8-bit grid", "seed": seed}


class NoiseBaselines:
    """Each model's noise baseline, measured on first request through the server's own scoring
    (the forward passes that jobs and /score use), then kept for the life of the process. One
    measurement per model at a time; its ids come from the registry, so the cache is bounded."""

    CHUNK = 50  # images per scoring request
    MOST = 256  # baselines kept: models, and the defended ones asked about (the oldest go first)

    def __init__(self) -> None:
        self._done: dict[str, dict] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    def known(self, model_id: str) -> dict | None:
        return self._done.get(model_id)

    async def get(self, model_id: str, shape: tuple[int, int, int], labels: list[str],
                  probabilities: Callable[[str, torch.Tensor], Awaitable[torch.Tensor]]) -> dict:
        if model_id in self._done:
            return self._done[model_id]
        async with self._locks.setdefault(model_id, asyncio.Lock()):
            if model_id not in self._done:
                x = noise_images(shape)
                probs = [await probabilities(model_id, x[i:i + self.CHUNK]) for i in range(0, len(x), self.CHUNK)]
                self._done[model_id] = noise_summary(torch.cat(probs).cpu(), labels)
                while len(self._done) > self.MOST:
                    oldest = next(iter(self._done))
                    self._done.pop(oldest)
                    self._locks.pop(oldest, None)
        return self._done[model_id]
