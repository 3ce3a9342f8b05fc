"""Jobs over REST and Server-Sent Events: start, list, inspect, control, stream, download."""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import AsyncIterator
from typing import Any, Literal

from fastapi import APIRouter, Body, Depends, File, Path, Query, Request, Response, UploadFile
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool

from app.jobs.runner import JobError, Runner
from app.jobs.spec import JobSpec
from app.jobs.store import ACTIVE
from app.serving.imaging import ImageError
from app.serving.lab import Lab
from app.web import idempotency, streams, views
from app.web.api import examples
from app.web.caching import NO_CACHE, immutable_file, revalidated_json
from app.web.deps import (
    INSTRUCTOR_ACTIONS,
    held_stream,
    identity,
    job_room,
    lab,
    mark_job,
    require_control,
    runner,
    shown_room,
)
from app.web.errors import ApiError, error_responses, refused
from app.web.identity import token_hash
from app.web.paths import JOB_ACTIONS
from app.web.views import JOB_FILES, JOB_ID, STATUS, found, links, view, written

JobAction = Literal[JOB_ACTIONS]

router = APIRouter(prefix="/api/v1", tags=["jobs"])


@router.post("/jobs", status_code=201, summary="Start a job",
             responses={201: examples.json_example(examples.JOB_CREATED, "queued; follow links.events"),
                        **error_responses(404, 409, 413, 422, 429, 503, 507, _404="unknown model or upload",
                                          _409="model unavailable; or the Idempotency-Key was used for another "
                                               "request, or its first request is still being served",
                                          _413="image too large",
                                          _429="queue full or per-client cap reached (see Retry-After)",
                                          _503="the server is shutting down")})
async def create_job(request: Request, response: Response,
                     spec: JobSpec = Body(openapi_examples=examples.JOB_REQUESTS),
                     key: str | None = Depends(idempotency.key_header),
                     run: Runner = Depends(runner), state: Lab = Depends(lab)) -> dict:
    """Start one method run (evolution, MAP-Elites, gradient ascent, FGSM, PGD or the random
    baseline) with its settings and seed; the same settings and seed give the same images. Answers
    at once with the job's id and links: follow `events` (Server-Sent Events) or poll `self`.

    `control_token` is shown only here (the server keeps a hash): send it as
    `Authorization: Bearer <control_token>` to cancel, pause, resume, step or delete the job. The
    browser that started it (its signed `fl_client` cookie) and the instructor may do so too; anyone
    else gets 403. Watching (GET, events, images) is open to all.

    Safe to retry: with an `Idempotency-Key` header, a repeat of the same request (same key, same
    body) answers with the job the first one made (and its token), marked `Idempotent-Replayed:
    true`; the same key with a different body gets 409.

    Rules across fields (422, naming the field): targets must be classes of the chosen model;
    `steps` is for gradient, fgsm and pgd, `generations` for evolve and map-elites; `params` holds
    only the chosen method's parameters; fgsm and pgd need `image` or `upload`; and the work of one
    step (population x targets x image size) and of the whole job are capped by the server."""
    gate = request.app.state.gatekeeper
    async with idempotency.idempotent(request, run.store, "jobs", key, spec.model_dump(mode="json"),
                                      state.settings.idempotency_ttl_s) as claim:
        if claim.replay is not None:
            job_id = claim.replay["id"]
            job = view(run, job_id, history=False)
            if job is None:
                raise ApiError(409, f"the job this Idempotency-Key made ({job_id}) has been deleted: use a new key",
                               "Idempotency-Key")
            response.headers["Idempotent-Replayed"] = "true"
            status = job["status"]
        else:
            who = identity(request)
            job_id = secrets.token_urlsafe(12)
            room = job_room(request)
            try:
                await run_in_threadpool(lambda: run.submit(spec, who.client, address=who.address, job_id=job_id,
                                                           token_hash=token_hash(gate.control_token(job_id)),
                                                           room=room))
            except JobError as exc:
                raise refused(exc) from None
            claim.done({"id": job_id})
            status = "queued"
    response.headers["Location"] = f"/api/v1/jobs/{job_id}"
    return {"id": job_id, "status": status, "control_token": gate.control_token(job_id),
            "links": links(job_id, written(run, job_id))}


@router.get("/jobs", summary="List jobs",
            responses={200: examples.json_example(examples.JOB_LIST), **error_responses(422)})
def list_jobs(request: Request, limit: int = Query(20, ge=1, le=200), offset: int = Query(0, ge=0, le=10**9),
              status: str | None = Query(None, pattern=STATUS), run: Runner = Depends(runner)) -> dict:
    """Jobs, newest first, without their confidence history; filter by `status`. Jobs the
    instructor hid are listed for the instructor only, and which room a job belongs to is left out
    for anyone but its members (a room's members list its jobs at `/api/v1/rooms/{code}/jobs`)."""
    visible = not identity(request).instructor
    recs = run.store.list(limit, offset, status, visible=visible)
    jobs = [shown_room(request, j) for j in (view(run, r["id"], history=False) for r in recs) if j]
    return {"jobs": jobs, "total": run.store.count(status, visible=visible), "limit": limit, "offset": offset}


@router.get("/jobs/{job_id}", summary="One job",
            responses={200: {**examples.json_example(examples.JOB_VIEW),
                             "model": dict[str, Any]},  # a JSON object: generated clients read it as one
                       304: {"description": "not modified: the finished job's ETag matched If-None-Match"},
                       **error_responses(404, 422)})
async def get_job(request: Request, job_id: str = Path(pattern=JOB_ID),
                  run: Runner = Depends(runner)) -> Response:
    """Status, progress, settings and, per target: label, best confidence, top 5 classes, image URL and
    when it reached 99.99%; the confidence history for a chart. Live while it runs, final after;
    a finished job's answer has a strong ETag (304 to If-None-Match). Its `room` is named to that
    room's members and the instructor only."""
    job = shown_room(request, found(run, job_id))
    if job["status"] in ACTIVE:
        return JSONResponse(job, headers={"Cache-Control": NO_CACHE})
    return revalidated_json(request, job)


@router.post("/jobs/{job_id}/{action:jobaction}", summary="Control a job: cancel, pause, resume, step; hide, pin",
             responses={200: examples.json_example(examples.CONTROLLED),
                        **error_responses(403, 404, 409, 422, _409="job already finished, or not paused (step)",
                                          _403="not the job's owner or the instructor")})
async def control_job(request: Request, job_id: str = Path(pattern=JOB_ID),
                      action: JobAction = Path(),
                      run: Runner = Depends(runner)) -> dict:
    """`cancel` stops the job and keeps its best images so far; `pause` holds it; `resume` lets it go
    on; `step` runs exactly one step of a paused job (for demos). For the job's owner and the
    instructor. For the instructor only: `hide` and `unhide` take a job out of the gallery and the
    Lab's recent runs (or put it back) without deleting it; `pin` and `unpin` keep a job past the
    retention sweep (FOOLING_RETENTION_DAYS) or let it go."""
    if action in INSTRUCTOR_ACTIONS:
        mark = mark_job(request, run, job_id, action)
        return {"id": job_id, "status": found(run, job_id, history=False)["status"], **mark}
    require_control(request, run, job_id)
    try:
        return run.control(job_id, action)
    except JobError as exc:
        raise refused(exc) from None


@router.delete("/jobs/{job_id}", status_code=204, response_class=Response, summary="Delete a job",
               responses={204: {"description": "deleted: the record, its images and its gallery entry are gone"},
                          **error_responses(403, 404, 422, _403="not the job's owner or the instructor")})
async def delete_job(request: Request, job_id: str = Path(pattern=JOB_ID),
                     run: Runner = Depends(runner)) -> Response:
    """Remove a job for good: a running job is cancelled first. For the job's owner and the
    instructor; later requests for it answer 404."""
    require_control(request, run, job_id)
    await run_in_threadpool(run.delete, job_id)
    return Response(status_code=204)


@router.get("/jobs/{job_id}/images/{position}.png", response_class=Response, summary="A target's best image",
            responses={200: {"content": {"image/png": {}},
                             "description": "PNG at the model's input size; a finished job's images have a strong "
                                            "ETag and are cached for a year, live ones are never served stale"},
                       304: {"description": "not modified: If-None-Match named the image's ETag"},
                       **error_responses(404, 422, _404="no such job, or no image at that position yet")})
async def job_image(request: Request, job_id: str = Path(pattern=JOB_ID), position: int = Path(ge=0, le=100_000),
                    v: int | None = Query(None, ge=0, description="the version in a frame's image URL"),
                    run: Runner = Depends(runner)) -> Response:
    """The best image so far (live) or the final image of one target, by its position in the job's
    `targets`. The PNG holds exactly the pixels that were scored: it re-scores to the same confidence."""
    live = run.live(job_id)
    if live is not None and live.run.snap is not None and not live.finished:
        png = views.live_png(live, position)
        if png is not None:
            # A frame's URL names the version at which this image last changed: while that is
            # still the image's version, the URL's content cannot change and browsers may keep it.
            current = live.run.changed[position] if position < len(live.run.changed) else None
            cache = "public, max-age=3600" if v is not None and v == current else NO_CACHE
            return Response(png, media_type="image/png", headers={"Cache-Control": cache})
    with contextlib.suppress(FileNotFoundError, NotADirectoryError):  # gone, or deleted just now: 404 below
        return immutable_file(request, run.store.root / job_id / f"{position}.png", "image/png")
    found(run, job_id, history=False)  # 404 for an unknown job
    raise ApiError(404, f"job {job_id} has no image at position {position} (yet)", "position")


@router.get("/jobs/{job_id}/events", response_class=StreamingResponse, summary="Follow a job (SSE)",
            responses={200: {"content": {"text/event-stream": {"example": examples.EVENTS}},
                             "description": "an event stream that ends with `close`"},
                       **error_responses(404, 422, 429, _429="too many open streams (per client, address or "
                                                             "server); see Retry-After")})
async def job_events(request: Request, job_id: str = Path(pattern=JOB_ID),
                     run: Runner = Depends(runner), state: Lab = Depends(lab)) -> StreamingResponse:
    """Server-Sent Events: `state` (the full job) first, then `snapshot` frames (at most
    FOOLING_EVENTS_PER_SECOND; a slow client gets only the latest), then `final` and `close`.
    Reconnecting (with Last-Event-ID or not) starts again from the full state, so a finished
    job's result is never lost."""
    first = shown_room(request, found(run, job_id))
    pacer = streams.Pacer(1.0 / max(0.1, state.settings.events_per_second))

    async def stream() -> AsyncIterator[str]:
        version = first.get("version") or 0
        yield streams.RETRY
        yield streams.sse("state", first, version)
        while True:
            live = run.live(job_id)
            if live is None or live.finished:
                final = shown_room(request, view(run, job_id))
                yield streams.sse("final", final, final.get("version") or version + 1)
                yield streams.sse("close", {"id": job_id, "status": final["status"]})
                return
            if streams.stopping(request):
                yield streams.sse("close", {"id": job_id, "status": "server-stopping"})
                return
            await run.wait(job_id, version, timeout=1.0)
            if live.version <= version and not live.finished:
                if beat := pacer.idle():
                    yield beat
                continue
            await pacer.pace()
            if live.finished:
                continue
            version = live.version
            yield streams.sse("snapshot", views.frame(live), version)

    return streams.response(held_stream(request, stream()))


FILE_DOCS = {
    "grid.png": ("The job's grid of best images", "The labelled grid of every target's best image, like the "
                 "paper's figures."),
    "curve.png": ("The job's confidence curve", "Best confidence (min, median, max over targets) against "
                  "images evaluated."),
    "summary.json": ("The job's summary", "Settings, seed, per-target results and the confidence history: "
                     "everything needed to reproduce and report the run."),
    "input.png": ("An adversarial job's input", "The real image an FGSM, PGD or from-image gradient job "
                  "started from, at the model's input size."),
}


async def _job_file(request: Request, run: Runner, job_id: str, name: str) -> Response:
    with contextlib.suppress(FileNotFoundError, NotADirectoryError):  # not written yet, or deleted: say which
        return immutable_file(request, run.store.root / job_id / name, JOB_FILES[name][1],
                              {"Content-Disposition": f'inline; filename="{job_id}-{name}"'})
    job = found(run, job_id, history=False)
    if job["status"] in ACTIVE and name != "input.png":
        raise ApiError(409, f"job {job_id} is {job['status']}: {name} is written when it ends", "name")
    raise ApiError(404, f"job {job_id} has no {name}", "name")


def _add_file_route(name: str) -> None:
    """One operation per file (not /jobs/{id}/{name}): a generated client gets a function for each,
    and no file path can be confused with a control path such as /jobs/{id}/step."""
    media = JOB_FILES[name][1]
    summary, text = FILE_DOCS[name]
    when = "Written when the job starts." if name == "input.png" else "Written when the job ends; until then 409."

    async def job_file(request: Request, job_id: str = Path(pattern=JOB_ID),
                       run: Runner = Depends(runner)) -> Response:
        return await _job_file(request, run, job_id, name)

    job_file.__doc__ = f"{text} {when} Never changes once written: a strong ETag, cached for a year, 304 to " \
                       "If-None-Match. A job's `links` name only the files that exist."
    example = {"example": examples.JOB_VIEW} if media == "application/json" else {}
    router.add_api_route(
        f"/jobs/{{job_id}}/{name}", job_file, methods=["GET"], response_class=Response, summary=summary,
        name=f"job_{name.split('.')[0]}",
        responses={200: {"content": {media: example}, "description": name},
                   304: {"description": "not modified: If-None-Match named the file's ETag"},
                   **error_responses(404, 409, 422, _404="no such job, or it has no such file",
                                     _409="the job is still running: the file is written when it ends")})


for _name in JOB_FILES:
    _add_file_route(_name)


@router.post("/uploads", status_code=201, summary="Upload an image for jobs",
             responses={201: examples.json_example(examples.UPLOADED),
                        **error_responses(400, 409, 413, 415, 422, 507, _400="corrupt image",
                                          _409="the Idempotency-Key was used for another file, or its first "
                                               "request is still being served")})
async def upload(request: Request, response: Response,
                 file: UploadFile = File(..., description="an image for adversarial jobs"),
                 key: str | None = Depends(idempotency.key_header),
                 state: Lab = Depends(lab), run: Runner = Depends(runner)) -> dict:
    """Keep a real image for adversarial jobs (FGSM, PGD) or gradient ascent from an image: pass the
    id as `upload` in POST /api/v1/jobs. Uploads count against the client's disk quota and are
    deleted after FOOLING_RETENTION_DAYS. With an `Idempotency-Key`, a retry of the same file
    answers with the first upload (`Idempotent-Replayed: true`) instead of storing it twice."""
    s = state.settings
    who = identity(request)
    data = await file.read(s.max_upload_bytes + 1)
    if len(data) > s.max_upload_bytes:
        raise ApiError(413, f"larger than the limit of {s.max_upload_bytes} bytes", "file")
    async with idempotency.idempotent(request, run.store, "uploads", key, data, s.idempotency_ttl_s) as claim:
        if claim.replay is not None:
            response.headers["Idempotent-Replayed"] = "true"
            return claim.replay
        try:
            upload_id, img = await run_in_threadpool(run.keep_upload, data, who.client, who.address)
        except JobError as exc:
            raise refused(exc) from None
        except ImageError as exc:
            raise refused(exc, "file") from None
        made = {"id": upload_id, "width": img.width, "height": img.height}
        claim.done(made)
        return made
