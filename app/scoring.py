"""Scoring: softmax probabilities for a batch of images, through each model's batcher."""

from __future__ import annotations

import asyncio
import threading

import torch
from starlette.concurrency import run_in_threadpool

from app.batching import Batcher
from app.models.registry import Registry


class Scorer:
    def __init__(self, registry: Registry, batching: bool, max_batch: int, max_wait_ms: float) -> None:
        self.registry = registry
        self.batching = batching
        self.max_batch = max_batch
        self.max_wait_s = max_wait_ms / 1000.0
        self._batchers: dict[str, Batcher] = {}
        self._lock = threading.Lock()

    def forward(self, model_id: str, x: torch.Tensor) -> torch.Tensor:
        """One forward pass, no batching: (N, C, H, W) in [0, 1] -> (N, K) probabilities on CPU."""
        model = self.registry.model(model_id)
        with torch.inference_mode():
            logits = model(x.to(self.registry.device, non_blocking=True))
            return torch.softmax(logits.float(), dim=-1).cpu()

    def batcher(self, model_id: str) -> Batcher:
        self.registry.model(model_id)  # raises ModelUnavailable before a thread is made
        with self._lock:
            b = self._batchers.get(model_id)
            if b is None:
                b = Batcher(lambda x: self.forward(model_id, x), self.max_batch, self.max_wait_s, model_id)
                self._batchers[model_id] = b
            return b

    def probabilities_sync(self, model_id: str, x: torch.Tensor) -> torch.Tensor:
        """For worker threads: coalesced with every other caller of the same model."""
        if not self.batching:
            return self.forward(model_id, x)
        return self.batcher(model_id).submit(x).result()

    async def probabilities(self, model_id: str, x: torch.Tensor) -> torch.Tensor:
        """For request handlers: never blocks the event loop."""
        if not self.batching:
            return await run_in_threadpool(self.forward, model_id, x)
        return await asyncio.wrap_future(self.batcher(model_id).submit(x))

    def stats(self) -> dict[str, dict[str, int]]:
        return {k: {"batches": b.batches, "images": b.images} for k, b in self._batchers.items()}

    def close(self) -> None:
        with self._lock:
            for b in self._batchers.values():
                b.close()
            self._batchers.clear()
