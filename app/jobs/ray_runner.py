"""Jobs on a Ray cluster, behind the same Runner interface as the local runner.

Shape: one engine actor per GPU (or FOOLING_RAY_CPU_ENGINES on CPU), detached and named
``engine-0``, ``engine-1``, ... in the namespace ``fooling-lab``. An engine keeps its models resident
and runs many jobs at once with a LocalRunner of its own, so their forward passes are batched
together, exactly as on one machine; it is never one actor per job (each would load its own
model copy, and nothing would be batched).

The API process keeps the store, the files and a mirror of each running job: one of its threads
follows the engine's frames (an actor-method generator that yields only the latest frame, so a
slow follower skips frames) and feeds them through the local runner's bookkeeping, so events,
pages and saved results are the same code as with the local backend. Stopping a stream never
cancels a job; cancel, pause, resume and step are forwarded to the engine.

If an engine dies mid-job, its jobs end ``interrupted`` with the best images they had reached
(the mirror has them), Ray restarts the engine, and new jobs run on it.
"""

from __future__ import annotations

import base64
import logging
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path

import torch

from app.fooling.base import Snapshot
from app.jobs.job import Job, JobError
from app.jobs.runner import LocalRunner
from app.jobs.spec import JobSpec
from app.jobs.store import JobStore
from app.serving.imaging import to_png
from app.serving.lab import Lab
from app.settings import ROOT, Settings

log = logging.getLogger(__name__)

NAMESPACE = "fooling-lab"
ENGINE_START_S = 600.0  # the first start loads (and may export) every model on every engine
CALL_TIMEOUT_S = 10.0  # the longest the API waits on one engine call (a dead actor errs sooner)
FRAME_TIMEOUT_S = 30.0  # ... and on the next frame of a job (an engine holds a paused job's stream open)


def _frame(job: Job, final: bool, snap: Snapshot | None = None) -> dict:
    """What an engine sends for a job: its state and latest snapshot, images as uint8 (lossless:
    they are on the 8-bit grid), and on the last frame its whole history."""
    snap = snap if snap is not None else job.snap
    out = {"status": job.status, "version": job.version, "error": job.error, "stop_reason": job.stop_reason,
           "runtime": job.runtime, "final": final}
    if snap is not None:
        out["snap"] = {"step": snap.step, "evaluations": snap.evaluations, "targets": snap.targets,
                       "images": (snap.images * 255).round().to(torch.uint8), "confidence": snap.confidence,
                       "probs": snap.probs, "extra": snap.extra}
    if final:
        out["history"], out["reached"] = job.history, job.reached
    return out


class _EngineRunner(LocalRunner):
    """The engine's own runner. A finished job drops its tensors (as on one machine); its last
    snapshot is kept here until the job's final frame has been sent to the API."""

    KEEP = 256

    def __init__(self, lab: Lab, store: JobStore) -> None:
        self.last_snaps: dict[str, Snapshot] = {}
        super().__init__(lab, store)

    def _finish(self, job: Job, status: str) -> None:
        if job.snap is not None:
            self.last_snaps[job.id] = job.snap
            for old in list(self.last_snaps)[:-self.KEEP]:  # nobody came for those
                del self.last_snaps[old]
        super()._finish(job, status)


class Engine:
    """A Ray actor (made with ray.remote in start_engines): models resident, a LocalRunner inside."""

    def __init__(self, settings: Settings, index: int) -> None:
        from app.serving import compute

        scratch = Path(tempfile.mkdtemp(prefix=f"fooling-engine-{index}-"))
        # The engine runs what the API process accepted: its own caps are the per-engine job count.
        self.settings = replace(settings, data_dir=scratch, onnx_dir=settings.onnx_dir or settings.data_dir / "onnx",
                                workers=settings.ray_engine_jobs, queue_size=10_000, max_jobs_per_client=10_000,
                                max_jobs_per_address=10_000, job_timeout_s=settings.job_timeout_s)
        self.index = index
        if self.settings.torch_threads > 0:
            torch.set_num_threads(self.settings.torch_threads)
        self.lab = Lab.create(self.settings)
        compute.run(self.lab.registry.load_all)
        self.runner = _EngineRunner(self.lab, JobStore(scratch))

    def info(self) -> dict:
        return {"index": self.index, "models": [e.id for e in self.lab.registry.list() if e.available],
                "jobs": len(self.runner.active()), "device": self.lab.registry.device}

    def submit(self, job_id: str, spec: dict, client: str, image_png: bytes | None) -> None:
        data = dict(spec)
        data.pop("upload", None)  # uploads live on the API's disk: the input comes as PNG bytes
        if image_png is not None:
            data["image"] = "data:image/png;base64," + base64.b64encode(image_png).decode()
        self.runner.submit(JobSpec(**data), client, job_id=job_id)

    def control(self, job_id: str, action: str) -> dict:
        try:
            job = self.runner.control(job_id, action)
        except JobError as exc:
            return {"error": exc.status, "detail": exc.detail}
        return job

    async def frames(self, job_id: str):
        """The job's frames until it ends: the latest each time (with backpressure, a slow reader
        skips frames instead of queueing them), at most FOOLING_EVENTS_PER_SECOND: what the streams
        send on, and no more crosses the process boundary."""
        import asyncio

        version, sent = -1, 0.0
        interval = 1.0 / max(0.1, self.settings.events_per_second)
        while True:
            job = self.runner.live(job_id)
            if job is None:
                return
            await self.runner.wait(job_id, version, timeout=5.0)
            if job.finished:
                yield _frame(job, final=True, snap=self.runner.last_snaps.pop(job_id, None))
                return
            if job.version > version:
                wait = sent + interval - time.monotonic()
                if wait > 0 and not job.paused:  # a pause is shown at once
                    await asyncio.sleep(wait)
                    if job.finished:
                        continue
                version, sent = job.version, time.monotonic()
                yield _frame(job, final=False)

    def ping(self) -> str:
        return "ok"


def _reachable(address: str, timeout: float = 5.0) -> None:
    """The cluster's GCS answers at host:port (ray:// client addresses are checked the same way)."""
    import socket

    host, _, port = address.removeprefix("ray://").rpartition(":")
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout):
            return
    except (OSError, ValueError) as exc:
        raise RuntimeError(f"cannot reach the Ray cluster at {address}: {exc}") from None


def connect(settings: Settings) -> None:
    """Join the cluster at FOOLING_RAY_ADDRESS, or start a local Ray instance when it is unset.
    Raises RuntimeError with a plain message when the cluster cannot be reached."""
    import ray

    if settings.ray_address and settings.ray_address not in ("auto", "local"):
        _reachable(settings.ray_address)  # ray.init would retry for minutes before giving up
    if ray.is_initialized():
        return
    try:
        if settings.ray_address:
            ray.init(address=settings.ray_address, namespace=NAMESPACE, log_to_driver=False)
        else:  # a local instance: its workers import this project from here
            ray.init(namespace=NAMESPACE, include_dashboard=False, log_to_driver=False,
                     runtime_env={"env_vars": {"PYTHONPATH": str(ROOT)}})
    except Exception as exc:  # ConnectionError, a version mismatch, ...
        raise RuntimeError(f"cannot reach the Ray cluster at {settings.ray_address or '(local)'}: {exc}") from exc


def cpu_share(settings: Settings, engines: int, gpus: int) -> int:
    """Torch threads for each process when a local Ray instance runs engines on this machine's CPUs:
    the engines and the web server (which scores) share the cores rather than each taking them all
    (oversubscribed threads thrash). 0: leave the settings as they are."""
    import os

    if settings.ray_address or gpus or settings.torch_threads > 0:
        return 0
    return max(1, (os.cpu_count() or 2) // (engines + 1))


def start_engines(settings: Settings) -> list:
    """The engine actors: found by name when they already run (detached), made otherwise. Ray
    restarts one that dies (max_restarts=-1)."""
    import ray

    gpus = int(ray.cluster_resources().get("GPU", 0))
    count = gpus or max(1, settings.ray_cpu_engines)
    share = cpu_share(settings, count, gpus)
    if share:
        settings = replace(settings, torch_threads=share)
    actor = ray.remote(Engine)
    engines = []
    for i in range(count):
        opts = {"name": f"engine-{i}", "namespace": NAMESPACE, "lifetime": "detached", "get_if_exists": True,
                "max_restarts": -1, "max_task_retries": 0, "num_gpus": 1 if gpus else 0, "num_cpus": 0 if gpus else 1}
        engines.append(actor.options(**opts).remote(replace(settings, device="cuda" if gpus else "cpu"), i))
    return engines


class _Cancelled(Exception):
    pass


class RayRunner(LocalRunner):
    """The local runner's queue, store and bookkeeping; each job's work on an engine actor."""

    def __init__(self, lab: Lab, store: JobStore) -> None:
        import ray

        settings = lab.settings
        connect(settings)
        self.engines = start_engines(settings)
        share = cpu_share(settings, len(self.engines), int(ray.cluster_resources().get("GPU", 0)))
        if share:
            torch.set_num_threads(share)
        # Engines load their models beside the server (as the local backend does): jobs wait for that.
        self._ready = threading.Event()
        threading.Thread(target=self._await_engines, name="ray-engines", daemon=True).start()
        self._assigned: dict[str, object] = {}
        # API-side threads only follow engines; the engines' own caps bound the work.
        mirror = replace(settings, workers=max(settings.workers, settings.ray_engine_jobs * len(self.engines)))
        super().__init__(replace(lab, settings=mirror), store)

    def _await_engines(self) -> None:
        import ray

        deadline = time.monotonic() + ENGINE_START_S
        for e in self.engines:
            try:
                ray.get(e.ping.remote(), timeout=max(1.0, deadline - time.monotonic()))
            except Exception as exc:
                log.warning("an engine did not start: %s", exc)
        self._ready.set()

    def _engine_for(self, job: Job):
        """The least-loaded engine that holds the job's model. While none can take it (an engine is
        restarting and loading its models) the job waits, up to ENGINE_START_S."""
        deadline = time.monotonic() + ENGINE_START_S
        while True:
            engine = self._least_loaded(job.spec.model)
            if engine is not None or job.cancel or self.closing or time.monotonic() > deadline:
                if engine is None:
                    raise RuntimeError(f"no engine holds {job.spec.model} right now")
                return engine
            time.sleep(1.0)

    def _least_loaded(self, model: str):
        import ray

        best = None
        for e in self.engines:
            try:
                info = ray.get(e.info.remote(), timeout=CALL_TIMEOUT_S)
            except Exception as exc:  # restarting, or its node is gone
                log.warning("engine did not answer: %s", exc)
                continue
            if model in info["models"] and (best is None or info["jobs"] < best[1]["jobs"]):
                best = (e, info)
        return None if best is None else best[0]

    def _run(self, job: Job) -> None:
        import ray

        with job.cond:
            if job.cancel or job.finishing or job.finished or self.closing:
                return
            job.status, job.started = ("paused" if job.paused else "running"), time.time()
        self.store.update(job.id, status=job.status)
        try:
            self._ready.wait(ENGINE_START_S)
            engine = self._engine_for(job)
            if job.cancel:  # cancelled while it waited for an engine
                raise _Cancelled
            png = to_png(job.image) if job.image is not None else None
            ray.get(engine.submit.remote(job.id, job.spec.model_dump(), job.client, png), timeout=CALL_TIMEOUT_S)
            self._assigned[job.id] = engine
            if job.paused:  # paused before an engine had it
                ray.get(engine.control.remote(job.id, "pause"), timeout=CALL_TIMEOUT_S)
            status = self._follow(job, engine)
        except _Cancelled:
            status = "cancelled"
        except Exception as exc:  # the engine died or could not be reached: keep what we have
            log.warning("job %s lost its engine: %s", job.id, exc)
            job.error = job.error or f"its engine stopped ({type(exc).__name__}); the best images so far are kept"
            status = "interrupted"
        finally:
            self._assigned.pop(job.id, None)
        self._finish(job, status)

    def _follow(self, job: Job, engine) -> str:
        import ray

        # Backpressure of one frame: the engine waits at its yield until this one is taken, then reads
        # the job afresh, so a slow follower gets the latest frame, never a queue of old ones.
        for ref in engine.frames.options(_generator_backpressure_num_objects=1).remote(job.id):
            frame = ray.get(ref, timeout=FRAME_TIMEOUT_S)
            if "snap" in frame:
                s = frame["snap"]
                snap = Snapshot(s["step"], s["evaluations"], s["targets"], s["images"].float() / 255,
                                s["confidence"], s["probs"], s["extra"])
                self._observe(job, snap)
            with job.cond:
                if not frame["final"] and not job.cancel:
                    job.status = frame["status"]
                job.runtime = frame["runtime"] or job.runtime
            if frame["final"]:
                job.history = frame["history"] or job.history
                job.reached = frame["reached"] or job.reached
                job.error, job.stop_reason = frame["error"] or job.error, frame["stop_reason"] or job.stop_reason
                return "interrupted" if self.closing and not job.cancel else frame["status"]
            self._publish(job)
        return "interrupted"  # the stream ended without a last frame

    def control(self, job_id: str, action: str) -> dict:
        """A job on an engine is controlled there; its status here follows the engine's next frame
        (sent as soon as it has paused, stepped, resumed or stopped). A job not placed yet is
        controlled here, and the engine is told when it gets it."""
        import ray

        job, engine = self.live(job_id), self._assigned.get(job_id)
        if job is None or engine is None or job.finished:
            return super().control(job_id, action)
        try:
            res = ray.get(engine.control.remote(job_id, action), timeout=CALL_TIMEOUT_S)
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
        engine = self._assigned.get(job_id)
        if engine is not None:
            engine.control.remote(job_id, "cancel")  # the engine stops it; the mirror finishes and cleans up
        return super().delete(job_id)

    def _park(self, job: Job) -> None:  # the engine parks paused jobs; the mirror thread only follows
        return None

    def close(self) -> None:
        """As the local runner: running jobs stop and end interrupted, their best images saved."""
        for job_id, engine in list(self._assigned.items()):
            engine.control.remote(job_id, "cancel")
        super().close()


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
