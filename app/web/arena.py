"""The defence arena's numbers, for its pages and for a room's wall: one row per defence of a model
(what it costs on real data, what share of the gallery's fooling images it rejects) and the
attacks run against each.

A room's board (``Boards.board``) is what its walls and arena pages stream: one reader per room
(app.classroom.feed) builds it about once a second, whoever is watching.
"""

from __future__ import annotations

import time

import numpy as np
import torch
from PIL import Image
from starlette.concurrency import run_in_threadpool

from app.cache import LRU
from app.errors import Refused
from app.jobs.runner import Runner
from app.models import defences
from app.serving.lab import Lab
from app.web import views

ROWS = ["", "+smooth(sigma=1)", "+smooth(sigma=2)", "+ensemble(s1,s2,s3,s4)", "+retrained(n1)", "+msp", "+energy",
        "+mahalanobis", "+squeeze"]
ATTACK = {"method": "map-elites", "targets": "all", "population": 100, "generations": 2000,
          "max_seconds": 60}  # what "Fool this defence" runs: the paper's MAP-Elites, a minute at most
ENCODINGS = ("direct", "cppn")
TITLE = "arena: "  # the title every arena attack carries: how a room's board finds them among its jobs
GALLERY_JOBS = 30  # the gallery's latest finished runs on the model whose images each defence is shown
SHARES_TTL = 60.0  # seconds a model's gallery shares are kept: the gallery changes slowly
ROOM_ATTACKS = 6  # the latest attacks per defence a room's board shows
ROOM_JOBS = 200  # the room's latest jobs searched for attacks


def rows(state: Lab, model: str) -> list[dict]:
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


def gallery_images(run: Runner, model: str, shape: tuple[int, int, int], most: int = 200) -> torch.Tensor | None:
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


class Boards:
    """The arena's rows of a model, with the gallery shares its detectors reject (kept SHARES_TTL
    seconds per model), and a room's attacks beside them."""

    def __init__(self, state: Lab, run: Runner) -> None:
        self.state, self.run = state, run
        self._shares: LRU[tuple[float, int, dict[str, float]]] = LRU(16)

    async def rows(self, model: str) -> tuple[list[dict], int]:
        """The rows of ``model`` with each detector's share of gallery images rejected (under
        ``gallery_rejected``), and how many gallery images were shown to them."""
        out = await run_in_threadpool(rows, self.state, model)
        detectors = [r["id"] for r in out if r["detector"]]
        hit = self._shares.get(model)
        if hit is None or time.monotonic() - hit[0] > SHARES_TTL or not set(detectors) <= set(hit[2]):
            hit = self._shares.put(model, (time.monotonic(), *await self._measure(model, detectors)))
        for r in out:
            if r["id"] in hit[2]:
                r["gallery_rejected"] = hit[2][r["id"]]
        return out, hit[1]

    async def _measure(self, model: str, detectors: list[str]) -> tuple[int, dict[str, float]]:
        if not detectors:
            return 0, {}
        shape = tuple(self.state.registry.get(model).input_shape)
        x = await run_in_threadpool(gallery_images, self.run, model, shape)
        if x is None:
            return 0, {}
        shares = {}
        for d in detectors:
            probs = await self.state.scorer.probabilities(d, x)
            shares[d] = float((probs.argmax(1) == probs.shape[1] - 1).float().mean())
        return len(x), shares

    def room_attacks(self, code: str, model: str, names: dict[str, str], hidden: set[str]) -> dict[str, list[dict]]:
        """Defended id -> the room's latest arena attacks on it (newest first), each with its
        owner's nickname and whether the instructor hid it."""
        out: dict[str, list[dict]] = {}
        for rec in self.run.store.list(ROOM_JOBS, room=code):
            target = rec["spec"].get("model") or ""
            if target.split("+")[0] != model or not str(rec["spec"].get("title", "")).startswith(TITLE):
                continue
            if len(out.setdefault(target, [])) >= ROOM_ATTACKS:
                continue
            a = attack_view(self.run, rec["id"])
            if a is not None:
                a.update(nickname=names.get(rec["client"]), hidden=rec["id"] in hidden or bool(rec["hidden"]))
                out[target].append(a)
        return out

    async def board(self, code: str, model: str, names: dict[str, str], hidden: set[str]) -> dict:
        """What a room's walls and arena pages show of ``model``'s arena: its rows, each with the
        room's attacks on it."""
        table, images = await self.rows(model)
        attacks = await run_in_threadpool(self.room_attacks, code, model, names, hidden)
        for r in table:
            r["attacks"] = attacks.get(r["id"], [])
        return {"model": model, "images": images, "rows": table}
