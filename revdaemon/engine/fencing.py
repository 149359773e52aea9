"""Fencing: the leader's work is done under the leadership epoch it was given, and stops the moment it is over.

Theory of operation. A replica that takes leadership gets a `Term` (its epoch, when it began by the store's
clock). Workers and the executor pass the epoch to every store step that leads to an external write; once
another replica has taken leadership, such a step changes nothing and raises Fenced, and the worker stops at
once. The last fenced step before a request carrying writes is `Store.begin_send`. Between it and the moment
the request is written to the socket lie the rate limiter's wait, the client's retries and their backoff, or a
pause of the whole process (SIGSTOP, a frozen VM): `SendGuard` notes the time of the last check, and the
request hook below checks the epoch again when more than RECHECK_AFTER_SECONDS have passed, so a process that
wakes up after a takeover sends nothing.

The residual risk: a pause that begins after that last check and before the bytes leave (the hook's return,
httpx's and httpcore's own code, a connection being opened). Closing it needs the API to refuse a write that
carries an old fencing token, and neither API takes one [assumed: salesforce-api.md §2.2-2.3 documents no such
header on sObject or Collections writes; nue-api.md "Transport": no idempotency header on creates [doc], and
none for fencing]. So the new leader treats every write an older epoch may have sent as of unknown outcome:
looked up once the settle delay has passed since the takeover, never repeated blind.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import httpx
import structlog

from revdaemon.errors import Fenced
from revdaemon.store import Store
from revdaemon.store.records import Leadership

log = structlog.get_logger("revdaemon.fencing")

RECHECK_AFTER_SECONDS = 1.0  # a request leaving later than this after the last fenced step checks the epoch again


@dataclass
class Term:
    """One stretch of leadership of this process. Its clock is the store's: `since` as the store stamped it, carried
    forward by this box's monotonic clock, so a wrong wall clock on the box moves no lease or settle time. It counts
    the requests its sends let out (the writes, and a login one needed) and those the fence refused, for the log
    line that ends it."""

    leadership: Leadership
    taken_at: float = field(default_factory=time.monotonic)
    requests_sent: int = 0
    requests_refused: int = 0
    last_request_at: float | None = None  # time.monotonic()

    @property
    def epoch(self) -> int:
        return self.leadership.epoch

    @property
    def since(self) -> datetime:
        return self.leadership.since

    def now(self) -> datetime:
        """The store's time now, as far as this process can tell (a little behind it, never ahead)."""
        return self.since + timedelta(seconds=time.monotonic() - self.taken_at)

    def seconds_since_last_request(self) -> float | None:
        if self.last_request_at is None:
            return None
        return round(time.monotonic() - self.last_request_at, 3)


class SendGuard:
    """Around one call carrying writes, made right after its fenced `begin_send`."""

    def __init__(self, store: Store, term: Term) -> None:
        self._store = store
        self.term = term
        self._checked_at = time.monotonic()

    async def before_request(self, request: httpx.Request) -> None:
        if time.monotonic() - self._checked_at > RECHECK_AFTER_SECONDS:
            try:
                await self._store.check_epoch(self.term.epoch)
            except Fenced as exc:
                self.term.requests_refused += 1
                log.warning("send_refused_fenced", epoch=self.term.epoch, method=request.method,
                            path=request.url.path, detail=str(exc))
                raise
            self._checked_at = time.monotonic()
        self.term.requests_sent += 1
        self.term.last_request_at = time.monotonic()


_GUARD: ContextVar[SendGuard | None] = ContextVar("revdaemon_send_guard", default=None)


@contextmanager
def guarding(store: Store, term: Term | None) -> Iterator[None]:
    """Requests made inside (by this task and those it starts) pass `before_request` first. None: unfenced."""
    token = _GUARD.set(SendGuard(store, term) if term is not None else None)
    try:
        yield
    finally:
        _GUARD.reset(token)


async def before_request(request: httpx.Request) -> None:
    """httpx's request hook: the last moment before the request is written (after the limiter and each retry's
    backoff). Outside a guarded send it does nothing."""
    guard = _GUARD.get()
    if guard is not None:
        await guard.before_request(request)


# For httpx.AsyncClient(event_hooks=...): the daemon's one client for both APIs.
REQUEST_HOOKS: dict[str, list[Callable[..., Any]]] = {"request": [before_request]}
