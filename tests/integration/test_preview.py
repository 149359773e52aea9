"""Dry-run diffs against the sandbox: exactly what a replay or a repair would write, and nothing sent."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from revdaemon import service
from revdaemon.engine.lookups import Fetcher
from revdaemon.engine.preview import comparable
from revdaemon.sandbox.runner import Sandbox
from revdaemon.store.records import NewDeadLetter
from tests.integration.engine_fixtures import engine, webhook
from tests.integration.test_engine_subscription_status import activate_for
from tests.integration.test_sync_status import FIELDS, STATUS

pytestmark = pytest.mark.anyio


def data_writes(sandbox: Sandbox) -> list[object]:
    """Writes to records (a login's token POST is not one)."""
    return [r for r in sandbox.salesforce.log.writes() if not r.path.startswith("/services/oauth2")]


class TestPreview:
    async def test_replay_preview_shows_field_changes_and_writes_nothing(self, sandbox: Sandbox,
                                                                         tmp_path: Path) -> None:
        customer_id, account_id, subscriptions = activate_for(sandbox, 0, 0)
        sandbox.salesforce.update("Account", account_id, {"MRR__c": 5.0, "Subscription_Status__c": "Active"})
        async with engine(sandbox, tmp_path) as e:
            await e.store.add_events([webhook("subscription.updated", dict(subscriptions[0]), "dead-1")])
            [event] = await e.store.claim_events(worker="w", limit=1, lease=timedelta(minutes=1))
            letter = await e.store.dead_letter_event(event.id, NewDeadLetter(
                system="salesforce", operation="update Account", error="unable to obtain exclusive access",
                error_code="UNABLE_TO_LOCK_ROW"), claimed_by="w")
            sandbox.salesforce.log.clear()
            preview = await service.preview_replay(e.store, [letter], e.worker._flows, Fetcher(e.salesforce, e.nue,
                                                                                              e.store))
            assert await e.store.list_dead_letters() != []  # a preview replays nothing
        assert data_writes(sandbox) == []
        [shown] = preview.events
        [write] = shown.writes
        assert (write.system, write.action, write.target) == ("salesforce", "update", f"Account {account_id}")
        mrr = {f.field: f for f in write.fields}["MRR__c"]
        nue_mrr = Decimal(str(sandbox.nue.store.customers[customer_id]["todayCMRR"]))
        assert mrr.current == 5.0 and Decimal(str(mrr.planned)) == nue_mrr and mrr.changes
        assert "Subscription_Status__c" not in {f.field for f in write.fields}  # unchanged fields are not planned

    async def test_repair_preview_reads_in_batches(self, sandbox: Sandbox, tmp_path: Path) -> None:
        """Six accounts previewed at once cost a handful of reads: one SOQL per object, not one per record."""
        customers = [activate_for(sandbox, i, i) for i in range(6)]
        for _customer, account_id, _subs in customers:
            sandbox.salesforce.update("Account", account_id, {"MRR__c": 1.0})
        async with engine(sandbox, tmp_path) as e:
            sandbox.salesforce.log.clear()
            sandbox.nue.log.clear()
            preview = await service.preview_repairs([c for c, _a, _s in customers], e.worker._flows,
                                                    Fetcher(e.salesforce, e.nue, e.store))
        assert data_writes(sandbox) == []
        assert len(preview.events) == 6 and preview.writes == 6 and preview.fields_changed >= 6
        assert sandbox.salesforce.log.count() <= 4 and sandbox.nue.log.count() <= 6

    async def test_preview_shows_the_sync_status_fields_the_executor_adds(self, sandbox: Sandbox,
                                                                          tmp_path: Path) -> None:
        """With mapping.sync_status on, the diff carries the status fields exactly as the executor sends them
        (the current value beside each), read in the lookups' own query: no extra call."""
        customer_id, account_id, _subs = activate_for(sandbox, 0, 0)
        sandbox.salesforce.update("Account", account_id, {"MRR__c": 5.0, "Nue_Sync_Status__c": "Error",
                                                          "Nue_Sync_Error__c": "UNABLE_TO_LOCK_ROW"})
        async with engine(sandbox, tmp_path, sync_status=STATUS) as e:
            fetcher = Fetcher(e.salesforce, e.nue, e.store)
            await e.salesforce.limits()  # log in first: the token request is not a read of the preview's
            sandbox.salesforce.log.clear()
            plain = await service.preview_repairs([customer_id], e.worker._flows, fetcher)
            plain_reads = sandbox.salesforce.log.count(path_prefix="/services/data")
            sandbox.salesforce.log.clear()
            shown = await service.preview_repairs([customer_id], e.worker._flows, fetcher, sync_status=STATUS)
            status_reads = sandbox.salesforce.log.count(path_prefix="/services/data")
            assert data_writes(sandbox) == []
            [[write]] = [event.writes for event in shown.events]
            fields = {f.field: f for f in write.fields}
            assert (fields["Nue_Sync_Status__c"].current, fields["Nue_Sync_Status__c"].planned) == ("Error", "Synced")
            assert (fields["Nue_Sync_Error__c"].current, fields["Nue_Sync_Error__c"].planned) == (
                "UNABLE_TO_LOCK_ROW", None)
            assert fields["Nue_Last_Synced_At__c"].planned
            [[before]] = [event.writes for event in plain.events]
            assert {f.field for f in before.fields} == set(fields) - FIELDS.names
            assert status_reads == plain_reads == 1  # one SOQL for the account, status fields included

            # What the diff shows is what the executor then sends.
            await service.queue_repairs(e.store, [customer_id], actor="test")
            assert await e.worker.run_once() == 1
        account = sandbox.salesforce.record("Account", account_id)
        for change in write.fields:
            if change.field != FIELDS.synced_at_field:
                assert comparable(account[change.field]) == comparable(change.planned), change.field
        assert account[FIELDS.synced_at_field]


class TestFollowingSteps:
    async def test_a_won_deals_whole_chain_is_planned_and_matches_what_a_live_run_writes(
            self, sandbox: Sandbox, tmp_path: Path) -> None:
        """Followed step by step on the state with the earlier steps laid over it, a new won deal plans the
        customer, the order, its activation and the write-back, and sends nothing; a live run of the same event
        then writes exactly those four."""
        from revdaemon.engine.preview import preview
        from revdaemon.flows.closed_won_to_order import ClosedWonToOrderFlow
        from tests.integration.test_engine_closed_won import won

        _opportunity, event = won(sandbox, 0)
        flows = [ClosedWonToOrderFlow()]
        async with engine(sandbox, tmp_path, flows=flows) as e:
            await e.store.add_events([event])
            [stored] = await e.store.list_events()
            sandbox.salesforce.log.clear()
            sandbox.nue.log.clear()
            shown = await preview([stored], flows, Fetcher(e.salesforce, e.nue, e.store), follow_steps=True)
            assert data_writes(sandbox) == []
            assert [r for r in sandbox.nue.log.writes() if r.path != "/async/graphql"] == []
            [planned] = shown.events
            assert planned.outcome == "writes" and planned.note is None
            assert [(w.system, w.action, w.target.split(" ")[0]) for w in planned.writes] == [
                ("nue", "create (unless found)", "Customer"), ("nue", "create (unless found)", "Order"),
                ("nue", "activate", "Order"), ("salesforce", "update", "Opportunity")]
            first_only = await preview([stored], flows, Fetcher(e.salesforce, e.nue, e.store))
            assert len(first_only.events[0].writes) == 1 and "later steps follow" in str(first_only.events[0].note)

            await e.worker.run_once()
            live = [w for w in await e.store.list_writes(event_id=stored.id, limit=50) if w.outcome == "ok"]
        assert sorted(w.operation for w in live) == sorted(
            ["NueCreateCustomer", "NueCreateOrder", "NueActivateOrder", "SfUpdate"])
