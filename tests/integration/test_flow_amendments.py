"""Flow 5 end to end: an activated change order leaves one Note with its MRR delta on the account."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from revdaemon.flows.amendments import AmendmentsFlow
from revdaemon.flows.base import Flow
from revdaemon.flows.subscription_status import SubscriptionStatusFlow
from revdaemon.sandbox.runner import Sandbox
from revdaemon.store.records import NewEvent
from tests.integration.engine_fixtures import Engine, engine, webhook

pytestmark = pytest.mark.anyio

FLOWS: list[Flow] = [SubscriptionStatusFlow(), AmendmentsFlow()]


def published(sandbox: Sandbox, *types: str) -> list[NewEvent]:
    """Nue's notifications of these types so far, as the listener would store them; then forgets them."""
    events = [webhook(e["type"], e["data"], e["id"]) for e in sandbox.nue.webhooks.published() if e["type"] in types]
    sandbox.nue.webhooks.clear()
    return events


async def deliver(e: Engine, events: list[NewEvent]) -> None:
    await e.store.add_events(events)
    while await e.worker.run_once():
        pass


def notes(sandbox: Sandbox, account_id: str) -> list[dict[str, Any]]:
    return [n for n in sandbox.salesforce.records("Note") if n["ParentId"] == account_id]


def mrr(sandbox: Sandbox, account_id: str) -> Decimal:
    return Decimal(str(sandbox.salesforce.record("Account", account_id)["MRR__c"]))


class TestAmendments:
    async def test_update_quantity_leaves_one_note_with_the_delta(self, sandbox: Sandbox, tmp_path: Path) -> None:
        """+5 seats at the volume price less the line's 10 % discount is +180.00, whatever the delivery order."""
        scenario = sandbox.nue.scenario
        customer = scenario.create_customer(0)
        account_id = customer["externalId"]
        scenario.create_and_activate_order(customer["id"], opportunity=0)  # platform x1, 25 seats at 10 % off
        seats = next(s for s in sandbox.nue.store.subscriptions.values()
                     if s["customerId"] == customer["id"] and s["quantity"] == 25)
        async with engine(sandbox, tmp_path, flows=FLOWS) as e:
            await deliver(e, published(sandbox, "order.activated", "subscription.created"))
            before = mrr(sandbox, account_id)
            assert notes(sandbox, account_id) == []  # a new order is not an amendment

            result = scenario.change(seats["name"], "UpdateQuantity", quantity=5)
            events = published(sandbox, "order.activated", "subscription.updated")
            assert [ev.type for ev in events] == ["order.activated", "subscription.updated"]
            # The worst order: flow 2 moves the account MRR before the order's own notification is handled.
            await deliver(e, events[1:])
            await deliver(e, events[:1])

            after = mrr(sandbox, account_id)
            [note] = notes(sandbox, account_id)
            number = result["order"]["orderNumber"]
            assert note["Title"] == f"Nue amendment {number}"
            assert "Change type: UpdateQuantity" in note["Body"] and f"Asset: {seats['name']}" in note["Body"]
            assert "MRR before: 900.00\nMRR after: 1080.00\nMRR delta: +180.00" in note["Body"]
            assert after - before == Decimal("180.00")  # the account MRR moved by the same amount, once

            sandbox.salesforce.log.clear()
            await deliver(e, [webhook(ev.type, ev.payload["data"], f"replay-{i}") for i, ev in enumerate(events)])
        assert sandbox.salesforce.log.writes() == []
        assert len(notes(sandbox, account_id)) == 1

    async def test_cancel_logs_the_whole_mrr_as_lost(self, sandbox: Sandbox, tmp_path: Path) -> None:
        """A cancelled platform subscription's Note shows its 500.00 going to zero."""
        scenario = sandbox.nue.scenario
        customer = scenario.create_customer(1)
        scenario.create_and_activate_order(customer["id"], opportunity=0)
        platform = next(s for s in sandbox.nue.store.subscriptions.values()
                        if s["customerId"] == customer["id"] and s["quantity"] == 1)
        sandbox.nue.webhooks.clear()
        scenario.change(platform["name"], "Cancel", cancellationDate=sandbox.nue.store.clock.today().isoformat())
        async with engine(sandbox, tmp_path, flows=[AmendmentsFlow()]) as e:
            await deliver(e, published(sandbox, "order.activated"))
        [note] = notes(sandbox, customer["externalId"])
        assert "Change type: Cancel" in note["Body"]
        assert "MRR before: 500.00\nMRR after: 0.00\nMRR delta: -500.00" in note["Body"]
