"""Experiments started from the app: one background thread runs them in turn; each has a folder
(data/experiments/<id>/) with status.json, results.json and its plots."""

from __future__ import annotations

import contextlib
import json
import logging
import queue
import secrets
import threading
import time
from pathlib import Path

import torch

from app.experiments import catalog
from app.settings import Settings

log = logging.getLogger(__name__)


class ExperimentRunner:
    def __init__(self, settings: Settings, max_queued: int = 8) -> None:
        self.settings = settings
        self.root = Path(settings.data_dir) / "experiments"
        self.root.mkdir(parents=True, exist_ok=True)
        self._queue: queue.Queue[str | None] = queue.Queue(maxsize=max_queued)
        self._lock = threading.Lock()
        for st in self._all():  # cut off by a restart
            if st["status"] in ("queued", "running"):
                self._write(st["id"], {**st, "status": "interrupted", "error": "the server stopped during the run"})
        self._thread = threading.Thread(target=self._work, name="experiments", daemon=True)
        self._thread.start()

    def _write(self, exp_id: str, status: dict) -> None:
        folder = self.root / exp_id
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / "status.json.tmp"
        tmp.write_text(json.dumps(status))
        tmp.replace(folder / "status.json")  # atomic: a reader never sees half a file

    def _all(self) -> list[dict]:
        out = []
        for p in self.root.glob("*/status.json"):
            try:
                out.append(json.loads(p.read_text()))
            except (OSError, json.JSONDecodeError):
                continue
        return sorted(out, key=lambda s: s.get("created", 0), reverse=True)

    def submit(self, name: str, quick: bool, seed: int) -> str:
        if name not in catalog.EXPERIMENTS:
            raise KeyError(name)
        exp_id = secrets.token_urlsafe(12)
        status = {"id": exp_id, "experiment": name, "title": catalog.TITLES[name], "quick": quick, "seed": seed,
                  "status": "queued", "created": time.time()}
        with self._lock:
            if self._queue.full():
                raise queue.Full
            self._write(exp_id, status)  # before the worker can see the id
            self._queue.put_nowait(exp_id)  # only submit() (and close(), at the end) puts: the check holds
        return exp_id

    def get(self, exp_id: str) -> dict | None:
        folder = self.root / exp_id
        try:
            status = json.loads((folder / "status.json").read_text())
        except (OSError, json.JSONDecodeError):
            return None
        results = folder / "results.json"
        if status["status"] == "done" and results.is_file():
            status["results"] = json.loads(results.read_text())
        return status

    def list(self, limit: int = 50) -> list[dict]:
        return self._all()[:limit]

    def _work(self) -> None:
        torch.set_num_threads(1)  # leave the cores to the compute thread that serves students
        while True:
            exp_id = self._queue.get()
            if exp_id is None:
                return
            st = self.get(exp_id)
            if st is None:
                continue
            self._write(exp_id, {**st, "status": "running", "started": time.time()})
            try:
                catalog.run(st["experiment"], st["seed"], self.root / exp_id, st["quick"], self.settings)
                self._write(exp_id, {**st, "status": "done", "finished": time.time()})
            except Exception as exc:  # recorded on the experiment, never fatal to the thread
                log.warning("experiment %s failed: %s", exp_id, exc)
                self._write(exp_id, {**st, "status": "failed", "error": f"{type(exc).__name__}: {exc}"})

    def close(self) -> None:
        with contextlib.suppress(queue.Full):
            self._queue.put_nowait(None)
