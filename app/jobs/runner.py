"""The job runner: a bounded queue and a pool of worker threads that drive the engines' step-wise
generators, publish throttled frames for the streams and pages, and save results.

The API and pages see only the ``Runner`` interface (submit, control, look up, wait for change,
close), so a distributed backend (Ray) can replace ``LocalRunner`` without touching them.

Where the work happens: evolutionary jobs run their light tensor work (mutation, rendering,
archive) in their worker thread with one torch thread each, and send every population to the
model's shared job batcher, which runs forward passes on the single compute thread; populations
of several jobs that are waiting at the same moment go through the model together. Gradient and
adversarial jobs need backward passes, so each of their steps runs whole on the compute thread.
Either way each running job gets one turn per forward pass: none starves.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import math
import queue
import secrets
import shutil
import threading
import time
import traceback
from abc import ABC, abstractmethod
from contextlib import nullcontext

import torch

from app.budgets import BudgetFull, DiskBudget
from app.fooling.base import SUCCESS, Snapshot, history_point, resolve_targets
from app.fooling.methods import METHODS, MethodError, build
from app.jobs import limits, results
from app.jobs.job import Job, JobError
from app.jobs.spec import STEPPED, JobSpec
from app.jobs.store import JobStore, write_whole
from app.models.entry import UnknownModel
from app.serving import compute
from app.serving.lab import Lab

log = logging.getLogger(__name__)


def folder_bytes(folder) -> int:
    return sum(p.stat().st_size for p in folder.glob("*") if p.is_file()) if folder.is_dir() else 0

HISTORY_POINTS = 1000  # the confidence chart keeps at most this many points (halved when full)


class Runner(ABC):
    """What the API and pages need from a job backend."""

    @abstractmethod
    def submit(self, spec: JobSpec, client: str, address: str = "", token_hash: str | None = None,
               job_id: str | None = None, room: str | None = None) -> str: ...

    @abstractmethod
    def delete(self, job_id: str) -> bool: ...  # cancel if running; remove record and files

    @abstractmethod
    def control(self, job_id: str, action: str) -> dict: ...  # cancel, pause, resume, step

    @abstractmethod
    def live(self, job_id: str) -> Job | None: ...

    @abstractmethod
    def record(self, job_id: str) -> dict | None: ...

    @abstractmethod
    async def wait(self, job_id: str, version: int, timeout: float) -> None: ...

    @abstractmethod
    def close(self) -> None: ...


FORWARD_ONLY = ("evolve", "map-elites", "random")


def job_bytes(spec: JobSpec, entry, targets: list[int] | None) -> int:
    """About what a job will keep on disk, at most: a PNG per target (noise barely compresses), the
    grid of them, the curve and summary."""
    return 2 * max(1, len(targets or [])) * math.prod(entry.input_shape) + 256 * 1024


def job_runtime(method: str, entry) -> dict:
    """Evolution and the random baseline score through the model's forward runtime; gradient
    methods run PyTorch (ONNX Runtime has no gradients)."""
    if method in FORWARD_ONLY:
        return {"name": entry.runtime, "reason": entry.runtime_reason}
    return {"name": "torch", "reason": f"{method} needs gradients: PyTorch"}


class LocalRunner(Runner):
    def __init__(self, lab: Lab, store: JobStore) -> None:
        self.lab, self.store, self.settings = lab, store, lab.settings
        self.interrupted = store.mark_interrupted()
        self._queue: queue.Queue[Job | None] = queue.Queue(maxsize=self.settings.queue_size)
        self._jobs: dict[str, Job] = {}
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._resumed: collections.deque[Job] = collections.deque()  # parked jobs to run again, first
        self._workers = [threading.Thread(target=self._work, name=f"job-worker-{i}", daemon=True)
                         for i in range(max(1, self.settings.workers))]
        for w in self._workers:
            w.start()
        self.disk: DiskBudget | None = None  # the server's disk budget, where the app sets one

    # -- accepting jobs -------------------------------------------------------------------------
    def validate(self, spec: JobSpec) -> tuple[list[int] | None, list[str]]:
        """Check a spec against the registry and the limits; return (targets, labels)."""
        s = self.settings
        reg = self.lab.registry
        try:
            entry = reg.get(spec.model)
        except UnknownModel:
            known = ", ".join(e.id for e in reg.list())
            raise JobError(404, f"unknown model {spec.model!r}; known models: {known}", "model") from None
        if not entry.available:
            raise JobError(409, f"model {spec.model!r} is not available: {entry.reason}", "model")
        for name, value, cap in (("generations", spec.generations, s.max_generations),
                                 ("steps", spec.steps, s.max_steps), ("population", spec.population, s.max_population)):
            if value is not None and value > cap:
                raise JobError(422, f"{name} is capped at {cap} on this server", name)
        for name in ("generations", "steps", "population", "seed"):
            if name in spec.params:
                raise JobError(422, f"give {name} as its own field, not in params", "params")
        if spec.method in STEPPED and spec.generations is not None:
            raise JobError(422, f"{spec.method} counts steps, not generations", "generations")
        if spec.method in ("evolve", "map-elites") and spec.steps is not None:
            raise JobError(422, f"{spec.method} counts generations, not steps", "steps")
        if isinstance(spec.targets, list) and len(spec.targets) > s.max_targets:  # before duplicates are merged
            raise JobError(422, f"at most {s.max_targets} targets per job", "targets")
        targets = None
        if spec.targets is not None or not spec.adversarial:
            try:
                targets = resolve_targets(spec.targets if spec.targets is not None else "all", entry.labels)
            except ValueError as exc:
                raise JobError(422, str(exc), "targets") from None
            if len(targets) > s.max_targets:
                raise JobError(422, f"at most {s.max_targets} targets per job", "targets")
        if spec.adversarial and spec.image is None and spec.upload is None:
            raise JobError(422, f"{spec.method} perturbs a real image: give image (a data URL) or upload", "image")
        try:
            limits.check_params(spec.params)
            limits.check_work(spec.method, self.options(spec, entry), len(targets or []), entry.input_shape,
                              s.max_step_work, s.max_job_pixels, entry.num_classes)
        except limits.LimitError as exc:
            raise JobError(422, exc.detail, exc.field) from None
        return targets, entry.labels

    def options(self, spec: JobSpec, entry) -> dict:
        """The engine's options for a job: the spec's, and for gradient jobs a slice size, so that
        one step on the compute thread stays under FOOLING_STEP_CHUNK_WORK (about a second)."""
        opts = spec.options()
        if spec.method == "gradient":
            per_image = math.prod(entry.input_shape) * limits.BACKWARD
            opts.setdefault("chunk", max(1, self.settings.step_chunk_work // per_image))
        return opts

    def submit(self, spec: JobSpec, client: str, address: str = "", token_hash: str | None = None,
               job_id: str | None = None, room: str | None = None) -> str:
        """Queue a job; ``job_id`` (new, random) may be chosen by the caller, e.g. to derive its token;
        ``room``: the classroom room it belongs to (checked by the caller)."""
        if self._closing.is_set():
            raise JobError(503, "the server is shutting down")
        targets, labels = self.validate(spec)
        entry = self.lab.registry.get(spec.model)  # validate() found it: once here for the rest
        image = png = None
        if spec.image is not None or spec.upload is not None:
            try:
                image, png = results.input_image(spec.image, spec.upload, entry, self.settings.data_dir,
                                                 self.settings.max_image_pixels, self.settings.max_upload_bytes)
            except results.InputError as exc:
                raise JobError(exc.status, exc.detail, exc.field) from None
        try:  # the engine checks its own parameters; nothing runs until the first step
            build(spec.method, entry, self.lab.registry.model(spec.model), None, targets, spec.encoding, spec.seed,
                  self.options(spec, entry), image)
        except (MethodError, TypeError, ValueError) as exc:
            raise JobError(422, str(exc), "params") from None
        self.check_quota(client, address)
        reserve = job_bytes(spec, entry, targets)
        if self.disk is not None:  # outside the lock: its meters read the active jobs (reserved_bytes)
            try:
                self.disk.check(reserve)
            except BudgetFull as exc:
                raise JobError(507, exc.detail) from None
        with self._lock:
            active = [j for j in self._jobs.values() if not j.finished]
            mine = sum(1 for j in active if j.client == client)
            if mine >= self.settings.max_jobs_per_client:
                raise JobError(429, f"you already have {mine} jobs queued or running (limit "
                               f"{self.settings.max_jobs_per_client}); cancel one or wait", retry_after=5,
                               policy=("jobs-per-client", self.settings.max_jobs_per_client))
            # Behind one NAT a whole class shares an address: this cap is higher, and stops a
            # client that takes a new cookie for every job from sidestepping the one above.
            here = sum(1 for j in active if address and j.address == address)
            if here >= self.settings.max_jobs_per_address:
                raise JobError(429, f"{here} jobs are queued or running from your network address (limit "
                               f"{self.settings.max_jobs_per_address}); try again shortly", retry_after=10,
                               policy=("jobs-per-address", self.settings.max_jobs_per_address))
            job = Job(job_id or secrets.token_urlsafe(12), spec, client, time.time(), labels, address=address,
                      room=room)
            job.changed = [0] * len(targets or [0])
            job.reserved = reserve
            job.image, job.targets = image, targets
            job.runtime = job_runtime(spec.method, entry)
            if self._queue.full():
                raise JobError(429, "the job queue is full; try again shortly", retry_after=10,
                               policy=("job-queue", self.settings.queue_size))
            # The record and input exist before any worker can see the job.
            self.store.create(job.id, client, spec.model_dump(exclude={"image"}), address=address,
                              token_hash=token_hash, room=room)
            if png is not None:
                write_whole(self.store.folder(job.id) / "input.png", png)
            self._jobs[job.id] = job
            self._queue.put_nowait(job)  # only submit() puts, under this lock: the check above holds
        return job.id

    def check_quota(self, client: str, address: str) -> None:
        """413 when the client, or all clients of its network together, keep their disk quota
        (FOOLING_DISK_QUOTA_MB, FOOLING_DISK_QUOTA_PER_ADDRESS_MB) already."""
        s = self.settings
        for who, column, quota, what in ((client, "client", s.disk_quota_bytes, "your runs and uploads"),
                                         (address, "address", s.disk_quota_per_address_bytes,
                                          "the runs and uploads of your network (every browser and script at "
                                          "your address)")):
            used = self.store.bytes_used(who, column) if who else 0
            if used >= quota:
                raise JobError(413, f"{what} keep {used // 2**20} MB on this server (quota {quota // 2**20} MB): "
                                    "delete some first")

    def keep_upload(self, data: bytes, client: str, address: str) -> tuple[str, object]:
        """Keep an image as the client's upload, within its quotas and the server's disk budget:
        (upload id, the decoded image). 413 past a quota, 507 (BudgetFull) past the budget."""
        self.check_quota(client, address)
        if self.disk is not None:
            self.disk.check(len(data))
        upload_id, img, size = results.save_upload(data, self.settings.data_dir, self.settings.max_image_pixels)
        self.store.add_upload(upload_id, client, size, address)
        return upload_id, img

    # -- control --------------------------------------------------------------------------------
    def control(self, job_id: str, action: str) -> dict:
        job = self.live(job_id)
        if job is None:
            rec = self.store.get(job_id)
            if rec is None:
                raise JobError(404, f"no job {job_id!r}")
            raise JobError(409, f"job {job_id} has already finished ({rec['status']})")
        finish_now = False
        with job.cond:
            if job.finished:
                raise JobError(409, f"job {job_id} has already finished ({job.status})")
            if action == "cancel":
                job.cancel = True
                finish_now = job.status == "queued"  # no worker has it: a worker that takes it now skips it
            elif action == "pause":
                job.paused = True
                if job.status == "running":
                    job.status = "paused"
            elif action == "resume":
                job.paused = False
                if job.status == "paused":
                    job.status = "running"
            elif action == "step":
                if not job.paused:
                    raise JobError(409, "pause the job before stepping it")
                job.step_credits += 1
            else:
                raise JobError(404, f"unknown action {action!r}")
            job.cond.notify_all()
        if finish_now:
            self._finish(job, "cancelled")
        elif action in ("resume", "step", "cancel"):
            self._unpark(job)  # a parked job needs a worker again (to step, run on, or stop and save)
        self._publish(job)
        return {"id": job.id, "status": job.status}

    def delete(self, job_id: str) -> bool:
        """Remove a job: its record, its files, its gallery entry. A running job is cancelled first
        and leaves nothing behind when it stops. False when there was no such job."""
        job = self.live(job_id)
        if job is not None:
            with job.cond:
                job.deleted = job.cancel = True
                job.cond.notify_all()
            if job.status == "queued":
                self._finish(job, "cancelled")
            self._unpark(job)  # a parked job is finished (and cleaned up) by a worker
            with self._lock:
                self._jobs.pop(job_id, None)
            self._publish(job)
        existed = job is not None or self.store.get(job_id) is not None
        self._remove(job_id)
        return existed

    def sweep(self, now: float | None = None) -> tuple[int, int]:
        """Retention: delete finished, unpinned jobs and uploads older than FOOLING_RETENTION_DAYS.
        Returns (jobs, uploads) deleted."""
        gone = self.expire((now or time.time()) - self.settings.retention_days * 86_400)
        return gone.get("jobs", 0), gone.get("uploads", 0)

    def expire(self, cutoff: float) -> dict[str, int]:
        """Delete finished, unpinned jobs and uploads last touched before ``cutoff``, and
        Idempotency-Keys past their time (app.budgets.Retention calls this)."""
        self.store.expire_keys(time.time() - self.settings.idempotency_ttl_s)
        jobs, uploads = self.store.expired(cutoff)
        for job_id in jobs:
            with self._lock:
                self._jobs.pop(job_id, None)
            self._remove(job_id)
        for upload_id in uploads:
            (results.uploads_dir(self.settings.data_dir) / f"{upload_id}.png").unlink(missing_ok=True)
            self.store.delete_upload(upload_id)
        return {k: v for k, v in (("jobs", len(jobs)), ("uploads", len(uploads))) if v}

    def _remove(self, job_id: str) -> None:
        self.store.delete(job_id)
        shutil.rmtree(self.store.root / job_id, ignore_errors=True)

    def live(self, job_id: str) -> Job | None:
        with self._lock:
            return self._jobs.get(job_id)

    def record(self, job_id: str) -> dict | None:
        return self.store.get(job_id)

    def active(self) -> list[Job]:
        with self._lock:
            return [j for j in self._jobs.values() if not j.finished]

    def reserved_bytes(self) -> int:
        """What the jobs not saved yet may write: the disk budget counts it until they are."""
        return sum(j.reserved for j in self.active())

    # -- streams --------------------------------------------------------------------------------
    async def wait(self, job_id: str, version: int, timeout: float) -> None:
        """Return when the job publishes a frame newer than ``version``, finishes, the server
        shuts down, or ``timeout`` passes."""
        job = self.live(job_id)
        if job is None or job.version > version or job.finished or self._closing.is_set():
            return
        ev = asyncio.Event()
        entry = (asyncio.get_running_loop(), ev)
        job.listeners.add(entry)
        try:
            if job.version > version or job.finished:
                return
            await asyncio.wait_for(ev.wait(), timeout)
        except TimeoutError:
            pass
        finally:
            job.listeners.discard(entry)

    @property
    def closing(self) -> bool:
        return self._closing.is_set()

    def _publish(self, job: Job) -> None:
        job.version += 1
        for loop, ev in list(job.listeners):
            try:
                loop.call_soon_threadsafe(ev.set)
            except RuntimeError:  # that stream's loop is gone
                job.listeners.discard((loop, ev))

    # -- running --------------------------------------------------------------------------------
    def _work(self) -> None:
        while not self._closing.is_set():
            self._reap_long_pauses()
            job = self._take()
            if job is None:
                continue
            if job.finished:  # cancelled while queued
                continue
            try:
                self._run(job)
            except Exception as exc:  # a failing job records its error; the worker goes on
                log.warning("job %s failed: %s", job.id, exc)
                job.error = f"{type(exc).__name__}: {exc}"
                if not isinstance(exc, MethodError | ValueError):
                    log.debug("%s", traceback.format_exc())
                self._finish(job, "failed")

    def _take(self) -> Job | None:
        """The next job to run: a resumed (parked) job first, else the queue."""
        with self._lock:
            if self._resumed:
                return self._resumed.popleft()
        try:
            return self._queue.get(timeout=0.1)
        except queue.Empty:
            return None

    def _park(self, job: Job) -> None:
        """A paused job gives its worker back; resume or step puts it in line again."""
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
        with self._lock:
            self._resumed.append(job)

    def _reap_long_pauses(self) -> None:
        """A pause longer than FOOLING_MAX_PAUSE_S cancels the job, keeping its best."""
        limit = self.settings.max_pause_s
        now = time.monotonic()
        for job in self.active():
            parked = job.parked_at
            if parked is not None and now - parked > limit:
                with job.cond:
                    if job.parked_at is None:
                        continue
                    job.parked_at = None
                    job.cancel = True
                job.stop_reason = f"paused longer than {limit:g} s"
                self._finish(job, "cancelled")

    def _run(self, job: Job) -> None:
        spec, lab = job.spec, self.lab
        entry = lab.registry.get(spec.model)
        model = lab.registry.model(spec.model)
        targets, image = job.targets, job.image
        batcher = lab.scorer.job_batcher(spec.model)

        on_compute = spec.method in STEPPED
        # Evolution jobs move in rounds with the model's other jobs (see Batcher.participant).
        part = batcher.participant() if not on_compute else nullcontext()
        with part as member:
            job.member = member
            status = self._loop(job, on_compute, entry, model, targets, image)
            job.member = None
        if status == "parked":
            self._park(job)
            return
        if status == "skip":
            return
        self._finish(job, status)  # after leaving the round: saving must not hold up other jobs

    def _loop(self, job: Job, on_compute: bool, entry, model, targets, image) -> str:
        spec = job.spec

        def score(x: torch.Tensor) -> torch.Tensor:
            return job.member.submit(x.detach().cpu())  # the batcher place of whichever run holds the job

        with job.cond:  # every status change happens under the job's lock
            if job.gen is None and (job.cancel or job.finishing or job.finished or self._closing.is_set()):
                return "skip"  # cancelled (or the server stopped) as we took it: whoever did that finishes it
            if job.gen is None:  # first run; a parked job goes on where it stopped
                job.status, job.started = "running" if not job.paused else "paused", time.time()
        if job.gen is None:
            assert spec.method in METHODS
            self.store.update(job.id, status=job.status)
            job.gen = build(spec.method, entry, model, score, targets, spec.encoding, spec.seed,
                            self.options(spec, entry), image)
        gen = job.gen
        frame_every = 1.0 / max(1.0, 2 * self.settings.events_per_second)  # frames made; streams throttle further
        last_frame = 0.0
        sentinel = object()
        while True:
            with job.cond:
                if job.cancel or self._closing.is_set():
                    break
                if job.paused and job.step_credits == 0:
                    return "parked"  # give the worker to the next job (see _park)
                if job.step_credits:
                    job.step_credits -= 1
            if job.elapsed() > self.settings.job_timeout_s:
                job.stop_reason = f"server time limit ({self.settings.job_timeout_s:.0f} s)"
                break
            if spec.max_seconds is not None and job.elapsed() >= spec.max_seconds:
                job.stop_reason = f"time budget ({spec.max_seconds:g} s)"
                break
            snap = compute.run(next, gen, sentinel) if on_compute else next(gen, sentinel)
            if snap is sentinel:
                break
            self._observe(job, snap)
            now = time.monotonic()
            if now - last_frame >= frame_every or job.paused:
                last_frame = now
                self._publish(job)
        if self._closing.is_set() and not job.cancel:
            return "interrupted"
        return "cancelled" if job.cancel else "done"

    def _observe(self, job: Job, snap: Snapshot) -> None:
        prev = job.snap
        job.snap = snap
        conf = snap.confidence
        if prev is not None and len(prev.confidence) == len(conf):
            for i in (conf != prev.confidence).nonzero().squeeze(1).tolist():
                job.changed[i] = job.version + 1
        else:
            job.changed = [job.version + 1] * len(conf)
        now = job.elapsed()
        for i, c in enumerate(conf.tolist()):
            if c >= SUCCESS and i not in job.reached:
                job.reached[i] = {"step": snap.step, "evaluations": snap.evaluations, "seconds": round(now, 3)}
        point = history_point(snap, now)
        if not job.history or job.history[-1]["step"] != snap.step:
            job.history.append(point)
            if len(job.history) > HISTORY_POINTS:
                job.history = job.history[::2]

    def _finish(self, job: Job, status: str) -> None:
        """Save the result, then flip the status: whoever sees a finished job finds its record."""
        with job.cond:
            if job.finished or job.finishing:
                return
            job.finishing = True
        try:
            result = results.save(job, self.store, status) if job.snap is not None and not job.deleted else None
        except Exception as exc:  # saving must not take the worker down either
            log.warning("could not save job %s: %s", job.id, exc)
            result, job.error = None, job.error or f"saving failed: {exc}"
        if job.deleted:  # deleted meanwhile: whatever was written goes too (delete() cleans up as well)
            self._remove(job.id)
        else:
            self.store.update(job.id, status=status, result=result, error=job.error,
                              progress=results.progress(job), size=folder_bytes(self.store.root / job.id))
        with job.cond:
            job.status = status
            job.cond.notify_all()
        # The record has it all now: a finished job keeps no tensors (RSS stays flat over a term).
        job.gen = job.member = job.snap = job.image = None
        job.png_cache.clear()
        self._publish(job)
        with self._lock:  # keep recent live records a while so streams see the final frame
            for old in [k for k, j in self._jobs.items() if j.finished and j is not job][:-64]:
                del self._jobs[old]

    def close(self) -> None:
        """Stop accepting, interrupt running jobs (their best-so-far is saved), wake the streams."""
        self._closing.set()
        for job in self.active():
            with job.cond:
                job.cond.notify_all()
            if job.status == "queued" or job.parked_at is not None:  # no worker holds it
                job.parked_at = None
                self._finish(job, "interrupted")
            self._publish(job)
        for w in self._workers:
            w.join(timeout=10)
