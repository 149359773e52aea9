"""Who may use the console: token login, server-side sessions, CSRF tokens and the failed-login limit.

Tokens are compared as SHA-256 digests with `hmac.compare_digest`, so neither their length nor the
position of the first wrong character shows in the time an answer takes. Sessions live in this process
only (a restart logs everyone out); the cookie holds nothing but a random session id.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

SESSION_COOKIE = "revdaemon_console"


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8")).digest()


class Admins:
    """The configured admins, kept only as token digests."""

    def __init__(self, tokens: Mapping[str, str]) -> None:
        self._digests = {name: _digest(token) for name, token in tokens.items()}

    def who(self, token: str) -> str | None:
        """The admin whose token this is, or None. Every digest is compared, match or not."""
        given = _digest(token)
        found = None
        for name, digest in self._digests.items():
            if hmac.compare_digest(given, digest):
                found = name
        return found


@dataclass
class Session:
    actor: str
    csrf: str
    expires_at: float
    # What the last action did, shown once on the next page: kept here, never in the URL, so a link cannot make
    # the console show its text as a notice.
    flash: str | None = None

    def take_flash(self) -> str | None:
        message, self.flash = self.flash, None
        return message


@dataclass
class Sessions:
    lifetime_seconds: float
    clock: Callable[[], float] = time.monotonic
    _by_id: dict[str, Session] = field(default_factory=dict)

    def start(self, actor: str) -> str:
        self._expire()
        session_id = secrets.token_urlsafe(32)
        self._by_id[session_id] = Session(actor=actor, csrf=secrets.token_urlsafe(32),
                                          expires_at=self.clock() + self.lifetime_seconds)
        return session_id

    def get(self, session_id: str | None) -> Session | None:
        if not session_id:
            return None
        session = self._by_id.get(session_id)
        if session is None or session.expires_at <= self.clock():
            self._by_id.pop(session_id, None)
            return None
        return session

    def end(self, session_id: str | None) -> None:
        if session_id:
            self._by_id.pop(session_id, None)

    def _expire(self) -> None:
        now = self.clock()
        for session_id in [k for k, s in self._by_id.items() if s.expires_at <= now]:
            del self._by_id[session_id]


def csrf_ok(session: Session, given: str | None) -> bool:
    return bool(given) and hmac.compare_digest(session.csrf.encode(), str(given).encode())


@dataclass
class LoginLimiter:
    """At most `per_minute` failed logins per client address in any 60 s; then refused until they age out."""

    per_minute: int
    clock: Callable[[], float] = time.monotonic
    _failures: dict[str, deque[float]] = field(default_factory=dict)

    def blocked(self, client: str) -> float:
        """Seconds until `client` may try again; 0 when it may now."""
        window = self._recent(client)
        if len(window) < self.per_minute:
            return 0.0
        return max(0.0, window[0] + 60.0 - self.clock())

    def failed(self, client: str) -> None:
        self._failures.setdefault(client, deque()).append(self.clock())

    def _recent(self, client: str) -> deque[float]:
        window = self._failures.get(client)
        if window is None:
            return deque()
        while window and window[0] <= self.clock() - 60.0:
            window.popleft()
        if not window:
            del self._failures[client]  # quiet clients are forgotten: a scan of addresses cannot grow this
        return window
