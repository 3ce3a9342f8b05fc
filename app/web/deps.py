"""Shared request dependencies: the lab state, the job runner, who is asking, model lookup."""

from __future__ import annotations

import re

from fastapi import Request

from app.jobs.runner import LocalRunner
from app.models.entry import ModelEntry, UnknownModel
from app.serving.lab import Lab
from app.web.errors import ApiError

CLIENT_ID = re.compile(r"^[A-Za-z0-9_-]{8,64}$")


def lab(request: Request) -> Lab:
    return request.app.state.lab


def runner(request: Request) -> LocalRunner:
    return request.app.state.runner


def client_key(request: Request) -> str:
    """Who counts against the per-client job cap: a page's client id (cookie or header), else
    the address. A room behind one NAT then still gets a cap per browser."""
    for value in (request.headers.get("x-client-id"), request.cookies.get("fl_client")):
        if value and CLIENT_ID.match(value):
            return f"id:{value}"
    return f"ip:{request.client.host if request.client else 'unknown'}"


def available_model(lab: Lab, model_id: str, field: str = "model") -> ModelEntry:
    try:
        entry = lab.registry.get(model_id)
    except UnknownModel:
        known = ", ".join(e.id for e in lab.registry.list())
        raise ApiError(404, f"unknown model {model_id!r}; known models: {known}", field) from None
    if not entry.available:
        raise ApiError(409, f"model {model_id!r} is not available: {entry.reason}", field)
    return entry
