"""The real control images over REST: which a model names correctly, with their licences, and the
files themselves (MNIST test digits; the photos of `make data` and any an operator adds)."""

from __future__ import annotations

import torch
from fastapi import APIRouter, Depends, Path, Query, Request, Response
from starlette.concurrency import run_in_threadpool

from app.classroom.quiz import Candidate
from app.serving.imaging import to_png
from app.serving.lab import Lab
from app.web.api import examples
from app.web.deps import available_model_soon, lab
from app.web.errors import ApiError, error_responses

router = APIRouter(prefix="/api/v1", tags=["studies"])


MNIST_CONTROLS = 30  # test digits listed as controls for an MNIST model
MNIST_LICENCE = "MNIST (LeCun, Cortes & Burges), CC BY-SA 3.0"


@router.get("/controls", summary="The real control images for a model",
            responses={200: examples.json_example(examples.CONTROLS), **error_responses(404, 409, 422)})
async def controls(request: Request, model: str = Query("lenet-mnist", max_length=100),
                   state: Lab = Depends(lab)) -> dict:
    """Real images a study shows beside fooling images, each with `url`, `label` (what it shows),
    `licence` and `source`: MNIST test digits for an MNIST model; for an ImageNet model, the
    photos of `make data` (from Debian packages) and any an operator adds under DATA/photos/.
    Listed only where the model names them correctly (its top-1 is the label)."""
    entry = await available_model_soon(state, model)
    cache = request.app.state.__dict__.setdefault("controls_cache", {})  # the photos do not change while it runs
    if entry.id in cache:
        return cache[entry.id]
    pool = request.app.state.quiz
    items: list[tuple[str, str, str, str, torch.Tensor]] = []
    if entry.input_shape == (1, 28, 28) and entry.num_classes == 10:
        data = await run_in_threadpool(pool.mnist)
        if data is not None:
            for i in range(MNIST_CONTROLS):
                items.append((f"/api/v1/controls/mnist/{i}.png", entry.labels[int(data[1][i])], MNIST_LICENCE,
                              f"MNIST test set, image {i}", data[0][i]))
    elif entry.num_classes == 1000:
        for photo in await run_in_threadpool(pool.photos):
            x = await run_in_threadpool(pool.image, Candidate(f"photo:{photo['key']}", "real", "photo", ""))
            if x is not None and photo["label"] in entry.labels:
                items.append((f"/api/v1/controls/photos/{photo['key']}", photo["label"],
                              photo.get("licence", "not stated"), photo.get("source", "not stated"), x))
    out = []
    if items:
        probs = await state.scorer.probabilities(entry.id, torch.stack([it[4] for it in items]))
        for (url, label, licence, source, _), p in zip(items, probs, strict=True):
            if entry.labels[int(p.argmax())] == label:
                out.append({"url": url, "label": label, "licence": licence, "source": source,
                            "confidence": round(float(p.max()), 6)})
    cache[entry.id] = {"model": entry.id, "controls": out}  # bounded: one entry per registered model
    return cache[entry.id]


@router.get("/controls/mnist/{index}.png", response_class=Response, summary="An MNIST control digit",
            responses={200: {"content": {"image/png": {}}}, **error_responses(404, 422)})
async def mnist_control(request: Request, index: int = Path(ge=0, lt=MNIST_CONTROLS)) -> Response:
    """One of the MNIST test digits listed as controls, as the PNG a study shows."""
    data = await run_in_threadpool(request.app.state.quiz.mnist)
    if data is None:
        raise ApiError(404, "the MNIST test set is not on this server (make data)", "index")
    return Response(to_png(data[0][index]), media_type="image/png",
                    headers={"Cache-Control": "public, max-age=86400"})


@router.get("/controls/photos/{folder}/{name}", response_class=Response, summary="A control photo",
            responses={200: {"content": {"image/jpeg": {}, "image/png": {}}}, **error_responses(404, 422)})
async def control_photo(request: Request, folder: str = Path(pattern=r"^[A-Za-z0-9_.-]{1,64}$"),
                        name: str = Path(pattern=r"^[A-Za-z0-9_.-]{1,128}$")) -> Response:
    """One of the listed control photos, as its folder holds it (only files a photos.json lists)."""
    photos = await run_in_threadpool(request.app.state.quiz.photos)
    photo = next((p for p in photos if p["key"] == f"{folder}/{name}"), None)
    if photo is None:
        raise ApiError(404, f"no control photo {folder}/{name}", "name")
    kind = "image/png" if name.lower().endswith(".png") else "image/jpeg"
    try:
        data = await run_in_threadpool(photo["path"].read_bytes)
    except OSError:
        raise ApiError(404, f"control photo {folder}/{name} is listed but gone from the disk", "name") from None
    return Response(data, media_type=kind, headers={"Cache-Control": "public, max-age=86400"})
