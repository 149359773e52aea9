"""What a person calls a record, and where it opens: pure, no I/O."""

from __future__ import annotations

from revdaemon.domain.record_names import (
    LinkOut,
    NameBook,
    RecordName,
    candidate_ids,
    changed,
    named,
    parse_ref,
    target_ref,
)
from revdaemon.flows.base import Found
from revdaemon.flows.record_names import names_in

ACCOUNT = "001000000000001AAA"
OPPORTUNITY = "006000000000001AAA"
CUSTOMER = "0f8fad5b-d9cb-469f-a165-70867728950e"


def test_names_in_what_a_worker_read() -> None:
    found = Found(
        nue_customers={CUSTOMER: {"id": CUSTOMER, "name": "Acme  Corp", "accountNumber": "A-0001"}, "gone": None},
        nue_orders={CUSTOMER: [{"id": "o-1", "orderNumber": "O-00000300", "name": None}]},
        nue_subscriptions={CUSTOMER: [{"id": "s-1", "name": "SUB-00000309"}]},
        nue_invoices={"i-1": {"id": "i-1", "name": "INV-00000042"}},
        sf_records={("Account", ACCOUNT): {"Id": ACCOUNT, "Name": "Acme Corp"},
                    ("Opportunity", OPPORTUNITY): {"Id": OPPORTUNITY, "StageName": "Closed Won"}},
        sf_children={("Task", "WhatId", ACCOUNT): [{"Id": "00T000000000001AAA", "Subject": "Kick-off call"}]},
    )
    texts = {(n.system, n.object, n.record_id): n.text for n in names_in(found)}
    assert texts == {
        ("nue", "Customer", CUSTOMER): "Acme Corp (A-0001)",  # whitespace as a person reads it
        ("nue", "Order", "o-1"): "O-00000300",
        ("nue", "Subscription", "s-1"): "SUB-00000309",
        ("nue", "Invoice", "i-1"): "INV-00000042",
        ("salesforce", "Account", ACCOUNT): "Acme Corp",
        ("salesforce", "Task", "00T000000000001AAA"): "Kick-off call",
    }  # the opportunity read without its Name has nothing to be called by


def test_named_needs_an_id_and_something_to_call_it() -> None:
    assert named("nue", "Order", None, "x") is None
    assert named("nue", "Order", "o-1", " ", None) is None
    assert named("nue", "Order", "o-1", {"nested": 1}) is None
    assert named("salesforce", "Account", ACCOUNT, "x" * 300).name == "x" * 255  # type: ignore[union-attr]


def test_changed_skips_names_kept_as_they_are() -> None:
    acme = RecordName(system="salesforce", object="Account", record_id=ACCOUNT, name="Acme")
    renamed = RecordName(system="salesforce", object="Account", record_id=ACCOUNT, name="Acme Corp")
    kept = {("salesforce", ACCOUNT): acme}
    assert changed(kept, [acme]) == []
    assert changed(kept, [acme, renamed]) == [renamed]  # the last read wins


def test_candidate_ids_and_the_name_book() -> None:
    texts = [f"salesforce:Account:{ACCOUNT}", f"sf:Opportunity:{OPPORTUNITY}:2026-12-01T10:00:00.000+0000",
             f"nue:Customer:{CUSTOMER}", "short:id:123", None]
    assert candidate_ids(texts) == [ACCOUNT, OPPORTUNITY, CUSTOMER]
    book = NameBook([RecordName(system="salesforce", object="Account", record_id=ACCOUNT, name="Acme Corp"),
                     RecordName(system="nue", object="Customer", record_id=CUSTOMER, name="Acme Corp",
                                number="A-0001"),
                     RecordName(system="nue", object="Customer", record_id=ACCOUNT, name="Acme (Nue)")])
    assert book.of(ACCOUNT, "nue").name == "Acme (Nue)"  # type: ignore[union-attr]
    assert book.text_of(*texts) == "Acme Corp · Acme Corp (A-0001)"
    assert book.text_of("nothing known") == ""


def test_links_out() -> None:
    links = LinkOut(salesforce_base="https://acme.my.salesforce.com/", nue_pattern="https://app.example/{object_lower}s/{id}")
    assert links.url(ACCOUNT) == f"https://acme.my.salesforce.com/lightning/r/Account/{ACCOUNT}/view"
    assert links.url("a0B000000000001AAA") == "https://acme.my.salesforce.com/a0B000000000001AAA"
    assert links.url("a0B000000000001AAA", sobject="Nue_Billing_Event__c") == \
        "https://acme.my.salesforce.com/lightning/r/Nue_Billing_Event__c/a0B000000000001AAA/view"
    assert links.url(CUSTOMER, sobject="Customer") == f"https://app.example/customers/{CUSTOMER}"
    assert links.url(CUSTOMER) is None  # a Nue id's object is needed for its URL
    assert LinkOut().url(ACCOUNT) is None  # no instance URL known: no link
    assert links.url("not an id") is None


def test_parse_ref() -> None:
    assert parse_ref(f"salesforce:Account:{ACCOUNT}").object == "Account"
    assert parse_ref(f"sf:Opportunity:{OPPORTUNITY}:2026").system == "salesforce"
    assert parse_ref(f"nue:invoice:{CUSTOMER}").system == "nue"
    assert parse_ref(ACCOUNT).system is None


def test_target_ref_names_one_record_by_id() -> None:
    """A write's target becomes a record ref when it names one record by id; creates, look-ups and made-up ids
    stay as they are."""
    assert target_ref(f"Account {ACCOUNT}") == f"salesforce:Account:{ACCOUNT}"
    assert target_ref(f"Order {CUSTOMER}") == f"nue:Order:{CUSTOMER}"
    assert target_ref("Account Nue_Id__c=c1", "salesforce") == "salesforce:Account:Nue_Id__c=c1"
    assert target_ref("Account Nue_Id__c=c1") == "Account Nue_Id__c=c1"  # whose it is, its shape does not say
    for kept in ("Account", f"Order for opportunity {OPPORTUNITY}", "Order shadow:k1", "", None):
        assert target_ref(kept, "nue") == (kept or "")
