from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from revdaemon.domain.subscriptions import order_lines, price_entries
from revdaemon.flows.amendments import AmendmentsFlow, amendment_deltas, money_text
from revdaemon.flows.base import FlowEvent, Found
from revdaemon.flows.plan import Plan, SfCreate

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
    ORDER = change_order({"changeType": "UpdateQuantity", "assetNumber": "SUB-1", "quantity": 5})

    def test_note_with_before_after_and_delta(self) -> None:
        """An activated change order plans one Note, found again by account and title."""
        plan = AmendmentsFlow().plan(event(), found(self.ORDER, subs(SUB_1=6)))
        body = ("Nue change order O-00000002 activated 2026-02-01\n\nChange type: UpdateQuantity\nAsset: SUB-1\n"
                "MRR before: 500.00\nMRR after: 3000.00\nMRR delta: +2500.00")
        fields = {"ParentId": "001A", "Title": "Nue amendment O-00000002", "Body": body}
        assert plan == Plan(writes=(SfCreate(sobject="Note", fields=fields,
                                             match={"ParentId": "001A", "Title": "Nue amendment O-00000002"},
                                             idem_key="amendments:note:o-2", seen_absent=True),))

    def test_replay_with_the_note_there_plans_nothing(self) -> None:
        """The account already has this order's Note: nothing to write."""
        notes = [{"Id": "002X", "ParentId": "001A", "Title": "Nue amendment O-00000002"}]
        plan = AmendmentsFlow().plan(event(), found(self.ORDER, subs(SUB_1=6), notes))
        assert plan.writes == () and "already has" in (plan.skip_reason or "")

    def test_same_note_whatever_happened_to_the_account_since(self) -> None:
        """The delta comes from Nue, so a later change order does not alter an older order's Note."""
        later = change_order({"changeType": "UpdateQuantity", "assetNumber": "SUB-1", "quantity": 10},
                             number=3, at="2026-03-01T00:00:00Z")
        now = AmendmentsFlow().plan(event(), found(self.ORDER, subs(SUB_1=6)))
        replayed = AmendmentsFlow().plan(event(), Found(
            nue_orders={"c1": [NEW_ORDER, self.ORDER, later]}, nue_subscriptions={"c1": subs(SUB_1=16)},
            nue_customers={"c1": CUSTOMER}, catalog=CATALOG, sf_records={("Account", "001A"): {"Id": "001A"}}))
        assert now == replayed

    def test_new_orders_are_not_amendments(self) -> None:
        """An ordinary order's activation is skipped, and asks for no Salesforce read."""
        flow = AmendmentsFlow()
        partial = Found(nue_orders={"c1": [NEW_ORDER]}, nue_customers={"c1": CUSTOMER})
        assert flow.needs(event("o-1"), partial).sf_records == frozenset()
        plan = flow.plan(event("o-1"), found(self.ORDER, subs(SUB_1=6)))
        assert plan.writes == () and "not a change order" in (plan.skip_reason or "")

    def test_needs_the_account_and_its_notes_once_a_change_order_is_seen(self) -> None:
        """Subscriptions, catalog, the account and its Notes are read only for a change order."""
        partial = Found(nue_orders={"c1": [NEW_ORDER, self.ORDER]}, nue_customers={"c1": CUSTOMER})
        needs = AmendmentsFlow().needs(event(), partial)
        assert needs.catalog and needs.nue_subscriptions_of == {"c1"}
        assert needs.sf_records == {("Account", "001A")} and needs.sf_children == {("Note", "ParentId", "001A")}

    def test_unknown_asset_is_skipped(self) -> None:
        """A change to a subscription the customer does not have plans nothing, with the reason."""
        order = change_order({"changeType": "UpdateQuantity", "assetNumber": "SUB-9", "quantity": 1})
        plan = AmendmentsFlow().plan(event(), found(order, subs(SUB_1=1)))
        assert plan.writes == () and "SUB-9" in (plan.skip_reason or "")

    def test_body_values_are_ignored(self) -> None:
        """A notification's claimed quantities change nothing: the Note is computed from the re-read order."""
        flow = AmendmentsFlow()
        lying = event(assetChanges=[{"changeType": "Cancel", "assetNumber": "SUB-1"}], orderNumber="O-9")
        assert flow.plan(lying, found(self.ORDER, subs(SUB_1=6))) == flow.plan(event(), found(self.ORDER,
                                                                                               subs(SUB_1=6)))

    def test_draft_change_order_is_skipped(self) -> None:
        """A change order that is not activated yet is not logged."""
        plan = AmendmentsFlow().plan(event(), found({**self.ORDER, "status": "Draft"}, subs(SUB_1=1)))
        assert plan.writes == () and "Draft" in (plan.skip_reason or "")
