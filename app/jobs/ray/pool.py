"""The server's view of the engines: which models each holds, whether it answers, how busy it is."""

from __future__ import annotations

import contextlib
import logging
import threading
import time

from app.models.defences import base_of

log = logging.getLogger(__name__)


class EnginePool:
    """The API process's view of the engines: which models each holds and whether it answers,
    refreshed in the background (every REFRESH_S), so placing a job or a scoring batch costs no
    round trip, and an engine that stops answering is left out within seconds."""

    REFRESH_S = 1.0
    ANSWER_S = 2.0  # an engine that does not answer info() in this long counts as down

    def __init__(self, engines: list) -> None:
        self.engines = engines
        self._info: list[dict | None] = [None] * len(engines)
        self._load = [0] * len(engines)  # this process's jobs and scoring calls on each engine
        self._seen = [time.monotonic()] * len(engines)  # when each last answered
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._refresh_loop, name="ray-engine-pool", daemon=True)
        self._thread.start()

    def __len__(self) -> int:
        return len(self.engines)

    def refresh(self) -> None:
        import ray

        refs = [e.info.remote() for e in self.engines]
        ready, _ = ray.wait(refs, num_returns=len(refs), timeout=self.ANSWER_S)
        answered = set(ready)
        info: list[dict | None] = []
        for ref in refs:
            try:
                info.append(ray.get(ref, timeout=0) if ref in answered else None)
            except Exception:  # it died just now
                info.append(None)
        now = time.monotonic()
        with self._lock:
            self._info = info
            self._seen = [now if i is not None else seen for i, seen in zip(info, self._seen, strict=True)]

    def _refresh_loop(self) -> None:
        while not self._closed.wait(self.REFRESH_S):
            try:
                self.refresh()
            except Exception as exc:  # Ray shutting down under us
                log.debug("engine refresh failed: %s", exc)

    def alive(self, index: int) -> bool:
        with self._lock:
            return self._info[index] is not None

    def describe(self) -> list[dict]:
        """For GET /readyz: each engine as it last answered (or that it does not)."""
        with self._lock:
            return [{"name": f"engine-{n}", "alive": i is not None, **(i or {})} for n, i in enumerate(self._info)]

    def silent_for(self, index: int) -> float:
        """Seconds since the engine last answered a refresh (0 while it answers)."""
        with self._lock:
            return 0.0 if self._info[index] is not None else time.monotonic() - self._seen[index]

    def down(self, index: int) -> None:
        """A call to it failed: leave it out until it answers a refresh again."""
        with self._lock:
            self._info[index] = None

    def take(self, model_id: str) -> tuple[int, object] | None:
        """The least-loaded engine that answers and holds the model (by its jobs, or this process's
        jobs and calls on it where that is more), counted one busier at once, under the same lock,
        so jobs placed at the same moment go to different engines. release() it after."""
        held = base_of(model_id)  # a defended model is built by the engine that holds its network
        with self._lock:
            ranked = sorted((max(i["jobs"], self._load[n]), n) for n, i in enumerate(self._info)
                            if i is not None and held in i["models"])
            if not ranked:
                return None
            n = ranked[0][1]
            self._load[n] += 1
        return n, self.engines[n]

    def release(self, index: int) -> None:
        with self._lock:
            self._load[index] -= 1

    def answer(self, index: int, ref, limit_s: float):
        """ray.get of a call made on engine ``index``, given up as soon as the engine stops answering
        (a busy engine is waited for, up to limit_s; a dead one costs a few seconds, not the limit)."""
        import ray

        deadline = time.monotonic() + limit_s
        while True:
            ready, _ = ray.wait([ref], timeout=min(1.0, max(0.01, deadline - time.monotonic())))
            if ready:
                return ray.get(ref)
            if not self.alive(index) or time.monotonic() > deadline:
                with contextlib.suppress(Exception):  # already gone with its actor
                    ray.cancel(ref)
                raise TimeoutError(f"engine-{index} did not answer")

    def close(self) -> None:
        self._closed.set()
