from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from revdaemon.flows.base import FlowEvent, Found, Needs
from revdaemon.flows.plan import OpenConflict, Plan, SfUpsert
from revdaemon.flows.renewals import RenewalFlow, RenewalMapping

KEY = "s1:2027-01-31"
LINE_KEY = "renewal:s1:2027-01-31:e1"
CATALOG = ({"id": "p1", "sku": "SEAT", "priceBookEntries": [
    {"id": "e1", "priceBookId": "01sPB", "listPrice": 40, "billingPeriod": "Month"}]},)
CUSTOMER = {"id": "c1", "externalId": "001A", "name": "Acme"}
ACCOUNT = {"Id": "001A", "Name": "Acme Corp", "OwnerId": "005U"}
SUB = {"id": "s1", "name": "SUB-1", "customerId": "c1", "priceBookEntryId": "e1", "orderProductId": "ol1",
       "quantity": 25, "status": "Active", "subscriptionEndDate": "2027-01-31", "subscriptionTerm": 12,
       "renewalTerm": 12, "subscriptionVersion": 1}
ORDERS = [{"id": "o1", "orderProducts": [{"id": "ol1", "quantity": 25, "discount": 10}]}]
OPPORTUNITY = {"Id": "006R", "Nue_Renewal_Key__c": KEY}


def event(**data: Any) -> FlowEvent:
    body = {"id": "s1", "customerId": "c1", "subscriptionEndDate": "2027-01-31", **data}
    return FlowEvent(key=f"renewal:{KEY}", type="renewal.due", source="schedule", payload={"data": body})


def found(*, sub: dict[str, Any] | None = None, orders: list[dict[str, Any]] | None = None,
          opportunity: dict[str, Any] | None = None, lines: list[dict[str, Any]] | None = None,
          catalog: tuple[dict[str, Any], ...] = CATALOG) -> Found:
    children: dict[tuple[str, str, str], list[Any]] = {
        ("Opportunity", "Nue_Renewal_Key__c", KEY): [opportunity] if opportunity else []}
    if opportunity:
        children[("OpportunityLineItem", "OpportunityId", opportunity["Id"])] = lines or []
    return Found(nue_customers={"c1": CUSTOMER}, nue_subscriptions={"c1": [sub or SUB]},
                 nue_orders={"c1": ORDERS if orders is None else orders},
                 sf_records={("Account", "001A"): ACCOUNT}, sf_children=children, catalog=catalog)


def opportunity_write(plan: Plan) -> SfUpsert:
    [write] = plan.writes
    assert isinstance(write, SfUpsert)
    return write


class TestNeeds:
    def test_customer_then_account_then_lines(self) -> None:
        """The account is asked for once the customer is read, the lines once the opportunity is found."""
        flow = RenewalFlow()
        first = flow.needs(event(), Found())
        assert first.nue_customers == {"c1"} and first.nue_subscriptions_of == {"c1"} and first.catalog
        assert first.sf_children == {("Opportunity", "Nue_Renewal_Key__c", KEY)} and not first.sf_records
        second = flow.needs(event(), Found(nue_customers={"c1": CUSTOMER}))
        assert second.sf_records == {("Account", "001A")} and ("Account", "OwnerId") in second.sf_fields
        third = flow.needs(event(), found(opportunity=OPPORTUNITY))
        assert ("OpportunityLineItem", "OpportunityId", "006R") in third.sf_children

    def test_salesforce_id_from_sales_account_id(self) -> None:
        """A customer revdaemon created (salesAccountId, no externalId yet) still finds its account."""
        customer = {"id": "c1", "externalId": None, "salesAccountId": "001B"}
        assert RenewalFlow().needs(event(), Found(nue_customers={"c1": customer})).sf_records == {("Account", "001B")}

    def test_event_without_a_term_needs_nothing(self) -> None:
        """An event missing the end date asks for nothing."""
        assert RenewalFlow().needs(event(subscriptionEndDate=None), Found()) == Needs()


class TestOpportunity:
    def test_first_step_upserts_the_opportunity_by_its_renewal_key(self) -> None:
        """Name, stage, type, close date, owner, account, price book and a year of the discounted MRR."""
        plan = RenewalFlow().plan(event(), found())
        assert plan == Plan(done=False, writes=(SfUpsert(
            sobject="Opportunity", external_id_field="Nue_Renewal_Key__c", external_id=KEY, fields={
                "Name": "Acme Corp - Renewal SUB-1", "AccountId": "001A", "StageName": "Prospecting",
                "CloseDate": "2027-01-31", "Amount": Decimal("10800.00"), "Nue_Subscription__c": "SUB-1",
                "Expansion_Signal__c": False, "OwnerId": "005U", "Type": "Renewal",
                "Pricebook2Id": "01sPB"},
            idem_key="renewals:opportunity:s1:2027-01-31"),))

    @pytest.mark.parametrize(("changes", "months"), [
        ({"renewalTerm": 24}, 24),
        ({"renewalTerm": None, "subscriptionTerm": 6}, 6),
        ({"renewalTerm": None, "subscriptionTerm": None}, 12),
    ])
    def test_amount_is_one_renewal_term(self, changes: dict[str, Any], months: int) -> None:
        """The renewal term, else the subscription term, else a year, times the MRR (25 x 40 less 10 %)."""
        plan = RenewalFlow().plan(event(), found(sub={**SUB, **changes}))
        assert opportunity_write(plan).fields["Amount"] == Decimal("900.00") * months

    @pytest.mark.parametrize(("version", "quantity", "signal"), [
        (1, 25, False),  # never amended
        (2, 30, True),  # amended to more seats
        (2, 20, False),  # amended to fewer seats
        (3, 25, False),  # amended, back where it started
    ])
    def test_expansion_signal(self, version: int, quantity: int, signal: bool) -> None:
        """The signal is set only when an amended subscription has more units than its original order line."""
        plan = RenewalFlow().plan(event(), found(sub={**SUB, "subscriptionVersion": version, "quantity": quantity}))
        assert opportunity_write(plan).fields["Expansion_Signal__c"] is signal

    def test_type_is_configurable(self) -> None:
        """An org with a Renewal picklist value gets it; None leaves Type unset."""
        renewal = RenewalFlow(RenewalMapping(opportunity_type="Renewal")).plan(event(), found())
        assert opportunity_write(renewal).fields["Type"] == "Renewal"
        unset = RenewalFlow(RenewalMapping(opportunity_type=None)).plan(event(), found())
        assert "Type" not in opportunity_write(unset).fields

    def test_body_values_are_ignored(self) -> None:
        """A claimed quantity or name in the event changes nothing: the subscription is re-read."""
        flow = RenewalFlow()
        assert flow.plan(event(quantity=999, name="SUB-X"), found()) == flow.plan(event(), found())

    def test_deterministic(self) -> None:
        """The same inputs give the same plan."""
        assert RenewalFlow().plan(event(), found()) == RenewalFlow().plan(event(), found())


class TestLines:
    def test_second_step_adds_the_product_line(self) -> None:
        """Once the opportunity exists, its line is upserted by the line key, priced for the whole term."""
        plan = RenewalFlow().plan(event(), found(opportunity=OPPORTUNITY))
        assert plan == Plan(writes=(SfUpsert(
            sobject="OpportunityLineItem", external_id_field="Nue_Line_Key__c", external_id=LINE_KEY,
            fields={"OpportunityId": "006R", "PricebookEntryId": "e1", "Quantity": Decimal(25),
                    "UnitPrice": Decimal("432.00")},
            idem_key=f"renewals:line:{LINE_KEY}"),))

    def test_replay_plans_nothing(self) -> None:
        """When the opportunity and its line exist, a replayed event writes nothing."""
        plan = RenewalFlow().plan(event(), found(opportunity=OPPORTUNITY,
                                                 lines=[{"Id": "00kL", "Nue_Line_Key__c": LINE_KEY}]))
        assert plan.writes == () and plan.done and "exists" in (plan.skip_reason or "")

    def test_a_reps_own_lines_do_not_count(self) -> None:
        """Lines a rep added (no key) do not stop the renewal line from being added."""
        plan = RenewalFlow().plan(event(), found(opportunity=OPPORTUNITY, lines=[{"Id": "00kX"}]))
        assert opportunity_write(plan).external_id == LINE_KEY

    def test_zero_quantity_makes_no_line(self) -> None:
        """A subscription at zero units gets its opportunity (amount zero) but no product line."""
        plan = RenewalFlow().plan(event(), found(sub={**SUB, "quantity": 0}))
        assert plan.done and opportunity_write(plan).fields["Amount"] == Decimal("0.00")
        assert "Pricebook2Id" not in opportunity_write(plan).fields
        assert RenewalFlow().plan(event(), found(sub={**SUB, "quantity": 0}, opportunity=OPPORTUNITY)).writes == ()

    def test_standalone_tenant_makes_no_line(self) -> None:
        """Without shared price book entry ids the opportunity is made alone, in one step."""
        plan = RenewalFlow(RenewalMapping(connected_to_salesforce=False)).plan(event(), found())
        assert plan.done and opportunity_write(plan).sobject == "Opportunity"


class TestSkipsAndConflicts:
    @pytest.mark.parametrize(("state", "reason"), [
        ({"sub": {**SUB, "status": "Canceled"}}, "not Active"),
        ({"sub": {**SUB, "subscriptionEndDate": "2028-01-31"}}, "end date moved"),
        ({"sub": {**SUB, "id": "other"}}, "no subscription"),
        ({"orders": [{"id": "o1", "orderProducts": [{"id": "b", "addOns": [{"id": "ol1", "totalAmount": 0}]}]}]},
         "bundle"),
    ])
    def test_skipped_with_a_reason(self, state: dict[str, Any], reason: str) -> None:
        """A term that needs no renewal opportunity plans nothing and says why."""
        plan = RenewalFlow().plan(event(), found(**state))
        assert plan.writes == () and reason in (plan.skip_reason or "")

    def test_unlinked_customer_is_skipped(self) -> None:
        """A customer not linked to a Salesforce account plans nothing."""
        plan = RenewalFlow().plan(event(), Found(nue_customers={"c1": {"id": "c1"}}, nue_subscriptions={"c1": [SUB]}))
        assert plan.writes == () and "not linked" in (plan.skip_reason or "")

    def test_unknown_price_book_entry_is_a_conflict(self) -> None:
        """A subscription whose entry is not in the catalog cannot be priced: a person decides."""
        plan = RenewalFlow().plan(event(), found(catalog=()))
        assert isinstance(plan.conflict, OpenConflict) and "priced" in plan.conflict.reason
        assert plan.conflict.record_ref == "nue:Subscription:s1"


def test_extra_fields_from_config_ride_on_the_renewal() -> None:
    """mapping.flows.renewals adds a field to the renewal opportunity from its source record."""
    import dataclasses

    from revdaemon.mapping.fields import parse_spec

    flow = RenewalFlow()
    plain = flow.plan(event(), found())
    mapped_flow = RenewalFlow(dataclasses.replace(flow.mapping, extra_fields={
        "LeadSource": parse_spec("const:Partner Referral"), "Description": parse_spec("path:subscription.name")}))
    mapped = mapped_flow.plan(event(), found())
    [write] = mapped.writes
    assert write.fields["LeadSource"] == "Partner Referral"  # type: ignore[union-attr]
    assert write.fields["Description"] == plain.writes[0].fields[  # type: ignore[union-attr]
        "Nue_Subscription__c"]
    assert {"LeadSource", "Description"} <= mapped_flow.salesforce_fields["Opportunity"]
