from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from revdaemon.flows.base import FlowEvent, Found
from revdaemon.flows.closed_won_to_order import ClosedWonMapping, ClosedWonToOrderFlow
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
          opportunity: dict[str, Any] | None = None, lines: list[dict[str, Any]] | None = None) -> Found:
    return Found(
        sf_records={("Opportunity", "006A"): opportunity or OPP, ("Account", "001A"): ACCOUNT},
        sf_children={("OpportunityLineItem", "OpportunityId", "006A"): LINES if lines is None else lines},
        nue_customers={"001A": customer}, nue_orders={"c-1": orders or []}, catalog=CATALOG,
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
        assert plan.done and plan.writes == (SfUpdate(
            sobject="Opportunity", record_id="006A",
            fields={"Nue_Order_Id__c": "o-1", "Nue_Order_Number__c": "O-00000001"},
            idem_key="closed_won_to_order:write-back:006A:o-1:was:|"),)

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
