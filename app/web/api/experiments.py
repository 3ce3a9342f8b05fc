"""Experiments over REST: start one, follow it, read its numbers and plots."""

from __future__ import annotations

import contextlib
import queue
from typing import Literal

from fastapi import APIRouter, Body, Depends, Path, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from app.experiments import catalog
from app.experiments.runner import ExperimentError, ExperimentRunner
from app.jobs.spec import Integer
from app.web.api import examples
from app.web.caching import immutable_file
from app.web.deps import identity
from app.web.errors import ApiError, error_responses, refused, too_many
from app.web.paths import PLOT_NAME

router = APIRouter()
EXP_ID = r"^[A-Za-z0-9_-]{8,64}$"


class ExperimentSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)  # NaN or Infinity anywhere: 422
    name: Literal[tuple(catalog.EXPERIMENTS)] = Field(description="which experiment (see docs/experiments.md)")
    quick: bool = Field(True, strict=True, description="small settings (about a minute on a CPU)")
    seed: Integer = Field(0, ge=0, le=2**31 - 1)


def experiments(request: Request) -> ExperimentRunner:
    return request.app.state.experiments


def start(request: Request, run: ExperimentRunner, spec: ExperimentSpec) -> str:
    """Queue an experiment for this client; full settings are the instructor's to start."""
    who = identity(request)
    if not spec.quick and not who.instructor:
        raise ApiError(403, "full settings run for many minutes: only the instructor may start them "
                            "(quick settings are open to all)", "quick")
    try:
        return run.submit(spec.name, spec.quick, spec.seed, who.client)
    except KeyError:
        raise ApiError(422, f"unknown experiment {spec.name!r}; choose one of {', '.join(catalog.EXPERIMENTS)}",
                       "name") from None
    except ExperimentError as exc:
        raise refused(exc) from None
    except queue.Full:
        raise too_many("too many experiments waiting; try again shortly", ("experiment-queue", run.max_queued),
                       30) from None


def public(st: dict) -> dict:
    """An experiment's status as clients see it (who started it stays on the server)."""
    return {k: v for k, v in st.items() if k != "owner"}


def get_or_404(run: ExperimentRunner, exp_id: str) -> dict:
    st = run.get(exp_id)
    if st is None:
        raise ApiError(404, f"no experiment {exp_id!r}", "id")
    return st


@router.post("/api/v1/experiments", status_code=201, tags=["experiments"], summary="Run an experiment",
             responses={201: examples.json_example(examples.EXPERIMENT_CREATED),
                        **error_responses(403, 422, 429, _403="full settings are for the instructor")})
async def create_experiment(request: Request,
                            spec: ExperimentSpec = Body(openapi_examples=examples.EXPERIMENT_REQUESTS),
                            run: ExperimentRunner = Depends(experiments)) -> dict:
    """Run one of the experiments (defences, transfer, explainers) in the background. Poll `self`
    until `status` is done; the numbers are in `results`, the plots under their names. Each client may
    have FOOLING_MAX_EXPERIMENTS_PER_CLIENT queued or running; `quick: false` (full settings, many
    minutes) is for the instructor; a run past FOOLING_EXPERIMENT_TIMEOUT_S is stopped."""
    exp_id = start(request, run, spec)
    return {"id": exp_id, "status": "queued",
            "links": {"self": f"/api/v1/experiments/{exp_id}", "page": f"/experiments/{exp_id}"}}


@router.get("/api/v1/experiments/{exp_id}", tags=["experiments"], summary="One experiment",
            responses={200: examples.json_example(examples.EXPERIMENT), **error_responses(404, 422)})
async def get_experiment(exp_id: str = Path(pattern=EXP_ID), run: ExperimentRunner = Depends(experiments)) -> dict:
    """Status (queued, running, done, failed, cancelled, interrupted) and, when done, the results with
    the names of its plots."""
    return public(get_or_404(run, exp_id))


@router.post("/api/v1/experiments/{exp_id}/cancel", tags=["experiments"], summary="Cancel an experiment",
             responses={200: examples.json_example({**examples.EXPERIMENT_CREATED, "status": "cancelled"}),
                        **error_responses(403, 404, 409, 422, _403="not the experiment's owner or the instructor",
                                          _409="already finished")})
async def cancel_experiment(request: Request, exp_id: str = Path(pattern=EXP_ID),
                            run: ExperimentRunner = Depends(experiments)) -> dict:
    """Stop a queued or running experiment (its process is killed). For the client that started it
    and the instructor."""
    who = identity(request)
    st = get_or_404(run, exp_id)
    if not (who.instructor or who.owns(st.get("owner"))):
        raise ApiError(403, "only the experiment's owner or the instructor may cancel it")
    try:
        return public(run.cancel(exp_id))
    except ExperimentError as exc:
        raise refused(exc) from None


@router.get("/api/v1/experiments/{exp_id}/{name:plot}", response_class=Response, tags=["experiments"],
            summary="An experiment's plot",
            responses={200: {"content": {"image/png": {}}, "description": "a PNG plot"},
                       304: {"description": "not modified: If-None-Match named the plot's ETag"},
                       **error_responses(404, 422, _404="no such experiment or plot")})
async def experiment_plot(request: Request, exp_id: str = Path(pattern=EXP_ID),
                          name: str = Path(pattern=f"^{PLOT_NAME}$"),
                          run: ExperimentRunner = Depends(experiments)) -> Response:
    """One of the plots named in the experiment's `results.plots`. A plot never changes once
    written: a strong ETag, cached for a year, 304 to If-None-Match."""
    st = get_or_404(run, exp_id)
    if name in (st.get("results") or {}).get("plots", []):
        with contextlib.suppress(FileNotFoundError, NotADirectoryError):
            return immutable_file(request, run.root / exp_id / name, "image/png")
    raise ApiError(404, f"experiment {exp_id} has no plot {name}", "name")
