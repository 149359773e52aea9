"""Invoices (pagination, filters, two status axes), payments, failed collections, quotes."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date
from typing import Any

import pytest
from nue_fixtures import Running, running


@pytest.fixture(scope="module")
def billed() -> Iterator[tuple[Running, dict[str, Any], list[dict[str, Any]]]]:
    """A customer on 1 platform + 25 seats (10% off) + onboarding, with 5 invoices of 1400 and 1 of 3900."""
    with running() as r:
        scenario = r.sim.scenario
        customer = scenario.create_customer(0)
        result = scenario.create_and_activate_order(customer["id"], opportunity=0, generate_invoice=True,
                                                    activate_invoice=True)
        invoices = [result["invoices"][0]] + [scenario.post_invoice(customer["id"], activate=True) for _ in range(5)]
        yield r, customer, invoices


def test_invoice_amounts_and_status_axes(billed: tuple[Running, dict[str, Any], list[dict[str, Any]]]) -> None:
    nue, _customer, invoices = billed
    assert [i["amount"] for i in invoices] == [3900] + [1400] * 5
    first = nue.ok(nue.client.get(f"/invoices/{invoices[0]['id']}"))[0]
    assert first["status"] == "Active" and first["paymentStatus"] == "NotTransferred"
    assert first["name"].startswith("INV-") and first["balance"] == 3900
    assert first["dueDate"] > first["invoiceDate"]
    assert nue.client.get("/invoices/nope").status_code == 404


def test_pagination_is_1_based_with_a_total(billed: tuple[Running, dict[str, Any], list[dict[str, Any]]]) -> None:
    nue, customer, invoices = billed
    seen = []
    for page in (1, 2, 3):
        response = nue.client.get("/invoices", params={"customerId": customer["id"], "page": page, "limit": 2})
        body = response.json()
        assert body["pagination"]["total"] == 6
        seen += [i["id"] for i in nue.ok(response)]
    assert sorted(seen) == sorted(i["id"] for i in invoices)
    assert nue.ok(nue.client.get("/invoices", params={"page": 4, "limit": 2, "customerId": customer["id"]})) == []
    assert nue.client.get("/invoices", params={"limit": 501}).status_code == 400
    assert nue.client.get("/invoices", params={"page": 0}).status_code == 400


def test_dynamic_field_filters(billed: tuple[Running, dict[str, Any], list[dict[str, Any]]]) -> None:
    nue, _customer, invoices = billed
    big = nue.ok(nue.client.get("/invoices?amount>=1000&amount<2000"))
    assert {i["id"] for i in big} == {i["id"] for i in invoices[1:]}
    assert [i["id"] for i in nue.ok(nue.client.get("/invoices?amount>3000"))] == [invoices[0]["id"]]
    today = date.today().isoformat()
    assert len(nue.ok(nue.client.get(f"/invoices?invoiceDate>={today}"))) == 6
    assert nue.ok(nue.client.get("/invoices?invoiceDate>=2999-01-01")) == []
    cut = invoices[3]["lastModifiedDate"]
    # httpx encodes the key, so this is `lastModifiedDate%3E=<cut>`: `>=` once decoded.
    recent = nue.ok(nue.client.get("/invoices", params={"lastModifiedDate>": cut}))
    assert {i["id"] for i in recent} == {i["id"] for i in invoices[3:]}
    later = nue.ok(nue.client.get(f"/invoices?lastModifiedDate>{cut}"))
    assert {i["id"] for i in later} == {i["id"] for i in invoices[4:]}
    assert nue.client.get("/invoices?colour=red").status_code == 400
    assert nue.client.get("/invoices?amount>=lots").status_code == 400


def test_customer_invoices_by_salesforce_id(billed: tuple[Running, dict[str, Any], list[dict[str, Any]]]) -> None:
    nue, customer, _ = billed
    response = nue.client.get(f"/customers/{customer['externalId']}/invoices", params={"limit": 500})
    assert len(nue.ok(response)) == 6 and response.json()["pagination"]["total"] == 6
    assert nue.client.get("/customers/unknown/invoices").status_code == 404


def test_pay_partially_then_fully_with_payment_applications(
        billed: tuple[Running, dict[str, Any], list[dict[str, Any]]]) -> None:
    nue, customer, invoices = billed
    target = invoices[1]
    def pay(amount: float) -> Any:
        return nue.client.post("/billing/invoices:pay", json={"payInvoices": [{
            "invoiceId": target["id"], "customerId": customer["externalId"], "transactionAmount": amount,
            "paymentSource": "Stripe", "paymentMethod": "Credit Card"}]})

    nue.ok(pay(400))
    partial = nue.ok(nue.client.get(f"/invoices/{target['id']}"))[0]
    assert partial["paymentStatus"] == "PartiallyPaid" and partial["balance"] == 1000
    assert pay(1000.01).status_code == 422
    data = nue.ok(pay(1000))
    assert data["invoices"][0]["paymentStatus"] == "Paid" and data["invoices"][0]["balance"] == 0
    with_apps = nue.ok(nue.client.get(f"/invoices/{target['id']}", params={"includes": "paymentApplications"}))[0]
    assert [a["appliedAmount"] for a in with_apps["paymentApplications"]] == [400, 1000]
    paid = nue.ok(nue.client.get("/invoices", params={"paymentStatus": "Paid", "includes": "paymentApplications"}))
    assert [i["id"] for i in paid] == [target["id"]] and len(paid[0]["paymentApplications"]) == 2


def test_failed_collection_is_transfer_error(billed: tuple[Running, dict[str, Any], list[dict[str, Any]]]) -> None:
    nue, _, invoices = billed
    nue.sim.scenario.fail_collection(invoices[2]["id"])
    failed = nue.ok(nue.client.get("/invoices", params={"paymentStatus": "TransferError"}))
    assert [i["id"] for i in failed] == [invoices[2]["id"]]
    assert failed[0]["status"] == "Active"


def test_draft_pending_activation_active() -> None:
    with running() as nue:
        customer = nue.sim.scenario.create_customer(3)
        nue.sim.scenario.create_and_activate_order(customer["id"], opportunity=3)
        invoice = nue.sim.scenario.post_invoice(customer["id"])
        assert invoice["status"] == "Draft"
        nue.sim.scenario.submit_invoice(invoice["id"])
        assert nue.ok(nue.client.get("/invoices?status=Pending Activation"))[0]["id"] == invoice["id"]
        nue.sim.scenario.activate_invoice(invoice["id"])
        assert nue.ok(nue.client.get(f"/invoices/{invoice['id']}"))[0]["status"] == "Active"
        unpaid = nue.client.post("/billing/invoices:pay", json={"payInvoices": [{
            "invoiceId": invoice["id"], "customerId": "someone-else", "transactionAmount": 1}]})
        assert unpaid.status_code == 422


def test_quotes_keyed_by_opportunity_preview_and_requote() -> None:
    with running() as nue:
        opportunity = nue.sim.seed_data.opportunities[0]
        body = {"opportunityId": opportunity.id, "name": "Acme quote", "subscriptionStartDate": "2025-01-01",
                "subscriptionTerm": 12, "priceBookId": nue.sim.seed_data.pricebook_id, "discount": 10,
                "billingPeriod": "Month", "billingTiming": "In Advance", "currencyIsoCode": "USD",
                "products": [{"productSku": "PLAT-SUB", "uom": "Each", "quantity": 1},
                             {"productSku": "SEAT-VOL", "uom": "User", "quantity": 25}]}
        preview = nue.ok(nue.client.post("/cpq/quotes:preview", json=body))["quote"]
        assert preview["id"] is None and preview["subtotal"] == (500 + 25 * 40) * 12
        assert preview["discountAmount"] == 1800 and preview["totalAmount"] == 16200
        assert nue.client.get(f"/cpq/quotes/{opportunity.id}").status_code == 404  # preview stores nothing

        quote = nue.ok(nue.client.post("/cpq/quotes", json=body))["quote"]
        assert quote["status"] == "Draft" and quote["quoteVersion"] == 1
        assert quote["subscriptionEndDate"] == "2026-01-01"
        by_opp = nue.ok(nue.client.get(f"/cpq/quotes/{opportunity.id}"))["quote"]
        assert by_opp == nue.ok(nue.client.get(f"/cpq/quotes/{quote['id']}"))["quote"]

        body["products"][1]["quantity"] = 60
        requoted = nue.ok(nue.client.post("/cpq/quotes", json=body))["quote"]
        assert requoted["id"] == quote["id"] and requoted["quoteVersion"] == 2
        assert requoted["subtotal"] == (500 + 60 * 32) * 12
        assert nue.client.post("/cpq/quotes", json={**body, "products": [{"productSku": "NOPE"}]}).status_code == 422
        approved = nue.sim.scenario.set_quote_status(opportunity.id, "Approved")
        assert approved["status"] == "Approved"
