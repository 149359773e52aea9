"""Shadow mode's flags over the simulators: what a person should look at before going live, found by reads made in
shadow mode only, and nothing sent (engine/shadow.py)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from revdaemon.engine.lookups import Fetcher
from revdaemon.engine.shadow import Shadow
from revdaemon.flows.closed_won_to_order import ClosedWonToOrderFlow
from revdaemon.flows.subscription_status import SubscriptionStatusFlow
from revdaemon.sandbox.runner import Sandbox
from tests.integration.engine_fixtures import engine, webhook
from tests.integration.test_engine_closed_won import won
from tests.integration.test_engine_subscription_status import activate_for

pytestmark = pytest.mark.anyio

A_PERSON = "005000000000042AAA"


def sent(sandbox: Sandbox) -> list[object]:
    return [*(r for r in sandbox.salesforce.log.writes() if r.path.startswith("/services/data/")),
            *(r for r in sandbox.nue.log.writes() if r.path != "/async/graphql")]


async def test_flags_a_look_alike_customer_an_order_naming_the_deal_and_a_persons_recent_edit(
        sandbox: Sandbox, tmp_path: Path) -> None:
    scenario = sandbox.nue.scenario
    # 1. Deal 0's account has a Nue customer of the same name that Nue's sync never linked: flow 1 would make another.
    opportunity_id, won_event = won(sandbox, 0)
    look_alike = scenario.create_customer(sandbox.salesforce.seed_data.opportunities[0].account_id)
    with sandbox.nue.store.lock:
        sandbox.nue.store.customers[look_alike["id"]].update(externalId=None, salesAccountId=None)
    # 2. Deal 1's account is linked, but an order under another customer names the opportunity (made by hand).
    other_id, other_event = won(sandbox, 1)
    scenario.create_customer(sandbox.salesforce.seed_data.opportunities[1].account_id)
    stranger = scenario.create_customer(5)
    order = scenario.order_for(other_id, stranger["id"], opportunityId=other_id)
    # 3. A person typed an MRR on the account a Nue change would now overwrite.
    _customer, account_id, subscriptions = activate_for(sandbox, 2, 2)
    sandbox.salesforce.update("Account", account_id, {"MRR__c": 12.0}, user_id=A_PERSON)

    flows = [ClosedWonToOrderFlow(), SubscriptionStatusFlow()]
    async with engine(sandbox, tmp_path, flows=flows) as e:
        await e.store.add_events([won_event, other_event,
                                  webhook("subscription.updated", dict(subscriptions[0]), "sub-1")])
        events = await e.store.claim_events(worker="w", limit=10, lease=timedelta(minutes=1))
        sandbox.salesforce.log.clear()
        sandbox.nue.log.clear()
        shadow = Shadow(e.store, Fetcher(e.salesforce, e.nue, e.store), flows,
                        own_user=lambda: e.salesforce.integration_user_id)
        entries = await shadow.plan(events)
        assert sent(sandbox) == []

    flags = {entry.target: entry.flags for entry in entries if entry.outcome == "write"}
    [customer_flag] = flags[f"Customer for account {sandbox.salesforce.seed_data.opportunities[0].account_id}"]
    assert f"named {look_alike['name']!r} exists already" in customer_flag
    [order_flag] = flags[f"Order for opportunity {other_id}"]
    assert order["orderNumber"] in order_flag and "names this opportunity" in order_flag
    [account_flag] = flags[f"Account {account_id}"]
    assert A_PERSON in account_flag and "MRR__c" in account_flag
    # Flow 1's write-back fills an empty field: it overwrites nothing a person set, so it is not flagged.
    assert flags[f"Opportunity {opportunity_id}"] == ()
