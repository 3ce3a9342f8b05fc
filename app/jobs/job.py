"""A job's live state while it is queued or running: who owns it, its Run, its controls, and who
is watching it; and the error for a request the runner refuses."""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass, field

from app.errors import Refused
from app.jobs.run import Run
from app.jobs.spec import JobSpec
from app.jobs.store import ACTIVE


class JobError(Refused):
    """A job request the runner will not carry out (see app.errors for the kinds)."""


ACTIONS = ("cancel", "pause", "resume", "step")


@dataclass
class Job:
    """A job's live state while it is queued or running (finished jobs are read from the store)."""

    id: str
    spec: JobSpec
    client: str  # the owner: the signed client id that started it
    created: float
    run: Run
    status: str = "queued"
    version: int = 0  # bumped on every published frame
    error: str | None = None
    cancel: bool = False
    finishing: bool = False
    paused: bool = False
    step_credits: int = 0
    cond: threading.Condition = field(default_factory=threading.Condition)
    listeners: set = field(default_factory=set)  # (loop, asyncio.Event) pairs of open streams
    png_cache: dict[int, tuple[int, bytes]] = field(default_factory=dict)
    address: str = ""  # the network it came from (per-network caps)
    member: object = None  # its place in the model's job batcher while a worker runs it
    parked_at: float | None = None  # monotonic time it was parked (paused, holding no worker)
    deleted: bool = False  # deleted while running: finishing must leave nothing behind
    room: str | None = None  # the classroom room it was started in
    reserved: int = 0  # bytes its files may take: counted against the disk budget until it is saved

    @property
    def finished(self) -> bool:
        return self.status not in ACTIVE

    @property
    def labels(self) -> list[str]:
        return self.run.labels

    def elapsed(self) -> float:
        return self.run.elapsed()

    def apply(self, action: str) -> bool:
        """The control state machine: cancel, pause, resume or step (under the job's lock). True when a
        queued job was cancelled: no worker holds it, so the caller finishes it."""
        with self.cond:
            if self.finished:
                raise JobError("conflict", f"job {self.id} has already finished ({self.status})")
            finish_now = False
            if action == "cancel":
                self.cancel = True
                finish_now = self.status == "queued"  # a worker that takes it now skips it
            elif action == "pause":
                self.paused = True
                if self.status == "running":
                    self.status = "paused"
            elif action == "resume":
                self.paused = False
                if self.status == "paused":
                    self.status = "running"
            elif action == "step":
                if not self.paused:
                    raise JobError("conflict", "pause the job before stepping it")
                self.step_credits += 1
            else:
                raise JobError("not_found", f"unknown action {action!r}")
            self.cond.notify_all()
        return finish_now

    # -- watching -------------------------------------------------------------------------------
    def publish(self) -> None:
        """A new frame: wake every stream waiting on this job."""
        self.version += 1
        for loop, ev in list(self.listeners):
            try:
                loop.call_soon_threadsafe(ev.set)
            except RuntimeError:  # that stream's loop is gone
                self.listeners.discard((loop, ev))

    async def wait(self, version: int, timeout: float) -> None:
        """Return when a frame newer than ``version`` is published, the job finishes, or ``timeout`` passes."""
        if self.version > version or self.finished:
            return
        ev = asyncio.Event()
        entry = (asyncio.get_running_loop(), ev)
        self.listeners.add(entry)
        try:
            if self.version > version or self.finished:
                return
            await asyncio.wait_for(ev.wait(), timeout)
        except TimeoutError:
            pass
        finally:
            self.listeners.discard(entry)
