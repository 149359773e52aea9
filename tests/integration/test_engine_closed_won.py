"""Flow 1 end to end: a deal closed in Salesforce becomes exactly one Nue order, whatever happens."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import anyio
import pytest

from revdaemon.engine.executor import Executor
from revdaemon.engine.lookups import Fetcher
from revdaemon.engine.pollers import SalesforceClosedWonPoller
from revdaemon.engine.worker import Worker
from revdaemon.flows.closed_won_to_order import ClosedWonToOrderFlow
from revdaemon.limits import RetryPolicy
from revdaemon.sandbox.runner import Sandbox
from revdaemon.store.records import NewEvent
from revdaemon.store.states import EventStatus
from tests.integration.engine_fixtures import engine, webhook

pytestmark = pytest.mark.anyio

FLOWS = [ClosedWonToOrderFlow()]


def won(sandbox: Sandbox, index: int) -> tuple[str, NewEvent]:
    """A sales rep closes opportunity `index`; the event the Salesforce poll would store for it."""
    opportunity = sandbox.salesforce.seed_data.opportunities[index]
    record = sandbox.salesforce.close_won(opportunity.id)
    return opportunity.id, closed_won_event(record)


def closed_won_event(record: dict) -> NewEvent:  # type: ignore[type-arg]
    return NewEvent(source="salesforce_poll", key=f"sf:Opportunity:{record['Id']}:{record['SystemModstamp']}",
                    type="opportunity.closed_won", payload={"data": {"Id": record["Id"]}})


def nue_writes(sandbox: Sandbox) -> list[object]:
    """Requests that change Nue (GraphQL reads are POSTs too, and change nothing)."""
    return [r for r in sandbox.nue.log.writes() if r.path != "/async/graphql"]


def orders_for(sandbox: Sandbox, opportunity_id: str) -> list[dict]:  # type: ignore[type-arg]
    return [o for o in sandbox.nue.store.orders.values() if opportunity_id in str(o.get("description") or "")]


class TestClosedWon:
    async def test_one_order_activated_and_written_back(self, sandbox: Sandbox, tmp_path: Path) -> None:
        """The customer is created, the order made and activated, and the opportunity shows its number."""
        opportunity_id, event = won(sandbox, 0)
        async with engine(sandbox, tmp_path, flows=FLOWS) as e:
            await e.store.add_events([event])
            await e.worker.run_once()
            assert (await e.store.queue_depths())[EventStatus.DONE] == 1
        [order] = orders_for(sandbox, opportunity_id)
        assert order["status"] == "Activated"
        account_id = sandbox.salesforce.seed_data.opportunities[0].account_id
        [customer] = [c for c in sandbox.nue.store.customers.values() if c.get("salesAccountId") == account_id]
        assert order["customerId"] == customer["id"]
        opportunity = sandbox.salesforce.record("Opportunity", opportunity_id)
        assert opportunity["Nue_Order_Id__c"] == order["id"]
        assert opportunity["Nue_Order_Number__c"] == order["orderNumber"]
        subscriptions = [s for s in sandbox.nue.store.subscriptions.values() if s["customerId"] == customer["id"]]
        assert len(subscriptions) == 2  # the platform and the seats; the onboarding fee is one-time

    async def test_seen_again_or_polled_back_writes_nothing(self, sandbox: Sandbox, tmp_path: Path) -> None:
        """A duplicate event, and the echo of our own write-back through the poll, change nothing in Nue."""
        opportunity_id, event = won(sandbox, 0)
        async with engine(sandbox, tmp_path, flows=FLOWS) as e:
            await e.store.add_events([event])
            await e.worker.run_once()
            sandbox.nue.log.clear()
            sandbox.salesforce.log.clear()
            poller = SalesforceClosedWonPoller(e.salesforce, e.store)
            result = await poller.run_once()
            assert result.stored >= 1  # the write-back moved SystemModstamp: the poll sees it again
            while await e.worker.run_once():
                pass
        assert nue_writes(sandbox) == [] and sandbox.salesforce.log.writes() == []
        assert len(orders_for(sandbox, opportunity_id)) == 1

    async def test_a_won_deal_named_by_a_nue_webhook_is_not_ordered(self, sandbox: Sandbox, tmp_path: Path) -> None:
        """opportunity.closed_won is Salesforce's to say: the same event from the webhook source (stored before
        the listener refused the type) orders nothing, though the deal is won."""
        opportunity_id, _ = won(sandbox, 0)
        forged = webhook("opportunity.closed_won", {"id": opportunity_id, "Id": opportunity_id}, "forged-won")
        async with engine(sandbox, tmp_path, flows=FLOWS) as e:
            await e.store.add_events([forged])
            assert await e.worker.run_once() == 1
            assert (await e.store.queue_depths())[EventStatus.DONE] == 1
        assert orders_for(sandbox, opportunity_id) == [] and nue_writes(sandbox) == []

    async def test_edit_after_the_order_is_a_conflict(self, sandbox: Sandbox, tmp_path: Path) -> None:
        """A quantity changed after the order exists opens a conflict and overwrites nothing."""
        opportunity_id, event = won(sandbox, 0)
        async with engine(sandbox, tmp_path, flows=FLOWS) as e:
            await e.store.add_events([event])
            await e.worker.run_once()
            line = next(r for r in sandbox.salesforce.records("OpportunityLineItem")
                        if r["OpportunityId"] == opportunity_id and r["Quantity"] == 25)
            sandbox.salesforce.update("OpportunityLineItem", line["Id"], {"Quantity": 40})
            edited = sandbox.salesforce.record("Opportunity", opportunity_id)
            sandbox.nue.log.clear()
            await e.store.add_events([closed_won_event(edited)])
            await e.worker.run_once()
            [conflict] = await e.store.list_conflicts()
            assert conflict.flow == "closed_won_to_order" and "changed after" in conflict.reason
            assert "40" in conflict.salesforce_values.values()
        assert nue_writes(sandbox) == []

    async def test_an_order_nue_refuses_is_a_dead_letter_with_its_error(self, sandbox: Sandbox,
                                                                         tmp_path: Path) -> None:
        """A line Nue rejects (a discount over 100%) dead-letters the event with Nue's own message."""
        opportunity_id, _event = won(sandbox, 5)
        line = next(r for r in sandbox.salesforce.records("OpportunityLineItem")
                    if r["OpportunityId"] == opportunity_id)
        sandbox.salesforce.update("OpportunityLineItem", line["Id"], {"Discount": 150})
        event = closed_won_event(sandbox.salesforce.record("Opportunity", opportunity_id))
        async with engine(sandbox, tmp_path, flows=FLOWS) as e:
            await e.store.add_events([event])
            await e.worker.run_once()
            [letter] = await e.store.list_dead_letters()
            assert letter.system == "nue" and "discount" in letter.error and letter.status == 400
            # what revdaemon sent, apart from the error: the order it asked for, the refused line among it
            sent = letter.request["sent"]
            assert sent["kind"] == "NueCreateOrder" and sent["target"] == f"nue:Order:{opportunity_id}"
            assert [line["discount"] for line in sent["payload"]["orderProducts"]] == ["150.0", "0"], sent
            assert (await e.store.replay_dead_letter(letter.id)).status is EventStatus.RECEIVED
        assert orders_for(sandbox, opportunity_id) == []

    async def test_a_worker_cancelled_after_creating_the_order_makes_no_second_one(self, sandbox: Sandbox,
                                                                                     tmp_path: Path) -> None:
        """Cancelled between Nue's answer and the bookkeeping, the next worker finds the order and goes on."""
        opportunity_id, event = won(sandbox, 3)
        async with engine(sandbox, tmp_path, flows=FLOWS) as e:
            await e.store.add_events([event])
            real_create = e.nue.create_order
            with anyio.CancelScope() as scope:
                async def create_then_die(payload: dict) -> dict:  # type: ignore[type-arg]
                    order = await real_create(payload)
                    scope.cancel()  # the process dies here: Nue has the order, the store does not know it
                    await anyio.sleep(1)
                    return order

                e.nue.create_order = create_then_die  # type: ignore[method-assign]
                crashed = Worker(e.store, Fetcher(e.salesforce, e.nue),
                                 Executor(e.store, e.salesforce, e.nue, mapping_version=1), FLOWS,
                                 name="crashed", lease=timedelta(seconds=0))
                await crashed.run_once()
            e.nue.create_order = real_create  # type: ignore[method-assign]
            assert len(orders_for(sandbox, opportunity_id)) == 1
            assert (await e.store.queue_depths())[EventStatus.CLAIMED] == 1
            survivor = Worker(e.store, Fetcher(e.salesforce, e.nue),
                              Executor(e.store, e.salesforce, e.nue, mapping_version=1), FLOWS,
                              name="survivor", backoff=RetryPolicy(base_delay=0, max_delay=0))
            await survivor.run_once()
            assert (await e.store.queue_depths())[EventStatus.DONE] == 1
        [order] = orders_for(sandbox, opportunity_id)
        assert order["status"] == "Activated"
        assert sandbox.salesforce.record("Opportunity", opportunity_id)["Nue_Order_Id__c"] == order["id"]


class TestOriginatingOpportunity:
    async def test_the_won_opportunity_shows_its_subscriptions_status(self, sandbox: Sandbox, tmp_path: Path) -> None:
        """After flow 1 made the order, flow 2 writes the subscriptions' status on the opportunity too."""
        from revdaemon.flows.subscription_status import SubscriptionStatusFlow
        from tests.integration.engine_fixtures import webhook

        opportunity_id, event = won(sandbox, 0)
        async with engine(sandbox, tmp_path, flows=[ClosedWonToOrderFlow(), SubscriptionStatusFlow()]) as e:
            await e.store.add_events([event])
            await e.worker.run_once()
            [order] = orders_for(sandbox, opportunity_id)
            subscription = next(s for s in sandbox.nue.store.subscriptions.values()
                                if s["customerId"] == order["customerId"])
            await e.store.add_events([webhook("subscription.updated", dict(subscription), "s-1")])
            await e.worker.run_once()
        assert sandbox.salesforce.record("Opportunity", opportunity_id)["Subscription_Status__c"] == "Active"


class TestDryRun:
    async def test_dry_run_plans_and_logs_but_sends_and_settles_nothing(self, sandbox: Sandbox,
                                                                        tmp_path: Path) -> None:
        """--dry-run logs the first planned write of each event; both APIs see no write; the inbox is untouched."""
        from structlog.testing import capture_logs

        _opportunity_id, event = won(sandbox, 0)
        async with engine(sandbox, tmp_path, flows=FLOWS, dry_run=True) as e:
            await e.store.add_events([event])
            sandbox.salesforce.log.clear()
            sandbox.nue.log.clear()
            with capture_logs() as logs:
                assert await e.worker.run_once() == 1
                assert await e.worker.run_once() == 0  # already planned: not planned again
            [stored] = await e.store.list_events()
            assert stored.status is EventStatus.RECEIVED and stored.attempts == 0
        planned = [entry for entry in logs if entry["event"] == "write_planned"]
        assert planned and planned[0]["write"]["kind"] == "NueCreateCustomer"
        data_writes = [r for r in sandbox.salesforce.log.writes() if r.path != "/services/oauth2/token"]
        assert nue_writes(sandbox) == [] and data_writes == []


class TestCloseDate:
    async def test_closing_moves_a_future_close_date_to_today_and_keeps_a_past_one(
            self, sandbox: Sandbox, tmp_path: Path) -> None:
        """As Salesforce does (Help 004517774): so a deal dated before the go-live and won after it is skipped
        (logged), and one dated ahead is won today and ordered."""
        from datetime import UTC, date, datetime

        ahead, behind = sandbox.salesforce.seed_data.opportunities[0], sandbox.salesforce.seed_data.opportunities[1]
        today = datetime.now(UTC).date()
        sandbox.salesforce.update("Opportunity", behind.id, {"CloseDate": "2020-01-31"})
        assert sandbox.salesforce.close_won(ahead.id)["CloseDate"] == today.isoformat()
        old = sandbox.salesforce.close_won(behind.id)
        assert date.fromisoformat(old["CloseDate"]) == date(2020, 1, 31)
        async with engine(sandbox, tmp_path, flows=FLOWS) as e:
            await e.store.add_events([closed_won_event(old)])
            await e.worker.run_once()
            assert (await e.store.queue_depths())[EventStatus.DONE] == 1
        assert orders_for(sandbox, behind.id) == []
