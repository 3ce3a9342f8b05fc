"""Experiments started from the app: one background thread runs them in turn, each in a child
process (``python -m app experiment``), so that it can be cancelled and timed out for real and its
memory goes back when it ends. Each has a folder (data/experiments/<id>/) with status.json,
results.json and its plots."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import queue
import secrets
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

from app.budgets import BudgetFull
from app.errors import Refused
from app.experiments import catalog
from app.files import write_whole
from app.settings import ROOT, Settings

log = logging.getLogger(__name__)


UNFINISHED = ("queued", "running")  # an experiment is never paused (a job may be: jobs.store.ACTIVE)


class ExperimentError(Refused):
    """An experiment request the runner will not carry out (see app.errors for the kinds)."""


class ExperimentRunner:
    def __init__(self, settings: Settings, max_queued: int = 8) -> None:
        self.settings = settings
        self._proc: subprocess.Popen | None = None  # the running experiment's process
        self._running: str | None = None
        self._closing = False
        self.root = Path(settings.data_dir) / "experiments"
        self.root.mkdir(parents=True, exist_ok=True)
        self.max_queued = max_queued
        self._queue: queue.Queue[str | None] = queue.Queue(maxsize=max_queued)
        self._lock = threading.Lock()
        for st in self._all():  # cut off by a restart
            if st["status"] in ("queued", "running"):
                self._write(st["id"], {**st, "status": "interrupted", "error": "the server stopped during the run"})
        self._thread = threading.Thread(target=self._work, name="experiments", daemon=True)
        self._thread.start()

    def _write(self, exp_id: str, status: dict) -> None:
        (self.root / exp_id).mkdir(parents=True, exist_ok=True)
        write_whole(self.root / exp_id / "status.json", json.dumps(status))  # a reader never sees half a file

    def _all(self) -> list[dict]:
        out = []
        for p in self.root.glob("*/status.json"):
            try:
                out.append(json.loads(p.read_text()))
            except (OSError, json.JSONDecodeError):
                continue
        return sorted(out, key=lambda s: s.get("created", 0), reverse=True)

    def submit(self, name: str, quick: bool, seed: int, owner: str = "") -> str:
        if name not in catalog.EXPERIMENTS:
            raise KeyError(name)
        exp_id = secrets.token_urlsafe(12)
        status = {"id": exp_id, "experiment": name, "title": catalog.TITLES[name], "quick": quick, "seed": seed,
                  "status": "queued", "created": time.time(), "owner": owner}
        with self._lock:
            kept = self._all()
            if len(kept) >= self.settings.max_experiments:
                raise BudgetFull("experiments", f"the server's experiments budget is full ({len(kept)} kept, "
                                                f"FOOLING_MAX_EXPERIMENTS): retention removes finished ones after "
                                                f"FOOLING_RETENTION_DAYS ({self.settings.retention_days:g} days)")
            mine = sum(1 for st in kept if st["status"] in UNFINISHED and owner and st.get("owner") == owner)
            if mine >= self.settings.max_experiments_per_client:
                raise ExperimentError("busy", f"you already have {mine} experiments queued or running (limit "
                                           f"{self.settings.max_experiments_per_client}); cancel one or wait",
                                      retry_after=30,
                                      quota=("experiments-per-client", self.settings.max_experiments_per_client))
            if self._queue.full():
                raise queue.Full
            self._write(exp_id, status)  # before the worker can see the id
            self._queue.put_nowait(exp_id)  # only submit() (and close(), at the end) puts: the check holds
        return exp_id

    def cancel(self, exp_id: str) -> dict:
        with self._lock:
            st = self.get(exp_id)
            if st is None:
                raise ExperimentError("not_found", f"no experiment {exp_id!r}", "id")
            if st["status"] not in UNFINISHED:
                raise ExperimentError("conflict", f"experiment {exp_id} has already finished ({st['status']})")
            st = {**st, "status": "cancelled", "finished": time.time()}
            st.pop("results", None)
            self._write(exp_id, st)  # the worker skips it if queued, or sees it when its process ends
            if self._running == exp_id and self._proc is not None:
                self._proc.kill()
        return st

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

    def count(self) -> int:
        return sum(1 for _ in self.root.glob("*/status.json"))

    def sweep(self, cutoff: float) -> int:
        """Retention: delete the folders of experiments that finished before ``cutoff``."""
        gone = 0
        for st in self._all():
            if st["status"] not in UNFINISHED and st.get("finished", st.get("created", 0)) < cutoff:
                shutil.rmtree(self.root / st["id"], ignore_errors=True)
                gone += 1
        return gone

    def list(self, limit: int = 50) -> list[dict]:
        return self._all()[:limit]

    def _work(self) -> None:
        while True:
            exp_id = self._queue.get()
            if exp_id is None:
                return
            with self._lock:
                st = self.get(exp_id)
                if st is None or st["status"] != "queued":  # cancelled while it waited
                    continue
                st = {**st, "status": "running", "started": time.time()}
                self._write(exp_id, st)
                self._running = exp_id
                self._proc = self._start(st)
            outcome = self._wait(self._proc)
            with self._lock:
                self._running, self._proc = None, None
                if self.get(exp_id)["status"] == "cancelled":
                    continue
                if self._closing:
                    outcome = {"status": "interrupted", "error": "the server stopped during the run"}
                self._write(exp_id, {**st, **outcome, "finished": time.time()})

    def _start(self, st: dict) -> subprocess.Popen:
        s = self.settings
        cmd = [sys.executable, "-m", "app", "experiment", st["experiment"], "--seed", str(st["seed"]),
               "--out", str(self.root / st["id"]), "--quiet", *(["--quick"] if st["quick"] else [])]
        # The same data and models as the server; one thread, leaving the cores to the compute
        # thread that serves the class.
        env = {**os.environ, "FOOLING_DATA_DIR": str(s.data_dir), "FOOLING_MODELS_DIR": str(s.models_dir),
               "FOOLING_DEVICE": s.device, "FOOLING_DOWNLOAD_WEIGHTS": "0", "OMP_NUM_THREADS": "1",
               "MKL_NUM_THREADS": "1"}
        log_file = (self.root / st["id"] / "log.txt").open("wb")
        try:
            return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log_file, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL)
        finally:
            log_file.close()  # the child has its own copy

    def _wait(self, proc: subprocess.Popen) -> dict:
        """Wait for the child; kill it past FOOLING_EXPERIMENT_TIMEOUT_S. The status it leaves."""
        limit = self.settings.experiment_timeout_s
        try:
            code = proc.wait(timeout=limit)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            return {"status": "failed", "error": f"stopped after the time limit of {limit:g} s"}
        if code == 0:
            return {"status": "done"}
        return {"status": "failed", "error": f"the experiment exited with code {code}; see log.txt in its folder"}

    def close(self) -> None:
        with contextlib.suppress(queue.Full):
            self._queue.put_nowait(None)
        with self._lock:
            self._closing = True
            if self._proc is not None:
                self._proc.kill()
