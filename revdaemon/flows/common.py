"""Small pure helpers several flows share: comparing a field's value, finding ids in Nue records."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from decimal import Decimal
from typing import Any

from revdaemon.domain.money import PricingError, to_decimal
from revdaemon.flows.base import FlowEvent, Found, Needs

CHANGE_ORDER_TYPE = "Change"  # [assumed] orderType of an order made by POST /change-orders (sandbox: New | Change)
ACTIVATED = frozenset({"activated", "active"})  # nue-api.md Order status: compare case-insensitively


def same(current: Any, wanted: Any) -> bool:
    """Whether a Salesforce field already holds the wanted value (1400.0 equals Decimal('1400.00'))."""
    if wanted is None or current is None:
        return wanted is None and current is None
    if isinstance(wanted, Decimal | int) and not isinstance(wanted, bool):
        try:
            return to_decimal(current) == wanted
        except PricingError:
            return False
    return str(current) == str(wanted)


def was(record: Mapping[str, Any] | None, names: Iterable[str]) -> str:
    """The target's current values of the fields a write corrects, as a short stable digest for its idempotency
    key. A write is planned only where the target differs from what is wanted, so the same key always means the
    same correction: two events about one unchanged record still coalesce into one write, and the same values
    written again after the target drifted back (someone blanked a field revdaemon wrote) get a new key, so the
    executor sends them instead of skipping a key it confirmed long ago. "absent": there is no record yet.

    The record's SystemModstamp, when it was read, is part of it: a field blanked back to the very value it had
    before revdaemon's first write (empty) still gives a new key, as the record has changed since."""
    if record is None:
        return "absent"
    version = [("SystemModstamp", str(record["SystemModstamp"]))] if record.get("SystemModstamp") else []
    text = repr(sorted((name, str(record.get(name))) for name in names) + version)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def customer_id_of(event: FlowEvent) -> str | None:
    """The Nue customer a notification names (never trusted for anything but what to re-read)."""
    data = event.data
    value = data.get("customerId") or (data.get("customer") or {}).get("id")
    return str(value) if value else None


ACCOUNT_LINK = "account"  # the store's id link pairing a Salesforce Account with a Nue customer (flow 6 keeps it)


def account_link(customer_id: str) -> Needs:
    """The store's link of the customer with its account, read with the flow's other reads."""
    return Needs(id_links=frozenset({(ACCOUNT_LINK, customer_id)}))


def account_id_of(customer_id: str, customer: Mapping[str, Any] | None, found: Found) -> str | None:
    """The Salesforce account of a Nue customer: externalId once Nue's own sync ran, else the store's link (flow 6
    found or made the account for a customer made in Nue), else salesAccountId."""
    customer = customer or {}
    value = customer.get("externalId") or found.id_links.get((ACCOUNT_LINK, customer_id)) \
        or customer.get("salesAccountId")
    return str(value) if value else None


def awaiting_onboarding(customer_id: str, orders: Sequence[Mapping[str, Any]]) -> str | None:
    """Why a flow waits for a customer's account: it has an activated order, from which flow 6 makes the account
    of a customer made in Nue (when flows.onboarding.create_accounts is on). None: nothing will make one."""
    if any(is_activated(order) for order in orders):
        return f"customer {customer_id} has no Salesforce account yet: onboarding makes it from its activated order"
    return None


def order_by_id(orders: Sequence[Mapping[str, Any]], order_id: str) -> Mapping[str, Any] | None:
    return next((o for o in orders if str(o.get("id")) == order_id), None)


def is_activated(order: Mapping[str, Any]) -> bool:
    return str(order.get("status") or "").lower() in ACTIVATED


def is_change_order(order: Mapping[str, Any]) -> bool:
    return order.get("orderType") == CHANGE_ORDER_TYPE or bool(order.get("assetChanges"))


def order_of_event(event: FlowEvent, found: Found) -> tuple[str | None, Mapping[str, Any] | None, str | None]:
    """(customer id, the re-read order the event names, why there is none) for an order notification."""
    customer_id = customer_id_of(event)
    order_id = event.resource_id
    if customer_id is None or order_id is None:
        return customer_id, None, "the notification names no order and customer"
    order = order_by_id(found.nue_orders.get(customer_id, []), order_id)
    if order is None:
        return customer_id, None, f"Nue has no order {order_id} for customer {customer_id}"
    return customer_id, order, None
