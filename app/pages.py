"""Server-rendered pages (Jinja2). The API stays the source of truth; pages call the same code."""

from __future__ import annotations

from fastapi import APIRouter, Depends, File, Form, Request, UploadFile
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates
from starlette.exceptions import HTTPException

from app.api.deps import lab
from app.api.score import score_uploads
from app.settings import ROOT
from app.state import Lab

router = APIRouter(include_in_schema=False)
templates = Jinja2Templates(directory=ROOT / "templates")


@router.get("/", response_class=HTMLResponse)
async def home(request: Request, state: Lab = Depends(lab)) -> HTMLResponse:
    return templates.TemplateResponse(request, "index.html", {"models": state.registry.list()})


@router.get("/score", response_class=HTMLResponse)
async def score_page(request: Request, state: Lab = Depends(lab)) -> HTMLResponse:
    return templates.TemplateResponse(request, "score.html", {"models": _usable(state), "result": None})


@router.post("/score", response_class=HTMLResponse)
async def score_form(request: Request, file: list[UploadFile] = File(...), model: str = Form("lenet-mnist"),
                     state: Lab = Depends(lab)) -> HTMLResponse:
    ctx = {"models": _usable(state), "result": None, "error": None, "chosen": model}
    try:
        ctx["result"] = await score_uploads(state, file, model, 5)
    except HTTPException as exc:
        ctx["error"] = exc.detail
        return templates.TemplateResponse(request, "score.html", ctx, status_code=exc.status_code)
    return templates.TemplateResponse(request, "score.html", ctx)


def _usable(state: Lab) -> list:
    return [e for e in state.registry.list() if e.available]
