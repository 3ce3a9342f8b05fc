"""The OpenAPI document, made to tell the truth about this server: its caps (read from the
settings at start) as schema bounds, its names (models, classes, method parameters) as enums,
links from what a POST creates to where to find it, and the statuses every route can answer,
including those the middleware adds (403 cross-site, 413 body too large).

What a schema cannot say (a target class that the chosen model lacks, work that is the product of
several settings, an image that does not decode) is written in the operations' descriptions and
answered with the documented 4xx."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from app.jobs.limits import CHOICE_PARAMS, FLAG_PARAMS, INTEGER_PARAMS, NULLABLE_PARAMS, PARAM_BOUNDS
from app.settings import Settings
from app.web.errors import ERROR_EXAMPLES, ErrorBody

PARAM_NOTES = {
    "ten_crop": "fitness averaged over the paper's 10 crops (evolve, map-elites, random)",
    "random_start": "pgd: start from a random point in the epsilon ball",
    "start": "gradient: where ascent starts (image: the job's image or upload)",
    "stepping_stones": "map-elites: a cell for the targets only, or for every class of the model (only the "
                       "targets are reported)",
    "parents": "map-elites: draw parents only from cells still below stop_at (unfinished, the default) or from "
               "every occupied cell (uniform, the paper)",
    "cppn_inputs": "evolution with the cppn encoding: coordinates in [-1, 1] (unit, the default) or raw pixel "
                   "indices (pixels, the paper's code)",
    "color": "evolution and random images: how three genes make a pixel: rgb (direct's default), hls (cppn's "
             "default: HLS over one turn), hls8 (the paper's code: an 8-bit OpenCV hue, 510 degrees that wrap) or "
             "hsv (the paper's text); a grey model has no colour",
    "crossover": "evolve, map-elites with the direct encoding: none (the default, the paper's text) or sbx "
                 "(simulated binary crossover, p 0.5, eta 10: the paper's code)",
}
MUTATING = ("post", "put", "patch", "delete")


def install(app: FastAPI, settings: Settings) -> None:
    """Replace app.openapi with one that builds the refined document once, on first use (after
    start-up, when the model registry is loaded)."""

    def openapi() -> dict:
        if app.openapi_schema is None:
            doc = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
            lab = getattr(app.state, "lab", None)
            refine(doc, settings, lab.registry.list() if lab is not None else [])
            app.openapi_schema = doc
        return app.openapi_schema

    app.openapi = openapi


def _error(code: int, text: str) -> dict:
    example = ERROR_EXAMPLES[code][1]
    return {"description": text, "content": {"application/json": {
        "schema": {"$ref": "#/components/schemas/ErrorBody"}, "example": example}}}


def _params_schema() -> dict:
    props: dict[str, Any] = {}
    for name, (lo, hi) in PARAM_BOUNDS.items():
        num = {"type": "integer" if name in INTEGER_PARAMS else "number", "minimum": lo, "maximum": hi}
        props[name] = {"anyOf": [num, {"type": "null"}]} if name in NULLABLE_PARAMS else num
    for name in FLAG_PARAMS:
        props[name] = {"type": "boolean", "description": PARAM_NOTES[name]}
    for name, choices in CHOICE_PARAMS.items():
        props[name] = {"type": "string", "enum": list(choices), "description": PARAM_NOTES[name]}
    return {"type": "object", "properties": props, "additionalProperties": False, "maxProperties": 32,
            "title": "Params",
            "description": "the method's other parameters; each method takes its own (see docs/cli.md): "
                           "a name another method takes is answered 422"}


def refine(doc: dict, settings: Settings, models: list) -> None:
    s = settings
    schemas = doc.setdefault("components", {}).setdefault("schemas", {})
    schemas.setdefault("ErrorBody", ErrorBody.model_json_schema())
    ids = [m.id for m in models]
    most_classes = max((m.num_classes for m in models), default=1000)

    job = schemas["JobSpec"]["properties"]
    if ids:
        job["model"]["enum"] = ids
    job["generations"] = _capped(job["generations"], s.max_generations)
    job["steps"] = _capped(job["steps"], s.max_steps)
    job["population"] = _capped(job["population"], s.max_population)
    # Class names are not an enum here: they depend on the model (GET /api/v1/models/{id} lists them),
    # and 1000 ImageNet names would swamp a generated client.
    target = {"anyOf": [{"type": "integer", "minimum": 0, "maximum": most_classes - 1},
                        {"type": "string", "minLength": 1, "maxLength": 200,
                         "description": "a class name of the model, e.g. \"school bus\""}]}
    job["targets"]["anyOf"] = [
        {"type": "array", "items": target, "minItems": 1, "maxItems": s.max_targets},
        {"type": "string", "const": "all"}, {"type": "null"}]
    job["params"] = {**_params_schema(), "description": job["params"].get("description", "")}

    for body in (n for n in schemas if n.startswith("Body_")):  # multipart uploads: files are bytes
        file = schemas[body]["properties"].get("file", {})
        (file.get("items") or file)["format"] = "binary"
    for body in (n for n in schemas if n.startswith("Body_score")):
        props = schemas[body]["properties"]
        if ids:
            props["model"]["enum"] = ids
        props["top_k"].update(minimum=1, maximum=most_classes)
        props["file"].update(minItems=1, maxItems=s.max_files)

    for ops in doc["paths"].values():
        for method, op in ops.items():
            for param in op.get("parameters", []):
                if param["name"] == "model" and ids:
                    param["schema"]["enum"] = ids
                if param["name"] == "top_k":
                    param["schema"].update(minimum=1, maximum=most_classes)
            responses = op["responses"]
            for answer in responses.values():  # a PNG is bytes: say so, and generated clients return a file
                png = answer.get("content", {}).get("image/png")
                if png is not None and "schema" not in png:
                    png["schema"] = {"type": "string", "format": "binary"}
            if method in MUTATING:  # answered by GuardMiddleware before any route runs
                responses.setdefault("403", _error(403, "a cross-site request (Origin or Sec-Fetch-Site), refused"))
                responses.setdefault("413", _error(413, "the request body is over the server's limit"))
            if "requestBody" in op and "application/json" in op["requestBody"].get("content", {}):
                responses.setdefault("400", _error(400, "the body is not JSON"))
    _link(doc, "/api/v1/jobs", "post", "201", {
        "GetJob": ("get_job", {"job_id": "$response.body#/id"}),
        "FollowJob": ("job_events", {"job_id": "$response.body#/id"}),
        "ControlJob": ("control_job", {"job_id": "$response.body#/id"}),
        "JobImage": ("job_image", {"job_id": "$response.body#/id"}),
        "DeleteJob": ("delete_job", {"job_id": "$response.body#/id"}),
    })
    _link(doc, "/api/v1/experiments", "post", "201", {
        "GetExperiment": ("get_experiment", {"exp_id": "$response.body#/id"}),
        "CancelExperiment": ("cancel_experiment", {"exp_id": "$response.body#/id"}),
    })


def _capped(schema: dict, cap: float) -> dict:
    """Add a maximum to a (possibly nullable) number schema."""
    if "anyOf" in schema:
        schema["anyOf"] = [{**alt, "maximum": min(cap, alt.get("maximum", cap))} if alt.get("type") in
                           ("integer", "number") else alt for alt in schema["anyOf"]]
    else:
        schema["maximum"] = min(cap, schema.get("maximum", cap))
    return schema


def _link(doc: dict, path: str, method: str, status: str, links: dict) -> None:
    response = doc["paths"][path][method]["responses"][status]
    response["links"] = {name: {"operationId": op, "parameters": params} for name, (op, params) in links.items()}
