"""Alerts posted over a real loopback socket to a small Starlette webhook receiver."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import anyio
import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from revdaemon.ops.alerts import Alerter, AlertKind
from revdaemon.sandbox.server import ServerThread

pytestmark = pytest.mark.anyio


async def eventually(condition: Callable[[], bool], *, seconds: float = 5.0) -> None:
    """Wait (polling, bounded) until `condition()` holds; fail the test if it never does."""
    for _ in range(int(seconds / 0.01)):
        if condition():
            return
        await anyio.sleep(0.01)
    raise AssertionError("condition never held")


class Hook:
    """A Slack-like incoming webhook: /ok answers "ok", /broken answers 500; both keep what they got."""

    def __init__(self) -> None:
        self.received: list[tuple[str, str, Any]] = []  # (path, content-type, JSON body)
        self.app = Starlette(routes=[Route("/ok", self._ok, methods=["POST"]),
                                     Route("/broken", self._broken, methods=["POST"])])

    async def _ok(self, request: Request) -> PlainTextResponse:
        self.received.append(("/ok", request.headers["content-type"], await request.json()))
        return PlainTextResponse("ok")

    async def _broken(self, request: Request) -> PlainTextResponse:
        self.received.append(("/broken", request.headers["content-type"], await request.json()))
        return PlainTextResponse("internal error", status_code=500)


@pytest.fixture(scope="module")
def hook() -> Iterator[tuple[Hook, str]]:
    receiver = Hook()
    with ServerThread(receiver.app) as server:
        yield receiver, server.url


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as client:
        yield client


def closed_port_url() -> str:
    """A loopback URL nothing listens on, so connecting is refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/hook"


class TestWebhookOverHttp:
    async def test_receiver_gets_slack_json(self, hook: tuple[Hook, str], http: httpx.AsyncClient) -> None:
        """The receiver gets one application/json POST whose "text" carries the alert."""
        receiver, url = hook
        receiver.received.clear()
        alerter = Alerter(url + "/ok", http, instance="it-box", blocks=True)
        assert await alerter.send(AlertKind.CONFLICT, "opp-006A", "Amount differs", flow="quote_sync")
        assert len(receiver.received) == 1
        path, content_type, body = receiver.received[0]
        assert (path, content_type) == ("/ok", "application/json")
        assert "[it-box] Conflict needs a decision" in body["text"]
        assert body["blocks"][0]["text"]["text"] == body["text"]

    async def test_run_task_posts_dedupes_and_summarises(self, hook: tuple[Hook, str],
                                                         http: httpx.AsyncClient) -> None:
        """Through the run() task: a duplicate is dropped and alerts over the rate are held back."""
        receiver, url = hook
        receiver.received.clear()
        alerter = Alerter(url + "/ok", http, max_per_minute=2)
        async with anyio.create_task_group() as tg:
            await tg.start(alerter.run)
            alerter.alert(AlertKind.DEAD_LETTER, "k1", "x")
            alerter.alert(AlertKind.DEAD_LETTER, "k1", "x")  # duplicate
            alerter.alert(AlertKind.DEAD_LETTER, "k2", "x")
            alerter.alert(AlertKind.DEAD_LETTER, "k3", "x")  # over the rate
            await eventually(lambda: alerter.posted >= 2 and alerter.suppressed >= 1)
            tg.cancel_scope.cancel()
        assert len(receiver.received) == 2
        assert alerter.suppressed == 1

    async def test_500_does_not_raise(self, hook: tuple[Hook, str], http: httpx.AsyncClient) -> None:
        """A webhook answering 500 makes send() return False, nothing more."""
        _, url = hook
        alerter = Alerter(url + "/broken", http)
        assert await alerter.send(AlertKind.POLLER_FAILING, "nue.invoice", "timeout") is False
        assert alerter.failed_posts == 1

    async def test_refused_connection_does_not_raise(self, http: httpx.AsyncClient) -> None:
        """Nothing listening at the URL makes send() return False, nothing more."""
        alerter = Alerter(closed_port_url(), http, timeout_seconds=2)
        assert await alerter.send(AlertKind.DEAD_LETTER, "k1", "x") is False
        assert alerter.failed_posts == 1
