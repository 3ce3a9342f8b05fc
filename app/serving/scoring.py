"""Scoring: softmax probabilities for a batch of images, through each model's batcher."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import torch

from app.models.defences import is_defended
from app.models.registry import Registry
from app.serving import compute
from app.serving.batching import Batcher


def top_k(probs: torch.Tensor, labels: list[str], k: int) -> list[dict]:
    """One image's probabilities -> its k most likely classes as {index, label, confidence}."""
    values, indices = probs.topk(min(k, probs.shape[-1]))
    return [{"index": int(i), "label": labels[int(i)], "confidence": float(v)}
            for v, i in zip(values, indices, strict=True)]


JOB_MAX_BATCH = 4096  # images per shared forward pass for jobs (chunked further by a model's limit)
JOB_MAX_WAIT_S = 0.02  # how long a round waits for a busy job before going without it


class Scorer:
    def __init__(self, registry: Registry, batching: bool, max_batch: int, max_wait_ms: float) -> None:
        self.registry = registry
        self.batching = batching
        self.max_batch = max_batch
        self.max_wait_s = max_wait_ms / 1000.0
        self._batchers: dict[str, Batcher] = {}
        self._job_batchers: dict[str, Batcher] = {}
        self._lock = threading.Lock()

    def forward(self, model_id: str, x: torch.Tensor) -> torch.Tensor:
        """One forward pass on the calling thread: (N, C, H, W) in [0, 1] -> (N, K) probabilities
        on the CPU. Callers other than the compute thread go through compute.run()."""
        model = self.registry.forward_model(model_id)  # ONNX Runtime where the runtime chose it
        with torch.inference_mode():
            logits = model(x.to(self.registry.device, non_blocking=True))
            return torch.softmax(logits.float(), dim=-1).cpu()

    def _limit(self, model_id: str) -> int | None:
        """The model's best batch size on this device kind, where it has one (EfficientNet on CPU in
        PyTorch: 2; ONNX Runtime splits large batches itself)."""
        entry = self.registry.get(model_id)
        if entry.forward is not None:
            return None
        return entry.batch_limit.get(self.registry.device.split(":")[0])

    def _forward_many(self, model_id: str, xs: list[torch.Tensor]) -> torch.Tensor:
        x = xs[0] if len(xs) == 1 else torch.cat(xs)
        limit = self._limit(model_id)
        if limit and len(x) > limit:  # a job's population: in the model's best batch size
            return torch.cat([self.forward(model_id, x[i : i + limit]) for i in range(0, len(x), limit)])
        return self.forward(model_id, x)

    def batcher(self, model_id: str) -> Batcher:
        """Scoring requests: small batches, short waits for announced requests."""
        self.registry.model(model_id)  # raises ModelUnavailable before a thread is made
        with self._lock:
            b = self._batchers.get(model_id)
            if b is None:
                limit = self._limit(model_id)
                b = Batcher(lambda xs: compute.run(self._forward_many, model_id, xs),
                            min(self.max_batch, limit or self.max_batch), self.max_wait_s, model_id)
                self._batchers[model_id] = b
            return b

    def job_batcher(self, model_id: str) -> Batcher | Unbatched:
        """Jobs' populations: what several jobs have ready goes through the model together (up to
        JOB_MAX_BATCH images). Running jobs are participants (Batcher.participant): a forward pass
        waits up to JOB_MAX_WAIT_S for the ones still preparing their population, never for paused
        or finished ones. A defended model's jobs go alone (a batcher is a thread for the server's
        life, and there may be many defended models)."""
        self.registry.model(model_id)
        if is_defended(model_id):
            return Unbatched(lambda x: compute.run(self._forward_many, model_id, [x]))
        with self._lock:
            b = self._job_batchers.get(model_id)
            if b is None:
                b = Batcher(lambda xs: compute.run(self._forward_many, model_id, xs), JOB_MAX_BATCH,
                            JOB_MAX_WAIT_S, f"jobs-{model_id}")
                self._job_batchers[model_id] = b
            return b

    async def probabilities(self, model_id: str, x: torch.Tensor, token: list[bool] | None = None) -> torch.Tensor:
        """For request handlers: never blocks the event loop. A defended model (MODEL+KIND) is not
        batched: there may be many of them, and a batcher is a thread that lives as long as the server."""
        if not self.batching or is_defended(model_id):
            return await asyncio.wrap_future(compute.submit(self.forward, model_id, x))
        return await asyncio.wrap_future(self.batcher(model_id).submit(x, token))

    def _top(self, model_id: str, x: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self._forward_many(model_id, [x]).topk(k, dim=1)

    async def top_in_chunks(self, model_id: str, rows, chunk: int, to_input, k: int) -> tuple[list, list]:
        """For large batches sent at once (POST /api/v1/score/tensor): the k best classes of every
        row as (confidences, indices) lists. ``chunk`` rows go through per forward pass, each its
        own turn on the compute thread (other requests and jobs go in between), converted by
        ``to_input`` just before (memory: one chunk of floats); top-k runs there too."""
        values, indices = [], []
        for i in range(0, len(rows), chunk):
            x = to_input(rows[i : i + chunk])
            v, ix = await asyncio.wrap_future(compute.submit(self._top, model_id, x, k))
            values += v.tolist()
            indices += ix.tolist()
        return values, indices

    @contextmanager
    def expecting(self, model_id: str) -> Iterator[list[bool] | None]:
        """Tell the model's batcher a request is on its way (see Batcher.expecting)."""
        if not self.batching or is_defended(model_id):
            yield None
            return
        with self.batcher(model_id).expecting() as token:
            yield token

    def stats(self) -> dict[str, dict[str, int]]:
        out = {k: {"batches": b.batches, "images": b.images} for k, b in self._batchers.items()}
        out |= {f"jobs:{k}": {"batches": b.batches, "images": b.images} for k, b in self._job_batchers.items()}
        return out

    def close(self) -> None:
        with self._lock:
            for b in (*self._batchers.values(), *self._job_batchers.values()):
                b.close()
            self._batchers.clear()
            self._job_batchers.clear()


class Unbatched:
    """What a job's worker takes from a Batcher (a participant that submits and waits), for models
    whose jobs are not batched together: each population is its own turn on the compute thread."""

    def __init__(self, forward) -> None:
        self.forward = forward

    @contextmanager
    def participant(self) -> Iterator[Unbatched]:
        yield self

    def submit(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward(x)

