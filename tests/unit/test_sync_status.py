"""The sync status fields: which writes carry them, and which records an error is written to."""

from __future__ import annotations

from datetime import UTC, datetime

from revdaemon.engine.sync_status import StatusFields, SyncStatus, record_of
from revdaemon.flows.plan import NueActivateOrder, SfCreate, SfUpdate, SfUpsert

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
STATUS = SyncStatus({"Opportunity": StatusFields(status_field="S__c", synced_at_field="T__c", error_field="E__c"),
                     "Account": StatusFields(status_field="S__c")})


def test_data_writes_to_configured_objects_carry_the_status() -> None:
    write = STATUS.decorate(SfUpdate(sobject="Opportunity", record_id="006A", fields={"Amount": 1}, idem_key="k"),
                            NOW)
    assert write.fields == {"Amount": 1, "S__c": "Synced", "T__c": "2026-11-26T12:00:00Z", "E__c": None}
    assert write.idem_key == "k"
    upsert = SfUpsert(sobject="Account", external_id_field="X__c", external_id="1", fields={"S__c": "mine"},
                      idem_key="u")
    assert STATUS.decorate(upsert, NOW).fields == {"S__c": "mine"}  # a flow's own value wins


def test_other_writes_are_left_alone() -> None:
    task = SfCreate(sobject="Task", fields={"Subject": "x"}, match={"Subject": "x"}, idem_key="t")
    activation = NueActivateOrder(order_id="o", idem_key="a")
    contact = SfUpdate(sobject="Contact", record_id="003", fields={"A": 1}, idem_key="c")
    for write in (task, activation, contact):
        assert STATUS.decorate(write, NOW) is write


def test_errors_go_to_the_record_a_failure_is_about() -> None:
    rows = STATUS.error_updates([("nue:Order:006A", "REQUIRED_FIELD_MISSING: no"), ("salesforce:Account:001B", "c"),
                                 ("nue:OrderActivation:o-1", "x"), ("salesforce:Task:Subject=x", "y"),
                                 ("salesforce:Opportunity:006A", "later reason")])
    assert rows == {"Opportunity": [{"Id": "006A", "S__c": "Error", "E__c": "later reason"}],
                    "Account": [{"Id": "001B", "S__c": "Error"}]}


def test_record_of_names_the_salesforce_record() -> None:
    assert record_of("nue:Customer:001A") == ("Account", "001A")
    assert record_of("salesforce:Opportunity:006A") == ("Opportunity", "006A")
    assert record_of("nue:burst-1") is None and record_of("salesforce:Opportunity:Key__c=1") is None


def test_unconfigured_is_off() -> None:
    assert not SyncStatus({}) and not SyncStatus({"Account": StatusFields()})
    assert SyncStatus({"Account": StatusFields(error_field="E__c")}).salesforce_fields == {"Account": {"E__c"}}
