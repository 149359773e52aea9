"""The go-live lines of `check --online` that probe over HTTP: the webhook's public URL and the clock."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from email.utils import format_datetime

import httpx
import pytest

from revdaemon.config import Settings
from revdaemon.engine.supervisor import default_flows
from revdaemon.listener.app import PING_TYPE
from revdaemon.listener.signature import verify
from revdaemon.setup.golive import clock_check, webhook_check, webhook_events
from tests.unit.test_config import MINIMAL

pytestmark = pytest.mark.anyio

PUBLIC = "https://sync.example.com"
NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)


def settings() -> Settings:
    return Settings.model_validate(MINIMAL)


def client(answers: dict[str, httpx.Response | Exception],
           sent: list[httpx.Request] | None = None) -> httpx.AsyncClient:
    def handle(request: httpx.Request) -> httpx.Response:
        if sent is not None:
            sent.append(request)
        answer = answers[f"{request.url.scheme}://{request.url.host}"]
        if isinstance(answer, Exception):
            raise answer
        return answer
    return httpx.AsyncClient(transport=httpx.MockTransport(handle))


def test_the_events_to_register_are_those_the_enabled_flows_take_from_webhooks() -> None:
    events = webhook_events(default_flows(settings()))
    assert "invoice.activated" in events and "order.activated" in events
    assert "opportunity.closed_won" not in events and "renewal.due" not in events  # revdaemon's own sources


async def test_without_a_public_url_the_line_says_what_to_register_and_that_reach_was_not_tried() -> None:
    async with client({}) as http:
        line = await webhook_check(settings(), default_flows(settings()), None, http)
    assert line.ok and "https://<public host>/webhooks/nue" in line.detail and "not tried" in line.detail


async def test_a_public_url_reaching_this_daemon_is_ok_and_another_daemon_is_a_problem() -> None:
    local = "http://127.0.0.1"
    here = httpx.Response(200, json={"ready": True, "daemon": "d-1"})
    sent: list[httpx.Request] = []
    async with client({local: here, PUBLIC: httpx.Response(200, json={"daemon": "d-1"})}, sent) as http:
        reached = await webhook_check(settings(), default_flows(settings()), PUBLIC, http)
    [ping] = [request for request in sent if request.url.host == "sync.example.com"]
    assert ping.method == "POST" and ping.url.path == "/webhooks/nue"
    secret = MINIMAL["nue"]["webhook_secret"]
    verify(ping.headers["nue-signature"], ping.content, secret, now=time.time(), tolerance_seconds=300)
    assert json.loads(ping.content)["type"] == PING_TYPE
    async with client({local: here, PUBLIC: httpx.Response(200, json={"daemon": "d-2"})}) as http:
        elsewhere = await webhook_check(settings(), default_flows(settings()), PUBLIC, http)
    async with client({local: here, PUBLIC: httpx.ConnectError("no route")}) as http:
        unreachable = await webhook_check(settings(), default_flows(settings()), PUBLIC, http)
    assert reached.ok and f"{PUBLIC}/webhooks/nue" in reached.detail
    assert not elsewhere.ok and "not from this box's daemon" in elsewhere.detail
    assert not unreachable.ok and "cannot be reached" in unreachable.detail and unreachable.fix
    async with client({local: here, PUBLIC: httpx.Response(401, json={"error": "bad signature"})}) as http:
        refused = await webhook_check(settings(), default_flows(settings()), PUBLIC, http)
    assert not refused.ok and "was refused" in refused.detail


async def test_a_clock_minutes_off_salesforce_is_a_problem_seconds_are_not() -> None:
    login = "https://acme.my.salesforce.com"
    answer = httpx.Response(200, headers={"date": format_datetime(NOW, usegmt=True)})
    async with client({login: answer}) as http:
        close = await clock_check(settings(), http, now=lambda: NOW.timestamp() + 2)
        off = await clock_check(settings(), http, now=lambda: NOW.timestamp() - 300)
    assert close.ok and close.detail == "2 s ahead of Salesforce"
    assert not off.ok and off.detail == "300 s behind Salesforce" and "chrony" in off.fix
