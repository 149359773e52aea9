"""Restricted picklists: a value outside the value set is refused the way Salesforce refuses it, and adding the
value (an admin editing the field in Setup, here /__sandbox/schema) lets the same write through."""

from __future__ import annotations

import httpx
from sf_fixtures import Running

EVENT = "Nue_Billing_Event__c"
STATUS = {"object": EVENT, "name": "Status__c", "type": "picklist", "label": "Status", "restricted": True,
          "picklist": ["Posted", "Paid", "Void"]}


def restrict(org: Running, values: list[str]) -> None:
    response = org.http.post("/__sandbox/schema", json={"add": [{**STATUS, "picklist": values}]})
    assert response.status_code == 200, response.text


def test_unrestricted_picklist_accepts_any_value(org: Running, api: httpx.Client) -> None:
    """The seeded field is advisory, like a standard picklist: the API does not enforce its values."""
    created = api.post(f"/sobjects/{EVENT}", json={"Nue_Event_Key__c": "INV-1:Paid", "Status__c": "Overdue-ish"})
    assert created.status_code == 201
    field = {f["name"]: f for f in api.get(f"/sobjects/{EVENT}/describe").json()["fields"]}["Status__c"]
    assert field["restrictedPicklist"] is False


def test_restricted_picklist_refuses_a_value_outside_the_set(org: Running, api: httpx.Client) -> None:
    restrict(org, ["Posted", "Paid", "Void"])
    field = {f["name"]: f for f in api.get(f"/sobjects/{EVENT}/describe").json()["fields"]}["Status__c"]
    assert field["restrictedPicklist"] is True
    assert [v["value"] for v in field["picklistValues"]] == ["Posted", "Paid", "Void"]

    refused = api.post(f"/sobjects/{EVENT}", json={"Nue_Event_Key__c": "INV-1:TransferError",
                                                    "Status__c": "Overdue"})
    assert refused.status_code == 400
    assert refused.json() == [{"message": "Status: bad value for restricted picklist field: Overdue",
                               "errorCode": "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST", "fields": ["Status__c"]}]
    assert org.sim.records(EVENT) == []
    assert api.post(f"/sobjects/{EVENT}", json={"Nue_Event_Key__c": "INV-2:Paid", "Status__c": "overdue "}
                    ).status_code == 400  # the value set is matched exactly
    cleared = api.post(f"/sobjects/{EVENT}", json={"Nue_Event_Key__c": "INV-3:Paid", "Status__c": None})
    assert cleared.status_code == 201  # null is not a value of the set, and is allowed


def test_collections_report_it_per_record_and_adding_the_value_fixes_it(org: Running, api: httpx.Client) -> None:
    restrict(org, ["Posted", "Paid", "Void"])
    records = [{"attributes": {"type": EVENT}, "Nue_Event_Key__c": "INV-9:TransferError", "Status__c": "Overdue"},
               {"attributes": {"type": EVENT}, "Nue_Event_Key__c": "INV-9:Paid", "Status__c": "Paid"}]
    path = f"/composite/sobjects/{EVENT}/Nue_Event_Key__c"
    first = api.patch(path, json={"allOrNone": False, "records": records}).json()
    assert first[0] == {"success": False, "errors": [{
        "statusCode": "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
        "message": "Status: bad value for restricted picklist field: Overdue", "fields": ["Status__c"]}]}
    assert first[1]["success"] is True
    restrict(org, ["Posted", "Paid", "Overdue", "Void"])  # the admin adds the missing value
    again = api.patch(path, json={"allOrNone": False, "records": records[:1]}).json()
    assert again[0]["success"] is True and again[0]["created"] is True
    assert {r["Nue_Event_Key__c"]: r["Status__c"] for r in org.sim.records(EVENT)} == {
        "INV-9:TransferError": "Overdue", "INV-9:Paid": "Paid"}
