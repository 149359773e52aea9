"""Flow 1 in a tenant that already has orders (issue 22): every won deal is edited in Salesforce, the poll
delivers them all, and only the genuinely new deals get a Nue order; the others are linked or left alone."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from revdaemon.engine.lookups import Fetcher
from revdaemon.engine.pollers import SalesforceClosedWonPoller
from revdaemon.engine.sweep import WonDealSweep
from revdaemon.flows.closed_won_to_order import (
    BEFORE_CUT_OFF,
    ORDERED,
    TO_ORDER,
    ClosedWonMapping,
    ClosedWonToOrderFlow,
)
from revdaemon.sandbox.runner import Sandbox, create_sandbox
from revdaemon.service import assess_won_deals, backfill
from revdaemon.store.records import NewEvent
from revdaemon.store.states import EventStatus
from tests.integration.engine_fixtures import Engine, engine

pytestmark = pytest.mark.anyio

DEALS = 300  # 1,000 is the scenario's size (revdaemon sandbox --brownfield 1000); this keeps make test quick


@pytest.fixture
def brownfield(tmp_path: Path) -> Iterator[Sandbox]:
    box = create_sandbox(key_dir=tmp_path / "keys", seed=3, brownfield=DEALS).start_threads()
    try:
        yield box
    finally:
        box.close()


def edit_every_deal(box: Sandbox, poller: SalesforceClosedWonPoller) -> list[NewEvent]:
    """A rep touches every won deal (a description edit); the events the Salesforce poll stores for them.
    (Built here rather than polled: hundreds of rows in one second trip the poller's case-sensitive Id order
    check against the simulator's case-insensitive ORDER BY Id, a mismatch of its own.)"""
    return [poller.event_of(box.salesforce.update("Opportunity", deal.opportunity_id,
                                                  {"Description": "touched after go-live"}))
            for deal in box.salesforce.seed_data.brownfield]


async def drain(e: Engine) -> None:
    while await e.worker.run_once():
        pass


class TestBrownfield:
    async def test_only_genuinely_new_deals_are_ordered(self, brownfield: Sandbox, tmp_path: Path) -> None:
        """Orders made from quotes, by hand or by an earlier tool are recognised and written back; deals won
        before the go-live are left alone; only the new deals get an order, once."""
        seed = brownfield.salesforce.seed_data
        kinds = Counter(d.kind for d in seed.brownfield)
        flow = ClosedWonToOrderFlow(ClosedWonMapping(won_since=seed.go_live))
        orders_before = len(brownfield.nue.store.orders)
        async with engine(brownfield, tmp_path, flows=[flow]) as e:
            events = edit_every_deal(brownfield, SalesforceClosedWonPoller(e.salesforce, e.store))
            assert sum(await e.store.add_events(events)) == DEALS
            await drain(e)
            depths = await e.store.queue_depths()
            assert depths.get(EventStatus.DEAD, 0) == 0 and depths.get(EventStatus.CONFLICT, 0) == 0
            # The daily sweep finds the won deals since the cut-off still without an order id: of the brownfield
            # none is left, but the seed's own deal won two days ago, which nobody edited, no poll delivered.
            assert seed.go_live is not None
            unseen = {o.id for o in seed.opportunities[:6] if o.stage == "Closed Won" and o.close_date >= seed.go_live}
            sweep = WonDealSweep(e.salesforce, e.store, won_since=seed.go_live)
            assert await sweep.run_once() == len(unseen) == 1
            await drain(e)
            assert await sweep.run_once() == 0  # written back: nothing to sweep; a repeat queues nothing
        new_orders = list(brownfield.nue.store.orders.values())[orders_before:]
        new_deals = {d.opportunity_id for d in seed.brownfield if d.kind == "new"} | unseen
        assert len(new_orders) == kinds["new"] + 1
        assert {o["description"].rsplit(":", 1)[-1].rstrip(")") for o in new_orders} == new_deals
        for deal in seed.brownfield:
            shown = brownfield.salesforce.record("Opportunity", deal.opportunity_id)["Nue_Order_Id__c"]
            assert bool(shown) == (deal.kind != "before_go_live"), deal.kind

    async def test_backfill_dry_run_says_why_and_backfill_orders_old_deals(self, brownfield: Sandbox,
                                                                         tmp_path: Path) -> None:
        """The dry run lists every deal with its verdict and link; the backfill then orders the deals won
        before the go-live (and only those with no order), which no poll would."""
        seed = brownfield.salesforce.seed_data
        kinds = Counter(d.kind for d in seed.brownfield)
        flow = ClosedWonToOrderFlow(ClosedWonMapping(won_since=seed.go_live))
        since = datetime.now(UTC) - timedelta(days=800)
        orders_before = len(brownfield.nue.store.orders)
        async with engine(brownfield, tmp_path, flows=[flow]) as e:
            poller = SalesforceClosedWonPoller(e.salesforce, e.store)
            rows = await assess_won_deals(poller, since, flow, Fetcher(e.salesforce, e.nue, e.store))
            by_id = {r["opportunity"]: r for r in rows}
            verdicts = Counter(by_id[d.opportunity_id]["verdict"] for d in seed.brownfield)
            assert verdicts == {ORDERED: kinds["from_quote"] + kinds["by_hand"] + kinds["order_id_on_opportunity"],
                                TO_ORDER: kinds["before_go_live"] + kinds["new"]}
            links = Counter(by_id[d.opportunity_id]["link"] for d in seed.brownfield if d.kind != "new")
            assert links["quote of the opportunity"] == kinds["from_quote"]
            assert links["opportunity id on the order"] == kinds["by_hand"]
            assert links["order id on the opportunity"] == kinds["order_id_on_opportunity"]
            assert len(brownfield.nue.store.orders) == orders_before  # a dry run orders nothing
            later = datetime.now(UTC) - timedelta(days=90)
            late = await assess_won_deals(poller, later, flow, Fetcher(e.salesforce, e.nue, e.store))
            assert {r["verdict"] for r in late if r["opportunity"] in {
                d.opportunity_id for d in seed.brownfield if d.kind == "before_go_live"}} <= {BEFORE_CUT_OFF}
            await backfill(e.store, [poller], since, flow="closed_won")
            await drain(e)
            assert (await e.store.queue_depths()).get(EventStatus.DEAD, 0) == 0
        # ... and the seed's own deal won two days ago, which has no order either.
        own = sum(1 for o in seed.opportunities[:6] if o.stage == "Closed Won")
        assert len(brownfield.nue.store.orders) - orders_before == kinds["before_go_live"] + kinds["new"] + own == 61
