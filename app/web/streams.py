"""Server-Sent Events plumbing shared by the REST event stream and the pages' live panels."""

from __future__ import annotations

import asyncio
import json
import threading
import time
import weakref
from collections import Counter
from collections.abc import AsyncIterator

from fastapi.responses import StreamingResponse

from app.web.errors import too_many

# Set when the server process is asked to exit (signal), so open event streams end instead of
# holding shutdown. Each app also has its own flag (app.state.stopping), set when its lifespan ends:
# one app stopping (e.g. in tests) must not end another app's streams.
EXITING = threading.Event()

# Proxies must pass frames through as they come, and nobody may cache a live stream.
HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def _install_exit_hook() -> None:
    """uvicorn waits for open connections before the app's shutdown runs; an SSE stream never
    ends by itself, so we learn of the exit signal directly."""
    try:
        from uvicorn.server import Server
    except ImportError:  # another server: streams still end at their next keep-alive after close
        return
    original = Server.handle_exit
    if getattr(original, "_fooling_lab", False):
        return

    def handle_exit(self, sig, frame):
        EXITING.set()
        return original(self, sig, frame)

    handle_exit._fooling_lab = True
    Server.handle_exit = handle_exit


_install_exit_hook()


def stopping(request) -> bool:
    """Should this request's open stream end now (the process, its app or its job runner is stopping)?"""
    own = getattr(request.app.state, "stopping", None)
    runner = getattr(request.app.state, "runner", None)
    return EXITING.is_set() or (own is not None and own.is_set()) or (runner is not None and runner.closing)


RETRY = "retry: 2000\n\n"  # the first line of every stream: reconnect after 2 s
KEEP_ALIVE = ": keep-alive\n\n"


class Pacer:
    """One stream's clock, the same for every stream: frames at most every ``interval`` seconds
    (what changes meanwhile is not queued: the next frame is the latest state), and a keep-alive
    comment after ``keep_alive`` seconds without one, so proxies keep the connection open."""

    def __init__(self, interval: float, keep_alive: float = 15.0) -> None:
        self.interval, self.keep_alive = interval, keep_alive
        self.sent = time.monotonic()

    def idle(self) -> str | None:
        """Nothing new: the keep-alive comment when one is due."""
        if time.monotonic() - self.sent > self.keep_alive:
            self.sent = time.monotonic()
            return KEEP_ALIVE
        return None

    async def pace(self) -> None:
        """Something new: wait out the rest of the interval, then count it as sent."""
        wait = self.sent + self.interval - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        self.sent = time.monotonic()


def response(body: AsyncIterator[str]) -> StreamingResponse:
    """An event stream as the answer: never cached, passed through proxies as it comes."""
    return StreamingResponse(body, media_type="text/event-stream", headers=HEADERS)


def sse(event: str, data: dict, event_id: int | None = None) -> str:
    """One named event with a JSON payload."""
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


def sse_text(event: str, data: str) -> str:
    """One named event whose JSON payload is already text (made once, sent to many streams)."""
    return f"event: {event}\ndata: {data}\n\n"


def sse_html(html: str) -> str:
    """An unnamed message carrying HTML (htmx's SSE extension swaps it into the page)."""
    return "".join(f"data: {line}\n" for line in html.splitlines()) + "\n"


class StreamLimiter:
    """Open event streams are counted per signed client, per address (higher: a class behind one
    NAT shares one) and in all; past any cap a new stream gets 429 with Retry-After."""

    def __init__(self, per_client: int, per_address: int, total: int) -> None:
        self.caps = {"client": per_client, "address": per_address, "total": total}
        self._open: Counter = Counter()
        # Reentrant: the finalizer below may run inside this class's own locked code, in the same
        # thread, whenever the garbage collector runs (any allocation); a plain Lock deadlocks there.
        self._lock = threading.RLock()

    def open(self, client: str, address: str, body: AsyncIterator[str]) -> AsyncIterator[str]:
        """``body`` wrapped so that its place is held while it is open and given back when it ends,
        is closed or is dropped unstarted (a client that hangs up at once)."""
        keys = (("client", client), ("address", address), ("total", ""))
        with self._lock:
            for kind, key in keys:
                if self._open[(kind, key)] >= self.caps[kind]:
                    where = "on this server" if kind == "total" else f"from your {kind}"
                    policy = ("streams" if kind == "total" else f"streams-per-{kind}", self.caps[kind])
                    raise too_many(f"too many open event streams {where} (limit {self.caps[kind]}); close one and "
                                   "retry", policy, 5)
            for key in keys:
                self._open[key] += 1
        released = False

        def release() -> None:
            nonlocal released
            with self._lock:
                if released:
                    return
                released = True
                for key in keys:
                    self._open[key] -= 1
                    if not self._open[key]:
                        del self._open[key]

        async def held() -> AsyncIterator[str]:
            try:
                async for chunk in body:
                    yield chunk
            finally:
                release()

        wrapped = held()
        weakref.finalize(wrapped, release)
        return wrapped

    def count(self, kind: str = "total", key: str = "") -> int:
        with self._lock:
            return self._open[(kind, key)]
