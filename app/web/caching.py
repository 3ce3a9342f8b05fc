"""HTTP caching for what never changes: a finished job's files and images. They carry a strong
ETag (a hash of their bytes) and a year-long, immutable Cache-Control, and a request whose
If-None-Match names the ETag gets 304 with no body. Live answers are sent with no-cache."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import BinaryIO

import anyio
from fastapi import Request, Response
from fastapi.responses import StreamingResponse

from app.cache import LRU

IMMUTABLE = "public, max-age=31536000, immutable"
NO_CACHE = "no-cache"  # may be stored, but always revalidated: a live answer is never shown stale

_etags: LRU[str] = LRU(4096)


def _etag(f: BinaryIO, key: tuple[str, int, int]) -> str:
    """A strong ETag from an open file's bytes, remembered per (path, mtime, size)."""
    tag = _etags.get(key)
    if tag is not None:
        return tag
    digest = hashlib.sha256()
    for block in iter(lambda: f.read(1 << 20), b""):
        digest.update(block)
    f.seek(0)
    return _etags.put(key, f'"{digest.hexdigest()[:32]}"')


async def _chunks(f: BinaryIO) -> AsyncIterator[bytes]:
    try:
        while block := await anyio.to_thread.run_sync(f.read, 1 << 16):
            yield block
    finally:
        f.close()


def etag_matches(request: Request, tag: str) -> bool:
    """If-None-Match uses the weak comparison (RFC 9110 13.1.2): W/ prefixes are ignored."""
    header = request.headers.get("if-none-match")
    if not header:
        return False
    if header.strip() == "*":
        return True
    bare = tag.removeprefix("W/")
    return any(part.strip().removeprefix("W/") == bare for part in header.split(","))


def immutable_file(request: Request, path: Path, media_type: str, headers: dict | None = None) -> Response:
    """A finished job's file: 304 when the client has it, else the file with its ETag. Raises
    FileNotFoundError when there is no such file (the caller says why). The file is opened here and
    sent from that handle, so a job deleted meanwhile still sends every byte, never a cut-off body."""
    f = path.open("rb")
    try:
        st = os.fstat(f.fileno())
        tag = _etag(f, (str(path), st.st_mtime_ns, st.st_size))
    except BaseException:
        f.close()
        raise
    cache = {"ETag": tag, "Cache-Control": IMMUTABLE}
    if etag_matches(request, tag):
        f.close()
        return Response(status_code=304, headers=cache)
    return StreamingResponse(_chunks(f), media_type=media_type,
                             headers={**(headers or {}), **cache, "Content-Length": str(st.st_size)})


def revalidated_json(request: Request, data: dict) -> Response:
    """A finished job's view: a strong ETag over its bytes, revalidated on every use (no-cache),
    304 when the client's copy is current."""
    body = json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode()
    tag = f'"{hashlib.sha256(body).hexdigest()[:32]}"'
    headers = {"ETag": tag, "Cache-Control": NO_CACHE}
    if etag_matches(request, tag):
        return Response(status_code=304, headers=headers)
    return Response(body, media_type="application/json", headers=headers)
