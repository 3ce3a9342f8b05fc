"""Liveness and readiness, kept apart: ready means the models are loaded."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict:
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(request: Request) -> JSONResponse:
    registry = request.app.state.lab.registry
    loaded = [e.id for e in registry.list() if e.available]
    if not registry.ready.is_set():
        return JSONResponse({"status": "loading", "loaded": loaded}, status_code=503)
    return JSONResponse({"status": "ready", "loaded": loaded})
