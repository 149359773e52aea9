"""The Tooling API and field-level security (salesforce-api.md §7): what a setup command does against an empty
org, field by field and grant by grant, over real HTTP."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from sf_fixtures import Running, SimulatorSession, keypair, running
from simple_salesforce import Salesforce
from simple_salesforce.exceptions import SalesforceMalformedRequest

from revdaemon.sandbox.salesforce import SalesforceSimSettings

EVENT = "Nue_Billing_Event__c"
MRR: dict[str, Any] = {"FullName": "Account.MRR__c",
                       "Metadata": {"type": "Currency", "label": "MRR", "precision": 18, "scale": 2}}
STATUS: dict[str, Any] = {"FullName": "Account.Nue_Sync_Status__c", "Metadata": {
    "type": "Picklist", "label": "Nue Sync Status", "valueSet": {"restricted": True, "valueSetDefinition": {
        "value": [{"fullName": v, "label": v, "default": False} for v in ("Pending", "Synced")]}}}}
OBJECT: dict[str, Any] = {"FullName": EVENT, "Metadata": {
    "label": "Nue Billing Event", "pluralLabel": "Nue Billing Events",
    "nameField": {"type": "Text", "label": "Nue Billing Event Name"},
    "deploymentStatus": "Deployed", "sharingModel": "ReadWrite"}}


@pytest.fixture
def empty() -> Iterator[Running]:
    """An org with none of revdaemon's custom fields or objects."""
    settings = SalesforceSimSettings(jwt_public_key_pem=keypair()[1], custom_fields=(), custom_objects=())
    with running(settings) as org:
        yield org


@pytest.fixture
def api(empty: Running) -> Iterator[httpx.Client]:
    with empty.api() as client:
        yield client


def field_names(api: httpx.Client, sobject: str) -> dict[str, dict[str, Any]]:
    response = api.get(f"/sobjects/{sobject}/describe")
    assert response.status_code == 200, response.text
    return {f["name"]: f for f in response.json()["fields"]}


def created(response: httpx.Response) -> str:
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["success"] is True and body["errors"] == []
    return str(body["id"])


def user_id(api: httpx.Client, username: str = "integration@revdaemon.sandbox") -> str:
    found = api.get("/query", params={"q": f"SELECT Id, Username FROM User WHERE Username = '{username}'"}).json()
    assert found["totalSize"] == 1
    return str(found["records"][0]["Id"])


def grant(api: httpx.Client, *, fields: dict[str, bool] = {}, objects: tuple[str, ...] = (),  # noqa: B006
          name: str = "Revdaemon_Integration", assign: bool = True) -> str:
    """A permission set with read (and edit, when True) on `fields` and full access to `objects`, assigned to
    the integration user unless `assign` is False."""
    ps = created(api.post("/sobjects/PermissionSet", json={"Name": name, "Label": name.replace("_", " ")}))
    for dotted, edit in fields.items():
        created(api.post("/sobjects/FieldPermissions", json={
            "ParentId": ps, "SobjectType": dotted.partition(".")[0], "Field": dotted, "PermissionsRead": True,
            "PermissionsEdit": edit}))
    for sobject in objects:
        created(api.post("/sobjects/ObjectPermissions", json={
            "ParentId": ps, "SobjectType": sobject, "PermissionsRead": True, "PermissionsCreate": True,
            "PermissionsEdit": True, "PermissionsDelete": True}))
    if assign:
        created(api.post("/sobjects/PermissionSetAssignment", json={"AssigneeId": user_id(api),
                                                                    "PermissionSetId": ps}))
    return ps


class TestToolingCreate:
    def test_a_created_field_is_invisible_until_a_permission_set_is_assigned(self, api: httpx.Client) -> None:
        """Created through Tooling, a field exists but is absent from describe and SOQL until granted and assigned."""
        field_id = created(api.post("/tooling/sobjects/CustomField", json=MRR))
        assert field_id.startswith("00N")
        assert "MRR__c" not in field_names(api, "Account")
        query = api.get("/query", params={"q": "SELECT Id, MRR__c FROM Account"})
        assert query.status_code == 400
        assert query.json()[0]["errorCode"] == "INVALID_FIELD"
        assert "No such column 'MRR__c' on entity 'Account'" in query.json()[0]["message"]

        ps = grant(api, fields={"Account.MRR__c": True}, assign=False)
        assert "MRR__c" not in field_names(api, "Account")  # granted, not yet assigned
        created(api.post("/sobjects/PermissionSetAssignment", json={"AssigneeId": user_id(api),
                                                                    "PermissionSetId": ps}))
        mrr = field_names(api, "Account")["MRR__c"]
        assert (mrr["type"], mrr["custom"], mrr["createable"], mrr["updateable"]) == ("currency", True, True, True)
        account = created(api.post("/sobjects/Account", json={"Name": "Initech", "MRR__c": 1200.5}))
        rows = api.get("/query", params={"q": f"SELECT MRR__c FROM Account WHERE Id = '{account}'"}).json()
        assert rows["records"][0]["MRR__c"] == 1200.5

    def test_a_created_object_is_not_found_until_object_permissions_grant_it(self, api: httpx.Client) -> None:
        """A Tooling-made object is missing from describeGlobal, describe, SOQL and create until granted."""
        assert created(api.post("/tooling/sobjects/CustomObject", json=OBJECT)).startswith("01I")
        key = {**MRR, "FullName": f"{EVENT}.Nue_Event_Key__c",
               "Metadata": {"type": "Text", "label": "Nue Event Key", "length": 255, "externalId": True,
                            "unique": True}}
        created(api.post("/tooling/sobjects/CustomField", json=key))
        names = [o["name"] for o in api.get("/sobjects").json()["sobjects"]]
        assert EVENT not in names and "PermissionSet" in names
        describe = api.get(f"/sobjects/{EVENT}/describe")
        assert (describe.status_code, describe.json()[0]["errorCode"]) == (404, "NOT_FOUND")
        query = api.get("/query", params={"q": f"SELECT Id FROM {EVENT}"})
        assert (query.status_code, query.json()[0]["errorCode"]) == (400, "INVALID_TYPE")
        assert api.post(f"/sobjects/{EVENT}", json={"Name": "x"}).status_code == 404

        grant(api, objects=(EVENT,))
        assert EVENT in [o["name"] for o in api.get("/sobjects").json()["sobjects"]]
        assert "Nue_Event_Key__c" not in field_names(api, EVENT)  # the object, not yet its field
        grant(api, fields={f"{EVENT}.Nue_Event_Key__c": True}, name="Revdaemon_Fields")
        upsert = api.patch(f"/sobjects/{EVENT}/Nue_Event_Key__c/INV-1", json={"Name": "INV-1"})
        assert upsert.status_code == 201 and upsert.json()["created"] is True

    def test_a_checkbox_reads_as_its_default_on_existing_records(self, api: httpx.Client) -> None:
        """A new Checkbox can be granted like any field, and records made before it read its default."""
        flag = {"FullName": "Account.Expansion_Signal__c",
                "Metadata": {"type": "Checkbox", "label": "Expansion Signal", "defaultValue": "false"}}
        created(api.post("/tooling/sobjects/CustomField", json=flag))
        grant(api, fields={"Account.Expansion_Signal__c": True})
        assert field_names(api, "Account")["Expansion_Signal__c"]["type"] == "boolean"
        rows = api.get("/query", params={"q": "SELECT Expansion_Signal__c FROM Account"}).json()["records"]
        assert rows and all(r["Expansion_Signal__c"] is False for r in rows)

    def test_a_duplicate_field_or_object_is_refused(self, api: httpx.Client) -> None:
        """Creating a field or an object whose name exists answers DUPLICATE_DEVELOPER_NAME."""
        created(api.post("/tooling/sobjects/CustomField", json=MRR))
        again = api.post("/tooling/sobjects/CustomField", json=MRR)
        assert again.status_code == 400
        assert again.json() == [{"message": "There is already a field named MRR on Account.",
                                 "errorCode": "DUPLICATE_DEVELOPER_NAME", "fields": ["FullName"]}]
        created(api.post("/tooling/sobjects/CustomObject", json=OBJECT))
        assert api.post("/tooling/sobjects/CustomObject", json=OBJECT).json()[0]["errorCode"] == \
            "DUPLICATE_DEVELOPER_NAME"

    def test_bad_metadata_is_refused_with_field_integrity_exception(self, api: httpx.Client) -> None:
        """A Text field without length, a Number without precision or a Lookup to nothing never joins the schema."""
        for full, meta in (("Account.A__c", {"type": "Text", "label": "A"}),
                           ("Account.B__c", {"type": "Number", "label": "B"}),
                           ("Account.C__c", {"type": "Lookup", "label": "C", "referenceTo": "Nope__c",
                                             "relationshipName": "C"}),
                           ("Account.D__c", {"type": "Checkbox", "label": "D"}),
                           ("Nope__c.E__c", {"type": "Date", "label": "E"})):
            refused = api.post("/tooling/sobjects/CustomField", json={"FullName": full, "Metadata": meta})
            assert refused.status_code == 400, full
            assert refused.json()[0]["errorCode"] == "FIELD_INTEGRITY_EXCEPTION", full
        assert api.get("/tooling/query", params={"q": "SELECT Id FROM CustomField"}).json()["totalSize"] == 0


class TestToolingQueryAndUpdate:
    def test_query_by_developer_name_and_table(self, api: httpx.Client) -> None:
        """CustomField rows are found by DeveloperName and TableEnumOrId, with Metadata for a single row."""
        field_id = created(api.post("/tooling/sobjects/CustomField", json=MRR))
        created(api.post("/tooling/sobjects/CustomField", json=STATUS))
        q = ("SELECT Id, FullName, DeveloperName, TableEnumOrId, Metadata FROM CustomField "
             "WHERE DeveloperName = 'MRR' AND TableEnumOrId = 'Account'")
        body = api.get("/tooling/query", params={"q": q}).json()
        assert (body["size"], body["done"], body["entityTypeName"]) == (1, True, "CustomField")
        record = body["records"][0]
        assert record["attributes"] == {"type": "CustomField",
                                        "url": f"/services/data/v59.0/tooling/sobjects/CustomField/{field_id}"}
        assert (record["Id"], record["FullName"], record["DeveloperName"], record["TableEnumOrId"]) == \
            (field_id, "Account.MRR__c", "MRR", "Account")
        assert (record["Metadata"]["type"], record["Metadata"]["precision"]) == ("Currency", 18)
        many = api.get("/tooling/query", params={"q": "SELECT Id, Metadata FROM CustomField "
                                                      "WHERE TableEnumOrId = 'Account'"})
        assert many.status_code == 400 and many.json()[0]["errorCode"] == "MALFORMED_QUERY"
        ids = api.get("/tooling/query", params={"q": "SELECT Id, DeveloperName FROM CustomField "
                                                     "WHERE TableEnumOrId = 'Account'"}).json()
        assert sorted(r["DeveloperName"] for r in ids["records"]) == ["MRR", "Nue_Sync_Status"]

    def test_seeded_fields_are_tooling_records_too(self, org: Running) -> None:
        """In the default org a setup command finds every field it would create already there."""
        with org.api() as api:
            q = ("SELECT Id, DeveloperName, TableEnumOrId FROM CustomField WHERE TableEnumOrId = 'Account' "
                 "AND DeveloperName = 'MRR'")
            assert api.get("/tooling/query", params={"q": q}).json()["totalSize"] == 1
            event = api.get("/tooling/query", params={"q": "SELECT Id, DeveloperName FROM CustomObject"}).json()
            assert [r["DeveloperName"] for r in event["records"]] == ["Nue_Billing_Event"]

    def test_patch_adds_a_picklist_value(self, api: httpx.Client) -> None:
        """PATCH with the whole Metadata again adds a value to a restricted picklist; writes of it then pass."""
        field_id = created(api.post("/tooling/sobjects/CustomField", json=STATUS))
        grant(api, fields={"Account.Nue_Sync_Status__c": True})
        refused = api.post("/sobjects/Account", json={"Name": "Hooli", "Nue_Sync_Status__c": "Error"})
        assert refused.json()[0]["errorCode"] == "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST"
        metadata = api.get(f"/tooling/sobjects/CustomField/{field_id}").json()["Metadata"]
        metadata["valueSet"]["valueSetDefinition"]["value"].append(
            {"fullName": "Error", "label": "Error", "default": False})
        patched = api.patch(f"/tooling/sobjects/CustomField/{field_id}", json={"Metadata": metadata})
        assert patched.status_code == 204
        values = [v["value"] for v in field_names(api, "Account")["Nue_Sync_Status__c"]["picklistValues"]]
        assert values == ["Pending", "Synced", "Error"]
        created(api.post("/sobjects/Account", json={"Name": "Hooli", "Nue_Sync_Status__c": "Error"}))

    def test_patch_that_changes_the_type_is_refused(self, api: httpx.Client) -> None:
        """A field's type stays what it was created with."""
        field_id = created(api.post("/tooling/sobjects/CustomField", json=MRR))
        patched = api.patch(f"/tooling/sobjects/CustomField/{field_id}",
                            json={"Metadata": {"type": "Text", "label": "MRR", "length": 20}})
        assert patched.status_code == 400
        assert patched.json()[0]["errorCode"] == "FIELD_INTEGRITY_EXCEPTION"
        query = "SELECT Metadata FROM CustomField WHERE DeveloperName = 'MRR'"
        assert api.get("/tooling/query", params={"q": query}).json()["records"][0]["Metadata"]["type"] == "Currency"


class TestFieldLevelSecurity:
    def test_read_only_field(self, api: httpx.Client) -> None:
        """Read without edit: describe says not createable or updateable, queries work, writes are refused."""
        created(api.post("/tooling/sobjects/CustomField", json=MRR))
        grant(api, fields={"Account.MRR__c": False})
        mrr = field_names(api, "Account")["MRR__c"]
        assert (mrr["createable"], mrr["updateable"]) == (False, False)
        assert api.get("/query", params={"q": "SELECT MRR__c FROM Account"}).status_code == 200
        account = user_account(api)
        refused = api.patch(f"/sobjects/Account/{account}", json={"MRR__c": 10})
        assert refused.status_code == 400
        assert refused.json()[0]["errorCode"] == "INVALID_FIELD_FOR_INSERT_UPDATE"
        assert refused.json()[0]["fields"] == ["MRR__c"]
        batch = api.patch("/composite/sobjects", json={"records": [
            {"attributes": {"type": "Account"}, "id": account, "MRR__c": 10}]}).json()
        assert batch[0]["errors"][0]["statusCode"] == "INVALID_FIELD_FOR_INSERT_UPDATE"

    def test_write_to_an_ungranted_field_is_refused(self, api: httpx.Client) -> None:
        """A field the user cannot see is, for writes, a field that does not exist."""
        created(api.post("/tooling/sobjects/CustomField", json=MRR))
        refused = api.post("/sobjects/Account", json={"Name": "Initech", "MRR__c": 5})
        assert refused.status_code == 400
        assert refused.json() == [{"message": "No such column 'MRR__c' on sobject of type Account",
                                   "errorCode": "INVALID_FIELD", "fields": []}]
        record = api.get(f"/sobjects/Account/{user_account(api)}").json()
        assert "MRR__c" not in record

    def test_permission_records_refuse_duplicates(self, api: httpx.Client) -> None:
        """A second permission set of the same name, or a second assignment of it to a user, is refused."""
        ps = grant(api, name="Revdaemon_Integration")
        again = api.post("/sobjects/PermissionSet", json={"Name": "revdaemon_integration", "Label": "x"})
        assert again.json()[0]["errorCode"] == "DUPLICATE_DEVELOPER_NAME"
        twice = api.post("/sobjects/PermissionSetAssignment", json={"AssigneeId": user_id(api),
                                                                    "PermissionSetId": ps})
        assert twice.status_code == 400
        assert twice.json()[0] == {"message": "duplicate value found: <unknown> duplicates value on record with "
                                              "id: <unknown>", "errorCode": "DUPLICATE_VALUE", "fields": []}
        bad = api.post("/sobjects/FieldPermissions", json={"ParentId": ps, "SobjectType": "Account",
                                                           "Field": "Account.Nope__c", "PermissionsRead": True})
        assert bad.json()[0]["errorCode"] == "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST"
        rows = api.get("/query", params={"q": f"SELECT Id, Name FROM PermissionSet WHERE Id = '{ps}'"}).json()
        assert rows["records"][0]["Name"] == "Revdaemon_Integration"

    def test_ungranted_fields_setting(self) -> None:
        """`ungranted_fields` leaves a seeded field in the org but out of the integration user's reach."""
        settings = SalesforceSimSettings(jwt_public_key_pem=keypair()[1], ungranted_fields=("Account.MRR__c",))
        with running(settings) as org, org.api() as api:
            assert "MRR__c" not in field_names(api, "Account") and "ARR__c" in field_names(api, "Account")
            refused = api.patch(f"/sobjects/Account/{user_account(api)}", json={"MRR__c": 1})
            assert refused.json()[0]["errorCode"] == "INVALID_FIELD"
            grant(api, fields={"Account.MRR__c": True})
            assert api.patch(f"/sobjects/Account/{user_account(api)}", json={"MRR__c": 1}).status_code == 204

    def test_tooling_calls_are_logged_and_counted(self, empty: Running, api: httpx.Client) -> None:
        """Tooling requests count against the daily allocation and appear in the request log."""
        before = empty.sim.api_usage
        response = api.post("/tooling/sobjects/CustomField", json=MRR)
        assert response.headers["Sforce-Limit-Info"] == f"api-usage={before + 1}/15000"
        assert empty.sim.log.count(method="POST", path_prefix="/services/data/v59.0/tooling/sobjects/CustomField") == 1


def user_account(api: httpx.Client) -> str:
    return str(api.get("/query", params={"q": "SELECT Id FROM Account LIMIT 1"}).json()["records"][0]["Id"])


def test_simple_salesforce_runs_the_setup(empty: Running) -> None:
    """An independent client creates a field through `toolingexecute` and grants it through `restful`."""
    sf = Salesforce(instance_url=empty.url, session_id=empty.token(), session=SimulatorSession(empty.url))
    result = sf.toolingexecute("sobjects/CustomField", method="POST", data=MRR)
    assert result["success"] is True
    with pytest.raises(SalesforceMalformedRequest) as refused:
        sf.toolingexecute("sobjects/CustomField", method="POST", data=MRR)
    assert refused.value.content[0]["errorCode"] == "DUPLICATE_DEVELOPER_NAME"
    found = sf.toolingexecute("query/?q=SELECT+Id,DeveloperName+FROM+CustomField+WHERE+DeveloperName='MRR'")
    assert found["records"][0]["Id"] == result["id"]
    user = sf.query("SELECT Id FROM User WHERE Username = 'integration@revdaemon.sandbox'")["records"][0]["Id"]
    ps = sf.PermissionSet.create({"Name": "Revdaemon", "Label": "Revdaemon"})["id"]
    sf.FieldPermissions.create({"ParentId": ps, "SobjectType": "Account", "Field": "Account.MRR__c",
                                "PermissionsRead": True, "PermissionsEdit": True})
    sf.PermissionSetAssignment.create({"AssigneeId": user, "PermissionSetId": ps})
    assert "MRR__c" in [f["name"] for f in sf.Account.describe()["fields"]]


def test_a_lost_answer_to_a_tooling_create_leaves_the_field_created(empty: Running, api: httpx.Client) -> None:
    """After-apply faults reach Tooling paths: the field is made, the answer is a 503, and a retry finds it."""
    empty.sim.set_faults(applied_503_next=1, applied_paths=("POST /tooling/sobjects/CustomField",))
    assert api.post("/tooling/sobjects/CustomField", json=MRR).status_code == 503
    assert api.post("/tooling/sobjects/CustomField", json=MRR).json()[0]["errorCode"] == "DUPLICATE_DEVELOPER_NAME"
    assert empty.sim.faults_fired()["applied_503"] == 1
