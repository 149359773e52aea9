"""Flow 5 (architecture.md): an activated change order's net MRR delta, logged as a Note on the account.

Trigger:   order.activated (webhook or poll; `data.id` is the order id, `data.customerId` its customer) for
           a change order: `orderType` "Change" [assumed], or an order carrying `assetChanges` [doc]. The
           subscription.updated notifications the same activation fires are flow 2's; they name no order.
Reads:     the customer's orders (this one re-read, with its assetChanges, and every later change order),
           its subscriptions, the catalog's price book entries and price tags, the Nue customer, then
           the Salesforce account (externalId, else salesAccountId) and the account's Notes.
Writes:    one Note on the account, Title "Nue amendment <order number>", whose Body gives per changed
           asset the change type, the asset number (SUB-...), MRR before, after and delta (two places),
           and the order's totals when it changed several assets. Created after a lookup by
           (ParentId, Title), and planned only when the account has no such Note: replays write nothing.
           The account's MRR field is NOT written here: flow 2 (subscription_status) handles the same
           order.activated and subscription.updated events and writes the account's MRR from Nue's state.
Key:       amendments:note:<order id> (one Note per change order, ever).
Conflicts: none; an order naming an asset the customer does not have, or that cannot be priced, is skipped.

MRR before and after (Decimal, never float; domain/money.py and domain/subscriptions.py):
  Both come from state in Nue, not from the daemon's memory and not from the account's MRR__c. Nue keeps
  one subscription record per asset (SUB-...) and raises its `subscriptionVersion`; the earlier version
  is not listed, but the change orders that produced each version are, with their deltas [doc: quantity
  and term are deltas]. So the subscription as this order left it is the current record with every LATER
  activated change order undone, and the subscription before it is that with this order's own changes
  undone. MRR is then `subscription_mrr` (quantity at the price book entry's price, price tags applied,
  per month, less the original order line's discount) at each quantity:
    UpdateQuantity   quantity before = quantity after - delta
    UpdateTerm, CoTerm, Renew
                     quantity and price do not move: delta 0 (the Note still records the change)
    Cancel           MRR after = 0 (what the customer pays once the cancellation takes effect)
    ConvertFreeTrial MRR before = 0 (a free trial is not charged)
  Why not the account's MRR__c as "before": flow 2 writes it on the very events that announce the change
  (subscription.updated may be processed before order.activated), so it may already show the "after"
  figure; and it is per account, not per subscription. Reconstructing from Nue gives the same Note
  whatever the delivery order, and on any replay.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from revdaemon.domain.money import ZERO, PriceEntry, PricingError, cents, to_decimal
from revdaemon.domain.subscriptions import LineTerms, order_lines, price_entries, subscription_mrr, version_of
from revdaemon.flows import sources
from revdaemon.flows.base import FlowEvent, Found, Needs
from revdaemon.flows.common import (
    account_id_of,
    customer_id_of,
    is_activated,
    is_change_order,
    order_by_id,
    order_of_event,
)
from revdaemon.flows.plan import Plan, SfCreate

NAME = "amendments"
# order.updated comes from the Nue order poll (the safety net for a missed webhook); the flow re-reads
# the order and acts only on an activated change order either way.
EVENT_TYPES = frozenset({"order.activated", "order.updated"})
SOURCES = sources.FROM_NUE  # a notification or a poll of Nue's own records

UPDATE_QUANTITY = "UpdateQuantity"
CANCEL = "Cancel"
CONVERT_FREE_TRIAL = "ConvertFreeTrial"


@dataclass(frozen=True, kw_only=True)
class AmendmentMapping:
    account_object: str = "Account"
    note_title: str = "Nue amendment {order_number}"


@dataclass(frozen=True, kw_only=True)
class AssetDelta:
    """One changed subscription of a change order."""

    asset_number: str
    change_types: tuple[str, ...]
    before: Decimal
    after: Decimal

    @property
    def delta(self) -> Decimal:
        return self.after - self.before


class AmendmentsFlow:
    name = NAME
    event_types = EVENT_TYPES
    sources = SOURCES

    def __init__(self, mapping: AmendmentMapping | None = None) -> None:
        self.mapping = mapping or AmendmentMapping()
        self.salesforce_fields = {"Note": frozenset({"ParentId", "Title", "Body"})}

    def needs(self, event: FlowEvent, found: Found) -> Needs:
        customer_id = customer_id_of(event)
        if customer_id is None or event.resource_id is None:
            return Needs()
        needs = Needs(nue_orders_of=frozenset({customer_id}), nue_customers=frozenset({customer_id}))
        order = order_by_id(found.nue_orders.get(customer_id, []), event.resource_id)
        if order is None or not is_change_order(order):
            return needs  # not (yet) known to be a change order: nothing more to read for it
        needs |= Needs(nue_subscriptions_of=frozenset({customer_id}), catalog=True)
        account_id = account_id_of(found.nue_customers.get(customer_id))
        if account_id:
            needs |= Needs(sf_records=frozenset({(self.mapping.account_object, account_id)}),
                           sf_children=frozenset({("Note", "ParentId", account_id)}),
                           sf_fields=frozenset({("Note", "Title")}))
        return needs

    def plan(self, event: FlowEvent, found: Found) -> Plan:
        customer_id, order, missing = order_of_event(event, found)
        if order is None or customer_id is None:
            return Plan(skip_reason=missing)
        orders = found.nue_orders.get(customer_id, [])
        order_id = str(order.get("id"))
        if not is_change_order(order):
            return Plan(skip_reason=f"order {order.get('orderNumber')} is not a change order")
        if not is_activated(order):
            return Plan(skip_reason=f"change order {order.get('orderNumber')} is {order.get('status')}")
        customer = found.nue_customers.get(customer_id)
        account_id = account_id_of(customer)
        if customer is None or not account_id:
            return Plan(skip_reason=f"customer {customer_id} is not linked to a Salesforce account yet")
        if found.sf_records.get((self.mapping.account_object, account_id)) is None:
            return Plan(skip_reason=f"Salesforce has no account {account_id}")
        title = self.mapping.note_title.format(order_number=order.get("orderNumber") or order_id)
        notes = found.sf_children.get(("Note", "ParentId", account_id), [])
        if any(str(n.get("Title")).casefold() == title.casefold() for n in notes):  # as SOQL compares text
            return Plan(skip_reason=f"the account already has the note {title!r}")
        try:
            deltas = amendment_deltas(order, orders, found.nue_subscriptions.get(customer_id, []),
                                      price_entries(found.catalog), order_lines(orders))
        except (PricingError, LookupError) as exc:
            return Plan(skip_reason=f"cannot price change order {order.get('orderNumber')}: {exc}")
        if not deltas:
            return Plan(skip_reason=f"change order {order.get('orderNumber')} changes no subscription")
        fields = {"ParentId": account_id, "Title": title, "Body": note_body(order, deltas)}
        return Plan(writes=(SfCreate(sobject="Note", fields=fields, match={"ParentId": account_id, "Title": title},
                                     idem_key=f"{NAME}:note:{order_id}", seen_absent=True),))


# --- the MRR maths (pure, on Nue's records) ---------------------------------------------------------------


def amendment_deltas(order: Mapping[str, Any], orders: Sequence[Mapping[str, Any]],
                     subscriptions: Sequence[Mapping[str, Any]], entries: Mapping[str, PriceEntry],
                     lines: Mapping[str, LineTerms]) -> list[AssetDelta]:
    """MRR before and after `order` for each subscription it changed, in the order's own asset order.
    Raises LookupError for an asset the customer does not have, PricingError for one that cannot be priced."""
    by_name = {str(s.get("name")): s for s in subscriptions}
    later = [o for o in orders if is_change_order(o) and is_activated(o)
             and _activation(o) > _activation(order)]
    out: list[AssetDelta] = []
    for asset in dict.fromkeys(str(c.get("assetNumber")) for c in _changes(order)):
        subscription = by_name.get(asset)
        if subscription is None:
            raise LookupError(f"the customer has no subscription {asset}")
        own = [c for c in _changes(order) if str(c.get("assetNumber")) == asset]
        types = tuple(dict.fromkeys(str(c.get("changeType")) for c in own))
        quantity_after = to_decimal(subscription.get("quantity", 0), "quantity") - _quantity_delta(later, asset)
        quantity_before = quantity_after - _quantity_delta([order], asset)
        if quantity_before < 0 or quantity_after < 0:
            raise PricingError(f"{asset}: the change orders do not add up to its quantity")
        before = ZERO if CONVERT_FREE_TRIAL in types else _mrr(subscription, quantity_before, entries, lines)
        after = ZERO if CANCEL in types else _mrr(subscription, quantity_after, entries, lines)
        out.append(AssetDelta(asset_number=asset, change_types=types, before=before, after=after))
    return out


def note_body(order: Mapping[str, Any], deltas: Sequence[AssetDelta]) -> str:
    lines = [f"Nue change order {order.get('orderNumber')} activated {str(order.get('activatedDate') or '')[:10]}"
             .rstrip()]
    for d in deltas:
        lines += ["", f"Change type: {', '.join(d.change_types)}", f"Asset: {d.asset_number}",
                  f"MRR before: {money_text(d.before)}", f"MRR after: {money_text(d.after)}",
                  f"MRR delta: {money_text(d.delta, signed=True)}"]
    if len(deltas) > 1:
        before = sum((d.before for d in deltas), ZERO)
        after = sum((d.after for d in deltas), ZERO)
        lines += ["", f"Total MRR before: {money_text(before)}", f"Total MRR after: {money_text(after)}",
                  f"Total MRR delta: {money_text(after - before, signed=True)}"]
    return "\n".join(lines)


def money_text(value: Decimal, *, signed: bool = False) -> str:
    """Two places, half up; a delta carries its sign ("+200.00", "-80.00", "0.00")."""
    amount = cents(value)
    return f"{amount:+f}" if signed and amount != 0 else f"{amount:f}"


def _mrr(subscription: Mapping[str, Any], quantity: Decimal, entries: Mapping[str, PriceEntry],
         lines: Mapping[str, LineTerms]) -> Decimal:
    return subscription_mrr({**subscription, "quantity": quantity}, entries, lines)


def _changes(order: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    return [c for c in order.get("assetChanges") or [] if isinstance(c, Mapping) and c.get("assetNumber")]


def _quantity_delta(orders: Sequence[Mapping[str, Any]], asset: str) -> Decimal:
    return sum((to_decimal(c.get("quantity") or 0, "quantity delta") for o in orders for c in _changes(o)
                if str(c.get("assetNumber")) == asset and c.get("changeType") == UPDATE_QUANTITY), ZERO)


def _activation(order: Mapping[str, Any]) -> tuple[str, str]:
    """When an order took effect, for ordering change orders: activation time, then order number."""
    return (version_of(order.get("activatedDate")), str(order.get("orderNumber") or ""))


