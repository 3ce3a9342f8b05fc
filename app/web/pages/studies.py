"""A study as its participants see it: consent, then each block's trials without feedback, the
participant's own agreement when a block ends, and thanks at the end. Plain forms: no script of
ours is needed except to hide an image after the study's exposure time."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Form, Path, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from app.classroom import studies
from app.serving.lab import Lab
from app.web.api import studies as studies_api
from app.web.deps import identity, lab
from app.web.errors import ApiError
from app.web.templating import templates

router = APIRouter(include_in_schema=False)
StudyId = Path(pattern=studies_api.STUDY_ID)


@router.get("/studies/{study_id}", response_class=HTMLResponse)
async def study_page(request: Request, study_id: str = StudyId, begin: int = Query(0, ge=0, le=1),
                     c: int = Query(0, ge=0, le=1), state: Lab = Depends(lab)) -> Response:
    study = studies_api._study(request, study_id)
    who = identity(request)
    ctx = {"study": study, "consent": studies.CONSENT, "blocks": study["design"]["blocks"],
           "per": study["design"]["trials_per_block"], "mine": [], "trial": None, "cookies_off": False}
    if who.anonymous:  # a first visit: the trials must be this browser's own, under the cookie set now
        if not c:
            return RedirectResponse(f"/studies/{study_id}?c=1", status_code=303)
        return templates.TemplateResponse(request, "study.html", {**ctx, "cookies_off": True})
    store = studies_api._store(request)
    mine = await run_in_threadpool(store.trials, study_id, who.client)
    ctx["feedback"] = [f for b in range(len(ctx["blocks"])) if (f := studies.block_feedback(study, mine, b))]
    if not mine and not begin:
        return templates.TemplateResponse(request, "study.html", ctx)  # consent and the first instruction
    trial = await studies_api.open_trial(request, study)
    ctx["trial"] = studies_api._trial_view(study, trial) if trial is not None else None
    ctx["done"] = trial is None
    return templates.TemplateResponse(request, "study.html", ctx)


@router.post("/studies/{study_id}/answer", response_class=HTMLResponse)
async def study_answer(request: Request, study_id: str = StudyId, trial: str = Form(max_length=64),
                       answer: str = Form(max_length=200)) -> Response:
    try:
        body = studies_api.TrialAnswer(trial=trial, answer=answer)
    except ValidationError:
        raise ApiError(422, "trial is missing or malformed", "trial") from None
    try:
        reply = await studies_api.answer(request, body, study_id)
    except ApiError as exc:
        if exc.status_code == 409:  # answered already (a second click, another tab): on to the next image
            return RedirectResponse(f"/studies/{study_id}?begin=1", status_code=303)
        raise
    if reply["block_complete"]:  # the block's feedback, then the next block when they are ready
        study = studies_api._study(request, study_id)
        ctx = {"study": study, "blocks": study["design"]["blocks"], "ended": reply["feedback"],
               "last": reply["block"] == len(study["design"]["blocks"]) - 1}
        return templates.TemplateResponse(request, "study_block.html", ctx)
    return RedirectResponse(f"/studies/{study_id}?begin=1", status_code=303)


@router.get("/studies", response_class=HTMLResponse)
async def studies_page(request: Request, state: Lab = Depends(lab)) -> Response:
    """Design a study (anyone, for a personal one; the instructor for a class) and list your own."""
    return await _studies_page(request, state)


async def _studies_page(request: Request, state: Lab, error: str | None = None, runs: list | None = None,
                        form: dict | None = None) -> Response:
    who = identity(request)
    mine = [] if who.anonymous else await run_in_threadpool(studies_api._store(request).owned, who.client)
    models = [e for e in state.registry.list() if e.available]
    ctx = {"mine": mine, "models": models, "error": error, "runs": runs or [], "form": form or {},
           "conditions": studies.CONDITIONS, "tasks": list(studies.TASKS)}
    return templates.TemplateResponse(request, "studies.html", ctx, status_code=409 if runs else
                                      422 if error else 200)


@router.post("/studies", response_class=HTMLResponse)
async def create_from_form(request: Request, state: Lab = Depends(lab)) -> Response:
    form = await request.form()
    raw = {"models": form.getlist("models"), "tasks": form.getlist("tasks"),
           "conditions": form.getlist("conditions"), "controls": form.get("controls") == "on",
           "min_confidence": form.get("min_confidence") or 0.99, "trials_per_block": form.get("trials_per_block") or 10,
           "exposure_ms": form.get("exposure_ms") or None, "title": str(form.get("title") or "")[:200]}
    try:
        design = studies_api.StudyDesign(**raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        return await _studies_page(request, state, f"{'.'.join(map(str, first['loc']))}: {first['msg']}", form=raw)
    try:
        made = await studies_api.create_study(request, design, state)
    except ApiError as exc:
        if exc.status_code == 409:
            return await _studies_page(request, state, exc.detail, exc.extra.get("runs", []), raw)
        raise
    return RedirectResponse(f"/studies/{made['id']}/results", status_code=303)


@router.get("/studies/{study_id}/results", response_class=HTMLResponse)
async def results_page(request: Request, study_id: str = StudyId) -> Response:
    """For the study's maker and the instructor: the link to share, and the results so far."""
    study = studies_api._study(request, study_id)
    res = await studies_api.study_results(request, study_id)
    return templates.TemplateResponse(request, "study_results.html",
                                      {"study": study, "res": res, "links": studies_api._links(study_id)})
