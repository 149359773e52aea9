"""A signed webhook cannot reach internal work: the real listener in front of the engine, against the sandbox.

The internal event types (the renewal scan's renewal.due, Salesforce's opportunity.closed_won) are refused
with 400 and nothing is stored, so nothing is written to either system; a `repair` flag in a notification
is stored as sent but not honoured, so a person's edit opens a conflict instead of being overwritten.
(The worker's own check, for such events stored before the listener refused them, is shown per flow in
test_flow_renewals.py, test_engine_closed_won.py and test_hand_edits.py.)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from revdaemon.flows.closed_won_to_order import ClosedWonToOrderFlow
from revdaemon.flows.renewals import RenewalFlow
from revdaemon.sandbox.runner import Sandbox
from revdaemon.store.states import EventStatus
from tests.integration.engine_fixtures import Engine, engine
from tests.integration.test_engine_closed_won import nue_writes, orders_for, won
from tests.integration.test_engine_subscription_status import activate_for
from tests.integration.test_flow_renewals import customer_with_order, data_writes, renewals, subscriptions_of
from tests.integration.test_listener import Running, signed, start

pytestmark = pytest.mark.anyio


def notification(event_id: str, event_type: str, data: dict[str, Any], **top: Any) -> bytes:
    """A Nue envelope as the listener receives it (the simulator's records hold Decimals)."""
    return json.dumps({"id": event_id, "type": event_type, "data": data, **top}, default=str).encode()


async def deliver(running: Running, body: bytes) -> httpx.Response:
    async with httpx.AsyncClient() as client:
        return await client.post(f"{running.url}/webhooks/nue", content=body, headers=signed(body))


async def drain(e: Engine) -> None:
    while await e.worker.run_once():
        pass


class TestInternalWorkFromAWebhook:
    async def test_internal_types_are_refused_and_nothing_is_written(self, sandbox: Sandbox, tmp_path: Path) -> None:
        """A signed renewal.due for each Active term and a signed opportunity.closed_won for a won deal: each is
        a 400, the inbox stays empty, and the workers make no renewal opportunity and no Nue order."""
        customer, _ = customer_with_order(sandbox, 0, 0)
        terms = subscriptions_of(sandbox, customer["id"])
        opportunity_id, _ = won(sandbox, 1)
        sandbox.salesforce.log.clear()
        sandbox.nue.log.clear()
        bodies = [notification(f"evt-due-{n}", "renewal.due", {"id": s["id"], "customerId": customer["id"],
                                                                "subscriptionEndDate": s["subscriptionEndDate"][:10]})
                  for n, s in enumerate(terms)]
        bodies.append(notification("evt-won", "opportunity.closed_won", {"id": opportunity_id, "Id": opportunity_id}))
        async with engine(sandbox, tmp_path, flows=[RenewalFlow(), ClosedWonToOrderFlow()]) as e:
            async for running in start(tmp_path, store=e.store):
                for body in bodies:
                    response = await deliver(running, body)
                    assert response.status_code == 400, response.text
                    assert "revdaemon's own" in response.json()["error"]
            assert sum((await e.store.queue_depths()).values()) == 0
            await drain(e)
        assert renewals(sandbox) == [] and orders_for(sandbox, opportunity_id) == []
        assert data_writes(sandbox) == [] and nue_writes(sandbox) == []

    async def test_a_repair_flag_keeps_the_hand_edit_and_opens_a_conflict(self, sandbox: Sandbox,
                                                                          tmp_path: Path) -> None:
        """A signed subscription.updated flagged `repair` is stored and worked like any notification: the rep's
        MRR stays and a conflict shows it, where a reconciliation repair would have written over it."""
        _, account_id, subscriptions = activate_for(sandbox, 2, 2)
        subscription = dict(subscriptions[0])
        async with engine(sandbox, tmp_path) as e:
            async for running in start(tmp_path, store=e.store):
                assert (await deliver(running, notification("evt-1", "subscription.updated", subscription))
                        ).status_code == 202
                await drain(e)
                sandbox.salesforce.update("Account", account_id, {"MRR__c": 1.0})
                flagged = notification("evt-2", "subscription.updated", subscription, repair=True)
                assert (await deliver(running, flagged)).status_code == 202
                await drain(e)
            [conflict] = await e.store.list_conflicts()
            assert (await e.store.queue_depths())[EventStatus.CONFLICT] == 1
        assert conflict.record_ref == f"salesforce:Account:{account_id}" and "MRR__c" in conflict.reason
        assert sandbox.salesforce.record("Account", account_id)["MRR__c"] == 1.0
