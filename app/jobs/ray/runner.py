"""The Ray backend: the server's side of jobs that run on engines (engine.py).

The server keeps the store, the files and a mirror of each running job (a Job whose Run has no
method, fed the engine's snapshots): one of its threads follows the engine's frames (an
actor-method generator that yields only the latest frame, so a slow follower skips frames), so
events, pages and saved results are the same code as with the local backend. Stopping a stream
never cancels a job; cancel, pause, resume and step are forwarded to the engine.

If an engine dies mid-job, its jobs end ``interrupted`` with the best images they had reached
(the mirror has them), Ray restarts the engine, and new jobs run on it.
"""

from __future__ import annotations

import logging
import queue
import threading
import time

import torch

from app.errors import KINDS
from app.fooling.base import Snapshot
from app.jobs.board import Board
from app.jobs.job import Job, JobError
from app.jobs.ray.cluster import cluster_gpus, connect, cpu_share
from app.jobs.ray.engine import CALL_TIMEOUT_S, ENGINE_START_S, GONE_S, engine_settings, start_engines
from app.jobs.ray.pool import EnginePool
from app.jobs.ray.scoring import EngineScorer
from app.jobs.store import ACTIVE
from app.serving.imaging import to_png
from app.serving.lab import Lab
from app.settings import Settings

log = logging.getLogger(__name__)


def scoring_place(settings: Settings, gpus: int) -> str:
    """Where /api/v1/score runs (FOOLING_RAY_SCORING). auto: on the engines where they have GPUs
    or machines of their own; in this process when a local Ray instance shares this machine's CPUs,
    where scoring beside the jobs, in a process of its own with its own share of the cores, answers
    in a third of the time (bench/load.py, 2 cores: p99 33 ms against 75-97 ms on the engine)."""
    if settings.ray_scoring != "auto":
        return settings.ray_scoring
    return "engines" if gpus or settings.ray_address else "server"


def take_frame(job: Job, frame: dict) -> str | None:
    """Mirror one engine frame onto the API's job; on the final frame, return the status it ends with.
    Only the final frame ends a job here: a frame made just as the engine's job finished may already
    say "done", and the result is saved (by _finish, after the final frame) with its images."""
    if "snap" in frame:
        s = frame["snap"]
        job.run.observe(Snapshot(s["step"], s["evaluations"], s["targets"], s["images"].float() / 255,
                                 s["confidence"], s["probs"], s["extra"]))
    with job.cond:
        if not frame["final"] and not job.cancel and frame["status"] in ACTIVE:
            job.status = frame["status"]
        job.run.runtime = frame["runtime"] or job.run.runtime
    if not frame["final"]:
        return None
    run = job.run
    run.history = frame["history"] or run.history
    run.reached = frame["reached"] or run.reached
    job.error, run.stop_reason = frame["error"] or job.error, frame["stop_reason"] or run.stop_reason
    return frame["status"]


class _Cancelled(Exception):
    pass


class RayBackend:
    """Places each job on an engine and follows it there: a queue, and one follower thread per job
    the engines may run at once (each waits on its job's frames)."""

    def __init__(self, lab: Lab, board: Board) -> None:
        settings = lab.settings
        connect(settings)
        gpus = cluster_gpus()
        self.lab, self.board = lab, board
        self.pool = EnginePool(start_engines(settings, gpus))
        share = cpu_share(settings, len(self.pool), gpus)
        if share:
            torch.set_num_threads(share)
        self.scoring = scoring_place(settings, gpus)
        if self.scoring == "engines":  # this process keeps its models for when no engine answers
            local_scorer, lab.scorer = lab.scorer, EngineScorer(lab, self.pool)
            local_scorer.close()
        # Engines load their models beside the server (as the local backend does): jobs wait for that.
        self._ready = threading.Event()
        self._wanted = engine_settings(settings)
        threading.Thread(target=self._await_engines, name="ray-engines", daemon=True).start()
        self._assigned: dict[str, tuple[int, object]] = {}
        self._queue: queue.Queue[Job] = queue.Queue(maxsize=settings.queue_size)
        followers = max(settings.workers, settings.ray_engine_jobs * len(self.pool))
        self._threads = [threading.Thread(target=self._work, name=f"ray-follower-{i}", daemon=True)
                         for i in range(followers)]
        for t in self._threads:
            t.start()

    @property
    def engines_started(self) -> bool:
        """Every engine has answered once (or the start-up wait is over): GET /readyz waits for it."""
        return self._ready.is_set()

    def describe(self) -> dict:
        """What GET /readyz says of the engines."""
        return {"engines": self.pool.describe(), "scoring": self.scoring}

    def full(self) -> bool:
        return self._queue.full()

    def put(self, job: Job) -> None:
        self._queue.put_nowait(job)

    def _await_engines(self) -> None:
        """Take over the engines as they come up; GET /readyz and the first jobs wait for this."""
        deadline = time.monotonic() + ENGINE_START_S  # for all of them together
        try:
            for i, e in enumerate(self.pool.engines):
                self._adopt(i, e, deadline)
            self.pool.refresh()
        except Exception as exc:  # readiness must come regardless: the pool keeps trying
            log.warning("taking over the engines failed: %s", exc)
        finally:
            self._ready.set()

    def _adopt(self, index: int, engine, deadline: float) -> None:
        import ray

        try:
            said = ray.get(engine.adopt.remote(), timeout=max(1.0, deadline - time.monotonic()))
        except Exception as exc:
            log.warning("engine-%d did not start: %s", index, exc)
            return
        if said["orphans"]:
            log.warning("engine-%d ran %d jobs of an earlier server: cancelled", index, said["orphans"])
        if changed := {k: v for k, v in said["settings"].items() if self._wanted.get(k) != v}:
            log.warning("engine-%d keeps the settings it was started with (%s); to change them, stop the "
                        "engines (`ray stop` on their machines, or ray.kill) and start the server again",
                        index, ", ".join(f"{k}={v!r}, not {self._wanted[k]!r}" for k, v in changed.items()))

    def _engine_for(self, job: Job) -> tuple[int, object]:
        """The least-loaded engine that holds the job's model, taken (counted busier) for it. While
        none can take it (an engine is restarting and loading its models) the job waits, up to
        ENGINE_START_S."""
        deadline = time.monotonic() + ENGINE_START_S
        while True:
            placed = self.pool.take(job.spec.model)
            if placed is not None:
                return placed
            if job.cancel or self.board.closing or time.monotonic() > deadline:
                raise _Cancelled if job.cancel else RuntimeError(f"no engine holds {job.spec.model} right now")
            time.sleep(0.5)

    def _place(self, job: Job) -> tuple[int, object]:
        """Hand the job to an engine (taken for it: release it when the job ends). One that went down
        since the pool last heard from it refuses the job (it has not started): it is placed again,
        on whichever engine answers next."""
        import ray

        png = to_png(job.run.image) if job.run.image is not None else None
        deadline = time.monotonic() + ENGINE_START_S
        while True:
            index, engine = self._engine_for(job)
            if job.cancel:  # cancelled while it waited for an engine
                self.pool.release(index)
                raise _Cancelled
            try:
                ray.get(engine.submit.remote(job.id, job.spec.model_dump(), job.client, png), timeout=CALL_TIMEOUT_S)
                return index, engine
            except Exception as exc:
                self.pool.release(index)
                if time.monotonic() > deadline:
                    raise
                log.warning("engine-%d did not take job %s (%s); placing it again", index, job.id, exc)
                self.pool.down(index)

    def _work(self) -> None:
        while not self.board.closing:
            try:
                job = self._queue.get(timeout=0.1)
            except queue.Empty:
                continue
            if job.finished:  # cancelled while queued
                continue
            try:
                self._run(job)
            except Exception as exc:  # the follower goes on
                log.warning("job %s failed: %s", job.id, exc)
                job.error = f"{type(exc).__name__}: {exc}"
                self.board.finish(job, "failed")

    def _run(self, job: Job) -> None:
        import ray

        with job.cond:
            if job.cancel or job.finishing or job.finished or self.board.closing:
                return
            job.status = "paused" if job.paused else "running"
        job.run.begin()
        self.board.keeper.started(job)
        try:
            self._ready.wait(ENGINE_START_S)
            index, engine = self._place(job)
            try:
                with job.cond:  # a control from now on goes to the engine; those said before, we forward first
                    self._assigned[job.id] = (index, engine)
                    before = ["pause"] * job.paused + ["step"] * job.step_credits + ["cancel"] * job.cancel
                    job.step_credits = 0
                    for action in before:  # said while it was being placed
                        ray.get(engine.control.remote(job.id, action), timeout=CALL_TIMEOUT_S)
                status = self._follow(job, index, engine)
            finally:
                self.pool.release(index)
        except _Cancelled:
            status = "cancelled"
        except Exception as exc:  # the engine died or could not be reached: keep what we have
            log.warning("job %s lost its engine: %s", job.id, exc)
            job.error = job.error or f"its engine stopped ({type(exc).__name__}); the best images so far are kept"
            status = "interrupted"
        finally:
            self._assigned.pop(job.id, None)
        self.board.finish(job, status)

    def _follow(self, job: Job, index: int, engine) -> str:
        import ray

        # Backpressure of one frame: the engine waits at its yield until this one is taken, then reads
        # the job afresh, so a slow follower gets the latest frame, never a queue of old ones.
        frames = engine.frames.options(_generator_backpressure_num_objects=1).remote(job.id)
        while True:
            ready, _ = ray.wait([frames], timeout=1.0)
            if not ready:  # a paused job sends nothing; a lost node says nothing either
                if self.pool.silent_for(index) > GONE_S:
                    raise TimeoutError(f"engine-{index} has not answered for {GONE_S:.0f} s")
                continue
            try:
                frame = ray.get(next(frames))
            except StopIteration:
                return "interrupted"  # the stream ended without a last frame
            status = take_frame(job, frame)
            if status is not None:
                return "interrupted" if self.board.closing and not job.cancel else status
            job.publish()

    def control(self, job: Job, action: str) -> dict:
        """A job on an engine is controlled there; its status here follows the engine's next frame
        (sent as soon as it has paused, stepped, resumed or stopped). A job not placed yet is
        controlled here, and the engine is told when it gets it."""
        with job.cond:  # not while _run hands the job to its engine (it forwards what was said before)
            placed = self._assigned.get(job.id)
            finish_now = job.apply(action) if placed is None else False
        if placed is None:
            if finish_now:
                self.board.finish(job, "cancelled")
            job.publish()
            return {"id": job.id, "status": job.status}
        index, engine = placed
        try:
            res = self.pool.answer(index, engine.control.remote(job.id, action), CALL_TIMEOUT_S)
        except Exception as exc:  # the engine is gone: its job ends interrupted by its follower
            raise JobError("unavailable", f"the engine running job {job.id} does not answer ({type(exc).__name__}); "
                                "try again shortly", retry_after=5) from None
        if "error" in res:  # an engine started by an older server answers with a status number
            raise JobError(res["error"] if res["error"] in KINDS else "conflict", res["detail"])
        with job.cond:
            if action == "cancel":
                job.cancel = True
            elif action in ("pause", "resume"):
                job.paused = action == "pause"
        return {"id": job.id, "status": res["status"]}

    def stop(self, job: Job) -> None:
        """A job being deleted: the engine stops it; its follower finishes it (leaving nothing)."""
        with job.cond:
            job.deleted = job.cancel = True
            job.cond.notify_all()
            placed = self._assigned.get(job.id)  # else _run forwards the cancel when it places the job
        if placed is not None:
            placed[1].control.remote(job.id, "cancel")
        elif job.status == "queued":
            self.board.finish(job, "cancelled")

    def close(self) -> None:
        """As the local workers: running jobs stop and end interrupted, their best images saved."""
        for job_id, (_, engine) in list(self._assigned.items()):
            engine.control.remote(job_id, "cancel")
        for job in self.board.active():
            if job.status == "queued":
                self.board.finish(job, "interrupted")
            job.publish()
        for t in self._threads:
            t.join(timeout=10)
        self.pool.close()
