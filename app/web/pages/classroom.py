"""The classroom's pages: a room (join, presets, the student's runs), the class wall, "Can you
tell?" and its results, and breeding by hand."""

from __future__ import annotations

import hashlib
import re

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from app.classroom import breed as breeding
from app.classroom import quiz as quizzing
from app.classroom.store import CODE_PATTERN
from app.jobs.presets import PRESETS
from app.jobs.runner import JobError, Runner
from app.serving.lab import Lab
from app.web import views
from app.web.api import breed as breed_api
from app.web.api import quiz as quiz_api
from app.web.api.rooms import NICKNAME, room_links
from app.web.deps import classroom, identity, is_member, lab, open_room, require_instructor, require_member, runner
from app.web.deps import join as join_room
from app.web.errors import ApiError, refused
from app.web.forms import whole_number
from app.web.identity import ROOM_COOKIE
from app.web.templating import templates

router = APIRouter(include_in_schema=False)
Code = Path(pattern=CODE_PATTERN)


def _room_context(request: Request, code: str) -> dict:
    room = open_room(request, code)
    who = identity(request)
    member = classroom(request).member(room["code"], who.client) if is_member(request, room) else None
    return {"room": room, "links": room_links(room["code"]), "member": member,
            "instructor": who.instructor, "members": len(classroom(request).members(room["code"]))}


@router.get("/r/{code}", response_class=HTMLResponse)
async def room_page(request: Request, code: str = Code, run: Runner = Depends(runner),
                    state: Lab = Depends(lab)) -> Response:
    if code != code.upper():
        return RedirectResponse(f"/r/{code.upper()}", status_code=307)
    ctx = _room_context(request, code)
    mine = []
    if ctx["member"]:
        recs = [r for r in run.store.list(50, room=ctx["room"]["code"]) if identity(request).owns(r["client"])]
        mine = [v for v in (views.view(run, r["id"], history=False) for r in recs[:12]) if v]
    usable = {e.id for e in state.registry.list() if e.available}
    # each student's own default seed, so that a room's runs of one preset differ
    seed = int(hashlib.sha256(identity(request).client.encode()).hexdigest()[:8], 16) % 100_000
    return templates.TemplateResponse(request, "room.html", {**ctx, "mine": mine, "presets": PRESETS,
                                                             "usable": usable, "seed": seed})


@router.post("/r/{code}/join")
async def join(request: Request, code: str = Code) -> Response:
    room = open_room(request, code)
    nickname = str((await request.form()).get("nickname") or "").strip()
    if not re.match(NICKNAME, nickname):
        raise ApiError(422, "a nickname is 1 to 24 characters, without < > & or quotes", "nickname")
    cookie, _ = await run_in_threadpool(join_room, request, room, nickname)
    resp = RedirectResponse(f"/r/{room['code']}", status_code=303)
    resp.headers.append("set-cookie", cookie)
    return resp


@router.post("/r/{code}/leave")
async def leave(request: Request, code: str = Code) -> Response:
    """Leave the room: its cookie goes, and so does the membership (the nickname and the place)."""
    room = open_room(request, code)
    if is_member(request, room):
        await run_in_threadpool(classroom(request).leave, room["code"], identity(request).client)
    resp = RedirectResponse("/", status_code=303)
    resp.delete_cookie(ROOM_COOKIE, path="/", httponly=True, samesite="lax")
    return resp


@router.post("/instructor/rooms")
async def create_room_page(request: Request) -> Response:
    require_instructor(request)
    title = str((await request.form()).get("title") or "").strip()[:80].replace("<", "").replace(">", "")
    room = classroom(request).create_room(title)
    return RedirectResponse(f"/r/{room['code']}", status_code=303)


@router.post("/r/{code}/close")
async def close_room_page(request: Request, code: str = Code) -> Response:
    require_instructor(request)
    room = open_room(request, code)
    classroom(request).close_room(room["code"])
    return RedirectResponse(f"/r/{room['code']}", status_code=303)


@router.get("/r/{code}/wall", response_class=HTMLResponse)
async def wall(request: Request, code: str = Code) -> HTMLResponse:
    """The class wall: for the room's members and the instructor (others are asked to join)."""
    return templates.TemplateResponse(request, "wall.html", _room_context(request, code))


# -- "Can you tell?" ------------------------------------------------------------------------------
def _quiz_page(request: Request, item: dict | None, room: dict | None, reveal: dict | None = None,
               status: int = 200, cookies_off: bool = False) -> HTMLResponse:
    who = identity(request)
    answered = 0 if who.anonymous else classroom(request).answered_count(who.client, room["code"] if room else None)
    return templates.TemplateResponse(request, "quiz.html", {
        "item": quiz_api.item_view(item) if item else None, "room": room, "reveal": reveal, "answered": answered,
        "cookies_off": cookies_off,
        "results": f"/r/{room['code']}/quiz/results" if room else "/quiz/results"}, status_code=status)


@router.get("/quiz", response_class=HTMLResponse)
async def quiz_page(request: Request, state: Lab = Depends(lab), c: int = Query(0, ge=0, le=1)) -> Response:
    if identity(request).anonymous:
        # A first visit: the image must be shown to this browser's own id, which it has from the
        # cookie set now; once (c=1) so that a client that keeps no cookies is not sent round forever.
        if not c:
            return RedirectResponse("/quiz?c=1", status_code=303)
        return _quiz_page(request, None, None, cookies_off=True)
    return _quiz_page(request, await quiz_api.next_item(request, state, None), None)


@router.get("/r/{code}/quiz", response_class=HTMLResponse)
async def room_quiz_page(request: Request, code: str = Code, state: Lab = Depends(lab)) -> Response:
    room = open_room(request, code)
    if not is_member(request, room):
        return RedirectResponse(f"/r/{room['code']}", status_code=303)  # join first
    item = None if room["closed"] else await quiz_api.next_item(request, state, room["code"])
    return _quiz_page(request, item, room)


async def _answer(request: Request, state: Lab, room: dict | None) -> HTMLResponse:
    form = await request.form()
    item_id, answer = str(form.get("item") or ""), str(form.get("answer") or "")
    if not re.match(quiz_api.ITEM_ID, item_id):
        raise ApiError(422, "item is missing", "item")
    reveal = quiz_api.record_answer(request, item_id, answer)
    return _quiz_page(request, await quiz_api.next_item(request, state, room["code"] if room else None), room, reveal)


@router.post("/quiz/answer", response_class=HTMLResponse)
async def quiz_answer(request: Request, state: Lab = Depends(lab)) -> HTMLResponse:
    return await _answer(request, state, None)


@router.post("/r/{code}/quiz/answer", response_class=HTMLResponse)
async def room_quiz_answer(request: Request, code: str = Code, state: Lab = Depends(lab)) -> HTMLResponse:
    return await _answer(request, state, open_room(request, code))


def _results_page(request: Request, room: dict | None) -> HTMLResponse:
    summary = quizzing.summarise(classroom(request).answers(room["code"] if room else None,
                                                            everywhere=identity(request).instructor))
    csv = "/api/v1/quiz/results.csv" + (f"?room={room['code']}" if room else "")
    return templates.TemplateResponse(request, "quiz_results.html", {
        "s": summary, "room": room, "csv": csv, "plot": results_plot(summary),
        "quiz": f"/r/{room['code']}/quiz" if room else "/quiz"})


@router.get("/quiz/results", response_class=HTMLResponse)
async def quiz_results(request: Request) -> HTMLResponse:
    return _results_page(request, None)


@router.get("/r/{code}/quiz/results", response_class=HTMLResponse)
async def room_quiz_results(request: Request, code: str = Code) -> HTMLResponse:
    room = open_room(request, code)
    require_member(request, room, "the quiz results")
    return _results_page(request, room)


KINDS = {"real": "dot-real", "fooling · cppn": "dot-cppn", "fooling · direct": "dot-direct"}  # style.css


def results_plot(summary: dict, width: int = 640, height: int = 320, pad: int = 44) -> dict:
    """An SVG scatter of agreement (people who named the network's label) against the network's
    confidence, one dot per image, sized by answers, with the chance level as a dashed line."""
    w, h = width - 2 * pad, height - 2 * pad
    dots = []
    for img in summary["images"]:
        kind = "real" if img["condition"].startswith("real") else " · ".join(img["condition"].split(" · ")[:2])
        dots.append({"x": pad + w * img["confidence"], "y": pad + h * (1 - (img["agreement"] or 0)),
                     "r": min(4 + 2 * img["answers"], 14), "cls": KINDS.get(kind, "dot-other"),
                     "title": f"{img['label']}: {img['agreed']}/{img['answers']} agreed, network "
                              f"{100 * img['confidence']:.1f}%"})
    chance = summary["overall"]["chance"]
    return {"width": width, "height": height, "pad": pad, "w": w, "h": h, "dots": dots,
            "chance_y": None if chance is None else pad + h * (1 - chance), "chance": chance,
            "legend": KINDS}


# -- breeding by hand ------------------------------------------------------------------------------
@router.get("/breed", response_class=HTMLResponse)
async def breed_home(request: Request, state: Lab = Depends(lab)) -> HTMLResponse:
    models = [e for e in state.registry.list() if e.available and e.input_shape[0] in (1, 3)]
    return templates.TemplateResponse(request, "breed.html", {"view": None, "models": models,
                                                              "sizes": breeding.SIZES})


@router.post("/breed")
async def breed_start(request: Request, state: Lab = Depends(lab)) -> Response:
    form = await request.form()
    fields = {k: v for k, v in form.items() if k in ("model", "size", "seed", "branch", "generation") and v != ""}
    for key in ("size", "seed", "generation"):  # a form sends text; the API takes JSON numbers only
        number = whole_number(fields[key]) if isinstance(fields.get(key), str) else None
        if number is not None:
            fields[key] = number
    try:
        body = breed_api.NewLineage(**fields)
    except ValidationError as exc:
        raise ApiError(422, exc.errors()[0]["msg"], str(exc.errors()[0]["loc"][-1])) from None
    lin = await breed_api.create(request, state, body)
    return RedirectResponse(f"/breed/{lin['id']}", status_code=303)


@router.get("/breed/{lineage_id}", response_class=HTMLResponse)
async def breed_page(request: Request, lineage_id: str = Path(pattern=breed_api.LINEAGE_ID),
                     generation: int | None = Query(None, ge=0, le=breeding.MAX_GENERATIONS),
                     state: Lab = Depends(lab)) -> HTMLResponse:
    lin = breed_api.lineage_or_404(request, lineage_id)
    view = breed_api.public(await breed_api.generation_view(request, state, lin, generation))
    return templates.TemplateResponse(request, "breed.html", {"view": view, "cols": 4 if lin["size"] != 9 else 3})


@router.post("/breed/{lineage_id}/next")
async def breed_next(request: Request, lineage_id: str = Path(pattern=breed_api.LINEAGE_ID),
                     state: Lab = Depends(lab)) -> Response:
    form = await request.form()
    by = "network" if form.get("by") == "network" else "person"
    picks = [whole_number(p) if isinstance(p, str) else None for p in form.getlist("pick")]
    if None in picks:
        raise ApiError(422, "picks are image positions", "pick")
    lin = breed_api.lineage_or_404(request, lineage_id)
    await breed_api.step(request, state, lin, picks or None, by)
    return RedirectResponse(f"/breed/{lineage_id}", status_code=303)


@router.post("/breed/{lineage_id}/use/{generation}/{position}")
async def breed_use(request: Request, lineage_id: str = Path(pattern=breed_api.LINEAGE_ID),
                    generation: int = Path(ge=0, le=breeding.MAX_GENERATIONS), position: int = Path(ge=0, le=15),
                    to: str = Query("score", pattern="^(score|job)$"), state: Lab = Depends(lab),
                    run: Runner = Depends(runner)) -> Response:
    """Keep a bred image as this browser's upload, then open it on /score or as a job's start."""

    lin = breed_api.lineage_or_404(request, lineage_id)
    png = await breed_api.image_png(request, state, lin, generation, position)
    who = identity(request)
    try:
        upload_id, _ = await run_in_threadpool(run.keep_upload, png, who.client, who.address)
    except JobError as exc:
        raise refused(exc) from None
    if to == "score":
        return RedirectResponse(f"/score?upload={upload_id}&model={lin['model']}", status_code=303)
    return RedirectResponse(f"/?model={lin['model']}&method=gradient&encoding=direct&upload={upload_id}"
                            "&params=%7B%22start%22%3A%22image%22%7D&steps=200", status_code=303)


