"""The daily sweep's Nue half (issue 22 §3): activated orders that no poll or webhook delivered are queued once,
under the poll's own key; what a poll already stored, drafts, and orders before the lookback add nothing."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from revdaemon.engine.pollers import NuePoller
from revdaemon.engine.sweep import ActivatedOrderSweep
from revdaemon.sandbox.runner import Sandbox
from revdaemon.store.records import utcnow
from tests.integration.engine_fixtures import engine

pytestmark = pytest.mark.anyio


async def test_activated_orders_no_cursor_saw_are_queued_once(sandbox: Sandbox, tmp_path: Path) -> None:
    customer = sandbox.nue.scenario.create_customer(0)["id"]
    polled = sandbox.nue.scenario.create_and_activate_order(customer)["order"]["id"]
    async with engine(sandbox, tmp_path) as e:
        # the poll delivered the first order; two more are activated after it, one committed a day late
        await NuePoller("Order", e.nue, e.store).run_once()
        missed = sandbox.nue.scenario.create_and_activate_order(customer)["order"]["id"]
        late = sandbox.nue.scenario.create_and_activate_order(customer)["order"]["id"]
        sandbox.nue.scenario.commit_late("Order", late, minutes_ago=24 * 60)
        draft = sandbox.nue.scenario.create_order(customer)["id"]
        sweep = ActivatedOrderSweep(e.nue, e.store, won_since=(utcnow() - timedelta(days=30)).date())
        assert await sweep.run_once() == 2
        queued = {ev.payload["data"]["id"] for ev in await e.store.list_events(limit=50)}
        assert {missed, late} <= queued and draft not in queued and polled in queued
        assert await sweep.run_once() == 0  # the same states of the same orders: nothing new


async def test_orders_before_the_cut_off_are_left_alone(sandbox: Sandbox, tmp_path: Path) -> None:
    customer = sandbox.nue.scenario.create_customer(0)["id"]
    old = sandbox.nue.scenario.create_and_activate_order(customer)["order"]["id"]
    sandbox.nue.scenario.commit_late("Order", old, minutes_ago=3 * 24 * 60)
    async with engine(sandbox, tmp_path) as e:
        sweep = ActivatedOrderSweep(e.nue, e.store, won_since=(utcnow() - timedelta(days=1)).date())
        assert await sweep.run_once() == 0
