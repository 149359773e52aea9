from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from revdaemon.flows.base import FlowEvent, Found
from revdaemon.flows.plan import Plan, SfDelete, SfUpdate, SfUpsert
from revdaemon.flows.quote_sync import QuoteSyncFlow, QuoteSyncMapping

OPP = "006A"
CATALOG = (
    {"id": "p1", "sku": "PLAT", "priceBookEntries": [{"id": "e1", "priceBookId": "01sPB", "listPrice": 500,
                                                      "billingPeriod": "Month"}]},
    {"id": "p2", "sku": "SEAT", "priceBookEntries": [{"id": "e2", "priceBookId": "01sPB", "listPrice": 40,
                                                      "billingPeriod": "Month"}]},
)
QUOTE = {"id": "q1", "opportunityId": OPP, "quoteVersion": 2, "subscriptionTerm": 12, "priceBookId": "01sPB",
         "discount": 10, "discountAmount": 720, "subtotal": 7200, "totalAmount": 6480,
         "products": [{"productSku": "PLAT", "quantity": 1, "totalPrice": 6000},
                      {"productSku": "SEAT", "quantity": 25}]}
OPPORTUNITY = {"Id": OPP, "Pricebook2Id": "01sPB", "Nue_Quote_Id__c": "q1", "Nue_Quote_Version__c": 1.0,
               "Nue_Quote_Total__c": 100.0, "Nue_Quote_Discount__c": 0.0}
V = "0000000002"
ENTITY = f"salesforce:Opportunity:{OPP}:quote"


def event(**data: Any) -> FlowEvent:
    return FlowEvent(key="k", type="quote.updated", source="nue_webhook",
                     payload={"data": {"id": "q1", "opportunityId": OPP, **data}})


def line(sku: str, entry: str, quantity: float, unit: float, discount: float | None = 10.0,
         key: str | None = "auto") -> dict[str, Any]:
    record: dict[str, Any] = {"Id": f"00k{sku}", "PricebookEntryId": entry, "Quantity": quantity,
                              "UnitPrice": unit, "Discount": discount}
    if key:
        record["Nue_Line_Key__c"] = f"quote:{OPP}:{sku}" if key == "auto" else key
    return record


SYNCED_LINES = [line("PLAT", "e1", 1.0, 6000.0), line("SEAT", "e2", 25.0, 480.0)]


def found(*, quote: dict[str, Any] | None = None, opportunity: dict[str, Any] | None = None,
          lines: list[dict[str, Any]] | None = None, versions: tuple[int, ...] = (2,)) -> Found:
    q = QUOTE if quote is None else quote
    return Found(nue_quotes={"q1": q}, nue_quotes_of={OPP: [{"id": f"q{v}", "quoteVersion": v} for v in versions]},
                 sf_records={("Opportunity", OPP): OPPORTUNITY if opportunity is None else opportunity},
                 sf_children={("OpportunityLineItem", "OpportunityId", OPP): [] if lines is None else lines},
                 catalog=CATALOG)


def upserts(plan: Plan) -> dict[str, SfUpsert]:
    return {w.external_id: w for w in plan.writes if isinstance(w, SfUpsert)}


class TestNeeds:
    def test_the_quote_then_its_opportunity(self) -> None:
        """The opportunity, its lines and its quotes are read for the quote's own opportunityId."""
        flow = QuoteSyncFlow()
        first = flow.needs(event(), Found())
        assert first.nue_quotes == {"q1"} and first.sf_records == {("Opportunity", OPP)}  # the hint, early
        real = flow.needs(event(), Found(nue_quotes={"q1": {**QUOTE, "opportunityId": "006B"}}))
        assert real.sf_records == {("Opportunity", "006B")} and real.nue_quotes_of == {"006B"}
        assert ("OpportunityLineItem", "OpportunityId", "006B") in real.sf_children
        assert ("OpportunityLineItem", "Nue_Line_Key__c") in real.sf_fields

    def test_a_missing_quote_asks_for_no_opportunity(self) -> None:
        """Once Nue says the quote does not exist, the hint is not followed."""
        assert not QuoteSyncFlow().needs(event(), Found(nue_quotes={"q1": None})).sf_records


class TestKeys:
    def test_a_summary_that_drifted_back_is_written_under_a_new_key(self) -> None:
        """The same quote version written again after someone blanked the opportunity's quote fields is a new
        write (not a key confirmed long ago); the same read twice plans one key."""
        flow = QuoteSyncFlow()
        first = flow.plan(event(), found(lines=SYNCED_LINES)).writes[0].idem_key
        again = flow.plan(event(), found(lines=SYNCED_LINES)).writes[0].idem_key
        blanked = {**OPPORTUNITY, "Nue_Quote_Version__c": None, "Nue_Quote_Total__c": None}
        later = flow.plan(event(), found(lines=SYNCED_LINES, opportunity=blanked)).writes[0].idem_key
        assert first == again != later


class TestWonDeals:
    @pytest.mark.parametrize("won", [{"IsWon": True}, {"Nue_Order_Id__c": "ORD-1"},
                                     {"IsWon": True, "Nue_Order_Id__c": "ORD-1"}])
    def test_a_won_or_ordered_opportunity_is_skipped(self, won: dict[str, Any]) -> None:
        """Flow 1 ordered the deal from its lines: a requote writes nothing there, and says why."""
        requote = {**QUOTE, "quoteVersion": 3, "products": [{"productSku": "SEAT", "quantity": 30}]}
        plan = QuoteSyncFlow().plan(event(), found(quote=requote, versions=(3,), lines=SYNCED_LINES,
                                                   opportunity={**OPPORTUNITY, **won}))
        assert plan == Plan(skip_reason=plan.skip_reason, version="0000000003", entity=ENTITY)
        assert plan.skip_reason is not None and "Closed Won" in plan.skip_reason

    def test_an_open_opportunity_is_still_synced(self) -> None:
        """Not won and no order id: the lines are written as before."""
        plan = QuoteSyncFlow().plan(event(), found(opportunity={**OPPORTUNITY, "IsWon": False,
                                                                "Nue_Order_Id__c": None}))
        assert plan.writes and plan.skip_reason is None

    def test_the_order_id_field_comes_from_the_mapping(self) -> None:
        """An org whose flow 1 writes the order id elsewhere is read there, and the field is asked for."""
        flow = QuoteSyncFlow(QuoteSyncMapping(order_id_field="Order_Ref__c"))
        assert ("Opportunity", "Order_Ref__c") in flow.needs(event(), Found()).sf_fields
        assert flow.plan(event(), found(opportunity={**OPPORTUNITY, "Order_Ref__c": "ORD-1"})).writes == ()
        assert flow.plan(event(), found(opportunity={**OPPORTUNITY, "Nue_Order_Id__c": "ORD-1"})).writes


class TestLines:
    def test_new_lines_are_created_with_their_keys(self) -> None:
        """Each product becomes a keyed line priced for the term, with the quote discount; not done yet."""
        plan = QuoteSyncFlow().plan(event(), found())
        assert plan.done is False and plan.version == V and plan.entity == ENTITY
        assert upserts(plan) == {
            f"quote:{OPP}:PLAT": SfUpsert(
                sobject="OpportunityLineItem", external_id_field="Nue_Line_Key__c", external_id=f"quote:{OPP}:PLAT",
                fields={"OpportunityId": OPP, "PricebookEntryId": "e1", "Quantity": Decimal(1),
                        "UnitPrice": Decimal("6000.00"), "Discount": Decimal("10.00")},
                idem_key=f"quote_sync:line:quote:{OPP}:PLAT:v2:create:1:6000:10"),
            f"quote:{OPP}:SEAT": SfUpsert(
                sobject="OpportunityLineItem", external_id_field="Nue_Line_Key__c", external_id=f"quote:{OPP}:SEAT",
                fields={"OpportunityId": OPP, "PricebookEntryId": "e2", "Quantity": Decimal(25),
                        "UnitPrice": Decimal("480.00"), "Discount": Decimal("10.00")},
                idem_key=f"quote_sync:line:quote:{OPP}:SEAT:v2:create:25:480:10"),
        }

    def test_lines_done_then_the_opportunity_fields(self) -> None:
        """With the lines in place the second step writes the quote id, version, total and discount."""
        plan = QuoteSyncFlow().plan(event(), found(lines=SYNCED_LINES))
        assert plan == Plan(writes=(SfUpdate(
            sobject="Opportunity", record_id=OPP,
            fields={"Nue_Quote_Version__c": 2, "Nue_Quote_Total__c": Decimal("6480.00"),
                    "Nue_Quote_Discount__c": Decimal("10.00")},
            idem_key=plan.writes[0].idem_key),), version=V, entity=ENTITY)
        assert plan.writes[0].idem_key.startswith(f"quote_sync:opportunity:{OPP}:v2:")

    def test_requote_updates_only_the_changed_values_and_deletes_dropped_skus(self) -> None:
        """A requote with fewer seats and no platform updates the seat line and deletes the platform line."""
        requote = {**QUOTE, "quoteVersion": 3, "products": [{"productSku": "SEAT", "quantity": 30}]}
        plan = QuoteSyncFlow().plan(event(), found(quote=requote, versions=(3,), lines=SYNCED_LINES))
        assert plan.writes == (
            SfDelete(sobject="OpportunityLineItem", record_id="00kPLAT", idem_key="quote_sync:delete:00kPLAT"),
            SfUpsert(sobject="OpportunityLineItem", external_id_field="Nue_Line_Key__c",
                     external_id=f"quote:{OPP}:SEAT",
                     fields={"Quantity": Decimal(30), "UnitPrice": Decimal("480.00"), "Discount": Decimal("10.00")},
                     idem_key=plan.writes[1].idem_key),
        )
        assert plan.writes[1].idem_key.startswith(f"quote_sync:line:quote:{OPP}:SEAT:v3:update:30:480:10:")

    def test_a_reps_own_lines_stay(self) -> None:
        """Lines without a key, or with another flow's key, are never deleted."""
        own = [*SYNCED_LINES, line("X", "e9", 2.0, 5.0, key=None), line("Y", "e9", 1.0, 5.0, key="renewal:s:d:e9")]
        plan = QuoteSyncFlow().plan(event(), found(lines=own))
        assert not any(isinstance(w, SfDelete) for w in plan.writes)

    @pytest.mark.parametrize("quantity", [0, "0", 0.0])
    def test_zero_quantity_line_is_removed(self, quantity: Any) -> None:
        """A product at zero units is not put on the opportunity, and its synced line is deleted."""
        quote = {**QUOTE, "products": [*QUOTE["products"][:1], {"productSku": "SEAT", "quantity": quantity}]}
        plan = QuoteSyncFlow().plan(event(), found(quote=quote, lines=SYNCED_LINES))
        assert plan.writes == (SfDelete(sobject="OpportunityLineItem", record_id="00kSEAT",
                                        idem_key="quote_sync:delete:00kSEAT"),)

    def test_the_same_sku_twice_is_one_line(self) -> None:
        """Two quote products with one SKU sum into one line: no duplicate keys."""
        quote = {**QUOTE, "products": [{"productSku": "SEAT", "quantity": 10}, {"productSku": "SEAT", "quantity": 15}]}
        lines = upserts(QuoteSyncFlow().plan(event(), found(quote=quote)))
        assert list(lines) == [f"quote:{OPP}:SEAT"] and lines[f"quote:{OPP}:SEAT"].fields["Quantity"] == 25

    def test_a_changed_entry_is_deleted_then_made_again(self) -> None:
        """PricebookEntryId is create-only: a line on another entry is deleted first, then created next step."""
        moved = [line("PLAT", "e-old", 1.0, 6000.0), SYNCED_LINES[1]]
        first = QuoteSyncFlow().plan(event(), found(lines=moved))
        assert first.writes == (SfDelete(sobject="OpportunityLineItem", record_id="00kPLAT",
                                         idem_key="quote_sync:delete:00kPLAT"),) and not first.done
        second = QuoteSyncFlow().plan(event(), found(lines=[SYNCED_LINES[1]]))
        assert upserts(second)[f"quote:{OPP}:PLAT"].fields["PricebookEntryId"] == "e1"

    def test_an_opportunity_without_a_price_book_gets_the_quotes(self) -> None:
        """Lines need the opportunity's price book; an empty one is set before the lines are made."""
        plan = QuoteSyncFlow().plan(event(), found(opportunity={**OPPORTUNITY, "Pricebook2Id": None}))
        assert plan.writes[0] == SfUpdate(sobject="Opportunity", record_id=OPP, fields={"Pricebook2Id": "01sPB"},
                                          idem_key=f"quote_sync:pricebook:{OPP}:v2")

    def test_discount_amount_alone_becomes_a_percent(self) -> None:
        """A quote with only discountAmount shows that amount as a percent of the subtotal."""
        quote = {**QUOTE, "discount": 0, "discountAmount": 1800}
        lines = upserts(QuoteSyncFlow().plan(event(), found(quote=quote)))
        assert {w.fields["Discount"] for w in lines.values()} == {Decimal("25.00")}


class TestOrdering:
    def test_replay_plans_nothing(self) -> None:
        """An opportunity already showing this version, with its lines, gets no write."""
        plan = QuoteSyncFlow().plan(event(), found(opportunity={**OPPORTUNITY, "Nue_Quote_Version__c": 2.0},
                                                   lines=SYNCED_LINES))
        assert plan.writes == () and "already shows" in (plan.skip_reason or "")

    def test_older_version_than_the_opportunity_shows_is_skipped(self) -> None:
        """Version 2 arriving after version 3 was synced changes nothing."""
        plan = QuoteSyncFlow().plan(event(), found(opportunity={**OPPORTUNITY, "Nue_Quote_Version__c": 3.0}))
        assert plan.writes == () and plan.version == V and plan.entity == ENTITY

    def test_older_version_than_another_quote_is_skipped(self) -> None:
        """A quote older than another quote of the same opportunity is not synced at all."""
        plan = QuoteSyncFlow().plan(event(), found(versions=(2, 4)))
        assert plan.writes == () and "older than version 4" in (plan.skip_reason or "")

    def test_versions_compare_as_text_in_number_order(self) -> None:
        """Version 10 sorts after version 9 as the worker's entity guard compares them."""
        nine = QuoteSyncFlow().plan(event(), found(quote={**QUOTE, "quoteVersion": 9}, versions=(9,)))
        ten = QuoteSyncFlow().plan(event(), found(quote={**QUOTE, "quoteVersion": 10}, versions=(10,)))
        assert nine.version is not None and ten.version is not None and ten.version > nine.version

    def test_body_values_are_ignored(self) -> None:
        """A notification claiming another version or opportunity plans from the quote as read."""
        flow = QuoteSyncFlow()
        assert flow.plan(event(quoteVersion=99, opportunityId="006Z"), found()) == flow.plan(event(), found())


class TestSkipsAndConflicts:
    def test_unknown_sku_is_a_conflict(self) -> None:
        """A product missing from the catalog opens a conflict naming the SKU, and writes nothing."""
        quote = {**QUOTE, "products": [{"productSku": "GONE", "quantity": 1}]}
        plan = QuoteSyncFlow().plan(event(), found(quote=quote))
        assert plan.conflict is not None and "GONE" in plan.conflict.reason and plan.writes == ()

    def test_another_price_book_is_a_conflict(self) -> None:
        """An opportunity bound to another price book cannot take the quote's entries."""
        plan = QuoteSyncFlow().plan(event(), found(opportunity={**OPPORTUNITY, "Pricebook2Id": "01sOTHER"}))
        assert plan.conflict is not None and "price book" in plan.conflict.reason

    @pytest.mark.parametrize(("state", "reason"), [
        ({"quote": {**QUOTE, "opportunityId": None}}, "no opportunity"),
    ])
    def test_skipped_with_a_reason(self, state: dict[str, Any], reason: str) -> None:
        """A quote with nothing to reflect plans nothing and says why."""
        plan = QuoteSyncFlow().plan(event(), found(**state))
        assert plan.writes == () and reason in (plan.skip_reason or "")

    def test_missing_quote_or_opportunity_is_skipped(self) -> None:
        """A deleted quote, or an opportunity Salesforce does not have, plans nothing."""
        assert "no quote" in (QuoteSyncFlow().plan(event(), Found(nue_quotes={"q1": None})).skip_reason or "")
        gone = Found(nue_quotes={"q1": QUOTE}, sf_records={("Opportunity", OPP): None}, catalog=CATALOG)
        assert "no opportunity" in (QuoteSyncFlow().plan(event(), gone).skip_reason or "")
