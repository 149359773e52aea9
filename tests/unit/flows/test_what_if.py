"""The overlay shadow mode plans later steps on: pure, no I/O."""

from __future__ import annotations

from revdaemon.flows.base import Found, Needs
from revdaemon.flows.plan import NueActivateOrder, NueCreateCustomer, NueCreateOrder, SfCreate, SfUpdate, SfUpsert
from revdaemon.flows.what_if import applied, is_shadow_id, real_needs, shadow_id

ACCOUNT = "001000000000001AAA"
OPPORTUNITY = "006000000000001AAA"


def test_a_created_customer_and_its_order_are_seen_by_the_next_step() -> None:
    customer = NueCreateCustomer(salesforce_account_id=ACCOUNT, payload={"name": "Acme"}, idem_key="c:1")
    found = applied(Found(), [customer])
    made = found.nue_customers[ACCOUNT]
    assert made is not None and is_shadow_id(made["id"]) and made["name"] == "Acme"
    assert found.nue_orders[made["id"]] == []  # nothing to read for a customer no API has
    order = NueCreateOrder(customer_id=made["id"], opportunity_id=OPPORTUNITY, payload={"description": "x"},
                           idem_key="o:1")
    found = applied(found, [order, NueActivateOrder(order_id=shadow_id(order), idem_key="a:1")])
    [placed] = found.nue_orders[made["id"]]
    assert placed["id"] == "shadow:o:1" and placed["status"] == "Activated" and placed["customerId"] == made["id"]


def test_salesforce_writes_update_records_and_children() -> None:
    found = Found(sf_records={("Opportunity", OPPORTUNITY): {"Id": OPPORTUNITY, "Stage": "Won", "X__c": None}},
                  sf_children={("Task", "WhatId", ACCOUNT): []})
    found = applied(found, [
        SfUpdate(sobject="Opportunity", record_id=OPPORTUNITY, fields={"X__c": "O-1"}, idem_key="u"),
        SfCreate(sobject="Task", fields={"Subject": "Kick-off", "WhatId": ACCOUNT}, match={"WhatId": ACCOUNT},
                 idem_key="t"),
        SfUpsert(sobject="Ev__c", external_id_field="Key__c", external_id="k1", fields={"S__c": "A"}, idem_key="e"),
        SfUpsert(sobject="Ev__c", external_id_field="Key__c", external_id="k1", fields={"S__c": "B"}, idem_key="f"),
    ])
    assert found.sf_records[("Opportunity", OPPORTUNITY)] == {"Id": OPPORTUNITY, "Stage": "Won", "X__c": "O-1"}
    [task] = found.sf_children[("Task", "WhatId", ACCOUNT)]
    assert task["Subject"] == "Kick-off" and task["Id"] == "shadow:t"
    events = [r for (sobject, _), r in found.sf_records.items() if sobject == "Ev__c"]
    assert events == [{"Key__c": "k1", "S__c": "B", "Id": "shadow:e"}]  # the second upsert found the first


def test_reads_of_made_up_records_are_dropped() -> None:
    needs = Needs(nue_customers=frozenset({ACCOUNT, "shadow:c"}), nue_orders_of=frozenset({"shadow:c"}),
                  sf_records=frozenset({("Account", ACCOUNT), ("Task", "shadow:t")}))
    real = real_needs(needs)
    assert real.nue_customers == {ACCOUNT} and not real.nue_orders_of and real.sf_records == {("Account", ACCOUNT)}
