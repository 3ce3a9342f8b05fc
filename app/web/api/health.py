"""Liveness and readiness, kept apart: ready means the models are loaded."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from app.web.api.examples import json_example
from app.web.deps import budget_report, require_instructor
from app.web.errors import error_responses

router = APIRouter(tags=["health"])


class Health(BaseModel):
    status: str = Field(examples=["ok"])


class Engine(BaseModel):
    name: str = Field(examples=["engine-0"])
    alive: bool = Field(description="it answered within the last seconds")
    models: list[str] = Field(default=[], description="models it holds")
    jobs: int = Field(default=0, description="jobs running on it")
    scored: int = Field(default=0, description="images it has scored for this server")
    device: str = Field(default="", examples=["cuda", "cpu"])


class Readiness(BaseModel):
    status: str = Field(description="ready, or loading while models load")
    loaded: list[str] = Field(description="ids of the models available now")
    engines: list[Engine] | None = Field(default=None, description="with FOOLING_BACKEND=ray: the engine actors")
    scoring: str | None = Field(default=None, description="with FOOLING_BACKEND=ray: where /api/v1/score runs, "
                                                          "engines or server (FOOLING_RAY_SCORING)")


@router.get("/healthz", response_model=Health, summary="Liveness",
            responses={200: json_example({"status": "ok"})})
async def healthz() -> dict:
    """Answers as soon as the process serves HTTP, before any model is loaded (for a process supervisor)."""
    return {"status": "ok"}


class Budget(BaseModel):
    used: int = Field(description="kept now")
    limit: int
    unit: str = Field(description="bytes or rows", examples=["bytes"])


class Budgets(BaseModel):
    budgets: dict[str, Budget] = Field(description="disk (the data directory), lineages, quiz_items, members, "
                                                   "experiments")
    retention_days: float = Field(description="FOOLING_RETENTION_DAYS: what retention keeps")


@router.get("/api/v1/budgets", response_model=Budgets, summary="What the server keeps (the instructor)",
            responses={200: json_example({"budgets": {"disk": {"used": 52428800, "limit": 2147483648, "unit": "bytes"},
                                                   "lineages": {"used": 120, "limit": 20000, "unit": "rows"}},
                                       "retention_days": 30}),
                       **error_responses(403)})
def budgets(request: Request) -> dict:
    """Each server-wide budget's use against its limit: the data directory's bytes
    (FOOLING_DISK_BUDGET_MB) and the rows of lineages, quiz images, room members and experiments.
    When one is full, what would pass it gets 507 naming it."""
    require_instructor(request)
    return {"budgets": budget_report(request.app.state.budgets),
            "retention_days": request.app.state.lab.settings.retention_days}


@router.get("/readyz", response_model=Readiness, summary="Readiness",
            responses={200: json_example({"status": "ready", "loaded": ["lenet-mnist", "efficientnet-lite0-imagenet"]}),
                       503: {"model": Readiness, "description": "models are still loading",
                             **json_example({"status": "loading", "loaded": []})}})
async def readyz(request: Request) -> JSONResponse:
    """200 once every preloaded model is resident (send traffic then); 503 while they load. With the
    Ray backend, also once every engine has started, and `engines` says what each holds and runs
    (one that goes down later does not end readiness: its jobs wait for it and scoring runs here
    meanwhile)."""
    registry = request.app.state.lab.registry
    body: dict = {"loaded": [e.id for e in registry.list() if e.available]}
    backend_ready, backend = request.app.state.runner.readiness()
    body.update(backend)
    if not registry.ready.is_set() or not backend_ready:
        return JSONResponse({"status": "loading", **body}, status_code=503)
    return JSONResponse({"status": "ready", **body})
