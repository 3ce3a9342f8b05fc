"""Liveness and readiness, kept apart: ready means the models are loaded."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from app.web.api.examples import json_example

router = APIRouter(tags=["health"])


class Health(BaseModel):
    status: str = Field(examples=["ok"])


class Readiness(BaseModel):
    status: str = Field(description="ready, or loading while models load")
    loaded: list[str] = Field(description="ids of the models available now")


@router.get("/healthz", response_model=Health, summary="Liveness",
            responses={200: json_example({"status": "ok"})})
async def healthz() -> dict:
    """Answers as soon as the process serves HTTP, before any model is loaded (for a process supervisor)."""
    return {"status": "ok"}


@router.get("/readyz", response_model=Readiness, summary="Readiness",
            responses={200: json_example({"status": "ready", "loaded": ["lenet-mnist", "efficientnet-lite0-imagenet"]}),
                       503: {"model": Readiness, "description": "models are still loading",
                             **json_example({"status": "loading", "loaded": []})}})
async def readyz(request: Request) -> JSONResponse:
    """200 once every preloaded model is resident (send traffic then); 503 while they load."""
    registry = request.app.state.lab.registry
    loaded = [e.id for e in registry.list() if e.available]
    if not registry.ready.is_set():
        return JSONResponse({"status": "loading", "loaded": loaded}, status_code=503)
    return JSONResponse({"status": "ready", "loaded": loaded})
