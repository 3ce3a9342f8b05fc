""""Can you tell?" over REST: the next image, its PNG, answers, and the results (JSON and CSV)."""

from __future__ import annotations

import hashlib
import time

from fastapi import APIRouter, Body, Depends, Path, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from app.classroom import quiz
from app.classroom.store import CODE_PATTERN
from app.serving.lab import Lab
from app.web.api import examples
from app.web.deps import classroom, classroom_compute, identity, lab, open_room, require_member, require_open_member
from app.web.errors import ApiError, error_responses

router = APIRouter(prefix="/api/v1", tags=["quiz"])
ITEM_ID = r"^[A-Za-z0-9_-]{8,64}$"
MAX_ITEMS_PER_CLIENT = 2000  # items one browser may be shown in all (each costs a forward pass)


class Answer(BaseModel):
    model_config = ConfigDict(extra="forbid")
    item: str = Field(pattern=ITEM_ID)
    answer: str = Field(max_length=200, description="one of the item's options (\"none of these\" included)")


def _labels(state: Lab) -> dict[str, list[str]]:
    return {e.id: e.labels for e in state.registry.list() if e.available}


def item_view(item: dict) -> dict:
    """What a participant sees: never the network's answer before they give theirs."""
    return {"id": item["id"], "image": f"/api/v1/quiz/items/{item['id']}.png", "options": item["options"],
            "seq": item["seq"], "room": item["room"]}


async def next_item(request: Request, state: Lab, room: str | None) -> dict | None:
    """The next image for this browser: a room's for its members while the room is open."""
    who = identity(request)
    store = classroom(request)
    if room:
        require_open_member(request, open_room(request, room), "the quiz images", "room")
    seq = store.count("quiz_items", who.client)
    if seq >= MAX_ITEMS_PER_CLIENT:
        raise ApiError(429, f"that is {seq} images: thank you! This server shows each browser at most "
                            f"{MAX_ITEMS_PER_CLIENT}")
    most = state.settings.max_quiz_items_per_address
    if await run_in_threadpool(store.count, "quiz_items", who.address, "address") >= most:
        raise ApiError(429, f"your network (every browser and script at your address) has been shown {most} images, "
                            "the most this server shows one (FOOLING_MAX_QUIZ_ITEMS_PER_ADDRESS)")
    await run_in_threadpool(request.app.state.budgets["quiz_items"].check)
    async with classroom_compute(request, "quiz"):
        item = await quiz.make_item(request.app.state.quiz, state.scorer.probabilities, _labels(state), who.client,
                                    room, seq + 1, store.recent_sources(who.client))
    if item is not None:
        store.add_item({**item, "address": who.address})
    return item


def record_answer(request: Request, item_id: str, answer: str) -> dict:
    """Store one answer to an item shown to this browser; returns the reveal."""
    store = classroom(request)
    item = store.item(item_id)
    if item is None:
        raise ApiError(404, f"no quiz item {item_id!r}", "item")
    if not identity(request).owns(item["client"]):
        raise ApiError(403, "that image was shown to someone else (or to a request without the fl_client cookie, "
                            "which cannot prove it was you)", "item")
    if item["room"]:  # a room's answers come from its members, while it is open
        require_open_member(request, open_room(request, item["room"]), "the quiz answers", "item")
    if answer not in item["options"]:
        raise ApiError(422, f"answer must be one of {item['options']}", "answer")
    ms = max(0, min(int((time.time() - item["shown"]) * 1000), 3_600_000))
    agreed = answer == item["label"]
    if not store.answer(item, answer, agreed, ms):
        raise ApiError(409, "this image already has your answer", "item")
    return {"item": item_id, "answer": answer, "agreed": agreed, "network_label": item["label"],
            "network_confidence": item["confidence"], "kind": item["kind"], "encoding": item["encoding"],
            "ms": ms}


def _results_room(request: Request, room: str | None) -> str | None:
    if not room:
        return None
    found = open_room(request, room)
    require_member(request, found, "the quiz results")
    return found["code"]


RoomQuery = Query(None, pattern=CODE_PATTERN, description="only this room's images and answers")


@router.get("/quiz/next", summary="The next quiz image",
            responses={200: examples.json_example(examples.QUIZ_ITEM),
                       **error_responses(403, 404, 409, 422, 429, 507, _403="not a member of the room",
                                         _409="the room is closed")})
async def quiz_next(request: Request, room: str | None = RoomQuery, state: Lab = Depends(lab)) -> dict:
    """One image (a fooling image from the gallery, or a real image the network gets right) and the
    options to choose from: the network's label, its runner-up, a random label and "none of these",
    in random order. Answer with `POST /api/v1/quiz/answers`. A room's images are for its members
    while it is open."""
    code = open_room(request, room)["code"] if room else None
    item = await next_item(request, state, code)
    if item is None:
        raise ApiError(404, "no images to show yet: run a few fooling jobs first")
    return item_view(item)


@router.get("/quiz/items/{item_id}.png", response_class=Response, summary="A quiz image",
            responses={200: {"content": {"image/png": {}}}, **error_responses(404, 422)})
async def quiz_image(request: Request, item_id: str = Path(pattern=ITEM_ID)) -> Response:
    """The image of a quiz item, as shown to the participant (at the model's input size)."""
    item = classroom(request).item(item_id)
    png = request.app.state.quiz.png(item["source"]) if item else None
    if png is None:
        raise ApiError(404, f"no quiz image {item_id!r}", "item_id")
    # The URL names the item, not the job: looking it up gives nothing away.
    return Response(png, media_type="image/png", headers={"Cache-Control": "private, max-age=3600"})


@router.post("/quiz/answers", status_code=201, summary="Answer a quiz image",
             responses=error_responses(403, 404, 409, 422, 429,
                                       _403="the item was shown to another browser, or its room's answers are for "
                                            "members", _409="already answered, or its room is closed")
             | {201: examples.json_example(examples.QUIZ_REVEAL)})
def quiz_answer(request: Request, body: Answer = Body(openapi_examples=examples.ANSWER_REQUESTS)) -> dict:
    """Records the answer (the first one counts) with the time since the image was shown, and
    reveals what the network said and how sure it was."""
    return record_answer(request, body.item, body.answer)


@router.get("/quiz/results", summary="Quiz results",
            responses={200: examples.json_example(examples.QUIZ_RESULTS), **error_responses(403, 404, 422, 429)})
def quiz_results(request: Request, room: str | None = RoomQuery) -> dict:
    """Agreement with the network (answers naming its label), overall, per condition and per
    image, each beside chance level and the network's confidence. A room's: for its members and
    the instructor."""
    code = _results_room(request, room)
    return quiz.summarise(classroom(request).answers(code, everywhere=identity(request).instructor))


@router.get("/quiz/results.csv", response_class=Response, summary="Quiz answers as CSV",
            responses={200: {"content": {"text/csv": {}}}, **error_responses(403, 404, 422, 429)})
def quiz_csv(request: Request, room: str | None = RoomQuery) -> Response:
    """One row per answer: what was shown (image, options in order, network label and confidence),
    the answer, agreement and response time; participants as pseudonyms. A room's: for its members
    and the instructor."""
    code = _results_room(request, room)
    salt = hashlib.sha256(request.app.state.gatekeeper.signer.key).hexdigest()
    name = f"quiz-{code}.csv" if code else "quiz.csv"
    rows = classroom(request).answers(code, everywhere=identity(request).instructor)
    return Response(quiz.to_csv(rows, salt), media_type="text/csv",
                    headers={"Content-Disposition": f'attachment; filename="{name}"', "Cache-Control": "no-store"})
