"""One API budget across both systems, against the sandbox: under a tight daily allocation real-time work
drains while backfill waits."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from revdaemon import service
from revdaemon.domain.budget import Priority
from revdaemon.engine.pollers import PollStatus, SalesforceClosedWonPoller
from revdaemon.errors import Throttled
from revdaemon.ops.metrics import Metrics
from revdaemon.sandbox.runner import Sandbox
from revdaemon.store.states import EventStatus
from tests.integration.engine_fixtures import engine, webhook

pytestmark = pytest.mark.anyio
SINCE = datetime(2020, 1, 1, tzinfo=UTC)


def queries(sandbox: Sandbox) -> int:
    return sum(1 for e in sandbox.salesforce.log.entries() if e.path.endswith("/query") or "/query/" in e.path)


def linked_subscription(sandbox: Sandbox, index: int) -> dict[str, object]:
    scenario = sandbox.nue.scenario
    customer = scenario.create_customer(index)
    scenario.create_and_activate_order(customer["id"], opportunity=index)
    return next(dict(s) for s in sandbox.nue.store.subscriptions.values() if s["customerId"] == customer["id"])


async def test_realtime_drains_while_backfill_waits(sandbox: Sandbox, tmp_path: Path) -> None:
    """13,000 of the org's 15,000 calls spent (the engine's share is 0.9: 4 % of its 13,500 left): webhook
    events still drain, a poll still runs, a backfill's bulk read is not even sent; once headroom returns the
    same backfill proceeds."""
    subscriptions = [linked_subscription(sandbox, i) for i in range(3)]
    sandbox.salesforce.close_won(sandbox.salesforce.records("Opportunity")[0]["Id"])
    async with engine(sandbox, tmp_path) as e:
        sandbox.salesforce.set_api_usage(13_000)
        await e.store.add_events([webhook("subscription.updated", s, f"evt-{i}") for i, s in enumerate(subscriptions)])
        while await e.worker.run_once():
            pass
        assert (await e.store.queue_depths())[EventStatus.DONE] == 3

        plan = e.salesforce.budget.plan()
        assert plan.deferred == {Priority.BULK} and plan.multiplier == 8
        backfill = SalesforceClosedWonPoller(e.salesforce, e.store, priority=Priority.BULK)
        before = queries(sandbox)
        with pytest.raises(Throttled, match="holds back bulk work"):
            await service.backfill(e.store, [backfill], SINCE)
        assert queries(sandbox) == before  # deferred before anything was sent

        # polling comes before backfill: it still runs (the scheduler stretches its interval 8x)
        polled = await SalesforceClosedWonPoller(e.salesforce, e.store).run_once()
        assert polled.status is PollStatus.OK and polled.stored >= 1
        # and later real-time events still drain, with backfill still waiting
        await e.store.add_events([webhook("subscription.updated", subscriptions[0], "evt-late")])
        while await e.worker.run_once():
            pass
        assert (await e.store.queue_depths())[EventStatus.DONE] == 4 + polled.stored
        assert not e.salesforce.budget.allows(Priority.BULK)

        metrics = Metrics()
        metrics.set_budget(e.salesforce.budget)
        body = metrics.render()[0].decode()
        assert 'revdaemon_work_deferred{kind="bulk"} 1.0' in body
        assert 'revdaemon_work_deferred{kind="realtime"} 0.0' in body
        assert "revdaemon_poll_interval_multiplier 8.0" in body

        # the rolling 24 hours let old calls go: the next response reports it and the backfill proceeds
        sandbox.salesforce.set_api_usage(100)
        await e.salesforce.limits()
        stored = await service.backfill(e.store, [backfill], SINCE)
        assert stored[backfill.name] >= 1
