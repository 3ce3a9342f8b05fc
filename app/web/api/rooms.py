"""Classroom rooms over REST: create (the instructor), join, list a room's jobs, close, steer the
wall (spotlight, hide), and the wall's one multiplexed event stream."""

from __future__ import annotations

from collections.abc import AsyncIterator

from fastapi import APIRouter, Body, Depends, Path, Query, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from app.classroom.feed import RoomFeeds
from app.classroom.store import CODE_PATTERN
from app.jobs.runner import Runner
from app.serving.lab import Lab
from app.web import streams
from app.web.api import examples
from app.web.deps import (
    arena_model,
    classroom,
    held_stream,
    identity,
    is_member,
    join,
    lab,
    open_room,
    require_instructor,
    require_member,
    runner,
)
from app.web.errors import ApiError, error_responses
from app.web.views import JOB_ID, view

router = APIRouter(prefix="/api/v1", tags=["rooms"])

NICKNAME = r"^[^\x00-\x1f<>&\"'`]{1,24}$"  # printable, no markup characters, at most 24


class RoomCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    title: str = Field("", max_length=80, pattern=r"^[^\x00-\x1f<>]*$", description="shown on the room's pages")


class Join(BaseModel):
    model_config = ConfigDict(extra="forbid")
    nickname: str = Field(pattern=NICKNAME, description="how the class wall names this student's runs")


class Spotlight(BaseModel):
    model_config = ConfigDict(extra="forbid")
    job: str | None = Field(None, pattern=JOB_ID, description="the job shown full screen; null: none")


class Arena(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: str | None = Field(None, max_length=100, description="the model whose defence arena the wall shows "
                                                                  "(without defences: e.g. lenet-mnist); null: none")


class Hide(BaseModel):
    model_config = ConfigDict(extra="forbid")
    job: str = Field(pattern=JOB_ID)
    hidden: bool = Field(True, strict=True)  # JSON true or false, not "yes" or 1


def room_links(code: str) -> dict:
    base = f"/api/v1/rooms/{code}"
    return {"self": base, "join": f"/r/{code}", "wall": f"/r/{code}/wall", "quiz": f"/r/{code}/quiz",
            "jobs": f"{base}/jobs", "events": f"{base}/events", "close": f"{base}/close",
            "arena": f"/r/{code}/arena"}


def room_view(room: dict, members: int | None = None, instructor: bool = True) -> dict:
    """A room's state; the jobs the instructor hid are named to the instructor only."""
    out = {"code": room["code"], "title": room["title"], "created": room["created"], "closed": room["closed"],
           "spotlight": room["spotlight"], "arena": room.get("arena"), "hidden": room["hidden"] if instructor else [],
           "links": room_links(room["code"])}
    if members is not None:
        out["members"] = members
    return out


Code = Path(pattern=CODE_PATTERN, description="the room's code, e.g. K7QF (case does not matter)")


@router.post("/rooms", status_code=201, summary="Create a room (the instructor)",
             responses={201: examples.json_example(examples.ROOM),
                        **error_responses(403, 422, _403="not the instructor")})
async def create_room(request: Request, response: Response,
                      body: RoomCreate = Body(default_factory=RoomCreate,
                                              openapi_examples=examples.ROOM_CREATE_REQUESTS)) -> dict:
    """A room for a class: students join at `links.join` (`/r/{code}`), their jobs carry the room,
    and `links.wall` shows them all live. Only the instructor may create one."""
    require_instructor(request)
    room = classroom(request).create_room(body.title.strip())
    response.headers["Location"] = f"/api/v1/rooms/{room['code']}"
    return room_view(room, 0)


@router.get("/rooms", summary="List rooms (the instructor)",
            responses={200: examples.json_example(examples.ROOMS), **error_responses(403)})
def list_rooms(request: Request) -> dict:
    """Every room, newest first (up to 100), with how many have joined each."""
    require_instructor(request)
    store = classroom(request)
    return {"rooms": [room_view(r, len(store.members(r["code"]))) for r in store.rooms()]}


@router.get("/rooms/{code}", summary="One room",
            responses={200: examples.json_example(examples.ROOM_SEEN), **error_responses(404, 422, 429)})
def get_room(request: Request, code: str = Code) -> dict:
    """A room's state (open or closed, the spotlighted job, how many joined) and, under `you`,
    whether this browser has joined it and as whom. Hidden jobs are listed for the instructor only."""
    room = open_room(request, code)
    who = identity(request)
    out = room_view(room, len(classroom(request).members(room["code"])), who.instructor)
    member = is_member(request, room)
    if not (member or who.instructor):
        out["spotlight"] = None  # a job id: for the room's members
    nickname = classroom(request).member(room["code"], who.client)["nickname"] if member else None
    out["you"] = {"member": member, "nickname": nickname, "instructor": who.instructor}
    return out


@router.post("/rooms/{code}/join", summary="Join a room",
             responses={200: examples.json_example(examples.ROOM_JOINED),
                        **error_responses(403, 404, 409, 422, 429, 507,
                                          _403="no fl_client cookie: a cookie-less request cannot be a member",
                                          _409="the room is closed or full, or another member has that nickname",
                                          _429="this browser is in FOOLING_MAX_ROOMS_PER_CLIENT rooms already",
                                          _507="the server's room members budget is full")})
def join_room(request: Request, body: Join = Body(openapi_examples=examples.JOIN_REQUESTS),
              code: str = Code) -> JSONResponse:
    """Join with a nickname, unique in the room (in any case): this browser's cookie remembers the
    room, and the jobs it starts from now on belong to the room (they appear on its wall). Joining
    again renames this browser."""
    room = open_room(request, code)
    cookie, nickname = join(request, room, body.nickname.strip())
    resp = JSONResponse({"code": room["code"], "nickname": nickname, "links": room_links(room["code"])})
    resp.headers.append("set-cookie", cookie)
    return resp


@router.post("/rooms/{code}/close", summary="Close a room (the instructor)",
             responses={200: examples.json_example({**examples.ROOM, "closed": 1795629694.2}),
                        **error_responses(403, 404, 422, 429)})
async def close_room(request: Request, code: str = Code) -> dict:
    """Members' running jobs run to their end; nobody starts a new job in the room or joins it."""
    require_instructor(request)
    room = open_room(request, code)
    classroom(request).close_room(room["code"])
    return room_view(classroom(request).room(room["code"]))


@router.post("/rooms/{code}/spotlight", summary="Show one job full screen on the wall (the instructor)",
             responses={200: examples.json_example(examples.SPOTLIGHT), **error_responses(403, 404, 422, 429)})
async def spotlight(request: Request, body: Spotlight = Body(openapi_examples=examples.SPOTLIGHT_REQUESTS),
                    code: str = Code,
                    run: Runner = Depends(runner)) -> dict:
    """Every wall watching the room shows this job full screen (`job: null` ends it)."""
    require_instructor(request)
    room = open_room(request, code)
    if body.job is not None and (run.record(body.job) or {}).get("room") != room["code"]:
        raise ApiError(404, f"no job {body.job!r} in room {room['code']}", "job")
    classroom(request).set_spotlight(room["code"], body.job)
    return {"spotlight": body.job}


@router.post("/rooms/{code}/arena", summary="Pin a defence arena to the wall (the instructor)",
             responses={200: examples.json_example(examples.ARENA_PINNED), **error_responses(403, 404, 422, 429)})
async def pin_arena(request: Request, body: Arena = Body(openapi_examples=examples.ARENA_REQUESTS), code: str = Code,
                    state: Lab = Depends(lab)) -> dict:
    """Every wall watching the room shows the arena of this model beside its tiles (above them on a
    phone): one row per defence, with the room's latest attacks on each (`model: null` takes it
    down). A model with defences of its own is a 422: the arena sets them out itself."""
    require_instructor(request)
    room = open_room(request, code)
    model = None if body.model is None else arena_model(state, body.model)
    classroom(request).set_arena(room["code"], model)
    return {"arena": model}


@router.post("/rooms/{code}/hide", summary="Hide (or show again) a job on the wall (the instructor)",
             responses={200: examples.json_example(examples.HIDDEN), **error_responses(403, 404, 422, 429)})
def hide(request: Request, body: Hide = Body(openapi_examples=examples.HIDE_REQUESTS), code: str = Code,
         run: Runner = Depends(runner)) -> dict:
    """Take a job off the room's wall, and out of every public listing (the jobs list, the gallery,
    the quiz), for everyone but the instructor (`hidden: false` puts it back). Its owner still
    reaches it by its id."""
    require_instructor(request)
    room = open_room(request, code)
    if (run.record(body.job) or {}).get("room") != room["code"]:
        raise ApiError(404, f"no job {body.job!r} in room {room['code']}", "job")
    run.store.set_flag(body.job, "hidden", body.hidden)
    return {"hidden": classroom(request).set_hidden(room["code"], body.job, body.hidden)}


@router.get("/rooms/{code}/jobs", summary="A room's jobs",
            responses={200: examples.json_example(examples.ROOM_JOBS),
                       **error_responses(403, 404, 422, 429, _403="not a member of the room, nor the instructor")})
def room_jobs(request: Request, code: str = Code, run: Runner = Depends(runner)) -> dict:
    """The room's jobs, newest first (up to 200), each with its owner's nickname: for the room's
    members and the instructor. Jobs the instructor hid are left out for everyone else."""
    room = open_room(request, code)
    require_member(request, room, "the jobs")
    names = classroom(request).members(room["code"])
    hidden = set(room["hidden"]) if not identity(request).instructor else set()
    out = []
    for rec in run.store.list(200, room=room["code"]):
        if rec["id"] in hidden or (rec["hidden"] and not identity(request).instructor):
            continue
        v = view(run, rec["id"], history=False)
        if v:
            v["nickname"] = names.get(rec["client"])
            out.append(v)
    return {"room": room["code"], "jobs": out}


@router.get("/rooms/{code}/events", response_class=StreamingResponse, summary="Follow a room's wall (SSE)",
            responses={200: {"content": {"text/event-stream": {"example": examples.ROOM_EVENTS}},
                             "description": "`room` (its state) whenever it changes, `tile` per job (at most 2 a "
                                            "second per job, the latest frame only), `remove` when a job leaves, "
                                            "`arena` (the pinned defence arena's board, or null) when it changes. "
                                            "With `arena=MODEL`: only `room` and that model's `arena` board"},
                       **error_responses(403, 404, 422, 429, _403="not a member of the room, nor the instructor")})
async def room_events(request: Request, code: str = Code, state: Lab = Depends(lab),
                      arena: str | None = Query(None, max_length=100,
                                                description="follow this model's defence arena, pinned or not "
                                                            "(no tiles)")) -> StreamingResponse:
    """One connection for the whole wall, however many jobs the room has: each tile (best image as
    a small PNG data URL, label, confidence, owner's nickname) is sent when its job changes, at most
    twice a second, skipping frames a slow client could not take. For the room's members and the
    instructor; every wall of a room shares one reader of its state."""
    room = open_room(request, code)
    require_member(request, room, "the wall's events")
    code = room["code"]
    watched = None if arena is None else arena_model(state, arena, "arena")
    instructor = identity(request).instructor
    feeds: RoomFeeds = request.app.state.feeds

    async def stream() -> AsyncIterator[str]:
        yield streams.RETRY
        sent: dict[str, object] = {}  # job id -> the tile key last sent
        seen, room_version = 0, None  # version 0: the feed has not read the room yet
        board_sent: str | None = ""  # "": none sent yet; None: "no arena" sent
        pacer = streams.Pacer(0.0)  # the feed itself sends each tile at most twice a second
        async with feeds.watch(code, watched) as feed:
            while True:
                if streams.stopping(request):
                    yield streams.sse("close", {"room": code, "status": "server-stopping"})
                    return
                await feed.wait(seen, timeout=1.0)  # wakes on a change; checks for shutdown each second
                if feed.version == seen:
                    if beat := pacer.idle():
                        yield beat
                    continue
                await pacer.pace()
                seen, current = feed.version, feed.room
                if current is None:
                    yield streams.sse("close", {"room": code, "status": "deleted"})
                    return
                if current["version"] != room_version:
                    room_version = current["version"]
                    yield streams.sse("room", room_view(current, len(feed.names), instructor))
                model = watched or current.get("arena")
                texts = feed.arenas.get(model) if model else None
                board = None if texts is None else texts[1 if instructor else 0]
                # "null" only once no arena is wanted: a board not built yet (a new pin) keeps the last one up
                if board != board_sent and (board is not None or not model):
                    board_sent = board
                    yield streams.sse_text("arena", board or "null")
                if watched:
                    continue
                hidden = () if instructor else feed.hidden
                shown = [i for i in feed.ids if i not in hidden]
                on_wall = set(shown)
                for gone in [i for i in sent if i not in on_wall]:
                    del sent[gone]
                    yield streams.sse("remove", {"id": gone})
                for job_id in shown:
                    key, text = feed.texts.get(job_id, (None, None))
                    if text is not None and sent.get(job_id) != key:
                        sent[job_id] = key
                        yield streams.sse_text("tile", text)

    return streams.response(held_stream(request, stream()))
