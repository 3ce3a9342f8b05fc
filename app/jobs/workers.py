"""The local runner: a bounded queue and a pool of worker threads that step jobs' Runs.

Evolutionary jobs run their light tensor work (mutation, rendering, archive) in their worker
thread and send every population to the model's shared job batcher, which runs forward passes
on the single compute thread; populations of several jobs waiting at the same moment go through
the model together. Gradient and adversarial jobs need backward passes, so each of their steps
runs whole on the compute thread. Either way each running job gets one turn per forward pass.

A paused job gives its worker back (it is parked); resume, step or cancel put it in line again,
ahead of the queue. The server runs its jobs here (FOOLING_BACKEND=local), and so does each Ray
engine, with a keeper of its own.
"""

from __future__ import annotations

import collections
import logging
import queue
import threading
import time
import traceback
from contextlib import nullcontext

from app.fooling.info import GRADIENT
from app.fooling.methods import MethodError
from app.jobs.board import Board
from app.jobs.job import Job
from app.serving import compute
from app.serving.lab import Lab

log = logging.getLogger(__name__)


class Workers:
    def __init__(self, lab: Lab, board: Board) -> None:
        self.lab, self.board, self.settings = lab, board, lab.settings
        self._queue: queue.Queue[Job] = queue.Queue(maxsize=self.settings.queue_size)
        self._resumed: collections.deque[Job] = collections.deque()  # parked jobs to run again, first
        self._threads = [threading.Thread(target=self._work, name=f"job-worker-{i}", daemon=True)
                         for i in range(max(1, self.settings.workers))]
        for t in self._threads:
            t.start()

    engines_started = True  # nothing to wait for: GET /readyz asks every backend

    def describe(self) -> dict:
        return {}  # nothing more to say than the models GET /readyz lists anyway

    # -- what the server's runner asks of its backend -------------------------------------------------
    def full(self) -> bool:
        return self._queue.full()

    def put(self, job: Job) -> None:
        """Queue a job (the caller checked ``full()`` under the board's lock, where it alone puts)."""
        self._queue.put_nowait(job)

    def control(self, job: Job, action: str) -> dict:
        if job.apply(action):
            self.board.finish(job, "cancelled")
        elif action in ("resume", "step", "cancel"):
            self._unpark(job)  # a parked job needs a worker again (to step, run on, or stop and save)
        job.publish()
        return {"id": job.id, "status": job.status}

    def stop(self, job: Job) -> None:
        """A job being deleted: it stops and leaves nothing behind."""
        with job.cond:
            job.deleted = job.cancel = True
            job.cond.notify_all()
        if job.status == "queued":
            self.board.finish(job, "cancelled")
        self._unpark(job)  # a parked job is finished (and cleaned up) by a worker

    def close(self) -> None:
        """Interrupt running jobs (a worker saves their best so far) and those no worker holds."""
        for job in self.board.active():
            with job.cond:
                job.cond.notify_all()
            if job.status == "queued" or job.parked_at is not None:
                job.parked_at = None
                self.board.finish(job, "interrupted")
            job.publish()
        for t in self._threads:
            t.join(timeout=10)

    # -- the workers ----------------------------------------------------------------------------
    def _work(self) -> None:
        while not self.board.closing:
            self._reap_long_pauses()
            job = self._take()
            if job is None or job.finished:  # nothing to do, or cancelled while queued
                continue
            try:
                self._run(job)
            except Exception as exc:  # a failing job records its error; the worker goes on
                log.warning("job %s failed: %s", job.id, exc)
                job.error = f"{type(exc).__name__}: {exc}"
                if not isinstance(exc, MethodError | ValueError):
                    log.debug("%s", traceback.format_exc())
                self.board.finish(job, "failed")

    def _take(self) -> Job | None:
        """The next job to run: a resumed (parked) job first, else the queue."""
        with self.board.lock:
            if self._resumed:
                return self._resumed.popleft()
        try:
            return self._queue.get(timeout=0.1)
        except queue.Empty:
            return None

    def _park(self, job: Job) -> None:
        with job.cond:
            job.parked_at = time.monotonic()
            wake = job.cancel or not job.paused or job.step_credits > 0  # changed while we parked it
        if wake:
            self._unpark(job)

    def _unpark(self, job: Job) -> None:
        with job.cond:
            if job.parked_at is None:
                return
            job.parked_at = None
        with self.board.lock:
            self._resumed.append(job)

    def _reap_long_pauses(self) -> None:
        """A pause longer than FOOLING_MAX_PAUSE_S cancels the job, keeping its best."""
        now = time.monotonic()
        for job in self.board.active():
            parked = job.parked_at
            if parked is not None and now - parked > self.settings.max_pause_s:
                with job.cond:
                    if job.parked_at is None:
                        continue
                    job.parked_at = None
                    job.cancel = True
                job.run.stop_reason = f"paused longer than {self.settings.max_pause_s:g} s"
                self.board.finish(job, "cancelled")

    def _run(self, job: Job) -> None:
        registry = self.lab.registry
        on_compute = job.spec.method in GRADIENT
        # Evolution jobs move in rounds with the model's other jobs (see Batcher.participant).
        batcher = self.lab.scorer.job_batcher(job.spec.model)
        with batcher.participant() if not on_compute else nullcontext() as member:
            job.member = member
            status = self._loop(job, on_compute, registry.get(job.spec.model), registry.model(job.spec.model))
            job.member = None
        if status == "parked":
            self._park(job)
        elif status != "skip":
            self.board.finish(job, status)  # after leaving the round: saving must not hold up other jobs

    def _loop(self, job: Job, on_compute: bool, entry, model) -> str:
        run = job.run

        def score(x):
            return job.member.submit(x.detach().cpu())  # the batcher place of whichever worker holds the job

        with job.cond:  # every status change happens under the job's lock
            if run.gen is None and (job.cancel or job.finishing or job.finished or self.board.closing):
                return "skip"  # cancelled (or the server stopped) as we took it: whoever did that finishes it
            first = run.gen is None  # else a parked job goes on where it stopped
            if first:
                job.status = "running" if not job.paused else "paused"
        if first:
            self.board.keeper.started(job)
            job.publish()  # running (or paused, if it was paused while queued): streams show it now
            run.start(entry, model, score)
        frame_every = 1.0 / max(1.0, 2 * self.settings.events_per_second)  # frames made; streams throttle further
        last_frame = 0.0
        while True:
            with job.cond:
                if job.cancel or self.board.closing:
                    break
                if job.paused and job.step_credits == 0:
                    return "parked"  # give the worker to the next job (see _park)
                if job.step_credits:
                    job.step_credits -= 1
            snap = compute.run(run.step) if on_compute else run.step()
            if snap is None:
                break
            now = time.monotonic()
            if now - last_frame >= frame_every or job.paused:
                last_frame = now
                job.publish()
        if self.board.closing and not job.cancel:
            return "interrupted"
        return "cancelled" if job.cancel else "done"
