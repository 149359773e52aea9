"""Flow 2 against a person's edit in Salesforce: a conflict with the three values, then each resolution."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from revdaemon.engine.lookups import RACE_WINDOW
from revdaemon.flows.subscription_status import SubscriptionStatusFlow, SubscriptionStatusMapping
from revdaemon.sandbox.runner import Sandbox
from revdaemon.service import resolve_conflict, show_conflict
from revdaemon.store import Store
from revdaemon.store.states import EventStatus
from tests.faulty_store import Crash, Fault, FaultKind, FaultyStore
from tests.integration.engine_fixtures import Engine, engine, fake_engine_time, webhook
from tests.integration.test_engine_subscription_status import activate_for

pytestmark = pytest.mark.anyio


async def synced_then_edited(sandbox: Sandbox, e: Engine, index: int) -> tuple[str, str, list[dict]]:
    """An account revdaemon wrote once, whose MRR a rep then typed over, and a Nue change after that."""
    customer_id, account_id, subscriptions = activate_for(sandbox, index, index)
    await e.store.add_events([webhook("subscription.updated", dict(subscriptions[0]), f"first-{index}")])
    await e.worker.run_once()
    sandbox.salesforce.update("Account", account_id, {"MRR__c": 1.0})
    await e.store.add_events([webhook("subscription.updated", dict(subscriptions[0]), f"second-{index}")])
    await e.worker.run_once()
    return customer_id, account_id, subscriptions


class TestHandEdits:
    async def test_hand_edit_opens_a_conflict_with_all_three_values(self, sandbox: Sandbox, tmp_path: Path) -> None:
        async with engine(sandbox, tmp_path) as e:
            customer_id, account_id, _ = await synced_then_edited(sandbox, e, 0)
            [conflict] = await e.store.list_conflicts()
            detail = await show_conflict(e.store, conflict.id)
        nue_mrr = Decimal(str(sandbox.nue.store.customers[customer_id]["todayCMRR"]))
        assert conflict.record_ref == f"salesforce:Account:{account_id}"
        [mrr] = [f for f in detail["fields"] if f["field"] == "MRR__c"]
        assert Decimal(mrr["nue"]) == nue_mrr and mrr["salesforce"] == 1.0 and Decimal(mrr["synced"]) == nue_mrr
        assert mrr["differs"] is True
        assert sandbox.salesforce.record("Account", account_id)["MRR__c"] == 1.0  # nothing overwritten

    async def test_take_nue_writes_nues_value_through_the_executor(self, sandbox: Sandbox, tmp_path: Path) -> None:
        async with engine(sandbox, tmp_path) as e:
            customer_id, account_id, _ = await synced_then_edited(sandbox, e, 1)
            [conflict] = await e.store.list_conflicts()
            await resolve_conflict(e.store, conflict.id, take="nue", actor="ana", comment="Nue is the master")
            assert await e.worker.run_once() == 1
            assert (await e.store.queue_depths())[EventStatus.CONFLICT] == 0
            writes = await e.store.list_writes(record_ref=f"salesforce:Account:{account_id}")
        nue_mrr = Decimal(str(sandbox.nue.store.customers[customer_id]["todayCMRR"]))
        assert Decimal(str(sandbox.salesforce.record("Account", account_id)["MRR__c"])) == nue_mrr
        assert writes[0].outcome == "ok" and writes[0].mapping_version == 1

    async def test_take_salesforce_keeps_the_edit_and_writes_nothing(self, sandbox: Sandbox, tmp_path: Path) -> None:
        async with engine(sandbox, tmp_path) as e:
            _, account_id, subscriptions = await synced_then_edited(sandbox, e, 2)
            [conflict] = await e.store.list_conflicts()
            sandbox.salesforce.log.clear()
            await resolve_conflict(e.store, conflict.id, take="salesforce", actor="ana")
            assert await e.worker.run_once() == 0
            # The same Nue state notified again: the accepted edit is the baseline, so no second conflict.
            await e.store.add_events([webhook("subscription.updated", dict(subscriptions[0]), "again-2")])
            await e.worker.run_once()
            assert await e.store.list_conflicts() == []
        assert sandbox.salesforce.record("Account", account_id)["MRR__c"] == 1.0
        assert sandbox.salesforce.log.writes() == []

    async def test_kept_edit_gives_way_when_nue_changes(self, sandbox: Sandbox, tmp_path: Path) -> None:
        """Salesforce's value is kept against the Nue value shown; a different Nue value is written again."""
        async with engine(sandbox, tmp_path) as e:
            customer_id, account_id, subscriptions = await synced_then_edited(sandbox, e, 4)
            [conflict] = await e.store.list_conflicts()
            await resolve_conflict(e.store, conflict.id, take="salesforce", actor="ana")
            sandbox.nue.scenario.create_and_activate_order(customer_id, opportunity=5)
            await e.store.add_events([webhook("subscription.updated", dict(subscriptions[0]), "after-change")])
            await e.worker.run_once()
            assert await e.store.list_conflicts() == []
        assert sandbox.salesforce.record("Account", account_id)["MRR__c"] != 1.0

    async def test_overwrite_mode_and_repairs_write_over_the_edit(self, sandbox: Sandbox, tmp_path: Path) -> None:
        flow = SubscriptionStatusFlow(SubscriptionStatusMapping(on_hand_edit="overwrite"))
        async with engine(sandbox, tmp_path, flows=[flow]) as e:
            customer_id, account_id, _ = await synced_then_edited(sandbox, e, 3)
            assert await e.store.list_conflicts() == []
        nue_mrr = Decimal(str(sandbox.nue.store.customers[customer_id]["todayCMRR"]))
        assert Decimal(str(sandbox.salesforce.record("Account", account_id)["MRR__c"])) == nue_mrr

    async def test_a_webhooks_repair_flag_does_not_overwrite_the_edit(self, sandbox: Sandbox, tmp_path: Path) -> None:
        """A Nue notification carrying `repair: true` is an ordinary notification: the edit opens a conflict and
        is kept; only a reconciliation repair (its own source) writes over it."""
        async with engine(sandbox, tmp_path) as e:
            _, account_id, subscriptions = activate_for(sandbox, 5, 5)
            await e.store.add_events([webhook("subscription.updated", dict(subscriptions[0]), "first-5")])
            await e.worker.run_once()
            sandbox.salesforce.update("Account", account_id, {"MRR__c": 1.0})
            flagged = webhook("subscription.updated", dict(subscriptions[0]), "flagged-5")
            await e.store.add_events([dataclasses.replace(flagged, payload={**flagged.payload, "repair": True})])
            await e.worker.run_once()
            [conflict] = await e.store.list_conflicts()
        assert conflict.record_ref == f"salesforce:Account:{account_id}"
        assert sandbox.salesforce.record("Account", account_id)["MRR__c"] == 1.0

class TestKilledWhileRecordingAWrite:
    async def test_a_kill_right_after_an_applied_write_leaves_no_false_hand_edit(
            self, sandbox: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """Killed right after the first bookkeeping of an account update Salesforce applied, then Nue changes
        again once lookups.RACE_WINDOW has passed: the account shows revdaemon's own write, no person's edit, so
        the new value is written and no conflict opens (found by test_fault_state_machine.py's harness)."""
        clock = fake_engine_time(monkeypatch)
        customer_id, account_id, subscriptions = activate_for(sandbox, 0, 0)
        subscription = subscriptions[0]
        faulty: list[FaultyStore] = []

        def wrap(store: Store) -> Store:
            faulty.append(FaultyStore(store))
            return faulty[-1].store

        async with engine(sandbox, tmp_path, clock=clock, wrap_store=wrap) as e:
            await e.store.add_events([webhook("subscription.updated", dict(subscription), "first")])
            await e.worker.run_once()  # the account's values are revdaemon's last synced ones
            sandbox.nue.scenario.change(subscription["name"], "UpdateQuantity", quantity=3)
            update_many = e.salesforce.update_many

            async def applied_then_killed(sobject: str, records: Sequence[Mapping[str, Any]]) -> Any:
                results = await update_many(sobject, records)
                if sobject == "Account":
                    faulty[-1].arm(Fault(FaultKind.CRASH_AFTER), in_calls=1)  # dies once that call has committed
                return results

            e.salesforce.update_many = applied_then_killed  # type: ignore[method-assign]
            await e.store.add_events([webhook("subscription.updated", dict(subscription), "second")])
            with pytest.raises(Crash):
                await e.worker.run_once()
        clock.advance((RACE_WINDOW + timedelta(minutes=5)).total_seconds())  # past the window and the claim's lease
        sandbox.nue.scenario.change(subscription["name"], "UpdateQuantity", quantity=4)
        async with engine(sandbox, tmp_path, clock=clock) as e:  # the restarted daemon, on the same state file
            await e.store.add_events([webhook("subscription.updated", dict(subscription), "third")])
            while await e.worker.run_once():
                pass
            assert await e.store.list_conflicts() == []
        nue_mrr = Decimal(str(sandbox.nue.store.customers[customer_id]["todayCMRR"]))
        assert Decimal(str(sandbox.salesforce.record("Account", account_id)["MRR__c"])) == nue_mrr
