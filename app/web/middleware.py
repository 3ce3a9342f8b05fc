"""Plain ASGI middleware (cheaper than BaseHTTPMiddleware on every request), in front of every route:

- security headers on every response (a route may set its own CSP, as the API docs do);
- who is asking (app.web.identity): the signed client cookie is read, or issued on first visit;
- cross-site requests that would change state are refused (403);
- request bodies are counted as they arrive: over the limit is 413, whether or not the client
  declared a Content-Length (a chunked body is counted too).
"""

from __future__ import annotations

import json
from http.cookies import CookieError, SimpleCookie
from urllib.parse import urlsplit

from app.web.errors import ApiError
from app.web.forms import whole_number
from app.web.identity import Gatekeeper

CSP = ("default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self'; "
       "connect-src 'self'; object-src 'none'; base-uri 'self'; frame-ancestors 'none'")
HEADERS = [(b"content-security-policy", CSP.encode()), (b"x-content-type-options", b"nosniff"),
           (b"referrer-policy", b"same-origin")]
SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}


class BodyTooLarge(ApiError):
    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body over {limit} bytes")


def _cookies(raw: str) -> dict[str, str]:
    jar = SimpleCookie()
    try:
        jar.load(raw)
    except CookieError:  # a malformed header: treat as no cookies
        return {}
    return {k: m.value for k, m in jar.items()}


def cross_site(method: str, headers: dict[str, str]) -> str | None:
    """Why a state-changing request must be refused as cross-site, or None. Browsers send
    Sec-Fetch-Site and Origin; scripts (curl, httpx) send neither and are not affected."""
    if method in SAFE_METHODS:
        return None
    if headers.get("sec-fetch-site") == "cross-site":
        return "cross-site request refused"
    origin = headers.get("origin")
    if origin is None:
        return None
    if origin == "null" or urlsplit(origin).netloc.lower() != headers.get("host", "").lower():
        return f"request from another origin ({origin}) refused"
    return None


class GuardMiddleware:
    def __init__(self, app, max_body_bytes: int, gatekeeper: Gatekeeper) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.gatekeeper = gatekeeper

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        declared = headers.get("content-length", "")
        length = whole_number(declared)  # anything else is for the body count below to catch
        if length is not None and length > self.max_body_bytes:
            return await _error(send, 413, "too_large", f"request body over {self.max_body_bytes} bytes")
        reason = cross_site(scope["method"], headers)
        if reason:
            return await _error(send, 403, "forbidden", reason)

        client = scope.get("client")
        identity = self.gatekeeper.identify(headers, _cookies(headers.get("cookie", "")),
                                            client[0] if client else "unknown")
        scope.setdefault("state", {})["identity"] = identity
        extra = list(HEADERS)
        if identity.new_cookie:
            secure = scope.get("scheme") == "https"
            extra.append((b"set-cookie", self.gatekeeper.client_cookie(identity.client, secure).encode()))

        started = False
        received = 0
        limit = self.max_body_bytes

        async def counted_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)
            return message

        async def send_with_headers(message):
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                present = {k.lower() for k, _ in message.get("headers", [])}
                message["headers"] = [*message.get("headers", []),
                                      *(h for h in extra if h[0] not in present or h[0] == b"set-cookie")]
            await send(message)

        try:
            await self.app(scope, counted_receive, send_with_headers)
        except BodyTooLarge as exc:  # raised where no route handler turned it into a response
            if started:
                raise
            await _error(send, 413, "too_large", exc.detail)


async def _error(send, status: int, code: str, detail: str) -> None:
    body = json.dumps({"error": code, "detail": detail}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            *HEADERS]})
    await send({"type": "http.response.body", "body": body})
