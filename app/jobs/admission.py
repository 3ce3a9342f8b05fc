"""Whether a job may run here, and what it is: the spec checked against the registry and every cap,
its input image decoded, its method built once (bad parameters fail now, not at the first step),
its per-client and per-network limits, quotas and disk reservation.

``prepare`` is what any process that runs a job needs (the server, and a Ray engine taking a job
the server admitted); ``check_quota``, ``check_limits`` and the disk budget are the server's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from app.budgets import BudgetFull, DiskBudget
from app.fooling.base import resolve_targets
from app.fooling.info import INFO
from app.fooling.methods import MethodError, build
from app.jobs import limits, results
from app.jobs.job import Job, JobError
from app.jobs.run import Run, runtime_of
from app.jobs.spec import JobSpec
from app.jobs.store import JobStore
from app.models.entry import ModelEntry, UnknownModel
from app.serving.lab import Lab


@dataclass
class Prepared:
    """A checked spec: its Run (not started) and what the server keeps of its input."""

    run: Run
    entry: ModelEntry
    png: bytes | None  # the input image, as the job's input.png
    reserve: int  # bytes its files may take, at most


def job_bytes(entry: ModelEntry, targets: list[int] | None) -> int:
    """About what a job will keep on disk, at most: a PNG per target (noise barely compresses), the
    grid of them, the curve and summary."""
    return 2 * max(1, len(targets or [])) * math.prod(entry.input_shape) + 256 * 1024


class Admission:
    def __init__(self, lab: Lab, store: JobStore | None = None) -> None:
        self.lab, self.settings, self.store = lab, lab.settings, store
        self.disk: DiskBudget | None = None  # the server's disk budget, where the app sets one

    def entry(self, model_id: str) -> ModelEntry:
        reg = self.lab.registry
        try:
            entry = reg.get(model_id)
        except UnknownModel:
            known = ", ".join(e.id for e in reg.list())
            raise JobError("not_found", f"unknown model {model_id!r}; known models: {known}", "model") from None
        if not entry.available:
            raise JobError("conflict", f"model {model_id!r} is not available: {entry.reason}", "model")
        return entry

    def validate(self, spec: JobSpec, entry: ModelEntry) -> list[int] | None:
        """Check a spec against the model and the caps; return its targets (None: untargeted)."""
        s = self.settings
        for name, value, cap in (("generations", spec.generations, s.max_generations),
                                 ("steps", spec.steps, s.max_steps), ("population", spec.population, s.max_population)):
            if value is not None and value > cap:
                raise JobError("invalid", f"{name} is capped at {cap} on this server", name)
        for name in ("generations", "steps", "population", "seed"):
            if name in spec.params:
                raise JobError("invalid", f"give {name} as its own field, not in params", "params")
        counts = INFO[spec.method].counts
        for name, value in (("generations", spec.generations), ("steps", spec.steps)):
            if value is not None and counts and counts != name:
                raise JobError("invalid", f"{spec.method} counts {counts or 'batches'}, not {name}", name)
        if isinstance(spec.targets, list) and len(spec.targets) > s.max_targets:  # before duplicates are merged
            raise JobError("invalid", f"at most {s.max_targets} targets per job", "targets")
        targets = None
        if spec.targets is not None or not spec.adversarial:
            try:
                targets = resolve_targets(spec.targets if spec.targets is not None else "all", entry.labels)
            except ValueError as exc:
                raise JobError("invalid", str(exc), "targets") from None
            if len(targets) > s.max_targets:
                raise JobError("invalid", f"at most {s.max_targets} targets per job", "targets")
        if spec.adversarial and spec.image is None and spec.upload is None:
            raise JobError("invalid", f"{spec.method} perturbs a real image: give image (a data URL) or upload",
                           "image")
        try:
            limits.check_params(spec.params)
            limits.check_work(spec.method, self.options(spec, entry), len(targets or []), entry.input_shape,
                              s.max_step_work, s.max_job_pixels, entry.num_classes)
        except limits.LimitError as exc:
            raise JobError("invalid", exc.detail, exc.field) from None
        return targets

    def options(self, spec: JobSpec, entry: ModelEntry) -> dict:
        """The method's options: the spec's, and for gradient jobs a slice size, so that one step on
        the compute thread stays under FOOLING_STEP_CHUNK_WORK (about a second)."""
        opts = spec.options()
        if spec.method == "gradient":
            per_image = math.prod(entry.input_shape) * limits.BACKWARD
            opts.setdefault("chunk", max(1, self.settings.step_chunk_work // per_image))
        return opts

    def prepare(self, spec: JobSpec) -> Prepared:
        s = self.settings
        entry = self.entry(spec.model)
        targets = self.validate(spec, entry)
        image: torch.Tensor | None = None
        png = None
        if spec.image is not None or spec.upload is not None:
            try:
                image, png = results.input_image(spec.image, spec.upload, entry, s.data_dir, s.max_image_pixels,
                                                 s.max_upload_bytes)
            except results.InputError as exc:
                raise JobError(exc.kind, exc.detail, exc.field) from None
        options = self.options(spec, entry)
        try:  # the method checks its own parameters; nothing runs until the first step
            build(spec.method, entry, self.lab.registry.model(spec.model), None, targets, spec.encoding, spec.seed,
                  options, image)
        except (MethodError, TypeError, ValueError) as exc:
            raise JobError("invalid", str(exc), "params") from None
        runtime = runtime_of(spec.method, entry, self.lab.registry.device)
        run = Run(spec, entry.labels, targets, image=image, options=options, runtime=runtime,
                  time_limit_s=s.job_timeout_s)
        return Prepared(run, entry, png, job_bytes(entry, targets))

    # -- the server's caps ----------------------------------------------------------------------
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
                raise JobError("too_large", f"{what} keep {used // 2**20} MB on this server "
                                            f"(quota {quota // 2**20} MB): delete some first")

    def check_disk(self, size: int) -> None:
        if self.disk is not None:  # outside the board's lock: its meters read the active jobs
            try:
                self.disk.check(size)
            except BudgetFull as exc:
                raise JobError("full", exc.detail) from None

    def check_limits(self, active: list[Job], client: str, address: str) -> None:
        """429 past the jobs a client, or a network, may have queued or running at once."""
        s = self.settings
        mine = sum(1 for j in active if j.client == client)
        if mine >= s.max_jobs_per_client:
            raise JobError("busy", f"you already have {mine} jobs queued or running (limit "
                           f"{s.max_jobs_per_client}); cancel one or wait", retry_after=5,
                           quota=("jobs-per-client", s.max_jobs_per_client))
        # Behind one NAT a whole class shares an address: this cap is higher, and stops a
        # client that takes a new cookie for every job from sidestepping the one above.
        here = sum(1 for j in active if address and j.address == address)
        if here >= s.max_jobs_per_address:
            raise JobError("busy", f"{here} jobs are queued or running from your network address (limit "
                           f"{s.max_jobs_per_address}); try again shortly", retry_after=10,
                           quota=("jobs-per-address", s.max_jobs_per_address))

    def keep_upload(self, data: bytes, client: str, address: str) -> tuple[str, object]:
        """Keep an image as the client's upload, within its quotas and the server's disk budget:
        (upload id, the decoded image). 413 past a quota, 507 (BudgetFull) past the budget."""
        self.check_quota(client, address)
        if self.disk is not None:
            self.disk.check(len(data))
        upload_id, img, size = results.save_upload(data, self.settings.data_dir, self.settings.max_image_pixels)
        self.store.add_upload(upload_id, client, size, address)
        return upload_id, img
