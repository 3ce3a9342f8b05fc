"""Jobs over REST and Server-Sent Events: start, list, inspect, control, stream, download."""

from __future__ import annotations

import asyncio
import json
import re
import threading
import time
from collections.abc import AsyncIterator

from fastapi import APIRouter, Depends, File, Path, Query, Request, Response, UploadFile
from fastapi.responses import FileResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool

from app.api.deps import lab
from app.api.errors import ApiError
from app.imaging import ImageError
from app.jobs import results
from app.jobs.runner import JobError, LocalRunner, Runner
from app.jobs.spec import JobSpec
from app.state import Lab

router = APIRouter(prefix="/api/v1", tags=["jobs"])

JOB_ID = r"^[A-Za-z0-9_-]{8,64}$"
STATUS = "^(queued|running|paused|done|cancelled|failed|interrupted)$"
CLIENT_ID = re.compile(r"^[A-Za-z0-9_-]{8,64}$")
FILES = {"grid.png": "image/png", "curve.png": "image/png", "summary.json": "application/json",
         "input.png": "image/png"}

# Set when the server is asked to stop, so open event streams end instead of holding shutdown.
SHUTDOWN = threading.Event()


def _install_exit_hook() -> None:
    """uvicorn waits for open connections before the app's shutdown runs; an SSE stream never
    ends by itself, so we learn of the exit signal directly."""
    try:
        from uvicorn.server import Server
    except ImportError:  # another server: streams still end at their next keep-alive after close
        return
    original = Server.handle_exit
    if getattr(original, "_fooling_lab", False):
        return

    def handle_exit(self, sig, frame):
        SHUTDOWN.set()
        return original(self, sig, frame)

    handle_exit._fooling_lab = True
    Server.handle_exit = handle_exit


_install_exit_hook()


def runner(request: Request) -> LocalRunner:
    return request.app.state.runner


def client_key(request: Request) -> str:
    """Who counts against the per-client job cap: a page's client id (cookie or header), else
    the address. A room behind one NAT then still gets a cap per browser."""
    for value in (request.headers.get("x-client-id"), request.cookies.get("fl_client")):
        if value and CLIENT_ID.match(value):
            return f"id:{value}"
    return f"ip:{request.client.host if request.client else 'unknown'}"


def job_error(exc: JobError) -> ApiError:
    headers = {"Retry-After": str(exc.retry_after)} if exc.retry_after else None
    return ApiError(exc.status, exc.detail, exc.field, headers)


def links(job_id: str) -> dict:
    base = f"/api/v1/jobs/{job_id}"
    return {"self": base, "events": f"{base}/events", "page": f"/jobs/{job_id}", "cancel": f"{base}/cancel",
            "pause": f"{base}/pause", "resume": f"{base}/resume", "step": f"{base}/step",
            "grid": f"{base}/grid.png", "summary": f"{base}/summary.json"}


def view(run: Runner, job_id: str, history: bool = True) -> dict | None:
    """A job as the API shows it: live state while it runs, the stored record once it has finished."""
    rec = run.record(job_id)
    if rec is None:
        return None
    live = run.live(job_id)
    out = {"id": job_id, "status": rec["status"], "created": rec["created"], "updated": rec["updated"],
           "settings": rec["spec"], "error": rec["error"], "links": links(job_id)}
    if live is not None and (not live.finished or rec["result"] is None):
        frame = results.frame(live)
        out.update(status=live.status, error=live.error or rec["error"], version=live.version,
                   progress={"step": frame["step"], "evaluations": frame["evaluations"], "elapsed": frame["elapsed"]},
                   targets=frame["targets"])
        if "extra" in frame:
            out["extra"] = frame["extra"]
        if history:
            out["history"] = live.history
        return out
    res = rec["result"] or {}
    prog = rec["progress"] or {}
    out.update(progress={"step": prog.get("step", 0), "evaluations": prog.get("evaluations", 0),
                         "elapsed": prog.get("elapsed", 0.0)},
               targets=res.get("targets", []), version=live.version if live else None)
    for key in ("min_confidence", "at_9999", "ten_crop", "stop_reason", "extra"):
        if key in res:
            out[key] = res[key]
    if history:
        out["history"] = prog.get("history", [])
    return out


def _get(run: Runner, job_id: str, history: bool = True) -> dict:
    v = view(run, job_id, history)
    if v is None:
        raise ApiError(404, f"no job {job_id!r}", "id")
    return v


@router.post("/jobs", status_code=201,
             responses={404: {"description": "unknown model"}, 409: {"description": "model unavailable"},
                        413: {"description": "image too large"}, 422: {"description": "invalid settings"},
                        429: {"description": "queue full or per-client cap reached (see Retry-After)"}})
async def create_job(spec: JobSpec, request: Request, response: Response,
                     run: LocalRunner = Depends(runner)) -> dict:
    """Start a job: one method run with its settings and seed. Returns its id, status and links."""
    try:
        job_id = await run_in_threadpool(run.submit, spec, client_key(request))
    except JobError as exc:
        raise job_error(exc) from None
    response.headers["Location"] = f"/api/v1/jobs/{job_id}"
    return {"id": job_id, "status": "queued", "links": links(job_id)}


@router.get("/jobs")
async def list_jobs(limit: int = Query(20, ge=1, le=200), offset: int = Query(0, ge=0, le=10**9),
                    status: str | None = Query(None, pattern=STATUS),
                    run: LocalRunner = Depends(runner)) -> dict:
    """Jobs, newest first."""
    recs = run.store.list(limit, offset, status)
    jobs = [view(run, r["id"], history=False) for r in recs]
    return {"jobs": [j for j in jobs if j], "total": run.store.count(status), "limit": limit, "offset": offset}


@router.get("/jobs/{job_id}")
async def get_job(job_id: str = Path(pattern=JOB_ID), run: LocalRunner = Depends(runner)) -> dict:
    """Status, progress, settings and, per target: label, best confidence, image URL."""
    return _get(run, job_id)


@router.post("/jobs/{job_id}/{action}", responses={404: {"description": "no such job or action"},
                                                   409: {"description": "job already finished"}})
async def control_job(job_id: str = Path(pattern=JOB_ID),
                      action: str = Path(pattern="^(cancel|pause|resume|step)$"),
                      run: LocalRunner = Depends(runner)) -> dict:
    """cancel (keeps the best images so far), pause, resume, or step (one step while paused)."""
    try:
        return run.control(job_id, action)
    except JobError as exc:
        raise job_error(exc) from None


@router.get("/jobs/{job_id}/images/{position}.png", response_class=Response,
            responses={200: {"content": {"image/png": {}}}, 404: {"description": "no such image"}})
async def job_image(job_id: str = Path(pattern=JOB_ID), position: int = Path(ge=0, le=100_000),
                    v: int | None = Query(None, ge=0, description="the version in a frame's image URL"),
                    run: LocalRunner = Depends(runner)) -> Response:
    """The best image so far (live) or final image of one target, by its position in the job."""
    live = run.live(job_id)
    if live is not None and live.snap is not None and not live.finished:
        png = results.live_png(live, position)
        if png is not None:
            # A frame's URL names the version at which this image last changed, so that URL's
            # content never changes: browsers may keep it, and re-fetch only improved images.
            cache = "public, max-age=3600" if v is not None else "no-cache"
            return Response(png, media_type="image/png", headers={"Cache-Control": cache})
    path = run.store.root / job_id / f"{position}.png"
    if path.is_file():
        return FileResponse(path, media_type="image/png", headers={"Cache-Control": "public, max-age=86400"})
    _get(run, job_id, history=False)  # 404 for an unknown job
    raise ApiError(404, f"job {job_id} has no image at position {position} (yet)", "position")


def sse(event: str, data: dict, event_id: int | None = None) -> str:
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


@router.get("/jobs/{job_id}/events", response_class=StreamingResponse,
            responses={200: {"content": {"text/event-stream": {}}}, 404: {"description": "no such job"}})
async def job_events(request: Request, job_id: str = Path(pattern=JOB_ID),
                     run: LocalRunner = Depends(runner), state: Lab = Depends(lab)) -> StreamingResponse:
    """Server-Sent Events: `state` (the full job) first, then `snapshot` frames (at most
    FOOLING_EVENTS_PER_SECOND; a slow client gets only the latest), then `final` and `close`.
    Reconnecting (with Last-Event-ID or not) starts again from the full state, so a finished
    job's result is never lost."""
    first = _get(run, job_id)
    interval = 1.0 / max(0.1, state.settings.events_per_second)

    async def stream() -> AsyncIterator[str]:
        version = first.get("version") or 0
        yield "retry: 2000\n\n"
        yield sse("state", first, version)
        sent_at = time.monotonic()
        while True:
            live = run.live(job_id)
            if live is None or live.finished:
                final = view(run, job_id)
                yield sse("final", final, final.get("version") or version + 1)
                yield sse("close", {"id": job_id, "status": final["status"]})
                return
            if SHUTDOWN.is_set() or run.closing:
                yield sse("close", {"id": job_id, "status": "server-stopping"})
                return
            await run.wait(job_id, version, timeout=1.0)
            if live.version <= version and not live.finished:
                if time.monotonic() - sent_at > 15:
                    sent_at = time.monotonic()
                    yield ": keep-alive\n\n"
                continue
            wait = sent_at + interval - time.monotonic()
            if wait > 0:  # throttle: frames that arrive meanwhile are skipped, not queued
                await asyncio.sleep(wait)
            if live.finished:
                continue
            version = live.version
            sent_at = time.monotonic()
            yield sse("snapshot", results.frame(live), version)

    return StreamingResponse(stream(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


@router.get("/jobs/{job_id}/{name}", response_class=Response,
            responses={200: {"content": {"image/png": {}, "application/json": {}}}, 404: {"description": "not there"}})
async def job_file(job_id: str = Path(pattern=JOB_ID),
                   name: str = Path(pattern="^(grid\\.png|curve\\.png|summary\\.json|input\\.png)$"),
                   run: LocalRunner = Depends(runner)) -> Response:
    """Downloads: the labelled grid, the confidence curve, summary.json, and an adversarial job's input."""
    path = run.store.root / job_id / name
    if not path.is_file():
        _get(run, job_id, history=False)
        raise ApiError(404, f"job {job_id} has no {name} (files are written when a job finishes)", "name")
    return FileResponse(path, media_type=FILES[name],
                        headers={"Content-Disposition": f'inline; filename="{job_id}-{name}"'})


@router.post("/uploads", status_code=201,
             responses={400: {"description": "corrupt image"}, 413: {"description": "too large"},
                        415: {"description": "not an image"}})
async def upload(file: UploadFile = File(..., description="an image for adversarial jobs"),
                 state: Lab = Depends(lab)) -> dict:
    """Keep an image for later jobs (`upload` in POST /api/v1/jobs); answers with its id."""
    s = state.settings
    data = await file.read(s.max_upload_bytes + 1)
    if len(data) > s.max_upload_bytes:
        raise ApiError(413, f"larger than the limit of {s.max_upload_bytes} bytes", "file")
    try:
        upload_id, img = await run_in_threadpool(results.save_upload, data, s.data_dir, s.max_image_pixels)
    except ImageError as exc:
        raise ApiError(exc.status, str(exc), "file") from None
    return {"id": upload_id, "width": img.width, "height": img.height}
