"""/instructor: the instructor signs in once with FOOLING_ADMIN_TOKEN and gets a signed cookie; the
page says plainly when no admin token is set (the instructor features are off then)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from app.web.deps import budget_report, identity
from app.web.identity import INSTRUCTOR_COOKIE
from app.web.templating import templates

router = APIRouter(include_in_schema=False)


def _page(request: Request, error: str | None = None, status: int = 200, headers: dict | None = None
          ) -> HTMLResponse:
    gate = request.app.state.gatekeeper
    signed_in = identity(request).instructor
    rooms = request.app.state.classroom.rooms(20) if signed_in else []
    budgets = budget_report(request.app.state.budgets) if signed_in else {}
    return templates.TemplateResponse(request, "instructor.html", {
        "enabled": gate.instructor_enabled, "signed_in": signed_in, "error": error, "rooms": rooms,
        "warnings": gate.warnings if signed_in else [], "budgets": budgets}, status_code=status, headers=headers)


@router.get("/instructor", response_class=HTMLResponse)
def instructor_page(request: Request) -> HTMLResponse:
    return _page(request)


@router.post("/instructor")
async def sign_in(request: Request) -> Response:
    gate = request.app.state.gatekeeper
    if not gate.instructor_enabled:
        return _page(request, "Instructor features are off: start the server with FOOLING_ADMIN_TOKEN set.", 403)
    address = identity(request).address
    wait = gate.throttle.attempt(address)
    if wait:
        return _page(request, f"Too many wrong tokens from your network: try again in {wait} s.", 429,
                     {"Retry-After": str(wait)})
    form = await request.form()
    token = form.get("token")
    if not isinstance(token, str) or not gate.is_admin_token(token.strip()):
        return _page(request, "That is not the instructor token.", 403)
    gate.throttle.succeeded(address)
    resp = RedirectResponse("/instructor", status_code=303)
    resp.headers.append("set-cookie", await run_in_threadpool(gate.sign_in, request.url.scheme == "https"))
    return resp


@router.post("/instructor/sign-out")
async def sign_out(request: Request) -> Response:
    await run_in_threadpool(request.app.state.gatekeeper.sign_out, request.cookies)
    resp = RedirectResponse("/instructor", status_code=303)
    resp.delete_cookie(INSTRUCTOR_COOKIE, path="/", httponly=True, samesite="lax")
    return resp
