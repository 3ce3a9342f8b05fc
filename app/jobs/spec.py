"""What a client may ask for when it starts a job, checked before anything runs."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictStr

from app.fooling.methods import ADVERSARIAL, ENCODED, METHODS, method_options

Method = Literal["evolve", "map-elites", "gradient", "fgsm", "pgd", "random"]
assert set(Method.__args__) == set(METHODS)  # one list of names for the CLI and the API (a Literal for the schema)
ParamValue = float | int | bool | str | None


def _number_only(value: object) -> object:
    if isinstance(value, bool | str | bytes):  # JSON true is not 1, "5" is not 5
        raise ValueError("Input should be a valid integer")
    return value


# An integer as JSON Schema means it: 67 and 67.0 are integers, true and "67" are not. (pydantic's
# strict mode would refuse 67.0, its lax mode would take true and "67".)
Integer = Annotated[int, BeforeValidator(_number_only)]


class JobSpec(BaseModel):
    """POST /api/v1/jobs. Names follow the ``python -m app fool`` command line."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)  # NaN or Infinity anywhere: 422

    model: str = Field("lenet-mnist", max_length=100, description="model id, see GET /api/v1/models")
    method: Method = "map-elites"
    encoding: Literal["direct", "cppn"] = Field("direct", description="for " + ", ".join(ENCODED))
    targets: list[Integer | StrictStr] | Literal["all"] | None = Field(
        "all", description='class indices (or names), "all"; omit for untargeted adversarial jobs')
    # Integer: true is not 1, "5" is not 5 (a form's digits are turned into numbers by its page)
    generations: Integer | None = Field(None, ge=0, description="evolutionary methods")
    steps: Integer | None = Field(None, ge=1, description="gradient, fgsm and pgd")
    population: Integer | None = Field(None, ge=1, description="offspring per generation")
    seed: Integer = Field(0, ge=0, le=2**31 - 1)
    params: dict[str, ParamValue] = Field(default_factory=dict, max_length=32,
                                          description="any other method parameter, e.g. epsilon, lr, halve_every")
    image: str | None = Field(None, max_length=16 * 1024 * 1024,
                              description="adversarial jobs (and gradient from an image): a data URL")
    upload: str | None = Field(None, pattern=r"^[A-Za-z0-9_-]{8,64}$",
                               description="instead of image: the id from POST /api/v1/uploads")
    max_seconds: float | None = Field(None, strict=True, gt=0, le=86_400,
                                      description="time budget; the best so far is kept")
    title: str | None = Field(None, max_length=200, description="shown in the gallery")

    def options(self) -> dict:
        """The method's parameters as the engine takes them."""
        return method_options(self.params, generations=self.generations, steps=self.steps,
                              population=self.population)

    @property
    def adversarial(self) -> bool:
        return self.method in ADVERSARIAL
