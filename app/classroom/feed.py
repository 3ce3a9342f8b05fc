"""One reader per room for all of its walls.

Every wall connection used to read the room, list its jobs and look up each tile itself, several
times a second: 60 phones watching an idle room took a whole core. Now one ``RoomFeed`` per room
reads the room's state and its tiles, turns each tile into its JSON text once, and wakes the walls
only when something changed; a wall connection just compares what it sent with the feed.

The feed also builds the room's defence arena boards: the one the instructor pinned to the wall,
and those its arena pages watch, each about once a second (``ARENA_EVERY``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress

from starlette.concurrency import run_in_threadpool

from app.classroom.store import ClassroomStore
from app.classroom.wall import FRAME_INTERVAL, Tiles, room_job_ids
from app.jobs.runner import Runner

log = logging.getLogger(__name__)
LIST_EVERY = 1.0  # seconds between listings of the room's jobs (new and removed tiles)
ARENA_EVERY = 1.0  # seconds between two builds of a watched arena board
ARENA_TIMEOUT = 10.0  # seconds a board may take before the last one stays up
# (room code, model, nicknames, hidden job ids) -> (everyone's board, the instructor's): app.web.arena
BoardFn = Callable[[str, str, dict[str, str], set[str]], Awaitable[tuple[dict, dict]]]


class RoomFeed:
    """The latest state of one room's wall: ``room`` (None once the room is deleted), ``names``
    (client -> nickname), ``ids`` (its jobs on the wall, hidden ones included: each wall leaves the
    ``hidden`` ones out for all but the instructor), and per job the key and JSON text of its tile."""

    def __init__(self, code: str, store: ClassroomStore, runner: Runner, tiles: Tiles,
                 board: BoardFn | None = None) -> None:
        self.code, self.store, self.runner, self.tiles, self.board = code, store, runner, tiles, board
        self.version = 0  # bumped whenever anything a wall sends changes
        self.read_once = False
        self.room: dict | None = None
        self.names: dict[str, str] = {}
        self.ids: list[str] = []
        self.hidden: set[str] = set()  # hidden on the wall or in the gallery
        self.texts: dict[str, tuple[object, str]] = {}  # job id -> (key, tile JSON)
        self._frames: dict[str, tuple[object, float]] = {}  # job id -> (tile frame key, when read)
        self._listed = 0.0
        self.wanted: Counter[str] = Counter()  # model -> arena pages watching its board
        self.arenas: dict[str, tuple[str, str]] = {}  # model -> (board JSON for members, for the instructor)
        self._changed = asyncio.Event()
        self.watchers = 0
        self.task: asyncio.Task | None = None

    async def wait(self, seen: int, timeout: float) -> None:
        """Return once ``version`` is past ``seen``, or after ``timeout``."""
        if self.version > seen:
            return
        with suppress(TimeoutError):
            await asyncio.wait_for(self._changed.wait(), timeout)

    def _publish(self) -> None:
        self.version += 1
        self._changed.set()
        self._changed = asyncio.Event()

    async def run(self) -> None:
        arenas = asyncio.create_task(self._arenas())  # beside the tiles: a slow board never holds them up
        try:
            while True:
                try:
                    state = await run_in_threadpool(self.read)
                except Exception as exc:  # a job deleted mid-read, a database hiccup: the walls must not freeze
                    log.warning("room %s: reading the wall failed: %s", self.code, exc)
                    state = None
                if state is not None:  # swapped in here, on the loop, so a wall never sees half of it
                    self.room, self.names, self.ids, self.hidden, self.texts = state
                    self._publish()
                if self.room is None:
                    return  # deleted: the walls close
                await asyncio.sleep(FRAME_INTERVAL / 2)
        finally:
            arenas.cancel()

    def _arena_models(self) -> set[str]:
        """The models whose boards are wanted: those arena pages watch, and the one pinned."""
        pinned = self.room.get("arena") if self.room is not None else None
        return set(self.wanted) | ({pinned} if pinned else set())

    async def _arenas(self) -> None:
        """Build the boards of the pinned arena and of those watched, each ARENA_EVERY seconds and
        whenever the room changes (a hide, a new member); publish the ones that changed."""
        if self.board is None:
            return
        while self.room is None:  # the room and its members first: a board names its attackers
            await asyncio.sleep(FRAME_INTERVAL / 4)
        while True:
            seen = self.room["version"] if self.room is not None else None
            out = {}
            for model in sorted(self._arena_models()):
                try:
                    public, full = await asyncio.wait_for(self.board(self.code, model, self.names, self.hidden),
                                                          ARENA_TIMEOUT)
                    # allow_nan=False: a browser's JSON.parse takes no NaN, and one bad board must not stop the rest
                    out[model] = (json.dumps(public, separators=(",", ":"), allow_nan=False),
                                  json.dumps(full, separators=(",", ":"), allow_nan=False))
                except Exception as exc:  # a model gone, a database hiccup, too slow: the last board stays up
                    log.warning("room %s: building the %s arena failed: %s", self.code, model, exc)
                    if model in self.arenas:
                        out[model] = self.arenas[model]
            if out != self.arenas:
                self.arenas = out
                self._publish()
            t0 = time.monotonic()
            while time.monotonic() - t0 < ARENA_EVERY:  # woken early by a change of the room or a new watcher
                await asyncio.sleep(FRAME_INTERVAL / 2)
                now = self.room["version"] if self.room is not None else None
                if now != seen or self._arena_models() - set(self.arenas):
                    break

    def read(self) -> tuple | None:
        """One look at the room and its tiles (in a worker thread): the new (room, names, ids,
        hidden, texts), or None when nothing changed."""
        now = time.monotonic()
        room = self.store.room(self.code)
        if room is None:
            return (None, {}, [], set(), {})
        changed = not self.read_once
        self.read_once = True
        names, ids, hidden, texts = self.names, self.ids, self.hidden, self.texts
        renamed = self.room is None or room["version"] != self.room["version"]
        if renamed:  # members, the spotlight or the hidden set changed: every tile's text again
            names, changed, self._listed = self.store.members(self.code), True, 0.0
        if now - self._listed >= LIST_EVERY:
            self._listed = now
            listed, flagged = room_job_ids(self.runner, self.code)
            if flagged | set(room["hidden"]) != hidden:
                hidden, renamed, changed = flagged | set(room["hidden"]), True, True
            if listed != ids:
                ids, changed = listed, True
                kept = set(listed)
                texts = {i: t for i, t in texts.items() if i in kept}
                self._frames = {i: f for i, f in self._frames.items() if i in kept}
        for job_id in ids:
            last = self._frames.get(job_id)
            final = last is not None and last[0][1][0] == "final"
            if last is not None and not renamed and (final or now - last[1] < FRAME_INTERVAL):
                continue  # a finished tile never changes; a live one is read at most every FRAME_INTERVAL
            key = last[0] if final else self.tiles.key(job_id)
            if key is None or (last is not None and last[0] == key and not renamed):
                continue
            tile = self.tiles.tile(job_id)
            if tile is None:
                continue
            self._frames[job_id] = (key, now)
            public = {k: v for k, v in tile.items() if k != "client"}  # client ids stay on the server
            public.update(nickname=names.get(tile.get("client") or ""), hidden=job_id in hidden)
            if texts is self.texts:
                texts = dict(texts)
            # keyed by what a wall shows: a rename or a hide re-sends only the tiles it changes
            texts[job_id] = ((key, public["nickname"], public["hidden"]), json.dumps(public, separators=(",", ":")))
            changed = True
        return (room, names, ids, hidden, texts) if changed else None


class RoomFeeds:
    """The feeds of the rooms being watched now, one per room (and event loop)."""

    def __init__(self, store: ClassroomStore, runner: Runner, tiles: Tiles, board: BoardFn | None = None) -> None:
        self.store, self.runner, self.tiles, self.board = store, runner, tiles, board
        self._feeds: dict[tuple[int, str], RoomFeed] = {}

    @asynccontextmanager
    async def watch(self, code: str, arena: str | None = None) -> AsyncIterator[RoomFeed]:
        """The room's feed, started by its first watcher and stopped when its last one leaves
        (``arena``: a model whose arena board this watcher wants, pinned or not)."""
        key = (id(asyncio.get_running_loop()), code)
        feed = self._feeds.get(key)
        if feed is None or feed.task is None or feed.task.done():
            feed = self._feeds[key] = RoomFeed(code, self.store, self.runner, self.tiles, self.board)
            feed.task = asyncio.create_task(feed.run())
        feed.watchers += 1
        if arena:
            feed.wanted[arena] += 1
        try:
            yield feed
        finally:
            feed.watchers -= 1
            if arena:
                feed.wanted[arena] -= 1
                if feed.wanted[arena] <= 0:
                    del feed.wanted[arena]
            if feed.watchers == 0:
                feed.task.cancel()
                if self._feeds.get(key) is feed:
                    del self._feeds[key]

    def __len__(self) -> int:
        return len(self._feeds)
