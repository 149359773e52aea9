"""The won-deal sweep and a closed-won backfill's events (issue 22): what they ask Salesforce, how they key."""

from __future__ import annotations

from datetime import date
from typing import Any, cast

import pytest

from revdaemon.connectors.salesforce import SalesforceClient
from revdaemon.engine.pollers import SalesforceClosedWonPoller
from revdaemon.engine.sweep import WonDealSweep, backfill_event, sweep_event
from revdaemon.service import backfill_flow
from revdaemon.store import Store

RECORD = {"Id": "006A", "SystemModstamp": "2026-03-01T10:00:00.000+0000", "IsWon": True}


class TestWonDealSweep:
    def test_one_query_for_won_deals_since_the_cut_off_without_an_order(self) -> None:
        """CloseDate on or after the day, IsWon, and the order id field empty (the sweep), or all (a backfill)."""
        sweep = WonDealSweep(cast(SalesforceClient, None), cast(Store, None), order_id_field="Order__c")
        soql = sweep.soql(date(2026, 1, 31), unordered_only=True)
        assert "WHERE IsWon = true AND CloseDate >= 2026-01-31 AND Order__c = null ORDER BY Id" in soql
        assert "Order__c = null" not in sweep.soql(date(2026, 1, 31), unordered_only=False)

    def test_a_swept_deal_has_the_polls_key(self) -> None:
        """The inbox keeps one event per state of a deal, whether the poll or the sweep saw it first."""
        poller = SalesforceClosedWonPoller(cast(SalesforceClient, None), cast(Store, None))
        assert sweep_event(RECORD).key == poller.event_of(RECORD).key

    def test_a_backfill_event_carries_its_cut_off_under_its_own_key(self) -> None:
        """A deal the poll skipped as too old is planned again, with the operator's day as its cut-off."""
        event = backfill_event(RECORD, date(2025, 1, 1))
        assert event.source == "backfill" and event.payload["won_since"] == "2025-01-01"
        assert event.key != sweep_event(RECORD).key


class TestBackfillFlow:
    @pytest.mark.parametrize(("given", "flow"), [("closed_won", "closed_won_to_order"),
                                                 ("closed_won_to_order", "closed_won_to_order"), (None, None)])
    def test_the_config_name_of_flow_1_is_accepted(self, given: str | None, flow: Any) -> None:
        """`--flow closed_won` names flow 1, as config.yaml's section does."""
        assert backfill_flow(given) == flow

    def test_every_backfillable_flow_is_taken_by_its_config_name(self) -> None:
        """Each flows.<name> section of config.yaml that a backfill can feed is a --flow value (the batch jobs,
        renewals and reconciliation, read no changes and have none)."""
        from revdaemon.config import FlowsSettings

        for name in set(FlowsSettings.model_fields) - {"renewals", "reconciliation"}:
            assert backfill_flow(name) is not None, name

    def test_an_unknown_flow_is_refused(self) -> None:
        """A name no flow has is a usage error listing the known ones."""
        with pytest.raises(ValueError, match="closed_won"):
            backfill_flow("nope")
