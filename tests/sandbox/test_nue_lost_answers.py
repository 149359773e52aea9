"""Faults after the request is applied: the customer or order is created, but the answer is lost, a 5xx or
late [assumed for Nue]. Reads go through the API (GraphQL, GET /orders), which these faults never hit."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import pytest
from nue_fixtures import API_KEY, Running, running

NONE_FIRED = {"applied_drop": 0, "applied_503": 0, "applied_504": 0, "applied_slow": 0}


def customers_named(nue: Running, name: str) -> list[dict[str, Any]]:
    response = nue.client.post("/async/graphql", json={
        "query": "query($name: String!) { Customer(where: {name: {_eq: $name}}) { id name } }",
        "variables": {"name": name}})
    assert response.status_code == 200, response.text
    return list(response.json()["data"]["Customer"])


def orders_of(nue: Running, customer_id: str) -> list[dict[str, Any]]:
    return list(nue.ok(nue.client.get("/orders", params={"customerIds": json.dumps([customer_id])})))


def new_order(nue: Running, customer_id: str) -> dict[str, Any]:
    entry = nue.sim.store.catalog.by_sku["ONB-SVC"].id
    return {"customer": {"id": customer_id}, "name": "lost answer", "orderProducts": [
        {"priceBookEntryId": entry, "quantity": 1}]}


def faults(nue: Running, **changes: Any) -> dict[str, Any]:
    response = httpx.post(nue.url + "/__sandbox/faults", json=changes)
    assert response.status_code == 200, response.text
    return dict(response.json())


def fired(nue: Running) -> dict[str, int]:
    return dict(httpx.get(nue.url + "/__sandbox/faults/fired").json())


def logged_faults(nue: Running) -> list[str | None]:
    return [entry["fault"] for entry in httpx.get(nue.url + "/__sandbox/requests").json()["requests"]]


def test_customer_create_applied_then_dropped() -> None:
    """The customer exists although the client saw the connection close; the count and the log say so."""
    with running() as nue:
        faults(nue, applied_next=["drop"])
        with pytest.raises(httpx.TransportError):
            nue.client.post("/customers", json=[{"name": "Dropped Answer Co", "recordType": "Business"}])
        assert len(customers_named(nue, "Dropped Answer Co")) == 1
        assert fired(nue) == {**NONE_FIRED, "applied_drop": 1}
        assert logged_faults(nue) == ["applied_drop", None]


@pytest.mark.parametrize("status", [503, 504])
def test_order_create_applied_then_5xx(status: int) -> None:
    """The order exists although the client got a 5xx instead of its answer."""
    with running() as nue:
        customer = nue.ok(nue.client.post("/customers", json=[{"name": "Order Co", "recordType": "Business"}]))[0]
        faults(nue, applied_next=[status])
        response = nue.client.post("/orders", json=new_order(nue, customer["id"]))
        assert response.status_code == status
        if status == 503:
            assert response.json()["errorCode"] == "SERVICE_UNAVAILABLE"
        else:
            assert response.headers["content-type"].startswith("text/html")
        assert [o["name"] for o in orders_of(nue, customer["id"])] == ["lost answer"]
        assert fired(nue)[f"applied_{status}"] == 1
        assert nue.sim.log.count(fault=f"applied_{status}", status=status) == 1
        nue.ok(nue.client.post("/orders", json=new_order(nue, customer["id"])))  # the script is spent


def test_order_create_applied_slowly() -> None:
    """The order is readable at once while the answer waits; a client with a shorter timeout gives up."""
    with running(applied_slow_seconds=1.0) as nue:
        customer = nue.ok(nue.client.post("/customers", json=[{"name": "Slow Co", "recordType": "Business"}]))[0]
        faults(nue, applied_next=["slow"])
        started = time.monotonic()
        with httpx.Client(base_url=nue.url, headers={"nue-api-key": API_KEY}, timeout=0.3) as hasty, \
                pytest.raises(httpx.ReadTimeout):
            hasty.post("/orders", json=new_order(nue, customer["id"]))
        assert len(orders_of(nue, customer["id"])) == 1
        assert time.monotonic() - started < 1.0  # read while the answer was still held
        assert fired(nue)["applied_slow"] == 1
        faults(nue, applied_slow_seconds=0.3, applied_next=["slow"])
        late = nue.client.post("/orders", json=new_order(nue, customer["id"]))
        assert late.status_code == 200 and late.json()["data"]["order"]["status"] == "Draft"
        deadline = time.monotonic() + 5
        while logged_faults(nue).count("applied_slow") < 2 and time.monotonic() < deadline:
            time.sleep(0.05)  # the abandoned answer is logged when it leaves
        assert logged_faults(nue).count("applied_slow") == 2 and fired(nue)["applied_slow"] == 2


def test_only_applied_targeted_writes_are_hit() -> None:
    """Reads, read-only POSTs, refused writes and writes outside applied_paths pass; targeted creates fail."""
    with running() as nue:
        settings = faults(nue, applied_503_rate=1.0, applied_paths=["POST /orders", "POST /customers"])
        assert settings["applied_paths"] == ["POST /orders", "POST /customers"]
        assert nue.client.get("/catalog/products").status_code == 200
        assert customers_named(nue, "nobody") == []  # POST /async/graphql only reads
        assert nue.client.post("/customers", json={"name": "x"}).status_code == 400  # refused: not applied
        assert fired(nue)["applied_503"] == 0
        assert nue.client.post("/customers", json=[{"name": "Hit Co", "recordType": "Business"}]).status_code == 503
        customer = customers_named(nue, "Hit Co")[0]
        assert nue.client.patch(f"/customers/{customer['id']}", json={"name": "Hit Co"}).status_code == 200
        assert fired(nue)["applied_503"] == 1
        faults(nue, applied_503_rate=0.0, applied_paths=[], applied_writes_only=False, applied_next=[504])
        assert nue.client.get("/catalog/products").status_code == 504  # writes_only off: reads too
        assert httpx.get(nue.url + "/__sandbox/faults").json()["applied_writes_only"] is False


def test_rates_are_deterministic_for_the_seed_and_reset_clears_counts() -> None:
    def statuses(seed: int) -> list[int]:
        with running(seed=seed, applied_503_rate=0.3, applied_504_rate=0.2) as nue:
            answers = [nue.client.post("/customers", json=[{"name": f"Lost {i}", "recordType": "Business"}])
                       for i in range(24)]
            codes = [a.status_code for a in answers]
            assert all(len(customers_named(nue, f"Lost {i}")) == 1 for i in range(24))  # all applied
            counts = fired(nue)
            assert (counts["applied_503"], counts["applied_504"]) == (codes.count(503), codes.count(504))
            httpx.post(nue.url + "/__sandbox/reset")
            assert fired(nue) == NONE_FIRED
            return codes

    first = statuses(3)
    assert first == statuses(3)
    assert {200, 503, 504} == set(first)


def test_settings_are_validated() -> None:
    with running() as nue:
        admin = nue.url + "/__sandbox/faults"
        assert httpx.post(admin, json={"applied_next": ["later"]}).status_code == 400
        assert httpx.post(admin, json={"applied_paths": "POST /orders"}).status_code == 400
        too_much = httpx.post(admin, json={"applied_drop_rate": 0.6, "applied_slow_rate": 0.6})
        assert too_much.status_code == 400 and "sum to at most 1" in too_much.text
        no_slash = httpx.post(admin, json={"applied_paths": ["orders"]})
        assert no_slash.status_code == 400 and "starts with '/'" in no_slash.text
        assert httpx.get(admin).json()["applied_drop_rate"] == 0.0
        assert httpx.get(admin).json()["applied_paths"] == []
