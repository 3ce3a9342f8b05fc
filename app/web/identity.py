"""Who is asking: a signed per-browser client id, the instructor, and job control tokens.

- Every browser gets a signed, HttpOnly, SameSite=Lax ``fl_client`` cookie on its first visit. The
  id inside it is what per-client caps count and what owns the jobs that browser starts; a client
  cannot pick it (an unsigned or forged value is replaced).
- A request without a valid cookie is *anonymous*: it counts against one bucket per network
  address (per /64 for IPv6), ``anon:<address>``, which has the caps of a single client, so a
  script that drops its cookie gains nothing by it. An anonymous id owns nothing by itself: every
  cookie-less script behind one NAT shares it, so control needs the job's control token.
- The instructor proves themselves with ``Authorization: Bearer <FOOLING_ADMIN_TOKEN>`` or with the
  signed ``fl_instructor`` cookie that /instructor sets after taking the token once. The cookie
  names a server-side session that ends at sign-out, at its expiry, and when the admin token
  changes (it is kept with a fingerprint of the token it was opened with).
- A job's creator also gets a ``control_token`` (only its hash is stored; it is an HMAC of the job
  id, so a retried POST can be given it again), for REST clients that keep no cookies:
  ``Authorization: Bearer <control_token>``.

Signing is HMAC-SHA256 with FOOLING_SECRET_KEY, or a key generated once and kept in the data dir.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import logging
import os
import secrets
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from app.jobs.store import connect

log = logging.getLogger(__name__)

CLIENT_COOKIE = "fl_client"
INSTRUCTOR_COOKIE = "fl_instructor"
ROOM_COOKIE = "fl_room"  # the classroom room this browser joined (signed: a code, bound to the client)
COOKIE_MAX_AGE = 400 * 24 * 3600  # the most browsers keep a cookie (a school year and more)


def load_secret(configured: str, data_dir: Path) -> tuple[bytes, bool]:
    """FOOLING_SECRET_KEY if set; else a random key made once and kept (0600) in the data dir,
    so cookies survive restarts. Also: was the key made just now?"""
    if configured:
        return configured.encode(), False
    path = Path(data_dir) / "secret_key"
    try:
        return path.read_bytes().strip(), False
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    key = secrets.token_urlsafe(48).encode()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process made it first: use theirs
        return path.read_bytes().strip(), False
    with os.fdopen(fd, "wb") as f:
        f.write(key)
    return key, True


def in_container() -> bool:
    return Path("/.dockerenv").exists() or Path("/run/.containerenv").exists() or \
        "KUBERNETES_SERVICE_HOST" in os.environ


def on_volume(path: Path) -> bool:
    """Is ``path`` on a mounted volume (anything mounted below /), so it outlives a container?"""
    p = Path(path).resolve()
    return any(os.path.ismount(q) for q in (p, *p.parents) if q != Path("/"))


def key_warnings(configured: str, data_dir: Path, made_now: bool) -> list[str]:
    """What an operator must hear about the signing key: every earlier cookie is void, or the key
    (and the data) will not survive the container or the machine's next boot."""
    out = []
    if made_now:
        out.append(f"FOOLING_SECRET_KEY is not set and {data_dir} held no key: a new signing key was made at this "
                   "start, so every cookie from before (students' identities and rooms, instructor sign-ins) is "
                   "void. Set FOOLING_SECRET_KEY to keep them across restarts.")
    resolved = Path(data_dir).resolve()
    if not configured and (str(resolved).startswith(("/tmp/", "/var/tmp/", "/dev/shm/"))
                           or (in_container() and not on_volume(resolved))):
        out.append(f"the signing key and all data sit in {resolved}, which will not survive (a temporary folder, "
                   "or a container's own disk): mount a volume there (FOOLING_DATA_DIR) and set "
                   "FOOLING_SECRET_KEY.")
    return out


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


ANONYMOUS = "anon:"


def address_bucket(address: str) -> str:
    """The network an anonymous client is counted by: its IPv4 address, or its IPv6 /64 (one
    household or classroom network gets a whole /64, so single addresses in it are free to pick)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address  # not an IP (a test client, a Unix socket): as it is
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


@dataclass(frozen=True)
class Identity:
    """What the server knows about the asker of one request."""

    client: str  # the signed browser id, or ``anon:<network>`` for a request without a valid cookie
    address: str  # the network (an IPv4 address, an IPv6 /64): a classroom NAT puts many clients behind one
    instructor: bool
    bearer: str | None  # a token from Authorization: Bearer, if any
    new_cookie: str | None  # a fresh id the response sets as fl_client (no valid cookie came)
    room: str | None = None  # the room this browser joined (its signed fl_room cookie)

    @property
    def anonymous(self) -> bool:
        """No cookie: counted with every other cookie-less request from its network, owner of nothing."""
        return self.client.startswith(ANONYMOUS)

    def owns(self, owner: str | None) -> bool:
        """Is ``owner`` (a record's client id) this browser? Never for an anonymous asker."""
        return bool(owner) and not self.anonymous and hmac.compare_digest(owner, self.client)


class Sessions:
    """Instructor sign-ins, kept server-side (SQLite, in the data dir) so that sign-out ends one for
    good, even for a copy of its cookie. A cache holds the live ones: no query per request."""

    SCHEMA = ("CREATE TABLE IF NOT EXISTS sessions (id TEXT PRIMARY KEY, token_fp TEXT NOT NULL, "
              "expires REAL NOT NULL)")

    def __init__(self, data_dir: Path) -> None:
        self._path, self._db = Path(data_dir) / "sessions.sqlite3", None
        self._cache: dict[str, tuple[str, float]] = {}
        self._lock = threading.Lock()

    def _conn(self):
        if self._db is None:  # on first use, not when the app object is built
            self._db = connect(self._path, self.SCHEMA)
        return self._db

    def open(self, token_fp: str, seconds: float) -> str:
        sid, expires = secrets.token_urlsafe(18), time.time() + seconds
        with self._lock:
            db = self._conn()
            db.execute("DELETE FROM sessions WHERE expires<?", (time.time(),))
            db.execute("INSERT INTO sessions (id, token_fp, expires) VALUES (?,?,?)", (sid, token_fp, expires))
            self._cache[sid] = (token_fp, expires)
        return sid

    def valid(self, sid: str, token_fp: str) -> bool:
        with self._lock:
            held = self._cache.get(sid)
            if held is None:
                row = self._conn().execute("SELECT token_fp, expires FROM sessions WHERE id=?", (sid,)).fetchone()
                if row is None:
                    return False
                held = self._cache[sid] = (row[0], row[1])
        return hmac.compare_digest(held[0], token_fp) and held[1] > time.time()

    def close(self, sid: str) -> None:
        with self._lock:
            self._cache.pop(sid, None)
            self._conn().execute("DELETE FROM sessions WHERE id=?", (sid,))


class Throttle:
    """At most ``tries`` failures per ``window_s`` from one network (``Identity.address``), then 429:
    wrong instructor tokens, room codes that lead nowhere."""

    def __init__(self, tries: int = 5, window_s: float = 300.0) -> None:
        self.tries, self.window_s = tries, window_s
        self._failures: dict[str, list[float]] = {}
        self._lock = threading.Lock()

    def attempt(self, address: str) -> int:
        """Count a try from this network, as failed until ``succeeded`` says otherwise (so that
        tries sent all at once count too); seconds until it may try again, 0 to go ahead now."""
        now, key = time.time(), address
        with self._lock:
            recent = [t for t in self._failures.get(key, []) if now - t < self.window_s]
            if len(recent) >= self.tries:
                self._failures[key] = recent
                return int(recent[0] + self.window_s - now) + 1
            if len(self._failures) > 10_000:  # bounded: drop the networks with nothing recent
                self._failures = {k: v for k, v in self._failures.items() if v and now - v[-1] < self.window_s}
            self._failures[key] = [*recent, now]
        return 0

    def succeeded(self, address: str) -> None:
        with self._lock:
            tries = self._failures.get(address)
            if tries:
                tries.pop()


class Gatekeeper:
    """Reads identities from requests and issues cookies; one per app."""

    def __init__(self, secret_key: str, admin_token: str, data_dir: Path, session_s: float = 12 * 3600.0) -> None:
        self._configured, self._data_dir = secret_key, data_dir
        self._signer: Signer | None = None
        self.admin_token = admin_token
        self.session_s = session_s
        self.sessions = Sessions(data_dir)
        self.throttle = Throttle()  # wrong instructor tokens
        self.room_misses = Throttle(tries=60, window_s=300.0)  # room codes that lead nowhere
        self.warnings: list[str] = []  # about the signing key, once it is loaded (shown on /instructor)
        if not admin_token:
            log.warning("FOOLING_ADMIN_TOKEN is not set: instructor features (controlling any job, "
                        "hiding, pinning, full experiments) are off")

    @property
    def signer(self) -> Signer:
        if self._signer is None:  # on first use, not when the app object is built (e.g. at import)
            key, made_now = load_secret(self._configured, self._data_dir)
            self.warnings = key_warnings(self._configured, self._data_dir, made_now)
            for warning in self.warnings:
                log.warning("%s", warning)
            self._signer = Signer(key)
        return self._signer

    @property
    def instructor_enabled(self) -> bool:
        return bool(self.admin_token)

    def is_admin_token(self, token: str | None) -> bool:
        return bool(self.admin_token and token and hmac.compare_digest(token.encode(), self.admin_token.encode()))

    def identify(self, headers: dict[str, str], cookies: dict[str, str], address: str) -> Identity:
        client = self.signer.unsign(CLIENT_COOKIE, cookies.get(CLIENT_COOKIE))
        new = None
        if client is None:
            # This request counts with its network's cookie-less requests; the browser gets an id
            # of its own for the next one.
            new, client = secrets.token_urlsafe(12), ANONYMOUS + address_bucket(address)
        auth = headers.get("authorization", "")
        bearer = auth[7:].strip() if auth[:7].lower() == "bearer " else None
        sid = self.signer.unsign(INSTRUCTOR_COOKIE, cookies.get(INSTRUCTOR_COOKIE)) if self.instructor_enabled else None
        instructor = self.is_admin_token(bearer) or bool(sid and self.sessions.valid(sid, self._token_fp()))
        signed_room = None if new else self.signer.unsign(ROOM_COOKIE, cookies.get(ROOM_COOKIE))
        room = None
        if signed_room and signed_room.startswith(f"{client}:"):  # copied to another browser it means nothing
            room = signed_room.partition(":")[2] or None
        return Identity(client, address_bucket(address), instructor, bearer, new, room)

    def control_token(self, job_id: str) -> str:
        """A job's control token, derived from its id with the key: the server keeps only its hash,
        yet can give the same token again to a retry that carries the same Idempotency-Key."""
        return self.signer.derive("control", job_id)

    def client_cookie(self, client: str, secure: bool) -> str:
        return _cookie(CLIENT_COOKIE, self.signer.sign(CLIENT_COOKIE, client), COOKIE_MAX_AGE, secure)

    def room_cookie(self, client: str, code: str, secure: bool) -> str:
        return _cookie(ROOM_COOKIE, self.signer.sign(ROOM_COOKIE, f"{client}:{code}"), COOKIE_MAX_AGE, secure)

    def _token_fp(self) -> str:
        """What binds a session to the admin token it was opened with (a new token ends it)."""
        return self.signer.derive("admin-token", self.admin_token)[:22]

    def sign_in(self, secure: bool) -> str:
        """A new instructor session; the cookie that carries it."""
        sid = self.sessions.open(self._token_fp(), self.session_s)
        return _cookie(INSTRUCTOR_COOKIE, self.signer.sign(INSTRUCTOR_COOKIE, sid), int(self.session_s), secure)

    def sign_out(self, cookies: dict[str, str]) -> None:
        sid = self.signer.unsign(INSTRUCTOR_COOKIE, cookies.get(INSTRUCTOR_COOKIE))
        if sid:
            self.sessions.close(sid)


def _cookie(name: str, value: str, max_age: int, secure: bool) -> str:
    return (f"{name}={value}; Path=/; Max-Age={max_age}; HttpOnly; SameSite=Lax"
            + ("; Secure" if secure else ""))
