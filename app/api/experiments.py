"""Experiments over REST, and their pages: start one, follow it, read its numbers and plots."""

from __future__ import annotations

import queue

from fastapi import APIRouter, Depends, Path, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from app.api.errors import ApiError
from app.experiments import cli
from app.experiments.jobs import ExperimentRunner
from app.pages import templates

router = APIRouter()
EXP_ID = r"^[A-Za-z0-9_-]{8,64}$"


class ExperimentSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(description="retrain, transfer, ensemble, smoothing, volume, logistic, neurons, blackbox")
    quick: bool = Field(True, description="small settings (about a minute on a CPU)")
    seed: int = Field(0, ge=0, le=2**31 - 1)


def experiments(request: Request) -> ExperimentRunner:
    return request.app.state.experiments


def _start(run: ExperimentRunner, spec: ExperimentSpec) -> str:
    try:
        return run.submit(spec.name, spec.quick, spec.seed)
    except KeyError:
        raise ApiError(422, f"unknown experiment {spec.name!r}; choose one of {', '.join(cli.EXPERIMENTS)}",
                       "name") from None
    except queue.Full:
        raise ApiError(429, "too many experiments waiting; try again shortly", headers={"Retry-After": "30"}) from None


def _get(run: ExperimentRunner, exp_id: str) -> dict:
    st = run.get(exp_id)
    if st is None:
        raise ApiError(404, f"no experiment {exp_id!r}", "id")
    return st


@router.post("/api/v1/experiments", status_code=201, tags=["experiments"])
async def create_experiment(spec: ExperimentSpec, run: ExperimentRunner = Depends(experiments)) -> dict:
    """Run an experiment in the background; its results page fills in when it is done."""
    exp_id = _start(run, spec)
    return {"id": exp_id, "status": "queued",
            "links": {"self": f"/api/v1/experiments/{exp_id}", "page": f"/experiments/{exp_id}"}}


@router.get("/api/v1/experiments/{exp_id}", tags=["experiments"])
async def get_experiment(exp_id: str = Path(pattern=EXP_ID), run: ExperimentRunner = Depends(experiments)) -> dict:
    return _get(run, exp_id)


@router.get("/api/v1/experiments/{exp_id}/{name}", response_class=Response, tags=["experiments"],
            responses={200: {"content": {"image/png": {}}}, 404: {"description": "no such plot"}})
async def experiment_plot(exp_id: str = Path(pattern=EXP_ID), name: str = Path(pattern=r"^[a-z0-9-]{1,64}\.png$"),
                          run: ExperimentRunner = Depends(experiments)) -> Response:
    st = _get(run, exp_id)
    if name not in (st.get("results") or {}).get("plots", []):
        raise ApiError(404, f"experiment {exp_id} has no plot {name}", "name")
    return FileResponse(run.root / exp_id / name, media_type="image/png")


@router.get("/experiments", response_class=HTMLResponse, include_in_schema=False)
async def experiments_page(request: Request, run: ExperimentRunner = Depends(experiments)) -> HTMLResponse:
    return templates.TemplateResponse(request, "experiments.html", {"titles": cli.TITLES, "recent": run.list(20)})


@router.post("/experiments/start/{name}", include_in_schema=False)
async def start_from_page(request: Request, name: str = Path(max_length=32),
                          run: ExperimentRunner = Depends(experiments)) -> Response:
    form = await request.form()
    spec = ExperimentSpec(name=name, quick=form.get("full") != "1")
    return RedirectResponse(f"/experiments/{_start(run, spec)}", status_code=303)


@router.get("/experiments/{exp_id}", response_class=HTMLResponse, include_in_schema=False)
async def experiment_page(request: Request, exp_id: str = Path(pattern=EXP_ID),
                          run: ExperimentRunner = Depends(experiments)) -> HTMLResponse:
    st = _get(run, exp_id)
    numbers = {k: v for k, v in (st.get("results") or {}).items() if k not in ("plots",)}
    return templates.TemplateResponse(request, "experiment.html", {"exp": st, "numbers": numbers})
