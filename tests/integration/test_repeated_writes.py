"""A key confirmed long ago never blocks a needed rewrite (issue 22, part 5): a write-back whose target no longer
shows the value is planned again, under a new key, and sent."""

from __future__ import annotations

from pathlib import Path

import pytest

from revdaemon.sandbox.runner import Sandbox
from revdaemon.store.states import EventStatus
from tests.integration.engine_fixtures import engine
from tests.integration.test_engine_closed_won import FLOWS, closed_won_event, orders_for, won

pytestmark = pytest.mark.anyio


class TestWriteBackAgain:
    async def test_a_blanked_order_id_is_written_back_again(self, sandbox: Sandbox, tmp_path: Path) -> None:
        """Someone blanks Nue_Order_Id__c after the sync; the next run writes it back (and makes no second
        order), where the write-back's old key, once confirmed, was skipped for ever."""
        opportunity_id, event = won(sandbox, 0)
        async with engine(sandbox, tmp_path, flows=FLOWS) as e:
            await e.store.add_events([event])
            await e.worker.run_once()
            [order] = orders_for(sandbox, opportunity_id)
            assert sandbox.salesforce.record("Opportunity", opportunity_id)["Nue_Order_Id__c"] == order["id"]

            blanked = sandbox.salesforce.update("Opportunity", opportunity_id, {"Nue_Order_Id__c": None})
            await e.store.add_events([closed_won_event(blanked)])  # the poll sees the edit
            await e.worker.run_once()
            assert (await e.store.queue_depths())[EventStatus.DONE] == 2

            sandbox.salesforce.log.clear()
            await e.store.add_events([closed_won_event({**blanked, "SystemModstamp": "later"})])
            await e.worker.run_once()  # shown again: nothing more to write
        assert sandbox.salesforce.record("Opportunity", opportunity_id)["Nue_Order_Id__c"] == order["id"]
        assert orders_for(sandbox, opportunity_id) == [order]
        assert [r for r in sandbox.salesforce.log.writes() if "/composite/sobjects" in r.path] == []
