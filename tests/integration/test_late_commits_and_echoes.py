"""Late commits and revdaemon's own echo, with the real pollers and worker against the sandbox (issue 22)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import anyio
import pytest

from revdaemon.engine.pollers import NuePoller, Poller, SalesforceClosedWonPoller
from revdaemon.engine.sync_status import StatusFields, SyncStatus
from revdaemon.flows.closed_won_to_order import ClosedWonToOrderFlow
from revdaemon.sandbox.runner import Sandbox
from revdaemon.store.states import EventStatus
from tests.integration.engine_fixtures import Engine, engine
from tests.integration.test_engine_closed_won import orders_for
from tests.integration.test_engine_subscription_status import activate_for

pytestmark = pytest.mark.anyio

FIELDS = StatusFields(status_field="Nue_Sync_Status__c", synced_at_field="Nue_Last_Synced_At__c",
                      error_field="Nue_Sync_Error__c")
STATUS = SyncStatus({"Opportunity": FIELDS, "Account": FIELDS})


def later() -> datetime:
    return datetime.now(UTC) + timedelta(seconds=5)


def salesforce_writes(sandbox: Sandbox) -> int:
    """Write requests to the Salesforce API (the token endpoint is not one)."""
    return sum(1 for r in sandbox.salesforce.log.writes() if r.path.startswith("/services/data"))


def salesforce_calls(sandbox: Sandbox) -> int:
    return sandbox.salesforce.log.count(path_prefix="/services/data")


async def interval(poller: Poller, e: Engine) -> None:
    """One poll interval: the poll, then the workers until the inbox has nothing due."""
    await anyio.sleep(0.01)  # a new millisecond: a write in this interval gets a new SystemModstamp
    await poller.run_once(later())
    while await e.worker.run_once():
        pass


class TestLateCommits:
    async def test_a_deal_won_late_is_synced_once(self, sandbox: Sandbox, tmp_path: Path) -> None:
        """Won in a transaction that began 5 minutes before it committed, after the poll passed that time: one
        event for it, one order, one write-back, however many polls re-read it."""
        first, late = [o for o in sandbox.salesforce.records("Opportunity") if not o["IsClosed"]][:2]
        async with engine(sandbox, tmp_path, flows=[ClosedWonToOrderFlow()]) as e:
            poller = SalesforceClosedWonPoller(e.salesforce, e.store)
            sandbox.salesforce.close_won(first["Id"])
            await interval(poller, e)
            writes = salesforce_writes(sandbox)
            record = sandbox.salesforce.commit_late("Opportunity", late["Id"], {"StageName": "Closed Won"},
                                                    minutes_ago=5)
            for _ in range(4):
                await interval(poller, e)
            assert await e.store.find_event(f"sf:Opportunity:{late['Id']}:{record['SystemModstamp']}") is not None
            assert len(orders_for(sandbox, late["Id"])) == 1
            assert salesforce_writes(sandbox) == writes + 1  # its write-back, once
            assert sandbox.salesforce.record("Opportunity", late["Id"])["Nue_Order_Number__c"]

    async def test_a_nue_change_committed_late_is_synced_once(self, sandbox: Sandbox, tmp_path: Path) -> None:
        """A subscription change stamped 5 minutes before the poll's cursor is read and written to the account
        once."""
        _customer, account_id, subscriptions = activate_for(sandbox, 1, 1)
        async with engine(sandbox, tmp_path) as e:
            poller = NuePoller("Subscription", e.nue, e.store)
            await interval(poller, e)
            mrr = sandbox.salesforce.record("Account", account_id)["MRR__c"]
            writes = salesforce_writes(sandbox)
            record = sandbox.nue.scenario.commit_late("Subscription", subscriptions[0]["id"], minutes_ago=5,
                                                      quantity=int(subscriptions[0]["quantity"]) + 5)
            for _ in range(4):
                await interval(poller, e)
            event = await e.store.find_event(
                f"nue:subscription.updated:{record['id']}:{record['lastModifiedDate']}")
            assert event is not None and event.status is EventStatus.DONE
            assert salesforce_writes(sandbox) == writes + 1
            assert sandbox.salesforce.record("Account", account_id)["MRR__c"] > mrr


class TestOwnEcho:
    async def test_the_echo_of_a_write_back_costs_no_call(self, sandbox: Sandbox, tmp_path: Path) -> None:
        """The poll sees the order number revdaemon wrote (LastModifiedById is its user, the audit log has the
        write): the event is finished without a read; an edit by the same user that revdaemon did not make is
        planned as usual."""
        opportunity = next(o for o in sandbox.salesforce.records("Opportunity") if not o["IsClosed"])
        async with engine(sandbox, tmp_path, flows=[ClosedWonToOrderFlow()]) as e:
            poller = SalesforceClosedWonPoller(e.salesforce, e.store)
            sandbox.salesforce.close_won(opportunity["Id"])
            await interval(poller, e)
            echo = sandbox.salesforce.record("Opportunity", opportunity["Id"])
            assert echo["LastModifiedById"] == e.salesforce.integration_user_id is not None
            await anyio.sleep(0.01)
            assert (await poller.run_once(later())).stored == 1  # the echo is stored (re-reads dedupe on it)
            before = salesforce_calls(sandbox)
            while await e.worker.run_once():
                pass
            assert salesforce_calls(sandbox) == before  # recognised without a read
            stored = await e.store.find_event(f"sf:Opportunity:{opportunity['Id']}:{echo['SystemModstamp']}")
            assert stored is not None and stored.status is EventStatus.DONE

            sandbox.salesforce.update("Opportunity", opportunity["Id"], {"NextStep": "Renewal call"},
                                      user_id=e.salesforce.integration_user_id)
            await anyio.sleep(0.01)
            assert (await poller.run_once(later())).stored == 1
            before = salesforce_calls(sandbox)
            while await e.worker.run_once():
                pass
            assert salesforce_calls(sandbox) > before  # not ours: read and planned (nothing to do, no write)
            assert len(orders_for(sandbox, opportunity["Id"])) == 1

    async def test_the_error_status_does_not_loop_or_reopen_the_dead_letter(self, sandbox: Sandbox,
                                                                           tmp_path: Path) -> None:
        """With the status fields on and an order Nue refuses for good: over 10 poll intervals one status
        write, one dead letter; the status write's own event joins the letter instead of making another."""
        opportunity_id = sandbox.salesforce.seed_data.opportunities[5].id
        line = next(r for r in sandbox.salesforce.records("OpportunityLineItem")
                    if r["OpportunityId"] == opportunity_id)
        sandbox.salesforce.update("OpportunityLineItem", line["Id"], {"Discount": 150})
        async with engine(sandbox, tmp_path, flows=[ClosedWonToOrderFlow()], sync_status=STATUS) as e:
            poller = SalesforceClosedWonPoller(e.salesforce, e.store)
            sandbox.salesforce.close_won(opportunity_id)
            sandbox.salesforce.log.clear()
            for _ in range(10):
                await interval(poller, e)
            assert salesforce_writes(sandbox) == 1
            [letter] = await e.store.list_dead_letters()
            assert letter.system == "nue" and "discount" in letter.error
            record = sandbox.salesforce.record("Opportunity", opportunity_id)
            assert record["Nue_Sync_Status__c"] == "Error" and "discount" in record["Nue_Sync_Error__c"]
            events = [ev for ev in await e.store.list_events(limit=100) if opportunity_id in ev.key]
            assert {ev.status for ev in events} == {EventStatus.DEAD}
            assert (await e.store.replay_dead_letter(letter.id)).status is EventStatus.RECEIVED  # a person can
        assert orders_for(sandbox, opportunity_id) == []
