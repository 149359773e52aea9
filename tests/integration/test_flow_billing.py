"""Flow 4 end to end: each billing event of an invoice becomes one record on the account, once."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from revdaemon.flows.billing_events import BillingEventMapping, BillingEventsFlow
from revdaemon.sandbox.runner import Sandbox
from revdaemon.store.records import NewEvent
from revdaemon.store.states import EventStatus
from tests.integration.engine_fixtures import Engine, engine, webhook

pytestmark = pytest.mark.anyio

INVOICE_EVENTS = ("invoice.activated", "invoice.updated")


def billed_customer(sandbox: Sandbox, account_index: int) -> tuple[str, str]:
    """A linked customer with live subscriptions: (customer id, Salesforce account id)."""
    scenario = sandbox.nue.scenario
    customer = scenario.create_customer(account_index)
    scenario.create_and_activate_order(customer["id"], opportunity=0)
    return customer["id"], customer["externalId"]


def new_webhooks(sandbox: Sandbox, seen: list[NewEvent]) -> list[NewEvent]:
    """The invoice notifications Nue published since the last call, as the listener would store them."""
    events = [webhook(e["type"], e["data"], e["id"]) for e in sandbox.nue.webhooks.published()
              if e["type"] in INVOICE_EVENTS]
    fresh = events[len(seen):]
    seen.extend(fresh)
    return fresh


async def deliver(e: Engine, events: list[NewEvent]) -> None:
    await e.store.add_events(events)
    while await e.worker.run_once():
        pass


def logged(sandbox: Sandbox, account_id: str) -> dict[str, dict[str, Any]]:
    return {r["Nue_Event_Key__c"]: r for r in sandbox.salesforce.records("Nue_Billing_Event__c")
            if r["Account__c"] == account_id}


class TestBillingEvents:
    async def test_one_record_per_transition_and_replays_add_none(self, sandbox: Sandbox, tmp_path: Path) -> None:
        """Activation, a failed collection, a partial and a full payment: four records; a replay adds none."""
        _customer_id, account_id = billed_customer(sandbox, 0)
        scenario = sandbox.nue.scenario
        seen: list[NewEvent] = []
        async with engine(sandbox, tmp_path, flows=[BillingEventsFlow()]) as e:
            invoice = scenario.post_invoice(_customer_id, activate=True)
            await deliver(e, new_webhooks(sandbox, seen))
            scenario.fail_collection(invoice["id"])
            await deliver(e, new_webhooks(sandbox, seen))
            scenario.pay_invoice(invoice["id"], amount=Decimal("100.00"))
            await deliver(e, new_webhooks(sandbox, seen))
            scenario.pay_invoice(invoice["id"])
            await deliver(e, new_webhooks(sandbox, seen))

            records = logged(sandbox, account_id)
            assert set(records) == {f"{invoice['id']}:{s}"
                                    for s in ("NotTransferred", "TransferError", "PartiallyPaid", "Paid")}
            failed = records[f"{invoice['id']}:TransferError"]
            assert failed["Status__c"] == "Overdue" and "TransferError" in failed["Failure_Detail__c"]
            assert failed["Invoice_Number__c"] == invoice["name"]
            assert Decimal(str(failed["Amount__c"])) == Decimal(str(invoice["amount"]))
            assert failed["Due_Date__c"] == str(invoice["dueDate"])[:10]
            partial = records[f"{invoice['id']}:PartiallyPaid"]
            assert Decimal(str(partial["Balance__c"])) == Decimal(str(invoice["amount"])) - 100
            paid = records[f"{invoice['id']}:Paid"]
            assert paid["Status__c"] == "Paid" and Decimal(str(paid["Balance__c"])) == 0
            assert paid["Failure_Detail__c"] is None

            sandbox.salesforce.log.clear()
            await deliver(e, [webhook(ev.type, ev.payload["data"], f"replay-{i}") for i, ev in enumerate(seen)])
            assert (await e.store.queue_depths())[EventStatus.DONE] == 2 * len(seen)
        assert sandbox.salesforce.log.writes() == []
        assert len(logged(sandbox, account_id)) == 4

    async def test_draft_invoice_logs_nothing(self, sandbox: Sandbox, tmp_path: Path) -> None:
        """A draft invoice's notification is read and skipped."""
        customer_id, account_id = billed_customer(sandbox, 1)
        draft = sandbox.nue.scenario.post_invoice(customer_id, activate=False)
        async with engine(sandbox, tmp_path, flows=[BillingEventsFlow()]) as e:
            await deliver(e, [webhook("invoice.updated", draft, "draft-1")])
        assert logged(sandbox, account_id) == {}

    async def test_task_target_logs_tasks_once(self, sandbox: Sandbox, tmp_path: Path) -> None:
        """With the Task target, each transition is one Task on the account, and a replay adds none."""
        customer_id, account_id = billed_customer(sandbox, 2)
        scenario = sandbox.nue.scenario
        seen: list[NewEvent] = []
        async with engine(sandbox, tmp_path, flows=[BillingEventsFlow(BillingEventMapping(target="task"))]) as e:
            invoice = scenario.post_invoice(customer_id, activate=True)
            await deliver(e, new_webhooks(sandbox, seen))
            scenario.fail_collection(invoice["id"])
            await deliver(e, new_webhooks(sandbox, seen))
            await deliver(e, [webhook(ev.type, ev.payload["data"], f"again-{i}") for i, ev in enumerate(seen)])
        tasks = [t for t in sandbox.salesforce.records("Task") if t["WhatId"] == account_id]
        assert sorted(t["Subject"] for t in tasks) == sorted(
            f"Invoice {invoice['name']} {s} [{invoice['id']}:{s}]" for s in ("NotTransferred", "TransferError"))
        assert {t["Priority"] for t in tasks if "TransferError" in t["Subject"]} == {"High"}
        assert logged(sandbox, account_id) == {}
