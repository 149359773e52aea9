"""Flow 7 end to end: a Nue quote and its requotes shown on the opportunity, lines replaced, never duplicated."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from revdaemon.flows.quote_sync import QuoteSyncFlow
from revdaemon.sandbox.nue import quotes
from revdaemon.sandbox.runner import Sandbox
from revdaemon.store.states import EventStatus
from tests.integration.engine_fixtures import Engine, engine, webhook

pytestmark = pytest.mark.anyio

FLOWS = [QuoteSyncFlow()]


def opportunity_id(sandbox: Sandbox, index: int) -> str:
    return sandbox.salesforce.seed_data.opportunities[index].id


def clear_lines(sandbox: Sandbox, opportunity: str) -> None:
    """The rep removes the opportunity's own products, so its Amount is the quote's alone."""
    for line in lines_of(sandbox, opportunity):
        sandbox.salesforce.delete("OpportunityLineItem", line["Id"])


def lines_of(sandbox: Sandbox, opportunity: str) -> list[dict[str, Any]]:
    return [r for r in sandbox.salesforce.records("OpportunityLineItem") if r["OpportunityId"] == opportunity]


def keyed(sandbox: Sandbox, opportunity: str) -> dict[str, float]:
    """Quantity per SKU of the lines the quote put on the opportunity; fails on a duplicate key."""
    lines = [r for r in lines_of(sandbox, opportunity) if r.get("Nue_Line_Key__c")]
    keys = [r["Nue_Line_Key__c"] for r in lines]
    assert len(keys) == len(set(keys)), f"duplicate lines: {keys}"
    return {r["Nue_Line_Key__c"].rsplit(":", 1)[1]: r["Quantity"] for r in lines}


def requote_without(sandbox: Sandbox, index: int, drop: str, quantities: dict[str, Any]) -> dict[str, Any]:
    """A requote with other quantities and one product fewer (the scenario driver always quotes them all)."""
    body = sandbox.nue.scenario.quote_body(index, quantities)
    body["products"] = [p for p in body["products"] if p["productSku"] != drop]
    return dict(quotes.save(sandbox.nue.store, body))


async def sync(e: Engine, quote: dict[str, Any], event_id: str) -> None:
    await e.store.add_events([webhook(f"quote.{'created' if quote['quoteVersion'] == 1 else 'updated'}",
                                      dict(quote), event_id)])
    while await e.worker.run_once():
        pass


def money(value: Any) -> Decimal:
    return Decimal(str(value)).quantize(Decimal("0.01"))


class TestQuoteSync:
    async def test_quote_then_requote_replaces_lines_and_totals(self, sandbox: Sandbox, tmp_path: Path) -> None:
        """After a requote the opportunity shows the new version's lines, totals and amount, with no duplicates."""
        opportunity = opportunity_id(sandbox, 0)
        clear_lines(sandbox, opportunity)
        first = sandbox.nue.scenario.commit_quote(0)
        async with engine(sandbox, tmp_path, flows=FLOWS) as e:
            await sync(e, first, "q-1")
            shown = sandbox.salesforce.record("Opportunity", opportunity)
            assert keyed(sandbox, opportunity) == {"PLAT-SUB": 1.0, "SEAT-VOL": 25.0, "ONB-SVC": 1.0}
            assert shown["Nue_Quote_Id__c"] == first["id"] and shown["Nue_Quote_Version__c"] == 1.0
            assert money(shown["Amount"]) == money(first["totalAmount"]) == money(shown["Nue_Quote_Total__c"])

            second = requote_without(sandbox, 0, "ONB-SVC", {"SEAT-VOL": 40, "API-TIER": 500})
            assert second["quoteVersion"] == 2
            await sync(e, second, "q-2")
            assert (await e.store.queue_depths())[EventStatus.DONE] == 2
        shown = sandbox.salesforce.record("Opportunity", opportunity)
        assert keyed(sandbox, opportunity) == {"PLAT-SUB": 1.0, "SEAT-VOL": 40.0, "API-TIER": 500.0}
        assert shown["Nue_Quote_Version__c"] == 2.0
        assert money(shown["Amount"]) == money(second["totalAmount"]) == money(shown["Nue_Quote_Total__c"])

    async def test_older_version_processed_after_the_newer_changes_nothing(self, sandbox: Sandbox,
                                                                           tmp_path: Path) -> None:
        """Version 1's notification arriving after version 2 was synced writes nothing."""
        opportunity = opportunity_id(sandbox, 1)
        first = sandbox.nue.scenario.commit_quote(1)
        second = sandbox.nue.scenario.requote(1, {"API-TIER": 2000})
        async with engine(sandbox, tmp_path, flows=FLOWS) as e:
            await sync(e, second, "q-2")
            before = sandbox.salesforce.record("Opportunity", opportunity)
            lines_before = lines_of(sandbox, opportunity)
            sandbox.salesforce.log.clear()
            await sync(e, first, "q-1-late")
            assert (await e.store.queue_depths())[EventStatus.DONE] == 2
        assert sandbox.salesforce.log.writes() == []
        assert sandbox.salesforce.record("Opportunity", opportunity) == before
        assert lines_of(sandbox, opportunity) == lines_before
        assert before["Nue_Quote_Version__c"] == 2.0 and keyed(sandbox, opportunity)["API-TIER"] == 2000.0

    async def test_a_reps_own_lines_stay_and_replay_writes_nothing(self, sandbox: Sandbox, tmp_path: Path) -> None:
        """Lines the rep entered survive the sync, and the same quote synced again costs no write."""
        opportunity = opportunity_id(sandbox, 2)
        own = {r["Id"] for r in lines_of(sandbox, opportunity)}
        assert own
        quote = sandbox.nue.scenario.commit_quote(2)
        async with engine(sandbox, tmp_path, flows=FLOWS) as e:
            await sync(e, quote, "a")
            sandbox.salesforce.log.clear()
            await sync(e, quote, "b")
        assert sandbox.salesforce.log.writes() == []
        assert own <= {r["Id"] for r in lines_of(sandbox, opportunity)}
        assert keyed(sandbox, opportunity) == {"SEAT-VOL": 60.0}


class TestWonDeals:
    async def test_a_requote_never_rewrites_an_ordered_deals_lines(self, sandbox: Sandbox, tmp_path: Path) -> None:
        """Once the opportunity is Closed Won with its Nue order id written back, a requote changes none of its
        lines (flow 1 compares them with the order); the event is done, skipped with its reason."""
        opportunity = opportunity_id(sandbox, 2)
        first = sandbox.nue.scenario.commit_quote(2)
        async with engine(sandbox, tmp_path, flows=FLOWS) as e:
            await sync(e, first, "q-won-1")
            sandbox.salesforce.update("Opportunity", opportunity, {"StageName": "Closed Won",
                                                                   "Nue_Order_Id__c": "ORD-00000042"})
            lines_before = lines_of(sandbox, opportunity)
            sandbox.salesforce.log.clear()
            second = sandbox.nue.scenario.requote(2, {"SEAT-VOL": 99})
            await sync(e, second, "q-won-2")
            assert (await e.store.queue_depths())[EventStatus.DONE] == 2
            assert await e.store.list_conflicts() == []
        assert sandbox.salesforce.log.writes() == []
        assert lines_of(sandbox, opportunity) == lines_before
        assert sandbox.salesforce.record("Opportunity", opportunity)["Nue_Quote_Version__c"] == 1.0
