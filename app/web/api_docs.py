"""API documentation pages that work offline: Swagger UI at /docs and ReDoc at /redoc, served from
files vendored under static/vendor (no CDN), each with a CSP that allows exactly what it needs."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from app.web.templating import templates

router = APIRouter(include_in_schema=False)

# Swagger UI sets inline styles and draws icons from data: URIs; ReDoc also injects <style>
# elements (styled-components) and runs its search index in a blob: worker. Scripts stay 'self'.
_BASE = ("default-src 'self'; script-src 'self'; connect-src 'self'; img-src 'self' data:; "
         "font-src 'self' data:; object-src 'none'; base-uri 'self'; frame-ancestors 'none'")
SWAGGER_CSP = _BASE + "; style-src 'self' 'unsafe-inline'"
REDOC_CSP = _BASE + "; style-src 'self' 'unsafe-inline'; worker-src blob:"


@router.get("/docs", response_class=HTMLResponse)
async def swagger_ui(request: Request) -> HTMLResponse:
    """Try every endpoint from the browser."""
    return templates.TemplateResponse(request, "api_docs.html", {"title": request.app.title},
                                      headers={"Content-Security-Policy": SWAGGER_CSP})


@router.get("/redoc", response_class=HTMLResponse)
async def redoc(request: Request) -> HTMLResponse:
    """The same document as one readable reference page."""
    return templates.TemplateResponse(request, "redoc.html", {"title": request.app.title},
                                      headers={"Content-Security-Policy": REDOC_CSP})
