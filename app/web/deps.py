"""Shared request dependencies: the lab state, the job runner, who is asking and what they may do,
model lookup with clear errors."""

from __future__ import annotations

import asyncio
import hmac
import re
import unicodedata
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import Request
from starlette.concurrency import run_in_threadpool

from app.budgets import BudgetFull
from app.classroom.store import CODE_PATTERN, ClassroomStore, JoinCaps
from app.jobs.runner import Runner
from app.models.defences import is_defended
from app.models.entry import ModelEntry, UnknownModel
from app.serving.lab import Lab
from app.web.errors import ApiError, too_many
from app.web.identity import Identity, token_hash


def lab(request: Request) -> Lab:
    return request.app.state.lab


def runner(request: Request) -> Runner:
    return request.app.state.runner


def identity(request: Request) -> Identity:
    """Set for every request by GuardMiddleware (signed cookie, instructor, bearer token)."""
    return request.state.identity


def held_stream(request: Request, body: AsyncIterator[str]) -> AsyncIterator[str]:
    """An event stream that counts against the stream caps while it is open (429 past them)."""
    who = identity(request)
    return request.app.state.streams.open(who.client, who.address, body)


def may_control(who: Identity, record: dict | None) -> bool:
    """The job's owner (the browser that started it, or its control token) and the instructor."""
    if record is None:
        return False
    if who.instructor or who.owns(record["client"]):
        return True
    return bool(who.bearer and record.get("token_hash")
                and hmac.compare_digest(token_hash(who.bearer), record["token_hash"]))


def require_control(request: Request, run: Runner, job_id: str) -> dict:
    """The job's record, or 404 (no such job) / 403 (someone else's)."""
    record = run.record(job_id)
    if record is None:
        raise ApiError(404, f"no job {job_id!r}", "id")
    if not may_control(identity(request), record):
        raise ApiError(403, "only the job's owner (the browser that started it, or its control_token sent as "
                            "'Authorization: Bearer ...') or the instructor may do that")
    return record


def require_instructor(request: Request) -> Identity:
    who = identity(request)
    if not who.instructor:
        raise ApiError(403, "only the instructor may do that (Authorization: Bearer <FOOLING_ADMIN_TOKEN>)")
    return who


# The instructor's marks on a job: out of the gallery (hidden), kept past retention (pinned).
INSTRUCTOR_ACTIONS = {"hide": ("hidden", True), "unhide": ("hidden", False),
                      "pin": ("pinned", True), "unpin": ("pinned", False)}


def mark_job(request: Request, run: Runner, job_id: str, action: str) -> dict:
    """Apply one of INSTRUCTOR_ACTIONS (the instructor only); returns the mark as set."""
    require_instructor(request)
    flag, on = INSTRUCTOR_ACTIONS[action]
    if not run.store.set_flag(job_id, flag, on):
        raise ApiError(404, f"no job {job_id!r}", "id")
    return {flag: on}


def budget_report(budgets: dict) -> dict:
    """Each server-wide budget's use and limit (app.budgets), by name."""
    return {name: b.report() for name, b in budgets.items()}


def available_model(lab: Lab, model_id: str, field: str = "model") -> ModelEntry:
    try:
        entry = lab.registry.get(model_id)
    except UnknownModel:
        known = ", ".join(e.id for e in lab.registry.list())
        raise ApiError(404, f"unknown model {model_id!r}; known models: {known}", field) from None
    if not entry.available:
        raise ApiError(409, f"model {model_id!r} is not available: {entry.reason}", field)
    return entry


def arena_model(lab: Lab, model_id: str, field: str = "model") -> str:
    """A model the defence arena can set out: available, and without defences of its own (422)."""
    if is_defended(model_id):
        raise ApiError(422, "the arena takes a model without defences: it sets them out itself", field)
    return available_model(lab, model_id, field).id


async def available_model_soon(lab: Lab, model_id: str, field: str = "model") -> ModelEntry:
    """available_model for async routes: a defended model seen for the first time is built (and
    calibrated, seconds) on a worker thread, never on the event loop."""
    if is_defended(model_id):
        return await run_in_threadpool(available_model, lab, model_id, field)
    return available_model(lab, model_id, field)


def classroom(request: Request) -> ClassroomStore:
    return request.app.state.classroom


def open_room(request: Request, code: str) -> dict:
    """The room with this code, or 404. A code is all it takes to find a room, so a network that
    keeps guessing wrong ones is slowed down (429 past ROOM_MISSES in five minutes)."""
    misses = request.app.state.gatekeeper.room_misses
    address = identity(request).address
    wait = misses.attempt(address)
    if wait:
        raise too_many("too many room codes that lead nowhere from your network: check the code and try again "
                       "later", ("room-lookups", misses.tries), wait, "code")
    room = classroom(request).room(code) if re.match(CODE_PATTERN, code or "") else None
    if room is None:
        raise ApiError(404, f"no room {code!r}", "code")
    misses.succeeded(address)
    return room


def is_member(request: Request, room: dict) -> bool:
    """Has this browser joined the room (its signed room cookie and a member row)?"""
    who = identity(request)
    return who.room == room["code"] and classroom(request).member(room["code"], who.client) is not None


def shown_room(request: Request, job: dict) -> dict:
    """The job's view with its room named only to that room's members and the instructor: a room
    code is all a stranger needs to find the room (its ``room`` is None for anyone else)."""
    code = job.get("room")
    who = identity(request)
    if code and not (who.instructor or who.room == code):  # who.room: signed, bound to this browser
        job = {**job, "room": None}
    return job


def require_member(request: Request, room: dict, what: str, field: str = "code") -> None:
    """403 unless the asker is one of the room's members or the instructor."""
    if not (identity(request).instructor or is_member(request, room)):
        raise ApiError(403, f"{what} of room {room['code']} are for its members and the instructor: join it at "
                            f"/r/{room['code']}", field)


def require_open_member(request: Request, room: dict, what: str, field: str) -> None:
    """As require_member, and 409 once the room is closed (its quiz takes no more answers)."""
    require_member(request, room, what, field)
    if room["closed"]:
        raise ApiError(409, f"room {room['code']} is closed: its quiz takes no more answers", field)


INVISIBLE = {"Cc", "Cf", "Co", "Cs", "Cn", "Zl", "Zp"}  # control, format (zero-width, direction), unassigned


def join(request: Request, room: dict, nickname: str) -> tuple[str, str]:
    """Make this browser a member of the room as ``nickname``: (the room cookie to set, the
    nickname as kept, NFKC-normalised)."""
    who = identity(request)
    code = room["code"]
    if room["closed"]:
        raise ApiError(409, f"room {code} is closed", "code")
    nickname = unicodedata.normalize("NFKC", nickname)
    if any(unicodedata.category(c) in INVISIBLE for c in nickname):  # "Ada" + a zero-width space looks like "Ada"
        raise ApiError(422, "a nickname may not hold invisible or control characters", "nickname")
    if who.anonymous:
        raise ApiError(403, "joining a room needs this browser's fl_client cookie (it is what makes you a member): "
                            "keep cookies and try again")
    s = request.app.state.lab.settings
    why = classroom(request).join(code, who.client, nickname, JoinCaps(s.max_rooms_per_client,
                                                                       s.max_members_per_room, s.max_members))
    if why == "nickname":
        raise ApiError(409, f"someone in room {code} is already called {nickname!r}: pick another nickname",
                       "nickname")
    if why == "rooms":
        raise too_many(f"this browser has joined {s.max_rooms_per_client} rooms, the most one may "
                       "(FOOLING_MAX_ROOMS_PER_CLIENT)", ("rooms-per-client", s.max_rooms_per_client), 3600)
    if why == "room":
        raise ApiError(409, f"room {code} is full ({s.max_members_per_room} members, FOOLING_MAX_MEMBERS_PER_ROOM)",
                       "code")
    if why == "budget":
        raise BudgetFull("room members", f"the server's room members budget is full ({s.max_members}, "
                                         "FOOLING_MAX_MEMBERS): members of closed rooms are removed after "
                                         "FOOLING_RETENTION_DAYS; the instructor closes rooms no longer used")
    return request.app.state.gatekeeper.room_cookie(who.client, code, request.url.scheme == "https"), nickname


def job_room(request: Request) -> str | None:
    """The room a job started now belongs to: the one this browser joined, while it is open (409
    once the instructor has closed it: its members start no new jobs there)."""
    code = identity(request).room
    if not code:
        return None
    room = classroom(request).room(code)
    if room is None or classroom(request).member(room["code"], identity(request).client) is None:
        return None  # the room is gone (or this browser was never let in): jobs run on their own
    if room["closed"]:
        raise ApiError(409, f"room {room['code']} is closed: no new jobs in it. Leave it at /r/{room['code']} to "
                            "run on your own", "room")
    return room["code"]


PER_CLIENT_COMPUTE = 2  # classroom requests (a breeding step, a quiz image) one browser may have in flight
COMPUTE_SLOTS = 2  # ... and on the whole server: the rest wait their turn


@asynccontextmanager
async def classroom_compute(request: Request, what: str) -> AsyncIterator[None]:
    """Bound the rendering and scoring that breeding and the quiz do inside requests: a browser that
    fires many at once gets 429 past PER_CLIENT_COMPUTE; all of them together hold at most
    COMPUTE_SLOTS threads, so jobs and scoring keep their share of the CPU."""
    state = request.app.state
    if not hasattr(state, "compute_slots"):
        state.compute_slots, state.in_flight = asyncio.Semaphore(COMPUTE_SLOTS), Counter()
    who = identity(request).client  # cookie-less requests share their network's bucket
    if state.in_flight[who] >= PER_CLIENT_COMPUTE:
        raise too_many(f"you already have {PER_CLIENT_COMPUTE} {what} requests being made; wait for them",
                       (f"{what}-per-client", PER_CLIENT_COMPUTE), 1)
    state.in_flight[who] += 1
    try:
        async with state.compute_slots:
            yield
    finally:
        state.in_flight[who] -= 1
        if not state.in_flight[who]:
            del state.in_flight[who]
