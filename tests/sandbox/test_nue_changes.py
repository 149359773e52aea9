"""Change orders [doc]: every change type, created with POST /change-orders and activated via /orders/{id}."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import date, timedelta
from typing import Any

import pytest
from nue_fixtures import Running, running

from revdaemon.sandbox.nue.dates import add_months


@pytest.fixture
def nue() -> Iterator[Running]:
    with running() as r:
        yield r


def _subscribe(nue: Running, sku: str = "PLAT-SUB", quantity: int = 10, term: int = 12,
               **extra: Any) -> tuple[str, dict[str, Any]]:
    customer = nue.ok(nue.client.post("/customers", json=[{"name": "Changer", "recordType": "Business"}]))[0]
    entry = nue.sim.store.catalog.by_sku[sku].id
    line = {"priceBookEntryId": entry, "quantity": quantity, "subscriptionTerm": term, **extra}
    order = nue.ok(nue.client.post("/orders", json={"customer": {"id": customer["id"]},
                                                    "orderProducts": [line]}))["order"]
    sub = nue.ok(nue.client.post(f"/orders/{order['id']}", json={"options": {}}))["subscriptions"][0]
    return customer["id"], sub


def _change(nue: Running, **change: Any) -> dict[str, Any]:
    draft = nue.ok(nue.client.post("/change-orders", json={"assetChanges": [change]}))["order"]
    assert draft["status"] == "Draft" and draft["orderType"] == "Change"
    activated = nue.ok(nue.client.post(f"/orders/{draft['id']}", json={"options": {}}))
    assert activated["order"]["status"] == "Activated"
    return activated


def _current(nue: Running, customer_id: str) -> dict[str, Any]:
    subs = nue.ok(nue.client.get("/subscriptions", params={"customerIds": json.dumps([customer_id])}))
    assert len(subs) == 1
    return subs[0]  # type: ignore[no-any-return]


def test_quantity_is_a_delta_plus_5_then_minus_2(nue: Running) -> None:
    customer_id, sub = _subscribe(nue, quantity=10)
    first = _change(nue, changeType="UpdateQuantity", assetNumber=sub["name"], quantity=5,
                    startDate=date.today().isoformat())
    assert first["subscriptions"][0]["quantity"] == 15
    assert first["order"]["orderTCV"] == 5 * 500 * 12  # the change's own value, a delta
    _change(nue, changeType="UpdateQuantity", assetNumber=sub["name"], quantity=-2)
    now = _current(nue, customer_id)
    assert now["quantity"] == 13 and now["subscriptionVersion"] == 3
    assert now["id"] == sub["id"] and now["name"] == sub["name"]
    customer = nue.ok(nue.client.get(f"/customers/{customer_id}"))[0]
    assert customer["todayCMRR"] == 13 * 500 and customer["todayARR"] == 13 * 500 * 12
    assert customer["totalTCV"] == 13 * 500 * 12
    below_zero = nue.client.post("/change-orders", json={"assetChanges": [
        {"changeType": "UpdateQuantity", "assetNumber": sub["name"], "quantity": -14}]})
    assert below_zero.status_code == 422


def test_update_term_is_a_delta_in_months(nue: Running) -> None:
    customer_id, sub = _subscribe(nue, term=12)
    _change(nue, changeType="UpdateTerm", assetNumber=sub["name"], term=6)
    now = _current(nue, customer_id)
    assert now["subscriptionTerm"] == 18
    assert now["subscriptionEndDate"] == add_months(date.fromisoformat(sub["subscriptionStartDate"]), 18).isoformat()


def test_renew_extends_by_the_renewal_term(nue: Running) -> None:
    customer_id, sub = _subscribe(nue, term=12)
    _change(nue, changeType="Renew", assetNumber=sub["name"], renewalTerm=12,
            startDate=sub["subscriptionEndDate"])
    now = _current(nue, customer_id)
    assert now["subscriptionTerm"] == 24 and now["status"] == "Active" and now["subscriptionVersion"] == 2
    assert now["subscriptionEndDate"] == add_months(date.fromisoformat(sub["subscriptionEndDate"]), 12).isoformat()


def test_coterm_moves_the_end_date(nue: Running) -> None:
    customer_id, sub = _subscribe(nue, term=12)
    target = add_months(date.fromisoformat(sub["subscriptionStartDate"]), 9)
    _change(nue, changeType="CoTerm", assetNumber=sub["name"], coTermDate=target.isoformat())
    now = _current(nue, customer_id)
    assert now["subscriptionEndDate"] == target.isoformat() and now["subscriptionTerm"] == 9


def test_cancel_in_the_future_is_scheduled_then_takes_effect(nue: Running) -> None:
    customer_id, sub = _subscribe(nue)
    when = date.today() + timedelta(days=10)
    _change(nue, changeType="Cancel", assetNumber=sub["name"], cancellationDate=when.isoformat())
    scheduled = _current(nue, customer_id)
    assert scheduled["status"] == "Scheduled for cancellation"
    assert scheduled["subscriptionEndDate"] == when.isoformat()
    assert nue.ok(nue.client.get(f"/customers/{customer_id}"))[0]["todayCMRR"] == 5000  # still live
    nue.sim.scenario.advance_days(11)
    assert _current(nue, customer_id)["status"] == "Canceled"
    assert nue.ok(nue.client.get(f"/customers/{customer_id}"))[0]["todayCMRR"] == 0
    refused = nue.client.post("/change-orders", json={"assetChanges": [
        {"changeType": "UpdateQuantity", "assetNumber": sub["name"], "quantity": 1}]})
    assert refused.status_code == 422


def test_cancel_today_is_canceled_at_once(nue: Running) -> None:
    customer_id, sub = _subscribe(nue)
    _change(nue, changeType="Cancel", assetNumber=sub["name"], cancellationDate=date.today().isoformat())
    assert _current(nue, customer_id)["status"] == "Canceled"


def test_convert_free_trial_starts_charging(nue: Running) -> None:
    customer_id, sub = _subscribe(nue, quantity=2, isFreeTrial=True)
    assert sub["freeTrial"] is True
    assert nue.ok(nue.client.get(f"/customers/{customer_id}"))[0]["todayCMRR"] == 0
    _change(nue, changeType="ConvertFreeTrial", assetNumber=sub["name"])
    assert _current(nue, customer_id)["freeTrial"] is False
    assert nue.ok(nue.client.get(f"/customers/{customer_id}"))[0]["todayCMRR"] == 1000
    again = nue.client.post("/change-orders", json={"assetChanges": [
        {"changeType": "ConvertFreeTrial", "assetNumber": sub["name"]}]})
    assert again.status_code == 422


def test_ended_then_expired(nue: Running) -> None:
    customer_id, sub = _subscribe(nue, term=1)
    nue.sim.scenario.advance_days(40)
    assert _current(nue, customer_id)["status"] == "Ended"
    nue.sim.scenario.expire_subscription(sub["name"])
    assert _current(nue, customer_id)["status"] == "Expired"


def test_unknown_change_type_and_asset_are_refused(nue: Running) -> None:
    _, sub = _subscribe(nue)
    bad_type = nue.client.post("/change-orders", json={"assetChanges": [
        {"changeType": "Transmogrify", "assetNumber": sub["name"]}]})
    assert bad_type.status_code == 400
    bad_asset = nue.client.post("/change-orders", json={"assetChanges": [
        {"changeType": "Renew", "assetNumber": "SUB-99999999"}]})
    assert bad_asset.status_code == 422


def test_subscription_composite_id_follows_the_version(nue: Running) -> None:
    """subscriptionCompositeId [doc: "composite identifier with version", SUB-00000309 v1; the hyphen is
    assumed]: on creation, after a change order, in GraphQL, and never patched directly."""
    customer_id, sub = _subscribe(nue, quantity=3)
    assert sub["subscriptionCompositeId"] == f"{sub['name']}-1"
    assert _current(nue, customer_id)["subscriptionCompositeId"] == f"{sub['name']}-1"
    _change(nue, changeType="UpdateQuantity", assetNumber=sub["name"], quantity=1)
    now = _current(nue, customer_id)
    assert now["subscriptionVersion"] == 2 and now["subscriptionCompositeId"] == f"{sub['name']}-2"
    query = f'{{ Subscription(where: {{id: {{_eq: "{sub["id"]}"}}}}) {{ name subscriptionCompositeId }} }}'
    rows = nue.client.post("/async/graphql", json={"query": query}).json()["data"]["Subscription"]
    assert rows == [{"name": sub["name"], "subscriptionCompositeId": f"{sub['name']}-2"}]
    refused = nue.client.patch(f"/subscriptions/{sub['id']}", json={"subscriptionCompositeId": "SUB-X-9"})
    assert refused.status_code == 422


class TestEveryChangeType:
    """Issue 26: the simulator makes every change type flow 5 prices or reports (wire.CHANGE_TYPES)."""

    @pytest.mark.parametrize(("change_type", "target"), [("Upgrade", "PLAT-SUB"), ("Downgrade", "SUP-PREM"),
                                                         ("Swap", "SUP-PREM")])
    def test_a_product_move_keeps_the_subscription_on_the_target_entry(
            self, nue: Running, change_type: str, target: str) -> None:
        """Same id and number, the target's entry and product, a new version; Nue's totals follow the price."""
        start = "SUP-PREM" if change_type == "Upgrade" else "PLAT-SUB"
        customer_id, sub = _subscribe(nue, sku=start, quantity=2)
        entry = nue.sim.store.catalog.by_sku[target]
        activated = _change(nue, changeType=change_type, assetNumber=sub["name"], targetPriceBookEntryId=entry.id)
        now = _current(nue, customer_id)
        assert (now["id"], now["name"], now["priceBookEntryId"], now["productId"]) == \
            (sub["id"], sub["name"], entry.id, entry.product_id)
        assert now["subscriptionVersion"] == 2 and now["quantity"] == 2
        before = nue.sim.store.catalog.by_sku[start].unit_price
        assert activated["order"]["orderACV"] == (entry.unit_price - before) * 2 * 12
        customer = nue.ok(nue.client.get(f"/customers/{customer_id}"))[0]
        assert customer["todayCMRR"] == entry.unit_price * 2

    def test_a_move_to_the_same_or_a_one_time_product_is_refused(self, nue: Running) -> None:
        """422: nothing to move to."""
        _, sub = _subscribe(nue, sku="PLAT-SUB")
        for sku in ("PLAT-SUB", "ONB-SVC"):
            entry = nue.sim.store.catalog.by_sku[sku].id
            answer = nue.client.post("/change-orders", json={"assetChanges": [
                {"changeType": "Upgrade", "assetNumber": sub["name"], "targetPriceBookEntryId": entry}]})
            assert answer.status_code == 422

    def test_reconfigure_changes_no_price(self, nue: Running) -> None:
        """A bundle's options are priced inside it [assumed]: a new version, the same MRR, orderACV 0."""
        customer_id, sub = _subscribe(nue, sku="PLAT-SUB")
        activated = _change(nue, changeType="Reconfigure", assetNumber=sub["name"], addOns=[])
        assert activated["order"]["orderACV"] == 0
        assert _current(nue, customer_id)["subscriptionVersion"] == 2

    def test_adjust_price_moves_nues_totals_but_no_subscription_field(self, nue: Running) -> None:
        """AdjustPrice [assumed]: a new discount; Nue's MRR and the order's ACV change, the record shows no price."""
        customer_id, sub = _subscribe(nue, sku="PLAT-SUB", quantity=2)
        activated = _change(nue, changeType="AdjustPrice", assetNumber=sub["name"], discount=10)
        assert activated["order"]["orderACV"] == -100 * 12  # 10 % of 2 x 500 a month
        customer = nue.ok(nue.client.get(f"/customers/{customer_id}"))[0]
        assert customer["todayCMRR"] == 900
        assert "discount" not in _current(nue, customer_id)


def test_listed_orders_include_what_each_order_made(nue: Running) -> None:
    """GET /orders?includes=assets,invoices gathers the included records of all listed orders in one pass (issue
    30); each order still gets exactly its own: the subscriptions it made or changed, its assets, its invoices."""
    from revdaemon.sandbox.nue import orders
    from revdaemon.sandbox.nue.wire import render

    first, sub = _subscribe(nue, quantity=10)
    _change(nue, changeType="UpdateQuantity", assetNumber=sub["name"], quantity=5)
    second, _ = _subscribe(nue, sku="PLAT-SUB", quantity=3)
    store = nue.sim.store
    listed = orders.list_orders(store, json.dumps([first, second]), "assets,invoices", None)
    assert len(listed) == 3 and {o["customerId"] for o in listed} == {first, second}
    for order in listed:
        own = store.orders[order["id"]]
        assert order["assets"] == [render(a) for a in orders.order_assets(store, own)]
        assert order["invoices"] == [render(i) for i in store.invoices.values() if i["orderId"] == own["id"]]
    change = next(o for o in listed if o["orderType"] == "Change")
    assert [a["id"] for a in change["assets"]] == [sub["id"]]  # the subscription it changed
    assert len(nue.ok(nue.client.get("/orders", params={"customerIds": json.dumps([first]),
                                                        "includes": "assets,invoices"}))) == 2
