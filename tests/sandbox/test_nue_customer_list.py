"""GET /customers [doc: "Fetching Customers"]: by ids (Nue or Salesforce), filtered, paged, with contacts when asked,
through real HTTP."""

from __future__ import annotations

import json

from nue_fixtures import running

from revdaemon.sandbox.nue import customers


def test_customers_by_ids_with_their_contacts_filters_and_pages() -> None:
    with running() as nue:
        linked = nue.sim.scenario.create_customer(0)  # from a Salesforce account: has its externalId
        made, _ = customers.create_customers(nue.sim.store, [{"name": "Zephyr", "recordType": "Consumer"}])
        customers.create_contacts(nue.sim.store, made[0]["id"], [
            {"firstName": "Ada", "lastName": "Byron", "email": "ada@zephyr.io"}])
        ids = json.dumps([made[0]["id"], linked["externalId"], "no-such-id"])
        both = nue.client.get("/customers", params={"customerIds": ids, "includes": "contacts"})
        body = both.json()
        assert both.status_code == 200 and body["status"] == "success" and body["pagination"]["total"] == 2
        by_name = {c["name"]: c for c in body["data"]}
        assert [c["email"] for c in by_name["Zephyr"]["contacts"]] == ["ada@zephyr.io"]
        assert by_name[linked["name"]]["contacts"] == [] and by_name[linked["name"]]["id"] == linked["id"]
        plain = nue.ok(nue.client.get("/customers", params={"customerIds": ids}))
        assert all("contacts" not in c for c in plain)  # only when included

        consumers = nue.ok(nue.client.get("/customers?recordType=Consumer"))
        assert [c["name"] for c in consumers] == ["Zephyr"]
        # A name the invoice lists reserve (status) is a field filter here, never silently dropped.
        assert nue.client.get("/customers", params={"status": "Active"}).status_code == 400
        either = nue.ok(nue.client.get("/customers?recordType=Consumer&name=" + linked["name"].replace(" ", "%20")
                                       + "&predicate=or"))
        assert {c["name"] for c in either} == {"Zephyr", linked["name"]}
        first = nue.client.get("/customers", params={"page": 1, "limit": 1}).json()
        assert len(first["data"]) == 1 and first["pagination"]["total"] == 2


def test_bad_lists_are_refused_with_400() -> None:
    with running() as nue:
        for params in ({"customerIds": "not json"}, {"customerIds": json.dumps([1, 2])}, {"includes": "orders"},
                       {"nosuchfield": "x"}, {"limit": "0"}, {"predicate": "xor"}):
            assert nue.client.get("/customers", params=params).status_code == 400, params
