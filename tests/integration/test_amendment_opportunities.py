"""Issue 26 (items 3, 4) end to end: an activated change order becomes one Closed Won amendment opportunity and
updates the original deal's Contract, against both simulators over real sockets. Redelivered and replayed
notifications, a lost answer and the Salesforce poll that sees the opportunity won make nothing twice, and flow 1
never orders it (no loop)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import anyio
import pytest
from structlog.testing import capture_logs

from revdaemon.engine.pollers import SalesforceClosedWonPoller
from revdaemon.flows.amendments import AmendmentsFlow
from revdaemon.flows.base import Flow
from revdaemon.flows.closed_won_to_order import ClosedWonToOrderFlow
from revdaemon.sandbox.runner import Sandbox
from revdaemon.store.states import EventStatus
from tests.integration.engine_fixtures import engine, webhook
from tests.integration.test_flow_amendments import deliver, notes, published

pytestmark = pytest.mark.anyio

FLOWS: list[Flow] = [AmendmentsFlow()]


def amendments(sandbox: Sandbox, order_id: str) -> list[dict[str, Any]]:
    """The opportunities keyed by this change order (flow 5's), deleted ones left out."""
    return [o for o in sandbox.salesforce.records("Opportunity") if o.get("Nue_Amendment_Key__c") == order_id]


def seated(sandbox: Sandbox, index: int = 0) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """A customer with an activated order (platform x1, 25 seats at 10 % off): (customer, order, seats)."""
    scenario = sandbox.nue.scenario
    customer = scenario.create_customer(index)
    order = scenario.create_and_activate_order(customer["id"], opportunity=0)["order"]
    seats = next(s for s in sandbox.nue.store.subscriptions.values()
                 if s["customerId"] == customer["id"] and s["quantity"] == 25)
    sandbox.nue.webhooks.clear()
    return customer, order, seats


class TestAmendmentOpportunity:
    async def test_one_upsell_opportunity_whatever_is_delivered_again(self, sandbox: Sandbox, tmp_path: Path) -> None:
        """+5 seats: one Closed Won Upsell of 2,160.00 ACV (180.00 MRR x 12) on the account, with the change order's
        id; the same webhook twice, Nue's redelivery under new ids, and a replay by a daemon with a fresh store
        (its own memory of the write gone) make no second one."""
        customer, _, seats = seated(sandbox)
        account_id = customer["externalId"]
        change = sandbox.nue.scenario.change(seats["name"], "UpdateQuantity", quantity=5)["order"]
        events = published(sandbox, "order.activated")
        async with engine(sandbox, tmp_path / "first", flows=FLOWS) as e:
            await deliver(e, events + events)  # the same notification twice: one inbox event
            await deliver(e, [webhook(ev.type, ev.payload["data"], f"again-{i}") for i, ev in enumerate(events)])
        [opportunity] = amendments(sandbox, change["id"])
        assert opportunity["StageName"] == "Closed Won" and opportunity["IsWon"] is True
        assert (opportunity["AccountId"], opportunity["Type"]) == (account_id, "Upsell")
        assert Decimal(str(opportunity["Amount"])) == Decimal("2160.00")
        assert opportunity["CloseDate"] == change["activatedDate"][:10]
        assert (opportunity["Nue_Order_Id__c"], opportunity["Nue_Order_Number__c"]) == (change["id"],
                                                                                         change["orderNumber"])
        sandbox.salesforce.log.clear()
        async with engine(sandbox, tmp_path / "replay", flows=FLOWS) as e:
            await deliver(e, [webhook(ev.type, ev.payload["data"], f"replay-{i}") for i, ev in enumerate(events)])
        assert [r for r in sandbox.salesforce.log.writes() if r.path.startswith("/services/data")] == []
        assert len(amendments(sandbox, change["id"])) == 1 and len(notes(sandbox, account_id)) == 1

    @pytest.mark.parametrize("fault", ["applied_drop_next", "applied_503_next", "applied_504_next"])
    async def test_an_upsert_whose_answer_was_lost_leaves_one(self, sandbox: Sandbox, tmp_path: Path,
                                                             fault: str) -> None:
        """Salesforce makes the opportunity and the answer is lost: the upsert by the key is sent again and
        finds it, so exactly one opportunity exists."""
        _, _, seats = seated(sandbox)
        change = sandbox.nue.scenario.change(seats["name"], "UpdateQuantity", quantity=5)["order"]
        events = published(sandbox, "order.activated")
        sandbox.salesforce.set_faults(**{fault: 1}, applied_paths=["PATCH /composite/sobjects/Opportunity/*"])
        async with engine(sandbox, tmp_path, flows=FLOWS, settle=timedelta(seconds=1)) as e:
            await e.store.add_events(events)
            with anyio.fail_after(20):
                while (await e.store.queue_depths())[EventStatus.DONE] < 1:
                    if not await e.worker.run_once():
                        await anyio.sleep(0.1)
        assert sandbox.salesforce.faults_fired()[fault.removesuffix("_next")] == 1
        assert len(amendments(sandbox, change["id"])) == 1

    async def test_flow_1_never_orders_it(self, sandbox: Sandbox, tmp_path: Path) -> None:
        """No loop: the Salesforce poll sees the Closed Won amendment opportunity, flow 1 recognises it by its
        Nue_Order_Id__c, and Nue gets no order, no customer, no write at all."""
        _, _, seats = seated(sandbox)
        change = sandbox.nue.scenario.change(seats["name"], "UpdateQuantity", quantity=5)["order"]
        events = published(sandbox, "order.activated")
        flows: list[Flow] = [ClosedWonToOrderFlow(), AmendmentsFlow()]
        async with engine(sandbox, tmp_path, flows=flows) as e:
            await deliver(e, events)
            [opportunity] = amendments(sandbox, change["id"])
            orders_before = len(sandbox.nue.store.orders)
            sandbox.nue.log.clear()
            poller = SalesforceClosedWonPoller(e.salesforce, e.store)
            await anyio.sleep(0.01)
            result = await poller.run_once(datetime.now(UTC) + timedelta(seconds=5))
            assert result.stored >= 1
            seen = [ev for ev in await e.store.list_events(status=EventStatus.RECEIVED)
                    if ev.payload.get("data", {}).get("Id") == opportunity["Id"]]
            assert seen  # the poll stored the won amendment opportunity for flow 1
            with capture_logs() as logs:
                while await e.worker.run_once():
                    pass
            assert (await e.store.queue_depths())[EventStatus.RECEIVED] == 0
            [skipped] = [line for line in logs if line.get("flow") == "closed_won_to_order"]
            assert "amendment opportunity" in skipped["reason"]
        assert len(sandbox.nue.store.orders) == orders_before
        assert [r.path for r in sandbox.nue.log.writes() if r.path != "/async/graphql"] == []  # GraphQL only reads
        assert len(amendments(sandbox, change["id"])) == 1

    async def test_the_original_deals_contract_follows(self, sandbox: Sandbox, tmp_path: Path) -> None:
        """The won deal's Contract (its ContractId) gets the subscriptions' MRR now and a term to their end."""
        customer, order, seats = seated(sandbox)
        account_id = customer["externalId"]
        deal = sandbox.salesforce.seed_data.opportunities[0].id
        start = seats["subscriptionStartDate"]
        contract_id = sandbox.salesforce.create("Contract", {"AccountId": account_id, "StartDate": start,
                                                             "ContractTerm": 12})
        sandbox.salesforce.update("Opportunity", deal, {"Nue_Order_Id__c": order["id"], "ContractId": contract_id})
        sandbox.nue.scenario.change(seats["name"], "UpdateTerm", term=12)
        sandbox.nue.scenario.change(seats["name"], "UpdateQuantity", quantity=5)
        async with engine(sandbox, tmp_path, flows=FLOWS) as e:
            await deliver(e, published(sandbox, "order.activated"))
            contract = sandbox.salesforce.record("Contract", contract_id)
            # platform 500 + 30 seats x 40 x 0.9 = 1580.00 a month; the seats now run 24 months.
            assert Decimal(str(contract["MRR__c"])) == Decimal("1580.00")
            assert contract["ContractTerm"] == 24 and contract["EndDate"] is not None
            sandbox.salesforce.log.clear()
            await deliver(e, [webhook("order.activated", {"id": o["id"], "customerId": customer["id"]}, f"r-{o['id']}")
                              for o in sandbox.nue.store.orders.values() if o["orderType"] == "Change"])
        assert not [r for r in sandbox.salesforce.log.writes() if "Contract" in r.path]


class TestEveryChangeTypeEndToEnd:
    async def test_an_upgrade_is_priced_at_its_new_product(self, sandbox: Sandbox, tmp_path: Path) -> None:
        """Platform (500) moved to the Growth Bundle (1200): +700.00 MRR, an Upsell of 8,400.00 ACV."""
        customer, _, _ = seated(sandbox)
        platform = next(s for s in sandbox.nue.store.subscriptions.values()
                        if s["customerId"] == customer["id"] and s["quantity"] == 1)
        target = sandbox.nue.store.catalog.by_sku["GROW-BNDL"].id
        change = sandbox.nue.scenario.change(platform["name"], "Upgrade", targetPriceBookEntryId=target)["order"]
        async with engine(sandbox, tmp_path, flows=FLOWS) as e:
            await deliver(e, published(sandbox, "order.activated"))
        [note] = notes(sandbox, customer["externalId"])
        assert "Change type: Upgrade" in note["Body"]
        assert "MRR before: 500.00\nMRR after: 1200.00\nMRR delta: +700.00" in note["Body"]
        [opportunity] = amendments(sandbox, change["id"])
        assert Decimal(str(opportunity["Amount"])) == Decimal("8400.00") and opportunity["Type"] == "Upsell"

    async def test_adjust_price_is_reported_and_taken_from_nues_total(self, sandbox: Sandbox, tmp_path: Path) -> None:
        """AdjustPrice shows on no record: the Note says so, and the amount is Nue's own orderACV."""
        customer, _, _ = seated(sandbox)
        platform = next(s for s in sandbox.nue.store.subscriptions.values()
                        if s["customerId"] == customer["id"] and s["quantity"] == 1)
        change = sandbox.nue.scenario.change(platform["name"], "AdjustPrice", discount=20)["order"]
        async with engine(sandbox, tmp_path, flows=FLOWS) as e:
            await deliver(e, published(sandbox, "order.activated"))
        [note] = notes(sandbox, customer["externalId"])
        assert "Change type: AdjustPrice" in note["Body"] and "not known from Nue's API" in note["Body"]
        assert "Total MRR delta: -100.00 (Nue's own total for the order: orderACV -1200.00 / 12)" in note["Body"]
        [opportunity] = amendments(sandbox, change["id"])
        assert Decimal(str(opportunity["Amount"])) == Decimal("-1200.00") and opportunity["Type"] == "Downsell"
