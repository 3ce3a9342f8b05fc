"""Classroom rooms over REST: create (the instructor), join, list a room's jobs, close, steer the
wall (spotlight, hide), and the wall's one multiplexed event stream."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

from fastapi import APIRouter, Body, Depends, Path, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from app.classroom.store import CODE_PATTERN
from app.classroom.wall import FRAME_INTERVAL, room_job_ids
from app.jobs.runner import LocalRunner
from app.web import streams
from app.web.api import examples
from app.web.deps import classroom, held_stream, identity, open_room, require_instructor, runner
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


class Hide(BaseModel):
    model_config = ConfigDict(extra="forbid")
    job: str = Field(pattern=JOB_ID)
    hidden: bool = Field(True, strict=True)  # JSON true or false, not "yes" or 1


def room_links(code: str) -> dict:
    base = f"/api/v1/rooms/{code}"
    return {"self": base, "join": f"/r/{code}", "wall": f"/r/{code}/wall", "quiz": f"/r/{code}/quiz",
            "jobs": f"{base}/jobs", "events": f"{base}/events", "close": f"{base}/close"}


def room_view(room: dict, members: int | None = None) -> dict:
    out = {"code": room["code"], "title": room["title"], "created": room["created"], "closed": room["closed"],
           "spotlight": room["spotlight"], "hidden": room["hidden"], "links": room_links(room["code"])}
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
async def list_rooms(request: Request) -> dict:
    """Every room, newest first (up to 100), with how many have joined each."""
    require_instructor(request)
    store = classroom(request)
    return {"rooms": [room_view(r, len(store.members(r["code"]))) for r in store.rooms()]}


@router.get("/rooms/{code}", summary="One room",
            responses={200: examples.json_example(examples.ROOM_SEEN), **error_responses(404, 422)})
async def get_room(request: Request, code: str = Code) -> dict:
    """A room's state (open or closed, the spotlighted and hidden jobs, members) and, under `you`,
    whether this browser has joined it and as whom."""
    room = open_room(request, code)
    out = room_view(room, len(classroom(request).members(room["code"])))
    who = identity(request)
    member = classroom(request).member(room["code"], who.client)
    out["you"] = {"member": member is not None and who.room == room["code"],
                  "nickname": member["nickname"] if member else None, "instructor": who.instructor}
    return out


@router.post("/rooms/{code}/join", summary="Join a room",
             responses={200: examples.json_example(examples.ROOM_JOINED),
                        **error_responses(404, 409, 422, _409="the room is closed")})
async def join_room(request: Request, body: Join = Body(openapi_examples=examples.JOIN_REQUESTS),
                    code: str = Code) -> JSONResponse:
    """Join with a nickname: this browser's cookie remembers the room, and the jobs it starts from
    now on belong to the room (they appear on its wall)."""
    room = open_room(request, code)
    if room["closed"]:
        raise ApiError(409, f"room {room['code']} is closed", "code")
    who = identity(request)
    classroom(request).join(room["code"], who.client, body.nickname.strip())
    resp = JSONResponse({"code": room["code"], "nickname": body.nickname.strip(), "links": room_links(room["code"])})
    resp.headers.append("set-cookie", request.app.state.gatekeeper.room_cookie(
        who.client, room["code"], request.url.scheme == "https"))
    return resp


@router.post("/rooms/{code}/close", summary="Close a room (the instructor)",
             responses={200: examples.json_example({**examples.ROOM, "closed": 1795629694.2}),
                        **error_responses(403, 404, 422)})
async def close_room(request: Request, code: str = Code) -> dict:
    """Members' running jobs run to their end; nobody starts a new job in the room or joins it."""
    require_instructor(request)
    room = open_room(request, code)
    classroom(request).close_room(room["code"])
    return room_view(classroom(request).room(room["code"]))


@router.post("/rooms/{code}/spotlight", summary="Show one job full screen on the wall (the instructor)",
             responses={200: examples.json_example(examples.SPOTLIGHT), **error_responses(403, 404, 422)})
async def spotlight(request: Request, body: Spotlight = Body(openapi_examples=examples.SPOTLIGHT_REQUESTS),
                    code: str = Code,
                    run: LocalRunner = Depends(runner)) -> dict:
    """Every wall watching the room shows this job full screen (`job: null` ends it)."""
    require_instructor(request)
    room = open_room(request, code)
    if body.job is not None and (run.record(body.job) or {}).get("room") != room["code"]:
        raise ApiError(404, f"no job {body.job!r} in room {room['code']}", "job")
    classroom(request).set_spotlight(room["code"], body.job)
    return {"spotlight": body.job}


@router.post("/rooms/{code}/hide", summary="Hide (or show again) a job on the wall (the instructor)",
             responses={200: examples.json_example(examples.HIDDEN), **error_responses(403, 404, 422)})
async def hide(request: Request, body: Hide = Body(openapi_examples=examples.HIDE_REQUESTS), code: str = Code,
               run: LocalRunner = Depends(runner)) -> dict:
    """Take a job off the room's wall for everyone but the instructor (`hidden: false` puts it
    back); the job itself is untouched."""
    require_instructor(request)
    room = open_room(request, code)
    if (run.record(body.job) or {}).get("room") != room["code"]:
        raise ApiError(404, f"no job {body.job!r} in room {room['code']}", "job")
    return {"hidden": classroom(request).set_hidden(room["code"], body.job, body.hidden)}


@router.get("/rooms/{code}/jobs", summary="A room's jobs",
            responses={200: examples.json_example(examples.ROOM_JOBS), **error_responses(404, 422)})
async def room_jobs(request: Request, code: str = Code, run: LocalRunner = Depends(runner)) -> dict:
    """The room's jobs, newest first (up to 200), each with its owner's nickname; jobs the
    instructor hid from the wall are left out for everyone else."""
    room = open_room(request, code)
    names = classroom(request).members(room["code"])
    hidden = set(room["hidden"]) if not identity(request).instructor else set()
    out = []
    for rec in run.store.list(200, room=room["code"]):
        if rec["id"] in hidden:
            continue
        v = view(run, rec["id"], history=False)
        if v:
            v["nickname"] = names.get(rec["client"])
            out.append(v)
    return {"room": room["code"], "jobs": out}


@router.get("/rooms/{code}/events", response_class=StreamingResponse, summary="Follow a room's wall (SSE)",
            responses={200: {"content": {"text/event-stream": {"example": examples.ROOM_EVENTS}},
                             "description": "`room` (its state) whenever it changes, `tile` per job (at most 2 a "
                                            "second per job, the latest frame only), `remove` when a job leaves"},
                       **error_responses(404, 422, 429)})
async def room_events(request: Request, code: str = Code, run: LocalRunner = Depends(runner)) -> StreamingResponse:
    """One connection for the whole wall, however many jobs the room has: each tile (best image as
    a small PNG data URL, label, confidence, owner's nickname) is sent when its job changes, at most
    twice a second, skipping frames a slow client could not take."""
    room = open_room(request, code)
    code = room["code"]
    store, tiles = classroom(request), request.app.state.tiles
    instructor = identity(request).instructor

    async def stream() -> AsyncIterator[str]:
        yield "retry: 2000\n\n"
        room_version, names, ids, listed = None, {}, [], 0.0
        sent: dict[str, tuple[object, float]] = {}  # job id -> (frame key, when sent)
        alive = time.monotonic()
        while True:
            if streams.stopping(request) or run.closing:
                yield streams.sse("close", {"room": code, "status": "server-stopping"})
                return
            now = time.monotonic()
            current = store.room(code)
            if current is None:
                yield streams.sse("close", {"room": code, "status": "deleted"})
                return
            if current["version"] != room_version:
                room_version = current["version"]
                names = store.members(code)
                yield streams.sse("room", room_view(current, len(names)))
                listed = 0.0  # the hidden set or members may have changed: list again now
            if now - listed >= 1.0:
                listed = now
                hidden = set() if instructor else set(current["hidden"])
                fresh = [i for i in await run_in_threadpool(room_job_ids, run, code) if i not in hidden]
                for gone in [i for i in sent if i not in fresh]:
                    del sent[gone]
                    yield streams.sse("remove", {"id": gone})
                ids = fresh
            due = [i for i in ids if now - sent.get(i, (None, 0.0))[1] >= FRAME_INTERVAL]
            made = await run_in_threadpool(_changed_tiles, tiles, due, sent)
            for job_id, key, tile in made:
                sent[job_id] = (key, now)
                owner = tile.pop("client", None)  # client ids stay on the server
                yield streams.sse("tile", {**tile, "nickname": names.get(owner or ""),
                                           "hidden": job_id in current["hidden"]})
            if made:
                alive = now
            elif now - alive > 15:
                alive = now
                yield ": keep-alive\n\n"
            await asyncio.sleep(FRAME_INTERVAL / 2)

    return StreamingResponse(held_stream(request, stream()), media_type="text/event-stream",
                             headers=streams.HEADERS)


def _changed_tiles(tiles, ids: list[str], sent: dict) -> list[tuple[str, object, dict]]:
    """(id, frame key, tile) for each job whose frame differs from the one last sent."""
    out = []
    for job_id in ids:
        last = sent.get(job_id, (None,))[0]
        if last is not None and last[1][0] == "final":  # a finished job's tile never changes: no lookup
            continue
        key = tiles.key(job_id)
        if key is None or last == key:
            continue
        tile = tiles.tile(job_id)
        if tile is not None:
            out.append((job_id, key, dict(tile)))
    return out
