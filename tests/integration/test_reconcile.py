"""Reconciliation (flow 8) against the sandbox: the drift report, and repair through flow 2's inbox."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from revdaemon import service
from revdaemon.domain.reconciliation import Drift, Report
from revdaemon.engine.reconcile import reconcile
from revdaemon.errors import Throttled
from revdaemon.sandbox.runner import Sandbox
from revdaemon.sandbox.salesforce.settings import CustomField
from revdaemon.store.states import EventStatus
from tests.integration.engine_fixtures import Engine, engine, webhook

pytestmark = pytest.mark.anyio

NOW = datetime(2026, 3, 1, 2, 30, tzinfo=UTC)


def activate(sandbox: Sandbox, count: int) -> list[tuple[str, str]]:
    """`count` linked customers, each with an activated order: [(customer id, account id)]."""
    linked = []
    for i in range(count):
        customer = sandbox.nue.scenario.create_customer(i)
        sandbox.nue.scenario.create_and_activate_order(customer["id"], opportunity=i)
        linked.append((customer["id"], customer["externalId"]))
    return linked


def set_accounts_from_nue(sandbox: Sandbox, linked: list[tuple[str, str]]) -> None:
    """Make each account show what Nue reports, as if an earlier sync had written it."""
    for customer_id, account_id in linked:
        nue = sandbox.nue.store.customers[customer_id]
        sandbox.salesforce.update("Account", account_id, {"MRR__c": str(nue["todayCMRR"]),
                                                          "ARR__c": str(nue["todayARR"]),
                                                          "Subscription_Status__c": "Active"})


async def sync_with_flow_2(e: Engine, linked: list[tuple[str, str]]) -> None:
    """Run flow 2 once per customer, the way webhooks would."""
    await e.store.add_events([webhook("order.activated", {"id": f"o-{cid}", "customerId": cid}, f"sync-{cid}")
                              for cid, _ in linked])
    while await e.worker.run_once():
        pass


def drift_of(report: Report) -> dict[str, Drift]:
    return {row.customer_id: row.drift for row in report.rows}


class TestReport:
    async def test_only_the_stale_account_drifts(self, sandbox: Sandbox, tmp_path: Path) -> None:
        """After flow 2 synced three accounts and one MRR is edited by hand, exactly that one is reported."""
        linked = activate(sandbox, 3)
        stale_customer, stale_account = linked[1]
        async with engine(sandbox, tmp_path) as e:
            await sync_with_flow_2(e, linked)
            sandbox.salesforce.update("Account", stale_account, {"MRR__c": 1.0})
            report = await reconcile(e.nue, e.salesforce)
        assert drift_of(report) == {linked[0][0]: Drift.IN_SYNC, stale_customer: Drift.SALESFORCE_DIFFERS,
                                    linked[2][0]: Drift.IN_SYNC}
        row = next(r for r in report.rows if r.drift is Drift.SALESFORCE_DIFFERS)
        nue_cmrr = Decimal(str(sandbox.nue.store.customers[stale_customer]["todayCMRR"]))
        assert (row.account_id, row.salesforce_mrr, row.computed_mrr, row.nue_cmrr) == (
            stale_account, Decimal(1), nue_cmrr, nue_cmrr)
        assert row.account_name == sandbox.salesforce.record("Account", stale_account)["Name"]
        assert report.repairs == ()

    async def test_unlinked_and_missing_accounts(self, sandbox: Sandbox, tmp_path: Path) -> None:
        """A customer with no Salesforce link is unlinked; one whose account is gone is missing_account."""
        [(gone_customer, gone_account)] = activate(sandbox, 1)
        sandbox.salesforce.delete("Account", gone_account)
        async with engine(sandbox, tmp_path) as e:
            [lone] = await e.nue.create_customers([{"name": "No Account Ltd", "recordType": "Business"}])
            report = await reconcile(e.nue, e.salesforce)
        assert drift_of(report) == {gone_customer: Drift.MISSING_ACCOUNT, lone["id"]: Drift.UNLINKED}

    async def test_report_written_as_json(self, sandbox: Sandbox, tmp_path: Path) -> None:
        """With a report path the same report lands there as JSON, replacing any earlier one."""
        linked = activate(sandbox, 2)
        set_accounts_from_nue(sandbox, linked)
        path = tmp_path / "reports" / "reconciliation.json"
        path.parent.mkdir()
        path.write_text("old")
        async with engine(sandbox, tmp_path) as e:
            report = await reconcile(e.nue, e.salesforce, report_path=path, now=NOW)
        assert json.loads(path.read_text()) == json.loads(json.dumps(report.as_dict()))
        assert json.loads(path.read_text())["counts"]["in_sync"] == 2
        assert not list(path.parent.glob("*.partial"))

    async def test_salesforce_reads_are_bulk_work(self, sandbox: Sandbox, tmp_path: Path) -> None:
        """As the daily budget share runs low the account reads are held back, as bulk work is."""
        activate(sandbox, 1)
        async with engine(sandbox, tmp_path) as e:
            e.salesforce.budget.observe(70, 100)  # the fixture's share is 0.9: a fifth of it left
            with pytest.raises(Throttled, match="bulk"):
                await reconcile(e.nue, e.salesforce)

    async def test_accounts_read_in_one_query(self, sandbox: Sandbox, tmp_path: Path) -> None:
        """Five linked customers cost one SOQL query, whatever their number below two hundred."""
        linked = activate(sandbox, 5)
        set_accounts_from_nue(sandbox, linked)
        async with engine(sandbox, tmp_path) as e:
            await e.salesforce.auth.token()
            sandbox.salesforce.log.clear()
            report = await reconcile(e.nue, e.salesforce)
        assert report.counts[Drift.IN_SYNC] == 5
        assert len([r for r in sandbox.salesforce.log.entries() if "/query" in r.path]) == 1


class TestRepair:
    async def test_repair_queues_one_event_per_stale_account(self, sandbox: Sandbox, tmp_path: Path) -> None:
        """Repair stores one flow 2 event per drifted account, keyed by day, and a second run adds none."""
        linked = activate(sandbox, 3)
        set_accounts_from_nue(sandbox, linked)
        stale_customer, stale_account = linked[2]
        sandbox.salesforce.update("Account", stale_account, {"Subscription_Status__c": "Churned"})
        async with engine(sandbox, tmp_path) as e:
            report = await reconcile(e.nue, e.salesforce, store=e.store, repair=True, now=NOW)
            again = await reconcile(e.nue, e.salesforce, store=e.store, repair=True, now=NOW)
            event = await e.store.find_event(f"reconcile:{stale_customer}:2026-03-01")
            depths = await e.store.queue_depths()
        assert report.repairs == (stale_customer,) == again.repairs
        assert event is not None
        assert (event.source, event.type, event.status) == ("schedule", "subscription.updated", EventStatus.RECEIVED)
        assert event.payload == {"data": {"id": stale_customer, "customerId": stale_customer}, "repair": True}
        assert depths[EventStatus.RECEIVED] == 1

    async def test_repair_without_store_is_refused(self, sandbox: Sandbox, tmp_path: Path) -> None:
        """Asking for repair with nowhere to queue it is a caller's mistake, not a silent no-op."""
        async with engine(sandbox, tmp_path) as e:
            with pytest.raises(ValueError, match="store"):
                await reconcile(e.nue, e.salesforce, repair=True)

    async def test_nue_disagreement_is_not_repaired(self, sandbox: Sandbox, tmp_path: Path) -> None:
        """When Nue's own todayCMRR differs from our MRR, the row says so and no repair is queued."""
        [(customer_id, account_id)] = activate(sandbox, 1)
        set_accounts_from_nue(sandbox, [(customer_id, account_id)])
        sandbox.nue.store.customers[customer_id]["todayCMRR"] = Decimal("1.00")
        async with engine(sandbox, tmp_path) as e:
            report = await reconcile(e.nue, e.salesforce, store=e.store, repair=True, now=NOW)
            depths = await e.store.queue_depths()
        assert drift_of(report) == {customer_id: Drift.NUE_DISAGREES}
        assert report.repairs == () and depths[EventStatus.RECEIVED] == 0

    async def test_worker_repairs_and_the_next_run_is_in_sync(self, sandbox: Sandbox, tmp_path: Path) -> None:
        """Flow 2, run by the worker on the repair event, fixes the account; a second reconcile is all in sync."""
        linked = activate(sandbox, 2)
        set_accounts_from_nue(sandbox, linked)
        stale_customer, stale_account = linked[0]
        sandbox.salesforce.update("Account", stale_account, {"MRR__c": 3.0, "ARR__c": 36.0})
        async with engine(sandbox, tmp_path) as e:
            first = await reconcile(e.nue, e.salesforce, store=e.store, repair=True, now=NOW)
            assert await e.worker.run_once() == 1
            second = await reconcile(e.nue, e.salesforce, store=e.store, repair=True, now=NOW)
        assert drift_of(first)[stale_customer] is Drift.SALESFORCE_DIFFERS
        assert set(drift_of(second).values()) == {Drift.IN_SYNC}
        nue_cmrr = Decimal(str(sandbox.nue.store.customers[stale_customer]["todayCMRR"]))
        assert Decimal(str(sandbox.salesforce.record("Account", stale_account)["MRR__c"])) == nue_cmrr

    async def test_repair_after_flow_2_synced_the_same_state(self, sandbox: Sandbox, tmp_path: Path) -> None:
        """An account edited by hand after flow 2 synced it is repaired by the worker, not only reported."""
        linked = activate(sandbox, 1)
        [(customer_id, account_id)] = linked
        async with engine(sandbox, tmp_path) as e:
            await sync_with_flow_2(e, linked)
            sandbox.salesforce.update("Account", account_id, {"MRR__c": 3.0})
            await reconcile(e.nue, e.salesforce, store=e.store, repair=True, now=NOW)
            while await e.worker.run_once():
                pass
            second = await reconcile(e.nue, e.salesforce, now=NOW)
        assert drift_of(second) == {customer_id: Drift.IN_SYNC}


class TestReportAfterRepair:
    async def test_a_repaired_customer_no_longer_counts_as_drift(self, sandbox: Sandbox, tmp_path: Path) -> None:
        """Once the worker's repair wrote the account, the report's row reads repaired at that write and the
        drift left no longer counts the customer; while it waits, it does."""
        linked = activate(sandbox, 2)
        set_accounts_from_nue(sandbox, linked)
        stale_customer, stale_account = linked[0]
        sandbox.salesforce.update("Account", stale_account, {"MRR__c": 3.0, "ARR__c": 36.0})
        path = tmp_path / "reconciliation.json"
        async with engine(sandbox, tmp_path) as e:
            await reconcile(e.nue, e.salesforce, store=e.store, repair=True, report_path=path)
            waiting = await service.reconciliation_view(e.store, path)
            assert await e.worker.run_once() == 1
            after = await service.reconciliation_view(e.store, path)
            [write] = [w for w in await e.store.list_writes(limit=10) if w.system == "salesforce"]
        assert waiting is not None and after is not None
        row = {r["customer_id"]: r for r in waiting["rows"]}[stale_customer]
        assert row["repair"]["state"] == "waiting"
        nue_cmrr = Decimal(str(sandbox.nue.store.customers[stale_customer]["todayCMRR"]))
        assert waiting["drift"]["drifted"] == 1 and waiting["drift"]["repaired"] == 0
        assert Decimal(next(iter(waiting["drift"]["difference"].values()))) == Decimal("3.0") - nue_cmrr
        row = {r["customer_id"]: r for r in after["rows"]}[stale_customer]
        assert (row["drift"], row["repair"]["state"]) == ("salesforce_differs", "repaired")
        assert row["repair"]["at"] == write.at.isoformat()
        assert after["drift"] == {"generated_at": after["generated_at"], "drifted": 0, "repaired": 1,
                                  "difference": {}}

    async def test_a_dead_lettered_repair_still_counts_and_names_its_letter(self, sandbox: Sandbox,
                                                                            tmp_path: Path) -> None:
        """A repair Salesforce refused (a restricted picklist lacks the status) is no repair: the row keeps its
        drift and names the dead letter to look at."""
        [(customer_id, account_id)] = activate(sandbox, 1)
        set_accounts_from_nue(sandbox, [(customer_id, account_id)])
        sandbox.salesforce.remove_field("Account", "Subscription_Status__c")
        sandbox.salesforce.add_field(CustomField(object="Account", name="Subscription_Status__c",
                                                 type="picklist", picklist=("Churned",), restricted=True))
        sandbox.salesforce.update("Account", account_id, {"MRR__c": 3.0, "Subscription_Status__c": "Churned"})
        path = tmp_path / "reconciliation.json"
        async with engine(sandbox, tmp_path) as e:
            await reconcile(e.nue, e.salesforce, store=e.store, repair=True, report_path=path)
            await e.worker.run_once()
            [letter] = await e.store.list_dead_letters()
            view = await service.reconciliation_view(e.store, path)
        assert view is not None
        [row] = view["rows"]
        assert row["repair"]["state"] == "failed" and row["repair"]["dead_letter_id"] == letter.id
        assert (view["drift"]["drifted"], view["drift"]["repaired"]) == (1, 0)

    async def test_a_repair_done_before_the_report_does_not_hide_new_drift(self, sandbox: Sandbox,
                                                                           tmp_path: Path) -> None:
        """An account edited again after the day's repair drifts in the next report: the older repair does not
        mark it repaired."""
        [(customer_id, account_id)] = activate(sandbox, 1)
        set_accounts_from_nue(sandbox, [(customer_id, account_id)])
        sandbox.salesforce.update("Account", account_id, {"MRR__c": 3.0})
        path = tmp_path / "reconciliation.json"
        async with engine(sandbox, tmp_path) as e:
            await reconcile(e.nue, e.salesforce, store=e.store, repair=True, report_path=path)
            assert await e.worker.run_once() == 1
            sandbox.salesforce.update("Account", account_id, {"MRR__c": 4.0})
            await reconcile(e.nue, e.salesforce, report_path=path)
            view = await service.reconciliation_view(e.store, path)
        assert view is not None
        [row] = view["rows"]
        assert row["drift"] == "salesforce_differs" and "repair" not in row
        assert view["drift"]["drifted"] == 1
