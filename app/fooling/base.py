"""What every fooling method shares: targets, the scoring function, snapshots, the archive.

A method is a generator: ``for snap in method.run(): ...``. Each step yields a Snapshot with the
best image so far for every target. The caller decides how often to look and may stop at any
step; the same seed on the same device gives the same images.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import torch

from app.models.defences import REJECTED, rejected_index
from app.serving.imaging import quantize

SUCCESS = 0.9999  # the paper's bar: "99.99% confidence"

# images (N, C, H, W) in [0, 1] -> softmax probabilities (N, K). The job runner passes a
# batched, shared scorer; the CLI and tests pass the model directly.
ScoreFn = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class Snapshot:
    step: int
    evaluations: int
    targets: list[int]
    images: torch.Tensor  # (T, C, H, W): the best image so far for each target, 8-bit exact
    confidence: torch.Tensor  # (T,): probability of the target class for that image
    probs: torch.Tensor  # (T, K): full softmax of each best image
    extra: dict = field(default_factory=dict)



def history_point(snap: Snapshot, seconds: float) -> dict:
    """One point of a run's confidence curve: best confidence over targets (min, median, max, mean)."""
    c = snap.confidence
    return {"step": snap.step, "evaluations": snap.evaluations, "seconds": round(seconds, 3),
            "min": float(c.min()), "median": float(c.median()), "max": float(c.max()),
            "mean": float(c.mean()), "at_9999": int((c >= SUCCESS).sum())}


def interleave(parts: list[Iterator[Snapshot]], slices: list[list[int]], shape: tuple[int, ...],
               num_classes: int) -> Iterator[Snapshot]:
    """Run independent methods over slices of the targets (``parts[i]`` over ``slices[i]``) in turn,
    one step of one slice per ``next()``, and yield the merged snapshot each time. The caller then never waits for
    more than one slice's step (a job's compute-thread turn stays short however many targets it
    has). A slice not started yet shows empty cells; the merged step is the least step any slice
    has reached. Memory: the merged images live in one buffer, updated in place slice by slice
    (confidence and probabilities are copies, as in any snapshot)."""
    targets = [t for part in slices for t in part]
    images = torch.zeros((len(targets), *shape))
    conf = torch.zeros(len(targets))
    probs = torch.zeros((len(targets), num_classes))
    steps, evals, started = [0] * len(parts), [0] * len(parts), [False] * len(parts)
    starts = [sum(len(p) for p in slices[:i]) for i in range(len(slices))]
    active = list(range(len(parts)))
    turn = 0
    while active:
        i = active[turn % len(active)]
        snap = next(parts[i], None)
        if snap is None:  # this slice is done (or stopped on its own)
            active.remove(i)
            continue
        rows = slice(starts[i], starts[i] + len(slices[i]))
        images[rows], conf[rows], probs[rows] = snap.images, snap.confidence, snap.probs
        steps[i], evals[i], started[i] = snap.step, snap.evaluations, True
        turn += 1
        yield Snapshot(min(steps) if all(started) else 0, sum(evals), targets, images, conf.clone(), probs.clone())


def last(gen):
    """Run a step-wise method to its end and return its final snapshot."""
    snap = None
    for snap in gen:  # noqa: B007 (only the last one is wanted)
        pass
    return snap


def resolve_targets(spec: str | Sequence[int | str] | int, labels: Sequence[str]) -> list[int]:
    """'all', an index, a label, or a comma-separated / list mix of them -> class indices."""
    if isinstance(spec, int):
        items: list = [spec]
    elif isinstance(spec, str):
        if spec.strip().lower() == "all":  # every class; a detector's "rejected" is its answer, not a class
            return [i for i, name in enumerate(labels) if name != REJECTED]
        items = [s.strip() for s in spec.split(",") if s.strip()]
    else:
        items = list(spec)
    lookup = {name.lower(): i for i, name in enumerate(labels)}
    out: list[int] = []
    for item in items:
        if isinstance(item, str) and item.lower() in lookup:
            idx = lookup[item.lower()]
        else:
            try:
                idx = int(item)
            except (TypeError, ValueError):
                raise ValueError(f"unknown target class {item!r}") from None
        if not 0 <= idx < len(labels):
            raise ValueError(f"target {idx} out of range 0..{len(labels) - 1}")
        if idx == rejected_index(labels):
            raise ValueError(f"{REJECTED!r} is the detector's answer, not a class to fool it into")
        if idx not in out:
            out.append(idx)
    if not out:
        raise ValueError("no targets given")
    return out


def model_device(model: torch.nn.Module) -> torch.device:
    for t in (*model.parameters(), *model.buffers()):
        return t.device
    return torch.device("cpu")


def model_score_fn(model: torch.nn.Module, chunk: int = 1024) -> ScoreFn:
    """Score with a model directly, in chunks, without gradients."""

    def score(x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            outs = [torch.softmax(model(x[i : i + chunk]).float(), -1) for i in range(0, len(x), chunk)]
        return torch.cat(outs)

    return score


def ten_crop_score(score: ScoreFn, scale: float = 256 / 224) -> ScoreFn:
    """The paper's fitness for ImageNet: the softmax averaged over 10 crops (4 corners, centre,
    and their mirror images) of the image enlarged by ``scale``, each crop at the model's size."""

    def score10(x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        big = torch.nn.functional.interpolate(x, scale_factor=scale, mode="bilinear", align_corners=False)
        bh, bw = big.shape[2:]
        corners = [(0, 0), (0, bw - w), (bh - h, 0), (bh - h, bw - w), ((bh - h) // 2, (bw - w) // 2)]
        crops = [big[:, :, y:y + h, x0:x0 + w] for y, x0 in corners]
        crops += [c.flip(3) for c in crops]
        return score(torch.cat(crops)).view(10, n, -1).mean(0)

    return score10


class EliteArchive:
    """One cell per target class holding the best image found for it (MAP-Elites, as in the
    paper's code: an image is compared with every cell and may hold several)."""

    def __init__(self, targets: list[int], shape: tuple[int, ...], num_classes: int, device,
                 dtype: torch.dtype | None = None) -> None:
        self.targets = torch.tensor(targets, device=device)
        # uint8: images already on the 8-bit grid, kept exactly in a quarter of the memory
        self.dtype = dtype
        self.images = torch.zeros((len(targets), *shape), device=device, dtype=dtype or torch.float32)
        self.confidence = torch.full((len(targets),), -1.0, device=device)
        self.probs = torch.zeros((len(targets), num_classes), device=device)

    @property
    def occupied(self) -> torch.Tensor:
        return self.confidence >= 0

    def offer(self, images: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:
        """Insert every image into every cell it beats. Returns, per cell, the index of the new
        elite in ``images`` (or -1 where the cell kept its elite)."""
        p = probs[:, self.targets]  # (N, T)
        best, idx = p.max(0)
        better = best > self.confidence
        self.confidence = torch.where(better, best, self.confidence)
        self.images[better] = self._store(images[idx[better]])
        self.probs[better] = probs[idx[better]]
        return torch.where(better, idx, torch.full_like(idx, -1))

    def _store(self, images: torch.Tensor) -> torch.Tensor:
        return (images * 255).round_().to(torch.uint8) if self.dtype == torch.uint8 else images

    def offer_own(self, images: torch.Tensor, probs: torch.Tensor, rows: torch.Tensor) -> None:
        """Each cell considers only its own candidate: row ``rows[t]`` of images/probs for cell t
        (single-target evolution and gradient ascent, where each target has its own images)."""
        conf = probs[rows, self.targets]
        better = conf > self.confidence
        self.confidence = torch.where(better, conf, self.confidence)
        self.images[better] = self._store(images[rows[better]])
        self.probs[better] = probs[rows[better]]

    def snapshot(self, step: int, evaluations: int, rows: torch.Tensor | None = None, **extra) -> Snapshot:
        """The cells as a snapshot; ``rows``: only these cells (the targets, when every class has one)."""
        if rows is None:
            targets, images, conf, probs = self.targets, self.images, self.confidence, self.probs
        else:
            targets, images = self.targets[rows], self.images[rows]
            conf, probs = self.confidence[rows], self.probs[rows]
        images = images.detach().cpu()
        images = images.float() / 255 if images.dtype == torch.uint8 else images.clone()
        return Snapshot(step, evaluations, targets.tolist(), images, conf.clamp_min(0).cpu().clone(),
                        probs.cpu().clone(), extra)


def evaluate(score: ScoreFn, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Quantise to the 8-bit grid that PNG stores, then score: what is scored is what is saved."""
    q = quantize(images)
    return q, score(q).to(q.device)
