"""Jobs on disk: one SQLite file for records, one folder per job for its images.

The database is the source of truth for everything that must survive a restart: a job's
settings, status, progress, final results and error. Images live in ``jobs/<id>/``; the
database stores file names, never paths taken from a client.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    created REAL NOT NULL,
    updated REAL NOT NULL,
    status TEXT NOT NULL,
    client TEXT NOT NULL,
    spec TEXT NOT NULL,
    progress TEXT NOT NULL DEFAULT '{}',
    result TEXT,
    error TEXT
);
CREATE INDEX IF NOT EXISTS jobs_created ON jobs (created DESC);
"""
# Columns added after the first release: added to an older database at start (ALTER TABLE).
ADDED_COLUMNS = {"address": "TEXT NOT NULL DEFAULT ''", "token_hash": "TEXT", "hidden": "INTEGER NOT NULL DEFAULT 0",
                 "pinned": "INTEGER NOT NULL DEFAULT 0", "bytes": "INTEGER NOT NULL DEFAULT 0",
                 "room": "TEXT"}  # the classroom room the job was started in (NULL: none)
UPLOADS = """
CREATE TABLE IF NOT EXISTS uploads (
    id TEXT PRIMARY KEY,
    client TEXT NOT NULL,
    bytes INTEGER NOT NULL,
    created REAL NOT NULL
);
"""
# Idempotency-Key: what a POST with a key made, so that a retry gets the same answer. ``result`` is
# NULL while the first request is still being served.
IDEMPOTENCY = """
CREATE TABLE IF NOT EXISTS idempotency (
    scope TEXT NOT NULL,
    route TEXT NOT NULL,
    key TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    result TEXT,
    created REAL NOT NULL,
    PRIMARY KEY (scope, route, key)
);
"""

ACTIVE = ("queued", "running", "paused")
QUOTA_INDEXES = ("CREATE INDEX IF NOT EXISTS jobs_client ON jobs (client)",
                 "CREATE INDEX IF NOT EXISTS jobs_address ON jobs (address)",
                 "CREATE INDEX IF NOT EXISTS uploads_client ON uploads (client)",
                 "CREATE INDEX IF NOT EXISTS uploads_address ON uploads (address)")
FINISHED = ("done", "cancelled", "failed", "interrupted")


def connect(path: Path, schema: str) -> sqlite3.Connection:
    """One connection, shared by the threads under the owner's lock: writes are small and rare,
    so this is simpler than a pool and never sees "database is locked". WAL lets readers in."""
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    db.row_factory = sqlite3.Row
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.executescript(schema)
    return db


class JobStore:
    def __init__(self, data_dir: Path) -> None:
        self.root = Path(data_dir) / "jobs"
        self.root.mkdir(parents=True, exist_ok=True)
        self.path = Path(data_dir) / "jobs.sqlite3"
        self._db = connect(self.path, SCHEMA + UPLOADS + IDEMPOTENCY)
        self._lock = threading.Lock()
        with self._lock:
            have = {r[1] for r in self._db.execute("PRAGMA table_info(jobs)")}
            for name, decl in ADDED_COLUMNS.items():
                if name not in have:
                    self._db.execute(f"ALTER TABLE jobs ADD COLUMN {name} {decl}")
            self._db.execute("CREATE INDEX IF NOT EXISTS jobs_room ON jobs (room, created DESC)")
            if "address" not in {r[1] for r in self._db.execute("PRAGMA table_info(uploads)")}:
                self._db.execute("ALTER TABLE uploads ADD COLUMN address TEXT NOT NULL DEFAULT ''")
            for index in QUOTA_INDEXES:  # quotas are summed per client and per network on every upload
                self._db.execute(index)

    def folder(self, job_id: str) -> Path:
        d = self.root / job_id
        d.mkdir(parents=True, exist_ok=True)
        return d

    def mark_interrupted(self) -> int:
        """At start-up: jobs that were queued or running when the server died are interrupted."""
        with self._lock:
            cur = self._db.execute(
                f"UPDATE jobs SET status='interrupted', updated=?, error=COALESCE(error, ?) "
                f"WHERE status IN ({','.join('?' * len(ACTIVE))})",
                (time.time(), "the server stopped while this job was running", *ACTIVE))
            return cur.rowcount

    def create(self, job_id: str, client: str, spec: dict, status: str = "queued", address: str = "",
               token_hash: str | None = None, room: str | None = None) -> None:
        now = time.time()
        with self._lock:
            self._db.execute("INSERT INTO jobs (id, created, updated, status, client, spec, address, token_hash, room) "
                             "VALUES (?,?,?,?,?,?,?,?,?)",
                             (job_id, now, now, status, client, json.dumps(spec), address, token_hash, room))

    def set_flag(self, job_id: str, name: str, on: bool) -> bool:
        """hidden (out of the gallery) or pinned (kept past retention); False for an unknown job."""
        assert name in ("hidden", "pinned")
        with self._lock:
            return self._db.execute(f"UPDATE jobs SET {name}=? WHERE id=?", (int(on), job_id)).rowcount == 1

    # -- Idempotency-Key ----------------------------------------------------------------------------
    def claim_key(self, scope: str, route: str, key: str, fingerprint: str, expired_before: float
                  ) -> tuple[str, dict | None]:
        """Take a key for a request: ("new", None) when it is free (it is now held), ("done", result)
        when a request with the same fingerprint finished, ("busy", None) while one is still being
        served, ("mismatch", None) when the key was used for a different request."""
        with self._lock:
            self._db.execute("DELETE FROM idempotency WHERE scope=? AND route=? AND key=? AND created<?",
                             (scope, route, key, expired_before))
            row = self._db.execute("SELECT fingerprint, result FROM idempotency WHERE scope=? AND route=? AND key=?",
                                   (scope, route, key)).fetchone()
            if row is None:
                self._db.execute("INSERT INTO idempotency (scope, route, key, fingerprint, created) VALUES (?,?,?,?,?)",
                                 (scope, route, key, fingerprint, time.time()))
                return "new", None
        if row["fingerprint"] != fingerprint:
            return "mismatch", None
        if row["result"] is None:
            return "busy", None
        return "done", json.loads(row["result"])

    def settle_key(self, scope: str, route: str, key: str, result: dict | None) -> None:
        """Record what the held key's request made, or (None: it failed) free the key for a retry."""
        with self._lock:
            if result is None:
                self._db.execute("DELETE FROM idempotency WHERE scope=? AND route=? AND key=?", (scope, route, key))
            else:
                self._db.execute("UPDATE idempotency SET result=? WHERE scope=? AND route=? AND key=?",
                                 (json.dumps(result), scope, route, key))

    def expire_keys(self, before: float) -> int:
        with self._lock:
            return self._db.execute("DELETE FROM idempotency WHERE created<?", (before,)).rowcount

    # -- disk: what each client keeps, and what retention may sweep ------------------------------
    def add_upload(self, upload_id: str, client: str, size: int, address: str = "") -> None:
        with self._lock:
            self._db.execute("INSERT INTO uploads (id, client, bytes, created, address) VALUES (?,?,?,?,?)",
                             (upload_id, client, size, time.time(), address))

    def bytes_used(self, who: str | None = None, column: str = "client") -> int:
        """Bytes kept on disk in jobs' files and uploads: a client's, a network's (column="address"),
        or (who=None) everyone's, which the server's disk budget counts."""
        assert column in ("client", "address")
        where, args = (f" WHERE {column}=?", (who,)) if who is not None else ("", ())
        with self._lock:
            jobs = self._db.execute(f"SELECT COALESCE(SUM(bytes), 0) FROM jobs{where}", args).fetchone()[0]
            ups = self._db.execute(f"SELECT COALESCE(SUM(bytes), 0) FROM uploads{where}", args).fetchone()[0]
        return jobs + ups

    def expired(self, before: float) -> tuple[list[str], list[str]]:
        """(finished unpinned jobs, uploads) last touched before ``before``."""
        with self._lock:
            jobs = self._db.execute(
                f"SELECT id FROM jobs WHERE pinned=0 AND updated<? AND status IN ({','.join('?' * len(FINISHED))})",
                (before, *FINISHED)).fetchall()
            ups = self._db.execute("SELECT id FROM uploads WHERE created<?", (before,)).fetchall()
        return [r[0] for r in jobs], [r[0] for r in ups]

    def delete_upload(self, upload_id: str) -> None:
        with self._lock:
            self._db.execute("DELETE FROM uploads WHERE id=?", (upload_id,))

    def update(self, job_id: str, *, status: str | None = None, progress: dict | None = None,
               result: dict | None = None, error: str | None = None, size: int | None = None) -> None:
        sets, args = ["updated=?"], [time.time()]
        for name, value in (("status", status), ("progress", progress), ("result", result), ("error", error)):
            if value is not None:
                sets.append(f"{name}=?")
                args.append(value if isinstance(value, str) else json.dumps(value))
        if size is not None:
            sets.append("bytes=?")
            args.append(size)
        with self._lock:
            self._db.execute(f"UPDATE jobs SET {', '.join(sets)} WHERE id=?", (*args, job_id))

    def delete(self, job_id: str) -> None:
        with self._lock:
            self._db.execute("DELETE FROM jobs WHERE id=?", (job_id,))

    def get(self, job_id: str) -> dict | None:
        with self._lock:
            row = self._db.execute("SELECT * FROM jobs WHERE id=?", (job_id,)).fetchone()
        return _row(row) if row else None

    def list(self, limit: int = 50, offset: int = 0, status: str | None = None, visible: bool = False,
             room: str | None = None) -> list[dict]:
        where, args = self._where(status, visible, room)
        q = f"SELECT * FROM jobs{where} ORDER BY created DESC, id LIMIT ? OFFSET ?"
        with self._lock:
            rows = self._db.execute(q, (*args, limit, offset)).fetchall()
        return [_row(r) for r in rows]

    def count(self, status: str | None = None, visible: bool = False, room: str | None = None) -> int:
        where, args = self._where(status, visible, room)
        with self._lock:
            return self._db.execute(f"SELECT COUNT(*) FROM jobs{where}", args).fetchone()[0]

    @staticmethod
    def _where(status: str | None, visible: bool, room: str | None = None) -> tuple[str, list]:
        """visible: leave out jobs the instructor hid (the gallery and the Lab's recent runs);
        room: only the jobs started in that room."""
        conds, args = [], []
        if room:
            conds.append("room=?")
            args.append(room)
        if status:
            conds.append("status=?")
            args.append(status)
        if visible:
            conds.append("hidden=0")
        return (" WHERE " + " AND ".join(conds) if conds else ""), args

    def close(self) -> None:
        with self._lock:
            self._db.close()


def _row(row: sqlite3.Row) -> dict:
    d = dict(row)
    d["spec"] = json.loads(d["spec"])
    d["progress"] = json.loads(d["progress"] or "{}")
    d["result"] = json.loads(d["result"]) if d["result"] else None
    return d
