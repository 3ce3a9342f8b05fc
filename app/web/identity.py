"""Who is asking: a signed per-browser client id, the instructor, and job control tokens.

- Every browser gets a signed, HttpOnly, SameSite=Lax ``fl_client`` cookie on its first visit. The
  id inside it is what per-client caps count and what owns the jobs that browser starts; a client
  cannot pick it (an unsigned or forged value is replaced).
- The instructor proves themselves with ``Authorization: Bearer <FOOLING_ADMIN_TOKEN>`` or with the
  signed ``fl_instructor`` cookie that /instructor sets after taking the token once.
- A job's creator also gets a ``control_token`` (only its hash is stored; it is an HMAC of the job
  id, so a retried POST can be given it again), for REST clients that keep no cookies:
  ``Authorization: Bearer <control_token>``.

Signing is HMAC-SHA256 with FOOLING_SECRET_KEY, or a key generated once and kept in the data dir.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

CLIENT_COOKIE = "fl_client"
INSTRUCTOR_COOKIE = "fl_instructor"
ROOM_COOKIE = "fl_room"  # the classroom room this browser joined (signed: a code, bound to the client)
COOKIE_MAX_AGE = 400 * 24 * 3600  # the most browsers keep a cookie (a school year and more)


def load_secret(configured: str, data_dir: Path) -> bytes:
    """FOOLING_SECRET_KEY if set; else a random key made once and kept (0600) in the data dir,
    so cookies survive restarts."""
    if configured:
        return configured.encode()
    path = Path(data_dir) / "secret_key"
    try:
        return path.read_bytes().strip()
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    key = secrets.token_urlsafe(48).encode()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process made it first: use theirs
        return path.read_bytes().strip()
    with os.fdopen(fd, "wb") as f:
        f.write(key)
    return key


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class Signer:
    key: bytes

    def _mac(self, purpose: str, value: str) -> str:
        digest = hmac.new(self.key, f"{purpose}:{value}".encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest[:18]).decode()

    def sign(self, purpose: str, value: str) -> str:
        return f"{value}.{self._mac(purpose, value)}"

    def derive(self, purpose: str, value: str) -> str:
        """A secret only this server can compute from ``value`` (the full 256-bit MAC)."""
        digest = hmac.new(self.key, f"{purpose}:{value}".encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).decode().rstrip("=")

    def unsign(self, purpose: str, signed: str | None) -> str | None:
        """The value, or None when the signature does not match (or there is nothing)."""
        if not signed or "." not in signed or len(signed) > 200:
            return None
        value, _, mac = signed.rpartition(".")
        return value if hmac.compare_digest(mac, self._mac(purpose, value)) else None


@dataclass(frozen=True)
class Identity:
    """What the server knows about the asker of one request."""

    client: str  # the signed browser id (new for a request without a valid cookie)
    address: str  # the network address (a classroom NAT puts many clients behind one)
    instructor: bool
    bearer: str | None  # a token from Authorization: Bearer, if any
    new_cookie: bool  # the response must set fl_client
    room: str | None = None  # the room this browser joined (its signed fl_room cookie)


class Gatekeeper:
    """Reads identities from requests and issues cookies; one per app."""

    def __init__(self, secret_key: str, admin_token: str, data_dir: Path) -> None:
        self._configured, self._data_dir = secret_key, data_dir
        self._signer: Signer | None = None
        self.admin_token = admin_token
        if not admin_token:
            log.warning("FOOLING_ADMIN_TOKEN is not set: instructor features (controlling any job, "
                        "hiding, pinning, full experiments) are off")

    @property
    def signer(self) -> Signer:
        if self._signer is None:  # on first use, not when the app object is built (e.g. at import)
            self._signer = Signer(load_secret(self._configured, self._data_dir))
        return self._signer

    @property
    def instructor_enabled(self) -> bool:
        return bool(self.admin_token)

    def is_admin_token(self, token: str | None) -> bool:
        return bool(self.admin_token and token and hmac.compare_digest(token.encode(), self.admin_token.encode()))

    def identify(self, headers: dict[str, str], cookies: dict[str, str], address: str) -> Identity:
        client = self.signer.unsign(CLIENT_COOKIE, cookies.get(CLIENT_COOKIE))
        new = client is None
        if new:
            client = secrets.token_urlsafe(12)
        auth = headers.get("authorization", "")
        bearer = auth[7:].strip() if auth[:7].lower() == "bearer " else None
        instructor = self.is_admin_token(bearer) or (
            self.instructor_enabled and self.signer.unsign(INSTRUCTOR_COOKIE, cookies.get(INSTRUCTOR_COOKIE)) == "1")
        signed_room = None if new else self.signer.unsign(ROOM_COOKIE, cookies.get(ROOM_COOKIE))
        room = None
        if signed_room and signed_room.startswith(f"{client}:"):  # copied to another browser it means nothing
            room = signed_room.partition(":")[2] or None
        return Identity(client, address, instructor, bearer, new, room)

    def control_token(self, job_id: str) -> str:
        """A job's control token, derived from its id with the key: the server keeps only its hash,
        yet can give the same token again to a retry that carries the same Idempotency-Key."""
        return self.signer.derive("control", job_id)

    def client_cookie(self, client: str, secure: bool) -> str:
        return _cookie(CLIENT_COOKIE, self.signer.sign(CLIENT_COOKIE, client), COOKIE_MAX_AGE, secure)

    def room_cookie(self, client: str, code: str, secure: bool) -> str:
        return _cookie(ROOM_COOKIE, self.signer.sign(ROOM_COOKIE, f"{client}:{code}"), COOKIE_MAX_AGE, secure)

    def instructor_cookie(self, secure: bool, max_age: int = 12 * 3600) -> str:
        return _cookie(INSTRUCTOR_COOKIE, self.signer.sign(INSTRUCTOR_COOKIE, "1"), max_age, secure)


def _cookie(name: str, value: str, max_age: int, secure: bool) -> str:
    return (f"{name}={value}; Path=/; Max-Age={max_age}; HttpOnly; SameSite=Lax"
            + ("; Secure" if secure else ""))
