"""The defence arena (/arena, and a room's /r/{code}/arena): one row per defence of a model, with
what it costs on real data, what share of the gallery's fooling images it rejects, and an attack a
student starts with one button, whose numbers update while it runs. In a room the attacks of every
member stand side by side, and the instructor pins the table to the wall."""

from __future__ import annotations

from collections.abc import AsyncIterator
from urllib.parse import quote

from fastapi import APIRouter, Depends, Form, Path, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from app.classroom.store import CODE_PATTERN
from app.jobs.runner import Runner
from app.jobs.spec import JobSpec
from app.models.defences import base_of
from app.serving.lab import Lab
from app.web import streams
from app.web.arena import ATTACK, ENCODINGS, TITLE, Boards, attack_spec, attack_view
from app.web.deps import (
    arena_model,
    available_model_soon,
    classroom,
    held_stream,
    identity,
    is_member,
    lab,
    open_room,
    require_instructor,
    runner,
)
from app.web.errors import ApiError
from app.web.pages.lab import start_job
from app.web.templating import templates

router = APIRouter(include_in_schema=False)
Code = Path(pattern=CODE_PATTERN)
MAX_ATTACKS = 8  # attack ids a page keeps in its address
ATTACK_EVERY = 1.0  # seconds between two looks at a page's attacks


def boards(request: Request) -> Boards:
    return request.app.state.boards


@router.get("/arena", response_class=HTMLResponse)
async def arena(request: Request, model: str = Query("lenet-mnist", max_length=100),
                attack: list[str] = Query([], max_length=MAX_ATTACKS), state: Lab = Depends(lab),
                run: Runner = Depends(runner)) -> HTMLResponse:
    model = arena_model(state, model)
    rows, images = await boards(request).rows(model)
    attacks = {(a["model"], a["encoding"]): a for a in (attack_view(run, i) for i in attack[:MAX_ATTACKS]
                                                        if len(i) <= 64) if a}
    for row in rows:
        row["attacks"] = [attacks[k] for k in ((row["id"], e) for e in ENCODINGS) if k in attacks]
    models = [e for e in state.registry.list() if e.available]
    active = [a["id"] for a in attacks.values() if a["active"]]
    return templates.TemplateResponse(request, "arena.html", {
        "model": model, "rows": rows, "images": images, "models": models, "attack": ATTACK, "encodings": ENCODINGS,
        "kept": [a["id"] for a in attacks.values()],
        "can_fool": True,
        "attack_events": "/arena/events?" + "&".join(f"attack={i}" for i in active) if active else None})


@router.post("/arena/attack")
async def start_attack(request: Request, model: str = Form(max_length=200), encoding: str = Form("direct"),
                       kept: list[str] = Form([]), room: str = Form("", pattern=r"^([A-Za-z2-9]{4,8})?$"),
                       state: Lab = Depends(lab),
                       run: Runner = Depends(runner)) -> Response:
    entry = await available_model_soon(state, model)
    if encoding not in ENCODINGS:
        raise ApiError(422, f"encoding: one of {', '.join(ENCODINGS)}", "encoding")
    base = base_of(entry.id)
    spec = JobSpec(model=entry.id, encoding=encoding, title=f"{TITLE}{entry.id} ({encoding})",
                   **attack_spec(entry.task))
    job_id = (await start_job(request, run, spec)).rsplit("/", 1)[-1]
    if room and (run.record(job_id) or {}).get("room") == room.upper():  # started from the room's arena
        return RedirectResponse(f"/r/{room.upper()}/arena?model={base}", status_code=303)
    keep = [k for k in kept[:MAX_ATTACKS]
            if len(k) <= 64 and (a := attack_view(run, k)) and (a["model"], a["encoding"]) != (entry.id, encoding)]
    query = "&".join(f"attack={k}" for k in [*keep, job_id][-MAX_ATTACKS:])
    return RedirectResponse(f"/arena?model={base}&{query}", status_code=303)


@router.get("/arena/events")
async def attack_events(request: Request, attack: list[str] = Query([], max_length=MAX_ATTACKS),
                        run: Runner = Depends(runner)) -> Response:
    """The page's attacks as they run, one stream for all of them: an `attack` event (its numbers)
    whenever one changes, at most once a second; `close` once none is running."""
    ids = list(dict.fromkeys(i for i in attack if 0 < len(i) <= 64))

    async def stream() -> AsyncIterator[str]:
        yield streams.RETRY
        sent: dict[str, dict] = {}
        pacer = streams.Pacer(ATTACK_EVERY)
        while True:
            if streams.stopping(request):
                yield streams.sse("close", {"status": "server-stopping"})
                return
            await pacer.pace()
            views = await run_in_threadpool(lambda: [attack_view(run, i) for i in ids])
            for a in views:
                if a is not None and sent.get(a["id"]) != a:
                    sent[a["id"]] = a
                    yield streams.sse("attack", a)
            if not any(a and a["active"] for a in views):
                yield streams.sse("close", {"status": "finished"})
                return

    return streams.response(held_stream(request, stream()))


@router.get("/r/{code}/arena", response_class=HTMLResponse)
async def room_arena(request: Request, code: str = Code, model: str | None = Query(None, max_length=100),
                     state: Lab = Depends(lab)) -> Response:
    """A room's arena: every member's attacks on each defence, side by side, live."""
    if code != code.upper():
        query = f"?model={quote(model)}" if model else ""
        return RedirectResponse(f"/r/{code.upper()}/arena{query}", status_code=307)
    room = open_room(request, code)
    who = identity(request)
    member = is_member(request, room)
    ctx = {"room": room, "member": member, "instructor": who.instructor, "attack": ATTACK, "encodings": ENCODINGS}
    if not (member or who.instructor):  # nicknames and runs are for the room: the page asks to join first
        return templates.TemplateResponse(request, "arena_room.html", ctx)
    model = arena_model(state, model or room["arena"] or "lenet-mnist")
    names = classroom(request).members(room["code"])
    public, full = await boards(request).board(room["code"], model, names, set(room["hidden"]), build=True)
    board = full if who.instructor else public
    models = [e for e in state.registry.list() if e.available and "+" not in e.id]
    return templates.TemplateResponse(request, "arena_room.html", {
        **ctx, "model": model, "rows": board["rows"], "images": board["images"], "models": models,
        "can_fool": member and not room["closed"],
        "board_events": f"/api/v1/rooms/{room['code']}/events?arena={quote(model)}"})


@router.post("/r/{code}/arena/pin")
async def pin_arena(request: Request, code: str = Code, model: str = Form("", max_length=100),
                    state: Lab = Depends(lab)) -> Response:
    """The instructor pins this model's arena to the room's wall (an empty model takes it down)."""
    require_instructor(request)
    room = open_room(request, code)
    classroom(request).set_arena(room["code"], arena_model(state, model) if model else None)
    return RedirectResponse(f"/r/{room['code']}/wall", status_code=303)
