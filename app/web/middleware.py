"""Plain ASGI middleware (cheaper than BaseHTTPMiddleware on every request), in front of every route:

- security headers on every response (a route may set its own CSP, as the API docs do);
- who is asking (app.web.identity): the signed client cookie is read, or issued on first visit;
- cross-site requests that would change state are refused (403);
- request bodies are counted as they arrive: over the route's limit is 413, whether or not the
  client declared a Content-Length (a chunked body is counted too). Routes that take images or
  arrays have their own limits; every other body (JSON, forms) gets FOOLING_MAX_JSON_BYTES, so no
  route parses a large body on the event loop.
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
DRAIN_BYTES = 64 * 2**20  # an over-limit body this size or smaller is read (and dropped) before the 413


class BodyTooLarge(ApiError):
    def __init__(self, limit: int) -> None:
        super().__init__(413, too_large(limit))


def too_large(limit: int) -> str:
    return f"request body over {limit} bytes, this route's limit"


DATA_URL_ROUTES = {("POST", "/api/v1/jobs")}


def data_url_bytes(body: bytes) -> int:
    """The length of the base64 data URL in a JSON body (0 when it has none): bytes.find, no parse."""
    start = body.find(b";base64,")
    if start < 0:
        return 0
    end = body.find(b'"', start)
    return (end if end >= 0 else len(body)) - start


def _replay(body: bytes, receive):
    """A receive that gives the app the body already read, then whatever comes (a disconnect)."""
    given = False

    async def replayed():
        nonlocal given
        if not given:
            given = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed


def body_limits(max_upload: int, max_files: int, max_json: int) -> tuple[dict[tuple[str, str], int], int]:
    """(limits of the routes that take images, by (method, path)), and every other route's limit."""
    files = max_upload * max_files + (1 << 20)  # multipart: the files and their headers
    data_url = 4 * -(-max_upload // 3) + (64 << 10)  # a job's image as a base64 data URL, and the rest of the JSON
    return ({("POST", "/api/v1/score"): files, ("POST", "/score"): files,
             ("POST", "/api/v1/score/tensor"): files,  # the route checks the array's own size first
             ("POST", "/api/v1/uploads"): max_upload + (64 << 10),
             ("POST", "/api/v1/jobs"): data_url}, max_json)


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
    def __init__(self, app, limits: dict[tuple[str, str], int], default_limit: int, gatekeeper: Gatekeeper) -> None:
        self.app = app
        self.limits, self.default_limit = limits, default_limit
        self.gatekeeper = gatekeeper

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        route = (scope["method"], scope["path"].rstrip("/") or "/")
        limit = self.limits.get(route, self.default_limit)
        declared = headers.get("content-length", "")
        length = whole_number(declared)  # anything else is for the body count below to catch
        if length is not None and length > limit:
            # Most clients (urllib, requests) send the whole body before they read the answer: if
            # the server answered and hung up mid-body they would see a broken pipe, not the 413.
            # So a body up to DRAIN_BYTES is read and dropped unparsed first; past that, the
            # connection is closed after the answer.
            if length <= DRAIN_BYTES:
                while (await receive()).get("more_body"):
                    pass
            return await _error(send, 413, "too_large", too_large(limit), close=length > DRAIN_BYTES)
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
            extra.append((b"set-cookie", self.gatekeeper.client_cookie(identity.new_cookie, secure).encode()))

        if route in DATA_URL_ROUTES and (length is None or length > self.default_limit):
            # A job may carry its image as a data URL, hence the larger limit; the rest of its JSON
            # gets the small one. Parsing a long string is cheap, but parsing megabytes of numbers
            # (a 12 MB `targets` list held the event loop for a second) is not.
            body, whole = bytearray(), False
            while not whole:
                message = await receive()
                body += message.get("body", b"")
                whole = message["type"] != "http.request" or not message.get("more_body")
                if len(body) > limit:
                    return await _error(send, 413, "too_large", too_large(limit), close=True)
            if len(body) - data_url_bytes(body) > self.default_limit:
                return await _error(send, 413, "too_large", f"a job's JSON is over {self.default_limit} bytes apart "
                                                            "from its image (a data URL)")
            receive = _replay(bytes(body), receive)

        started = False
        received = 0

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


async def _error(send, status: int, code: str, detail: str, close: bool = False) -> None:
    body = json.dumps({"error": code, "detail": detail}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            *HEADERS, *([(b"connection", b"close")] if close else [])]})
    await send({"type": "http.response.body", "body": body})
