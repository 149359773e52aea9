"""Flow 6 end to end: an activated order fills in the account and creates the onboarding Tasks once."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest

from revdaemon.engine.executor import PendingWrite
from revdaemon.flows.amendments import AmendmentsFlow
from revdaemon.flows.base import Flow
from revdaemon.flows.billing_events import BillingEventsFlow
from revdaemon.flows.onboarding import OnboardingFlow
from revdaemon.flows.plan import SfCreate
from revdaemon.flows.subscription_status import SubscriptionStatusFlow
from revdaemon.sandbox.runner import Sandbox
from revdaemon.store.records import NewEvent, NewIntent
from tests.integration.engine_fixtures import Engine, engine, webhook

pytestmark = pytest.mark.anyio

FLOWS: list[Flow] = [OnboardingFlow()]
STEPS = (("Kick-off call", 2), ("Send welcome pack", 1), ("Configure tenant", 7))


def activations(sandbox: Sandbox) -> list[NewEvent]:
    """The order.activated notifications Nue published, as the listener would store them."""
    return [webhook(e["type"], e["data"], e["id"]) for e in sandbox.nue.webhooks.published()
            if e["type"] == "order.activated"]


async def deliver(e: Engine, events: list[NewEvent]) -> None:
    await e.store.add_events(events)
    while await e.worker.run_once():
        pass


def tasks(sandbox: Sandbox, account_id: str) -> list[dict[str, Any]]:
    return [t for t in sandbox.salesforce.records("Task") if t["WhatId"] == account_id]


class TestOnboarding:
    async def test_activation_fills_the_account_and_creates_the_tasks_once(self, sandbox: Sandbox,
                                                                          tmp_path: Path) -> None:
        """Entitlements, last order and exactly the configured Tasks for the CSM; a replay adds nothing."""
        csm = sandbox.salesforce.seed_data.users[2].id
        scenario = sandbox.nue.scenario
        customer = scenario.create_customer(0)
        account_id = customer["externalId"]
        sandbox.salesforce.update("Account", account_id, {"Customer_Success_Manager__c": csm})
        result = scenario.create_and_activate_order(customer["id"], opportunity=0)
        order = result["order"]
        async with engine(sandbox, tmp_path, flows=FLOWS) as e:
            events = activations(sandbox)
            await deliver(e, events)
            account = sandbox.salesforce.record("Account", account_id)
            assert account["Last_Nue_Order__c"] == order["orderNumber"]
            assert account["Entitlements__c"].splitlines() == [
                "Platform Subscription x 1", "User Seats x 25", "Onboarding Package x 1"]
            activated = date.fromisoformat(str(order["activatedDate"])[:10])
            assert sorted((t["Subject"], t["ActivityDate"], t["OwnerId"], t["Status"], t["Priority"])
                          for t in tasks(sandbox, account_id)) == sorted(
                (f"{s} ({order['orderNumber']})", (activated + timedelta(days=d)).isoformat(), csm, "Not Started",
                 "Normal") for s, d in STEPS)

            sandbox.salesforce.log.clear()
            await deliver(e, [webhook(ev.type, ev.payload["data"], f"replay-{i}") for i, ev in enumerate(events)])
        assert sandbox.salesforce.log.writes() == []
        assert len(tasks(sandbox, account_id)) == len(STEPS)

    async def test_without_a_csm_the_owner_gets_the_tasks(self, sandbox: Sandbox, tmp_path: Path) -> None:
        """An account with no customer success manager has its Tasks assigned to the account owner."""
        scenario = sandbox.nue.scenario
        customer = scenario.create_customer(1)
        account_id = customer["externalId"]
        scenario.create_and_activate_order(customer["id"], opportunity=0)
        async with engine(sandbox, tmp_path, flows=FLOWS) as e:
            await deliver(e, activations(sandbox))
        owner = sandbox.salesforce.record("Account", account_id)["OwnerId"]
        assert {t["OwnerId"] for t in tasks(sandbox, account_id)} == {owner}
        assert len(tasks(sandbox, account_id)) == len(STEPS)

    async def test_change_orders_start_no_onboarding(self, sandbox: Sandbox, tmp_path: Path) -> None:
        """An amendment's activation adds no Tasks and leaves the last order as the original one."""
        scenario = sandbox.nue.scenario
        customer = scenario.create_customer(2)
        account_id = customer["externalId"]
        order = scenario.create_and_activate_order(customer["id"], opportunity=0)["order"]
        async with engine(sandbox, tmp_path, flows=FLOWS) as e:
            await deliver(e, activations(sandbox))
            seats = next(s for s in sandbox.nue.store.subscriptions.values()
                         if s["customerId"] == customer["id"] and s["quantity"] == 25)
            sandbox.nue.webhooks.clear()
            scenario.change(seats["name"], "UpdateQuantity", quantity=5)
            await deliver(e, activations(sandbox))
        assert len(tasks(sandbox, account_id)) == len(STEPS)
        assert sandbox.salesforce.record("Account", account_id)["Last_Nue_Order__c"] == order["orderNumber"]

    async def test_beside_the_other_order_flows(self, sandbox: Sandbox, tmp_path: Path) -> None:
        """With flows 2, 4 and 5 on the same notifications, the account gets MRR and onboarding, the invoice is
        logged, and no amendment Note is written for a new order."""
        flows: list[Flow] = [SubscriptionStatusFlow(), BillingEventsFlow(), AmendmentsFlow(), OnboardingFlow()]
        scenario = sandbox.nue.scenario
        customer = scenario.create_customer(3)
        account_id = customer["externalId"]
        scenario.create_and_activate_order(customer["id"], opportunity=0, generate_invoice=True, activate_invoice=True)
        events = [webhook(e["type"], e["data"], e["id"]) for e in sandbox.nue.webhooks.published()]
        async with engine(sandbox, tmp_path, flows=flows) as e:
            await deliver(e, events)
        account = sandbox.salesforce.record("Account", account_id)
        assert account["MRR__c"] and account["Subscription_Status__c"] == "Active"
        assert account["Last_Nue_Order__c"] and account["Entitlements__c"]
        assert len(tasks(sandbox, account_id)) == len(STEPS)
        assert [r["Account__c"] for r in sandbox.salesforce.records("Nue_Billing_Event__c")] == [account_id]
        assert [n for n in sandbox.salesforce.records("Note") if n["ParentId"] == account_id] == []


class TestBatchedCreates:
    async def test_many_activations_create_their_tasks_in_one_lookup_and_one_call(self, sandbox: Sandbox,
                                                                                  tmp_path: Path) -> None:
        """Tasks have no external id: the earlier copies of the whole batch are looked for in one SOQL read and
        the missing ones created through one Collections call, not two calls per Task."""
        scenario = sandbox.nue.scenario
        accounts = []
        for index in range(len(sandbox.nue.store.seed.accounts)):
            customer = scenario.create_customer(index)
            scenario.create_and_activate_order(customer["id"], opportunity=0)
            accounts.append(customer["externalId"])
        async with engine(sandbox, tmp_path, flows=FLOWS) as e:
            sandbox.salesforce.log.clear()
            await deliver(e, activations(sandbox))
        entries = sandbox.salesforce.log.entries()
        task_creates = [r for r in entries if r.method == "POST" and "/sobjects/Task" in r.path]
        collections = [r for r in entries if r.method == "POST" and r.path.endswith("/composite/sobjects")]
        task_lookups = [r for r in entries if r.method == "GET" and "FROM+Task" in r.query.replace("%20", "+")]
        assert task_creates == []
        # One read of Tasks for the whole batch: the flow's (which steps exist). The creates are first attempts
        # of Tasks that read showed absent, so the executor looks no further.
        assert len(collections) == 1 and len(task_lookups) == 1
        assert all(len(tasks(sandbox, account)) == len(STEPS) for account in accounts)

    async def test_a_create_that_may_have_been_sent_is_looked_up_first(self, sandbox: Sandbox,
                                                                       tmp_path: Path) -> None:
        """A Task whose intent was left `sent` by a crash is looked for before it is created again, and found
        (case aside, as SOQL compares); a first attempt the flow saw absent goes straight to the create."""
        account_id = sandbox.nue.scenario.create_customer(0)["externalId"]

        def task(subject: str) -> SfCreate:
            return SfCreate(sobject="Task", fields={"WhatId": account_id, "Subject": subject},
                            match={"WhatId": account_id, "Subject": subject}, idem_key=f"t:{subject}",
                            seen_absent=True)

        earlier = sandbox.salesforce.create("Task", {"WhatId": account_id, "Subject": "SENT BEFORE THE CRASH"})
        async with engine(sandbox, tmp_path, flows=FLOWS) as e:
            crashed = task("Sent before the crash")
            await e.store.record_intent(NewIntent(key=crashed.idem_key, system="salesforce", operation="SfCreate",
                                                  target="Task:x", request={}, event_id=None))
            await e.store.begin_send([crashed.idem_key])
            sandbox.salesforce.log.clear()
            outcomes = await e.executor.execute([PendingWrite(write=crashed, event_id=None),
                                                 PendingWrite(write=task("Never sent"), event_id=None)])
            lookups = [r for r in sandbox.salesforce.log.entries() if r.path.endswith("/query")]
            assert outcomes[crashed.idem_key].result == {"id": earlier, "created": False}
            assert outcomes["t:Never sent"].result is not None and outcomes["t:Never sent"].result["created"]
            assert len(lookups) == 1  # the chunk holds a write that may have been sent

            sandbox.salesforce.log.clear()
            await e.executor.execute([PendingWrite(write=task("Another first attempt"), event_id=None)])
            assert [r for r in sandbox.salesforce.log.entries() if r.path.endswith("/query")] == []
        assert sorted(t["Subject"] for t in tasks(sandbox, account_id)) == [
            "Another first attempt", "Never sent", "SENT BEFORE THE CRASH"]

    async def test_the_lookup_compares_as_soql_does(self, sandbox: Sandbox, tmp_path: Path) -> None:
        """A 15-character WhatId finds the Task Salesforce returns with the 18-character id; two writes whose
        Subjects differ only in case are one record, created once."""
        account_id = sandbox.nue.scenario.create_customer(0)["externalId"]
        earlier = sandbox.salesforce.create("Task", {"WhatId": account_id, "Subject": "Sent before"})
        short = account_id[:15]

        def task(subject: str, key: str, what: str = account_id) -> SfCreate:
            return SfCreate(sobject="Task", fields={"WhatId": what, "Subject": subject},
                            match={"WhatId": what, "Subject": subject}, idem_key=key, seen_absent=True)

        async with engine(sandbox, tmp_path, flows=FLOWS) as e:
            resent = task("Sent before", "t:resent", what=short)
            await e.store.record_intent(NewIntent(key=resent.idem_key, system="salesforce", operation="SfCreate",
                                                  target="Task:x", request={}, event_id=None))
            await e.store.begin_send([resent.idem_key])  # a crash after the call: it may exist
            outcomes = await e.executor.execute([PendingWrite(write=resent, event_id=None),
                                                 PendingWrite(write=task("Foo", "t:foo"), event_id=None),
                                                 PendingWrite(write=task("FOO", "t:FOO"), event_id=None)])
        assert outcomes["t:resent"].result == {"id": earlier, "created": False}
        foo, upper = outcomes["t:foo"].result, outcomes["t:FOO"].result
        assert foo is not None and upper is not None and foo["id"] == upper["id"]
        assert sorted(t["Subject"] for t in tasks(sandbox, account_id)) == ["Foo", "Sent before"]
