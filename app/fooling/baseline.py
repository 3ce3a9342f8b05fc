"""The honest baseline: how confident is the network on random images?

The paper says random images get low confidence. We measure it: batches of uniform noise (or
random CPPNs) are scored, the archive keeps the best per target, and ``extra`` reports the
distribution (median top confidence, which class wins how often) so a LeNet that calls most
noise "8" shows it.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from app.fooling.base import EliteArchive, ScoreFn, Snapshot, evaluate


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
