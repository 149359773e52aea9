"""Flow 2 (architecture.md): Nue subscription status -> the Salesforce account.

Trigger:   subscription.created / subscription.updated (webhook or poll), order.activated, and renewals,
           which arrive as activated `Renew` change orders and so as subscription updates.
Reads:     the Nue customer and all its subscriptions (never the notification's body: it is a hint),
           the catalog's price book entries, then the Salesforce account the customer is linked to (its
           externalId, else the store's link flow 6 recorded, else salesAccountId).
Writes:    one update of the account: subscription status (through the mapping's lookup table), MRR,
           ARR and next renewal date; nothing when the account already shows those values. And, on each
           opportunity whose order made some of the customer's subscriptions (flow 1's link), the status, MRR
           and next renewal of those subscriptions alone (`on_opportunity`).
Key:       subscription_status:account:<Salesforce account id> (one write per account per state).
Conflicts: a field edited in Salesforce since revdaemon last wrote it (its value is neither the last synced
           one, nor one revdaemon wrote around the read (found.synced's `recent`), nor Nue's) opens a conflict
           showing the three values, unless `on_hand_edit` is "overwrite" or the event is a reconciliation
           repair (flagged `repair`, and from the repair source: a webhook's flag is not one). Otherwise Nue
           is the master of subscription state; an unlinked customer is skipped and logged.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from typing import Any

from revdaemon.connectors import nue_wire
from revdaemon.domain.money import PricingError
from revdaemon.domain.subscriptions import customer_state, order_lines, price_entries
from revdaemon.domain.synced import SyncedRecord
from revdaemon.flows import sources
from revdaemon.flows.base import FlowEvent, Found, Needs
from revdaemon.flows.common import account_id_of, account_link, awaiting_onboarding, same, was
from revdaemon.flows.plan import OpenConflict, Plan, SfUpdate
from revdaemon.mapping.fields import FieldSpec, MappingError, render

NAME = "subscription_status"
# customer.updated: Nue's own sync linking a customer to its account (externalId) makes the account's
# state writable at last; the notification names the customer itself.
EVENT_TYPES = frozenset({"subscription.created", "subscription.updated", "order.activated", "customer.updated"})
# A reconciliation repair (engine/reconcile.py) is a subscription.updated of this source, flagged `repair`:
# it writes over a hand edit, since an operator (or the nightly job they configured) asked for it. The flag
# counts only from this source: in a webhook body it is anyone's word.
REPAIR_SOURCE = sources.SCHEDULE
REPAIR_FLAG = "repair"
SOURCES = sources.FROM_NUE | {REPAIR_SOURCE}


@dataclass(frozen=True, kw_only=True)
class SubscriptionStatusMapping:
    account_object: str = "Account"
    status_field: str = "Subscription_Status__c"
    mrr_field: str = "MRR__c"
    arr_field: str = "ARR__c"
    next_renewal_field: str = "Next_Renewal_Date__c"
    # Nue status -> the account's picklist value (config: mapping.lookups.subscription_status).
    status_values: Mapping[str, str] = field(default_factory=lambda: {
        "Active": "Active", "Scheduled for cancellation": "Active", "Ended": "Churned", "Expired": "Churned",
        "Canceled": "Canceled"})
    # Extra account fields from config (mapping.flows.subscription_status); the source record is
    # {"customer": <Nue customer>, "status", "mrr", "arr", "next_renewal"}.
    extra_fields: Mapping[str, FieldSpec] = field(default_factory=dict)
    lookups: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    # The opportunity an order was made for (flow 1's marker) shows its subscriptions' status too.
    opportunity_status_field: str | None = "Subscription_Status__c"
    # Of the subscriptions the opportunity's order made: their MRR and next renewal (None: not written).
    opportunity_mrr_field: str | None = "MRR__c"
    opportunity_renewal_field: str | None = "Next_Renewal_Date__c"
    order_marker_field: str | None = None
    on_hand_edit: str = "conflict"  # or "overwrite"
    # Flow 6 makes a customer made in Nue its account (flows.onboarding.create_accounts): an order.activated
    # claim waits for it instead of skipping the customer's first state.
    wait_for_onboarding: bool = False

    @property
    def fields(self) -> tuple[str, ...]:
        return (self.status_field, self.mrr_field, self.arr_field, self.next_renewal_field, *self.extra_fields)

    @property
    def opportunity_fields(self) -> tuple[str, ...]:
        return tuple(name for name in (self.opportunity_status_field, self.opportunity_mrr_field,
                                       self.opportunity_renewal_field) if name)


class SubscriptionStatusFlow:
    name = NAME
    event_types = EVENT_TYPES
    sources = SOURCES

    def __init__(self, mapping: SubscriptionStatusMapping | None = None) -> None:
        self.mapping = mapping or SubscriptionStatusMapping()
        self.salesforce_fields: dict[str, frozenset[str]] = {
            self.mapping.account_object: frozenset(self.mapping.fields)}
        if self.mapping.opportunity_fields:
            self.salesforce_fields["Opportunity"] = frozenset(self.mapping.opportunity_fields)

    def needs(self, event: FlowEvent, found: Found) -> Needs:
        customer_id = _customer_id(event)
        if customer_id is None:
            return Needs()
        # The store's link with the customer: an account flow 6 made for a customer made in Nue is known by it
        # before Nue's own sync (if any) sets the customer's externalId.
        needs = Needs(nue_customers=frozenset({customer_id}), nue_subscriptions_of=frozenset({customer_id}),
                      nue_orders_of=frozenset({customer_id}), catalog=True) | account_link(customer_id)
        customer = found.nue_customers.get(customer_id)
        account_id = account_id_of(customer_id, customer, found)
        if account_id:
            account = (self.mapping.account_object, account_id)
            fields = frozenset((self.mapping.account_object, name) for name in self.mapping.fields)
            needs = needs | Needs(sf_records=frozenset({account}), sf_fields=fields)
            if self.mapping.on_hand_edit == "conflict":
                needs = needs | Needs(synced_of=frozenset({self._account_ref(account_id)}))
        if self.mapping.opportunity_fields and customer_id in found.nue_orders:
            opportunities = {o for o in self._opportunities(found, customer_id).values() if o}
            if opportunities:
                needs = needs | Needs(
                    sf_records=frozenset(("Opportunity", o) for o in opportunities),
                    sf_fields=frozenset(("Opportunity", name) for name in self.mapping.opportunity_fields))
        return needs

    def _opportunities(self, found: Found, customer_id: str) -> dict[str, str | None]:
        """Each order line id (a subscription's orderProductId) -> the opportunity its order was made for."""
        out: dict[str, str | None] = {}
        for order in found.nue_orders.get(customer_id, []):
            opportunity = nue_wire.opportunity_of_order(order, self.mapping.order_marker_field)
            for line_id in order_lines([order]):
                out[line_id] = opportunity
        return out

    def _opportunity_writes(self, found: Found, customer_id: str, version: str) -> list[SfUpdate]:
        """Each opportunity whose order made subscriptions: the state of those subscriptions alone."""
        m = self.mapping
        if not m.opportunity_fields:
            return []
        by_line = self._opportunities(found, customer_id)
        made: dict[str, list[Mapping[str, Any]]] = {}
        for subscription in found.nue_subscriptions.get(customer_id, []):
            opportunity = by_line.get(str(subscription.get("orderProductId")))
            if opportunity:
                made.setdefault(opportunity, []).append(subscription)
        entries = price_entries(found.catalog)
        lines = order_lines(found.nue_orders.get(customer_id, []))
        writes = []
        for opportunity, subscriptions in sorted(made.items()):
            record = found.sf_records.get(("Opportunity", opportunity))
            if record is None:
                continue
            try:
                state = customer_state(subscriptions, entries, lines)
            except PricingError:
                continue  # the account's own write says so; the opportunity keeps what it shows
            wanted: dict[str, Any] = {}
            if m.opportunity_status_field and state.status is not None:
                wanted[m.opportunity_status_field] = m.status_values.get(state.status)
            if m.opportunity_mrr_field:
                wanted[m.opportunity_mrr_field] = state.mrr
            if m.opportunity_renewal_field:
                wanted[m.opportunity_renewal_field] = state.next_renewal.isoformat() if state.next_renewal else None
            changed = {name: value for name, value in wanted.items()
                       if value is not None and not same(record.get(name), value)}
            if changed:
                writes.append(SfUpdate(sobject="Opportunity", record_id=opportunity, fields=changed,
                                       idem_key=f"{NAME}:opportunity:{opportunity}:{version}:{was(record, changed)}"))
        return writes

    def plan(self, event: FlowEvent, found: Found) -> Plan:
        customer_id = _customer_id(event)
        if customer_id is None:
            return Plan(skip_reason="the notification names no customer")
        customer = found.nue_customers.get(customer_id)
        if customer is None:
            return Plan(skip_reason=f"Nue has no customer {customer_id}")
        account_id = account_id_of(customer_id, customer, found)
        if not account_id:
            waiting = awaiting_onboarding(customer_id, found.nue_orders.get(customer_id, []))
            if self.mapping.wait_for_onboarding and waiting:
                return Plan(waiting=waiting)
            return Plan(skip_reason=f"customer {customer_id} is not linked to a Salesforce account yet")
        account = found.sf_records.get((self.mapping.account_object, str(account_id)))
        if account is None:
            return Plan(skip_reason=f"Salesforce has no account {account_id}")
        try:
            state = customer_state(found.nue_subscriptions.get(customer_id, []), price_entries(found.catalog),
                                   order_lines(found.nue_orders.get(customer_id, [])))
        except PricingError as exc:
            return Plan(skip_reason=f"cannot price customer {customer_id}: {exc}")
        wanted = self._fields(state.status, state.mrr, state.arr, state.next_renewal)
        if self.mapping.extra_fields:
            source = {"customer": customer, "status": state.status, "mrr": state.mrr, "arr": state.arr,
                      "next_renewal": state.next_renewal.isoformat() if state.next_renewal else None}
            try:
                wanted.update(render(self.mapping.extra_fields, source, self.mapping.lookups))
            except MappingError as exc:
                return Plan(conflict=OpenConflict(flow=NAME, record_ref=f"salesforce:Account:{account_id}",
                                                  reason=f"a mapped field cannot be filled: {exc}"))
        changed = {name: value for name, value in wanted.items() if not same(account.get(name), value)}
        if self.mapping.on_hand_edit == "conflict" and not is_repair(event):
            record = found.synced.get(self._account_ref(str(account_id)), SyncedRecord())
            synced = record.values
            # A person kept Salesforce's value against this very Nue value: leave it until Nue's changes.
            changed = {name: value for name, value in changed.items()
                       if name not in record.declined or not same(_as_wanted(record.declined[name], value), value)}
            # A value revdaemon wrote around the read (another worker's or replica's write racing it) is no edit.
            edited = sorted(name for name in changed if name in synced and not any(
                same(account.get(name), _as_wanted(ours, changed[name]))
                for ours in (synced[name], *record.recent.get(name, ()))))
            if edited:
                return Plan(conflict=OpenConflict(
                    flow=NAME, record_ref=self._account_ref(str(account_id)),
                    reason=f"edited in Salesforce since revdaemon last wrote {', '.join(edited)}; "
                           "take Nue to write Nue's value, or Salesforce to keep the edit",
                    nue_values={n: _shown(changed[n]) for n in edited},
                    salesforce_values={n: account.get(n) for n in edited},
                    synced_values={n: synced[n] for n in edited}))
        entity = f"nue:customer:{customer_id}"
        writes: list[SfUpdate] = self._opportunity_writes(found, customer_id, state.version)
        if changed:
            # The key names what is corrected as well as the state written: a hand edit of the account after
            # our last write (found by the reconciliation) gets a new key, so its repair is sent, not skipped.
            seen = was(account, changed)
            writes.insert(0, SfUpdate(sobject=self.mapping.account_object, record_id=str(account_id),
                                      fields=changed, idem_key=f"{NAME}:account:{account_id}:{state.version}:{seen}"))
        if not writes:
            return Plan(skip_reason="the account already shows this state", version=state.version, entity=entity)
        return Plan(writes=tuple(writes), version=state.version, entity=entity)

    def _account_ref(self, account_id: str) -> str:
        return f"salesforce:{self.mapping.account_object}:{account_id}"

    def _fields(self, status: str | None, mrr: Decimal, arr: Decimal, renewal: date | None) -> dict[str, Any]:
        m = self.mapping
        return {
            m.status_field: m.status_values.get(status) if status else None,
            m.mrr_field: mrr,
            m.arr_field: arr,
            m.next_renewal_field: renewal.isoformat() if renewal else None,
        }


def is_repair(event: FlowEvent) -> bool:
    """A reconciliation repair: the flag, from the one source that may set it."""
    return event.source == REPAIR_SOURCE and event.payload.get(REPAIR_FLAG) is True


def _as_wanted(synced: Any, wanted: Any) -> Any:
    """A last synced value (stored as JSON text for money) in the wanted value's type, to compare alike."""
    if isinstance(wanted, Decimal) and synced is not None:
        try:
            return Decimal(str(synced))
        except ArithmeticError:
            return synced
    return synced


def _shown(value: Any) -> Any:
    return str(value) if isinstance(value, Decimal) else value


def _customer_id(event: FlowEvent) -> str | None:
    data = event.data
    value = data.get("customerId") or (data.get("customer") or {}).get("id")
    if not value and event.type.startswith("customer."):
        value = data.get("id")
    return str(value) if value else None
