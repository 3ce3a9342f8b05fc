"""What a job takes in (a data URL or an upload) and what the server keeps when it ends."""

from __future__ import annotations

import base64
import binascii
import logging
import re
import secrets
import shutil
from pathlib import Path

import torch
from PIL import Image

from app.errors import Refused
from app.files import folder_bytes
from app.jobs.job import Job
from app.jobs.store import JobStore
from app.models.entry import ModelEntry
from app.serving.imaging import ImageError, decode, to_model_input, to_png

log = logging.getLogger(__name__)

DATA_URL = re.compile(r"^data:image/[a-z0-9.+-]+;base64,", re.I)
UPLOAD_ID = re.compile(r"^[A-Za-z0-9_-]{8,64}$")


class InputError(Refused):
    """A job's input image that cannot be used."""


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
            raise InputError("invalid", "image must be a data URL: data:image/png;base64,...", "image")
        try:
            raw = base64.b64decode(image[m.end():], validate=True)
        except (binascii.Error, ValueError):
            raise InputError("invalid", "image is not valid base64", "image") from None
        if len(raw) > max_bytes:
            raise InputError("too_large", f"image is larger than {max_bytes} bytes", "image")
        field = "image"
    else:
        if upload is None or not UPLOAD_ID.match(upload):
            raise InputError("invalid", "upload must be an id from POST /api/v1/uploads", "upload")
        path = uploads_dir(data_dir) / f"{upload}.png"
        if not path.is_file():
            raise InputError("not_found", f"no upload {upload!r}", "upload")
        raw, field = path.read_bytes(), "upload"
    try:
        x = to_model_input(decode(raw, max_pixels), entry.input_shape, entry.preprocess)
    except ImageError as exc:
        raise InputError(exc.kind, str(exc), field) from None
    return x, to_png(x)


class Saved:
    """The server's keeper (see board.py): a job's status in its record as it starts, and when it
    ends its files (Run.save) and its record; a job deleted meanwhile leaves nothing."""

    def __init__(self, store: JobStore) -> None:
        self.store = store

    def started(self, job: Job) -> None:
        self.store.update(job.id, status=job.status)

    def finished(self, job: Job, status: str) -> None:
        if job.deleted:  # whatever was written goes too (delete() cleans up as well)
            self.remove(job.id)
            return
        result = None
        if job.run.snap is not None:
            try:
                result = job.run.save(self.store.folder(job.id), status, job.id)
            except Exception as exc:  # the record must still say how the job ended
                log.warning("could not save job %s: %s", job.id, exc)
                job.error = job.error or f"saving failed: {exc}"
        self.store.update(job.id, status=status, result=result, error=job.error, progress=job.run.progress(),
                          size=folder_bytes(self.store.root / job.id))
        if job.deleted:  # deleted while it was being saved: whichever of us comes last removes it all
            self.remove(job.id)

    def remove(self, job_id: str) -> None:
        self.store.delete(job_id)
        shutil.rmtree(self.store.root / job_id, ignore_errors=True)
