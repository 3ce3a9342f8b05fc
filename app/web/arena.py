"""The defence arena's numbers, for its pages and for a room's wall: one row per defence of a model
(what it costs on real data, what share of the gallery's fooling images it rejects) and the
attacks run against each.

A room's board (``Boards.board``) is what its walls and arena pages stream: one reader per room
(app.classroom.feed) builds it about once a second, whoever is watching.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image
from starlette.concurrency import run_in_threadpool

from app.cache import LRU
from app.errors import Refused
from app.jobs.presets import SHOWCASE
from app.jobs.runner import Runner
from app.models import defences
from app.serving.lab import Lab
from app.web import views

ROWS = ["", "+smooth(sigma=1)", "+smooth(sigma=2)", "+ensemble(s1,s2,s3,s4)", "+retrained(n1)", "+msp", "+energy",
        "+mahalanobis", "+squeeze"]
ATTACK = {"method": "map-elites", "targets": "all", "population": 100, "generations": 2000,
          "max_seconds": 60}  # what "Fool this defence" runs: the paper's MAP-Elites, a minute at most
ENCODINGS = ("direct", "cppn")
TITLE = "arena: "  # the title an attack started from the arena carries
GALLERY_JOBS = 30  # the gallery's latest finished runs on the model whose images each defence is shown
ROOM_ATTACKS = 6  # the latest attacks per defence a room's board shows
PER_STUDENT = 2  # of them, at most this many from one student
ROOM_JOBS = 200  # the room's latest jobs searched for attacks


def rows(state: Lab, model: str, build: bool = True) -> list[dict]:
    """Each defence of ``model``, with its cost on real held-out data; one that cannot be built
    here says why. ``build=False`` (the streams): only defences built already, the others wait."""
    base = state.registry.get(model)
    out = [{"id": model, "defence": "none", "clean_accuracy": state.registry.held_out_accuracy(model),
            "false_positive_rate": 0.0, "detector": False, "differentiable": base.differentiable}]
    for suffix in ROWS[1:]:
        row = {"id": defences.canonical(model + suffix), "defence": suffix.lstrip("+"), "clean_accuracy": None,
               "false_positive_rate": None, "detector": False, "differentiable": True}
        try:
            e = state.registry.get(model + suffix) if build else state.registry.peek(model + suffix)
        except (defences.DefenceError, LookupError) as exc:  # no seed variants, no real data for detectors, ...
            out.append({**row, "unavailable": str(exc)})
            continue
        except Refused as exc:  # too many new defended models this minute: the row says so
            out.append({**row, "busy": exc.detail})
            continue
        if e is None:
            out.append({**row, "busy": "not built yet: the arena page builds it"})
            continue
        out.append({**row, "clean_accuracy": e.meta.get("clean_accuracy"),
                    "false_positive_rate": e.meta.get("false_positive_rate"),
                    "detector": e.meta.get("rejects", False), "differentiable": e.differentiable})
    return out


def gallery_jobs(run: Runner, model: str) -> list[dict]:
    """The latest finished public runs on ``model`` whose images the detectors are shown."""
    return [rec for rec in run.store.list(GALLERY_JOBS * 4, status="done", visible=True)
            if rec["spec"].get("model") == model and rec["spec"].get("method") not in ("fgsm", "pgd")][:GALLERY_JOBS]


def gallery_images(run: Runner, recs: list[dict], shape: tuple[int, int, int], most: int = 200) -> torch.Tensor | None:
    """Fooling images from the gallery: the best images (>= 99%) of ``recs``."""
    images = []
    for rec in recs:
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
    how many targets are at 99% accepted, its evaluations, and the evaluations it needed to get
    every target to 99.99% (None until it has)."""
    v = views.view(run, job_id, history=False)
    if v is None:
        return None
    targets = v.get("targets") or []
    accepted = [t for t in targets if t.get("accepted", True)]
    reached = [t.get("reached_9999") for t in targets]
    # evaluations needed: when the last target reached 99.99% (a rejected image scores 0, so never does)
    needed = max(r["evaluations"] for r in reached) if targets and all(reached) else None
    return {"id": job_id, "model": v["settings"]["model"], "encoding": v["settings"].get("encoding", "direct"),
            "status": v["status"],
            "evaluations": v["progress"]["evaluations"], "targets": len(targets),
            "best": max((t["confidence"] for t in accepted), default=None),
            "at_99": sum(t["confidence"] >= 0.99 for t in accepted), "needed": needed,
            "active": v["status"] in views.ACTIVE}


def attack_spec(task: str) -> dict:
    """The settings of "Fool this defence" on a model of ``task``: every class of a small task;
    on ImageNet the ten showcase classes (a minute on a CPU would give each of 1000 classes one
    or two tries; bench/arena.py measures the same ten)."""
    return {**ATTACK, "targets": list(SHOWCASE)} if task == "imagenet-1k" else dict(ATTACK)


def is_attack(spec: dict) -> bool:
    """Is this job an arena attack (its settings are those of attack_spec, however it was started)?"""
    return (all(spec.get(k) == v for k, v in ATTACK.items() if k != "targets")
            and spec.get("targets") in ("all", SHOWCASE) and spec.get("encoding", "direct") in ENCODINGS)


class Boards:
    """The arena's rows of a model, with the gallery shares its detectors reject (kept per model
    until its gallery changes), and a room's attacks beside them."""

    def __init__(self, state: Lab, run: Runner) -> None:
        self.state, self.run = state, run
        self._shares: LRU[tuple[tuple, int, dict[str, float]]] = LRU(16)  # model -> (what was measured, n, shares)

    async def rows(self, model: str, build: bool = True) -> tuple[list[dict], int]:
        """The rows of ``model`` with each detector's share of gallery images rejected (under
        ``gallery_rejected``), and how many gallery images were shown to them. Measured again only
        when the gallery's runs or the detectors change."""
        out = await run_in_threadpool(rows, self.state, model, build)
        detectors = frozenset(r["id"] for r in out if r["detector"])
        recs = await run_in_threadpool(gallery_jobs, self.run, model) if detectors else []
        key = (detectors, tuple(r["id"] for r in recs))
        hit = self._shares.get(model)
        if hit is None or hit[0] != key:
            hit = self._shares.put(model, (key, *await self._measure(model, detectors, recs)))
        for r in out:
            if r["id"] in hit[2]:
                r["gallery_rejected"] = hit[2][r["id"]]
        return out, hit[1]

    async def _measure(self, model: str, detectors: frozenset[str], recs: list[dict]) -> tuple[int, dict[str, float]]:
        if not detectors or not recs:
            return 0, {}
        shape = tuple(self.state.registry.get(model).input_shape)
        x = await run_in_threadpool(gallery_images, self.run, recs, shape)
        if x is None:
            return 0, {}
        shares = {}
        for d in sorted(detectors):
            probs = await self.state.scorer.probabilities(d, x)
            shares[d] = float((probs.argmax(1) == probs.shape[1] - 1).float().mean())
        return len(x), shares

    def room_attacks(self, code: str, model: str, names: dict[str, str],
                     hidden: set[str]) -> dict[str, tuple[list[dict], list[dict]]]:
        """Defended id -> the room's latest arena attacks on it, newest first: (those everyone
        sees, all of them with ``hidden`` marked, for the instructor). Each student's latest
        PER_STUDENT only, so that nobody fills a row; hidden ones do not take others' places."""
        out: dict[str, tuple[list[dict], list[dict]]] = {}
        per: dict[tuple[str, str, bool], int] = {}  # (row, client, for everyone) -> shown
        for rec in self.run.store.list(ROOM_JOBS, room=code):
            target = rec["spec"].get("model") or ""
            if defences.base_of(target) != model or not is_attack(rec["spec"]):
                continue
            public, full = out.setdefault(target, ([], []))
            is_hidden = rec["id"] in hidden or bool(rec["hidden"])
            lists = [(full, False)] + ([] if is_hidden else [(public, True)])
            lists = [(lst, pub) for lst, pub in lists if len(lst) < ROOM_ATTACKS
                     and per.get((target, rec["client"], pub), 0) < PER_STUDENT]
            if not lists:
                continue
            try:
                a = attack_view(self.run, rec["id"])
            except Exception:  # deleted while being read: it is simply not shown
                a = None
            if a is None:
                continue
            a.update(nickname=names.get(rec["client"]))
            for lst, pub in lists:
                lst.append(a if pub else {**a, "hidden": is_hidden})
                per[(target, rec["client"], pub)] = per.get((target, rec["client"], pub), 0) + 1
        return out

    async def board(self, code: str, model: str, names: dict[str, str], hidden: set[str],
                    build: bool = False) -> tuple[dict, dict]:
        """What a room's walls and arena pages show of ``model``'s arena: its rows, each with the
        room's attacks on it, as (everyone's board, the instructor's). ``build``: build defences
        not built yet (a page load does; the streams never do)."""
        table, images = await self.rows(model, build)
        attacks = await run_in_threadpool(self.room_attacks, code, model, names, hidden)
        public = {"model": model, "images": images, "rows": [{**r, "attacks": attacks.get(r["id"], ([], []))[0]}
                                                            for r in table]}
        full = {"model": model, "images": images, "rows": [{**r, "attacks": attacks.get(r["id"], ([], []))[1]}
                                                          for r in table]}
        return public, full
