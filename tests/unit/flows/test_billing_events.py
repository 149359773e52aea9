from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from revdaemon.flows.base import FlowEvent, Found, Needs
from revdaemon.flows.billing_events import BillingEventMapping, BillingEventsFlow
from revdaemon.flows.plan import Plan, SfCreate, SfUpdate, SfUpsert

INVOICE = {"id": "inv-1", "name": "INV-00000001", "customerId": "c1", "amount": 1150.5, "balance": 1150.5,
           "invoiceDate": "2026-02-01", "dueDate": "2026-03-03", "status": "Active",
           "paymentStatus": "NotTransferred", "lastModifiedDate": "2026-02-01T10:00:00Z"}
CUSTOMER = {"id": "c1", "externalId": "001A", "salesAccountId": "001A"}
VERSION = "2026-02-01T10:00:00.000000Z"
CHILD = ("Nue_Billing_Event__c", "Nue_Event_Key__c")


def event(event_type: str = "invoice.updated", **data: Any) -> FlowEvent:
    return FlowEvent(key="k", type=event_type, source="nue_webhook", payload={"data": {"id": "inv-1", **data}})


def found(invoice: dict[str, Any] | None = None, *, logged: list[dict[str, Any]] | None = None,
          tasks: list[dict[str, Any]] | None = None, customer: dict[str, Any] | None = CUSTOMER) -> Found:
    invoice = {**INVOICE, **(invoice or {})}
    key = f"inv-1:{invoice['paymentStatus']}"
    return Found(nue_invoices={"inv-1": invoice}, nue_customers={"c1": customer},
                 sf_records={("Account", "001A"): {"Id": "001A"}},
                 sf_children={(*CHILD, key): logged or [], ("Task", "WhatId", "001A"): tasks or []})


def record(invoice: dict[str, Any] | None = None) -> dict[str, Any]:
    """The billing event as Salesforce returns it after the upsert (numbers as JSON doubles)."""
    plan = BillingEventsFlow().plan(event(), found(invoice))
    [write] = plan.writes
    assert isinstance(write, SfUpsert)
    return {"Id": "a00X", "Nue_Event_Key__c": write.external_id,
            **{k: float(v) if isinstance(v, Decimal) else v for k, v in write.fields.items()}}


class TestNeeds:
    def test_invoice_then_customer_and_logged_event_then_account(self) -> None:
        """Each read waits for the one it depends on: invoice, then customer and key, then the account."""
        flow = BillingEventsFlow()
        assert flow.needs(event(), Found()) == Needs(nue_invoices=frozenset({"inv-1"}))
        second = flow.needs(event(), Found(nue_invoices={"inv-1": INVOICE}))
        assert second.nue_customers == {"c1"}
        assert second.sf_children == {(*CHILD, "inv-1:NotTransferred")}
        assert second.sf_records == frozenset()
        third = flow.needs(event(), Found(nue_invoices={"inv-1": INVOICE}, nue_customers={"c1": CUSTOMER}))
        assert third.sf_records == {("Account", "001A")}

    def test_task_target_reads_the_account_tasks(self) -> None:
        """The Task variant looks for earlier Tasks on the account, not for the custom object."""
        flow = BillingEventsFlow(BillingEventMapping(target="task"))
        needs = flow.needs(event(), Found(nue_invoices={"inv-1": INVOICE}, nue_customers={"c1": CUSTOMER}))
        assert needs.sf_children == {("Task", "WhatId", "001A")}

    def test_no_invoice_id_needs_nothing(self) -> None:
        """A notification without an id asks for no read."""
        assert not BillingEventsFlow().needs(FlowEvent(key="k", type="invoice.updated", source="nue_webhook",
                                                       payload={"data": {}}), Found())


class TestPlan:
    def test_activation_upserts_one_billing_event(self) -> None:
        """An activated invoice is logged by its key with every field, amounts as Decimal."""
        plan = BillingEventsFlow().plan(event("invoice.activated"), found())
        assert plan == Plan(
            writes=(SfUpsert(sobject="Nue_Billing_Event__c", external_id_field="Nue_Event_Key__c",
                             external_id="inv-1:NotTransferred", fields={
                                 "Account__c": "001A", "Invoice_Number__c": "INV-00000001",
                                 "Amount__c": Decimal("1150.50"), "Balance__c": Decimal("1150.50"),
                                 "Invoice_Status__c": "Active", "Payment_Status__c": "NotTransferred",
                                 "Due_Date__c": "2026-03-03", "Status__c": "Posted", "Failure_Detail__c": None},
                             idem_key=f"billing_events:inv-1:NotTransferred:{VERSION}:absent"),),
            version=VERSION, entity="nue:invoice:inv-1")

    @pytest.mark.parametrize(("payment_status", "status"), [
        ("NotTransferred", "Posted"), ("Transferred", "Posted"), ("TransferError", "Overdue"), ("Paid", "Paid"),
        ("PartiallyPaid", "Posted"), ("Canceled", "Void"), ("CreditBack", "Void"), ("Applied", "Paid"),
        ("PartiallyApplied", "Posted"), ("Refunded", "Void"), ("PartiallyRefunded", "Paid"),
        ("WrittenOff", "Void"), ("PartiallyWrittenOff", "Posted"), ("SomethingNew", "Posted"),
    ])
    def test_each_payment_status_has_its_key_and_picklist_value(self, payment_status: str, status: str) -> None:
        """Every payment status is its own event key and maps onto one of the Status__c picklist values."""
        plan = BillingEventsFlow().plan(event(), found({"paymentStatus": payment_status}))
        [write] = plan.writes
        assert isinstance(write, SfUpsert)
        assert write.external_id == f"inv-1:{payment_status}"
        assert write.fields["Status__c"] == status and write.fields["Payment_Status__c"] == payment_status
        assert write.idem_key == f"billing_events:inv-1:{payment_status}:{VERSION}:absent"

    def test_failed_collection_carries_its_detail(self) -> None:
        """A TransferError names the invoice, the balance still due and the due date; others carry none."""
        [failed] = BillingEventsFlow().plan(event(), found({"paymentStatus": "TransferError"})).writes
        [paid] = BillingEventsFlow().plan(event(), found({"paymentStatus": "Paid", "balance": 0})).writes
        assert isinstance(failed, SfUpsert) and isinstance(paid, SfUpsert)
        assert failed.fields["Failure_Detail__c"] == ("Collection failed (TransferError) for invoice "
                                                      "INV-00000001: 1150.50 still due on 2026-03-03.")
        assert paid.fields["Failure_Detail__c"] is None

    def test_canceled_invoice_is_void(self) -> None:
        """A canceled invoice is Void whatever its payment status says."""
        [write] = BillingEventsFlow().plan(event(), found({"status": "Canceled",
                                                           "paymentStatus": "NotTransferred"})).writes
        assert isinstance(write, SfUpsert) and write.fields["Status__c"] == "Void"

    @pytest.mark.parametrize("status", ["Draft", "Pending Activation"])
    def test_unbilled_invoices_are_skipped(self, status: str) -> None:
        """Draft and pending invoices are not billing events yet."""
        plan = BillingEventsFlow().plan(event(), found({"status": status}))
        assert plan.writes == () and status in (plan.skip_reason or "")

    def test_replay_with_the_event_logged_plans_nothing(self) -> None:
        """When Salesforce already holds the record with these values, a replay writes nothing."""
        plan = BillingEventsFlow().plan(event(), found(logged=[record()]))
        assert plan.writes == () and "already logged" in (plan.skip_reason or "")

    def test_a_second_partial_payment_updates_the_same_record(self) -> None:
        """The same key with a new balance is upserted again, under a new idempotency key."""
        partial = {"paymentStatus": "PartiallyPaid", "balance": 900}
        later = {**partial, "balance": 400, "lastModifiedDate": "2026-02-05T00:00:00Z"}
        [write] = BillingEventsFlow().plan(event(), found(later, logged=[record(partial)])).writes
        assert isinstance(write, SfUpsert) and write.external_id == "inv-1:PartiallyPaid"
        assert write.fields["Balance__c"] == Decimal("400.00")
        assert write.idem_key.startswith("billing_events:inv-1:PartiallyPaid:2026-02-05T00:00:00.000000Z:")

    def test_body_values_are_ignored(self) -> None:
        """A notification claiming another status or amount plans exactly what the re-read invoice says."""
        flow = BillingEventsFlow()
        lying = event(paymentStatus="Paid", amount=1, customerId="c-other")
        assert flow.plan(lying, found()) == flow.plan(event(), found())

    def test_unlinked_customer_is_skipped(self) -> None:
        """A customer with no Salesforce account plans nothing, with the reason."""
        plan = BillingEventsFlow().plan(event(), found(customer={"id": "c1", "externalId": None}))
        assert plan.writes == () and "not linked" in (plan.skip_reason or "")

    def test_sales_account_id_links_when_external_id_is_missing(self) -> None:
        """A customer revdaemon created (salesAccountId, no externalId yet) is logged on that account."""
        [write] = BillingEventsFlow().plan(event(), found(customer={"id": "c1", "salesAccountId": "001A"})).writes
        assert isinstance(write, SfUpsert) and write.fields["Account__c"] == "001A"

    def test_missing_invoice_is_skipped(self) -> None:
        """An invoice Nue no longer has plans nothing."""
        plan = BillingEventsFlow().plan(event(), Found(nue_invoices={"inv-1": None}))
        assert plan.writes == () and "no invoice" in (plan.skip_reason or "")


class TestTaskTarget:
    FLOW = BillingEventsFlow(BillingEventMapping(target="task"))
    SUBJECT = "Invoice INV-00000001 TransferError [inv-1:TransferError]"

    def test_failed_collection_creates_a_high_priority_task(self) -> None:
        """The Task carries the key in its Subject and is found again by WhatId and Subject."""
        plan = self.FLOW.plan(event(), found({"paymentStatus": "TransferError"}))
        [write] = plan.writes
        assert isinstance(write, SfCreate) and write.sobject == "Task"
        assert write.match == {"WhatId": "001A", "Subject": self.SUBJECT}
        assert write.fields["Priority"] == "High" and write.fields["Status"] == "Completed"
        assert write.fields["ActivityDate"] == "2026-03-03"
        assert "Failure: Collection failed (TransferError)" in write.fields["Description"]
        assert write.idem_key == f"billing_events:inv-1:TransferError:{VERSION}"

    def test_replay_with_the_task_there_plans_nothing(self) -> None:
        """An existing Task with the same details is left alone."""
        [write] = self.FLOW.plan(event(), found({"paymentStatus": "TransferError"})).writes
        assert isinstance(write, SfCreate)
        existing = {"Id": "00TX", **write.fields}
        plan = self.FLOW.plan(event(), found({"paymentStatus": "TransferError"}, tasks=[existing]))
        assert plan.writes == ()

    def test_changed_details_update_the_existing_task(self) -> None:
        """A later state under the same key updates the Task's description instead of adding one."""
        [write] = self.FLOW.plan(event(), found({"paymentStatus": "PartiallyPaid", "balance": 900})).writes
        assert isinstance(write, SfCreate)
        existing = {"Id": "00TX", **write.fields}
        [update] = self.FLOW.plan(event(), found({"paymentStatus": "PartiallyPaid", "balance": 400},
                                                 tasks=[existing])).writes
        assert isinstance(update, SfUpdate) and update.record_id == "00TX"
        assert set(update.fields) == {"Description"} and "Balance: 400.00" in update.fields["Description"]
