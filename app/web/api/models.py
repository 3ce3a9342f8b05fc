"""GET /api/v1/models: every registered model, available or not (and why)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel

from app.models.entry import UnknownModel
from app.serving.lab import Lab
from app.web.deps import lab
from app.web.errors import ApiError

router = APIRouter(prefix="/api/v1", tags=["models"])


class ModelInfo(BaseModel):
    id: str
    title: str
    task: str
    input_shape: list[int]
    num_classes: int
    device: str
    available: bool
    reason: str | None
    differentiable: bool
    source: str
    meta: dict
    labels: list[str] | None = None


class ModelList(BaseModel):
    models: list[ModelInfo]


@router.get("/models", response_model=ModelList, response_model_exclude_unset=True)
async def list_models(labels: bool = Query(True, description="include class labels"),
                      state: Lab = Depends(lab)) -> dict:
    return {"models": [e.public(with_labels=labels) for e in state.registry.list()]}


@router.get("/models/{model_id}", response_model=ModelInfo)
async def get_model(model_id: str, state: Lab = Depends(lab)) -> dict:
    try:
        return state.registry.get(model_id).public()
    except UnknownModel:
        raise ApiError(404, f"unknown model {model_id!r}") from None

