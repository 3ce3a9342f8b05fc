"""Server-Sent Events plumbing shared by the REST event stream and the pages' live panels."""

from __future__ import annotations

import json
import threading

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
    """Should this request's open stream end now (the process or its app is stopping)?"""
    own = getattr(request.app.state, "stopping", None)
    return EXITING.is_set() or (own is not None and own.is_set())


def sse(event: str, data: dict, event_id: int | None = None) -> str:
    """One named event with a JSON payload."""
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


def sse_html(html: str) -> str:
    """An unnamed message carrying HTML (htmx's SSE extension swaps it into the page)."""
    return "".join(f"data: {line}\n" for line in html.splitlines()) + "\n"
