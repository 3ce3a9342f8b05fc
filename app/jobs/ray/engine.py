"""Engine actors: one per GPU (or FOOLING_RAY_CPU_ENGINES on CPU), detached and named ``engine-0``,
``engine-1``, ... in the namespace ``fooling-lab``.

An engine keeps its models resident and runs many jobs at once with the local workers (Board +
Workers, as on one machine), so their forward passes are batched together; it scores the server's
batches with its own Scorer, between those passes. It is never one actor per job (each would load
its own model copy, and nothing would be batched). An engine saves nothing: the server mirrors
each job's frames and keeps its files and record.
"""

from __future__ import annotations

import base64
import contextlib
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from app.fooling.base import Snapshot
from app.jobs.admission import Admission
from app.jobs.board import Board
from app.jobs.job import Job, JobError
from app.jobs.ray.cluster import NAMESPACE, cpu_share
from app.jobs.spec import JobSpec
from app.jobs.workers import Workers
from app.serving.lab import Lab
from app.serving.tensors import chunk_rows, to_unit
from app.settings import Settings

ENGINE_START_S = 600.0  # the first start loads (and may export) every model on every engine
CALL_TIMEOUT_S = 10.0  # the longest the server waits on one engine call (a dead actor errs sooner)
GONE_S = 6.0  # a job's engine silent this long is taken for lost (Ray itself notices a lost node later)


def frame(job: Job, final: bool, snap: Snapshot | None = None) -> dict:
    """What an engine sends for a job: its state and latest snapshot, images as uint8 (lossless:
    they are on the 8-bit grid), and on the last frame its whole history."""
    run = job.run
    snap = snap if snap is not None else run.snap
    out = {"status": job.status, "version": job.version, "error": job.error, "stop_reason": run.stop_reason,
           "runtime": run.runtime, "final": final}
    if snap is not None:
        out["snap"] = {"step": snap.step, "evaluations": snap.evaluations, "targets": snap.targets,
                       "images": (snap.images * 255).round().to(torch.uint8), "confidence": snap.confidence,
                       "probs": snap.probs, "extra": snap.extra}
    if final:
        out["history"], out["reached"] = run.history, run.reached
    return out


class LastFrames:
    """An engine's keeper (see board.py): it saves nothing. A finished job's last snapshot waits here
    until the server's follower has taken the job's final frame."""

    KEEP = 256

    def __init__(self) -> None:
        self.snaps: dict[str, Snapshot] = {}

    def started(self, job: Job) -> None:
        pass

    def finished(self, job: Job, status: str) -> None:
        if job.run.snap is not None:
            self.snaps[job.id] = job.run.snap
            for old in list(self.snaps)[:-self.KEEP]:  # nobody came for those
                del self.snaps[old]


def engine_settings(settings: Settings) -> dict:
    """The settings an engine is made with that a server may change between starts."""
    return {"preload": settings.preload, "runtime": settings.runtime, "ray_engine_jobs": settings.ray_engine_jobs,
            "ray_gpu_memory": settings.ray_gpu_memory, "batching": settings.batching}


class Engine:
    """A Ray actor (made with ray.remote in start_engines): models resident, local workers inside."""

    def __init__(self, settings: Settings, index: int) -> None:
        from app.serving import compute

        scratch = Path(tempfile.mkdtemp(prefix=f"fooling-engine-{index}-"))
        # The engine runs what the server admitted: its own cap is the per-engine job count.
        self.settings = replace(settings, data_dir=scratch, onnx_dir=settings.onnx_dir or settings.data_dir / "onnx",
                                workers=settings.ray_engine_jobs, queue_size=10_000)
        self.index = index
        if self.settings.torch_threads > 0:
            torch.set_num_threads(self.settings.torch_threads)
        if settings.ray_gpu_memory and torch.cuda.is_available():  # room for what else shares the GPU
            torch.cuda.set_per_process_memory_fraction(settings.ray_gpu_memory)
        # Defended models read MNIST and kept calibrations from the server's data dir where this
        # node has it (on one machine, or a shared volume); elsewhere their detectors say what is missing.
        self.lab = Lab.create(self.settings, real_dir=settings.data_dir)
        compute.run(self.lab.registry.load_all)
        self.last = LastFrames()
        self.board = Board(self.last)
        self.workers = Workers(self.lab, self.board)
        self.admission = Admission(self.lab)
        self.scored = 0  # images scored for the API (GET /readyz shows it; tests check where scoring ran)

    def info(self) -> dict:
        return {"index": self.index, "models": [e.id for e in self.lab.registry.list() if e.available],
                "jobs": len(self.board.active()), "device": self.lab.registry.device, "scored": self.scored}

    def submit(self, job_id: str, spec: dict, client: str, image_png: bytes | None) -> None:
        data = dict(spec)
        data.pop("upload", None)  # uploads live on the API's disk: the input comes as PNG bytes
        if image_png is not None:
            data["image"] = "data:image/png;base64," + base64.b64encode(image_png).decode()
        if self.board.live(job_id) is not None:  # a retry of a submit that got here (its answer was lost)
            return
        prepared = self.admission.prepare(JobSpec(**data))
        job = Job(job_id, prepared.run.spec, client, time.time(), prepared.run)
        with self.board.lock:
            if self.board.live(job_id) is not None:
                return
            self.board.add(job)
            self.workers.put(job)

    def control(self, job_id: str, action: str) -> dict:
        job = self.board.live(job_id)
        try:
            if job is None:
                raise JobError("not_found", f"no job {job_id!r}")
            return self.workers.control(job, action)
        except JobError as exc:
            return {"error": exc.kind, "detail": exc.detail}

    async def frames(self, job_id: str):
        """The job's frames until it ends: the latest each time (with backpressure, a slow reader
        skips frames instead of queueing them), at most FOOLING_EVENTS_PER_SECOND: what the streams
        send on, and no more crosses the process boundary."""
        import asyncio

        version, sent = -1, 0.0
        interval = 1.0 / max(0.1, self.settings.events_per_second)
        while True:
            job = self.board.live(job_id)
            if job is None:
                return
            await self.board.wait(job_id, version, timeout=5.0)
            if job.finished:
                yield frame(job, final=True, snap=self.last.snaps.pop(job_id, None))
                return
            if job.version > version:
                wait = sent + interval - time.monotonic()
                if wait > 0 and not job.paused:  # a pause is shown at once
                    await asyncio.sleep(wait)
                    if job.finished:
                        continue
                version, sent = job.version, time.monotonic()
                yield frame(job, final=False)

    async def score(self, model_id: str, x: np.ndarray) -> np.ndarray:
        """Probabilities for a batch the API gathered: through this engine's own batcher, so the
        batches of several API threads go through the model together, between the jobs' passes."""
        probs = await self.lab.scorer.probabilities(model_id, torch.tensor(x))
        self.scored += len(x)
        return probs.numpy()

    async def top(self, model_id: str, rows: np.ndarray, k: int) -> tuple[list, list]:
        """POST /api/v1/score/tensor's rows (uint8, as sent): the k best classes of each."""
        shape = self.lab.registry.get(model_id).input_shape
        out = await self.lab.scorer.top_in_chunks(model_id, rows, chunk_rows(shape, self.settings.tensor_chunk_pixels),
                                                  to_unit, k)
        self.scored += len(rows)
        return out

    def adopt(self) -> dict:
        """A web server has (re)started and taken the engines: the jobs an earlier one left here are
        cancelled (nobody follows them, and its store has marked them interrupted), so they do not
        hold this engine's job slots until they time out. Says how many there were, and the
        settings this engine was started with (a detached engine keeps them across servers)."""
        orphans = self.board.active()
        for job in orphans:
            with contextlib.suppress(JobError):  # finished meanwhile
                self.workers.control(job, "cancel")
        return {"orphans": len(orphans), "settings": engine_settings(self.settings)}


def start_engines(settings: Settings, gpus: int) -> list:
    """The engine actors, one per GPU of the cluster (``gpus``) or FOOLING_RAY_CPU_ENGINES without:
    found by name when they already run (detached), made otherwise. Ray restarts one that dies
    (max_restarts=-1)."""
    import ray

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


