"""Idempotency-Key for POSTs that make something (jobs, uploads): a retry with the same key and
the same request gets the same answer instead of a second job; the same key with a different
request gets 409. (IETF draft-ietf-httpapi-idempotency-key-header.)

Keys are scoped to the asker: the signed browser cookie when it has one, else its network's
anonymous bucket (REST clients often keep no cookies). Without a cookie, the key is all that tells
one script's retry from another script's request behind the same NAT, so it must be a secret: at
least ANONYMOUS_KEY_CHARS characters (a UUID has 36). They are kept for FOOLING_IDEMPOTENCY_TTL_S
(a day)."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from fastapi import Header, Request
from starlette.concurrency import run_in_threadpool

from app.jobs.store import JobStore
from app.web.deps import identity
from app.web.errors import ApiError

KEY_PATTERN = r'^"?[\x21\x23-\x7e]{1,255}"?$'  # visible ASCII, optionally as a quoted sf-string
ANONYMOUS_KEY_CHARS = 32  # a cookie-less client's key is its proof that a retry is its own


def key_header(idempotency_key: str | None = Header(
        None, alias="Idempotency-Key", min_length=1, max_length=257, pattern=KEY_PATTERN,
        description="a unique value per intended request (e.g. a UUID): a retry with the same key and body "
                    "returns what the first one made; the same key with another body gets 409")) -> str | None:
    return idempotency_key.strip('"') if idempotency_key else None


def fingerprint(data: bytes | dict) -> str:
    raw = data if isinstance(data, bytes) else json.dumps(data, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(raw).hexdigest()


@dataclass
class Claim:
    """What a keyed request should do: ``replay`` holds the first request's result to answer with;
    otherwise the request goes ahead and ``done(result)`` records what it made."""

    replay: dict | None = None
    made: dict | None = field(default=None, repr=False)

    def done(self, result: dict) -> None:
        self.made = result


@asynccontextmanager
async def idempotent(request: Request, store: JobStore, route: str, key: str | None, body: bytes | dict,
                     ttl_s: float) -> AsyncIterator[Claim]:
    """Hold ``key`` while the request is served. A request that fails (any exception) frees the key,
    so that its retry runs again."""
    claim = Claim()
    if key is None:
        yield claim
        return
    who = identity(request)
    if who.anonymous and len(key) < ANONYMOUS_KEY_CHARS:
        raise ApiError(422, f"without a cookie, an Idempotency-Key is what proves that a retry is yours and not "
                            f"another script's on your network: send at least {ANONYMOUS_KEY_CHARS} random "
                            "characters (e.g. a UUID), or keep the fl_client cookie", "Idempotency-Key")
    scope = f"client:{who.client}"
    state, result = await run_in_threadpool(store.claim_key, scope, route, key, fingerprint(body), time.time() - ttl_s)
    if state == "mismatch":
        raise ApiError(409, "this Idempotency-Key was used for a different request: use a new key for a new "
                            "request", "Idempotency-Key")
    if state == "busy":
        raise ApiError(409, "a request with this Idempotency-Key is still being served: retry in a moment",
                       "Idempotency-Key", {"Retry-After": "1"})
    if state == "done":
        claim.replay = result
        yield claim
        return
    try:
        yield claim
    except BaseException:
        await run_in_threadpool(store.settle_key, scope, route, key, None)
        raise
    await run_in_threadpool(store.settle_key, scope, route, key, claim.made)
