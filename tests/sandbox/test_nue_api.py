"""Customers, contacts, catalog, orders, subscriptions: the REST shapes of nue-api.md over real sockets."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import date

import pytest
from nue_fixtures import Running, running

from revdaemon.sandbox.nue.dates import add_months


@pytest.fixture(scope="module")
def nue() -> Iterator[Running]:
    with running() as r:
        yield r


def test_missing_or_wrong_key_is_401_with_the_error_body(nue: Running) -> None:
    for headers in ({"nue-api-key": ""}, {"nue-api-key": "wrong"}):
        response = nue.client.get("/catalog/products", headers=headers)
        assert response.status_code == 401
        body = response.json()
        assert body["status"] == "failure"
        assert body["errorCode"] == "UNAUTHORIZED"
        assert body["message"] and body["errorId"]
    import httpx

    assert httpx.get(nue.url + "/catalog/products").status_code == 401


def test_no_version_segment_and_unknown_paths_are_404_in_the_error_shape(nue: Running) -> None:
    response = nue.client.get("/v1/customers/abc")
    assert response.status_code == 404
    assert response.json()["status"] == "failure"


def test_catalog_has_salesforce_ids_price_tags_and_a_bundle(nue: Running) -> None:
    products = {p["sku"]: p for p in nue.ok(nue.client.get("/catalog/products"))}
    assert set(products) == {"PLAT-SUB", "SEAT-VOL", "API-TIER", "SUP-PREM", "ONB-SVC", "GROW-BNDL"}
    seats = products["SEAT-VOL"]
    assert seats["id"].startswith("01t")
    entry = seats["priceBookEntries"][0]
    assert entry["id"].startswith("01u") and entry["priceBookId"].startswith("01s")
    assert entry["priceTags"] == [{"priceTagType": "Volume", "tiers": [
        {"lowerBound": 1, "upperBound": 50, "price": 40, "chargeModel": "PerUnit"},
        {"lowerBound": 51, "upperBound": 200, "price": 32, "chargeModel": "PerUnit"},
        {"lowerBound": 201, "upperBound": None, "price": 25, "chargeModel": "PerUnit"},
    ]}]
    assert products["API-TIER"]["priceBookEntries"][0]["priceTags"][0]["priceTagType"] == "Tiered"
    bundle = products["GROW-BNDL"]
    assert bundle["recordType"] == "Bundle" and bundle["configurable"] is True
    assert len(bundle["productOptions"]) == 3


def test_customers_are_created_in_arrays_of_at_most_200(nue: Running) -> None:
    too_many = [{"name": f"C{i}", "recordType": "Business"} for i in range(201)]
    response = nue.client.post("/customers", json=too_many)
    assert response.status_code == 400 and response.json()["errorCode"] == "INVALID_REQUEST"
    assert nue.client.post("/customers", json={"name": "x", "recordType": "Business"}).status_code == 400
    assert nue.client.post("/customers", json=[{"name": "x", "recordType": "Company"}]).status_code == 400

    created = nue.ok(nue.client.post("/customers", json=[
        {"name": "Alpha", "recordType": "Business", "email": "a@alpha.example", "billingCity": "Paris"},
        {"name": "Beta", "recordType": "Consumer", "externalId": "0015g0000000999AAA"},
    ]))
    assert [c["name"] for c in created] == ["Alpha", "Beta"]
    alpha, beta = created
    assert alpha["billingCity"] == "Paris" and alpha["accountNumber"].startswith("CUST-")
    assert beta["externalId"] is None  # read-only, filled by Nue's own sync
    assert alpha["createdDate"] == alpha["lastModifiedDate"] and alpha["createdDate"].endswith("Z")
    assert alpha["todayCMRR"] == 0


def test_read_only_external_id_is_reported_in_warnings(nue: Running) -> None:
    response = nue.client.post("/customers", json=[{"name": "W", "recordType": "Business", "externalId": "x"}])
    assert response.json()["warnings"] == ["externalId is read-only and was ignored"]


def test_customer_read_by_nue_id_and_by_salesforce_id_then_patched(nue: Running) -> None:
    account = nue.sim.seed_data.accounts[1]
    linked = nue.sim.scenario.create_customer(account.id)
    assert linked["externalId"] == account.id
    by_sf = nue.ok(nue.client.get(f"/customers/{account.id}"))[0]
    by_id = nue.ok(nue.client.get(f"/customers/{linked['id']}"))[0]
    assert by_sf == by_id and by_id["name"] == account.name
    patched = nue.ok(nue.client.patch(f"/customers/{account.id}", json={"phone": "+1-555-9999"}))[0]
    assert patched["phone"] == "+1-555-9999"
    assert patched["lastModifiedDate"] > by_id["lastModifiedDate"]
    assert patched["createdDate"] == by_id["createdDate"]
    assert nue.client.get("/customers/0015g0000000000AAA").status_code == 404


def test_contacts_have_unique_emails(nue: Running) -> None:
    customer = nue.ok(nue.client.post("/customers", json=[{"name": "Gamma", "recordType": "Business"}]))[0]
    contacts = nue.ok(nue.client.post(f"/customers/{customer['id']}/contacts", json=[
        {"firstName": "Ada", "lastName": "Lovelace", "email": "ada@gamma.example"}]))
    assert contacts[0]["name"] == "Ada Lovelace" and contacts[0]["customerId"] == customer["id"]
    again = nue.client.post(f"/customers/{customer['id']}/contacts",
                            json=[{"firstName": "A", "lastName": "L", "email": "ADA@gamma.example"}])
    assert again.status_code == 409 and again.json()["errorCode"] == "CONFLICT"


def _entry(nue: Running, sku: str) -> str:
    return nue.sim.store.catalog.by_sku[sku].id


def test_draft_order_with_a_bundle_then_activation_creates_subscriptions_assets_and_invoice(nue: Running) -> None:
    account = nue.sim.seed_data.accounts[2]
    customer = nue.sim.scenario.create_customer(account.id)
    bundle = nue.sim.store.catalog.by_sku["GROW-BNDL"]
    start = date.today().isoformat()
    draft = nue.ok(nue.client.post("/orders", json={
        "customer": {"id": account.id}, "effectiveDate": start, "name": "Initech new", "description": "opp:006X",
        "salesforceOpportunityId": "006X",
        "orderProducts": [
            {"priceBookEntryId": bundle.id, "quantity": 1, "subscriptionStartDate": start, "subscriptionTerm": 12,
             "addOns": [{"productOptionId": bundle.options[1].id, "quantity": 10}]},
            {"priceBookEntryId": _entry(nue, "ONB-SVC"), "quantity": 1},
        ],
        "options": {"previewInvoice": True, "calculateTax": False},
    }))
    order = draft["order"]
    assert order["status"] == "Draft" and order["orderNumber"].startswith("O-")
    assert order["customerId"] == customer["id"] and order["salesforceOpportunityId"] == "006X"
    assert order["orderTCV"] == 1200 * 12 + 2500 and order["totalAmount"] == order["orderTCV"]
    assert order["orderProducts"][0]["addOns"][0]["productOptionId"] == bundle.options[1].id
    assert draft["previewInvoice"]["amount"] == 1200 + 2500

    activated = nue.ok(nue.client.post(f"/orders/{order['id']}",
                                       json={"options": {"generateInvoice": True, "activateInvoice": True}}))
    assert activated["order"]["status"] == "Activated" and activated["order"]["activatedDate"]
    assert activated["order"]["id"] == order["id"]
    kinds = sorted((a["assetType"], a["assetNumber"][:3]) for a in activated["assets"])
    assert kinds == [("Asset", "AST"), ("Subscription", "SUB"), ("Subscription", "SUB")]
    subs = activated["subscriptions"]
    assert all(s["subscriptionVersion"] == 1 and s["status"] == "Active" for s in subs)
    assert subs[0]["subscriptionEndDate"] == add_months(date.today(), 12).isoformat()
    assert activated["invoices"][0]["status"] == "Active"
    assert activated["invoices"][0]["paymentStatus"] == "NotTransferred"
    again = nue.client.post(f"/orders/{order['id']}", json={"options": {}})
    assert again.status_code == 409

    # MRR is not a subscription field; the customer's CMRR is the cross-check.
    assert "mrr" not in {k.lower() for k in subs[0]}
    refreshed = nue.ok(nue.client.get(f"/customers/{customer['id']}"))[0]
    assert refreshed["todayCMRR"] == 1200 and refreshed["todayARR"] == 14400
    assert refreshed["totalTCV"] == 1200 * 12 + 2500

    ids = json.dumps([account.id])
    listed = nue.ok(nue.client.get("/orders", params={"customerIds": ids, "includes": "assets,invoices",
                                                      "status": "activated"}))
    assert [o["id"] for o in listed] == [order["id"]]
    assert len(listed[0]["assets"]) == 3 and len(listed[0]["invoices"]) == 1
    assert nue.ok(nue.client.get("/orders", params={"customerIds": ids, "status": "Draft"})) == []
    assert nue.client.get("/orders", params={"customerIds": "not json"}).status_code == 400


def test_order_validation_errors(nue: Running) -> None:
    customer = nue.ok(nue.client.post("/customers", json=[{"name": "Delta", "recordType": "Business"}]))[0]
    missing = nue.client.post("/orders", json={"customer": {"id": customer["id"]}, "orderProducts": [
        {"priceBookEntryId": "01u000000000000AAA", "quantity": 1}]})
    assert missing.status_code == 422 and missing.json()["errorCode"] == "UNPROCESSABLE_ENTITY"
    assert nue.client.post("/orders", content=b"{not json").status_code == 400
    assert nue.client.post("/orders/nope", json={}).status_code == 404


def test_tiered_and_volume_prices_feed_the_customer_cmrr(nue: Running) -> None:
    customer = nue.ok(nue.client.post("/customers", json=[{"name": "Tiers", "recordType": "Business"}]))[0]
    body = {"customer": {"id": customer["id"]}, "orderProducts": [
        {"priceBookEntryId": _entry(nue, "SEAT-VOL"), "quantity": 60, "subscriptionTerm": 12},
        {"priceBookEntryId": _entry(nue, "API-TIER"), "quantity": 1500, "subscriptionTerm": 12},
    ]}
    order = nue.ok(nue.client.post("/orders", json=body))["order"]
    nue.ok(nue.client.post(f"/orders/{order['id']}", json={"options": {}}))
    cmrr = nue.ok(nue.client.get(f"/customers/{customer['id']}"))[0]["todayCMRR"]
    # volume: 60 x 32; tiered: 100 free + 900 x 2 + 500 x 1.5
    assert cmrr == 60 * 32 + 900 * 2 + 500 * 1.5


def test_subscriptions_by_customer_ids_and_patch(nue: Running) -> None:
    customer = nue.ok(nue.client.post("/customers", json=[{"name": "Subs", "recordType": "Business"}]))[0]
    order = nue.ok(nue.client.post("/orders", json={"customer": {"id": customer["id"]}, "orderProducts": [
        {"priceBookEntryId": _entry(nue, "PLAT-SUB"), "quantity": 2, "subscriptionTerm": 24}]}))["order"]
    nue.ok(nue.client.post(f"/orders/{order['id']}", json={"options": {}}))
    subs = nue.ok(nue.client.get("/subscriptions", params={"customerIds": json.dumps([customer["id"]])}))
    assert len(subs) == 1
    sub = subs[0]
    assert sub["name"].startswith("SUB-") and sub["quantity"] == 2 and sub["subscriptionTerm"] == 24
    assert sub["customerId"] == customer["id"] and sub["priceBookEntryId"] == _entry(nue, "PLAT-SUB")
    patched = nue.ok(nue.client.patch(f"/subscriptions/{sub['id']}", json={"autoRenew": True}))[0]
    assert patched["autoRenew"] is True and patched["subscriptionVersion"] == 1
    assert patched["lastModifiedDate"] > sub["lastModifiedDate"]
    assert nue.client.patch(f"/subscriptions/{sub['id']}", json={"quantity": 5}).status_code == 422


def test_read_only_key_gets_403_on_writes() -> None:
    with running(read_only_api_keys=("reader",)) as r:
        headers = {"nue-api-key": "reader"}
        assert r.client.get("/catalog/products", headers=headers).status_code == 200
        denied = r.client.post("/customers", json=[{"name": "x", "recordType": "Business"}], headers=headers)
        assert denied.status_code == 403 and denied.json()["errorCode"] == "FORBIDDEN"


def test_standalone_tenant_uses_uuids_and_never_links() -> None:
    with running(connected_to_salesforce=False) as r:
        product = r.ok(r.client.get("/catalog/products"))[0]
        assert len(product["id"]) == 36 and product["id"].count("-") == 4
        customer = r.sim.scenario.create_customer(0)
        assert customer["externalId"] is None
    with running(connected_to_salesforce=False) as again:
        assert again.ok(again.client.get("/catalog/products"))[0]["id"] == product["id"]  # deterministic


def test_salesforce_sync_fills_external_id_on_activation(nue: Running) -> None:
    account = nue.sim.seed_data.accounts[5]
    customer = nue.ok(nue.client.post("/customers", json=[
        {"name": account.name, "recordType": "Business", "salesAccountId": account.id}]))[0]
    assert customer["externalId"] is None
    assert nue.client.get(f"/customers/{account.id}").status_code == 404
    order = nue.ok(nue.client.post("/orders", json={"customer": {"id": customer["id"]}, "orderProducts": [
        {"priceBookEntryId": _entry(nue, "SUP-PREM"), "quantity": 1}]}))["order"]
    nue.ok(nue.client.post(f"/orders/{order['id']}", json={}))
    assert nue.ok(nue.client.get(f"/customers/{account.id}"))[0]["id"] == customer["id"]
