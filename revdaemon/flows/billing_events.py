"""Flow 4 (architecture.md): each billing event of a Nue invoice, logged once on the Salesforce account.

Trigger:   invoice.activated and invoice.updated (webhook or poll; `data.id` is the invoice id). A billing
           event is the invoice's activation or a change of its payment status (nue-api.md, Payment):
           Paid, PartiallyPaid, TransferError (a failed collection), Refunded, WrittenOff and the rest.
Reads:     the invoice, re-read (the notification is a hint), then its Nue customer, then the Salesforce
           account (the customer's externalId, else salesAccountId) and the record already logged for
           this billing event: the custom object by its key, or the account's Tasks.
Writes:    target "custom_object" (default): an upsert of Nue_Billing_Event__c by
           Nue_Event_Key__c = "<invoice id>:<paymentStatus>", with the account, invoice number, amount,
           balance, invoice and payment status, due date, a `Status__c` picklist value (table below) and,
           for a failed collection, a failure detail. Target "task": a Task on the account whose Subject
           carries the same key (created after a lookup by WhatId + Subject; later changes to the same key,
           such as a second partial payment's balance, update that Task).
           Nothing is written while the invoice is Draft or Pending Activation, or when Salesforce
           already shows exactly these values (replays, duplicates, echoes).
Key:       billing_events:<invoice id>:<paymentStatus>:<invoice version>: one write per billing event and
           state of the invoice; a transition is one record, ever, because the record is found by its key.
           An upsert or a Task update adds the values it corrects (flows.common.was), so a record that drifted
           after it was written is corrected again instead of skipped under a key confirmed before.
Ordering:  entity nue:invoice:<id>, version = the invoice's lastModifiedDate.
Conflicts: none: Nue is the master of billing; an unlinked customer or a missing account is skipped.
Limits:    the state is re-read, so a payment status that Nue replaced before the worker read the invoice
           (TransferError, then Paid a moment later) is logged only as the state it was read in.

Status__c picklist (Posted | Paid | Overdue | Void, sandbox/salesforce/settings.py), from paymentStatus:
  NotTransferred, Transferred, PartiallyPaid, PartiallyApplied, PartiallyWrittenOff -> Posted (money owed)
  Paid, Applied, PartiallyRefunded                                                 -> Paid (settled)
  TransferError                                                                    -> Overdue (collection failed)
  Canceled, CreditBack, Refunded, WrittenOff                                       -> Void (no longer owed)
  an invoice whose status is Canceled                                              -> Void, whatever else
  anything else                                                                    -> Posted
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Literal

from revdaemon.domain.money import PricingError, cents, to_decimal
from revdaemon.domain.subscriptions import version_of
from revdaemon.flows import sources
from revdaemon.flows.base import FlowEvent, Found, Needs
from revdaemon.flows.common import account_id_of, account_link, same, was
from revdaemon.flows.plan import OpenConflict, Plan, SfCreate, SfUpdate, SfUpsert, Write
from revdaemon.mapping.fields import FieldSpec, MappingError, render

NAME = "billing_events"
EVENT_TYPES = frozenset({"invoice.activated", "invoice.updated"})
SOURCES = sources.FROM_NUE  # a notification or a poll of Nue's own records

NOT_YET_BILLED = frozenset({"draft", "pending activation"})  # nue-api.md Invoice `status`, compared lowercased
CANCELED_INVOICE = "canceled"
FAILED_COLLECTION = "TransferError"  # nue-api.md Payment: a failed collection shows as TransferError
TASK_FIELDS = ("Subject", "WhatId", "ActivityDate", "Status", "Priority", "Description")

Target = Literal["custom_object", "task"]


def _default_status_values() -> dict[str, str]:
    return {
        "NotTransferred": "Posted", "Transferred": "Posted", "PartiallyPaid": "Posted",
        "PartiallyApplied": "Posted", "PartiallyWrittenOff": "Posted",
        "Paid": "Paid", "Applied": "Paid", "PartiallyRefunded": "Paid",
        "TransferError": "Overdue",
        "Canceled": "Void", "CreditBack": "Void", "Refunded": "Void", "WrittenOff": "Void",
    }


@dataclass(frozen=True, kw_only=True)
class BillingEventMapping:
    target: Target = "custom_object"
    # Flow 6 makes a customer made in Nue its account: an invoice of its first order, in the same claim, waits for it.
    wait_for_onboarding: bool = False
    account_object: str = "Account"
    event_object: str = "Nue_Billing_Event__c"
    key_field: str = "Nue_Event_Key__c"
    account_field: str = "Account__c"
    number_field: str = "Invoice_Number__c"
    amount_field: str = "Amount__c"
    balance_field: str = "Balance__c"
    invoice_status_field: str = "Invoice_Status__c"
    payment_status_field: str = "Payment_Status__c"
    due_date_field: str = "Due_Date__c"
    status_field: str = "Status__c"
    failure_field: str = "Failure_Detail__c"
    # paymentStatus -> the Status__c picklist value (config: mapping.lookups.billing_status).
    status_values: Mapping[str, str] = field(default_factory=_default_status_values)
    default_status: str = "Posted"
    canceled_status: str = "Void"
    # The Task alternative: a log entry, so it is created already completed; a failed collection stands out.
    task_status: str = "Completed"
    extra_fields: Mapping[str, FieldSpec] = field(default_factory=dict)
    lookups: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    task_priority: str = "Normal"
    failure_priority: str = "High"

    @property
    def event_fields(self) -> tuple[str, ...]:
        return (self.key_field, self.account_field, self.number_field, self.amount_field, self.balance_field,
                self.invoice_status_field, self.payment_status_field, self.due_date_field, self.status_field,
                self.failure_field, *self.extra_fields)


class BillingEventsFlow:
    name = NAME
    event_types = EVENT_TYPES
    sources = SOURCES

    def __init__(self, mapping: BillingEventMapping | None = None) -> None:
        self.mapping = mapping or BillingEventMapping()
        m = self.mapping
        self.salesforce_fields = ({"Task": frozenset(TASK_FIELDS)} if m.target == "task"
                                  else {m.event_object: frozenset(m.event_fields)})

    def needs(self, event: FlowEvent, found: Found) -> Needs:
        invoice_id = event.resource_id
        if invoice_id is None:
            return Needs()
        m = self.mapping
        needs = Needs(nue_invoices=frozenset({invoice_id}))
        invoice = found.nue_invoices.get(invoice_id)
        if not invoice or not invoice.get("customerId"):
            return needs
        needs |= Needs(nue_customers=frozenset({str(invoice["customerId"])})) | account_link(str(invoice["customerId"]))
        if m.target == "custom_object":
            # The key field is read like a parent field: one `WHERE Nue_Event_Key__c IN (...)` for the batch.
            needs |= Needs(sf_children=frozenset({(m.event_object, m.key_field, event_key(invoice))}),
                           sf_fields=frozenset((m.event_object, f) for f in m.event_fields))
        customer_id = str(invoice["customerId"])
        account_id = account_id_of(customer_id, found.nue_customers.get(customer_id), found)
        if account_id:
            needs |= Needs(sf_records=frozenset({(m.account_object, account_id)}))
            if m.target == "task":
                needs |= Needs(sf_children=frozenset({("Task", "WhatId", account_id)}),
                               sf_fields=frozenset(("Task", f) for f in TASK_FIELDS))
        return needs

    def plan(self, event: FlowEvent, found: Found) -> Plan:
        invoice_id = event.resource_id
        if invoice_id is None:
            return Plan(skip_reason="the notification names no invoice")
        invoice = found.nue_invoices.get(invoice_id)
        if invoice is None:
            return Plan(skip_reason=f"Nue has no invoice {invoice_id}")
        if str(invoice.get("status") or "").lower() in NOT_YET_BILLED:
            return Plan(skip_reason=f"invoice {invoice.get('name')} is {invoice.get('status')}: not billed yet")
        customer_id = str(invoice.get("customerId") or "")
        customer = found.nue_customers.get(customer_id)
        if customer is None:
            return Plan(skip_reason=f"Nue has no customer {customer_id or '(none)'} for invoice {invoice_id}")
        account_id = account_id_of(customer_id, customer, found)
        if not account_id:
            if self.mapping.wait_for_onboarding:  # a billed invoice's order is activated: flow 6 makes the account
                return Plan(waiting=f"customer {customer_id} has no Salesforce account yet: onboarding makes it "
                                    "from the activated order this invoice bills")
            return Plan(skip_reason=f"customer {customer_id} is not linked to a Salesforce account yet")
        if found.sf_records.get((self.mapping.account_object, account_id)) is None:
            return Plan(skip_reason=f"Salesforce has no account {account_id}")
        try:
            amount = cents(to_decimal(invoice.get("amount") or 0, "amount"))
            balance = cents(to_decimal(invoice.get("balance") or 0, "balance"))
        except PricingError as exc:
            return Plan(skip_reason=f"invoice {invoice_id} cannot be read: {exc}")
        key = event_key(invoice)
        version = version_of(invoice.get("lastModifiedDate"))
        entity = f"nue:invoice:{invoice_id}"
        facts = _Facts(key=key, account_id=account_id, invoice=invoice, amount=amount, balance=balance,
                       status=self.status_of(invoice))
        if self.mapping.target == "task":
            write = self._task(facts, found, f"{NAME}:{key}:{version}")
        else:
            try:
                write = self._event_record(facts, found, f"{NAME}:{key}:{version}")
            except MappingError as exc:
                return Plan(conflict=OpenConflict(flow=NAME, record_ref=f"nue:invoice:{invoice_id}",
                                                  reason=f"a mapped field cannot be filled: {exc}"))
        if write is None:
            return Plan(skip_reason=f"billing event {key} is already logged", version=version, entity=entity)
        return Plan(writes=(write,), version=version, entity=entity)

    def status_of(self, invoice: Mapping[str, Any]) -> str:
        """The Status__c picklist value of an invoice (the table in the module docstring)."""
        if str(invoice.get("status") or "").lower() == CANCELED_INVOICE:
            return self.mapping.canceled_status
        return self.mapping.status_values.get(str(invoice.get("paymentStatus")), self.mapping.default_status)

    # --- the two targets ---------------------------------------------------------------------------------

    def _event_record(self, facts: _Facts, found: Found, idem_key: str) -> Write | None:
        m = self.mapping
        invoice = facts.invoice
        wanted: dict[str, Any] = {
            m.account_field: facts.account_id,
            m.number_field: invoice.get("name"),
            m.amount_field: facts.amount,
            m.balance_field: facts.balance,
            m.invoice_status_field: invoice.get("status"),
            m.payment_status_field: invoice.get("paymentStatus"),
            m.due_date_field: _day(invoice.get("dueDate")),
            m.status_field: facts.status,
            m.failure_field: failure_detail(invoice, facts.balance),
        }
        if m.extra_fields:
            # Config's extra fields; the source record is {"invoice": <Nue invoice>}.
            wanted.update(render(m.extra_fields, {"invoice": invoice}, m.lookups))
        existing = _first(found.sf_children.get((m.event_object, m.key_field, facts.key), []),
                          lambda r: str(r.get(m.key_field)) == facts.key)
        if existing is not None and all(same(existing.get(k), v) for k, v in wanted.items()):
            return None
        return SfUpsert(sobject=m.event_object, external_id_field=m.key_field, external_id=facts.key,
                        fields=wanted, idem_key=f"{idem_key}:{was(existing, wanted)}")

    def _task(self, facts: _Facts, found: Found, idem_key: str) -> Write | None:
        m = self.mapping
        invoice = facts.invoice
        subject = task_subject(invoice, facts.key)
        failed = invoice.get("paymentStatus") == FAILED_COLLECTION
        wanted: dict[str, Any] = {
            "WhatId": facts.account_id,
            "Subject": subject,
            "ActivityDate": _day(invoice.get("dueDate")),
            "Status": m.task_status,
            "Priority": m.failure_priority if failed else m.task_priority,
            "Description": _description(facts),
        }
        existing = _first(found.sf_children.get(("Task", "WhatId", facts.account_id), []),
                          lambda r: str(r.get("Subject")).casefold() == subject.casefold())  # as SOQL does
        if existing is None:
            return SfCreate(sobject="Task", fields=wanted, match={"WhatId": facts.account_id, "Subject": subject},
                            idem_key=idem_key, seen_absent=True)
        # The Task was logged before: bring its details up to date (a second partial payment's balance).
        changed = {k: v for k, v in wanted.items()
                   if k in ("ActivityDate", "Description") and not same(existing.get(k), v)}
        if not changed:
            return None
        # Its own key: the create's is confirmed already, and a later correction is another write.
        return SfUpdate(sobject="Task", record_id=str(existing["Id"]), fields=changed,
                        idem_key=f"{idem_key}:update:{was(existing, changed)}")


@dataclass(frozen=True, kw_only=True)
class _Facts:
    key: str
    account_id: str
    invoice: Mapping[str, Any]
    amount: Decimal
    balance: Decimal
    status: str


def event_key(invoice: Mapping[str, Any]) -> str:
    """The natural key of one billing event: the invoice and the payment status it reached."""
    return f"{invoice.get('id')}:{invoice.get('paymentStatus')}"


def task_subject(invoice: Mapping[str, Any], key: str) -> str:
    return f"Invoice {invoice.get('name')} {invoice.get('paymentStatus')} [{key}]"


def failure_detail(invoice: Mapping[str, Any], balance: Decimal) -> str | None:
    """What a person needs to chase a failed collection; None for every other payment status. Nue documents
    no failure reason on the invoice, so the detail is built from the invoice's own fields."""
    if invoice.get("paymentStatus") != FAILED_COLLECTION:
        return None
    return (f"Collection failed (TransferError) for invoice {invoice.get('name')}: "
            f"{balance:f} still due on {_day(invoice.get('dueDate')) or 'no due date'}.")


def _description(facts: _Facts) -> str:
    invoice = facts.invoice
    lines = [f"Invoice: {invoice.get('name')}", f"Amount: {facts.amount:f}", f"Balance: {facts.balance:f}",
             f"Invoice status: {invoice.get('status')}", f"Payment status: {invoice.get('paymentStatus')}",
             f"Billing status: {facts.status}", f"Due date: {_day(invoice.get('dueDate')) or '-'}",
             f"Key: {facts.key}"]
    detail = failure_detail(invoice, facts.balance)
    if detail:
        lines.append(f"Failure: {detail}")
    return "\n".join(lines)



def _day(value: Any) -> str | None:
    return str(value)[:10] if value else None


def _first(rows: Sequence[Mapping[str, Any]], test: Callable[[Mapping[str, Any]], bool]
           ) -> Mapping[str, Any] | None:
    return next((r for r in rows if test(r)), None)
