"""One job's life, without threads: build its method, step it, track its targets and history,
apply its time budgets, and save what it made.

Whoever drives a Run decides where and when it steps: a worker thread of the local runner (between
other jobs' turns, pausing when told), a Ray engine (the same runner, in an actor), or the command
line (a plain loop). The server's mirror of a job on an engine keeps a Run without a method, fed
the engine's snapshots. So a job's files and summary.json are one format wherever it ran.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch

from app.files import write_whole
from app.fooling.base import SUCCESS, ScoreFn, Snapshot, history_point
from app.fooling.figures import confidence_curve, labelled_grid
from app.fooling.info import GRADIENT
from app.fooling.methods import build
from app.jobs.spec import JobSpec
from app.models.defences import rejected_index
from app.models.entry import ModelEntry
from app.serving.imaging import png_bytes, to_png
from app.serving.scoring import top_k

HISTORY_POINTS = 1000  # the confidence curve keeps at most this many points (halved when full)


def runtime_of(method: str, entry: ModelEntry, device: str) -> dict:
    """What runs a method's passes, and where: evolution and the random baseline score through the
    model's forward runtime; gradient methods run PyTorch (ONNX Runtime has no gradients)."""
    if method in GRADIENT:
        return {"name": "torch", "reason": f"{method} needs gradients: PyTorch", "device": device}
    return {"name": entry.runtime, "reason": entry.runtime_reason, "device": device}


@dataclass
class Run:
    """A job's method and what it has reached so far. ``time_limit_s`` is the server's cap on every
    job; ``spec.max_seconds`` the job's own budget; ``history_every`` thins the curve (seconds)."""

    spec: JobSpec
    labels: list[str]
    targets: list[int] | None
    image: torch.Tensor | None = None  # the real image of adversarial (and from-image) jobs
    options: dict = field(default_factory=dict)  # the method's options (the spec's, plus the server's)
    runtime: dict = field(default_factory=dict)
    time_limit_s: float | None = None
    history_every: float = 0.0
    gen: Iterator[Snapshot] | None = None
    snap: Snapshot | None = None
    history: list[dict] = field(default_factory=list)
    reached: dict[int, dict] = field(default_factory=dict)  # target position -> when it reached 99.99%
    changed: list[int] = field(default_factory=list)  # per target: the observation that last changed its image
    observed: int = 0  # snapshots seen
    stop_reason: str | None = None
    started: float | None = None  # wall-clock time of the first step
    point_at: float = 0.0  # elapsed seconds at the curve's last point (unrounded, unlike the point's own)

    def begin(self) -> None:
        if self.started is None:
            self.started = time.time()

    def start(self, entry: ModelEntry, model: torch.nn.Module, score: ScoreFn | None) -> None:
        """Build the method (nothing runs until the first step)."""
        self.begin()
        self.gen = build(self.spec.method, entry, model, score, self.targets, self.spec.encoding, self.spec.seed,
                         self.options, self.image)

    def elapsed(self) -> float:
        return 0.0 if self.started is None else time.time() - self.started

    def over_budget(self) -> str | None:
        """Why the run must stop before its next step, if it must."""
        if self.time_limit_s is not None and self.elapsed() > self.time_limit_s:
            return f"server time limit ({self.time_limit_s:.0f} s)"
        if self.spec.max_seconds is not None and self.elapsed() >= self.spec.max_seconds:
            return f"time budget ({self.spec.max_seconds:g} s)"
        return None

    def step(self) -> Snapshot | None:
        """One step of the method, tracked; None once the run is over (the method ended, or a budget
        stopped it: stop_reason says which)."""
        if self.snap is not None and (reason := self.over_budget()) is not None:  # keep at least one step
            self.stop_reason = reason
            return None
        snap = next(self.gen, None)
        if snap is not None:
            self.observe(snap)
        return snap

    def observe(self, snap: Snapshot) -> None:
        """Track a snapshot: which images changed, which targets reached 99.99% and when, the curve."""
        prev, self.snap = self.snap, snap
        self.observed += 1
        conf = snap.confidence
        if prev is not None and len(prev.confidence) == len(conf) and len(self.changed) == len(conf):
            for i in (conf != prev.confidence).nonzero().squeeze(1).tolist():
                self.changed[i] = self.observed
        else:
            self.changed = [self.observed] * len(conf)
        now = self.elapsed()
        for i, c in enumerate(conf.tolist()):
            if c >= SUCCESS and i not in self.reached:
                self.reached[i] = {"step": snap.step, "evaluations": snap.evaluations, "seconds": round(now, 3)}
        last = self.history[-1] if self.history else None
        if last is None or (last["step"] != snap.step and now - self.point_at >= self.history_every):
            self.point_at = now
            self.history.append(history_point(snap, now))
            if len(self.history) > HISTORY_POINTS:
                self.history = self.history[::2]

    def close_history(self) -> None:
        """The curve ends at the last snapshot, however thinly it was kept."""
        if self.snap is not None and (not self.history or self.history[-1]["step"] != self.snap.step):
            self.history.append(history_point(self.snap, self.elapsed()))

    def progress(self) -> dict:
        snap = self.snap
        return {"step": snap.step if snap else 0, "evaluations": snap.evaluations if snap else 0,
                "elapsed": round(self.elapsed(), 3), "history": self.history}

    def save(self, folder: Path, status: str, job_id: str | None = None) -> dict:
        """Write each target's best image (``<position>.png``), the labelled grid, the curve and
        summary.json into ``folder`` (which exists); return the result (summary.json less id, status, settings and
        history), which the server keeps in its database."""
        snap = self.snap
        self.close_history()
        targets = []
        refused = rejected_index(self.labels)  # through a defence: did it let each image through?
        for i, (t, img, c) in enumerate(zip(snap.targets, snap.images, snap.confidence.tolist(), strict=True)):
            write_whole(folder / f"{i}.png", to_png(img))
            targets.append({"position": i, "index": t, "label": self.labels[t], "confidence": c, "file": f"{i}.png",
                            "reached_9999": self.reached.get(i), "top": top_k(snap.probs[i], self.labels, 5),
                            **({"accepted": int(snap.probs[i].argmax()) != refused} if refused is not None else {})})
        write_whole(folder / "grid.png", png_bytes(labelled_grid(snap, self.labels)))
        if len(self.history) > 1:
            title = f"{self.spec.model}: {self.spec.method} ({self.spec.encoding})"
            write_whole(folder / "curve.png", png_bytes(confidence_curve(self.history, title)))
        result = {"steps": snap.step, "evaluations": snap.evaluations, "seconds": round(self.elapsed(), 3),
                  "ten_crop": bool(self.spec.params.get("ten_crop", False)), "stop_reason": self.stop_reason,
                  "min_confidence": min(t["confidence"] for t in targets),
                  "at_9999": sum(t["confidence"] >= SUCCESS for t in targets), "targets": targets,
                  "extra": jsonable(snap.extra), "runtime": self.runtime or None}
        summary = {"id": job_id, "status": status, "settings": self.spec.model_dump(exclude={"image"}),
                   **result, "history": self.history}
        write_whole(folder / "summary.json", (json.dumps(summary, indent=2) + "\n").encode())
        return result

    def release(self) -> None:
        """Drop the tensors: a finished job keeps only its record (RSS stays flat over a term)."""
        self.gen = self.snap = self.image = None


def jsonable(value):
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if isinstance(value, float | int | str | bool) or value is None:
        return value
    return str(value)
