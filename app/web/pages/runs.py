"""A run's pages: the live panel (HTML over SSE), its controls, the gallery, and transfer to other models.

The live panel is re-rendered on the server and streamed as HTML, so the browser runs no code of
ours to draw it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse
from starlette.concurrency import run_in_threadpool

from app.files import write_whole
from app.jobs.runner import JobError, Runner
from app.models.entry import UnknownModel
from app.serving.imaging import decode, stack, to_model_input
from app.serving.lab import Lab
from app.web import streams, views
from app.web.deps import (
    INSTRUCTOR_ACTIONS,
    available_model_soon,
    held_stream,
    identity,
    lab,
    mark_job,
    may_control,
    require_control,
    runner,
)
from app.web.errors import ApiError, refused
from app.web.templating import templates

router = APIRouter(include_in_schema=False)
MAX_TRANSFER_EXTRA = 4  # models (e.g. defended ones) a transfer table adds to the available ones


@router.get("/jobs/{job_id}", response_class=HTMLResponse)
async def job_page(request: Request, job_id: str = Path(pattern=views.JOB_ID), demo: bool = Query(False),
                   focus: int = Query(0, ge=0, le=100_000), run: Runner = Depends(runner),
                   state: Lab = Depends(lab)) -> HTMLResponse:
    view = views.found(run, job_id)
    others = [e for e in state.registry.list() if e.available and e.id != view["settings"]["model"]]
    ctx = views.panel_context(view, focus) | {"demo": demo, "rerun": views.rerun_link(view["settings"]),
                                              "others": others} | _viewer(request, run, job_id)
    return templates.TemplateResponse(request, "job.html", ctx)


@router.get("/models/{model_id}/noise", response_class=HTMLResponse)
async def noise_line(request: Request, model_id: str = Path(max_length=100), state: Lab = Depends(lab)) -> Response:
    """The run page's line on what the model makes of random images (loaded after the page: the first
    look at an ImageNet model measures it)."""
    try:
        entry = state.registry.get(model_id)
    except UnknownModel:
        return Response(status_code=204)
    if not entry.available:
        return Response(status_code=204)
    b = await request.app.state.noise.get(entry.id, entry.input_shape, entry.labels, state.scorer.probabilities)
    return templates.TemplateResponse(request, "_noise.html", {"b": b, "model": entry.id})


def _viewer(request: Request, run: Runner, job_id: str) -> dict:
    """What this viewer may do on the page: controls are shown only to those who may use them."""
    who = identity(request)
    record = run.record(job_id)
    return {"can_control": may_control(who, record), "instructor": who.instructor,
            "hidden": bool(record and record.get("hidden")), "pinned": bool(record and record.get("pinned"))}


@router.get("/jobs/{job_id}/stream")
async def job_stream(request: Request, job_id: str = Path(pattern=views.JOB_ID),
                     focus: int = Query(0, ge=0, le=100_000), demo: bool = Query(False),
                     run: Runner = Depends(runner), state: Lab = Depends(lab)) -> StreamingResponse:
    """The job page's live panel as HTML over SSE (unnamed messages swap into the panel), then a
    `close` event so the page stops reconnecting."""
    views.found(run, job_id, history=False)
    panel = templates.get_template("_panel.html")
    viewer = _viewer(request, run, job_id)
    pacer = streams.Pacer(1.0 / max(0.1, state.settings.events_per_second))

    def render() -> tuple[str, int, bool]:
        view = views.view(run, job_id)
        if view is None:  # deleted while watched: the stream ends
            return "", 0, True
        html = panel.render(views.panel_context(view, focus) | viewer | {"request": request, "demo": demo})
        return html, view.get("version") or 0, view["status"] not in ("queued", "running", "paused")

    async def stream() -> AsyncIterator[str]:
        html, version, done = render()
        yield streams.sse_html(html)
        while not done:
            if streams.stopping(request):
                break
            await run.wait(job_id, version, timeout=1.0)
            live = run.live(job_id)
            if live is not None and live.version == version and not live.finished:
                if beat := pacer.idle():
                    yield beat
                continue
            await pacer.pace()
            html, version, done = render()
            if html:
                yield streams.sse_html(html)
        yield streams.sse("close", {})

    return streams.response(held_stream(request, stream()))


@router.post("/jobs/{job_id}/control/{action}")
async def job_control(request: Request, job_id: str = Path(pattern=views.JOB_ID),
                      action: str = Path(pattern="^(cancel|pause|resume|step|delete|hide|unhide|pin|unpin)$"),
                      run: Runner = Depends(runner)) -> Response:
    """The page's buttons: the same rules as the REST controls (owner or instructor; hide and unhide
    for the instructor)."""
    if action in INSTRUCTOR_ACTIONS:
        mark_job(request, run, job_id, action)
    else:
        require_control(request, run, job_id)
    if action == "delete":
        await run_in_threadpool(run.delete, job_id)
        return RedirectResponse("/", status_code=303)
    if action not in INSTRUCTOR_ACTIONS:
        try:
            run.control(job_id, action)
        except JobError as exc:
            if exc.kind != "conflict":  # finished already / not paused: the page simply shows the state
                raise refused(exc) from None
    if request.headers.get("hx-request"):
        return Response(status_code=204)
    return RedirectResponse(f"/jobs/{job_id}", status_code=303)


@router.get("/gallery", response_class=HTMLResponse)
async def gallery(request: Request, page: int = Query(1, ge=1, le=10_000),
                  run: Runner = Depends(runner)) -> HTMLResponse:
    per = 24
    recs = run.store.list(per, (page - 1) * per, "done", visible=True)
    total = run.store.count("done", visible=True)
    items = [views.view(run, r["id"], history=False) for r in recs]
    return templates.TemplateResponse(request, "gallery.html", {
        "items": [i for i in items if i], "page": page, "pages": max(1, (total + per - 1) // per), "total": total})


@router.get("/jobs/{job_id}/transfer", response_class=HTMLResponse)
async def transfer(request: Request, job_id: str = Path(pattern=views.JOB_ID),
                   model: list[str] = Query([], max_length=MAX_TRANSFER_EXTRA),
                   run: Runner = Depends(runner), state: Lab = Depends(lab)) -> HTMLResponse:
    """Score a finished job's images on every other model: do the fooling images transfer? ``model``
    adds columns: defended models (``lenet-mnist+msp``: does a detector catch them?)."""
    view = views.found(run, job_id, history=False)
    models = [e for e in state.registry.list() if e.available]
    model = [m for m in dict.fromkeys(model) if m]
    for extra in model:  # each once, built (and calibrated) off the event loop
        if len(extra) > 200:
            raise ApiError(422, "model: at most 200 characters", "model")
        entry = await available_model_soon(state, extra)
        if entry not in models:
            models.append(entry)
    async with _transfer_locks.setdefault(job_id, asyncio.Lock()):  # one computation per job at a time
        rows = await _transfer_rows(run, state, view, models)
    _transfer_locks.pop(job_id, None)
    return templates.TemplateResponse(request, "transfer.html", {"job": view, "rows": rows, "models": models,
                                                                 "extra": model})


_transfer_locks: dict[str, asyncio.Lock] = {}


async def _transfer_rows(run: Runner, state: Lab, view: dict, models: list) -> list[dict]:
    """The table, computed once per finished job (and set of models) and kept beside its images."""
    folder = run.store.root / view["id"]
    cache = folder / "transfer.json"
    key = [e.id for e in models]
    finished = view["status"] not in views.ACTIVE
    if finished and cache.is_file():
        kept = json.loads(cache.read_text())
        if kept.get("models") == key:
            return kept["rows"]
    targets = [t for t in view.get("targets") or [] if (folder / f"{t['position']}.png").is_file()]
    images = [decode((folder / f"{t['position']}.png").read_bytes(), state.settings.max_image_pixels)
              for t in targets]
    own_labels = state.registry.get(view["settings"]["model"]).labels
    rows = [{"target": t, "scores": []} for t in targets]
    for entry in models:
        if not images:
            break
        x = stack([to_model_input(img, entry.input_shape, entry.preprocess) for img in images])
        probs = await state.scorer.probabilities(entry.id, x)  # every image of the job in one request
        # the target's confidence only means something on the same classes (a defence may add "rejected")
        same = entry.labels[:len(own_labels)] == own_labels and len(entry.labels) - len(own_labels) in (0, 1)
        for row, p in zip(rows, probs, strict=True):
            top = int(p.argmax())
            row["scores"].append({"model": entry.id, "top_label": entry.labels[top], "top": float(p[top]),
                                  "target": float(p[row["target"]["index"]]) if same else None})
    if finished and rows:
        with contextlib.suppress(FileNotFoundError):  # the job was deleted meanwhile: keep nothing
            write_whole(cache, json.dumps({"models": key, "rows": rows}))
    return rows
