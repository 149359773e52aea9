"""Raw HTTP against the simulator: exact error shapes, collections, composite, describe, limits, faults."""

from __future__ import annotations

import time
from typing import Any

import httpx
import jwt
import pytest
from sf_fixtures import FakeClock, Running, keypair, running

from revdaemon.sandbox.salesforce import CustomField, FaultSettings, SalesforceSimSettings

JWT_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"


def assertion(**overrides: Any) -> str:
    claims: dict[str, Any] = {"iss": "sandbox-consumer-key", "sub": "integration@revdaemon.sandbox",
                              "aud": "https://login.salesforce.com", "exp": str(int(time.time()) + 180)}
    claims.update(overrides)
    return jwt.encode(claims, keypair()[0], algorithm="RS256")


# ---- OAuth --------------------------------------------------------------------------------------------

def test_jwt_token_body_has_the_documented_fields(org: Running) -> None:
    response = org.http.post("/services/oauth2/token", data={"grant_type": JWT_GRANT, "assertion": assertion()})
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"access_token", "signature", "scope", "instance_url", "id", "token_type", "issued_at"}
    assert body["instance_url"] == org.url and body["token_type"] == "Bearer"
    assert len(body["issued_at"]) == 13 and "expires_in" not in body and "refresh_token" not in body
    users = org.sim.seed_data.users
    assert body["id"] == f"https://login.salesforce.com/id/{org.sim.seed_data.organization_id}/{users[0].id}"
    numeric_exp = assertion(exp=int(time.time()) + 60, aud="https://test.salesforce.com")
    assert org.http.post("/services/oauth2/token",
                         data={"grant_type": JWT_GRANT, "assertion": numeric_exp}).status_code == 200


@pytest.mark.parametrize(("token", "error"), [
    (lambda: assertion(aud="https://evil.example.com"), ("invalid_grant", "audience is invalid")),
    (lambda: assertion(exp=int(time.time()) - 3600), ("invalid_grant", "expired authorization code")),
    (lambda: assertion(sub="ava.seller@revdaemon.sandbox"), ("invalid_grant", "user hasn't approved this consumer")),
    (lambda: assertion(iss="someone-else"), ("invalid_client_id", "client identifier invalid")),
    (lambda: assertion()[:-6] + "AAAAAA", ("invalid_grant", "invalid assertion")),
])
def test_jwt_failures_are_invalid_grant_shaped(org: Running, token: Any, error: tuple[str, str]) -> None:
    response = org.http.post("/services/oauth2/token", data={"grant_type": JWT_GRANT, "assertion": token()})
    assert response.status_code == 400
    assert response.json() == {"error": error[0], "error_description": error[1]}
    assert response.headers["content-type"] == "application/json;charset=UTF-8"


def test_client_credentials_variants(org: Running) -> None:
    good = {"grant_type": "client_credentials", "client_id": "sandbox-consumer-key",
            "client_secret": "sandbox-consumer-secret"}
    assert org.http.post("/services/oauth2/token", data=good).status_code == 200
    wrong = org.http.post("/services/oauth2/token", data={**good, "client_secret": "nope"})
    assert (wrong.status_code, wrong.json()["error"]) == (400, "invalid_client")
    missing = org.http.post("/services/oauth2/token", data={"client_id": "x"})
    assert missing.json() == {"error": "invalid_request", "error_description": "grant type is missing"}
    org.sim.settings.client_credentials_enabled = False
    disabled = org.http.post("/services/oauth2/token", data=good)
    assert disabled.json() == {"error": "invalid_grant", "error_description": "no client credentials user enabled"}


def test_refresh_token_grant(org: Running) -> None:
    refresh = org.http.post("/__sandbox/refresh-token").json()["refresh_token"]
    ok = org.http.post("/services/oauth2/token", data={"grant_type": "refresh_token", "refresh_token": refresh,
                                                       "client_id": "sandbox-consumer-key"})
    assert ok.status_code == 200 and "refresh_token" not in ok.json()
    with org.api(ok.json()["access_token"]) as api:
        assert api.get("/limits").status_code == 200
    bad = org.http.post("/services/oauth2/token", data={"grant_type": "refresh_token", "refresh_token": "zzz",
                                                        "client_id": "sandbox-consumer-key"})
    assert bad.json() == {"error": "invalid_grant", "error_description": "expired access/refresh token"}


def test_invalid_session_bodies_are_lists(org: Running) -> None:
    assert org.http.get("/services/data/v59.0/limits").json() == [
        {"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}]
    token = org.token()
    headers = {"Authorization": f"Bearer {token}"}
    assert org.http.get("/services/data/v59.0/limits", headers=headers).status_code == 200
    assert org.http.post("/__sandbox/expire-sessions").status_code == 200
    expired = org.http.get("/services/data/v59.0/limits", headers=headers)
    assert expired.status_code == 401 and expired.json()[0]["errorCode"] == "INVALID_SESSION_ID"
    bad_header = org.http.get("/services/data/v59.0/limits", headers={"Authorization": "Basic abc"})
    assert bad_header.json() == [{"message": "INVALID_HEADER_TYPE", "errorCode": "INVALID_AUTH_HEADER"}]


def test_token_lifetime_expires_sessions() -> None:
    clock = FakeClock()
    with running(SalesforceSimSettings(token_lifetime_seconds=60, clock=clock)) as org, org.api() as api:
        assert api.get("/limits").status_code == 200
        clock.now += 61
        assert api.get("/limits").status_code == 401


# ---- query --------------------------------------------------------------------------------------------

def test_malformed_query_messages(api: httpx.Client) -> None:
    response = api.get("/query", params={"q": "SELECT Id FORM Account"})
    assert response.status_code == 400
    assert response.json() == [{"message": "\nSELECT Id FORM Account\n          ^\nERROR at Row:1:Column:11\n"
                                           "unexpected token: 'FORM'", "errorCode": "MALFORMED_QUERY"}]
    empty = api.get("/query/", params={"q": ""})
    assert empty.json() == [{"message": "A query string has to be specified", "errorCode": "MALFORMED_QUERY"}]
    mixed = api.get("/query", params={"q": "SELECT Id FROM Account WHERE Name = 'a' AND Name = 'b' OR Name = 'c'"})
    assert mixed.json()[0]["errorCode"] == "MALFORMED_QUERY" and "unexpected token: 'OR'" in mixed.json()[0]["message"]


def test_invalid_field_and_type_messages(api: httpx.Client) -> None:
    response = api.get("/query", params={"q": "SELECT Id, Foo__c FROM Opportunity"})
    assert response.status_code == 400
    [error] = response.json()
    assert error["errorCode"] == "INVALID_FIELD"
    assert error["message"].startswith("\nSELECT Id, Foo__c FROM Opportunity\n           ^\nERROR at Row:1:Column:12\n")
    assert error["message"].endswith("No such column 'Foo__c' on entity 'Opportunity'. If you are attempting to "
                                     "use a custom field, be sure to append the '__c' after the custom field name. "
                                     "Please reference your WSDL or the describe call for the appropriate names.")
    unknown = api.get("/query", params={"q": "select id from accountx"}).json()[0]
    assert unknown["errorCode"] == "INVALID_TYPE" and "sObject type 'accountx' is not supported." in unknown["message"]
    quoted = api.get("/query", params={"q": "SELECT Id FROM Opportunity WHERE CloseDate > '2024-01-01'"}).json()[0]
    assert quoted["errorCode"] == "INVALID_FIELD"
    assert quoted["message"].endswith("value of filter criterion for field 'CloseDate' must be of type date and "
                                      "should not be enclosed in quotes")


def test_a_call_past_the_documented_uri_and_header_length_is_refused(api: httpx.Client) -> None:
    """§2.1: URI and headers together at most 16,384 bytes; 414 when the URI alone passes it, else 431."""
    ids = ", ".join(f"'001{n:012d}AAA'" for n in range(700))
    too_long = api.get("/query", params={"q": f"SELECT Id FROM Account WHERE Id IN ({ids})"})
    assert too_long.status_code == 414 and too_long.json()[0]["errorCode"] == "URI_TOO_LONG"
    fits = ", ".join(f"'001{n:012d}AAA'" for n in range(400))
    assert api.get("/query", params={"q": f"SELECT Id FROM Account WHERE Id IN ({fits})"}).status_code == 200
    headers = api.get("/query", params={"q": f"SELECT Id FROM Account WHERE Id IN ({fits})"},
                      headers={"X-Padding": "x" * 6_000})
    assert headers.status_code == 431 and headers.json()[0]["errorCode"] == "REQUEST_HEADER_FIELDS_TOO_LARGE"


def test_query_shape_parents_and_filters(org: Running, api: httpx.Client) -> None:
    soql = ("SELECT Id, Name, Amount, Account.Name, Owner.Email FROM Opportunity "
            "WHERE (StageName IN ('Closed Won', 'Prospecting') OR Amount > 100000) AND NOT Name LIKE '%pilot%' "
            "AND CloseDate >= 2020-01-01 AND SystemModstamp >= 2020-01-01T00:00:00+00:00 "
            "ORDER BY Amount DESC NULLS LAST, Name LIMIT 5")
    response = api.get("/query/", params={"q": soql})
    assert response.status_code == 200
    body = response.json()
    assert body["done"] is True and body["totalSize"] == 2
    names = [r["Name"] for r in body["records"]]
    assert names == ["Umbrella Health - Platform and Support", "Initech - Seats"]
    first = body["records"][0]
    url = f"/services/data/v59.0/sobjects/Opportunity/{first['Id']}"
    assert first["attributes"] == {"type": "Opportunity", "url": url}
    assert first["Account"]["Name"] == "Umbrella Health" and first["Account"]["attributes"]["type"] == "Account"
    assert first["Owner"]["Email"] == "ava.seller@revdaemon.sandbox"
    assert first["Amount"] == 5380.0  # 2 x 500 + 300 + 120 x 40 less 15 %
    assert response.headers["sforce-limit-info"] == f"api-usage={org.sim.api_usage}/15000"
    count = api.get("/query", params={"q": "SELECT COUNT() FROM Opportunity WHERE IsWon = true"}).json()
    assert count == {"totalSize": 1, "done": True, "records": []}


def test_query_all_includes_deleted_and_batch_size_is_clamped(org: Running, api: httpx.Client) -> None:
    opp = org.sim.seed_data.opportunities[4].id
    assert api.delete(f"/sobjects/Opportunity/{opp}").status_code == 204
    q = {"q": f"SELECT Id, IsDeleted FROM Opportunity WHERE Id = '{opp[:15]}'"}
    assert api.get("/query", params=q).json()["totalSize"] == 0
    assert api.get("/queryAll", params=q).json()["records"][0]["IsDeleted"] is True
    for i in range(250):
        org.sim.create("Task", {"Subject": f"t{i}"})
    page = api.get("/query", params={"q": "SELECT Id FROM Task"}, headers={"Sforce-Query-Options": "batchSize=5"})
    assert len(page.json()["records"]) == 200  # minimum batch is 200 (§2.1)
    rest = httpx.get(org.url + page.json()["nextRecordsUrl"], headers=api.headers)
    assert rest.json()["done"] is True and len(rest.json()["records"]) == 50
    gone = httpx.get(org.url + page.json()["nextRecordsUrl"], headers=api.headers)
    assert gone.json()[0]["errorCode"] == "INVALID_QUERY_LOCATOR"


# ---- sObject CRUD -------------------------------------------------------------------------------------

def test_crud_error_shapes(org: Running, api: httpx.Client) -> None:
    missing = api.post("/sobjects/Opportunity/", json={"Name": "x"})
    assert missing.status_code == 400
    assert missing.json() == [{"message": "Required fields are missing: [StageName, CloseDate]",
                               "errorCode": "REQUIRED_FIELD_MISSING", "fields": ["StageName", "CloseDate"]}]
    unknown = api.post("/sobjects/Account", json={"Name": "x", "Bogus__c": 1})
    assert unknown.json() == [{"message": "No such column 'Bogus__c' on sobject of type Account",
                               "errorCode": "INVALID_FIELD", "fields": []}]
    read_only = api.patch(f"/sobjects/Opportunity/{org.sim.seed_data.opportunities[0].id}", json={"IsWon": True})
    assert read_only.json()[0]["errorCode"] == "INVALID_FIELD_FOR_INSERT_UPDATE"
    assert read_only.json()[0]["fields"] == ["IsWon"]
    not_found = api.get("/sobjects/Account/001000000000000AAA")
    assert (not_found.status_code, not_found.json()) == (404, [
        {"message": "The requested resource does not exist", "errorCode": "NOT_FOUND"}])
    wrong_prefix = api.get(f"/sobjects/Account/{org.sim.seed_data.contacts[0].id}")
    assert (wrong_prefix.status_code, wrong_prefix.json()[0]["errorCode"]) == (400, "MALFORMED_ID")
    assert api.get("/sobjects/Account/not-an-id").status_code == 404
    bad_ref = api.post("/sobjects/Contact", json={"LastName": "x", "AccountId": "garbage"})
    assert bad_ref.json()[0]["errorCode"] == "MALFORMED_ID"


def test_duplicate_external_id_and_upsert_statuses(org: Running, api: httpx.Client) -> None:
    first = api.post("/sobjects/Account", json={"Name": "A", "Nue_Customer_Id__c": "C-1"})
    assert first.status_code == 201 and first.json() == {"id": first.json()["id"], "success": True, "errors": []}
    dup = api.post("/sobjects/Account", json={"Name": "B", "Nue_Customer_Id__c": "c-1"})
    assert dup.json() == [{"message": "duplicate value found: Nue_Customer_Id__c duplicates value on record with "
                                      f"id: {first.json()['id'][:15]}", "errorCode": "DUPLICATE_VALUE", "fields": []}]
    created = api.patch("/sobjects/Nue_Billing_Event__c/Nue_Event_Key__c/inv-1%2F1", json={"Amount__c": 10})
    assert created.status_code == 201 and created.json()["created"] is True
    updated = api.patch("/sobjects/Nue_Billing_Event__c/Nue_Event_Key__c/inv-1%2F1", json={"Amount__c": 12})
    assert updated.status_code == 200 and updated.json() == {"id": created.json()["id"], "success": True,
                                                             "errors": [], "created": False}
    assert org.sim.record("Nue_Billing_Event__c", created.json()["id"])["Nue_Event_Key__c"] == "inv-1/1"
    old_api = httpx.patch(f"{org.url}/services/data/v45.0/sobjects/Nue_Billing_Event__c/Nue_Event_Key__c/inv-1%2F1",
                          json={"Amount__c": 13}, headers=api.headers)
    assert old_api.status_code == 204 and old_api.content == b""
    unknown = api.patch("/sobjects/Account/Nope__c/1", json={"Name": "x"})
    assert unknown.status_code == 404 and unknown.json()[0]["errorCode"] == "NOT_FOUND"


def test_line_items_price_and_roll_up(org: Running, api: httpx.Client) -> None:
    seed = org.sim.seed_data
    opp = api.post("/sobjects/Opportunity", json={"Name": "N", "StageName": "Prospecting",
                                                  "CloseDate": "2026-01-31", "AccountId": seed.accounts[0].id}).json()
    seats = seed.product("SEAT-VOL")
    line = api.post("/sobjects/OpportunityLineItem", json={
        "OpportunityId": opp["id"], "Quantity": 3, "UnitPrice": 35, "PricebookEntryId": seats.pricebook_entry_id})
    assert line.status_code == 201, line.text
    got = api.get(f"/sobjects/OpportunityLineItem/{line.json()['id']}").json()
    assert (got["TotalPrice"], got["ListPrice"], got["Product2Id"]) == (105.0, 40.0, seats.id)
    fields = api.get(f"/sobjects/Opportunity/{opp['id']}", params={"fields": "Amount,Pricebook2Id"}).json()
    assert (fields["Amount"], fields["Pricebook2Id"]) == (105.0, seed.pricebook_id)
    assert set(fields) == {"attributes", "Amount", "Pricebook2Id"}


# ---- collections and composite ------------------------------------------------------------------------

def test_collections_limits_and_all_or_none(org: Running, api: httpx.Client) -> None:
    too_many = api.post("/composite/sobjects", json={"records": [
        {"attributes": {"type": "Account"}, "Name": str(i)} for i in range(201)]})
    assert too_many.status_code == 400 and too_many.json()[0]["errorCode"] == "EXCEEDED_ID_LIMIT"
    before = len(org.sim.records("Account"))
    records = [{"attributes": {"type": "Account"}, "Name": "ok"}, {"attributes": {"type": "Account"}}]
    rolled = api.post("/composite/sobjects", json={"allOrNone": True, "records": records}).json()
    assert rolled[0] == {"success": False, "errors": [{
        "statusCode": "ALL_OR_NONE_OPERATION_ROLLED_BACK", "fields": [],
        "message": "Record rolled back because not all records were valid and the request was using AllOrNone header"}]}
    assert rolled[1]["errors"][0]["statusCode"] == "REQUIRED_FIELD_MISSING"
    assert len(org.sim.records("Account")) == before
    partial = api.post("/composite/sobjects", json={"allOrNone": False, "records": records}).json()
    assert partial[0]["success"] is True and partial[1]["success"] is False
    assert len(org.sim.records("Account")) == before + 1
    update = api.patch("/composite/sobjects", json={"records": [
        {"attributes": {"type": "Account"}, "id": partial[0]["id"], "MRR__c": 5}]}).json()
    assert update == [{"id": partial[0]["id"], "success": True, "errors": []}]
    upsert = api.patch("/composite/sobjects/Account/Nue_Customer_Id__c", json={"records": [
        {"attributes": {"type": "Account"}, "Nue_Customer_Id__c": "K1", "Name": "K"}]}).json()
    assert upsert[0]["created"] is True
    deleted = api.delete("/composite/sobjects", params={"ids": f"{partial[0]['id']},{upsert[0]['id']}"}).json()
    assert [r["success"] for r in deleted] == [True, True]
    assert len(org.sim.records("Account")) == before


def test_composite_references_and_rollback(org: Running, api: httpx.Client) -> None:
    request = {"allOrNone": True, "compositeRequest": [
        {"method": "POST", "url": "/services/data/v59.0/sobjects/Account", "referenceId": "acct",
         "body": {"Name": "Composite Co"}},
        {"method": "POST", "url": "/services/data/v59.0/sobjects/Contact", "referenceId": "contact",
         "body": {"LastName": "Ref", "AccountId": "@{acct.id}"}},
        {"method": "GET", "url": "/services/data/v59.0/sobjects/Account/@{acct.id}?fields=Name", "referenceId": "get"},
    ]}
    response = api.post("/composite", json=request)
    assert response.status_code == 200
    results = response.json()["compositeResponse"]
    assert [r["httpStatusCode"] for r in results] == [201, 201, 200]
    assert results[2]["body"]["Name"] == "Composite Co"
    contact = org.sim.record("Contact", results[1]["body"]["id"])
    assert contact["AccountId"] == results[0]["body"]["id"]
    accounts = len(org.sim.records("Account"))
    request["compositeRequest"][1]["body"] = {"AccountId": "@{acct.id}"}  # LastName missing
    failed = api.post("/composite", json=request).json()["compositeResponse"]
    assert [r["httpStatusCode"] for r in failed] == [400, 400, 400]
    assert failed[1]["body"][0]["errorCode"] == "REQUIRED_FIELD_MISSING"
    assert failed[0]["body"] == failed[2]["body"] == [{
        "errorCode": "PROCESSING_HALTED",
        "message": "The transaction was rolled back since another operation in the same transaction failed."}]
    assert len(org.sim.records("Account")) == accounts
    too_many = api.post("/composite", json={"compositeRequest": [request["compositeRequest"][2]] * 26})
    assert too_many.status_code == 400


# ---- describe and schema drift ------------------------------------------------------------------------

def test_describe_and_removed_field(org: Running, api: httpx.Client) -> None:
    describe = api.get("/sobjects/Account/describe").json()
    fields = {f["name"]: f for f in describe["fields"]}
    ext = fields["Nue_Customer_Id__c"]
    assert (ext["externalId"], ext["unique"], ext["type"], ext["custom"]) == (True, True, "string", True)
    assert fields["Name"]["nillable"] is False and fields["Id"]["createable"] is False
    assert [v["value"] for v in fields["Subscription_Status__c"]["picklistValues"]][:2] == ["Active", "Trial"]
    assert fields["OwnerId"]["referenceTo"] == ["User"] and fields["OwnerId"]["relationshipName"] == "Owner"
    event = api.get("/sobjects/Nue_Billing_Event__c/describe").json()
    assert event["custom"] is True and event["keyPrefix"].startswith("a0")
    names = {o["name"] for o in api.get("/sobjects").json()["sobjects"]}
    assert {"Account", "Opportunity", "OpportunityLineItem", "Nue_Billing_Event__c", "Note", "User"} <= names
    assert org.http.post("/__sandbox/schema", json={"remove": ["Account.MRR__c"]}).status_code == 200
    after = {f["name"] for f in api.get("/sobjects/Account/describe").json()["fields"]}
    assert "MRR__c" not in after and "ARR__c" in after
    query = api.get("/query", params={"q": "SELECT Id, MRR__c FROM Account"})
    assert query.status_code == 400 and query.json()[0]["errorCode"] == "INVALID_FIELD"
    write = api.patch(f"/sobjects/Account/{org.sim.seed_data.accounts[0].id}", json={"MRR__c": 1})
    assert write.json()[0]["errorCode"] == "INVALID_FIELD"
    org.sim.add_field(CustomField(object="Account", name="MRR__c", type="currency"))
    assert api.get("/query", params={"q": "SELECT Id, MRR__c FROM Account"}).status_code == 200


# ---- limits and faults --------------------------------------------------------------------------------

def test_daily_limit_and_limits_resource() -> None:
    with running(SalesforceSimSettings(daily_limit=3)) as org, org.api() as api:
        first = api.get("/limits/")
        assert first.json()["DailyApiRequests"] == {"Max": 3, "Remaining": 2}
        assert first.headers["sforce-limit-info"] == "api-usage=1/3"
        assert api.get("/limits").status_code == 200
        assert api.get("/sobjects").status_code == 200
        refused = api.get("/limits")
        assert refused.status_code == 403
        assert refused.json() == [{"message": "TotalRequests Limit exceeded.", "errorCode": "REQUEST_LIMIT_EXCEEDED"}]
        assert refused.headers["sforce-limit-info"] == "api-usage=3/3"


def test_per_second_cap() -> None:
    clock = FakeClock()
    with running(SalesforceSimSettings(per_second_cap=2, clock=clock)) as org, org.api() as api:
        assert [api.get("/limits").status_code for _ in range(3)] == [200, 200, 403]
        clock.now += 1
        assert api.get("/limits").status_code == 200


def test_fault_injection(org: Running, api: httpx.Client) -> None:
    org.http.post("/__sandbox/faults", json={"unavailable_next": 1, "lock_row_next": 1})
    unavailable = api.get("/limits")
    assert unavailable.status_code == 503 and unavailable.json()[0]["errorCode"] == "SERVER_UNAVAILABLE"
    assert api.get("/limits").status_code == 200  # GETs are not writes: no lock fault
    locked = api.patch(f"/sobjects/Account/{org.sim.seed_data.accounts[0].id}", json={"Phone": "1"})
    assert locked.status_code == 400
    assert locked.json() == [{"message": "unable to obtain exclusive access to this record",
                              "errorCode": "UNABLE_TO_LOCK_ROW", "fields": []}]
    org.sim.set_faults(drop_next=1)
    with pytest.raises(httpx.TransportError):
        api.get("/limits")
    assert api.get("/limits").status_code == 200


def test_random_faults_are_deterministic_per_seed() -> None:
    def pattern() -> list[int]:
        faults = FaultSettings(unavailable_rate=0.5, seed=42)
        with running(SalesforceSimSettings(faults=faults)) as org, org.api() as api:
            return [api.get("/limits").status_code for _ in range(12)]

    first = pattern()
    assert first == pattern()
    assert {200, 503} == set(first)


# ---- admin and scenario -------------------------------------------------------------------------------

def test_admin_close_won_records_log_and_reset(org: Running, api: httpx.Client) -> None:
    opp = org.sim.seed_data.opportunities[0]
    before = org.sim.record("Opportunity", opp.id)
    time.sleep(0.002)
    after = org.http.post("/__sandbox/scenario/close-won", json={"opportunity_id": opp.id}).json()
    assert (after["StageName"], after["IsWon"], after["LastModifiedById"]) == ("Closed Won", True,
                                                                               org.sim.seed_data.users[1].id)
    assert after["SystemModstamp"] > before["SystemModstamp"]
    won = api.get("/query", params={"q": f"SELECT Id FROM Opportunity WHERE IsWon = true AND SystemModstamp > "
                                         f"{before['SystemModstamp'][:19]}Z ORDER BY SystemModstamp, Id"}).json()
    assert [r["Id"] for r in won["records"]] == [opp.id]
    listed = org.http.get("/__sandbox/records/opportunity").json()
    assert len(listed) == 6
    log = org.http.get("/__sandbox/requests").json()
    assert [e["path"] for e in log][-1] == "/services/data/v59.0/query"
    assert all(not e["path"].startswith("/__sandbox") for e in log)
    org.http.post("/__sandbox/reset")
    assert org.sim.record("Opportunity", opp.id)["StageName"] == opp.stage
    assert org.http.get("/__sandbox/requests").json() == []
