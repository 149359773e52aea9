"""`setup salesforce`'s pure parts: what a config needs, the comparison with describe, the metadata it makes."""

from __future__ import annotations

import json
from typing import Any
from xml.etree import ElementTree

from revdaemon.config import Settings
from revdaemon.engine.schema import flow_fields
from revdaemon.engine.supervisor import schema_checked
from revdaemon.sandbox.salesforce.schema import FieldDef as SimFieldDef
from revdaemon.setup.catalog import BILLING_EVENT, known_fields, known_objects
from revdaemon.setup.export import SOURCE_ROOT, dx_source
from revdaemon.setup.metadata import METADATA_NAMESPACE, PERMISSION_SET, field_metadata
from revdaemon.setup.plan import Requirement, Status, compare, grants, requirements
from tests.unit.test_config import MINIMAL

NS = {"md": METADATA_NAMESPACE}


def settings(**overrides: Any) -> Settings:
    return Settings.model_validate({**MINIMAL, **overrides})


def required(config: Settings) -> list[Requirement]:
    return requirements({part.name: flow_fields(part) for part in schema_checked(config)}, config.mapping.lookups)


def by_name(rows: list[Requirement]) -> dict[str, Requirement]:
    return {row.name: row for row in rows}


def described(*, missing: frozenset[str] = frozenset(), hidden_objects: frozenset[str] = frozenset(),
              **changed: dict[str, Any]) -> dict[str, dict[str, dict[str, Any]] | None]:
    """Describe as the org would answer it with every catalog field made as the catalog says, the standard
    fields present; `missing` fields absent, `hidden_objects` not visible, `changed` fields' attributes replaced."""
    org: dict[str, dict[str, dict[str, Any]] | None] = {}
    for requirement in required(settings()):
        if requirement.object in hidden_objects:
            org[requirement.object] = None
            continue
        fields = org.setdefault(requirement.object, {})
        assert fields is not None
        if requirement.field is None or requirement.name in missing:
            continue
        definition = known_fields().get(requirement.name)
        shape = (SimFieldDef(name=requirement.field, type=definition.type, label=definition.label,
                             length=definition.length, external_id=definition.external_id, unique=definition.unique,
                             picklist=requirement.picklist).describe() if definition is not None
                 else {"name": requirement.field, "type": "string", "updateable": True, "createable": True})
        fields[requirement.field] = {**shape, **changed.get(requirement.name, {})}
    return org


class TestRequirements:
    def test_the_default_config_needs_the_billing_object_its_fields_and_the_standard_fields(self) -> None:
        rows = by_name(required(settings()))
        assert isinstance(rows[BILLING_EVENT].definition, type(known_objects()[BILLING_EVENT]))
        assert rows[f"{BILLING_EVENT}.Nue_Event_Key__c"].definition is not None
        assert rows["Opportunity.StageName"].definition is None  # standard: checked, never created
        assert "closed_won_to_order" in rows["Opportunity.Nue_Order_Id__c"].needed_by

    def test_a_switched_off_flow_needs_nothing(self) -> None:
        rows = by_name(required(settings(flows={"billing_events": {"enabled": False}})))
        assert BILLING_EVENT not in rows and f"{BILLING_EVENT}.Amount__c" not in rows

    def test_a_picklist_takes_the_values_of_its_lookup_table(self) -> None:
        config = settings(mapping={"lookups": {"subscription_status": {"Active": "Active", "Paused": "On Hold"}}})
        picklist = by_name(required(config))["Account.Subscription_Status__c"].picklist
        assert "On Hold" in picklist and "Churned" in picklist and len(picklist) == len(set(picklist))

    def test_a_mapped_field_revdaemon_does_not_own_is_required_without_a_definition(self) -> None:
        config = settings(mapping={"flows": {"subscription_status": {"Tier__c": "path:customer.tier"}}})
        row = by_name(required(config))["Account.Tier__c"]
        assert row.definition is None and row.needed_by == ("subscription_status",)

    def test_the_sync_status_fields_are_required_where_configured(self) -> None:
        config = settings(mapping={"sync_status": {"Opportunity": {"status_field": "Nue_Sync_Status__c"}}})
        assert "sync_status" in by_name(required(config))["Opportunity.Nue_Sync_Status__c"].needed_by

    def test_grants_cover_every_custom_field_and_object_but_no_standard_field(self) -> None:
        fields, objects = grants(required(settings()))
        assert "Account.MRR__c" in fields and f"{BILLING_EVENT}.Amount__c" in fields
        assert not any(name.endswith(".StageName") for name in fields)
        assert {"Account", "Opportunity", BILLING_EVENT} <= set(objects)


class TestCompare:
    def test_an_org_made_as_the_catalog_says_is_ready(self) -> None:
        rows = compare(required(settings()), described())
        assert [row.requirement.name for row in rows if not row.ok] == []

    def test_an_empty_org_misses_every_own_field_and_the_object_and_apply_fixes_them(self) -> None:
        own = {name for name in known_fields() if name.split(".")[0] != BILLING_EVENT}
        org = described(missing=frozenset(own), hidden_objects=frozenset({BILLING_EVENT}))
        rows = compare(required(settings()), org)
        missing = {row.requirement.name: row for row in rows if row.status is Status.MISSING}
        assert BILLING_EVENT in missing and "Account.MRR__c" in missing
        assert all(row.applies for row in missing.values())
        assert "Opportunity.StageName" not in missing

    def test_a_mapped_field_that_is_missing_cannot_be_applied(self) -> None:
        config = settings(mapping={"flows": {"subscription_status": {"Tier__c": "path:customer.tier"}}})
        [row] = [r for r in compare(required(config), described()) if r.requirement.name == "Account.Tier__c"]
        assert row.status is Status.MISSING and not row.applies and "does not know its type" in row.detail

    def test_present_but_wrong_is_named_with_the_reason(self) -> None:
        org = described(**{"Account.MRR__c": {"type": "string"},
                           "Opportunity.Nue_Order_Number__c": {"length": 40},
                           "Opportunity.Nue_Order_Id__c": {"externalId": False},
                           "Opportunity.Nue_Renewal_Key__c": {"unique": False},
                           "Account.Subscription_Status__c": {"restrictedPicklist": True, "picklistValues": [
                               {"value": "Active", "active": True}]}})
        wrong = {row.requirement.name: row.detail for row in compare(required(settings()), org)
                 if row.status is Status.WRONG}
        assert wrong["Account.MRR__c"] == "type string, revdaemon writes currency"
        assert "length 40, needs 255" in wrong["Opportunity.Nue_Order_Number__c"]
        assert "not an External ID" in wrong["Opportunity.Nue_Order_Id__c"]
        assert "not Unique" in wrong["Opportunity.Nue_Renewal_Key__c"]
        assert "lacks 'Trial', 'Past Due', 'Canceled', 'Churned'" in wrong["Account.Subscription_Status__c"]
        assert len(wrong) == 5

    def test_an_unrestricted_picklist_lacking_values_is_fine(self) -> None:
        org = described(**{"Account.Subscription_Status__c": {"picklistValues": [{"value": "Active"}]}})
        assert all(row.ok for row in compare(required(settings()), org))

    def test_a_field_the_integration_user_may_only_read_is_read_only_and_apply_grants_edit(self) -> None:
        org = described(**{"Account.MRR__c": {"updateable": False, "createable": False}})
        [row] = [r for r in compare(required(settings()), org) if not r.ok]
        assert row.requirement.name == "Account.MRR__c" and row.status is Status.READ_ONLY and row.applies


class TestMetadata:
    def test_each_catalog_type_has_a_metadata_type(self) -> None:
        types = {field.type: field_metadata(field)["type"] for field in known_fields().values()}
        assert types == {"string": "Text", "textarea": "LongTextArea", "picklist": "Picklist", "currency": "Currency",
                         "double": "Number", "percent": "Percent", "boolean": "Checkbox", "date": "Date",
                         "datetime": "DateTime", "reference": "Lookup"}

    def test_keys_are_external_ids_and_unique_and_lookups_name_their_target(self) -> None:
        fields = known_fields()
        key = field_metadata(fields["Opportunity.Nue_Renewal_Key__c"])
        assert key["externalId"] is True and key["unique"] is True and key["length"] == 255
        lookup = field_metadata(fields[f"{BILLING_EVENT}.Account__c"])
        assert lookup["referenceTo"] == "Account" and lookup["deleteConstraint"] == "SetNull"

    def test_the_dx_source_holds_every_own_definition_and_the_permission_set(self) -> None:
        config = settings(mapping={"lookups": {"subscription_status": {"Paused": "On Hold"}}})
        rows = required(config)
        files = dx_source(rows)
        assert json.loads(files["sfdx-project.json"])["packageDirectories"][0]["path"] == "force-app"
        own_fields = [r for r in rows if r.field is not None and r.definition is not None]
        field_files = [path for path in files if path.endswith(".field-meta.xml")]
        assert len(field_files) == len(own_fields)
        status = ElementTree.fromstring(files[
            f"{SOURCE_ROOT}/objects/Account/fields/Subscription_Status__c.field-meta.xml"])
        assert status.findtext("md:fullName", namespaces=NS) == "Subscription_Status__c"
        values = [v.findtext("md:fullName", namespaces=NS) for v in status.iterfind(".//md:value", NS)]
        assert "On Hold" in values
        permission_set = ElementTree.fromstring(files[
            f"{SOURCE_ROOT}/permissionsets/{PERMISSION_SET}.permissionset-meta.xml"])
        granted = {p.findtext("md:field", namespaces=NS) for p in permission_set.iterfind("md:fieldPermissions", NS)}
        assert granted == set(grants(rows)[0])
        billing = ElementTree.fromstring(
            files[f"{SOURCE_ROOT}/objects/{BILLING_EVENT}/{BILLING_EVENT}.object-meta.xml"])
        assert billing.findtext("md:deploymentStatus", namespaces=NS) == "Deployed"
