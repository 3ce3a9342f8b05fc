"""The job runner the web layer uses: admission, the store, the live jobs, and a backend that runs
them (the local workers, or engines on a Ray cluster).

The web layer depends on the ``Runner`` protocol only. ``JobRunner`` composes the parts:

    Admission (checks, caps, quotas) -> JobStore (records) + Board (live jobs) -> Backend (runs them)

and every job ends through the Board, whose keeper (results.Saved) writes its files and record.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable
from typing import Protocol

from app.budgets import DiskBudget
from app.files import write_whole
from app.jobs.admission import Admission
from app.jobs.board import Board
from app.jobs.job import Job, JobError
from app.jobs.results import Saved, uploads_dir
from app.jobs.spec import JobSpec
from app.jobs.store import JobStore
from app.jobs.workers import Workers
from app.serving.lab import Lab

log = logging.getLogger(__name__)


class Runner(Protocol):
    """What the API and pages use of the job runner."""

    store: JobStore  # records and files, read by lists, downloads and the wall

    def submit(self, spec: JobSpec, client: str, *, address: str = "", token_hash: str | None = None,
               job_id: str | None = None, room: str | None = None) -> str: ...

    def control(self, job_id: str, action: str) -> dict: ...  # cancel, pause, resume, step

    def delete(self, job_id: str) -> bool: ...  # cancel if running; remove record and files

    def live(self, job_id: str) -> Job | None: ...

    def record(self, job_id: str) -> dict | None: ...

    async def wait(self, job_id: str, version: int, timeout: float) -> None: ...

    def keep_upload(self, data: bytes, client: str, address: str) -> tuple[str, object]: ...

    def readiness(self) -> tuple[bool, dict]: ...  # (ready, what GET /readyz adds about the backend)

    @property
    def closing(self) -> bool: ...


class Backend(Protocol):
    """Where the jobs run: the local workers (workers.py) or engines on a Ray cluster (ray/runner.py)."""

    engines_started: bool

    def describe(self) -> dict: ...  # what GET /readyz adds about it

    def full(self) -> bool: ...

    def put(self, job: Job) -> None: ...

    def control(self, job: Job, action: str) -> dict: ...

    def stop(self, job: Job) -> None: ...  # the job is being deleted

    def close(self) -> None: ...


class JobRunner:
    def __init__(self, lab: Lab, store: JobStore, backend: Callable[[Lab, Board], Backend] = Workers) -> None:
        self.lab, self.store, self.settings = lab, store, lab.settings
        store.mark_interrupted()  # jobs an earlier server left running end "interrupted"
        self.admission = Admission(lab, store)
        self.saved = Saved(store)
        self.board = Board(self.saved)
        self.backend = backend(lab, self.board)

    # -- what the web layer uses ----------------------------------------------------------------
    @property
    def closing(self) -> bool:
        return self.board.closing

    @property
    def disk(self) -> DiskBudget | None:
        return self.admission.disk

    @disk.setter
    def disk(self, budget: DiskBudget | None) -> None:
        self.admission.disk = budget

    def submit(self, spec: JobSpec, client: str, *, address: str = "", token_hash: str | None = None,
               job_id: str | None = None, room: str | None = None) -> str:
        """Queue a job; ``job_id`` (new, random) may be chosen by the caller, e.g. to derive its token;
        ``room``: the classroom room it belongs to (checked by the caller)."""
        if self.closing:
            raise JobError("unavailable", "the server is shutting down")
        prepared = self.admission.prepare(spec)
        self.admission.check_quota(client, address)
        self.admission.check_disk(prepared.reserve)
        with self.board.lock:
            self.admission.check_limits(self.board.active(), client, address)
            if self.backend.full():
                raise JobError("busy", "the job queue is full; try again shortly", retry_after=10,
                               quota=("job-queue", self.settings.queue_size))
            job = Job(job_id or secrets.token_urlsafe(12), spec, client, time.time(), prepared.run, address=address,
                      room=room, reserved=prepared.reserve)
            # The record and input exist before the backend can see the job.
            self.store.create(job.id, client, spec.model_dump(exclude={"image"}), address=address,
                              token_hash=token_hash, room=room)
            if prepared.png is not None:
                write_whole(self.store.folder(job.id) / "input.png", prepared.png)
            self.board.add(job)
            self.backend.put(job)  # only submit() puts, under this lock: the check above holds
        return job.id

    def control(self, job_id: str, action: str) -> dict:
        job = self.live(job_id)
        if job is None or job.finished:
            rec = self.store.get(job_id)
            if rec is None:
                raise JobError("not_found", f"no job {job_id!r}")
            raise JobError("conflict", f"job {job_id} has already finished ({rec['status']})")
        return self.backend.control(job, action)

    def delete(self, job_id: str) -> bool:
        """Remove a job: its record, its files, its gallery entry. A running job is cancelled first
        and leaves nothing behind when it stops. False when there was no such job."""
        job = self.live(job_id)
        if job is not None:
            self.backend.stop(job)
            self.board.forget(job_id)
            job.publish()
        existed = job is not None or self.store.get(job_id) is not None
        self.saved.remove(job_id)
        return existed

    def live(self, job_id: str) -> Job | None:
        return self.board.live(job_id)

    def record(self, job_id: str) -> dict | None:
        return self.store.get(job_id)

    def active(self) -> list[Job]:
        return self.board.active()

    async def wait(self, job_id: str, version: int, timeout: float) -> None:
        await self.board.wait(job_id, version, timeout)

    def keep_upload(self, data: bytes, client: str, address: str) -> tuple[str, object]:
        return self.admission.keep_upload(data, client, address)

    def reserved_bytes(self) -> int:
        """What the jobs not saved yet may write: the disk budget counts it until they are."""
        return sum(j.reserved for j in self.active())

    def readiness(self) -> tuple[bool, dict]:
        return self.backend.engines_started, self.backend.describe()

    # -- retention and shutdown -----------------------------------------------------------------
    def expire(self, cutoff: float) -> dict[str, int]:
        """Delete finished, unpinned jobs and uploads last touched before ``cutoff``, and
        Idempotency-Keys past their time (app.budgets.Retention calls this)."""
        self.store.expire_keys(time.time() - self.settings.idempotency_ttl_s)
        jobs, uploads = self.store.expired(cutoff)
        for job_id in jobs:
            self.board.forget(job_id)
            self.saved.remove(job_id)
        for upload_id in uploads:
            (uploads_dir(self.settings.data_dir) / f"{upload_id}.png").unlink(missing_ok=True)
            self.store.delete_upload(upload_id)
        return {k: v for k, v in (("jobs", len(jobs)), ("uploads", len(uploads))) if v}

    def sweep(self, now: float | None = None) -> tuple[int, int]:
        """Retention by FOOLING_RETENTION_DAYS: (jobs, uploads) deleted."""
        gone = self.expire((now or time.time()) - self.settings.retention_days * 86_400)
        return gone.get("jobs", 0), gone.get("uploads", 0)

    def close(self) -> None:
        """Stop accepting, interrupt running jobs (their best so far is saved), wake the streams."""
        self.board.close()
        self.backend.close()


def make_runner(lab: Lab, store: JobStore) -> JobRunner:
    """FOOLING_BACKEND: local, ray (exits with a clear message when the cluster cannot be reached),
    or auto (Ray when FOOLING_RAY_ADDRESS is set and answers, else local)."""
    backend = lab.settings.backend
    if backend == "local" or (backend == "auto" and not lab.settings.ray_address):
        return JobRunner(lab, store)
    try:
        from app.jobs.ray.runner import RayBackend  # Ray is imported only for this backend

        return JobRunner(lab, store, RayBackend)
    except (RuntimeError, ImportError) as exc:
        if backend == "auto":
            log.warning("FOOLING_BACKEND=auto: %s; running jobs locally", exc)
            return JobRunner(lab, store)
        raise SystemExit(f"FOOLING_BACKEND=ray: {exc}") from None
