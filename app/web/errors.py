"""JSON errors everywhere: {"error": code, "detail": message}, with the offending field for 422."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.jobs.job import JobError

CODES = {400: "bad_request", 404: "not_found", 405: "method_not_allowed", 409: "conflict",
         413: "too_large", 415: "unsupported_media_type", 422: "invalid", 429: "too_many_requests",
         503: "unavailable"}


class ApiError(StarletteHTTPException):
    def __init__(self, status: int, detail: str, field: str | None = None, headers: dict | None = None):
        super().__init__(status, detail, headers)
        self.field = field


def job_error(exc: JobError) -> ApiError:
    """The runner's refusal as an HTTP error (with Retry-After where waiting helps)."""
    headers = {"Retry-After": str(exc.retry_after)} if exc.retry_after else None
    return ApiError(exc.status, exc.detail, exc.field, headers)


def _field(loc) -> str:
    """('body', 'targets', 'list[union[int,str]]', 0) -> 'targets': the client's name for the field,
    without pydantic's union-member tags."""
    parts = []
    for p in loc:
        if p in ("body", "query", "path", "header", "cookie") and not parts:
            continue
        if isinstance(p, str) and ("[" in p or "(" in p or "-" in p and p.startswith("function")):
            break
        parts.append(str(p))
    return ".".join(parts)


def install(app: FastAPI) -> None:
    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        body = {"error": CODES.get(exc.status_code, "error"), "detail": exc.detail}
        if getattr(exc, "field", None):
            body["field"] = exc.field
        return JSONResponse(body, status_code=exc.status_code, headers=getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [{"field": _field(e.get("loc", ())), "message": e.get("msg", "invalid")} for e in exc.errors()]
        fields = ", ".join(e["field"] for e in errors if e["field"])
        return JSONResponse(
            {"error": "invalid", "detail": f"invalid value for: {fields}" if fields else "invalid request",
             "field": errors[0]["field"] if errors else None, "errors": errors},
            status_code=422,
        )
