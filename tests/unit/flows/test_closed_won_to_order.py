from __future__ import annotations

import dataclasses
from datetime import date
from decimal import Decimal
from typing import Any, ClassVar

import pytest

from revdaemon.flows.base import FlowEvent, Found
from revdaemon.flows.closed_won_to_order import (
    BEFORE_CUT_OFF,
    ORDERED,
    TO_ORDER,
    ClosedWonMapping,
    ClosedWonToOrderFlow,
)
from revdaemon.flows.plan import NueActivateOrder, NueCreateCustomer, NueCreateOrder, SfUpdate

OPP = {"Id": "006A", "Name": "Acme - Platform", "AccountId": "001A", "StageName": "Closed Won", "IsWon": True,
       "CloseDate": "2026-12-01", "Nue_Order_Id__c": None, "Nue_Order_Number__c": None}
ACCOUNT = {"Id": "001A", "Name": "Acme", "Phone": "+1-555", "BillingCity": "Chicago"}
CATALOG = (
    {"id": "01tP", "sku": "PLAT", "priceBookEntries": [{"id": "01uP", "billingPeriod": "Month"}]},
    {"id": "01tO", "sku": "ONB", "priceBookEntries": [{"id": "01uO", "billingPeriod": "OneTime"}]},
    {"id": "01tB", "sku": "BNDL", "priceBookEntries": [{"id": "01uB", "billingPeriod": "Month"}],
     "productOptions": [{"id": "opt-1", "quantity": 2}]},
)
LINES = [
    {"Id": "00k1", "PricebookEntryId": "01uP", "ProductCode": "PLAT", "Quantity": 3.0, "Discount": 10},
    {"Id": "00k2", "PricebookEntryId": "01uO", "ProductCode": "ONB", "Quantity": 1.0, "Discount": None},
    {"Id": "00k3", "PricebookEntryId": "01uB", "ProductCode": "BNDL", "Quantity": 1.0, "Discount": 0},
    {"Id": "00k4", "PricebookEntryId": "01uP", "ProductCode": "PLAT", "Quantity": 0.0, "Discount": 0},
]
CUSTOMER = {"id": "c-1", "externalId": None, "salesAccountId": "001A"}
EVENT = FlowEvent(key="sf:Opportunity:006A:t", type="opportunity.closed_won", source="salesforce_poll",
                  payload={"data": {"Id": "006A"}})


def found(*, customer: dict[str, Any] | None = CUSTOMER, orders: list[dict[str, Any]] | None = None,
          opportunity: dict[str, Any] | None = None, lines: list[dict[str, Any]] | None = None,
          quotes: list[dict[str, Any]] | None = None, go_live: date | None = None) -> Found:
    return Found(
        sf_records={("Opportunity", "006A"): opportunity or OPP, ("Account", "001A"): ACCOUNT},
        sf_children={("OpportunityLineItem", "OpportunityId", "006A"): LINES if lines is None else lines},
        nue_customers={"001A": customer}, nue_orders={"c-1": orders or []}, catalog=CATALOG,
        nue_quotes_of={"006A": quotes or []}, go_live=go_live,
    )


def order(status: str = "Draft", quantities: dict[str, int] | None = None) -> dict[str, Any]:
    quantities = quantities or {"01uP": 3, "01uO": 1, "01uB": 1}
    return {"id": "o-1", "orderNumber": "O-00000001", "status": status, "customerId": "c-1",
            "description": "From Salesforce opportunity (sfdc-opportunity:006A)",
            "orderProducts": [{"priceBookEntryId": k, "quantity": v} for k, v in quantities.items()]}


class TestSteps:
    def test_creates_the_customer_first(self) -> None:
        """No Nue customer for the account: create it, keyed by the account, and come back."""
        plan = ClosedWonToOrderFlow().plan(EVENT, found(customer=None))
        assert not plan.done
        assert plan.writes == (NueCreateCustomer(
            salesforce_account_id="001A", idem_key="closed_won_to_order:customer:001A",
            payload={"name": "Acme", "recordType": "Business", "phone": "+1-555", "billingCity": "Chicago"}),)

    def test_creates_the_order_with_lines_terms_and_bundles(self) -> None:
        """Lines map to entries; one-time lines get no term; bundles take their options; zero lines drop."""
        plan = ClosedWonToOrderFlow(ClosedWonMapping(term_months=24)).plan(EVENT, found())
        [write] = plan.writes
        assert isinstance(write, NueCreateOrder) and not plan.done
        assert write.idem_key == "closed_won_to_order:order:006A"
        assert "sfdc-opportunity:006A" in write.payload["description"]
        assert write.payload["orderProducts"] == [
            {"priceBookEntryId": "01uP", "quantity": Decimal("3.0"), "discount": Decimal(10),
             "subscriptionTerm": 24, "subscriptionStartDate": "2026-12-01"},
            {"priceBookEntryId": "01uO", "quantity": Decimal("1.0"), "discount": Decimal(0),
             "subscriptionStartDate": "2026-12-01"},
            {"priceBookEntryId": "01uB", "quantity": Decimal("1.0"), "discount": Decimal(0), "subscriptionTerm": 24,
             "addOns": [{"productOptionId": "opt-1", "quantity": Decimal(2)}], "subscriptionStartDate": "2026-12-01"},
        ]

    def test_standalone_tenant_maps_by_sku(self) -> None:
        """Without shared ids, a line finds its entry through the product code."""
        lines = [{"Id": "00k1", "PricebookEntryId": "01uSF", "ProductCode": "PLAT", "Quantity": 1, "Discount": 0}]
        flow = ClosedWonToOrderFlow(ClosedWonMapping(connected_to_salesforce=False))
        [write] = flow.plan(EVENT, found(lines=lines)).writes
        assert isinstance(write, NueCreateOrder)
        assert write.payload["orderProducts"][0]["priceBookEntryId"] == "01uP"

    def test_unknown_product_is_a_conflict(self) -> None:
        """A line no Nue entry matches cannot be ordered: a person decides."""
        lines = [{"Id": "00k9", "PricebookEntryId": "01uX", "ProductCode": "X", "Quantity": 1, "Discount": 0}]
        plan = ClosedWonToOrderFlow().plan(EVENT, found(lines=lines))
        assert plan.conflict is not None and "01uX" in plan.conflict.reason

    def test_activates_a_draft(self) -> None:
        """The order exists as a draft and activation is on: activate it."""
        plan = ClosedWonToOrderFlow().plan(EVENT, found(orders=[order("Draft")]))
        assert plan.writes == (NueActivateOrder(order_id="o-1", idem_key="closed_won_to_order:activate:006A"),)

    def test_leaves_a_draft_when_activation_is_off(self) -> None:
        """flows.closed_won.activate false: the draft stays and the id is written back."""
        plan = ClosedWonToOrderFlow(ClosedWonMapping(activate=False)).plan(EVENT, found(orders=[order("Draft")]))
        assert isinstance(plan.writes[0], SfUpdate)

    def test_writes_back_the_order(self) -> None:
        """An activated order's id and number go onto the opportunity; the flow is then done."""
        plan = ClosedWonToOrderFlow().plan(EVENT, found(orders=[order("Activated")]))
        assert plan.done and keyed(plan.writes) == (SfUpdate(
            sobject="Opportunity", record_id="006A",
            fields={"Nue_Order_Id__c": "o-1", "Nue_Order_Number__c": "O-00000001"},
            idem_key="closed_won_to_order:write-back:006A:o-1"),)

    def test_a_write_back_blanked_later_gets_a_new_key(self) -> None:
        """The key names what the write corrects: once someone blanked (or changed) the order id on the opportunity,
        the write-back is a new write the executor sends; two plans against one unchanged opportunity share a key."""
        flow = ClosedWonToOrderFlow()
        first = flow.plan(EVENT, found(orders=[order("Activated")])).writes[0].idem_key
        again = flow.plan(EVENT, found(orders=[order("Activated")])).writes[0].idem_key
        blanked = {**OPP, "Nue_Order_Id__c": "", "Nue_Order_Number__c": "O-00000001"}
        after_blank = flow.plan(EVENT, found(orders=[order("Activated")], opportunity=blanked)).writes
        other = {**OPP, "Nue_Order_Id__c": "o-9", "Nue_Order_Number__c": "O-00000001"}
        after_edit = flow.plan(EVENT, found(orders=[order("Activated")], opportunity=other)).writes
        assert first == again
        assert [w.fields for w in after_blank] == [{"Nue_Order_Id__c": "o-1"}]
        assert len({first, after_blank[0].idem_key, after_edit[0].idem_key}) == 3

    def test_both_fields_blanked_again_is_a_new_write(self) -> None:
        """Someone blanks both fields after the first write-back: the opportunity looks as it did before it, but
        its SystemModstamp moved, so the key differs from the write confirmed long ago."""
        flow = ClosedWonToOrderFlow()
        won = {**OPP, "SystemModstamp": "2026-01-01T00:00:00.000+0000"}
        blanked = {**OPP, "SystemModstamp": "2026-03-01T00:00:00.000+0000"}
        first = flow.plan(EVENT, found(orders=[order("Activated")], opportunity=won)).writes[0]
        again = flow.plan(EVENT, found(orders=[order("Activated")], opportunity=blanked)).writes[0]
        assert first.fields == again.fields and first.idem_key != again.idem_key

    def test_nothing_left_to_do(self) -> None:
        """Seen again with everything in place (or our own echo): no write."""
        synced = {**OPP, "Nue_Order_Id__c": "o-1", "Nue_Order_Number__c": "O-00000001"}
        plan = ClosedWonToOrderFlow().plan(EVENT, found(orders=[order("Activated")], opportunity=synced))
        assert plan.writes == () and plan.done and plan.conflict is None

    def test_changed_after_the_order_is_a_conflict(self) -> None:
        """Quantities that differ from the existing order open a conflict with both values."""
        plan = ClosedWonToOrderFlow().plan(EVENT, found(orders=[order("Activated", {"01uP": 2, "01uO": 1,
                                                                                    "01uB": 1})]))
        assert plan.conflict is not None
        assert plan.conflict.salesforce_values == {"01uP": "3"} and plan.conflict.nue_values == {"01uP": "2"}

    @pytest.mark.parametrize("opportunity", [{**OPP, "IsWon": False}, {**OPP, "AccountId": None}])
    def test_not_applicable(self, opportunity: dict[str, Any]) -> None:
        """An opportunity no longer won, or without an account, plans nothing."""
        plan = ClosedWonToOrderFlow().plan(EVENT, found(opportunity=opportunity))
        assert plan.writes == () and plan.skip_reason

    def test_a_canceled_order_is_a_conflict_not_a_second_order(self) -> None:
        """One order per deal, ever: when its order was canceled, re-ordering is a person's decision."""
        plan = ClosedWonToOrderFlow().plan(EVENT, found(orders=[order("Canceled")]))
        assert plan.writes == () and plan.conflict is not None and "canceled" in plan.conflict.reason


def nue_made(status: str = "Activated", **link: str) -> dict[str, Any]:
    """An order revdaemon did not make: no marker, only Nue's own link fields."""
    return {**order(status), "id": "o-9", "orderNumber": "O-00000009", "description": "Made in Nue", **link}


def keyed(writes: tuple[Any, ...]) -> tuple[Any, ...]:
    """The writes with each key cut before its last part (the digest of what it corrects, flows.common.was)."""
    return tuple(dataclasses.replace(w, idem_key=w.idem_key.rsplit(":", 1)[0]) for w in writes)


WRITE_BACK_O9 = SfUpdate(sobject="Opportunity", record_id="006A",
                         fields={"Nue_Order_Id__c": "o-9", "Nue_Order_Number__c": "O-00000009"},
                         idem_key="closed_won_to_order:write-back:006A:o-9")


class TestExistingOrders:
    def test_an_order_made_from_a_quote_of_the_opportunity_is_its_order(self) -> None:
        """Nue's quote-to-order flow: the order names a quote whose opportunityId is the deal: linked, written
        back, never ordered again."""
        quotes = [{"id": "q-1", "opportunityId": "006A"}, {"id": "q-2", "opportunityId": "006B"}]
        plan = ClosedWonToOrderFlow().plan(EVENT, found(orders=[nue_made(quoteId="q-1")], quotes=quotes))
        assert keyed(plan.writes) == (WRITE_BACK_O9,)

    def test_an_order_of_another_opportunitys_quote_is_not(self) -> None:
        """The customer's order from a quote of a different deal does not count: this deal is ordered."""
        quotes = [{"id": "q-2", "opportunityId": "006B"}]
        plan = ClosedWonToOrderFlow().plan(EVENT, found(orders=[nue_made(sourceQuoteId="q-2")], quotes=quotes))
        assert isinstance(plan.writes[0], NueCreateOrder)

    def test_an_order_naming_the_opportunity_is_its_order(self) -> None:
        """An order carrying the opportunity id (18 characters for the 15 asked) is the deal's order."""
        event = FlowEvent(key="k", type="opportunity.closed_won", source="salesforce_poll",
                          payload={"data": {"Id": "006000000000001"}})
        opportunity = {**OPP, "Id": "006000000000001"}
        state = Found(sf_records={("Opportunity", "006000000000001"): opportunity, ("Account", "001A"): ACCOUNT},
                      nue_customers={"001A": CUSTOMER}, catalog=CATALOG,
                      nue_orders={"c-1": [nue_made(opportunityId="006000000000001AAA")]})
        assessment = ClosedWonToOrderFlow().assess(event, state)
        assert assessment.verdict == ORDERED and assessment.link == "opportunity id on the order"

    def test_the_order_id_on_the_opportunity_is_its_order(self) -> None:
        """Nue_Order_Id__c names an order of the customer: the number is written back, nothing created."""
        shown = {**OPP, "Nue_Order_Id__c": "o-9"}
        plan = ClosedWonToOrderFlow().plan(EVENT, found(orders=[nue_made()], opportunity=shown))
        assert keyed(plan.writes) == (SfUpdate(sobject="Opportunity", record_id="006A",
                                               fields={"Nue_Order_Number__c": "O-00000009"},
                                               idem_key="closed_won_to_order:write-back:006A:o-9"),)

    @pytest.mark.parametrize("customer", [CUSTOMER, None])
    def test_an_order_id_on_the_opportunity_means_ordered_even_unfound(self, customer: dict[str, Any] | None
                                                                       ) -> None:
        """Nue_Order_Id__c set, its order not found (or no customer at all): nothing is created, ever."""
        shown = {**OPP, "Nue_Order_Id__c": "o-elsewhere"}
        plan = ClosedWonToOrderFlow().plan(EVENT, found(customer=customer, opportunity=shown))
        assert plan.writes == () and plan.conflict is None and "o-elsewhere" in (plan.skip_reason or "")

    def test_another_tools_draft_is_linked_not_activated(self) -> None:
        """A draft someone else made stays a draft (activating it would invoice): only the write-back."""
        plan = ClosedWonToOrderFlow().plan(EVENT, found(orders=[nue_made("Draft", opportunityId="006A")]))
        assert keyed(plan.writes) == (WRITE_BACK_O9,)

    def test_an_order_nue_made_is_never_compared_with_the_deal(self) -> None:
        """A quote-to-order order whose lines differ from the opportunity's (a quote's own products): linked and
        written back, no conflict, for it was never made from these lines."""
        quotes = [{"id": "q-1", "opportunityId": "006A"}]
        made = {**nue_made(quoteId="q-1"), "orderProducts": [{"priceBookEntryId": "01uOTHER", "quantity": 7}]}
        plan = ClosedWonToOrderFlow().plan(EVENT, found(orders=[made], quotes=quotes))
        assert plan.conflict is None and keyed(plan.writes) == (WRITE_BACK_O9,)

    def test_a_canceled_order_found_by_a_quote_is_a_conflict(self) -> None:
        """A canceled order by any link keeps its treatment: a person decides; a live one wins over it."""
        quotes = [{"id": "q-1", "opportunityId": "006A"}]
        canceled = nue_made("Canceled", quoteId="q-1")
        plan = ClosedWonToOrderFlow().plan(EVENT, found(orders=[canceled], quotes=quotes))
        assert plan.conflict is not None and "canceled" in plan.conflict.reason
        live = {**order("Activated"), "id": "o-2"}
        assert ClosedWonToOrderFlow().assess(EVENT, found(orders=[canceled, live], quotes=quotes)).order == live


class TestCutOff:
    def test_a_deal_won_before_the_go_live_is_never_ordered(self) -> None:
        """CloseDate before the store's go-live date: skipped, with the reason, before any Nue step."""
        plan = ClosedWonToOrderFlow().plan(EVENT, found(customer=None, go_live=date(2026, 12, 2)))
        assert plan.writes == () and "before the go-live cut-off 2026-12-02" in (plan.skip_reason or "")

    def test_a_deal_won_on_the_go_live_day_is_ordered(self) -> None:
        """The cut-off day itself is in scope."""
        plan = ClosedWonToOrderFlow().plan(EVENT, found(go_live=date(2026, 12, 1)))
        assert isinstance(plan.writes[0], NueCreateOrder)

    def test_the_configured_cut_off_wins_over_the_store_date(self) -> None:
        """flows.closed_won.won_since set: the store's date is not asked for, and not used."""
        flow = ClosedWonToOrderFlow(ClosedWonMapping(won_since=date(2027, 1, 1)))
        assert not flow.needs(EVENT, Found()).go_live
        assert flow.assess(EVENT, found(go_live=date(2020, 1, 1))).verdict == BEFORE_CUT_OFF

    def test_the_go_live_date_is_asked_for_and_old_deals_read_nothing_in_nue(self) -> None:
        """The store's date is read with the opportunity; an old deal then asks for no customer or orders."""
        flow = ClosedWonToOrderFlow()
        assert flow.needs(EVENT, Found()).go_live
        needs = flow.needs(EVENT, found(go_live=date(2027, 1, 1)))
        assert not needs.nue_customers and not needs.nue_orders_of and not needs.nue_quotes_of
        assert flow.needs(EVENT, found()).nue_quotes_of == {"006A"}

    def test_a_backfill_carries_its_own_cut_off(self) -> None:
        """`backfill --flow closed_won --since` orders an older deal; the same payload from a poll does not."""
        payload = {"data": {"Id": "006A"}, "won_since": "2026-01-01"}
        backfill = FlowEvent(key="b", type="opportunity.closed_won", source="backfill", payload=payload)
        polled = FlowEvent(key="p", type="opportunity.closed_won", source="salesforce_poll", payload=payload)
        state = found(go_live=date(2027, 1, 1))
        flow = ClosedWonToOrderFlow(ClosedWonMapping(won_since=date(2027, 1, 1)))
        assert flow.assess(backfill, state).verdict == TO_ORDER
        assert isinstance(flow.plan(backfill, state).writes[0], NueCreateOrder)
        assert flow.assess(polled, state).verdict == BEFORE_CUT_OFF
        early = FlowEvent(key="b2", type="opportunity.closed_won", source="backfill",
                          payload={**payload, "won_since": "2026-12-02"})
        assert flow.assess(early, state).verdict == BEFORE_CUT_OFF


class TestAmendmentOpportunity:
    AMENDMENT: ClassVar[dict[str, Any]] = {**OPP, "Name": "Acme - Upsell O-00000002", "Nue_Order_Id__c": "o-2",
                                           "Nue_Order_Number__c": "O-00000002"}
    CHANGE: ClassVar[dict[str, Any]] = {
        "id": "o-2", "orderNumber": "O-00000002", "orderType": "Change", "status": "Activated", "customerId": "c-1",
        "orderProducts": [], "assetChanges": [{"changeType": "UpdateQuantity", "assetNumber": "SUB-1", "quantity": 5}]}

    def test_an_amendment_opportunity_is_never_ordered(self) -> None:
        """Flow 5's Closed Won amendment opportunity names its change order: recognised, nothing is written."""
        flow = ClosedWonToOrderFlow()
        known = found(opportunity=self.AMENDMENT, lines=[], orders=[self.CHANGE])
        assessment = flow.assess(EVENT, known)
        assert assessment.verdict == ORDERED and "amendment opportunity" in assessment.reason
        plan = flow.plan(EVENT, known)
        assert plan.writes == () and plan.conflict is None

    def test_nor_when_its_change_order_cannot_be_read(self) -> None:
        """The order id it shows is enough: no customer read yet, or the order not listed, orders nothing."""
        flow = ClosedWonToOrderFlow()
        for known in (found(customer=None, opportunity=self.AMENDMENT, lines=[]),
                      found(opportunity=self.AMENDMENT, lines=[], orders=[])):
            plan = flow.plan(EVENT, known)
            assert plan.writes == () and flow.assess(EVENT, known).verdict == ORDERED
