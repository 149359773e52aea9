from __future__ import annotations

from decimal import Decimal
from typing import Any, ClassVar

import pytest

from revdaemon.domain.subscriptions import order_lines, price_entries
from revdaemon.flows.amendments import (
    Amendment,
    AmendmentMapping,
    AmendmentsFlow,
    amend,
    amendment_deltas,
    money_text,
    note_body,
)
from revdaemon.flows.base import FlowEvent, Found
from revdaemon.flows.plan import Plan, SfCreate, SfUpdate, SfUpsert

CATALOG = (
    {"id": "p-plat", "name": "Platform", "priceBookEntries": [
        {"id": "e-plat", "listPrice": "500.00", "billingPeriod": "Month"}]},
    {"id": "p-seat", "name": "Seats", "priceBookEntries": [
        {"id": "e-seat", "listPrice": "40.00", "billingPeriod": "Month", "priceTags": [
            {"priceTagType": "Volume", "tiers": [{"lowerBound": 1, "upperBound": 50, "price": "40.00"},
                                                 {"lowerBound": 51, "upperBound": 200, "price": "32.00"},
                                                 {"lowerBound": 201, "upperBound": None, "price": "25.00"}]}]}]},
    {"id": "p-api", "name": "API", "priceBookEntries": [
        {"id": "e-api", "listPrice": "2.00", "billingPeriod": "Month", "priceTags": [
            {"priceTagType": "Tiered", "tiers": [
                {"lowerBound": 0, "upperBound": 100, "price": "0", "chargeModel": "FlatFee"},
                {"lowerBound": 100, "upperBound": 1000, "price": "2.00"},
                {"lowerBound": 1000, "upperBound": None, "price": "1.50"}]}]}]},
    {"id": "p-year", "name": "Yearly", "priceBookEntries": [
        {"id": "e-year", "listPrice": "1200.00", "billingPeriod": "Year"}]},
)
NEW_ORDER = {"id": "o-1", "orderNumber": "O-00000001", "orderType": "New", "status": "Activated",
             "customerId": "c1", "activatedDate": "2026-01-01T09:00:00Z", "orderProducts": [
                 {"id": "l-plat", "priceBookEntryId": "e-plat", "quantity": 1, "discount": 0},
                 {"id": "l-seat", "priceBookEntryId": "e-seat", "quantity": 25, "discount": 10},
                 {"id": "l-api", "priceBookEntryId": "e-api", "quantity": 1500, "discount": 0},
                 {"id": "l-year", "priceBookEntryId": "e-year", "quantity": 2, "discount": 0}]}
SUBS = {
    "SUB-1": {"id": "s1", "name": "SUB-1", "priceBookEntryId": "e-plat", "orderProductId": "l-plat"},
    "SUB-2": {"id": "s2", "name": "SUB-2", "priceBookEntryId": "e-seat", "orderProductId": "l-seat"},
    "SUB-3": {"id": "s3", "name": "SUB-3", "priceBookEntryId": "e-api", "orderProductId": "l-api"},
    "SUB-4": {"id": "s4", "name": "SUB-4", "priceBookEntryId": "e-year", "orderProductId": "l-year"},
}
CUSTOMER = {"id": "c1", "externalId": "001A"}
NOTE_ONLY = AmendmentMapping(opportunity=False, contract=False)  # the Note alone, as before issue 26


def change_order(*changes: dict[str, Any], number: int = 2, at: str = "2026-02-01T09:00:00Z") -> dict[str, Any]:
    return {"id": f"o-{number}", "orderNumber": f"O-0000000{number}", "orderType": "Change", "status": "Activated",
            "customerId": "c1", "activatedDate": at, "orderProducts": [], "assetChanges": list(changes)}


def subs(**quantities: Any) -> list[dict[str, Any]]:
    """The subscriptions as Nue shows them now, at the given current quantities."""
    return [{**SUBS[name.replace("_", "-")], "quantity": q, "status": "Active"} for name, q in quantities.items()]


def deltas(order: dict[str, Any], subscriptions: list[dict[str, Any]], *later: dict[str, Any]
           ) -> list[tuple[str, Decimal, Decimal, Decimal]]:
    orders = [NEW_ORDER, order, *later]
    return [(d.asset_number, d.before, d.after, d.delta)
            for d in amendment_deltas(order, orders, subscriptions, price_entries(CATALOG), order_lines(orders))]


def event(order_id: str = "o-2", **data: Any) -> FlowEvent:
    return FlowEvent(key="k", type="order.activated", source="nue_webhook",
                     payload={"data": {"id": order_id, "customerId": "c1", **data}})


def found(order: dict[str, Any], subscriptions: list[dict[str, Any]], notes: list[dict[str, Any]] | None = None
          ) -> Found:
    return Found(nue_orders={"c1": [NEW_ORDER, order]}, nue_subscriptions={"c1": subscriptions},
                 nue_customers={"c1": CUSTOMER}, catalog=CATALOG, sf_records={("Account", "001A"): {"Id": "001A"}},
                 sf_children={("Note", "ParentId", "001A"): notes or []})


class TestMrrDelta:
    @pytest.mark.parametrize(("change", "now", "expected"), [
        # Platform at 500/month: +5 seats of it is +2500.
        ({"changeType": "UpdateQuantity", "assetNumber": "SUB-1", "quantity": 5}, {"SUB_1": 6},
         ("SUB-1", Decimal("500.00"), Decimal("3000.00"), Decimal("2500.00"))),
        # Volume seats with the order line's 10 % discount: 25 x 40 x 0.9 = 900 -> 23 x 40 x 0.9 = 828.
        ({"changeType": "UpdateQuantity", "assetNumber": "SUB-2", "quantity": -2}, {"SUB_2": 23},
         ("SUB-2", Decimal("900.00"), Decimal("828.00"), Decimal("-72.00"))),
        # Crossing a volume tier reprices every seat: 25 x 40 x 0.9 = 900 -> 60 x 32 x 0.9 = 1728.
        ({"changeType": "UpdateQuantity", "assetNumber": "SUB-2", "quantity": 35}, {"SUB_2": 60},
         ("SUB-2", Decimal("900.00"), Decimal("1728.00"), Decimal("828.00"))),
        # Tiered API calls: 1500 = 0 + 900 x 2 + 500 x 1.5 = 2550; 2000 = 0 + 1800 + 1000 x 1.5 = 3300.
        ({"changeType": "UpdateQuantity", "assetNumber": "SUB-3", "quantity": 500}, {"SUB_3": 2000},
         ("SUB-3", Decimal("2550.00"), Decimal("3300.00"), Decimal("750.00"))),
        # Cancel: the whole MRR goes; quantity unchanged.
        ({"changeType": "Cancel", "assetNumber": "SUB-1", "cancellationDate": "2026-02-01"}, {"SUB_1": 1},
         ("SUB-1", Decimal("500.00"), Decimal("0"), Decimal("-500.00"))),
        # A yearly entry is normalised to a month: 2 x 1200 / 12 = 200; term changes move nothing.
        ({"changeType": "UpdateTerm", "assetNumber": "SUB-4", "term": 12}, {"SUB_4": 2},
         ("SUB-4", Decimal("200.00"), Decimal("200.00"), Decimal("0.00"))),
        ({"changeType": "Renew", "assetNumber": "SUB-1", "renewalTerm": 12}, {"SUB_1": 1},
         ("SUB-1", Decimal("500.00"), Decimal("500.00"), Decimal("0.00"))),
        ({"changeType": "CoTerm", "assetNumber": "SUB-1", "coTermDate": "2026-12-31"}, {"SUB_1": 1},
         ("SUB-1", Decimal("500.00"), Decimal("500.00"), Decimal("0.00"))),
    ])
    def test_delta_per_change_type(self, change: dict[str, Any], now: dict[str, Any],
                                   expected: tuple[str, Decimal, Decimal, Decimal]) -> None:
        """MRR after - MRR before, in Decimal, from the subscription, its entry, tags and line discount."""
        [result] = deltas(change_order(change), subs(**now))
        assert result == expected
        assert all(isinstance(v, Decimal) for v in result[1:])

    def test_later_change_orders_are_undone_first(self) -> None:
        """The before/after of an older order are found by undoing the changes activated after it."""
        first = change_order({"changeType": "UpdateQuantity", "assetNumber": "SUB-1", "quantity": 5})
        second = change_order({"changeType": "UpdateQuantity", "assetNumber": "SUB-1", "quantity": -2},
                              number=3, at="2026-03-01T09:00:00Z")
        now = subs(SUB_1=4)  # 1 + 5 - 2
        assert deltas(first, now, second) == [("SUB-1", Decimal("500.00"), Decimal("3000.00"), Decimal("2500.00"))]
        assert deltas(second, now, first) == [("SUB-1", Decimal("3000.00"), Decimal("2000.00"),
                                               Decimal("-1000.00"))]

    def test_one_order_changing_two_assets(self) -> None:
        """Each changed subscription gets its own before and after."""
        order = change_order({"changeType": "UpdateQuantity", "assetNumber": "SUB-1", "quantity": 1},
                             {"changeType": "Cancel", "assetNumber": "SUB-4", "cancellationDate": "2026-02-01"})
        assert [d[0] for d in deltas(order, subs(SUB_1=2, SUB_4=2))] == ["SUB-1", "SUB-4"]

    def test_money_text_has_two_places_and_a_signed_delta(self) -> None:
        """Amounts print with two places; a delta shows its sign."""
        assert money_text(Decimal("2500")) == "2500.00"
        assert money_text(Decimal("2500"), signed=True) == "+2500.00"
        assert money_text(Decimal("-72.005"), signed=True) == "-72.01"
        assert money_text(Decimal(0), signed=True) == "0.00"


class TestPlan:
    """The Note (the amendment opportunity and the contract switched off)."""

    ORDER = change_order({"changeType": "UpdateQuantity", "assetNumber": "SUB-1", "quantity": 5})

    def test_note_with_before_after_and_delta(self) -> None:
        """An activated change order plans one Note, found again by account and title."""
        plan = AmendmentsFlow(NOTE_ONLY).plan(event(), found(self.ORDER, subs(SUB_1=6)))
        body = ("Nue change order O-00000002 activated 2026-02-01\n\nChange type: UpdateQuantity\nAsset: SUB-1\n"
                "MRR before: 500.00\nMRR after: 3000.00\nMRR delta: +2500.00")
        fields = {"ParentId": "001A", "Title": "Nue amendment O-00000002", "Body": body}
        assert plan == Plan(writes=(SfCreate(sobject="Note", fields=fields,
                                             match={"ParentId": "001A", "Title": "Nue amendment O-00000002"},
                                             idem_key="amendments:note:o-2", seen_absent=True),))

    def test_replay_with_the_note_there_plans_nothing(self) -> None:
        """The account already has this order's Note: nothing to write."""
        notes = [{"Id": "002X", "ParentId": "001A", "Title": "Nue amendment O-00000002"}]
        plan = AmendmentsFlow(NOTE_ONLY).plan(event(), found(self.ORDER, subs(SUB_1=6), notes))
        assert plan.writes == () and "already has" in (plan.skip_reason or "")

    def test_same_note_whatever_happened_to_the_account_since(self) -> None:
        """The delta comes from Nue, so a later change order does not alter an older order's Note."""
        later = change_order({"changeType": "UpdateQuantity", "assetNumber": "SUB-1", "quantity": 10},
                             number=3, at="2026-03-01T00:00:00Z")
        now = AmendmentsFlow(NOTE_ONLY).plan(event(), found(self.ORDER, subs(SUB_1=6)))
        replayed = AmendmentsFlow(NOTE_ONLY).plan(event(), Found(
            nue_orders={"c1": [NEW_ORDER, self.ORDER, later]}, nue_subscriptions={"c1": subs(SUB_1=16)},
            nue_customers={"c1": CUSTOMER}, catalog=CATALOG, sf_records={("Account", "001A"): {"Id": "001A"}}))
        assert now == replayed

    def test_new_orders_are_not_amendments(self) -> None:
        """An ordinary order's activation is skipped, and asks for no Salesforce read."""
        flow = AmendmentsFlow(NOTE_ONLY)
        partial = Found(nue_orders={"c1": [NEW_ORDER]}, nue_customers={"c1": CUSTOMER})
        assert flow.needs(event("o-1"), partial).sf_records == frozenset()
        plan = flow.plan(event("o-1"), found(self.ORDER, subs(SUB_1=6)))
        assert plan.writes == () and "not a change order" in (plan.skip_reason or "")

    def test_needs_the_account_and_its_notes_once_a_change_order_is_seen(self) -> None:
        """Subscriptions, catalog, the account and its Notes are read only for a change order."""
        partial = Found(nue_orders={"c1": [NEW_ORDER, self.ORDER]}, nue_customers={"c1": CUSTOMER})
        needs = AmendmentsFlow(NOTE_ONLY).needs(event(), partial)
        assert needs.catalog and needs.nue_subscriptions_of == {"c1"}
        assert needs.sf_records == {("Account", "001A")} and needs.sf_children == {("Note", "ParentId", "001A")}

    def test_unknown_asset_is_skipped(self) -> None:
        """A change to a subscription the customer does not have plans nothing, with the reason."""
        order = change_order({"changeType": "UpdateQuantity", "assetNumber": "SUB-9", "quantity": 1})
        plan = AmendmentsFlow(NOTE_ONLY).plan(event(), found(order, subs(SUB_1=1)))
        assert plan.writes == () and "SUB-9" in (plan.skip_reason or "")

    def test_body_values_are_ignored(self) -> None:
        """A notification's claimed quantities change nothing: the Note is computed from the re-read order."""
        flow = AmendmentsFlow(NOTE_ONLY)
        lying = event(assetChanges=[{"changeType": "Cancel", "assetNumber": "SUB-1"}], orderNumber="O-9")
        assert flow.plan(lying, found(self.ORDER, subs(SUB_1=6))) == flow.plan(event(), found(self.ORDER,
                                                                                               subs(SUB_1=6)))

    def test_draft_change_order_is_skipped(self) -> None:
        """A change order that is not activated yet is not logged."""
        plan = AmendmentsFlow(NOTE_ONLY).plan(event(), found({**self.ORDER, "status": "Draft"}, subs(SUB_1=1)))
        assert plan.writes == () and "Draft" in (plan.skip_reason or "")


MORE = (
    {"id": "p-ent", "name": "Enterprise", "priceBookEntries": [
        {"id": "e-ent", "listPrice": "800.00", "billingPeriod": "Month"}]},
    {"id": "p-lite", "name": "Lite", "priceBookEntries": [
        {"id": "e-lite", "listPrice": "200.00", "billingPeriod": "Month"}]},
)
WIDE = CATALOG + MORE
ACCOUNT = {"Id": "001A", "Name": "Acme", "OwnerId": "005O"}


def amendment_of(order: dict[str, Any], subscriptions: list[dict[str, Any]], *later: dict[str, Any]) -> Amendment:
    orders = [NEW_ORDER, order, *later]
    return amend(order, orders, subscriptions, price_entries(WIDE), order_lines(orders))


def full_found(order: dict[str, Any], subscriptions: list[dict[str, Any]], *, later: tuple[dict[str, Any], ...] = (),
               children: dict[tuple[str, str, str], list[dict[str, Any]]] | None = None,
               records: dict[tuple[str, str], dict[str, Any]] | None = None) -> Found:
    return Found(nue_orders={"c1": [NEW_ORDER, order, *later]}, nue_subscriptions={"c1": subscriptions},
                 nue_customers={"c1": CUSTOMER}, catalog=WIDE,
                 sf_records={("Account", "001A"): ACCOUNT, **(records or {})},
                 sf_children={("Note", "ParentId", "001A"): [], **(children or {})})


def moved(entry: str, **quantities: Any) -> list[dict[str, Any]]:
    return [{**s, "priceBookEntryId": entry} for s in subs(**quantities)]


class TestEveryChangeType:
    @pytest.mark.parametrize(("change", "now", "before", "after"), [
        ({"changeType": "Upgrade", "assetNumber": "SUB-1", "targetPriceBookEntryId": "e-ent"}, moved("e-ent", SUB_1=1),
         "500.00", "800.00"),
        ({"changeType": "Downgrade", "assetNumber": "SUB-1", "targetPriceBookEntryId": "e-lite"},
         moved("e-lite", SUB_1=1), "500.00", "200.00"),
        ({"changeType": "Swap", "assetNumber": "SUB-1", "targetPriceBookEntryId": "e-lite"}, moved("e-lite", SUB_1=2),
         "1000.00", "400.00"),
        ({"changeType": "ConvertFreeTrial", "assetNumber": "SUB-1"}, subs(SUB_1=1), "0", "500.00"),
    ])
    def test_priced_types(self, change: dict[str, Any], now: list[dict[str, Any]], before: str, after: str) -> None:
        """A product move is priced at the entry before and the one it moved to, at the same quantity."""
        [d] = amendment_of(change_order(change), now).deltas
        assert (d.before, d.after) == (Decimal(before), Decimal(after))

    def test_a_later_move_is_undone_first(self) -> None:
        """Swap to Lite, then Upgrade to Enterprise: each order's own before and after, from Nue's records."""
        swap = change_order({"changeType": "Swap", "assetNumber": "SUB-1", "targetPriceBookEntryId": "e-lite"})
        upgrade = change_order({"changeType": "Upgrade", "assetNumber": "SUB-1", "targetPriceBookEntryId": "e-ent"},
                               number=3, at="2026-03-01T09:00:00Z")
        now = moved("e-ent", SUB_1=1)
        assert amendment_of(swap, now, upgrade).mrr_delta == Decimal("-300.00")
        assert amendment_of(upgrade, now, swap).mrr_delta == Decimal("600.00")

    @pytest.mark.parametrize("change_type", ["Reconfigure", "AdjustPrice", "SomethingNew"])
    def test_unpriceable_types_take_nues_own_total(self, change_type: str) -> None:
        """Reconfigure, AdjustPrice or an unknown type: the Note says so, the delta is orderACV / 12."""
        order = {**change_order({"changeType": change_type, "assetNumber": "SUB-1", "discount": 20}),
                 "orderACV": "-1200.00"}
        amendment = amendment_of(order, subs(SUB_1=1))
        assert amendment.from_nue_totals and amendment.mrr_delta == Decimal("-100.00")
        assert amendment.acv_delta == Decimal("-1200.00") and amendment.kind == "downsell"
        [d] = amendment.deltas
        assert not d.known and change_type in (d.why or "")
        body = note_body(order, amendment)
        assert f"Change type: {change_type}\nAsset: SUB-1\nMRR delta: not known from Nue's API (" in body
        assert "Total MRR delta: -100.00 (Nue's own total for the order: orderACV -1200.00 / 12)" in body

    def test_without_nues_total_the_note_says_unknown_and_no_opportunity_is_made(self) -> None:
        """No orderACV either: never a silent skip, the Note says the delta is unknown; no opportunity."""
        order = change_order({"changeType": "Reconfigure", "assetNumber": "SUB-1", "addOns": []})
        plan = AmendmentsFlow().plan(event(), full_found(order, subs(SUB_1=1)))
        [note] = plan.writes
        assert isinstance(note, SfCreate) and "Total MRR delta: unknown" in note.fields["Body"]

    def test_a_move_without_its_target_falls_back_too(self) -> None:
        """An Upgrade that names no target entry cannot be priced: Nue's total, said plainly."""
        order = {**change_order({"changeType": "Upgrade", "assetNumber": "SUB-1"}), "orderACV": "3600.00"}
        amendment = amendment_of(order, subs(SUB_1=1))
        assert amendment.from_nue_totals and amendment.mrr_delta == Decimal("300.00") and amendment.kind == "upsell"

    def test_a_new_product_is_an_add_on(self) -> None:
        """A product the change order adds counts from zero to its new subscription's MRR."""
        order = {**change_order(), "orderProducts": [{"id": "l-new", "priceBookEntryId": "e-plat", "quantity": 2,
                                                      "discount": 0}]}
        new = {"id": "s9", "name": "SUB-9", "priceBookEntryId": "e-plat", "orderProductId": "l-new", "quantity": 2,
               "status": "Active"}
        amendment = amendment_of(order, [*subs(SUB_1=1), new])
        assert [(d.asset_number, d.change_types, d.before, d.after) for d in amendment.deltas] == [
            ("SUB-9", ("New product",), Decimal(0), Decimal("1000.00"))]
        assert amendment.kind == "add_on" and amendment.acv_delta == Decimal("12000.00")

    @pytest.mark.parametrize(("change", "now", "kind"), [
        ({"changeType": "UpdateQuantity", "assetNumber": "SUB-1", "quantity": -1}, {"SUB_1": 1}, "downsell"),
        ({"changeType": "Cancel", "assetNumber": "SUB-1", "cancellationDate": "2026-02-01"}, {"SUB_1": 1},
         "cancellation"),
        ({"changeType": "Renew", "assetNumber": "SUB-1", "renewalTerm": 12}, {"SUB_1": 1}, "renewal"),
        ({"changeType": "UpdateTerm", "assetNumber": "SUB-1", "term": 6}, {"SUB_1": 1}, "no_change"),
    ])
    def test_kinds(self, change: dict[str, Any], now: dict[str, Any], kind: str) -> None:
        """The kind is the lookup table's key: by the sign of the delta, and what changed."""
        assert amendment_of(change_order(change), subs(**now)).kind == kind


class TestAmendmentOpportunity:
    ORDER = change_order({"changeType": "UpdateQuantity", "assetNumber": "SUB-1", "quantity": 5})

    def test_upserted_closed_won_by_the_change_orders_id(self) -> None:
        """The Note and one opportunity keyed by the change order: Closed Won, ACV delta, flow 1's order id."""
        plan = AmendmentsFlow().plan(event(), full_found(self.ORDER, subs(SUB_1=6)))
        note, opportunity = plan.writes
        assert isinstance(note, SfCreate)
        assert opportunity == SfUpsert(
            sobject="Opportunity", external_id_field="Nue_Amendment_Key__c", external_id="o-2",
            idem_key="amendments:opportunity:o-2",
            fields={"Name": "Acme - Upsell O-00000002", "AccountId": "001A", "StageName": "Closed Won",
                    "CloseDate": "2026-02-01", "Amount": Decimal("30000.00"), "Type": "Upsell",
                    "Nue_Order_Id__c": "o-2", "Nue_Order_Number__c": "O-00000002", "OwnerId": "005O"})

    def test_mrr_basis_and_own_type_table(self) -> None:
        """amount_basis mrr writes the monthly delta; the Type comes from the configured table."""
        flow = AmendmentsFlow(AmendmentMapping(amount_basis="mrr", types={"upsell": "Expansion"}, contract=False))
        [_, opportunity] = flow.plan(event(), full_found(self.ORDER, subs(SUB_1=6))).writes
        assert isinstance(opportunity, SfUpsert)
        assert opportunity.fields["Amount"] == Decimal("2500.00") and opportunity.fields["Type"] == "Expansion"

    def test_a_downsell_has_a_negative_amount(self) -> None:
        """Contraction shows in the pipeline as a negative amount."""
        order = change_order({"changeType": "Cancel", "assetNumber": "SUB-1", "cancellationDate": "2026-02-01"})
        [_, opportunity] = AmendmentsFlow().plan(event(), full_found(order, subs(SUB_1=1))).writes
        assert isinstance(opportunity, SfUpsert)
        assert (opportunity.fields["Type"], opportunity.fields["Amount"]) == ("Downsell", Decimal("-6000.00"))

    def test_a_kind_the_table_lacks_gets_no_opportunity(self) -> None:
        """A term change moves no money: by default no opportunity, the Note alone."""
        order = change_order({"changeType": "UpdateTerm", "assetNumber": "SUB-1", "term": 6})
        [note] = AmendmentsFlow().plan(event(), full_found(order, subs(SUB_1=1))).writes
        assert isinstance(note, SfCreate)

    def test_replay_with_both_made_plans_nothing(self) -> None:
        """The Note and the opportunity exist: nothing to write, and the reasons are given."""
        children = {("Note", "ParentId", "001A"): [{"Title": "Nue amendment O-00000002"}],
                    ("Opportunity", "Nue_Amendment_Key__c", "o-2"): [{"Id": "006N", "Nue_Amendment_Key__c": "o-2"}]}
        plan = AmendmentsFlow().plan(event(), full_found(self.ORDER, subs(SUB_1=6), children=children))
        assert plan.writes == () and "amendment opportunity of O-00000002 exists" in (plan.skip_reason or "")

    def test_an_opportunity_that_already_shows_the_change_order_is_left_alone(self) -> None:
        """A rep's deal that Nue's quote-to-order made this change order from is not duplicated."""
        children = {("Opportunity", "Nue_Order_Id__c", "o-2"): [{"Id": "006R", "Nue_Order_Id__c": "o-2"}]}
        [note] = AmendmentsFlow().plan(event(), full_found(self.ORDER, subs(SUB_1=6), children=children)).writes
        assert isinstance(note, SfCreate)

    def test_a_change_order_made_from_a_reps_deal_gets_no_opportunity_before_flow_1_links_it(self) -> None:
        """The webhook reaches flow 5 before the poll reaches flow 1: the change order already names its deal (an
        opportunity or a quote), so flow 5 makes none and the change is not counted twice in the pipeline."""
        for named in ({"opportunityId": "006R"}, {"quoteId": "q-7"},
                      {"description": "From Salesforce (sfdc-opportunity:006R)"}):
            plan = AmendmentsFlow().plan(event(), full_found({**self.ORDER, **named}, subs(SUB_1=6)))
            [note] = plan.writes
            assert isinstance(note, SfCreate) and note.sobject == "Note", named

    def test_needs_the_opportunities_of_the_change_order(self) -> None:
        """Both keys are read once the change order is seen; nothing of it when switched off."""
        partial = Found(nue_orders={"c1": [NEW_ORDER, self.ORDER]}, nue_customers={"c1": CUSTOMER})
        needs = AmendmentsFlow().needs(event(), partial)
        assert {("Opportunity", "Nue_Amendment_Key__c", "o-2"), ("Opportunity", "Nue_Order_Id__c", "o-2")} \
            <= needs.sf_children
        assert AmendmentsFlow(NOTE_ONLY).salesforce_fields == {"Note": frozenset({"ParentId", "Title", "Body"})}


class TestContract:
    ORDER = change_order({"changeType": "UpdateTerm", "assetNumber": "SUB-1", "term": 12},
                         {"changeType": "UpdateQuantity", "assetNumber": "SUB-1", "quantity": 1})
    CONTRACT: ClassVar[dict[str, Any]] = {"Id": "800C", "StartDate": "2026-01-01", "ContractTerm": 12, "MRR__c": 500.0}

    def dated(self, quantity: int, end: str) -> list[dict[str, Any]]:
        return [{**s, "subscriptionEndDate": end} for s in subs(SUB_1=quantity, SUB_4=2)]

    def test_the_original_deals_contract_gets_term_and_mrr(self) -> None:
        """Found through the original order's opportunity (ContractId): term to the last end, live MRR now."""
        children = {("Opportunity", "Nue_Order_Id__c", "o-1"): [{"Id": "006A", "ContractId": "800C"}]}
        known = full_found(self.ORDER, self.dated(2, "2028-01-01"), children=children,
                           records={("Contract", "800C"): self.CONTRACT})
        assert ("Opportunity", "Nue_Order_Id__c", "o-1") in AmendmentsFlow().needs(event(), known).sf_children
        assert ("Contract", "800C") in AmendmentsFlow().needs(event(), known).sf_records
        writes = AmendmentsFlow(AmendmentMapping(opportunity=False)).plan(event(), known).writes
        [update] = [w for w in writes if isinstance(w, SfUpdate)]
        # SUB-1 at 2 x 500 and SUB-4 at 2 x 1200 / 12 are the deal's live MRR; 24 months to 2028-01-01.
        assert update.record_id == "800C" and update.fields == {"MRR__c": Decimal("1200.00"), "ContractTerm": 24}

    def test_a_contract_that_shows_it_already_is_not_written(self) -> None:
        """Replays (or another change order's event after it) write nothing when the contract agrees."""
        children = {("Opportunity", "Nue_Order_Id__c", "o-1"): [{"Id": "006A", "ContractId": "800C"}]}
        contract = {**self.CONTRACT, "ContractTerm": 24, "MRR__c": 1200.0}
        known = full_found(self.ORDER, self.dated(2, "2028-01-01"), children=children,
                           records={("Contract", "800C"): contract})
        writes = AmendmentsFlow(AmendmentMapping(opportunity=False)).plan(event(), known).writes
        assert not [w for w in writes if isinstance(w, SfUpdate)]

    def test_no_contract_no_write(self) -> None:
        """A deal without a ContractId (the org does not use Contracts): nothing for the contract."""
        children = {("Opportunity", "Nue_Order_Id__c", "o-1"): [{"Id": "006A", "ContractId": None}]}
        known = full_found(self.ORDER, self.dated(2, "2028-01-01"), children=children)
        writes = AmendmentsFlow(AmendmentMapping(opportunity=False)).plan(event(), known).writes
        assert [type(w) for w in writes] == [SfCreate]
