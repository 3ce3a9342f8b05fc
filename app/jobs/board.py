"""The live jobs of one process, and the one way a job ends.

The server's runner, whichever backend runs its jobs, and each Ray engine keep a Board. What a job
leaves when it ends is the Keeper's business: the server saves its files and record (``Saved`` in
results.py); an engine keeps its last snapshot for the server to fetch, and saves nothing.
"""

from __future__ import annotations

import logging
import threading
from typing import Protocol

from app.jobs.job import Job

log = logging.getLogger(__name__)


class Keeper(Protocol):
    def started(self, job: Job) -> None: ...  # a worker took the job

    def finished(self, job: Job, status: str) -> None: ...  # before the status flips: keep what is to be kept


class Board:
    KEEP_FINISHED = 64  # finished jobs stay a while, so late streams still see their final frame

    def __init__(self, keeper: Keeper) -> None:
        self.keeper = keeper
        self._jobs: dict[str, Job] = {}
        self.lock = threading.RLock()  # held by a caller that checks its limits, then adds
        self._closing = threading.Event()

    @property
    def closing(self) -> bool:
        return self._closing.is_set()

    def close(self) -> None:
        self._closing.set()

    def add(self, job: Job) -> None:
        """Under ``lock`` (the caller checks its limits under it too)."""
        self._jobs[job.id] = job

    def live(self, job_id: str) -> Job | None:
        with self.lock:
            return self._jobs.get(job_id)

    def active(self) -> list[Job]:
        with self.lock:
            return [j for j in self._jobs.values() if not j.finished]

    def forget(self, job_id: str) -> None:
        with self.lock:
            self._jobs.pop(job_id, None)

    def finish(self, job: Job, status: str) -> None:
        """End a job once: keep what it made, then flip its status (whoever sees a finished job finds
        its record), drop its tensors, and wake its streams."""
        with job.cond:
            if job.finished or job.finishing:
                return
            job.finishing = True
        try:
            self.keeper.finished(job, status)
        except Exception as exc:  # keeping must not take the worker down
            log.warning("could not keep job %s: %s", job.id, exc)
            job.error = job.error or f"saving failed: {exc}"
        with job.cond:
            job.status = status
            job.cond.notify_all()
        job.member = None
        job.run.release()
        job.png_cache.clear()
        job.publish()
        with self.lock:
            for old in [k for k, j in self._jobs.items() if j.finished and j is not job][:-self.KEEP_FINISHED]:
                del self._jobs[old]

    async def wait(self, job_id: str, version: int, timeout: float) -> None:
        """Return when the job publishes a frame newer than ``version``, finishes, the process shuts
        down, or ``timeout`` passes."""
        job = self.live(job_id)
        if job is None or self.closing:
            return
        await job.wait(version, timeout)
