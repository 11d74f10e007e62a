"""Console sessions: a browser signs in once with an admin token and then holds only a
random session id, in an HttpOnly, SameSite=Strict cookie that scripts cannot read. Every
change a session makes also carries its CSRF token (a header a cross-site form cannot set).
Sessions live in the admin process's memory: restarting it signs everyone out."""

from __future__ import annotations

import hmac
import secrets
import time

import msgspec

from gatewayd.config import AdminToken

COOKIE = "gatewayd_session"
CSRF_HEADER = b"x-csrf-token"
LIFETIME_S = 12 * 3600.0  # one on-call shift; then sign in again
MAX_SESSIONS = 10_000  # a flood of sign-ins evicts the oldest instead of growing without bound


class Session(msgspec.Struct, frozen=True):
    token: AdminToken
    csrf: str
    expires_at: float


class SessionView(msgspec.Struct, frozen=True):
    """What the page learns about its own session (never the token, never the session id)."""

    name: str
    role: str
    csrf: str
    expires_at: float


class Sessions:
    def __init__(self) -> None:
        self._by_id: dict[str, Session] = {}

    def open(self, token: AdminToken) -> tuple[str, Session]:
        now = time.time()
        self._forget_expired(now)
        while len(self._by_id) >= MAX_SESSIONS:
            del self._by_id[next(iter(self._by_id))]  # dicts keep insertion order: the oldest
        session_id = secrets.token_urlsafe(32)
        session = Session(token, secrets.token_urlsafe(32), now + LIFETIME_S)
        self._by_id[session_id] = session
        return session_id, session

    def find(self, session_id: str) -> Session | None:
        session = self._by_id.get(session_id)
        if session is None or session.expires_at < time.time():
            return None
        return session

    def close(self, session_id: str) -> None:
        self._by_id.pop(session_id, None)

    def _forget_expired(self, now: float) -> None:
        for key in [k for k, s in self._by_id.items() if s.expires_at < now]:
            del self._by_id[key]


def session_id_from(headers: list[tuple[bytes, bytes]]) -> str:
    """The session cookie's value, or empty."""
    for name, value in headers:
        if name != b"cookie":
            continue
        for part in value.decode("latin-1").split(";"):
            key, _, val = part.strip().partition("=")
            if key == COOKIE:
                return val
    return ""


def csrf_ok(session: Session, headers: list[tuple[bytes, bytes]]) -> bool:
    sent = next((v for k, v in headers if k == CSRF_HEADER), b"")
    return hmac.compare_digest(sent, session.csrf.encode())


def set_cookie(session_id: str, secure: bool) -> bytes:
    flags = "; Secure" if secure else ""
    return f"{COOKIE}={session_id}; Path=/; HttpOnly; SameSite=Strict; Max-Age={int(LIFETIME_S)}{flags}".encode()


def clear_cookie(secure: bool) -> bytes:
    flags = "; Secure" if secure else ""
    return f"{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0{flags}".encode()
