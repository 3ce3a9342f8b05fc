"""Shared request dependencies: the lab state and model lookup with clear errors."""

from __future__ import annotations

from fastapi import Request

from app.api.errors import ApiError
from app.models.entry import ModelEntry, UnknownModel
from app.state import Lab


def lab(request: Request) -> Lab:
    return request.app.state.lab


def available_model(lab: Lab, model_id: str, field: str = "model") -> ModelEntry:
    try:
        entry = lab.registry.get(model_id)
    except UnknownModel:
        known = ", ".join(e.id for e in lab.registry.list())
        raise ApiError(404, f"unknown model {model_id!r}; known models: {known}", field) from None
    if not entry.available:
        raise ApiError(409, f"model {model_id!r} is not available: {entry.reason}", field)
    return entry
