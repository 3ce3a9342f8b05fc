"""Dynamic batching: concurrent requests for one model share one forward pass.

A batcher owns one thread per model. Callers (async API handlers or worker threads) submit
a batch of images and get a concurrent Future for its softmax probabilities. The thread takes
what is queued, up to ``max_batch`` images (images, not requests), runs it and hands each
caller its rows. While one batch runs the next one gathers, so batches grow by themselves
under load (``lanes`` > 1: that many batches may be out at once, for a forward pass that waits
on other machines rather than on this one's cores). A caller may announce itself early
(``expecting()``, e.g. while its upload is still being decoded); only then does the thread
wait, up to ``max_wait``, for it to arrive. A lone request therefore never pays the wait.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager

import torch

# Takes the gathered requests' tensors and returns one row per image, in order.
Forward = Callable[[list[torch.Tensor]], torch.Tensor]


class Batcher:
    def __init__(self, forward: Forward, max_batch: int = 64, max_wait_s: float = 0.005, name: str = "",
                 lanes: int = 1) -> None:
        self.forward = forward
        self.max_batch = max(1, max_batch)
        self.max_wait_s = max(0.0, max_wait_s)
        self._queue: deque[tuple[torch.Tensor, Future]] = deque()
        self._cond = threading.Condition()
        self._closed = False
        self._expected = 0  # announced callers that have not submitted yet
        self.batches = 0  # forward passes run, for tests and the status page
        self.images = 0
        self._threads = [threading.Thread(target=self._run, name=f"batcher-{name}-{n}", daemon=True)
                         for n in range(max(1, lanes))]
        for t in self._threads:
            t.start()

    @contextmanager
    def expecting(self) -> Iterator[list[bool]]:
        """Announce a submit that is coming soon; pass the yielded token to submit()."""
        token = [True]
        with self._cond:
            self._expected += 1
        try:
            yield token
        finally:
            with self._cond:
                if token[0]:  # left without submitting (bad input): stop waiting for it
                    token[0] = False
                    self._expected -= 1
                    self._cond.notify_all()

    def submit(self, x: torch.Tensor, token: list[bool] | None = None) -> Future:
        """x: (N, C, H, W). Resolves to (N, classes) probabilities on the CPU."""
        fut: Future = Future()
        with self._cond:
            if self._closed:
                raise RuntimeError("batcher is closed")
            if token is not None and token[0]:
                token[0] = False
                self._expected -= 1
            self._queue.append((x, fut))
            self._cond.notify_all()
        return fut

    @contextmanager
    def participant(self) -> Iterator[Participant]:
        """For a caller that submits again and again (a job, one population per step): it counts
        as expected at all times except while its own request is queued or running, so each
        gather waits (up to max_wait) until every participant has its next request in. Running
        jobs thus move in rounds and share forward passes. Leave while idle (paused)."""
        p = Participant(self)
        p.join()
        try:
            yield p
        finally:
            p.leave()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        for t in self._threads:
            t.join(timeout=5)

    def _gather(self) -> list[tuple[torch.Tensor, Future]]:
        with self._cond:
            while not self._queue and not self._closed:
                self._cond.wait()
            if not self._queue:
                return []
            deadline = time.monotonic() + self.max_wait_s
            while self._expected > 0 and sum(len(x) for x, _ in self._queue) < self.max_batch:
                left = deadline - time.monotonic()
                if left <= 0 or self._closed:
                    break
                self._cond.wait(left)
            taken, n = [], 0
            while self._queue and (not taken or n + len(self._queue[0][0]) <= self.max_batch):
                x, fut = self._queue.popleft()
                taken.append((x, fut))
                n += len(x)
            return taken

    def _run(self) -> None:
        while True:
            taken = self._gather()
            if not taken:
                return
            live = [(x, f) for x, f in taken if f.set_running_or_notify_cancel()]
            if not live:
                continue
            try:
                out = self.forward([x for x, _ in live])
            except Exception as exc:  # one bad batch fails its callers, never the thread
                with self._cond:
                    for f in (f for _, f in live if getattr(f, "participant", None) is not None):
                        f.participant._expect()
                for _, f in live:
                    f.set_exception(exc)
                continue
            with self._cond:  # participants count as expected again before they hear back
                self.batches += 1
                self.images += len(out)
                for f in (f for _, f in live if getattr(f, "participant", None) is not None):
                    f.participant._expect()
            start = 0
            for x, f in live:
                f.set_result(out[start : start + len(x)])
                start += len(x)


class Participant:
    """A repeat caller of one Batcher (see Batcher.participant)."""

    def __init__(self, batcher: Batcher) -> None:
        self.batcher = batcher
        self.counted = False  # guarded by batcher._cond

    def _expect(self) -> None:  # caller holds batcher._cond
        if not self.counted:
            self.counted = True
            self.batcher._expected += 1

    def join(self) -> None:
        with self.batcher._cond:
            self._expect()

    def leave(self) -> None:
        with self.batcher._cond:
            if self.counted:
                self.counted = False
                self.batcher._expected -= 1
                self.batcher._cond.notify_all()

    def submit(self, x: torch.Tensor) -> torch.Tensor:
        """Queue x and wait for its probabilities."""
        b = self.batcher
        fut: Future = Future()
        fut.participant = self
        with b._cond:
            if b._closed:
                raise RuntimeError("batcher is closed")
            if self.counted:
                self.counted = False
                b._expected -= 1
            b._queue.append((x, fut))
            b._cond.notify_all()
        return fut.result()
