"""Faults that fire after a request was applied: the write is committed, only its answer goes wrong.

A timed-out or failed request may still have been applied. Each simulator's module docstring says whether
that is documented or assumed for its API; this module is the mechanism both share:

- `applied_drop`: the handler ran and committed, then the connection closes without a complete answer
  (a head and part of a body, as the Salesforce simulator's `drop` fault does, so the client sees a
  transport error and never gets a response).
- `applied_503` / `applied_504`: the handler committed, the client gets that 5xx error body instead.
- `applied_slow`: the handler committed at once (later reads see the record), the answer leaves only
  after `slow_seconds`, so a client with a shorter timeout gives up on a write that exists.

`LostAnswerMiddleware` sits right around the simulator's app. When its policy is not armed (every rate zero,
no counter or script left) it costs one attribute read per request. Otherwise a targeted request's answer
is held until the app is done; only a 2xx answer (an applied write) is eligible, and only then is a fault
drawn, so "the next N" means the next N applied writes. The kind fired is counted (`FiredCounts`) and put in
the request's scope, where `RequestLogMiddleware` records it as the log entry's `fault`.

Which requests are targeted: by default writes only (POST/PATCH/PUT/DELETE, less the simulator's read-only
POSTs); optionally only those matching a pattern `"[METHOD ]/glob"`, e.g. `"POST /orders"` or
`"/composite/sobjects*"`, matched with fnmatch (`*` also crosses `/`) against the simulator's API path.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Protocol

import anyio
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from revdaemon.sandbox.server import ADMIN_PREFIX, FAULT_SCOPE_KEY

DROP = "applied_drop"
ERROR_503 = "applied_503"
ERROR_504 = "applied_504"
SLOW = "applied_slow"
KINDS = (DROP, ERROR_503, ERROR_504, SLOW)
# Names a script (Nue's `applied_next`) may use for each kind.
SCRIPT_NAMES = {"drop": DROP, "503": ERROR_503, "504": ERROR_504, "slow": SLOW, "none": None,
                **{kind: kind for kind in KINDS}}
WRITE_METHODS = frozenset({"POST", "PATCH", "PUT", "DELETE"})
TRUNCATED_LENGTH = 4096  # the Content-Length a dropped answer promises and never delivers


class SimulatedDrop(Exception):
    """Raised after a truncated response so uvicorn closes the connection (the client sees a transport error)."""


class _QuietDrops(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], SimulatedDrop))


_QUIET_DROPS = _QuietDrops()


def quiet_drops() -> None:
    """Keep uvicorn from logging a simulated drop as an application error (idempotent)."""
    logging.getLogger("uvicorn.error").addFilter(_QUIET_DROPS)


async def send_truncated(send: Send, head: bytes = b'{"totalSize":', content_type: bytes = b"application/json",
                         status: int = 200) -> None:
    """A head promising TRUNCATED_LENGTH bytes and fewer of them; raise SimulatedDrop right after."""
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", content_type),
                            (b"content-length", str(max(TRUNCATED_LENGTH, len(head) + 1)).encode())]})
    await send({"type": "http.response.body", "body": head, "more_body": True})


def parse_patterns(patterns: Iterable[str]) -> tuple[tuple[str | None, str], ...]:
    """`"POST /orders"` -> ("POST", "/orders"); `"/orders*"` -> (None, "/orders*")."""
    parsed: list[tuple[str | None, str]] = []
    for pattern in patterns:
        if not isinstance(pattern, str) or not pattern.strip():
            raise ValueError(f"a path pattern is \"[METHOD ]/glob\", got {pattern!r}")
        method, _, glob = pattern.strip().rpartition(" ")
        if not glob.startswith("/"):
            raise ValueError(f"a path pattern's glob starts with '/', got {pattern!r}")
        parsed.append((method.strip().upper() or None, glob))
    return tuple(parsed)


@dataclass(frozen=True)
class Target:
    """Which requests the faults may hit. `path` is the simulator's API path (see `LostAnswerMiddleware`)."""

    writes_only: bool = True
    patterns: tuple[tuple[str | None, str], ...] = ()
    read_only_posts: tuple[str, ...] = ()  # globs of POSTs that only read (never targeted when writes_only)

    def matches(self, method: str, path: str) -> bool:
        if self.writes_only and (method not in WRITE_METHODS or (
                method == "POST" and any(fnmatchcase(path, glob) for glob in self.read_only_posts))):
            return False
        if not self.patterns:
            return True
        return any((want is None or want == method) and fnmatchcase(path, glob) for want, glob in self.patterns)


class FiredCounts:
    """How many of each kind fired since the last reset; safe across threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts = dict.fromkeys(KINDS, 0)

    def add(self, kind: str) -> None:
        with self._lock:
            self._counts[kind] += 1

    def as_dict(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)

    def clear(self) -> None:
        with self._lock:
            self._counts = dict.fromkeys(KINDS, 0)


def draw_kind(roll: float, rates: Iterable[tuple[str, float]]) -> str | None:
    """One uniform draw split across the kinds' rates in order (their sum is at most 1)."""
    edge = 0.0
    for kind, rate in rates:
        edge += rate
        if roll < edge:
            return kind
    return None


class Policy(Protocol):
    """What a simulator's faults object offers the middleware."""

    @property
    def applied_armed(self) -> bool: ...  # False: pass everything through untouched

    @property
    def applied_slow_seconds(self) -> float: ...

    def applied_targets(self, method: str, path: str) -> bool: ...

    def draw_applied(self) -> str | None: ...  # called once per applied (2xx) targeted request; counts it


ErrorSender = Callable[[Send, int], Awaitable[None]]


class LostAnswerMiddleware:
    """Pure ASGI: runs the app, then, for a targeted applied request, maybe loses or delays its answer.

    `api_path(path)` maps the ASGI path to the one patterns match (None: never targeted), and
    `send_error(send, status)` writes the simulator's 503/504 body.
    """

    def __init__(self, app: ASGIApp, policy: Policy, send_error: ErrorSender,
                 api_path: Callable[[str], str | None] = lambda path: path) -> None:
        self.app = app
        self.policy = policy
        self.send_error = send_error
        self.api_path = api_path
        quiet_drops()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not self.policy.applied_armed or scope["type"] != "http" or scope["path"].startswith(ADMIN_PREFIX):
            await self.app(scope, receive, send)
            return
        path = self.api_path(scope["path"])
        if path is None or not self.policy.applied_targets(scope["method"], path):
            await self.app(scope, receive, send)
            return
        held: list[Message] = []

        async def hold(message: Message) -> None:
            held.append(message)

        try:
            await self.app(scope, receive, hold)
        except Exception:
            for message in held:  # e.g. a crash handler's 500, sent before the error propagates
                await send(message)
            raise
        status = held[0]["status"] if held and held[0]["type"] == "http.response.start" else 500
        kind = self.policy.draw_applied() if 200 <= status < 300 else None
        if kind is not None:
            scope[FAULT_SCOPE_KEY] = kind
        if kind == DROP:
            await send_truncated(send, b'{"')
            raise SimulatedDrop("answer lost after the request was applied (fault injection)")
        if kind in (ERROR_503, ERROR_504):
            await self.send_error(send, 503 if kind == ERROR_503 else 504)
            return
        if kind == SLOW:
            await anyio.sleep(self.policy.applied_slow_seconds)
        for message in held:
            await send(message)
