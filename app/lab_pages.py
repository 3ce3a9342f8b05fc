"""The Lab's pages: start a run, watch it live (htmx + SSE), the gallery, demo mode, transfer.

Pages render the same job views the REST API returns (app.api.jobs.view); the live panel is
re-rendered on the server and streamed as HTML, so the browser runs no code of ours to draw it.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
import urllib.parse
from collections.abc import AsyncIterator

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from app.api import jobs as jobs_api
from app.api.deps import lab
from app.api.errors import ApiError
from app.imaging import decode, stack, to_model_input
from app.jobs.presets import BY_NAME, PRESETS
from app.jobs.runner import JobError, LocalRunner
from app.jobs.spec import JobSpec
from app.pages import templates
from app.settings import ROOT
from app.state import Lab

router = APIRouter(include_in_schema=False)

SPEC_FIELDS = ("model", "method", "encoding", "targets", "generations", "steps", "population", "seed", "max_seconds")


def chart(history: list[dict], width: int = 480, height: int = 160) -> dict:
    """SVG polylines of min / median / max best confidence against evaluations."""
    if not history:
        return {"width": width, "height": height, "lines": {}, "max_evals": 0}
    x_max = max(h["evaluations"] for h in history) or 1
    lines = {}
    for key in ("min", "median", "max"):
        pts = [(width * h["evaluations"] / x_max, height * (1 - h[key])) for h in history]
        lines[key] = " ".join(f"{x:.1f},{y:.1f}" for x, y in pts)
    return {"width": width, "height": height, "lines": lines, "max_evals": x_max}


def panel_context(view: dict, focus: int = 0) -> dict:
    targets = view.get("targets") or []
    focus = min(max(focus, 0), max(len(targets) - 1, 0))
    return {"job": view, "targets": targets, "focus": targets[focus] if targets else None, "focus_i": focus,
            "chart": chart(view.get("history") or []), "live": view["status"] in ("queued", "running", "paused")}


def rerun_link(settings: dict) -> str:
    """A Lab URL that carries every setting and the seed: opening it reproduces the run."""
    q = {k: settings[k] for k in SPEC_FIELDS if settings.get(k) is not None}
    if isinstance(q.get("targets"), list):
        q["targets"] = ",".join(str(t) for t in q["targets"])
    if settings.get("params"):
        q["params"] = json.dumps(settings["params"], separators=(",", ":"))
    return "/?" + urllib.parse.urlencode(q)


def _runner(request: Request) -> LocalRunner:
    return request.app.state.runner


def _client(request: Request) -> str:
    return jobs_api.client_key(request)


@router.get("/", response_class=HTMLResponse)
async def lab_home(request: Request, state: Lab = Depends(lab), run: LocalRunner = Depends(_runner),
                   preset: str | None = Query(None, max_length=64)) -> HTMLResponse:
    form = dict(request.query_params)
    if preset in BY_NAME:
        form = {**BY_NAME[preset].spec, "preset": preset}
        if isinstance(form.get("targets"), list):
            form["targets"] = ",".join(str(t) for t in form["targets"])
        if form.get("params"):
            form["params"] = json.dumps(form["params"])
    return _lab(request, state, run, form)


def _lab(request: Request, state: Lab, run: LocalRunner, form: dict, error: str | None = None,
         status: int = 200) -> HTMLResponse:
    """The Lab page: presets, the set-up form (filled from ``form``), recent runs, models."""
    recent = [jobs_api.view(run, r["id"], history=False) for r in run.store.list(8)]
    return templates.TemplateResponse(request, "lab.html", {
        "models": state.registry.list(), "presets": PRESETS, "form": form, "recent": [r for r in recent if r],
        "error": error}, status_code=status)


def _spec_from_form(form: dict) -> JobSpec:
    data: dict = {}
    for key in SPEC_FIELDS:
        value = (form.get(key) or "").strip()
        if value == "":
            continue
        if key in ("generations", "steps", "population", "seed"):
            data[key] = value  # pydantic turns digits into ints and names the field otherwise
        elif key == "targets":
            data[key] = "all" if value.lower() == "all" else [int(t) if t.strip().isdigit() else t.strip()
                                                            for t in value.split(",") if t.strip()]
        else:
            data[key] = value
    params = (form.get("params") or "").strip()
    if params:
        try:
            data["params"] = json.loads(params)
        except json.JSONDecodeError:
            raise ApiError(422, 'params must be JSON, e.g. {"epsilon": 0.1}', "params") from None
    if form.get("title"):
        data["title"] = form["title"]
    return JobSpec(**data)


async def _start(request: Request, run: LocalRunner, spec: JobSpec, demo: bool = False) -> str:
    try:
        job_id = await run_in_threadpool(run.submit, spec, _client(request))
    except JobError as exc:
        raise jobs_api.job_error(exc) from None
    return f"/jobs/{job_id}" + ("?demo=1" if demo else "")


@router.post("/lab/start")
async def lab_start(request: Request, run: LocalRunner = Depends(_runner), state: Lab = Depends(lab)) -> Response:
    form = dict(await request.form())
    form = {k: v for k, v in form.items() if isinstance(v, str)}
    try:
        spec = _spec_from_form(form)
        return RedirectResponse(await _start(request, run, spec), status_code=303)
    except ValidationError as exc:
        err = exc.errors()[0]
        message = f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}"
        status = 422
    except ApiError as exc:
        message, status = exc.detail, exc.status_code
    return _lab(request, state, run, form, message, status)


@router.post("/lab/preset/{name}")
async def start_preset(request: Request, name: str = Path(max_length=64), demo: bool = Query(False),
                       run: LocalRunner = Depends(_runner)) -> Response:
    preset = BY_NAME.get(name)
    if preset is None:
        raise ApiError(404, f"no preset {name!r}", "name")
    data = dict(preset.spec)
    if preset.sample_image:
        png = (ROOT / "static" / "samples" / preset.sample_image).read_bytes()
        data["image"] = "data:image/png;base64," + base64.b64encode(png).decode()
    data["title"] = preset.title
    return RedirectResponse(await _start(request, run, JobSpec(**data), demo), status_code=303)


@router.get("/jobs/{job_id}", response_class=HTMLResponse)
async def job_page(request: Request, job_id: str = Path(pattern=jobs_api.JOB_ID), demo: bool = Query(False),
                   focus: int = Query(0, ge=0, le=100_000), run: LocalRunner = Depends(_runner),
                   state: Lab = Depends(lab)) -> HTMLResponse:
    view = jobs_api.view(run, job_id)
    if view is None:
        raise ApiError(404, f"no job {job_id!r}", "id")
    others = [e for e in state.registry.list() if e.available and e.id != view["settings"]["model"]]
    ctx = panel_context(view, focus) | {"demo": demo, "rerun": rerun_link(view["settings"]), "others": others}
    return templates.TemplateResponse(request, "job.html", ctx)


def _sse_html(html: str) -> str:
    return "".join(f"data: {line}\n" for line in html.splitlines()) + "\n"


@router.get("/jobs/{job_id}/stream")
async def job_stream(request: Request, job_id: str = Path(pattern=jobs_api.JOB_ID),
                     focus: int = Query(0, ge=0, le=100_000), run: LocalRunner = Depends(_runner),
                     state: Lab = Depends(lab)) -> StreamingResponse:
    """The job page's live panel as HTML over SSE (unnamed messages swap into the panel), then a
    `close` event so the page stops reconnecting."""
    if jobs_api.view(run, job_id, history=False) is None:
        raise ApiError(404, f"no job {job_id!r}", "id")
    panel = templates.get_template("_panel.html")
    interval = 1.0 / max(0.1, state.settings.events_per_second)

    def render() -> tuple[str, int, bool]:
        view = jobs_api.view(run, job_id)
        html = panel.render(panel_context(view, focus) | {"request": request})
        return html, view.get("version") or 0, view["status"] not in ("queued", "running", "paused")

    async def stream() -> AsyncIterator[str]:
        html, version, done = render()
        yield _sse_html(html)
        while not done:
            if jobs_api.SHUTDOWN.is_set() or run.closing:
                break
            t0 = time.monotonic()
            await run.wait(job_id, version, timeout=15.0)
            live = run.live(job_id)
            if live is not None and live.version == version and not live.finished:
                yield ": keep-alive\n\n"
                continue
            html, version, done = render()
            yield _sse_html(html)
            await asyncio.sleep(max(0.0, interval - (time.monotonic() - t0)))
        yield "event: close\ndata: {}\n\n"

    return StreamingResponse(stream(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


@router.post("/jobs/{job_id}/control/{action}")
async def job_control(request: Request, job_id: str = Path(pattern=jobs_api.JOB_ID),
                      action: str = Path(pattern="^(cancel|pause|resume|step)$"),
                      run: LocalRunner = Depends(_runner)) -> Response:
    try:
        run.control(job_id, action)
    except JobError as exc:
        if exc.status != 409:  # finished already / not paused: the page simply shows the state
            raise jobs_api.job_error(exc) from None
    if request.headers.get("hx-request"):
        return Response(status_code=204)
    return RedirectResponse(f"/jobs/{job_id}", status_code=303)


@router.get("/gallery", response_class=HTMLResponse)
async def gallery(request: Request, page: int = Query(1, ge=1, le=10_000),
                  run: LocalRunner = Depends(_runner)) -> HTMLResponse:
    per = 24
    recs = [r for r in run.store.list(per, (page - 1) * per, "done")]
    total = run.store.count("done")
    items = [jobs_api.view(run, r["id"], history=False) for r in recs]
    return templates.TemplateResponse(request, "gallery.html", {
        "items": [i for i in items if i], "page": page, "pages": max(1, (total + per - 1) // per), "total": total})


@router.get("/demo", response_class=HTMLResponse)
async def demo(request: Request, state: Lab = Depends(lab)) -> HTMLResponse:
    usable = {e.id for e in state.registry.list() if e.available}
    return templates.TemplateResponse(request, "demo.html", {"presets": PRESETS, "usable": usable})


@router.get("/jobs/{job_id}/transfer", response_class=HTMLResponse)
async def transfer(request: Request, job_id: str = Path(pattern=jobs_api.JOB_ID),
                   run: LocalRunner = Depends(_runner), state: Lab = Depends(lab)) -> HTMLResponse:
    """Score a finished job's images on every other model: do the fooling images transfer?"""
    view = jobs_api.view(run, job_id, history=False)
    if view is None:
        raise ApiError(404, f"no job {job_id!r}", "id")
    folder = run.store.root / job_id
    rows = []
    models = [e for e in state.registry.list() if e.available]
    for t in view.get("targets") or []:
        path = folder / f"{t['position']}.png"
        if not path.is_file():
            continue
        img = decode(path.read_bytes(), state.settings.max_image_pixels)
        row = {"target": t, "scores": []}
        for entry in models:
            x = stack([to_model_input(img, entry.input_shape, entry.preprocess)])
            probs = (await state.scorer.probabilities(entry.id, x))[0]
            top = int(probs.argmax())
            same = entry.labels == state.registry.get(view["settings"]["model"]).labels
            row["scores"].append({"model": entry.id, "top_label": entry.labels[top], "top": float(probs[top]),
                                  "target": float(probs[t["index"]]) if same else None})
        rows.append(row)
    return templates.TemplateResponse(request, "transfer.html", {"job": view, "rows": rows, "models": models})
