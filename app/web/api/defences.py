"""GET /api/v1/defences: the kinds of defence a model id can carry (MODEL+KIND(args))."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel, Field

from app.models import defences
from app.web.api import examples
from app.web.errors import error_responses

router = APIRouter(prefix="/api/v1", tags=["models"])


class DefenceParam(BaseModel):
    name: str
    doc: str
    min: float | None = None
    max: float | None = None
    default: float | None = None


class DefenceKind(BaseModel):
    kind: str = Field(description="its name in a model id: MODEL+KIND or MODEL+KIND(name=value, ...)")
    title: str
    detector: bool = Field(description="answers \"rejected\" (an extra class) for an input it flags")
    differentiable: bool = Field(description="gradient methods can attack it (through a smooth stand-in for its gate)")
    rejects: bool = Field(description="its model has an extra class, \"rejected\", for what it refuses")
    doc: str
    paper: str
    params: list[DefenceParam]
    example: str = Field(description="a model id that uses it")


class DefenceList(BaseModel):
    grammar: str
    defences: list[DefenceKind]


GRAMMAR = (f"MODEL+KIND or MODEL+KIND(name=value,...), up to {defences.MAX_DEFENCES} defences, an ensemble first "
           "and a detector last")


@router.get("/defences", response_model=DefenceList, summary="Kinds of defence",
            responses={200: examples.json_example({"grammar": GRAMMAR, "defences": defences.catalogue()[1:3]}),
                       **error_responses(422)})
async def list_defences() -> dict:
    """Every kind of defence. A defended model is a model id everywhere one is taken (scoring, jobs,
    studies): `lenet-mnist+smooth(sigma=2)`, `lenet-mnist+ensemble(s1,s2,s3,s4)`, `lenet-mnist+msp`.
    Defences compose left to right (at most three; an ensemble first, a detector last). A detector's
    threshold is calibrated on real held-out test images to its `fpr`; `GET /api/v1/models/{id}` of a
    defended model gives its `clean_accuracy` and `false_positive_rate`. A bad composition is a 422
    that says why."""
    return {"grammar": GRAMMAR, "defences": defences.catalogue()}
