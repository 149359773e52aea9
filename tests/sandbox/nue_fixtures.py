"""Helpers for the Nue simulator tests: a running simulator, an HTTP client, a webhook receiver.

Tests talk to the simulator with plain httpx over real sockets, as nue-api.md's examples do.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from revdaemon.sandbox.nue import NueSim, NueSimSettings
from revdaemon.sandbox.seed import build_seed
from revdaemon.sandbox.server import ServerThread

API_KEY = "sandbox-nue-api-key"
FAST_WEBHOOKS = {"webhook_retry_backoff_seconds": 0.01, "webhook_delay_seconds": 0.05,
                 "webhook_reorder_hold_seconds": 0.2}


@dataclass
class Running:
    sim: NueSim
    url: str
    client: httpx.Client

    def ok(self, response: httpx.Response) -> Any:
        """The `data` of a success envelope, after checking the envelope itself."""
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["status"] == "success"
        assert isinstance(body["warnings"], list)
        return body["data"]


@contextmanager
def running(**settings: Any) -> Iterator[Running]:
    sim = NueSim(NueSimSettings(**{**FAST_WEBHOOKS, **settings}), build_seed(settings.get("seed", 1)))
    try:
        with ServerThread(sim.app) as server, httpx.Client(
            base_url=server.url, headers={"nue-api-key": API_KEY}, timeout=10
        ) as client:
            yield Running(sim=sim, url=server.url, client=client)
    finally:
        sim.close()


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def event(self) -> dict[str, Any]:
        return json.loads(self.body)  # type: ignore[no-any-return]


@dataclass
class Receiver:
    """A webhook target: records every request; answers the statuses in `script` first, then 200."""

    script: list[int] = field(default_factory=list)
    received: list[Received] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def app(self) -> Starlette:
        async def hook(request: Request) -> Response:
            body = await request.body()
            with self.lock:
                self.received.append(Received(request.url.path, dict(request.headers), body))
                status = self.script.pop(0) if self.script else 200
            return Response(status_code=status)

        return Starlette(routes=[Route("/{path:path}", hook, methods=["POST"])])

    def events(self) -> list[dict[str, Any]]:
        with self.lock:
            return [r.event for r in self.received]


@contextmanager
def receiver(script: list[int] | None = None) -> Iterator[tuple[Receiver, str]]:
    target = Receiver(script=list(script or []))
    with ServerThread(target.app()) as server:
        yield target, server.url + "/hooks/nue"
