"""The defence arena (/arena): one row per defence of a model, with what it costs on real data,
what share of the gallery's fooling images it rejects, and an attack a student starts with one
button, whose numbers update while it runs."""

from __future__ import annotations

import numpy as np
import torch
from fastapi import APIRouter, Depends, Form, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from PIL import Image
from starlette.concurrency import run_in_threadpool

from app.errors import Refused
from app.jobs.runner import Runner
from app.jobs.spec import JobSpec
from app.models import defences
from app.serving.lab import Lab
from app.web import views
from app.web.deps import available_model_soon, lab, runner
from app.web.errors import ApiError
from app.web.pages.lab import start_job
from app.web.templating import templates

router = APIRouter(include_in_schema=False)

ROWS = ["", "+smooth(sigma=1)", "+smooth(sigma=2)", "+ensemble(s1,s2,s3,s4)", "+retrained(n1)", "+msp", "+energy",
        "+mahalanobis", "+squeeze"]
ATTACK = {"method": "map-elites", "targets": "all", "population": 100, "generations": 2000,
          "max_seconds": 60}  # what "Fool this defence" runs: the paper's MAP-Elites, a minute at most
ENCODINGS = ("direct", "cppn")
GALLERY_JOBS = 30  # the gallery's latest finished runs on the model whose images each defence is shown
MAX_ATTACKS = 8  # attack ids a page keeps in its address


def _rows(state: Lab, model: str) -> list[dict]:
    """Each defence of ``model`` that can be built here, with its cost on real held-out data."""
    base = state.registry.get(model)
    out = [{"id": model, "defence": "none", "clean_accuracy": state.registry.held_out_accuracy(model),
            "false_positive_rate": 0.0, "detector": False, "differentiable": base.differentiable}]
    for suffix in ROWS[1:]:
        try:
            e = state.registry.get(model + suffix)
        except (defences.DefenceError, LookupError):  # e.g. no seed variants for an ensemble, no data for detectors
            continue
        except Refused as exc:  # too many new defended models this minute: the row says so
            out.append({"id": model + suffix, "defence": suffix.lstrip("+"), "busy": exc.detail, "clean_accuracy": None,
                        "false_positive_rate": None, "detector": False, "differentiable": True})
            continue
        out.append({"id": e.id, "defence": suffix.lstrip("+"),
                    "clean_accuracy": e.meta.get("clean_accuracy"),
                    "false_positive_rate": e.meta.get("false_positive_rate"),
                    "detector": e.meta.get("rejects", False), "differentiable": e.differentiable})
    return out


def _gallery_images(run: Runner, model: str, shape: tuple[int, int, int], most: int = 200) -> torch.Tensor | None:
    """Fooling images from the gallery: the best images of the latest finished public runs on ``model``."""
    images = []
    for rec in run.store.list(GALLERY_JOBS * 4, status="done", visible=True):
        if rec["spec"].get("model") != model or rec["spec"].get("method") in ("fgsm", "pgd"):
            continue
        folder = run.store.folder(rec["id"])
        for t in (rec["result"] or {}).get("targets", []):
            # records written by older versions name no file: a target's image is <position>.png
            path = folder / f"{int(t.get('position', -1))}.png"
            if t.get("confidence", 0) < 0.99 or not path.is_file():
                continue
            try:
                with Image.open(path) as img:
                    pixels = img.convert("L" if shape[0] == 1 else "RGB").resize((shape[2], shape[1]))
                    images.append(np.asarray(pixels, dtype=np.float32).reshape(shape[1], shape[2], -1) / 255)
            except OSError:  # a file cut short: the gallery goes on without it
                continue
        if len(images) >= most:
            break
    if not images:
        return None
    return torch.from_numpy(np.stack(images[:most])).permute(0, 3, 1, 2).contiguous()


async def _rejected_shares(state: Lab, run: Runner, rows: list[dict], model: str) -> int:
    if not any(row["detector"] for row in rows):
        return 0
    x = await run_in_threadpool(_gallery_images, run, model, tuple(state.registry.get(model).input_shape))
    if x is None:
        return 0
    for row in rows:
        if row["detector"]:
            probs = await state.scorer.probabilities(row["id"], x)
            row["gallery_rejected"] = float((probs.argmax(1) == probs.shape[1] - 1).float().mean())
    return len(x)


def attack_view(run: Runner, job_id: str) -> dict | None:
    """An attack's numbers: its status, the best confidence among images the defence accepts,
    how many targets are at 99% accepted, and its evaluations."""
    v = views.view(run, job_id, history=False)
    if v is None:
        return None
    targets = v.get("targets") or []
    accepted = [t for t in targets if t.get("accepted", True)]
    return {"id": job_id, "model": v["settings"]["model"], "encoding": v["settings"].get("encoding", "direct"),
            "status": v["status"],
            "evaluations": v["progress"]["evaluations"], "targets": len(targets),
            "best": max((t["confidence"] for t in accepted), default=None),
            "at_99": sum(t["confidence"] >= 0.99 for t in accepted), "active": v["status"] in views.ACTIVE}


@router.get("/arena", response_class=HTMLResponse)
async def arena(request: Request, model: str = Query("lenet-mnist", max_length=100),
                attack: list[str] = Query([], max_length=MAX_ATTACKS), state: Lab = Depends(lab),
                run: Runner = Depends(runner)) -> HTMLResponse:
    entry = await available_model_soon(state, model)
    if "+" in entry.id:
        raise ApiError(422, "the arena takes a model without defences: it sets them out itself", "model")
    rows = await run_in_threadpool(_rows, state, entry.id)
    images = await _rejected_shares(state, run, rows, entry.id)
    attacks = {(a["model"], a["encoding"]): a for a in (attack_view(run, i) for i in attack[:MAX_ATTACKS]
                                                        if len(i) <= 64) if a}
    for row in rows:
        row["attacks"] = [attacks[k] for k in ((row["id"], e) for e in ENCODINGS) if k in attacks]
    models = [e for e in state.registry.list() if e.available]
    return templates.TemplateResponse(request, "arena.html", {
        "model": entry, "rows": rows, "images": images, "models": models, "attack": ATTACK, "encodings": ENCODINGS,
        "kept": [a["id"] for a in attacks.values()]})


@router.post("/arena/attack")
async def start_attack(request: Request, model: str = Form(max_length=200), encoding: str = Form("direct"),
                       kept: list[str] = Form([]), state: Lab = Depends(lab),
                       run: Runner = Depends(runner)) -> Response:
    entry = await available_model_soon(state, model)
    if encoding not in ENCODINGS:
        raise ApiError(422, f"encoding: one of {', '.join(ENCODINGS)}", "encoding")
    base = entry.id.split("+")[0]
    spec = JobSpec(model=entry.id, encoding=encoding, title=f"arena: {entry.id} ({encoding})", **ATTACK)
    job_id = (await start_job(request, run, spec)).rsplit("/", 1)[-1]
    keep = [k for k in kept[:MAX_ATTACKS]
            if len(k) <= 64 and (a := attack_view(run, k)) and (a["model"], a["encoding"]) != (entry.id, encoding)]
    query = "&".join(f"attack={k}" for k in [*keep, job_id][-MAX_ATTACKS:])
    return RedirectResponse(f"/arena?model={base}&{query}", status_code=303)


@router.get("/arena/attack/{job_id}", response_class=HTMLResponse)
async def attack_cell(request: Request, job_id: str, run: Runner = Depends(runner)) -> HTMLResponse:
    """One attack's cell, for the page to swap in while the attack runs."""
    a = attack_view(run, job_id) if len(job_id) <= 64 else None
    if a is None:
        raise ApiError(404, f"no run {job_id!r}", "job_id")
    return templates.TemplateResponse(request, "_arena_attack.html", {"a": a})
