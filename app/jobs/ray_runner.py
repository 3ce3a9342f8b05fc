"""Jobs on a Ray cluster, behind the same Runner interface as the local runner.

The engines (app.jobs.ray_engine) keep the models and run the jobs and the scoring
(app.jobs.ray_scoring); this module is the API process's side of the jobs.

The API process keeps the store, the files and a mirror of each running job: one of its threads
follows the engine's frames (an actor-method generator that yields only the latest frame, so a
slow follower skips frames) and feeds them through the local runner's bookkeeping, so events,
pages and saved results are the same code as with the local backend. Stopping a stream never
cancels a job; cancel, pause, resume and step are forwarded to the engine.

If an engine dies mid-job, its jobs end ``interrupted`` with the best images they had reached
(the mirror has them), Ray restarts the engine, and new jobs run on it.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import replace

import torch

from app.fooling.base import Snapshot
from app.jobs.job import Job, JobError
from app.jobs.ray_engine import (
    CALL_TIMEOUT_S,
    ENGINE_START_S,
    GONE_S,
    EnginePool,
    cluster_gpus,
    connect,
    cpu_share,
    engine_settings,
    start_engines,
)
from app.jobs.ray_scoring import EngineScorer
from app.jobs.runner import LocalRunner
from app.jobs.store import ACTIVE, JobStore
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


def take_frame(job: Job, frame: dict, observe) -> str | None:
    """Mirror one engine frame onto the API's job; on the final frame, return the status it ends with.
    Only the final frame ends a job here: a frame made just as the engine's job finished may already
    say "done", and the result is saved (by _finish, after the final frame) with its images."""
    if "snap" in frame:
        s = frame["snap"]
        observe(job, Snapshot(s["step"], s["evaluations"], s["targets"], s["images"].float() / 255,
                              s["confidence"], s["probs"], s["extra"]))
    with job.cond:
        if not frame["final"] and not job.cancel and frame["status"] in ACTIVE:
            job.status = frame["status"]
        job.runtime = frame["runtime"] or job.runtime
    if not frame["final"]:
        return None
    job.history = frame["history"] or job.history
    job.reached = frame["reached"] or job.reached
    job.error, job.stop_reason = frame["error"] or job.error, frame["stop_reason"] or job.stop_reason
    return frame["status"]


class _Cancelled(Exception):
    pass


class RayRunner(LocalRunner):
    """The local runner's queue, store and bookkeeping; each job's work on an engine actor."""

    def __init__(self, lab: Lab, store: JobStore) -> None:
        settings = lab.settings
        connect(settings)
        gpus = cluster_gpus()
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
        # API-side threads only follow engines; the engines' own caps bound the work.
        mirror = replace(settings, workers=max(settings.workers, settings.ray_engine_jobs * len(self.pool)))
        super().__init__(replace(lab, settings=mirror), store)

    @property
    def engines_started(self) -> bool:
        """Every engine has answered once (or the start-up wait is over): GET /readyz waits for it."""
        return self._ready.is_set()

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
            if job.cancel or self.closing or time.monotonic() > deadline:
                raise _Cancelled if job.cancel else RuntimeError(f"no engine holds {job.spec.model} right now")
            time.sleep(0.5)

    def _place(self, job: Job) -> tuple[int, object]:
        """Hand the job to an engine (taken for it: release it when the job ends). One that went down
        since the pool last heard from it refuses the job (it has not started): it is placed again,
        on whichever engine answers next."""
        import ray

        png = to_png(job.image) if job.image is not None else None
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

    def _run(self, job: Job) -> None:
        import ray

        with job.cond:
            if job.cancel or job.finishing or job.finished or self.closing:
                return
            job.status, job.started = ("paused" if job.paused else "running"), time.time()
        self.store.update(job.id, status=job.status)
        try:
            self._ready.wait(ENGINE_START_S)
            index, engine = self._place(job)
            try:
                self._assigned[job.id] = (index, engine)
                if job.paused:  # paused before an engine had it
                    ray.get(engine.control.remote(job.id, "pause"), timeout=CALL_TIMEOUT_S)
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
        self._finish(job, status)

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
            status = take_frame(job, frame, self._observe)
            if status is not None:
                return "interrupted" if self.closing and not job.cancel else status
            self._publish(job)

    def control(self, job_id: str, action: str) -> dict:
        """A job on an engine is controlled there; its status here follows the engine's next frame
        (sent as soon as it has paused, stepped, resumed or stopped). A job not placed yet is
        controlled here, and the engine is told when it gets it."""
        job, placed = self.live(job_id), self._assigned.get(job_id)
        if job is None or placed is None or job.finished:
            return super().control(job_id, action)
        index, engine = placed
        try:
            res = self.pool.answer(index, engine.control.remote(job_id, action), CALL_TIMEOUT_S)
        except Exception as exc:  # the engine is gone: its job ends interrupted by its follower
            raise JobError(503, f"the engine running job {job_id} does not answer ({type(exc).__name__}); "
                                "try again shortly", retry_after=5) from None
        if "error" in res:
            raise JobError(res["error"], res["detail"])
        with job.cond:
            if action == "cancel":
                job.cancel = True
            elif action in ("pause", "resume"):
                job.paused = action == "pause"
        return {"id": job_id, "status": res["status"]}

    def delete(self, job_id: str) -> bool:
        placed = self._assigned.get(job_id)
        if placed is not None:
            placed[1].control.remote(job_id, "cancel")  # the engine stops it; the mirror finishes and cleans up
        return super().delete(job_id)

    def _park(self, job: Job) -> None:  # the engine parks paused jobs; the mirror thread only follows
        return None

    def close(self) -> None:
        """As the local runner: running jobs stop and end interrupted, their best images saved."""
        for job_id, (_, engine) in list(self._assigned.items()):
            engine.control.remote(job_id, "cancel")
        super().close()
        self.pool.close()


def make_runner(lab: Lab, store: JobStore) -> LocalRunner:
    """FOOLING_BACKEND: local, ray (exits with a clear message when the cluster cannot be reached),
    or auto (Ray when FOOLING_RAY_ADDRESS is set and answers, else local)."""
    backend = lab.settings.backend
    if backend == "local" or (backend == "auto" and not lab.settings.ray_address):
        return LocalRunner(lab, store)
    try:
        return RayRunner(lab, store)
    except (RuntimeError, ImportError) as exc:
        if backend == "auto":
            log.warning("FOOLING_BACKEND=auto: %s; running jobs locally", exc)
            return LocalRunner(lab, store)
        raise SystemExit(f"FOOLING_BACKEND=ray: {exc}") from None
