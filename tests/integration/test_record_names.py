"""Names and numbers beside ids: kept from what the workers read, shown by the service the CLI and console share,
and found by the timeline. Over the simulators, with no API call made to learn a name."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from revdaemon import service
from revdaemon.flows.closed_won_to_order import ClosedWonToOrderFlow
from revdaemon.sandbox.runner import Sandbox
from revdaemon.store.records import NewConflict, NewEvent
from tests.integration.engine_fixtures import engine
from tests.integration.test_engine_closed_won import orders_for, won

pytestmark = pytest.mark.anyio


async def test_a_won_deal_leaves_its_names_and_the_timeline_finds_it_by_them(sandbox: Sandbox,
                                                                              tmp_path: Path) -> None:
    opportunity_id, event = won(sandbox, 0)
    seeded = sandbox.salesforce.seed_data.opportunities[0]
    async with engine(sandbox, tmp_path, flows=[ClosedWonToOrderFlow()]) as e:
        await e.store.add_events([event])
        await e.worker.run_once()
        [order] = orders_for(sandbox, opportunity_id)
        opportunity = sandbox.salesforce.record("Opportunity", opportunity_id)
        account = sandbox.salesforce.record("Account", seeded.account_id)
        kept = {(n.system, n.record_id): n.text for n in await e.store.names_of(
            [opportunity_id, seeded.account_id, order["id"], order["customerId"]])}
        assert kept[("salesforce", opportunity_id)] == opportunity["Name"]
        assert kept[("nue", order["id"])].endswith(f"({order['orderNumber']})") or \
            kept[("nue", order["id"])] == order["orderNumber"]
        assert ("nue", order["customerId"]) in kept

        [row] = await service.list_events(e.store)
        assert opportunity["Name"] in row["about"]

        by_number = await service.timeline(e.store, order["orderNumber"])
        assert [m["record_id"] for m in by_number["matches"]] == [order["id"]]
        assert any(entry["kind"] == "planned write" for entry in by_number["entries"])
        by_name = await service.timeline(e.store, opportunity["Name"].upper())  # as a person types it
        assert opportunity_id in by_name["ids"]
        assert any(entry["event_id"] == row["id"] for entry in by_name["entries"])
        assert by_name["names"][opportunity_id] == opportunity["Name"]

        # A conflict about the account later shows the account's name without reading Salesforce.
        await e.store.add_events([NewEvent(source="nue_webhook", key="nue:n1", type="subscription.updated")])
        [claimed] = await e.store.claim_events(worker="t", limit=1, lease=timedelta(minutes=1))
        await e.store.conflict_event(claimed.id, NewConflict(flow="subscription_status",
                                                             record_ref=f"salesforce:Account:{seeded.account_id}",
                                                             reason="edited in Salesforce"))
        before = len(sandbox.salesforce.log.entries())
        [conflict] = await service.list_conflicts(e.store)
        assert conflict["about"] == account["Name"], kept
        assert len(sandbox.salesforce.log.entries()) == before
