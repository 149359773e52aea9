"""Sync status on the Salesforce record: set in the same write as the data (no extra call), and the reason
written there when a record cannot be synced."""

from __future__ import annotations

from pathlib import Path

import pytest

from revdaemon.engine.sync_status import StatusFields, SyncStatus
from revdaemon.flows.closed_won_to_order import ClosedWonToOrderFlow
from revdaemon.flows.subscription_status import SubscriptionStatusFlow
from revdaemon.sandbox.runner import Sandbox
from revdaemon.store.states import EventStatus
from tests.integration.engine_fixtures import engine, webhook
from tests.integration.test_engine_closed_won import won
from tests.integration.test_engine_subscription_status import activate_for

pytestmark = pytest.mark.anyio

FIELDS = StatusFields(status_field="Nue_Sync_Status__c", synced_at_field="Nue_Last_Synced_At__c",
                      error_field="Nue_Sync_Error__c")
STATUS = SyncStatus({"Opportunity": FIELDS, "Account": FIELDS})


def api_calls(sandbox: Sandbox) -> int:
    return sandbox.salesforce.log.count(path_prefix="/services/data")


class TestSyncStatus:
    async def test_closed_won_marks_the_opportunity_at_no_extra_call(self, sandbox: Sandbox, tmp_path: Path) -> None:
        counts = {}
        for index, status in ((0, None), (1, STATUS)):
            opportunity_id, event = won(sandbox, index)
            async with engine(sandbox, tmp_path / str(index), flows=[ClosedWonToOrderFlow()],
                              sync_status=status) as e:
                await e.store.add_events([event])
                sandbox.salesforce.log.clear()
                while await e.worker.run_once():
                    pass
                assert (await e.store.queue_depths())[EventStatus.DONE] == 1
                counts[index] = api_calls(sandbox)
            record = sandbox.salesforce.record("Opportunity", opportunity_id)
            if status is None:
                assert record.get("Nue_Sync_Status__c") in (None, "")
            else:
                assert record["Nue_Sync_Status__c"] == "Synced" and record["Nue_Last_Synced_At__c"]
                assert record["Nue_Order_Number__c"]  # the data itself, in the same write
        assert counts[0] == counts[1] > 0

    async def test_a_conflict_writes_its_reason_on_the_account(self, sandbox: Sandbox, tmp_path: Path) -> None:
        customer_id, account_id, subscriptions = activate_for(sandbox, 2, 2)
        async with engine(sandbox, tmp_path, flows=[SubscriptionStatusFlow()], sync_status=STATUS) as e:
            await e.store.add_events([webhook("subscription.updated", dict(subscriptions[0]), "one")])
            await e.worker.run_once()
            assert sandbox.salesforce.record("Account", account_id)["Nue_Sync_Status__c"] == "Synced"
            sandbox.salesforce.update("Account", account_id, {"MRR__c": 1.0})
            sandbox.nue.scenario.create_and_activate_order(customer_id, opportunity=3)
            await e.store.add_events([webhook("subscription.updated", dict(subscriptions[0]), "two")])
            await e.worker.run_once()
            assert len(await e.store.list_conflicts()) == 1
        account = sandbox.salesforce.record("Account", account_id)
        assert account["Nue_Sync_Status__c"] == "Error"
        assert "edited in Salesforce since revdaemon last wrote MRR__c" in account["Nue_Sync_Error__c"]
        assert account["MRR__c"] == 1.0  # the status write touches only the status fields
