"""What a flow would see after its planned writes were applied: the read state with those writes laid over it.

Shadow mode sends nothing, so the next step of a flow that plans in steps (flow 1: customer, order, activation,
write-back; flow 5: account, contacts, tasks) would find the world unchanged and plan the first step again.
Laying each step's writes over what was read lets it plan the next one as it would live. A record a write would
create gets an id that is plainly not real (`SHADOW_ID_PREFIX` + its idempotency key), so nothing is read for it
and nothing could be sent to it. Pure: no I/O.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from revdaemon.flows.base import Found, Needs
from revdaemon.flows.plan import (
    NueActivateOrder,
    NueCreateCustomer,
    NueCreateOrder,
    SfCreate,
    SfDelete,
    SfUpdate,
    SfUpsert,
    Write,
)

SHADOW_ID_PREFIX = "shadow:"


def shadow_id(write: Write) -> str:
    return SHADOW_ID_PREFIX + write.idem_key


def is_shadow_id(value: Any) -> bool:
    return isinstance(value, str) and value.startswith(SHADOW_ID_PREFIX)


def applied(found: Found, writes: Sequence[Write]) -> Found:
    """`found` as it would read after `writes` (in order) had been applied."""
    for write in writes:
        found = _apply(found, write)
    return found


def _apply(found: Found, write: Write) -> Found:
    if isinstance(write, NueCreateCustomer):
        customer = {**write.payload, "id": shadow_id(write), "externalId": write.salesforce_account_id,
                    "salesAccountId": write.salesforce_account_id}
        new_id = customer["id"]
        return dataclasses.replace(
            found, nue_customers={**found.nue_customers, write.salesforce_account_id: customer, new_id: customer},
            nue_orders={**found.nue_orders, new_id: []}, nue_subscriptions={**found.nue_subscriptions, new_id: []},
            nue_contacts={**found.nue_contacts, new_id: []})
    if isinstance(write, NueCreateOrder):
        order = {**write.payload, "id": shadow_id(write), "status": "Draft", "customerId": write.customer_id}
        orders = [*found.nue_orders.get(write.customer_id, []), order]
        return dataclasses.replace(found, nue_orders={**found.nue_orders, write.customer_id: orders})
    if isinstance(write, NueActivateOrder):
        return dataclasses.replace(found, nue_orders={
            customer: [{**o, "status": "Activated"} if o.get("id") == write.order_id else o for o in orders]
            for customer, orders in found.nue_orders.items()})
    if isinstance(write, SfUpdate):
        return _with_record(found, write.sobject, write.record_id, write.fields)
    if isinstance(write, SfUpsert):
        match = next(((key, row) for key, row in found.sf_records.items()
                      if key[0] == write.sobject and row and row.get(write.external_id_field) == write.external_id),
                     None)
        record_id = match[0][1] if match else shadow_id(write)
        return _with_record(found, write.sobject, record_id,
                            {write.external_id_field: write.external_id, **write.fields})
    if isinstance(write, SfCreate):
        return _with_record(found, write.sobject, shadow_id(write), {**write.match, **write.fields})
    if isinstance(write, SfDelete):
        return dataclasses.replace(found, sf_records={**found.sf_records, (write.sobject, write.record_id): None},
                                   sf_children=_children_without(found.sf_children, write.record_id))
    return found


def _with_record(found: Found, sobject: str, record_id: str, fields: Mapping[str, Any]) -> Found:
    """The record with `fields` set, and in every list of children whose parent field it now names."""
    old = found.sf_records.get((sobject, record_id)) or {}
    record = {**old, **fields, "Id": record_id}
    children = {key: ([r for r in rows if r.get("Id") != record_id]
                      + ([record] if key[0] == sobject and record.get(key[1]) == key[2] else []))
                for key, rows in found.sf_children.items()}
    return dataclasses.replace(found, sf_records={**found.sf_records, (sobject, record_id): record},
                               sf_children=children)


def _children_without(children: Mapping[tuple[str, str, str], list[Mapping[str, Any]]], record_id: str
                      ) -> dict[tuple[str, str, str], list[Mapping[str, Any]]]:
    return {key: [r for r in rows if r.get("Id") != record_id] for key, rows in children.items()}


def real_needs(needs: Needs) -> Needs:
    """`needs` without the reads of records a shadow write made up: the overlay holds them, no API has them."""
    return dataclasses.replace(
        needs,
        nue_customers=_real(needs.nue_customers), nue_subscriptions_of=_real(needs.nue_subscriptions_of),
        nue_orders_of=_real(needs.nue_orders_of), nue_contacts_of=_real(needs.nue_contacts_of),
        nue_invoices=_real(needs.nue_invoices), nue_quotes=_real(needs.nue_quotes),
        nue_quotes_of=_real(needs.nue_quotes_of),
        sf_records=frozenset(k for k in needs.sf_records if not is_shadow_id(k[1])),
        sf_children=frozenset(k for k in needs.sf_children if not is_shadow_id(k[2])),
        id_links=frozenset(k for k in needs.id_links if not is_shadow_id(k[1])),
    )


def _real(values: Iterable[str]) -> frozenset[str]:
    return frozenset(v for v in values if not is_shadow_id(v))
