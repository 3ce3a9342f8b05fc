"""Experiments over REST: start one, follow it, read its numbers and plots."""

from __future__ import annotations

import queue

from fastapi import APIRouter, Body, Depends, Path, Request
from fastapi.responses import FileResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from app.experiments import catalog
from app.experiments.runner import ExperimentRunner
from app.web.api import examples
from app.web.errors import ApiError, error_responses

router = APIRouter()
EXP_ID = r"^[A-Za-z0-9_-]{8,64}$"


class ExperimentSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)  # NaN or Infinity anywhere: 422
    name: str = Field(description="retrain, transfer, ensemble, smoothing, volume, logistic, neurons, blackbox")
    quick: bool = Field(True, description="small settings (about a minute on a CPU)")
    seed: int = Field(0, ge=0, le=2**31 - 1)


def experiments(request: Request) -> ExperimentRunner:
    return request.app.state.experiments


def start(run: ExperimentRunner, spec: ExperimentSpec) -> str:
    try:
        return run.submit(spec.name, spec.quick, spec.seed)
    except KeyError:
        raise ApiError(422, f"unknown experiment {spec.name!r}; choose one of {', '.join(catalog.EXPERIMENTS)}",
                       "name") from None
    except queue.Full:
        raise ApiError(429, "too many experiments waiting; try again shortly", headers={"Retry-After": "30"}) from None


def get_or_404(run: ExperimentRunner, exp_id: str) -> dict:
    st = run.get(exp_id)
    if st is None:
        raise ApiError(404, f"no experiment {exp_id!r}", "id")
    return st


@router.post("/api/v1/experiments", status_code=201, tags=["experiments"], summary="Run an experiment",
             responses={201: examples.json_example(examples.EXPERIMENT_CREATED), **error_responses(422, 429)})
async def create_experiment(spec: ExperimentSpec = Body(openapi_examples=examples.EXPERIMENT_REQUESTS),
                            run: ExperimentRunner = Depends(experiments)) -> dict:
    """Run one of the experiments (defences, transfer, explainers) in the background. Poll `self`
    until `status` is done; the numbers are in `results`, the plots under their names."""
    exp_id = start(run, spec)
    return {"id": exp_id, "status": "queued",
            "links": {"self": f"/api/v1/experiments/{exp_id}", "page": f"/experiments/{exp_id}"}}


@router.get("/api/v1/experiments/{exp_id}", tags=["experiments"], summary="One experiment",
            responses={200: examples.json_example(examples.EXPERIMENT), **error_responses(404, 422)})
async def get_experiment(exp_id: str = Path(pattern=EXP_ID), run: ExperimentRunner = Depends(experiments)) -> dict:
    """Status (queued, running, done, failed) and, when done, the results with the names of its plots."""
    return get_or_404(run, exp_id)


@router.get("/api/v1/experiments/{exp_id}/{name}", response_class=Response, tags=["experiments"],
            summary="An experiment's plot",
            responses={200: {"content": {"image/png": {}}, "description": "a PNG plot"},
                       **error_responses(404, 422, _404="no such experiment or plot")})
async def experiment_plot(exp_id: str = Path(pattern=EXP_ID), name: str = Path(pattern=r"^[a-z0-9-]{1,64}\.png$"),
                          run: ExperimentRunner = Depends(experiments)) -> Response:
    """One of the plots named in the experiment's `results.plots`."""
    st = get_or_404(run, exp_id)
    if name not in (st.get("results") or {}).get("plots", []):
        raise ApiError(404, f"experiment {exp_id} has no plot {name}", "name")
    return FileResponse(run.root / exp_id / name, media_type="image/png")
