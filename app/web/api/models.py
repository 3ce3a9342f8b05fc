"""GET /api/v1/models: every registered model, available or not (and why)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Path, Query, Request
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

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
    clean_accuracy: float | None = Field(None, description="a defended model (MODEL+KIND): its accuracy on real "
                                                           "held-out test images, a rejected one counting as wrong")
    false_positive_rate: float | None = Field(None, description="a defended model: the share of real held-out test "
                                                                "images its detector rejects (0 without a detector)")


class NoiseBaseline(BaseModel):
    n: int = Field(description="random images scored")
    median: float = Field(description="median top-1 confidence the model gives them")
    p95: float = Field(description="95th percentile of that top-1 confidence")
    top_label: str = Field(description="the label the model gives random images most often")
    top_label_share: float = Field(description="the share of random images given top_label")
    images: str = Field(description="what the random images are")
    seed: int


class ModelDetail(ModelInfo):
    noise_baseline: NoiseBaseline | None = Field(
        description="what the model says of random images (the paper: low confidence), measured on the first "
                    "request for this model and kept; null while the model is unavailable")


class ModelList(BaseModel):
    models: list[ModelInfo]


@router.get("/models", response_model=ModelList, response_model_exclude_unset=True, summary="List models",
            responses={200: examples.json_example(examples.MODELS), **error_responses(422)})
async def list_models(labels: bool = Query(True, description="include class labels"),
                      state: Lab = Depends(lab)) -> dict:
    """Every registered model, available or not. An unavailable one says why in `reason` (for
    torchvision's networks: weights not cached and no internet) and how to get it."""
    return {"models": [e.public(with_labels=labels) for e in state.registry.list()]}


@router.get("/models/{model_id}", response_model=ModelDetail, summary="One model",
            responses={200: examples.json_example(examples.MODEL_DETAIL),
                       **error_responses(404, 422, _404="unknown model id")})
async def get_model(request: Request,
                    model_id: str = Path(max_length=100, description="a model id from GET /api/v1/models"),
                    state: Lab = Depends(lab)) -> dict:
    """One model with its class labels, input shape, whether it can be used now, and its noise
    baseline: the confidence it gives uniform random images (the first request for a model
    measures it: 1000 noise images at MNIST size, 100 at ImageNet size, about 3 s on a CPU)."""
    try:
        entry = await run_in_threadpool(state.registry.get, model_id)  # a defended model may need building
    except UnknownModel:
        raise ApiError(404, f"unknown model {model_id!r}", "model_id") from None
    baseline = None
    if entry.available:
        baseline = await request.app.state.noise.get(entry.id, entry.input_shape, entry.labels,
                                                     state.scorer.probabilities)
    return {**entry.public(), "noise_baseline": baseline}

