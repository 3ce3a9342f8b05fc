"""The Lab page: presets, the set-up form, recent runs and models; starting runs from it; demo mode."""

from __future__ import annotations

import base64
import json

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from app.jobs.presets import BY_NAME, PRESETS
from app.jobs.runner import JobError, Runner
from app.jobs.spec import JobSpec
from app.serving.lab import Lab
from app.settings import ROOT
from app.web import views
from app.web.deps import identity, job_room, lab, runner
from app.web.errors import ApiError, refused
from app.web.forms import whole_number
from app.web.templating import templates

router = APIRouter(include_in_schema=False)


@router.get("/", response_class=HTMLResponse)
async def lab_home(request: Request, state: Lab = Depends(lab), run: Runner = Depends(runner),
                   preset: str | None = Query(None, max_length=64)) -> HTMLResponse:
    form = dict(request.query_params)
    if preset in BY_NAME:
        form = {**BY_NAME[preset].spec, "preset": preset}
        if isinstance(form.get("targets"), list):
            form["targets"] = ",".join(str(t) for t in form["targets"])
        if form.get("params"):
            form["params"] = json.dumps(form["params"])
    return _lab(request, state, run, form)


def _lab(request: Request, state: Lab, run: Runner, form: dict, error: str | None = None,
         status: int = 200) -> HTMLResponse:
    """The Lab page: presets, the set-up form (filled from ``form``), recent runs, models."""
    recent = [views.view(run, r["id"], history=False) for r in run.store.list(8, visible=True)]
    return templates.TemplateResponse(request, "lab.html", {
        "models": state.registry.list(), "presets": PRESETS, "form": form, "recent": [r for r in recent if r],
        "error": error}, status_code=status)


def _spec_from_form(form: dict) -> JobSpec:
    data: dict = {}
    for key in views.SPEC_FIELDS:
        value = (form.get(key) or "").strip()
        if value == "":
            continue
        if key in ("generations", "steps", "population", "seed"):
            number = whole_number(value)
            data[key] = value if number is None else number  # text: pydantic names the field
        elif key == "targets":
            names = [t.strip() for t in value.split(",") if t.strip()]
            data[key] = "all" if value.lower() == "all" else [t if (n := whole_number(t)) is None else n
                                                            for t in names]
        elif key == "max_seconds":
            try:
                data[key] = float(value)
            except ValueError:
                data[key] = value  # pydantic names the field
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


async def start_job(request: Request, run: Runner, spec: JobSpec, demo: bool = False) -> str:
    try:
        who = identity(request)
        room = job_room(request)
        job_id = await run_in_threadpool(lambda: run.submit(spec, who.client, address=who.address, room=room))
    except JobError as exc:
        raise refused(exc) from None
    return f"/jobs/{job_id}" + ("?demo=1" if demo else "")


@router.post("/lab/start")
async def lab_start(request: Request, run: Runner = Depends(runner), state: Lab = Depends(lab)) -> Response:
    form = dict(await request.form())
    form = {k: v for k, v in form.items() if isinstance(v, str)}
    try:
        spec = _spec_from_form(form)
        return RedirectResponse(await start_job(request, run, spec), status_code=303)
    except ValidationError as exc:
        err = exc.errors()[0]
        message = f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}"
        status = 422
    except ApiError as exc:
        message, status = exc.detail, exc.status_code
    return _lab(request, state, run, form, message, status)


@router.post("/lab/preset/{name}")
async def start_preset(request: Request, name: str = Path(max_length=64), demo: bool = Query(False),
                       run: Runner = Depends(runner)) -> Response:
    preset = BY_NAME.get(name)
    if preset is None:
        raise ApiError(404, f"no preset {name!r}", "name")
    data = dict(preset.spec)
    if preset.sample_image:
        png = (ROOT / "static" / "samples" / preset.sample_image).read_bytes()
        data["image"] = "data:image/png;base64," + base64.b64encode(png).decode()
    data["title"] = preset.title
    seed = (await request.form()).get("seed")  # a room's students each pick their own (else all runs look alike)
    if isinstance(seed, str) and seed.strip():
        number = whole_number(seed)
        if number is None or number >= 2**31:
            raise ApiError(422, "seed must be a whole number from 0 to 2147483647", "seed")
        data["seed"] = number
    return RedirectResponse(await start_job(request, run, JobSpec(**data), demo), status_code=303)


@router.get("/demo", response_class=HTMLResponse)
async def demo(request: Request, state: Lab = Depends(lab)) -> HTMLResponse:
    usable = {e.id for e in state.registry.list() if e.available}
    return templates.TemplateResponse(request, "demo.html", {"presets": PRESETS, "usable": usable})
