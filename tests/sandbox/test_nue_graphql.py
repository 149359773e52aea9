"""The polling subset of GraphQL at POST /async/graphql [assumed, Hasura-style]."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from nue_fixtures import Running, running


@pytest.fixture(scope="module")
def nue() -> Iterator[Running]:
    with running() as r:
        scenario = r.sim.scenario
        for index in range(4):
            customer = scenario.create_customer(index)
            scenario.create_and_activate_order(customer["id"], opportunity=index)
        yield r


def query(nue: Running, text: str, variables: dict[str, Any] | None = None) -> Any:
    response = nue.client.post("/async/graphql", json={"query": text, "variables": variables})
    assert response.status_code == 200, response.text
    body = response.json()
    assert "errors" not in body, body
    return body["data"]


def test_where_gte_with_keyset_order_limit_offset(nue: Running) -> None:
    subs = sorted(nue.sim.store.subscriptions.values(), key=lambda s: (s["lastModifiedDate"], s["id"]))
    since = subs[2]["lastModifiedDate"]
    text = """query Poll($since: String!, $limit: Int, $offset: Int) {
      Subscription(where: {lastModifiedDate: {_gte: $since}}, order_by: {lastModifiedDate: asc, id: asc},
                   limit: $limit, offset: $offset) { id name quantity lastModifiedDate subscriptionVersion }
    }"""
    page1 = query(nue, text, {"since": since, "limit": 2, "offset": 0})["Subscription"]
    page2 = query(nue, text, {"since": since, "limit": 2, "offset": 2})["Subscription"]
    assert [s["id"] for s in page1 + page2] == [s["id"] for s in subs[2:6]]
    assert page1[0]["quantity"] == float(subs[2]["quantity"])


def test_in_neq_and_multi_field_order_by_desc(nue: Running) -> None:
    skus = nue.sim.store.catalog.by_sku
    wanted = [skus["SEAT-VOL"].id, skus["PLAT-SUB"].id]
    data = query(nue, """query($ids: [String!]) {
      Subscription(where: {priceBookEntryId: {_in: $ids}, quantity: {_neq: 1}},
                   order_by: [{priceBookEntryId: asc}, {quantity: desc}]) { priceBookEntryId quantity }
    }""", {"ids": wanted})["Subscription"]
    expected = sorted(
        ((s["priceBookEntryId"], float(s["quantity"])) for s in nue.sim.store.subscriptions.values()
         if s["priceBookEntryId"] in wanted and s["quantity"] != 1),
        key=lambda pair: (pair[0], -pair[1]))
    assert [(s["priceBookEntryId"], s["quantity"]) for s in data] == expected
    assert len(data) >= 3


def test_order_by_follows_the_written_field_order(nue: Running) -> None:
    # One object with two fields: the written order (quantity first) decides, not the schema's order.
    data = query(nue, """{ Subscription(order_by: {quantity: desc, lastModifiedDate: asc}, limit: 3)
                          { quantity lastModifiedDate } }""")["Subscription"]
    quantities = [s["quantity"] for s in data]
    assert quantities == sorted(quantities, reverse=True) and quantities[0] == 1500


def test_every_polled_type_answers(nue: Running) -> None:
    data = query(nue, """{
      Customer(where: {todayCMRR: {_gt: 0}}, order_by: {name: asc}) { id name externalId todayCMRR }
      Order(where: {status: {_eq: "Activated"}}) { id orderNumber totalAmount }
      Invoice { id } Quote { id }
    }""")
    assert [c["name"] for c in data["Customer"]] == ["Acme Corp", "Globex", "Initech", "Umbrella Health"]
    assert len(data["Order"]) == 4 and data["Invoice"] == [] and data["Quote"] == []
    acme = data["Customer"][0]
    assert acme["todayCMRR"] == 1400 and acme["externalId"] == nue.sim.seed_data.accounts[0].id


def test_invalid_queries_return_errors(nue: Running) -> None:
    for text in ("{ Subscription { nope } }", "{ Subscription(", "{ Payment { id } }",
                 "{ Subscription(where: {quantity: {_like: 1}}) { id } }"):
        response = nue.client.post("/async/graphql", json={"query": text})
        assert response.status_code == 200
        body = response.json()
        assert body["errors"] and body["errors"][0]["message"]
    negative = nue.client.post("/async/graphql", json={"query": "{ Order(limit: -1) { id } }"}).json()
    assert negative["errors"][0]["message"] == "limit and offset must not be negative"
    assert nue.client.post("/async/graphql", json={"variables": {}}).status_code == 400


def test_graphql_needs_the_key_and_can_be_switched_off(nue: Running) -> None:
    assert nue.client.post("/async/graphql", json={"query": "{ Order { id } }"},
                           headers={"nue-api-key": "bad"}).status_code == 401
    with running(graphql_enabled=False) as off:
        assert off.client.post("/async/graphql", json={"query": "{ Order { id } }"}).status_code == 404


def test_every_documented_field_is_served(nue: Running) -> None:
    """A query naming the documented fields outside nue-api.md's lists (Customer.parentCustomerId from Nue's own
    example, the key customer fields, the subscription and invoice references) validates; what the simulator
    does not keep is null, the derived ones carry values, and a list field is selectable."""
    from revdaemon.sandbox.nue.graphql_fields import FIELDS

    for type_name, fields in FIELDS.items():
        rows = query(nue, f"{{ {type_name}(limit: 1) {{ {' '.join(fields)} }} }}")[type_name]
        assert set(rows[0]) == set(fields) if rows else True, type_name
    customer = query(nue, """{ Customer(order_by: {id: asc}, limit: 1) {
        id parentCustomerId orderPrimaryContactId numberOfEmployees billingProrationEnabled paymentMethods
        modifiedDate lastModifiedDate } }""")["Customer"][0]
    assert customer["parentCustomerId"] is None and customer["paymentMethods"] is None
    assert customer["modifiedDate"] == customer["lastModifiedDate"]
    with running() as own:  # an invoice, without touching the module's shared tenant
        customer = own.sim.scenario.create_customer(0)
        own.sim.scenario.create_and_activate_order(customer["id"], opportunity=0)
        own.sim.scenario.post_invoice(customer["id"], activate=True)
        invoices = query(own, "{ Invoice { amount taxAmount amountWithoutTax invoicePdf } }")["Invoice"]
    assert invoices and all(i["amountWithoutTax"] == i["amount"] - i["taxAmount"] for i in invoices)
    assert invoices[0]["amount"] > 0 and invoices[0]["invoicePdf"] is None
    filtered = query(nue, '{ Customer(where: {parentCustomerId: {_eq: "nobody"}}) { id } }')["Customer"]
    assert filtered == []
    unknown = nue.client.post("/async/graphql", json={"query": "{ Customer { id notAField } }"}).json()
    assert "errors" in unknown  # still a schema: undocumented names are refused
