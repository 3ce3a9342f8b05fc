"""Server-wide budgets for what the server keeps, and the retention sweep that frees them.

Per-client caps (jobs, quota, lineages, ...) stop one client; these stop all of them together
from filling the machine over a term: the data directory's bytes (FOOLING_DISK_BUDGET_MB) and the
rows of the classroom tables. A full budget is refused with what frees it, never a full disk.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from app.errors import Refused

log = logging.getLogger(__name__)


class BudgetFull(Refused):
    """A server-wide budget would be exceeded: ``name`` says which, ``detail`` what frees it."""

    def __init__(self, name: str, detail: str) -> None:
        super().__init__("full", detail)
        self.name = name


def free_bytes(path: Path) -> int:
    path.mkdir(parents=True, exist_ok=True)
    return shutil.disk_usage(path).free


class DiskBudget:
    """What the data directory may hold. Usage is the sum of its meters (jobs and uploads from the
    job store's byte counts, experiment folders, the databases), read at most every ``ttl_s``."""

    def __init__(self, limit: int, meters: list[Callable[[], int]], ttl_s: float = 2.0) -> None:
        self.meters, self.ttl_s = meters, ttl_s
        self._used, self._read = 0, 0.0
        self._lock = threading.Lock()
        self.limit = limit

    @classmethod
    def at_start(cls, configured: int, data_dir: Path, meters: list[Callable[[], int]]) -> DiskBudget:
        """FOOLING_DISK_BUDGET_MB, or what is kept now plus half the volume's free space: each
        restart leaves at least half of what was free, so the budget never reaches a full disk."""
        budget = cls(configured, meters)
        if not configured:
            budget.limit = budget.used(fresh=True) + free_bytes(Path(data_dir)) // 2
        return budget

    def used(self, fresh: bool = False) -> int:
        with self._lock:
            return self._current(fresh)

    def _current(self, fresh: bool = False) -> int:
        # Under self._lock. The meters take the stores' and the runner's locks, never the other
        # way round: nothing calls the budget while holding one of those.
        if fresh or time.monotonic() - self._read > self.ttl_s:
            self._used, self._read = sum(m() for m in self.meters), time.monotonic()
        return self._used

    def check(self, more: int = 0) -> None:
        """Raise BudgetFull when keeping ``more`` bytes would pass the limit; else count them as
        kept until the meters are read again (requests within ``ttl_s`` of each other add up)."""
        with self._lock:
            used = self._current()
            if used + more <= self.limit:
                self._used += more
                return
        raise BudgetFull("disk", f"the server's disk budget is full ({used / 2**20:.0f} of {self.limit / 2**20:.0f} "
                                 "MB, FOOLING_DISK_BUDGET_MB): nothing new can be kept until old runs are deleted "
                                 "(their owners or the instructor) or retention removes them (FOOLING_RETENTION_DAYS)")

    def report(self) -> dict:
        return {"used": self.used(), "limit": self.limit, "unit": "bytes"}


@dataclass(frozen=True)
class RowBudget:
    """A cap on one table's rows on the whole server."""

    name: str
    setting: str  # the FOOLING_ variable that sets it
    limit: int
    count: Callable[[], int]
    frees: str  # what frees it, in words

    def check(self, more: int = 1) -> None:
        used = self.count()
        if used + more > self.limit:
            raise BudgetFull(self.name, f"the server's {self.name} budget is full ({used} of {self.limit}, "
                                        f"FOOLING_{self.setting}): {self.frees}")

    def report(self) -> dict:
        return {"used": self.count(), "limit": self.limit, "unit": "rows"}


def files_bytes(paths: Iterable[Path]) -> int:
    """Bytes of these files (a small set: experiment folders, the databases). A file renamed or
    removed meanwhile (a status written, a WAL checkpoint, retention) counts as nothing, never an
    error."""
    total = 0
    for p in paths:
        try:
            total += p.stat().st_size if p.is_file() else 0
        except OSError:
            continue
    return total


class Retention:
    """One thread that runs every sweeper (jobs and uploads, the classroom tables, experiments) at
    start and then every FOOLING_SWEEP_INTERVAL_S; a failed sweep is tried again next time."""

    def __init__(self, sweepers: dict[str, Callable[[float], object]], days: float, interval_s: float) -> None:
        self.sweepers, self.days, self.interval_s = sweepers, days, interval_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def sweep(self, now: float | None = None) -> dict[str, object]:
        """Run every sweeper with the cutoff for ``now``; what each removed."""
        cutoff = (now or time.time()) - self.days * 86_400
        out = {}
        for name, sweeper in self.sweepers.items():
            try:
                out[name] = sweeper(cutoff)
            except Exception as exc:  # one failing store must not stop the others
                log.warning("retention of %s failed: %s", name, exc)
        if any(out.values()):
            log.info("retention (%g days) removed: %s", self.days, out)
        return out

    def start(self) -> Retention:
        self.sweep()

        def loop() -> None:
            while not self._stop.wait(self.interval_s):
                self.sweep()

        self._thread = threading.Thread(target=loop, name="retention", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
