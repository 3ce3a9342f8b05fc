"""The Ray side of the Ray backend: engine actors and the pool the API process keeps of them.

An engine is one actor per GPU (or FOOLING_RAY_CPU_ENGINES on CPU), detached and named ``engine-0``,
``engine-1``, ... in the namespace ``fooling-lab``. It keeps its models resident and runs many jobs
at once with a LocalRunner of its own, so their forward passes are batched together exactly as on
one machine; it scores the API's batches with its own Scorer, between those passes. It is never one
actor per job (each would load its own model copy, and nothing would be batched).
"""

from __future__ import annotations

import base64
import contextlib
import logging
import os
import secrets
import sys
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from app.fooling.base import Snapshot
from app.jobs.job import Job, JobError
from app.jobs.runner import LocalRunner
from app.jobs.spec import JobSpec
from app.jobs.store import JobStore
from app.serving.lab import Lab
from app.serving.tensors import chunk_rows, to_unit
from app.settings import ROOT, Settings

log = logging.getLogger(__name__)

NAMESPACE = "fooling-lab"
ENGINE_START_S = 600.0  # the first start loads (and may export) every model on every engine
CALL_TIMEOUT_S = 10.0  # the longest the API waits on one engine call (a dead actor errs sooner)
GONE_S = 6.0  # a job's engine silent this long is taken for lost (Ray itself notices a lost node later)


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


def engine_settings(settings: Settings) -> dict:
    """The settings an engine is made with that a server may change between starts."""
    return {"preload": settings.preload, "runtime": settings.runtime, "ray_engine_jobs": settings.ray_engine_jobs,
            "ray_gpu_memory": settings.ray_gpu_memory, "batching": settings.batching}


class Engine:
    """A Ray actor (made with ray.remote in start_engines): models resident, a LocalRunner inside."""

    def __init__(self, settings: Settings, index: int) -> None:
        from app.serving import compute

        scratch = Path(tempfile.mkdtemp(prefix=f"fooling-engine-{index}-"))
        # The engine runs what the API process accepted: its own caps are the per-engine job count.
        self.settings = replace(settings, data_dir=scratch, onnx_dir=settings.onnx_dir or settings.data_dir / "onnx",
                                workers=settings.ray_engine_jobs, queue_size=10_000, max_jobs_per_client=10_000,
                                max_jobs_per_address=10_000)
        self.index = index
        if self.settings.torch_threads > 0:
            torch.set_num_threads(self.settings.torch_threads)
        if settings.ray_gpu_memory and torch.cuda.is_available():  # room for what else shares the GPU
            torch.cuda.set_per_process_memory_fraction(settings.ray_gpu_memory)
        self.lab = Lab.create(self.settings)
        compute.run(self.lab.registry.load_all)
        self.runner = _EngineRunner(self.lab, JobStore(scratch))
        self.scored = 0  # images scored for the API (GET /readyz shows it; tests check where scoring ran)

    def info(self) -> dict:
        return {"index": self.index, "models": [e.id for e in self.lab.registry.list() if e.available],
                "jobs": len(self.runner.active()), "device": self.lab.registry.device, "scored": self.scored}

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
        orphans = [job.id for job in self.runner.active()]
        for job_id in orphans:
            with contextlib.suppress(JobError):  # finished meanwhile
                self.runner.control(job_id, "cancel")
        return {"orphans": len(orphans), "settings": engine_settings(self.settings)}


def _reachable(address: str, timeout: float = 5.0) -> None:
    """The cluster's GCS answers at host:port (ray:// client addresses: that the port is open).
    Checked before ray.init, which retries for tens of seconds before it gives up."""
    import socket

    host, _, port = address.removeprefix("ray://").rpartition(":")
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout):
            pass
    except (OSError, ValueError) as exc:
        raise RuntimeError(f"cannot reach the Ray cluster at {address}: {exc}") from None
    if address.startswith("ray://"):
        return
    try:  # something listens there: is it a Ray GCS? (Ray's own CLI asks the same way)
        from ray._raylet import GcsClient
    except ImportError:
        return
    # In a daemon thread: against a port that never speaks gRPC it would wait 40 s (and hold the exit).
    answer: list = []

    def ask() -> None:
        try:
            GcsClient(address=f"{host or '127.0.0.1'}:{port}")
            answer.append(None)
        except Exception as exc:
            answer.append(exc)

    t = threading.Thread(target=ask, name="ray-probe", daemon=True)
    t.start()
    t.join(2 * timeout)
    if not answer:
        raise RuntimeError(f"{address} answers, but not as a Ray cluster's head (no answer in {2 * timeout:.0f} s)")
    if answer[0] is not None:
        raise RuntimeError(f"{address} answers, but not as a Ray cluster's head: {answer[0]}")


LOOPBACK = "127.0.0.1"


def local_instance_env(env) -> None:
    """Whoever reaches a Ray instance's ports can run code in it. The local instance the app starts
    is this machine's alone: it takes the loopback address as its node address, and since Ray's
    gRPC servers (2.60) listen on every interface whatever that address is, it also requires a
    token made at this start (Ray's token authentication), which only its own processes inherit.
    A token the operator set (RAY_AUTH_MODE) is kept."""
    if env.get("RAY_AUTH_MODE"):
        return
    env["RAY_AUTH_MODE"] = "token"
    env["RAY_AUTH_TOKEN"] = secrets.token_hex(32)


def connect(settings: Settings) -> None:
    """Join the cluster at FOOLING_RAY_ADDRESS, or start a local Ray instance when it is unset.
    Raises RuntimeError with a plain message when the cluster cannot be reached."""
    if not settings.ray_address:
        if "ray" in sys.modules:  # Ray reads its auth settings once, when it is imported
            log.warning("Ray was imported before the local instance was started: it runs without a token")
        else:
            local_instance_env(os.environ)
    import ray

    if settings.ray_address and settings.ray_address not in ("auto", "local"):
        _reachable(settings.ray_address)  # ray.init would retry for 25-40 s before giving up
    if ray.is_initialized():
        return
    try:
        if settings.ray_address:
            ray.init(address=settings.ray_address, namespace=NAMESPACE, log_to_driver=False)
        else:  # a local instance: its workers import this project from here
            ray.init(namespace=NAMESPACE, include_dashboard=False, log_to_driver=False, _node_ip_address=LOOPBACK,
                     runtime_env={"env_vars": {"PYTHONPATH": str(ROOT)}})
    except Exception as exc:  # ConnectionError, a version mismatch, ...
        raise RuntimeError(f"cannot reach the Ray cluster at {settings.ray_address or '(local)'}: {exc}") from exc


def cpu_share(settings: Settings, engines: int, gpus: int) -> int:
    """Torch threads for each process when a local Ray instance runs engines on this machine's CPUs:
    the engines and the web server (which scores there, see ray_runner.scoring_place) share the cores
    rather than each taking them all (oversubscribed threads thrash). 0: leave the settings as they are."""

    if settings.ray_address or gpus or settings.torch_threads > 0:
        return 0
    return max(1, (os.cpu_count() or 2) // (engines + 1))


def cluster_gpus() -> int:
    import ray

    return int(ray.cluster_resources().get("GPU", 0))


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
        with self._lock:
            ranked = sorted((max(i["jobs"], self._load[n]), n) for n, i in enumerate(self._info)
                            if i is not None and model_id in i["models"])
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
