"""Faults (429 with Retry-After, 5xx), the error body variants, and the /__sandbox admin endpoints."""

from __future__ import annotations

import httpx
from nue_fixtures import receiver, running


def test_429_with_retry_after_at_a_configured_rate() -> None:
    with running(rate_429=1.0, retry_after_seconds=3) as nue:
        response = nue.client.get("/catalog/products")
        assert response.status_code == 429
        assert response.headers["Retry-After"] == "3"
        body = response.json()
        assert body["status"] == "failure" and body["errorCode"] == "TOO_MANY_REQUESTS" and body["errorId"]


def test_fault_rates_are_deterministic_for_the_seed() -> None:
    def statuses(seed: int) -> list[int]:
        with running(seed=seed, rate_429=0.3, error_rate=0.2) as nue:
            return [nue.client.get("/catalog/products").status_code for _ in range(30)]

    first = statuses(3)
    assert first == statuses(3)
    assert {429, 200} <= set(first) and set(first) <= {200, 429, 500, 502, 503}


def test_scripted_faults_and_the_502_html_page() -> None:
    with running() as nue:
        admin = httpx.post(nue.url + "/__sandbox/faults", json={"next": [502, 503, 429]})
        assert admin.status_code == 200
        bad_gateway = nue.client.get("/catalog/products")
        assert bad_gateway.status_code == 502 and bad_gateway.headers["content-type"].startswith("text/html")
        assert nue.client.get("/catalog/products").json()["errorCode"] == "SERVICE_UNAVAILABLE"
        assert nue.client.get("/catalog/products").status_code == 429
        assert nue.client.get("/catalog/products").status_code == 200
        httpx.post(nue.url + "/__sandbox/faults", json={"rate_429": 1.0})
        assert nue.client.get("/catalog/products").status_code == 429
        httpx.post(nue.url + "/__sandbox/faults", json={"rate_429": 0})
        assert nue.client.get("/catalog/products").status_code == 200
        refused = httpx.post(nue.url + "/__sandbox/faults", json={"rate_429": 2})
        assert refused.status_code == 400 and "rate_429" in refused.text


def test_error_body_variants_for_tolerant_clients() -> None:
    with running(error_body="message_only") as nue:
        assert set(nue.client.get("/invoices/x").json()) == {"message"}
    with running(error_body="error_only") as nue:
        assert set(nue.client.get("/invoices/x").json()) == {"error"}


def test_single_record_shape_setting() -> None:
    with running(single_record_shape="object") as nue:
        customer = nue.sim.scenario.create_customer(0)
        data = nue.ok(nue.client.get(f"/customers/{customer['id']}"))
        assert data["id"] == customer["id"]


def test_request_log_scenarios_targets_webhook_log_and_reset() -> None:
    with receiver() as (target, url), running() as nue:
        admin = nue.url + "/__sandbox"
        assert httpx.post(f"{admin}/webhook-targets", json={"targets": [url]}).status_code == 200
        account = nue.sim.seed_data.accounts[0]
        created = httpx.post(f"{admin}/scenario/create-customer", json={"account": account.id}).json()["result"]
        assert created["externalId"] == account.id
        order = httpx.post(f"{admin}/scenario/create-and-activate-order",
                           json={"customer": created["id"], "opportunity": 0, "generate_invoice": True,
                                 "activate_invoice": True}).json()["result"]
        sub = order["subscriptions"][0]["name"]
        changed = httpx.post(f"{admin}/scenario/change", json={"asset_number": sub, "change_type": "UpdateQuantity",
                                                                "quantity": 2}).json()["result"]
        assert changed["subscriptions"][0]["subscriptionVersion"] == 2
        invoice = order["invoices"][0]["id"]
        failed = httpx.post(f"{admin}/scenario/fail-collection", json={"invoice_id": invoice}).json()["result"]
        assert failed["paymentStatus"] == "TransferError"
        assert httpx.post(f"{admin}/scenario/nope", json={}).status_code == 404
        assert httpx.post(f"{admin}/scenario/change", json={"bogus": 1}).status_code == 400

        nue.client.get("/catalog/products")
        nue.client.get("/customers/" + created["id"], headers={"nue-api-key": "no"})
        log = httpx.get(f"{admin}/requests").json()["requests"]
        assert [(e["method"], e["path"], e["status"]) for e in log] == [
            ("GET", "/catalog/products", 200), ("GET", f"/customers/{created['id']}", 401)]

        assert httpx.post(f"{admin}/webhooks/flush").json() == {"idle": True}
        hooks = httpx.get(f"{admin}/webhooks").json()
        assert hooks["targets"] == [url]
        assert [d["type"] for d in hooks["deliveries"]][:3] == ["customer.created", "order.created",
                                                                 "order.activated"]
        assert all(d["ok"] for d in hooks["deliveries"])
        assert len(target.events()) == len(hooks["deliveries"])

        assert httpx.post(f"{admin}/reset").status_code == 200
        assert httpx.get(f"{admin}/requests").json()["requests"] == []
        assert httpx.get(f"{admin}/webhooks").json()["deliveries"] == []
        assert nue.client.get(f"/customers/{created['id']}").status_code == 404
        again = nue.sim.scenario.create_customer(0)
        assert again["id"] == created["id"]  # same seed, same ids after a reset
