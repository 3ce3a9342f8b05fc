"""Pages for scoring images by hand and the logistic-regression explainer."""

from __future__ import annotations

import io

from fastapi import APIRouter, Depends, File, Form, Query, Request, UploadFile
from fastapi.responses import HTMLResponse
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException

from app.explain import logistic
from app.jobs.results import uploads_dir
from app.serving.lab import Lab
from app.web.api.score import score_uploads
from app.web.deps import lab
from app.web.errors import ApiError
from app.web.templating import templates

router = APIRouter(include_in_schema=False)


@router.get("/score", response_class=HTMLResponse)
async def score_page(request: Request, state: Lab = Depends(lab),
                     upload: str | None = Query(None, pattern=r"^[A-Za-z0-9_-]{8,64}$"),
                     model: str = Query("lenet-mnist", max_length=100)) -> HTMLResponse:
    """The score form; with ``upload`` (an image kept earlier, e.g. one bred by hand) its scores too."""
    ctx = {"models": _usable(state), "results": None, "chosen": [model], "error": None}
    if upload is not None:
        path = uploads_dir(state.settings.data_dir) / f"{upload}.png"
        if not path.is_file():
            raise ApiError(404, f"no upload {upload!r}", "upload")
        f = UploadFile(io.BytesIO(path.read_bytes()), filename=f"{upload}.png",
                       headers=Headers({"content-type": "image/png"}))
        ctx["results"] = [await score_uploads(state, [f], model, 5)]
    return templates.TemplateResponse(request, "score.html", ctx)


@router.post("/score", response_class=HTMLResponse)
async def score_form(request: Request, file: list[UploadFile] = File(...),
                     model: list[str] = Form(["lenet-mnist"]), state: Lab = Depends(lab)) -> HTMLResponse:
    """Score the uploads on each chosen model; results side by side."""
    ctx = {"models": _usable(state), "results": [], "error": None, "chosen": model}
    try:
        if len(model) > 8:
            raise HTTPException(422, "choose at most 8 models")
        for m in model:
            for f in file:
                await f.seek(0)
            ctx["results"].append(await score_uploads(state, file, m, 5))
    except HTTPException as exc:
        ctx["error"] = exc.detail
        return templates.TemplateResponse(request, "score.html", ctx, status_code=exc.status_code)
    return templates.TemplateResponse(request, "score.html", ctx)


def _usable(state: Lab) -> list:
    return [e for e in state.registry.list() if e.available]


@router.get("/explain/logistic-regression", response_class=HTMLResponse)
async def logistic_regression(request: Request,
                              eps: float = Query(logistic.STEP, ge=0, le=1)) -> HTMLResponse:
    """The 10-D logistic-regression explainer: the slider recomputes in the page, the server renders
    the starting state (step 0.5: 0.0474 -> 0.88)."""
    return templates.TemplateResponse(request, "logistic.html", {"s": logistic.state(eps)})
