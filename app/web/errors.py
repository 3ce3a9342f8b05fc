"""JSON errors everywhere: {"error": code, "detail": message}, with the offending field for 422,
and the same shape documented for every status a route can answer."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.budgets import BudgetFull
from app.errors import KINDS, Refused

CODES = {400: "bad_request", 403: "forbidden", 404: "not_found", 405: "method_not_allowed", 409: "conflict",
         413: "too_large", 415: "unsupported_media_type", 422: "invalid", 429: "too_many_requests",
         503: "unavailable", 507: "insufficient_storage"}


class FieldError(BaseModel):
    field: str = Field(description="the request field, dotted for nested ones (e.g. params.epsilon)")
    message: str


class ErrorBody(BaseModel):
    """What every 4xx and 5xx answer carries."""

    error: str = Field(description="a stable code: " + ", ".join(sorted(set(CODES.values()))))
    detail: str = Field(description="what went wrong, in words for a person")
    field: str | None = Field(None, description="the request field at fault, where there is one")
    errors: list[FieldError] | None = Field(None, description="422 from validation: every field at fault")
    runs: list[dict] | None = Field(None, description="409 from POST /api/v1/studies: the runs to make first "
                                                      "(model, method, encoding, min_confidence)")


_JOB = "AbCdEfGh12345678"
ERROR_EXAMPLES = {
    400: ("corrupt image or too many files",
          {"error": "bad_request", "detail": "x.png: the image data is truncated or corrupt", "field": "file"}),
    403: ("not allowed", {"error": "forbidden", "detail": "only the job's owner or the instructor may do that"}),
    404: ("no such thing", {"error": "not_found", "detail": f"no job {_JOB!r}", "field": "id"}),
    409: ("conflicts with the current state",
          {"error": "conflict", "detail": f"job {_JOB} has already finished (done)"}),
    413: ("too large", {"error": "too_large", "field": "file",
                        "detail": "image is 9000x9000 = 81000000 pixels; the limit is 40000000"}),
    415: ("not an image", {"error": "unsupported_media_type", "field": "file",
                           "detail": "x.txt: not a readable image: send PNG, JPEG, WebP, BMP or GIF"}),
    422: ("invalid request", {"error": "invalid", "detail": "invalid value for: generations", "field": "generations",
                              "errors": [{"field": "generations",
                                          "message": "Input should be greater than or equal to 0"}]}),
    429: ("too many requests: wait for Retry-After seconds",
          {"error": "too_many_requests", "detail": "the job queue is full; try again shortly"}),
    503: ("not ready", {"error": "unavailable", "detail": "the server is shutting down"}),
    507: ("a server-wide budget is full: the detail says which and what frees it",
          {"error": "insufficient_storage", "detail": "the server's disk budget is full (2048 of 2048 MB, "
                                                      "FOOLING_DISK_BUDGET_MB): nothing new can be kept until old "
                                                      "runs are deleted or retention removes them"}),
}


RATE_LIMIT_HEADERS = {
    "Retry-After": {"description": "seconds to wait before trying again", "schema": {"type": "integer"}},
    "RateLimit-Policy": {"description": 'the quota that was reached (IETF draft-ietf-httpapi-ratelimit-headers), '
                                        'e.g. `"jobs-per-client";q=4;qu="concurrent-requests"`',
                         "schema": {"type": "string"}},
    "RateLimit": {"description": 'what is left of it and when to look again, e.g. `"jobs-per-client";r=0;t=5`',
                  "schema": {"type": "string"}},
}


def error_responses(*codes: int, **described: str) -> dict:
    """OpenAPI ``responses`` for these statuses, each with the ErrorBody schema and an example;
    ``described`` overrides a description, keyed like ``_404="unknown model"``. A 429 also
    documents its Retry-After and RateLimit headers."""
    out = {}
    for code in codes:
        text, example = ERROR_EXAMPLES[code]
        out[code] = {"model": ErrorBody, "description": described.get(f"_{code}", text),
                     "content": {"application/json": {"example": example}}}
        if code == 429:
            out[code]["headers"] = RATE_LIMIT_HEADERS
    return out


class ApiError(StarletteHTTPException):
    def __init__(self, status: int, detail: str, field: str | None = None, headers: dict | None = None,
                 policy: tuple[str, int] | None = None, extra: dict | None = None):
        super().__init__(status, detail, headers)
        self.field = field
        self.policy = policy  # a 429's quota: (name, size), sent as RateLimit-Policy
        self.extra = extra or {}  # more fields of the error body (e.g. the runs a study still needs)


def rate_limit_headers(policy: tuple[str, int], retry_after: int) -> dict[str, str]:
    """Retry-After plus the IETF RateLimit fields for a concurrency quota that is used up: our
    caps count things open at once (jobs, streams, experiments), hence qu="concurrent-requests"."""
    name, quota = policy
    return {"Retry-After": str(retry_after),
            "RateLimit-Policy": f'"{name}";q={quota};qu="concurrent-requests"',
            "RateLimit": f'"{name}";r=0;t={retry_after}'}


def too_many(detail: str, policy: tuple[str, int], retry_after: int, field: str | None = None) -> ApiError:
    return ApiError(429, detail, field, rate_limit_headers(policy, retry_after), policy)


# The one place where the app's kinds of refusal (app.errors) become HTTP statuses.
STATUS = {"malformed": 400, "not_found": 404, "conflict": 409, "too_large": 413, "unsupported": 415,
          "invalid": 422, "busy": 429, "unavailable": 503, "full": 507}
assert set(STATUS) == set(KINDS)


def refused(exc: Refused, field: str | None = None, prefix: str = "") -> ApiError:
    """A refusal from below the web layer as its HTTP error, with Retry-After (and for 429 the
    RateLimit fields) where waiting helps; ``field`` and ``prefix`` say where it came from."""
    status, detail, field = STATUS[exc.kind], prefix + exc.detail, field or exc.field
    if status == 429:
        return too_many(detail, exc.quota or ("requests", 0), exc.retry_after or 5, field)
    headers = {"Retry-After": str(exc.retry_after)} if exc.retry_after else None
    return ApiError(status, detail, field, headers)


def allowed_methods(app, scope) -> list[str]:
    """Every method some route serves at this request's path (Starlette's own 405 names only the
    first route that matched, so a path that two routes serve would be under-reported)."""
    from starlette.routing import Match

    methods = []
    for method in ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"):
        probe = {**scope, "method": method}
        if any(route.matches(probe)[0] == Match.FULL for route in app.router.routes):
            methods.append(method)
    return methods


_UNION_TAGS = {"float", "int", "bool", "str", "none", "list", "dict"}  # pydantic's names for union members


def _field(loc) -> str:
    """('body', 'targets', 'list[union[int,str]]', 0) -> 'targets': the client's name for the field,
    without pydantic's union-member tags."""
    parts = []
    for p in loc:
        if p in ("body", "query", "path", "header", "cookie") and not parts:
            continue
        if isinstance(p, str) and ("[" in p or "(" in p or "-" in p and p.startswith("function")
                                   or p in _UNION_TAGS):
            break
        parts.append(str(p))
    return ".".join(parts)


def install(app: FastAPI) -> None:
    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        body = {"error": CODES.get(exc.status_code, "error"), "detail": exc.detail}
        if getattr(exc, "field", None):
            body["field"] = exc.field
        body.update(getattr(exc, "extra", None) or {})
        headers = dict(getattr(exc, "headers", None) or {})
        if exc.status_code == 405:
            methods = allowed_methods(request.app, request.scope)
            if methods:
                headers["Allow"] = ", ".join(methods)
        if exc.status_code == 429 and "RateLimit-Policy" not in headers:
            headers.update(rate_limit_headers(getattr(exc, "policy", None) or ("requests", 0),
                                              int(headers.get("Retry-After", 5))))
        return JSONResponse(body, status_code=exc.status_code, headers=headers or None)

    @app.exception_handler(Refused)
    async def refusal(request: Request, exc: Refused) -> JSONResponse:
        """A refusal no route turned into an ApiError itself; a full budget (app.budgets) is named."""
        if isinstance(exc, BudgetFull):
            return JSONResponse({"error": CODES[507], "detail": exc.detail, "budget": exc.name}, status_code=507)
        return await http_error(request, refused(exc))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [{"field": _field(e.get("loc", ())), "message": e.get("msg", "invalid")} for e in exc.errors()]
        fields = ", ".join(dict.fromkeys(e["field"] for e in errors if e["field"]))  # each field once
        return JSONResponse(
            {"error": "invalid", "detail": f"invalid value for: {fields}" if fields else "invalid request",
             "field": errors[0]["field"] if errors else None, "errors": errors},
            status_code=422,
        )
