"""A job's live state while it is queued or running, and the error for a request the runner refuses."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import torch

from app.fooling.base import Snapshot
from app.jobs.spec import JobSpec
from app.jobs.store import ACTIVE


class JobError(Exception):
    """A job request that cannot be accepted; ``status`` is the HTTP status to answer with."""

    def __init__(self, status: int, detail: str, field: str | None = None, retry_after: int | None = None,
                 policy: tuple[str, int] | None = None):
        super().__init__(detail)
        self.status, self.detail, self.field, self.retry_after = status, detail, field, retry_after
        self.policy = policy  # for a 429: (the quota's name, its size), sent as RateLimit-Policy


@dataclass
class Job:
    """A job's live state while it is queued or running (finished jobs are read from the store)."""

    id: str
    spec: JobSpec
    client: str  # the owner: the signed client id that started it
    created: float
    labels: list[str]
    status: str = "queued"
    started: float | None = None
    snap: Snapshot | None = None
    version: int = 0  # bumped on every published frame
    changed: list[int] = field(default_factory=list)  # per target: version when its image last changed
    history: list[dict] = field(default_factory=list)
    reached: dict[int, dict] = field(default_factory=dict)
    error: str | None = None
    stop_reason: str | None = None
    cancel: bool = False
    finishing: bool = False
    paused: bool = False
    step_credits: int = 0
    cond: threading.Condition = field(default_factory=threading.Condition)
    listeners: set = field(default_factory=set)  # (loop, asyncio.Event) pairs of open streams
    png_cache: dict[int, tuple[int, bytes]] = field(default_factory=dict)
    address: str = ""  # the network address it came from (per-address caps)
    gen: object = None  # the method's generator, kept while the job is parked
    member: object = None  # its place in the model's job batcher while a worker runs it
    parked_at: float | None = None  # monotonic time it was parked (paused, holding no worker)
    deleted: bool = False  # deleted while running: finishing must leave nothing behind
    image: torch.Tensor | None = None  # the real image of adversarial jobs, decoded at submit
    targets: list[int] | None = None  # resolved at submit
    runtime: dict = field(default_factory=dict)  # what ran its forward passes, and why (summary.json)
    room: str | None = None  # the classroom room it was started in
    reserved: int = 0  # bytes its files may take: counted against the disk budget until it is saved

    @property
    def finished(self) -> bool:
        return self.status not in ACTIVE

    def elapsed(self) -> float:
        return 0.0 if self.started is None else time.time() - self.started
