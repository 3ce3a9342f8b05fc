"""Scoring with the Ray backend: /api/v1/score and /api/v1/score/tensor batch on the engines.

Requests are gathered here exactly as on one machine (the same Batcher, announced uploads and
all); each gathered batch then goes to the least-busy engine holding the model, which runs it
through its own batcher (so several API threads' batches share a forward pass) between its jobs'
passes, on the models it already holds. When no engine answers within seconds (one is restarting,
its node is gone), the batch runs here instead, on this process's own copy of the model: slower
on a CPU-only API node, but answered.

Why the engines rather than a Ray Serve deployment with @serve.batch: the engines already hold
every model on every GPU, and a Serve replica would hold a second copy and contend with the
engine for the same device; Serve's batching is what Batcher does here already; and Serve's
controller and HTTP proxies are processes this app, which serves its own HTTP, has no use for.
"""

from __future__ import annotations

import asyncio
import logging

import numpy as np
import torch

from app.jobs.ray.pool import EnginePool
from app.serving import compute
from app.serving.batching import Batcher
from app.serving.lab import Lab
from app.serving.scoring import Scorer

log = logging.getLogger(__name__)

SCORE_TIMEOUT_S = 120.0  # the longest a busy engine is waited for (a silent one is given up on in seconds)


class EngineScorer(Scorer):
    def __init__(self, lab: Lab, pool: EnginePool) -> None:
        s = lab.settings
        super().__init__(lab.registry, s.batching, s.batch_max_size, s.batch_max_wait_ms)
        self.pool = pool

    def _on_engines(self, model_id: str, method: str, *args):
        """The answer of the least-busy engine holding the model, trying the next on failure;
        None when none answers."""
        for _ in range(len(self.pool)):
            placed = self.pool.take(model_id)
            if placed is None:
                break
            index, engine = placed
            try:
                return self.pool.answer(index, getattr(engine, method).remote(model_id, *args), SCORE_TIMEOUT_S)
            except Exception as exc:
                log.warning("scoring on engine-%d failed (%s); trying elsewhere", index, exc)
                self.pool.down(index)
            finally:
                self.pool.release(index)
        return None

    def _forward_many(self, model_id: str, xs: list[torch.Tensor]) -> torch.Tensor:
        x = xs[0] if len(xs) == 1 else torch.cat(xs)
        out = self._on_engines(model_id, "score", x.numpy())
        if out is None:
            return compute.run(super()._forward_many, model_id, [x])
        return torch.from_numpy(np.array(out))  # a writable copy of Ray's read-only buffer

    def batcher(self, model_id: str) -> Batcher:
        """As on one machine, but a gathered batch waits on an engine, not on this process's compute
        thread, and one batch per engine can be out at once."""
        self.registry.model(model_id)
        with self._lock:
            b = self._batchers.get(model_id)
            if b is None:
                b = Batcher(lambda xs: self._forward_many(model_id, xs), self.max_batch, self.max_wait_s, model_id,
                            lanes=len(self.pool))
                self._batchers[model_id] = b
            return b

    async def probabilities(self, model_id: str, x: torch.Tensor, token: list[bool] | None = None) -> torch.Tensor:
        if not self.batching:
            return await asyncio.to_thread(self._forward_many, model_id, [x])
        return await super().probabilities(model_id, x, token)

    def _top(self, model_id: str, x: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        return Scorer._forward_many(self, model_id, [x]).topk(k, dim=1)  # the fallback: here, on the compute thread

    async def top_in_chunks(self, model_id: str, rows, chunk: int, to_input, k: int) -> tuple[list, list]:
        """The rows go to the engines a chunk at a time, up to one chunk per engine at once (memory:
        that many chunks in flight); a chunk no engine takes is scored here."""
        parts = [rows[i : i + chunk] for i in range(0, len(rows), chunk)]
        values, indices = [], []
        for w in range(0, len(parts), max(1, len(self.pool))):
            window = parts[w : w + max(1, len(self.pool))]
            calls = (asyncio.to_thread(self._on_engines, model_id, "top", np.ascontiguousarray(p), k) for p in window)
            for part, got in zip(window, await asyncio.gather(*calls), strict=True):
                if got is None:
                    got = await super().top_in_chunks(model_id, part, len(part), to_input, k)
                values += got[0]
                indices += got[1]
        return values, indices
