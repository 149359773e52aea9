"""What stands before the API: injected faults (429, 5xx, latency), then the `nue-api-key` check; and
what comes after it: faults on a request already applied (a lost, 5xx or late answer, lost_answers.py).

Pure ASGI middleware, so the per-request cost stays small. Admin paths pass through untouched.

The after-apply faults model that a timed-out or failed request may still have been applied [assumed:
nue-api.md documents no such behaviour either way, and no idempotency key on creates; any HTTP API commits
before its answer travels, so a client must expect it].
"""

from __future__ import annotations

import asyncio
import random
import threading
from collections import deque
from collections.abc import Iterable

from starlette.types import ASGIApp, Receive, Scope, Send

from revdaemon.sandbox import lost_answers
from revdaemon.sandbox.nue import wire
from revdaemon.sandbox.nue.responses import send_error, send_raw
from revdaemon.sandbox.nue.settings import APPLIED_RATES, NueSimSettings
from revdaemon.sandbox.server import ADMIN_PREFIX

READ_ONLY_POSTS = ("/async/graphql", "/cpq/quotes:preview")
API_KEY = wire.API_KEY_HEADER.encode()


class Faults:
    """Rates from the settings, drawn from a seeded generator in arrival order, plus a script of the next
    statuses to return (for tests that need one exact fault).

    After-apply faults (lost_answers.Policy) have their own generator, drawn once per applied targeted
    request, and their own script (`script_applied`); `fired` counts what they did."""

    def __init__(self, settings: NueSimSettings) -> None:
        self.settings = settings
        self._rng = random.Random(f"nue-faults-{settings.seed}")
        self._script: deque[int] = deque()
        self._lock = threading.Lock()
        self._applied_rng = random.Random(f"nue-applied-{settings.seed}")
        self._applied_script: deque[str | None] = deque()
        self._target_key: tuple[bool, tuple[str, ...]] | None = None
        self._target = lost_answers.Target()
        self.fired = lost_answers.FiredCounts()

    def script(self, statuses: list[int]) -> None:
        with self._lock:
            self._script.extend(statuses)

    def script_applied(self, kinds: Iterable[object]) -> None:
        """The next applied targeted requests get these, in order: "drop", 503, 504, "slow" or "none"."""
        try:
            parsed = [lost_answers.SCRIPT_NAMES[str(kind)] for kind in kinds]
        except KeyError as exc:
            raise ValueError(f"applied_next: one of {sorted(lost_answers.SCRIPT_NAMES)}, got {exc}") from None
        with self._lock:
            self._applied_script.extend(parsed)

    def reset(self) -> None:
        with self._lock:
            self._script.clear()
            self._rng = random.Random(f"nue-faults-{self.settings.seed}")
            self._applied_script.clear()
            self._applied_rng = random.Random(f"nue-applied-{self.settings.seed}")
        self.fired.clear()

    # --- after the request is applied (lost_answers.Policy) ------------------------------------------------
    @property
    def applied_armed(self) -> bool:
        s = self.settings
        return bool(self._applied_script or s.applied_drop_rate or s.applied_503_rate or s.applied_504_rate
                    or s.applied_slow_rate)

    @property
    def applied_slow_seconds(self) -> float:
        return float(self.settings.applied_slow_seconds)

    def applied_targets(self, method: str, path: str) -> bool:
        key = (self.settings.applied_writes_only, tuple(self.settings.applied_paths))
        if key != self._target_key:  # the settings changed (admin endpoint): rebuild once
            self._target = lost_answers.Target(key[0], lost_answers.parse_patterns(key[1]), READ_ONLY_POSTS)
            self._target_key = key
        return self._target.matches(method, path)

    def draw_applied(self) -> str | None:
        with self._lock:
            if self._applied_script:
                kind = self._applied_script.popleft()
            else:
                rates = [(kind, getattr(self.settings, name)) for kind, name in zip(lost_answers.KINDS, APPLIED_RATES,
                                                                                    strict=True)]
                kind = lost_answers.draw_kind(self._applied_rng.random(), rates) if any(r for _, r in rates) else None
        if kind is not None:
            self.fired.add(kind)
        return kind

    def draw(self) -> int | None:
        s = self.settings
        with self._lock:
            if self._script:
                return self._script.popleft()
            if not (s.rate_429 or s.error_rate):
                return None
            roll = self._rng.random()
            if roll < s.rate_429:
                return 429
            if roll < s.rate_429 + s.error_rate:
                return self._rng.choice((500, 502, 503))
        return None


class GateMiddleware:
    def __init__(self, app: ASGIApp, settings: NueSimSettings, faults: Faults) -> None:
        self.app = app
        self.settings = settings
        self.faults = faults

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith(ADMIN_PREFIX):
            await self.app(scope, receive, send)
            return
        s = self.settings
        if s.latency_ms:
            await asyncio.sleep(s.latency_ms / 1000)
        fault = self.faults.draw()
        if fault == 429:
            await send_error(send, s, 429, "rate limit exceeded",
                             {wire.RETRY_AFTER_HEADER: str(s.retry_after_seconds)})
            return
        if fault == 502:
            await send_raw(send, 502, wire.BAD_GATEWAY_HTML, "text/html")  # a gateway's page, not JSON
            return
        if fault is not None:
            await send_error(send, s, fault, "injected fault")
            return
        key = next((v for k, v in scope["headers"] if k == API_KEY), None)
        text = key.decode("latin-1") if key is not None else None
        if text is None or (text != s.api_key and text not in s.read_only_api_keys):
            await send_error(send, s, 401, "missing or invalid nue-api-key")
            return
        if (text != s.api_key and scope["method"] not in ("GET", "HEAD")
                and scope["path"] not in READ_ONLY_POSTS):
            await send_error(send, s, 403, "this API key may only read")
            return
        await self.app(scope, receive, send)
