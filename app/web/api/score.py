"""POST /api/v1/score: softmax top-k for uploaded images, coalesced across requests."""

from __future__ import annotations

import asyncio
import math
import time

import orjson
import torch
from fastapi import APIRouter, Depends, File, Form, Query, Request, UploadFile
from fastapi.responses import Response
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from app.models.defences import rejected_index
from app.models.entry import ModelEntry
from app.serving.imaging import ImageError, load_image, open_image, stack, to_model_input
from app.serving.lab import Lab
from app.serving.scoring import top_k
from app.serving.tensors import TensorError, chunk_rows, read_npy, to_unit
from app.settings import Settings
from app.web.api import examples
from app.web.deps import available_model_soon, lab
from app.web.errors import ApiError, error_responses, refused, too_many
from app.web.forms import whole_number

router = APIRouter(prefix="/api/v1", tags=["scoring"])


class Prediction(BaseModel):
    index: int
    label: str
    confidence: float


class FileResult(BaseModel):
    filename: str
    top: list[Prediction]
    rejected: bool | None = Field(None, description="through a detector (MODEL+msp and the like): whether it "
                                                    "flagged this image; absent for other models")


class ScoreResponse(BaseModel):
    model: str
    results: list[FileResult]
    elapsed_ms: float


@router.post("/score", response_model=ScoreResponse, response_model_exclude_none=True, summary="Score images",
             responses={200: examples.json_example(examples.SCORE),
                        **error_responses(400, 404, 409, 413, 415, 422, _404="unknown model",
                                          _409="model listed but unavailable (see its reason)",
                                          _413="a file, the body or an image's pixel count is over its limit")})
async def score(
    request: Request,
    file: list[UploadFile] = File(..., description="one or more images: PNG, JPEG, WebP, BMP, GIF"),
    model: str = Form("lenet-mnist", description="model id from GET /api/v1/models"),
    top_k_: int = Form(5, alias="top_k", description="how many classes to return per image"),
    state: Lab = Depends(lab),
) -> dict:
    """The model's top-k classes for each uploaded image (multipart/form-data, one `file` part per
    image), in the order sent. Each image is resized to the model's input size; concurrent requests
    are batched together on the server. Try:
    `curl -F file=@seven.png -F model=lenet-mnist -F top_k=3 http://HOST/api/v1/score`"""
    # FastAPI hands an empty form field to us as its default; `-F model=` is a client's mistake, not
    # a request for LeNet. The parsed form is cached on the request, so this reads nothing again.
    form = await request.form()
    for name in ("model", "top_k"):
        if form.get(name) == "":
            raise ApiError(422, f"`{name}` is empty: leave it out for the default, or give a value", name)
    return await score_uploads(state, file, model, top_k_)


NPY_TYPES = ("application/x-npy", "application/octet-stream")


@router.post("/score/tensor", response_model=ScoreResponse, summary="Score a batch of images as one NumPy array",
             openapi_extra={"requestBody": {"required": True, "description": "numpy.save of a uint8 array",
                                            "content": {t: {"schema": {"type": "string", "format": "binary"}}
                                                        for t in NPY_TYPES}}},
             responses={200: examples.json_example(examples.SCORE),
                        **error_responses(400, 404, 409, 413, 415, 422, 429, _400="not a .npy file, or truncated",
                                          _404="unknown model", _409="model listed but unavailable",
                                          _413="more rows than FOOLING_MAX_TENSOR_ROWS, or a body over its size",
                                          _415="the body is not application/x-npy or application/octet-stream",
                                          _422="wrong dtype or shape, a pickled (object) array, or top_k over "
                                               "the model's classes",
                                          _429="too many arrays being scored at once; see Retry-After")})
async def score_tensor(request: Request,
                       model: str = Query("lenet-mnist", description="model id from GET /api/v1/models"),
                       top_k_: int = Query(5, alias="top_k", description="how many classes to return per row"),
                       state: Lab = Depends(lab)) -> Response:
    """Many images in one request, at model speed: the body is a NumPy `.npy` file (`numpy.save`)
    holding a **uint8** array of shape **(N, C, H, W)** at the model's input size (LeNet: (N, 1, 28,
    28); EfficientNet-Lite0: (N, 3, 224, 224)), N up to FOOLING_MAX_TENSOR_ROWS (1024). Pixels are
    scored as sent (value / 255), with no resizing or centring. Pickled arrays are never loaded.
    The answer has the shape of POST /api/v1/score, one result per row in order (`row-0`, ...)."""
    t0 = time.perf_counter()
    s = state.settings
    entry = await available_model_soon(state, model)
    if not 1 <= top_k_ <= entry.num_classes:
        raise ApiError(422, f"top_k must be between 1 and {entry.num_classes} for {model}", "top_k")
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind not in NPY_TYPES:
        raise ApiError(415, f"send the array as {NPY_TYPES[0]} (numpy.save bytes), not {kind or 'nothing'}", "body")
    most = s.max_tensor_rows * math.prod(entry.input_shape) + 4096
    length = whole_number(request.headers.get("content-length", ""))
    if length is not None and length > most:
        raise ApiError(413, f"{length} bytes; {s.max_tensor_rows} rows for {model} fit in {most}", "body")
    slots: asyncio.Semaphore = request.app.state.tensor_slots
    if slots.locked():  # each waiting array would hold its body in memory: refuse rather than queue
        raise too_many("other arrays are being scored; retry shortly", ("tensor-requests", s.tensor_concurrency), 1)
    async with slots:
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > most:
                raise ApiError(413, f"the body is over {most} bytes ({s.max_tensor_rows} rows for {model})", "body")
        try:
            rows = read_npy(bytes(body), entry.input_shape, s.max_tensor_rows)
        except TensorError as exc:
            raise refused(exc, "body") from None
        del body
        values, indices = await state.scorer.top_in_chunks(
            entry.id, rows, chunk_rows(entry.input_shape, s.tensor_chunk_pixels), to_unit, top_k_)
    labels = entry.labels
    results = [{"filename": f"row-{n}", "top": [{"index": i, "label": labels[i], "confidence": v}
                                                 for v, i in zip(vs, ix, strict=True)]}
               for n, (vs, ix) in enumerate(zip(values, indices, strict=True))]
    if (own := rejected_index(labels)) is not None:  # a defence's own class wins for what it refuses
        for r, ix in zip(results, indices, strict=True):
            r["rejected"] = ix[0] == own
    body = {"model": entry.id, "results": results, "elapsed_ms": round((time.perf_counter() - t0) * 1000, 3)}
    return Response(orjson.dumps(body), media_type="application/json")


async def score_uploads(state: Lab, files: list[UploadFile], model: str, k: int) -> dict:
    """Validate, decode and score uploads; shared by the API and the score page."""
    t0 = time.perf_counter()
    s = state.settings
    entry = await available_model_soon(state, model)
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
    if (own := rejected_index(entry.labels)) is not None:
        for r, p in zip(results, probs, strict=True):
            r["rejected"] = int(p.argmax()) == own
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
        raise refused(exc, "file", f"{name}: ") from None
