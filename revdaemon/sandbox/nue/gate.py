"""What stands before the API: injected faults (429, 5xx, latency), then the `nue-api-key` check.

Pure ASGI middleware, so the per-request cost stays small. Admin paths pass through untouched.
"""

from __future__ import annotations

import asyncio
import random
import threading
from collections import deque

from starlette.types import ASGIApp, Receive, Scope, Send

from revdaemon.sandbox.nue import wire
from revdaemon.sandbox.nue.responses import send_error, send_raw
from revdaemon.sandbox.nue.settings import NueSimSettings
from revdaemon.sandbox.server import ADMIN_PREFIX

READ_ONLY_POSTS = ("/async/graphql", "/cpq/quotes:preview")
API_KEY = wire.API_KEY_HEADER.encode()


class Faults:
    """Rates from the settings, drawn from a seeded generator in arrival order, plus a script of the next
    statuses to return (for tests that need one exact fault)."""

    def __init__(self, settings: NueSimSettings) -> None:
        self.settings = settings
        self._rng = random.Random(f"nue-faults-{settings.seed}")
        self._script: deque[int] = deque()
        self._lock = threading.Lock()

    def script(self, statuses: list[int]) -> None:
        with self._lock:
            self._script.extend(statuses)

    def reset(self) -> None:
        with self._lock:
            self._script.clear()
            self._rng = random.Random(f"nue-faults-{self.settings.seed}")

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
