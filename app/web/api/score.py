"""POST /api/v1/score: softmax top-k for uploaded images, coalesced across requests."""

from __future__ import annotations

import time

import torch
from fastapi import APIRouter, Depends, File, Form, UploadFile
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from app.models.entry import ModelEntry
from app.serving.imaging import ImageError, load_image, open_image, stack, to_model_input
from app.serving.lab import Lab
from app.serving.scoring import top_k
from app.settings import Settings
from app.web.api import examples
from app.web.deps import available_model, lab
from app.web.errors import ApiError, error_responses

router = APIRouter(prefix="/api/v1", tags=["scoring"])


class Prediction(BaseModel):
    index: int
    label: str
    confidence: float


class FileResult(BaseModel):
    filename: str
    top: list[Prediction]


class ScoreResponse(BaseModel):
    model: str
    results: list[FileResult]
    elapsed_ms: float


@router.post("/score", response_model=ScoreResponse, summary="Score images",
             responses={200: examples.json_example(examples.SCORE),
                        **error_responses(400, 404, 409, 413, 415, 422, _404="unknown model",
                                          _409="model listed but unavailable (see its reason)",
                                          _413="a file, the body or an image's pixel count is over its limit")})
async def score(
    file: list[UploadFile] = File(..., description="one or more images: PNG, JPEG, WebP, BMP, GIF"),
    model: str = Form("lenet-mnist", description="model id from GET /api/v1/models"),
    top_k_: int = Form(5, alias="top_k", description="how many classes to return per image"),
    state: Lab = Depends(lab),
) -> dict:
    """The model's top-k classes for each uploaded image (multipart/form-data, one `file` part per
    image), in the order sent. Each image is resized to the model's input size; concurrent requests
    are batched together on the server. Try:
    `curl -F file=@seven.png -F model=lenet-mnist -F top_k=3 http://HOST/api/v1/score`"""
    return await score_uploads(state, file, model, top_k_)


async def score_uploads(state: Lab, files: list[UploadFile], model: str, k: int) -> dict:
    """Validate, decode and score uploads; shared by the API and the score page."""
    t0 = time.perf_counter()
    s = state.settings
    entry = available_model(state, model)
    if not 1 <= k <= entry.num_classes:
        raise ApiError(422, f"top_k must be between 1 and {entry.num_classes} for {model}", "top_k")
    if not files:
        raise ApiError(422, "send at least one image in a `file` part", "file")
    if len(files) > s.max_files:
        raise ApiError(400, f"{len(files)} files sent; at most {s.max_files} per request", "file")
    with state.scorer.expecting(entry.id) as token:
        tensors, names = [], []
        for f in files:
            tensors.append(await _read_image(f, s, entry))
            names.append(f.filename or "upload")
        probs = await state.scorer.probabilities(entry.id, stack(tensors), token)
    results = [{"filename": n, "top": top_k(p, entry.labels, k)} for n, p in zip(names, probs, strict=True)]
    return {"model": entry.id, "results": results, "elapsed_ms": round((time.perf_counter() - t0) * 1000, 3)}


INLINE_DECODE_BYTES = 16 * 1024
INLINE_DECODE_PIXELS = 256 * 256


async def _read_image(f: UploadFile, s: Settings, entry: ModelEntry) -> torch.Tensor:
    name = f.filename or "upload"
    if f.size is not None and f.size > s.max_upload_bytes:
        raise ApiError(413, f"{name}: {f.size} bytes; the limit is {s.max_upload_bytes}", "file")
    data = await f.read(s.max_upload_bytes + 1)
    if len(data) > s.max_upload_bytes:
        raise ApiError(413, f"{name}: larger than the limit of {s.max_upload_bytes} bytes", "file")
    try:
        img = open_image(data, s.max_image_pixels)
        w, h = img.size
        if len(data) <= INLINE_DECODE_BYTES and w * h <= INLINE_DECODE_PIXELS:
            # Small images decode in microseconds: cheaper here than a hop to the thread pool.
            return to_model_input(load_image(img), entry.input_shape, entry.preprocess)
        return await run_in_threadpool(
            lambda: to_model_input(load_image(img), entry.input_shape, entry.preprocess))
    except ImageError as exc:
        raise ApiError(exc.status, f"{name}: {exc}", "file") from None
