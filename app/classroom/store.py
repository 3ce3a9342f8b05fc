"""The classroom's records in one SQLite file: rooms and their members, quiz items and answers,
hand-bred lineages. Jobs keep their room in the jobs database (the ``room`` column)."""

from __future__ import annotations

import json
import secrets
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from app.jobs.store import connect

SCHEMA = """
CREATE TABLE IF NOT EXISTS rooms (
    code TEXT PRIMARY KEY,
    title TEXT NOT NULL DEFAULT '',
    created REAL NOT NULL,
    closed REAL,
    spotlight TEXT,
    hidden TEXT NOT NULL DEFAULT '[]',
    arena TEXT,
    version INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS members (
    room TEXT NOT NULL,
    client TEXT NOT NULL,
    nickname TEXT NOT NULL,
    joined REAL NOT NULL,
    PRIMARY KEY (room, client)
);
CREATE TABLE IF NOT EXISTS quiz_items (
    id TEXT PRIMARY KEY,
    client TEXT NOT NULL,
    room TEXT,
    kind TEXT NOT NULL,
    encoding TEXT NOT NULL,
    dataset TEXT NOT NULL,
    model TEXT NOT NULL,
    source TEXT NOT NULL,
    label TEXT NOT NULL,
    confidence REAL NOT NULL,
    options TEXT NOT NULL,
    seq INTEGER NOT NULL,
    shown REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS quiz_items_client ON quiz_items (client, shown);
CREATE INDEX IF NOT EXISTS quiz_items_shown ON quiz_items (shown);
CREATE INDEX IF NOT EXISTS members_client ON members (client);
CREATE TABLE IF NOT EXISTS quiz_answers (
    item TEXT PRIMARY KEY,
    client TEXT NOT NULL,
    room TEXT,
    answer TEXT NOT NULL,
    agreed INTEGER NOT NULL,
    ms INTEGER NOT NULL,
    answered REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS lineages (
    id TEXT PRIMARY KEY,
    client TEXT NOT NULL,
    model TEXT NOT NULL,
    seed INTEGER NOT NULL,
    size INTEGER NOT NULL,
    steps TEXT NOT NULL DEFAULT '[]',
    parent TEXT,
    created REAL NOT NULL,
    updated REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS lineages_client ON lineages (client);
CREATE INDEX IF NOT EXISTS lineages_updated ON lineages (updated);
"""

@dataclass(frozen=True)
class JoinCaps:
    rooms_per_client: int  # rooms one browser may be a member of
    members_per_room: int
    members: int  # member rows on the whole server


# Codes people read off a projector and type on a phone: no 0/O, 1/I/L.
CODE_ALPHABET = "ABCDEFGHJKMNPQRSTUVWXYZ23456789"
CODE_PATTERN = r"^[A-Za-z2-9]{4,8}$"


def new_code(length: int = 4) -> str:
    return "".join(secrets.choice(CODE_ALPHABET) for _ in range(length))


class ClassroomStore:
    def __init__(self, data_dir: Path) -> None:
        self.path = Path(data_dir) / "classroom.sqlite3"
        self._db = connect(self.path, SCHEMA)
        self._lock = threading.Lock()
        for table in ("lineages", "quiz_items"):  # the network each row came from (per-network caps)
            if "address" not in {r[1] for r in self._db.execute(f"PRAGMA table_info({table})")}:
                self._db.execute(f"ALTER TABLE {table} ADD COLUMN address TEXT NOT NULL DEFAULT ''")
            self._db.execute(f"CREATE INDEX IF NOT EXISTS {table}_address ON {table} (address)")
        if "arena" not in {r[1] for r in self._db.execute("PRAGMA table_info(rooms)")}:  # older databases
            self._db.execute("ALTER TABLE rooms ADD COLUMN arena TEXT")

    def _one(self, query: str, args: tuple = ()) -> dict | None:
        with self._lock:
            row = self._db.execute(query, args).fetchone()
        return dict(row) if row else None

    def _all(self, query: str, args: tuple = ()) -> list[dict]:
        with self._lock:
            return [dict(r) for r in self._db.execute(query, args).fetchall()]

    def _run(self, query: str, args: tuple = ()) -> int:
        with self._lock:
            return self._db.execute(query, args).rowcount

    # -- rooms ------------------------------------------------------------------------------------
    def create_room(self, title: str = "") -> dict:
        for length in (4, 4, 4, 5, 6):  # a clash is rare at 4 letters; longer codes after a few
            code = new_code(length)
            try:
                with self._lock:
                    self._db.execute("INSERT INTO rooms (code, title, created) VALUES (?,?,?)",
                                     (code, title, time.time()))
                return self.room(code)
            except sqlite3.IntegrityError:
                continue
        raise RuntimeError("could not find a free room code")

    def room(self, code: str) -> dict | None:
        row = self._one("SELECT * FROM rooms WHERE code=?", (code.upper(),))
        if row:
            row["hidden"] = json.loads(row["hidden"])
        return row

    def rooms(self, limit: int = 100) -> list[dict]:
        rows = self._all("SELECT * FROM rooms ORDER BY created DESC LIMIT ?", (limit,))
        for r in rows:
            r["hidden"] = json.loads(r["hidden"])
        return rows

    def close_room(self, code: str) -> bool:
        return self._run("UPDATE rooms SET closed=COALESCE(closed, ?), version=version+1 WHERE code=?",
                         (time.time(), code)) == 1

    def set_spotlight(self, code: str, job_id: str | None) -> None:
        self._run("UPDATE rooms SET spotlight=?, version=version+1 WHERE code=?", (job_id, code))

    def set_arena(self, code: str, model: str | None) -> None:
        """Pin the defence arena of ``model`` to the room's wall (None: unpin)."""
        self._run("UPDATE rooms SET arena=?, version=version+1 WHERE code=?", (model, code))

    def set_hidden(self, code: str, job_id: str, hidden: bool) -> list[str]:
        with self._lock:
            row = self._db.execute("SELECT hidden FROM rooms WHERE code=?", (code,)).fetchone()
            ids = [i for i in json.loads(row["hidden"]) if i != job_id] + ([job_id] if hidden else [])
            self._db.execute("UPDATE rooms SET hidden=?, version=version+1 WHERE code=?", (json.dumps(ids), code))
        return ids

    def join(self, code: str, client: str, nickname: str, caps: JoinCaps) -> str | None:
        """Join (or rename oneself in) a room. None when done, else what stood in the way: "nickname"
        (another member has it, in any case), "rooms" (this client is in caps.rooms_per_client
        rooms), "room" (the room has caps.members_per_room), "budget" (caps.members in all)."""
        with self._lock:
            others = self._db.execute("SELECT nickname FROM members WHERE room=? AND client!=?", (code, client))
            if any(r[0].casefold() == nickname.casefold() for r in others):  # "Ada" and "ADA" look alike
                return "nickname"
            mine = self._db.execute("SELECT nickname FROM members WHERE room=? AND client=?", (code, client)).fetchone()
            if mine is not None and mine[0] == nickname:
                return None  # joined already as that: nothing changes, no wall is woken
            if mine is None:
                for what, query, args, cap in (
                        ("rooms", "SELECT COUNT(*) FROM members WHERE client=?", (client,), caps.rooms_per_client),
                        ("room", "SELECT COUNT(*) FROM members WHERE room=?", (code,), caps.members_per_room),
                        ("budget", "SELECT COUNT(*) FROM members", (), caps.members)):
                    if self._db.execute(query, args).fetchone()[0] >= cap:
                        return what
            self._db.execute("INSERT INTO members (room, client, nickname, joined) VALUES (?,?,?,?) "
                             "ON CONFLICT (room, client) DO UPDATE SET nickname=excluded.nickname",
                             (code, client, nickname, time.time()))
            self._db.execute("UPDATE rooms SET version=version+1 WHERE code=?", (code,))
        return None

    def leave(self, code: str, client: str) -> None:
        with self._lock:
            if self._db.execute("DELETE FROM members WHERE room=? AND client=?", (code, client)).rowcount:
                self._db.execute("UPDATE rooms SET version=version+1 WHERE code=?", (code,))

    def member(self, code: str, client: str) -> dict | None:
        return self._one("SELECT * FROM members WHERE room=? AND client=?", (code, client))

    def members(self, code: str) -> dict[str, str]:
        """client -> nickname."""
        return {r["client"]: r["nickname"] for r in self._all("SELECT client, nickname FROM members WHERE room=?",
                                                             (code,))}

    # -- quiz -------------------------------------------------------------------------------------
    def add_item(self, item: dict) -> None:
        cols = ("id", "client", "room", "kind", "encoding", "dataset", "model", "source", "label", "confidence",
                "options", "seq", "shown", "address")
        item = {"address": "", **item}
        values = tuple(json.dumps(item[c]) if c == "options" else item[c] for c in cols)
        self._run(f"INSERT INTO quiz_items ({', '.join(cols)}) VALUES ({','.join('?' * len(cols))})", values)

    def item(self, item_id: str) -> dict | None:
        row = self._one("SELECT i.*, a.answer, a.agreed, a.ms FROM quiz_items i LEFT JOIN quiz_answers a "
                        "ON a.item = i.id WHERE i.id=?", (item_id,))
        if row:
            row["options"] = json.loads(row["options"])
        return row

    def recent_sources(self, client: str, limit: int = 20) -> set[str]:
        return {r["source"] for r in self._all("SELECT source FROM quiz_items WHERE client=? ORDER BY shown DESC "
                                               "LIMIT ?", (client, limit))}

    def answer(self, item: dict, answer: str, agreed: bool, ms: int) -> bool:
        """Record an answer; False when the item already has one (the first answer counts)."""
        try:
            self._run("INSERT INTO quiz_answers (item, client, room, answer, agreed, ms, answered) "
                      "VALUES (?,?,?,?,?,?,?)", (item["id"], item["client"], item["room"], answer, int(agreed), ms,
                                                 time.time()))
        except sqlite3.IntegrityError:
            return False
        return True

    def answered_count(self, client: str, room: str | None = None) -> int:
        where, args = ("AND room=?", (client, room)) if room else ("", (client,))
        return self._one(f"SELECT COUNT(*) AS n FROM quiz_answers WHERE client=? {where}", args)["n"]

    def answers(self, room: str | None = None, everywhere: bool = False) -> list[dict]:
        """Answered items (with what was shown), oldest first: a room's when given, else those of
        the public quiz, or (``everywhere``, the instructor's view) every room's too."""
        where, args = ("WHERE a.room=?", (room,)) if room else ("", ()) if everywhere else ("WHERE a.room IS NULL", ())
        rows = self._all("SELECT i.id AS item, i.kind, i.encoding, i.dataset, i.model, i.source, i.label, "
                         "i.confidence, i.options, i.seq, i.shown, a.answer, a.agreed, a.ms, a.answered, a.room, "
                         f"a.client FROM quiz_answers a JOIN quiz_items i ON i.id = a.item {where} "
                         "ORDER BY a.answered", args)
        for r in rows:
            r["options"] = json.loads(r["options"])
        return rows

    # -- lineages (hand breeding) -----------------------------------------------------------------
    def create_lineage(self, lineage_id: str, client: str, model: str, seed: int, size: int,
                       steps: list | None = None, parent: str | None = None, address: str = "") -> None:
        now = time.time()
        self._run("INSERT INTO lineages (id, client, model, seed, size, steps, parent, created, updated, address) "
                  "VALUES (?,?,?,?,?,?,?,?,?,?)", (lineage_id, client, model, seed, size, json.dumps(steps or []),
                                                   parent, now, now, address))

    def lineage(self, lineage_id: str) -> dict | None:
        row = self._one("SELECT * FROM lineages WHERE id=?", (lineage_id,))
        if row:
            row["steps"] = json.loads(row["steps"])
        return row

    def set_steps(self, lineage_id: str, steps: list) -> bool:
        """Append-only: the new steps replace the stored ones only if those are the first
        ``len(steps) - 1`` (False when another request added a step meanwhile)."""
        return self._run("UPDATE lineages SET steps=?, updated=? WHERE id=? AND json_array_length(steps)=?",
                         (json.dumps(steps), time.time(), lineage_id, len(steps) - 1)) == 1

    # -- budgets and retention ----------------------------------------------------------------------
    def count(self, table: str, who: str | None = None, column: str = "client") -> int:
        """Rows of a table: a client's, a network's (column="address"), or (who=None) all of them,
        which the server's row budgets count."""
        assert table in ("lineages", "quiz_items", "members") and column in ("client", "address")
        where, args = (f" WHERE {column}=?", (who,)) if who is not None else ("", ())
        return self._one(f"SELECT COUNT(*) AS n FROM {table}{where}", args)["n"]

    def sweep(self, cutoff: float) -> dict[str, int]:
        """Retention: lineages and quiz items (with their answers) last touched before ``cutoff``,
        and rooms closed before it with their members. Open rooms keep their members all term."""
        with self._lock:
            run = self._db.execute
            gone = {"lineages": run("DELETE FROM lineages WHERE updated<?", (cutoff,)).rowcount,
                    "quiz_answers": run("DELETE FROM quiz_answers WHERE item IN (SELECT id FROM quiz_items WHERE "
                                        "shown<?)", (cutoff,)).rowcount,
                    "quiz_items": run("DELETE FROM quiz_items WHERE shown<?", (cutoff,)).rowcount}
            closed = [r[0] for r in self._db.execute("SELECT code FROM rooms WHERE closed<?", (cutoff,))]
            gone["members"] = sum(self._db.execute("DELETE FROM members WHERE room=?", (c,)).rowcount for c in closed)
            gone["rooms"] = sum(self._db.execute("DELETE FROM rooms WHERE code=?", (c,)).rowcount for c in closed)
        return {k: v for k, v in gone.items() if v}

    def close(self) -> None:
        with self._lock:
            self._db.close()
