"""Turning a job's snapshots into what clients see: live frames, PNGs, and the saved result."""

from __future__ import annotations

import base64
import binascii
import json
import re
import secrets
from pathlib import Path

import torch
from PIL import Image

from app.fooling.base import SUCCESS
from app.fooling.figures import confidence_curve, labelled_grid
from app.jobs.job import Job
from app.jobs.store import JobStore, write_whole
from app.models.entry import ModelEntry
from app.serving.imaging import ImageError, decode, png_bytes, to_model_input, to_png
from app.serving.scoring import top_k

DATA_URL = re.compile(r"^data:image/[a-z0-9.+-]+;base64,", re.I)
UPLOAD_ID = re.compile(r"^[A-Za-z0-9_-]{8,64}$")


class InputError(ValueError):
    def __init__(self, status: int, detail: str, field: str) -> None:
        super().__init__(detail)
        self.status, self.detail, self.field = status, detail, field


def uploads_dir(data_dir: Path) -> Path:
    d = Path(data_dir) / "uploads"
    d.mkdir(parents=True, exist_ok=True)
    return d


def save_upload(data: bytes, data_dir: Path, max_pixels: int) -> tuple[str, Image.Image, int]:
    """Validate an uploaded image and keep it as a PNG under a random id (ids, never names).
    Returns (id, image, bytes on disk)."""
    img = decode(data, max_pixels)
    upload_id = secrets.token_urlsafe(12)
    path = uploads_dir(data_dir) / f"{upload_id}.png"
    img.save(path, format="PNG")
    return upload_id, img, path.stat().st_size


def input_image(image: str | None, upload: str | None, entry: ModelEntry, data_dir: Path,
                max_pixels: int, max_bytes: int) -> tuple[torch.Tensor, bytes]:
    """A job's real image, from a data URL or an earlier upload -> (model input, PNG bytes)."""
    if image is not None:
        m = DATA_URL.match(image)
        if not m:
            raise InputError(422, "image must be a data URL: data:image/png;base64,...", "image")
        try:
            raw = base64.b64decode(image[m.end():], validate=True)
        except (binascii.Error, ValueError):
            raise InputError(422, "image is not valid base64", "image") from None
        if len(raw) > max_bytes:
            raise InputError(413, f"image is larger than {max_bytes} bytes", "image")
        field = "image"
    else:
        if upload is None or not UPLOAD_ID.match(upload):
            raise InputError(422, "upload must be an id from POST /api/v1/uploads", "upload")
        path = uploads_dir(data_dir) / f"{upload}.png"
        if not path.is_file():
            raise InputError(404, f"no upload {upload!r}", "upload")
        raw, field = path.read_bytes(), "upload"
    try:
        x = to_model_input(decode(raw, max_pixels), entry.input_shape, entry.preprocess)
    except ImageError as exc:
        raise InputError(getattr(exc, "status", 415), str(exc), field) from None
    return x, to_png(x)


def image_url(job_id: str, position: int, version: int | None = None) -> str:
    url = f"/api/v1/jobs/{job_id}/images/{position}.png"
    return url if version is None else f"{url}?v={version}"


def frame(job: Job, top: int = 5) -> dict:
    """The job's current state as streamed and returned by GET /api/v1/jobs/{id} while live."""
    snap = job.snap
    out = {"id": job.id, "status": job.status, "step": 0, "evaluations": 0,
           "elapsed": round(job.elapsed(), 3), "version": job.version, "targets": []}
    if snap is None:
        return out
    out.update(step=snap.step, evaluations=snap.evaluations)
    with_top = len(snap.targets) <= 20  # top-k bars only where a page can show them
    for i, (t, c) in enumerate(zip(snap.targets, snap.confidence.tolist(), strict=True)):
        item = {"position": i, "index": t, "label": job.labels[t], "confidence": c,
                "image": image_url(job.id, i, job.changed[i] if i < len(job.changed) else job.version)}
        if i in job.reached:
            item["reached_9999"] = job.reached[i]
        if with_top:
            item["top"] = top_k(snap.probs[i], job.labels, top)
        out["targets"].append(item)
    if snap.extra:
        out["extra"] = _jsonable(snap.extra)
    if job.history:
        out["point"] = job.history[-1]
    return out


def live_png(job: Job, position: int) -> bytes | None:
    snap = job.snap
    if snap is None or not 0 <= position < len(snap.targets):
        return None
    version = job.changed[position]
    cached = job.png_cache.get(position)
    if cached and cached[0] == version:
        return cached[1]
    png = to_png(snap.images[position])
    job.png_cache[position] = (version, png)
    return png


def progress(job: Job) -> dict:
    snap = job.snap
    return {"step": snap.step if snap else 0, "evaluations": snap.evaluations if snap else 0,
            "elapsed": round(job.elapsed(), 3), "history": job.history}


def save(job: Job, store: JobStore, status: str) -> dict:
    """Write each target's best image, the labelled grid, the curve and summary.json; return the
    result record kept in the database."""
    snap = job.snap
    folder = store.folder(job.id)
    targets = []
    for i, (t, img, c) in enumerate(zip(snap.targets, snap.images, snap.confidence.tolist(), strict=True)):
        write_whole(folder / f"{i}.png", to_png(img))
        targets.append({"position": i, "index": t, "label": job.labels[t], "confidence": c,
                        "image": image_url(job.id, i), "reached_9999": job.reached.get(i),
                        "top": top_k(snap.probs[i], job.labels, 5)})
    write_whole(folder / "grid.png", png_bytes(labelled_grid(snap, job.labels)))
    if len(job.history) > 1:
        curve = confidence_curve(job.history, f"{job.spec.model}: {job.spec.method} ({job.spec.encoding})")
        write_whole(folder / "curve.png", png_bytes(curve))
    result = {"steps": snap.step, "evaluations": snap.evaluations, "seconds": round(job.elapsed(), 3),
              "ten_crop": bool(job.spec.params.get("ten_crop", False)), "stop_reason": job.stop_reason,
              "min_confidence": min(t["confidence"] for t in targets),
              "at_9999": sum(t["confidence"] >= SUCCESS for t in targets), "targets": targets,
              "extra": _jsonable(snap.extra), "runtime": job.runtime or None}
    summary = {"id": job.id, "status": status, "settings": job.spec.model_dump(exclude={"image"}),
               **result, "history": job.history}
    write_whole(folder / "summary.json", (json.dumps(summary, indent=2) + "\n").encode())
    return result


def _jsonable(value):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if isinstance(value, float | int | str | bool) or value is None:
        return value
    return str(value)
