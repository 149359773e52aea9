"""Flow 6 (architecture.md): an activated order starts the customer's onboarding in Salesforce.

Trigger:   order.activated (webhook or poll; `data.id` is the order id, `data.customerId` its customer).
           Change orders (amendments, renewals, cancellations) are skipped: they are flow 5's.
Reads:     the customer's orders (this one re-read; the notification is a hint), the catalog (product
           names), the Nue customer and its contacts, revdaemon's id link for it, then the Salesforce account with
           its owner, customer success manager, entitlements and last order, the account's Tasks, and the
           Salesforce contacts by the Nue contact key and by email.
Writes:    0. the account and the contacts, when missing (flows/customer_records.py states the rules: linked by
              every id the systems keep, then by Account.Nue_Customer_Id__c, then by exact name + domain, else
              upserted by that external id; `flows.onboarding.create_accounts`), and the store's id link; each
              step waits for the one before (a fresh read between them);
           1. an update of the account, only the fields that differ: Entitlements__c, one line per product
              ("<name> x <quantity>", add-ons of a bundle included) summed over every activated order of
              the customer that is not a change order, so the field shows the state whatever order the
              notifications come in; and Last_Nue_Order__c, the number of the latest of those orders;
           2. one Task per configured onboarding step (subject, due offset in days), for this order:
              WhatId = the account, WhoId = the primary contact (when it has one), OwnerId = the account's
              customer success manager, else its owner, Subject "<step> (<order number>)", ActivityDate =
              activation date + offset, Status "Not Started", Priority "Normal"; created after a lookup by
              (WhatId, Subject), and planned only when the account has no such Task. A replay writes nothing.
Key:       onboarding:account:<account id>:<latest order id>:<the values it corrects> (flows.common.was: a
           field blanked after it was written is written again); onboarding:task:<order id>:<step>;
           onboarding:account-create:<customer id>, onboarding:account-link:<customer id>:<account id>,
           onboarding:contact-create:<contact id>, onboarding:contact-link:<contact id>:<Salesforce id>,
           onboarding:contact:<contact id>:<the values it corrects>.
Conflicts: an account of the customer's name that its domain does not single out; several contacts of one email.
           With create_accounts off, an unlinked customer is skipped and logged; a linked account Salesforce no
           longer has is skipped too.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

from revdaemon.domain.money import PricingError, to_decimal
from revdaemon.domain.subscriptions import version_of
from revdaemon.flows import sources
from revdaemon.flows.base import FlowEvent, Found, Needs
from revdaemon.flows.common import (
    customer_id_of,
    is_activated,
    is_change_order,
    order_by_id,
    order_of_event,
    was,
)
from revdaemon.flows.customer_records import (
    LINK_TYPE,
    CustomerRecords,
    account_needs,
    contact_needs,
    contact_writes,
    primary_contact,
)
from revdaemon.flows.plan import LinkIds, OpenConflict, Plan, SfCreate, SfUpdate, Write
from revdaemon.mapping.fields import FieldSpec, MappingError, render

NAME = "onboarding"
# order.updated comes from the Nue order poll (the safety net for a missed webhook); the flow re-reads
# the order and acts only on an activated, non-change order either way.
EVENT_TYPES = frozenset({"order.activated", "order.updated"})
SOURCES = sources.FROM_NUE  # a notification or a poll of Nue's own records

TASK_FIELDS = ("Subject", "WhatId", "WhoId")


@dataclass(frozen=True, kw_only=True)
class OnboardingMapping:
    # Extra account fields from config (mapping.flows.onboarding); source record:
    # {"order": <the newest activated Nue order>, "customer": <Nue customer>}.
    extra_fields: Mapping[str, FieldSpec] = field(default_factory=dict)
    lookups: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    account_object: str = "Account"
    owner_field: str = "OwnerId"
    csm_field: str = "Customer_Success_Manager__c"
    entitlements_field: str = "Entitlements__c"
    last_order_field: str = "Last_Nue_Order__c"
    # (subject, due in days after activation), config: flows.onboarding.tasks.
    tasks: tuple[tuple[str, int], ...] = (("Kick-off call", 2), ("Send welcome pack", 1), ("Configure tenant", 7))
    task_status: str = "Not Started"  # Task.Status picklist (sandbox/salesforce/schema.py)
    task_priority: str = "Normal"  # Task.Priority picklist
    # The account and contacts of a customer made in Nue (flows.onboarding.create_accounts / contacts,
    # mapping.objects.account / contact).
    records: CustomerRecords = field(default_factory=CustomerRecords)

    @property
    def account_fields(self) -> tuple[str, ...]:
        return (self.owner_field, self.csm_field, self.entitlements_field, self.last_order_field, *self.extra_fields)


class OnboardingFlow:
    name = NAME
    event_types = EVENT_TYPES
    sources = SOURCES

    def __init__(self, mapping: OnboardingMapping | None = None) -> None:
        self.mapping = mapping or OnboardingMapping()
        m = self.mapping
        r = m.records
        self.salesforce_fields = {
            m.account_object: frozenset({*m.account_fields, *r.account_read,
                                         *(r.account_fields if r.create_accounts else ())}),
            "Task": frozenset({*TASK_FIELDS, "OwnerId", "ActivityDate", "Status", "Priority"})}
        if r.contacts:
            self.salesforce_fields["Contact"] = frozenset({*r.contact_read, *r.contact_fields} - {"SystemModstamp"})

    def needs(self, event: FlowEvent, found: Found) -> Needs:
        customer_id = customer_id_of(event)
        if customer_id is None or event.resource_id is None:
            return Needs()
        m = self.mapping
        # The orders and the customer first: only a new (not a change) order's customer has its contacts read.
        needs = Needs(nue_orders_of=frozenset({customer_id}), nue_customers=frozenset({customer_id}))
        order = order_by_id(found.nue_orders.get(customer_id, []), event.resource_id)
        if order is None or is_change_order(order):
            return needs  # a change order is flow 5's: its contacts are not read for it
        needs |= Needs(catalog=True, nue_contacts_of=frozenset({customer_id} if m.records.contacts else ()))
        found_account, account = account_needs(m.records, NAME, customer_id, found)
        needs |= found_account
        account_id = account.account_id
        if account_id:
            needs |= Needs(sf_records=frozenset({(m.account_object, account_id)}),
                           sf_children=frozenset({("Task", "WhatId", account_id)}),
                           sf_fields=frozenset({*((m.account_object, f) for f in m.account_fields),
                                                *(("Task", f) for f in TASK_FIELDS)}))
            needs |= contact_needs(m.records, customer_id, account_id, found)
        return needs

    def plan(self, event: FlowEvent, found: Found) -> Plan:
        customer_id, order, missing = order_of_event(event, found)
        if order is None or customer_id is None:
            return Plan(skip_reason=missing)
        orders = found.nue_orders.get(customer_id, [])
        if is_change_order(order):
            return Plan(skip_reason=f"order {order.get('orderNumber')} is a change order: no onboarding")
        if not is_activated(order):
            return Plan(skip_reason=f"order {order.get('orderNumber')} is {order.get('status')}, not Activated")
        m = self.mapping
        _needs, found_account = account_needs(m.records, NAME, customer_id, found)
        if found_account.conflict is not None:
            return Plan(conflict=found_account.conflict)
        if found_account.write is not None:  # the account first: the next step reads it back
            return Plan(writes=(found_account.write,), done=False)
        account_id = found_account.account_id
        if not account_id:
            return Plan(skip_reason=found_account.missing or f"customer {customer_id}'s account is not read yet")
        account = found.sf_records.get((m.account_object, account_id))
        if account is None:
            return Plan(skip_reason=f"Salesforce has no account {account_id}")
        customer = found.nue_customers.get(customer_id) or {}
        # Nue's own sync keeps its link (externalId); any other pairing is kept in revdaemon's store.
        links = () if customer.get("externalId") or found.id_links.get((LINK_TYPE, customer_id)) == account_id \
            else (LinkIds(object_type=LINK_TYPE, nue_id=customer_id, salesforce_id=account_id),)
        contacts = contact_writes(m.records, NAME, customer_id, account_id, found)
        if contacts.conflict is not None:
            return Plan(conflict=contacts.conflict)
        try:
            writes: list[Write] = self._account_update(account_id, account, orders, found.catalog, customer)
        except PricingError as exc:
            return Plan(skip_reason=f"cannot read the orders of customer {customer_id}: {exc}")
        except MappingError as exc:
            return Plan(conflict=OpenConflict(flow=NAME, record_ref=f"salesforce:Account:{account_id}",
                                              reason=f"a mapped field cannot be filled: {exc}"))
        writes += contacts.writes
        who: str | None = None
        if m.records.contacts:
            primary = primary_contact(order, customer, found.nue_contacts.get(customer_id, []))
            who = contacts.salesforce_ids.get(primary) if primary else None
            if primary and who is None:  # the Tasks name the primary contact: they wait for its create
                return Plan(writes=tuple(writes), links=links, done=False)
        writes += self._tasks(order, account_id, account, found.sf_children.get(("Task", "WhatId", account_id), []),
                              who)
        if not writes:
            return Plan(links=links, skip_reason="the account shows the order and its onboarding tasks exist")
        return Plan(writes=tuple(writes), links=links)

    def _account_update(self, account_id: str, account: Mapping[str, Any], orders: Sequence[Mapping[str, Any]],
                        catalog: Sequence[Mapping[str, Any]], customer: Mapping[str, Any]) -> list[Write]:
        m = self.mapping
        placed = sorted((o for o in orders if is_activated(o) and not is_change_order(o)), key=_activation)
        wanted = {m.entitlements_field: entitlements(placed, catalog),
                  m.last_order_field: placed[-1].get("orderNumber")}
        if m.extra_fields:
            wanted.update(render(m.extra_fields, {"order": placed[-1], "customer": customer}, m.lookups))
        changed = {k: v for k, v in wanted.items() if v is not None and str(account.get(k) or "") != str(v)}
        if not changed:
            return []
        return [SfUpdate(sobject=m.account_object, record_id=account_id, fields=changed,
                         idem_key=f"{NAME}:account:{account_id}:{placed[-1].get('id')}:{was(account, changed)}")]

    def _tasks(self, order: Mapping[str, Any], account_id: str, account: Mapping[str, Any],
               existing: Sequence[Mapping[str, Any]], who: str | None) -> list[Write]:
        m = self.mapping
        number = order.get("orderNumber") or order.get("id")
        activated = _activation_day(order)
        owner = account.get(m.csm_field) or account.get(m.owner_field)
        # SOQL compares text without case, and so does the executor's lookup: a renamed "KICK-OFF CALL" counts.
        taken = {str(t.get("Subject")).casefold() for t in existing
                 if str(t.get("WhatId") or account_id) == account_id}
        writes: list[Write] = []
        for step, offset in m.tasks:
            subject = f"{step} ({number})"
            if subject.casefold() in taken:
                continue
            fields: dict[str, Any] = {"WhatId": account_id, "Subject": subject, "Status": m.task_status,
                                      "Priority": m.task_priority}
            if owner:
                fields["OwnerId"] = owner
            if who:
                fields["WhoId"] = who
            if activated is not None:
                fields["ActivityDate"] = (activated + timedelta(days=offset)).isoformat()
            writes.append(SfCreate(sobject="Task", fields=fields, match={"WhatId": account_id, "Subject": subject},
                                   idem_key=f"{NAME}:task:{order.get('id')}:{step}", seen_absent=True))
        return writes


def entitlements(orders: Sequence[Mapping[str, Any]], catalog: Sequence[Mapping[str, Any]]) -> str:
    """One line per product, "<name> x <quantity>", quantities summed over the orders' lines and add-ons,
    in the order the products first appear."""
    names: dict[str, str] = {}
    for product in catalog:
        for entry in product.get("priceBookEntries") or []:
            names[str(entry.get("id"))] = str(product.get("name") or product.get("sku") or entry.get("id"))
    totals: dict[str, Decimal] = {}

    def walk(lines: Sequence[Mapping[str, Any]]) -> None:
        for line in lines:
            name = str(line.get("productName") or names.get(str(line.get("priceBookEntryId")))
                       or line.get("sku") or line.get("priceBookEntryId"))
            totals[name] = totals.get(name, Decimal(0)) + to_decimal(line.get("quantity") or 0, "quantity")
            walk(line.get("addOns") or [])

    for order in orders:
        walk(order.get("orderProducts") or [])
    return "\n".join(f"{name} x {_plain(quantity)}" for name, quantity in totals.items())


def _plain(value: Decimal) -> str:
    """25.000 -> "25", 2.50 -> "2.5"."""
    return f"{value.normalize():f}"


def _activation(order: Mapping[str, Any]) -> tuple[str, str]:
    return (version_of(order.get("activatedDate")), str(order.get("orderNumber") or ""))


def _activation_day(order: Mapping[str, Any]) -> date | None:
    """The UTC day the order was activated (activatedDate is a timestamp), else the day it was placed."""
    stamp = version_of(order.get("activatedDate"))
    if stamp:
        return date.fromisoformat(stamp[:10])
    placed = order.get("orderPlacedDate") or order.get("effectiveDate")
    return date.fromisoformat(str(placed)[:10]) if placed else None




