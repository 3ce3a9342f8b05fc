"""The experiments' pages: the list, starting one, and a run's numbers and plots."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Path, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from app.experiments import catalog
from app.experiments.runner import ExperimentRunner
from app.web.api.experiments import EXP_ID, ExperimentSpec, cancel_experiment, experiments, get_or_404, public, start
from app.web.deps import identity
from app.web.errors import ApiError
from app.web.templating import templates

router = APIRouter(include_in_schema=False)


@router.get("/experiments", response_class=HTMLResponse)
async def experiments_page(request: Request, run: ExperimentRunner = Depends(experiments)) -> HTMLResponse:
    return templates.TemplateResponse(request, "experiments.html", {
        "titles": catalog.TITLES, "recent": [public(st) for st in run.list(20)],
        "instructor": identity(request).instructor})


@router.post("/experiments/start/{name}")
async def start_from_page(request: Request, name: str = Path(max_length=32),
                          run: ExperimentRunner = Depends(experiments)) -> Response:
    form = await request.form()
    if name not in catalog.EXPERIMENTS:
        raise ApiError(422, f"unknown experiment {name!r}; choose one of {', '.join(catalog.EXPERIMENTS)}", "name")
    spec = ExperimentSpec(name=name, quick=form.get("full") != "1")
    return RedirectResponse(f"/experiments/{start(request, run, spec)}", status_code=303)


@router.post("/experiments/{exp_id}/cancel")
async def cancel_from_page(request: Request, exp_id: str = Path(pattern=EXP_ID),
                           run: ExperimentRunner = Depends(experiments)) -> Response:
    await cancel_experiment(request, exp_id, run)
    return RedirectResponse(f"/experiments/{exp_id}", status_code=303)


@router.get("/experiments/{exp_id}", response_class=HTMLResponse)
async def experiment_page(request: Request, exp_id: str = Path(pattern=EXP_ID),
                          run: ExperimentRunner = Depends(experiments)) -> HTMLResponse:
    st = get_or_404(run, exp_id)
    who = identity(request)
    numbers = {k: v for k, v in (st.get("results") or {}).items() if k not in ("plots",)}
    return templates.TemplateResponse(request, "experiment.html", {
        "exp": public(st), "numbers": numbers, "can_cancel": who.instructor or who.owns(st.get("owner"))})
