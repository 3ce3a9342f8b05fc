"""What clients see of a job: the JSON view shared by the REST API and the pages, its links, and
the view models the pages render (live panel, chart, re-run link)."""

from __future__ import annotations

import json
import math
import urllib.parse

from app.jobs.job import Job
from app.jobs.run import jsonable
from app.jobs.runner import Runner
from app.jobs.store import ACTIVE, FINISHED
from app.models.defences import rejected_index
from app.serving.imaging import to_png
from app.serving.scoring import top_k
from app.web.errors import ApiError

JOB_ID = r"^[A-Za-z0-9_-]{8,64}$"
STATUS = f"^({'|'.join(ACTIVE + FINISHED)})$"
SPEC_FIELDS = ("model", "method", "encoding", "targets", "generations", "steps", "population", "seed", "max_seconds",
               "upload")


# A job's files: name -> (its key in `links`, media type). Written when the job ends (input.png: at start).
JOB_FILES = {"grid.png": ("grid", "image/png"), "curve.png": ("curve", "image/png"),
             "summary.json": ("summary", "application/json"), "input.png": ("input", "image/png")}


def links(job_id: str, files: tuple[str, ...] | list[str] = ()) -> dict:
    """Where to go next. Files are named only once they exist (``files``: those written so far)."""
    base = f"/api/v1/jobs/{job_id}"
    out = {"self": base, "events": f"{base}/events", "page": f"/jobs/{job_id}", "cancel": f"{base}/cancel",
           "pause": f"{base}/pause", "resume": f"{base}/resume", "step": f"{base}/step"}
    for name in files:
        out[JOB_FILES[name][0]] = f"{base}/{name}"
    return out


def image_url(job_id: str, position: int, version: int | None = None) -> str:
    url = f"/api/v1/jobs/{job_id}/images/{position}.png"
    return url if version is None else f"{url}?v={version}"


def frame(job: Job, top: int = 5) -> dict:
    """A live job's current state, as streamed and as GET /api/v1/jobs/{id} shows it while it runs.
    Each image URL names the snapshot at which that image last changed (see job_image)."""
    run, snap = job.run, job.run.snap
    out = {"id": job.id, "status": job.status, "step": 0, "evaluations": 0,
           "elapsed": round(job.elapsed(), 3), "version": job.version, "targets": []}
    if snap is None:
        return out
    out.update(step=snap.step, evaluations=snap.evaluations)
    with_top = len(snap.targets) <= 20  # top-k bars only where a page can show them
    for i, (t, c) in enumerate(zip(snap.targets, snap.confidence.tolist(), strict=True)):
        item = {"position": i, "index": t, "label": job.labels[t], "confidence": c,
                "image": image_url(job.id, i, run.changed[i] if i < len(run.changed) else run.observed)}
        if i in run.reached:
            item["reached_9999"] = run.reached[i]
        if (refused := rejected_index(job.labels)) is not None:  # through a defence: does it let this image through?
            item["accepted"] = int(snap.probs[i].argmax()) != refused
        if with_top:
            item["top"] = top_k(snap.probs[i], job.labels, top)
        out["targets"].append(item)
    if snap.extra:
        out["extra"] = jsonable(snap.extra)
    if run.history:
        out["point"] = run.history[-1]
    return out


def live_png(job: Job, position: int) -> bytes | None:
    """A live job's best image so far for one target, encoded once per change."""
    snap = job.run.snap
    if snap is None or not 0 <= position < len(snap.targets):
        return None
    version = job.run.changed[position]
    cached = job.png_cache.get(position)
    if cached and cached[0] == version:
        return cached[1]
    png = to_png(snap.images[position])
    job.png_cache[position] = (version, png)
    return png


def saved_targets(job_id: str, targets: list[dict]) -> list[dict]:
    """A finished job's targets as the API shows them: each with its image's URL (summary.json names
    the file)."""
    return [{k: v for k, v in {**t, "image": image_url(job_id, t["position"])}.items() if k != "file"}
            for t in targets]


def written(run: Runner, job_id: str) -> list[str]:
    folder = run.store.root / job_id
    return [name for name in JOB_FILES if (folder / name).is_file()]


def view(run: Runner, job_id: str, history: bool = True) -> dict | None:
    """A job as the API shows it: live state while it runs, the stored record once it has finished."""
    rec = run.record(job_id)
    if rec is None:
        return None
    live = run.live(job_id)
    # One look at the live job decides: frame() reads its snapshot before its status, so an active
    # status there goes with a whole snapshot. A job that finished meanwhile is shown from its record,
    # read again (the keeper writes it before the status flips).
    now = frame(live) if live is not None else None
    if now is not None and now["status"] not in ACTIVE:
        now, rec = None, run.record(job_id) or rec
    out = {"id": job_id, "status": rec["status"], "created": rec["created"], "updated": rec["updated"],
           "settings": rec["spec"], "error": rec["error"], "room": rec.get("room"),
           "links": links(job_id, written(run, job_id))}
    if now is not None:
        out.update(status=now["status"], error=live.error or rec["error"], version=live.version,
                   progress={"step": now["step"], "evaluations": now["evaluations"], "elapsed": now["elapsed"]},
                   targets=now["targets"])
        if "extra" in now:
            out["extra"] = now["extra"]
        if history:
            out["history"] = live.run.history
        return out
    res = rec["result"] or {}
    prog = rec["progress"] or {}
    out.update(progress={"step": prog.get("step", 0), "evaluations": prog.get("evaluations", 0),
                         "elapsed": prog.get("elapsed", 0.0)},
               targets=saved_targets(job_id, res.get("targets", [])), version=live.version if live else None)
    for key in ("min_confidence", "at_9999", "ten_crop", "stop_reason", "extra"):
        if key in res:
            out[key] = res[key]
    if history:
        out["history"] = prog.get("history", [])
    return out


def chart(history: list[dict], width: int = 480, height: int = 160) -> dict:
    """SVG polylines of min / median / max best confidence against evaluations."""
    if not history:
        return {"width": width, "height": height, "lines": {}, "max_evals": 0}
    x_max = max(h["evaluations"] for h in history) or 1
    lines = {}
    for key in ("min", "median", "max"):
        pts = [(width * h["evaluations"] / x_max, height * (1 - h[key])) for h in history]
        lines[key] = " ".join(f"{x:.1f},{y:.1f}" for x, y in pts)
    return {"width": width, "height": height, "lines": lines, "max_evals": x_max}


# Column counts the stylesheet has a class for (.archive.cols-N).
GRID_COLUMNS = (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 12, 14, 15, 16, 18, 20)
SHOWN_CELLS = 200  # the page shows at most this many archive cells; downloads have all


def grid_columns(n: int) -> int:
    """Columns for n cells: a wide-ish, square-ish grid with as few empty places as possible
    (ten cells: 5x2, not 4+4+2 or nine and one alone)."""
    if n <= 5:
        return max(n, 1)
    low = math.isqrt(n - 1) + 1  # ceil(sqrt(n))
    options = [c for c in GRID_COLUMNS if low <= c <= 2 * low] or [GRID_COLUMNS[-1]]
    return min(options, key=lambda c: (-(n % c == 0), c * math.ceil(n / c) - n, c))


def panel_context(view: dict, focus: int = 0) -> dict:
    targets = view.get("targets") or []
    focus = min(max(focus, 0), max(len(targets) - 1, 0))
    shown = targets[:SHOWN_CELLS]
    return {"job": view, "targets": targets, "shown": shown, "cols": grid_columns(len(shown)),
            "focus": targets[focus] if targets else None, "focus_i": focus,
            "chart": chart(view.get("history") or []), "live": view["status"] in ACTIVE}


def rerun_link(settings: dict) -> str:
    """A Lab URL that carries every setting and the seed: opening it reproduces the run."""
    q = {k: settings[k] for k in SPEC_FIELDS if settings.get(k) is not None}
    if isinstance(q.get("targets"), list):
        q["targets"] = ",".join(str(t) for t in q["targets"])
    if settings.get("params"):
        q["params"] = json.dumps(settings["params"], separators=(",", ":"))
    return "/?" + urllib.parse.urlencode(q)


def found(run: Runner, job_id: str, history: bool = True) -> dict:
    """view(), or a 404 for an unknown job."""
    v = view(run, job_id, history)
    if v is None:
        raise ApiError(404, f"no job {job_id!r}", "id")
    return v
