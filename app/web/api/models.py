"""GET /api/v1/models: every registered model, available or not (and why)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Path, Query
from pydantic import BaseModel, Field

from app.models.entry import UnknownModel
from app.serving.lab import Lab
from app.web.api import examples
from app.web.deps import lab
from app.web.errors import ApiError, error_responses

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
    runtime: str = Field(description="what runs its forward-only work: torch or onnx (ONNX Runtime); "
                                     "gradients always use PyTorch")
    runtime_reason: str = Field(description="why that runtime (FOOLING_RUNTIME, and for auto what was measured)")
    source: str
    meta: dict
    labels: list[str] | None = None


class ModelList(BaseModel):
    models: list[ModelInfo]


@router.get("/models", response_model=ModelList, response_model_exclude_unset=True, summary="List models",
            responses={200: examples.json_example(examples.MODELS), **error_responses(422)})
async def list_models(labels: bool = Query(True, description="include class labels"),
                      state: Lab = Depends(lab)) -> dict:
    """Every registered model, available or not. An unavailable one says why in `reason` (for
    torchvision's networks: weights not cached and no internet) and how to get it."""
    return {"models": [e.public(with_labels=labels) for e in state.registry.list()]}


@router.get("/models/{model_id}", response_model=ModelInfo, summary="One model",
            responses={200: examples.json_example(examples.MODEL),
                       **error_responses(404, 422, _404="unknown model id")})
async def get_model(model_id: str = Path(max_length=100, description="a model id from GET /api/v1/models"),
                    state: Lab = Depends(lab)) -> dict:
    """One model with its class labels, input shape and whether it can be used now."""
    try:
        return state.registry.get(model_id).public()
    except UnknownModel:
        raise ApiError(404, f"unknown model {model_id!r}", "model_id") from None

