"""Flow 5 (architecture.md): an activated change order's net MRR delta, logged as a Note on the account, shown in
the pipeline as a Closed Won amendment opportunity, and carried to the Salesforce Contract of the original deal.

Trigger:   order.activated (webhook or poll; `data.id` is the order id, `data.customerId` its customer) for
           a change order: `orderType` "Change" [assumed], or an order carrying `assetChanges` [doc]. The
           subscription.updated notifications the same activation fires are flow 2's; they name no order.
Reads:     the customer's orders (this one re-read, with its assetChanges, and every later change order),
           its subscriptions, the catalog's price book entries and price tags, the Nue customer, then
           the Salesforce account (Name, OwnerId) and its Notes; with the opportunity switched on, the
           opportunities carrying this change order's id (`Nue_Amendment_Key__c`, `Nue_Order_Id__c`); with the
           contract switched on, the opportunities of the orders that made the changed subscriptions (flow 1's
           `Nue_Order_Id__c`) and their Contracts (`ContractId`).
Writes:    1. one Note on the account, Title "Nue amendment <order number>", whose Body gives per changed
              asset the change type, the asset number (SUB-...), MRR before, after and delta (two places),
              and the order's totals when it changed several assets. Created after a lookup by
              (ParentId, Title), and planned only when the account has no such Note.
           2. `flows.amendments.opportunity`: one amendment opportunity, upserted by `Nue_Amendment_Key__c` =
              the change order's id: StageName Closed Won, CloseDate the activation day, the account and its
              owner, Type from the `amendment_type` lookup table by kind (add_on, upsell, downsell,
              cancellation, renewal, no_change; a kind the table lacks gets no opportunity), Amount the ACV
              (MRR x 12) or MRR delta (`amount_basis`), signed, and `Nue_Order_Id__c` / `Nue_Order_Number__c` =
              the change order, which is how flow 1 knows the deal is ordered and never orders it again.
              Created once, never edited after (a rep's changes stay). Not made when another opportunity
              already carries the change order's id (Nue's quote-to-order amendment from a rep's deal).
           3. `flows.amendments.contract`: each Contract of an original deal whose subscriptions the order
              changed, where the org uses Contracts (the opportunity's ContractId): ContractTerm (months from
              its StartDate to the last subscription end; Salesforce derives EndDate from them) and `MRR__c`
              (the live MRR of that deal's subscriptions now), written only where they differ.
           The account's MRR field is NOT written here: flow 2 (subscription_status) handles the same
           order.activated and subscription.updated events and writes the account's MRR from Nue's state.
Key:       amendments:note:<order id>, amendments:opportunity:<order id> (one of each per change order, ever),
           amendments:contract:<contract id>:<order id>:<what it corrects>.
Conflicts: none. An order naming an asset the customer does not have is skipped with the reason.

MRR before and after (Decimal, never float; domain/money.py and domain/subscriptions.py):
  Both come from state in Nue, not from the daemon's memory and not from the account's MRR__c. Nue keeps
  one subscription record per asset (SUB-...) and raises its `subscriptionVersion`; the earlier version
  is not listed, but the change orders that produced each version are, with their deltas [doc: quantity
  and term are deltas]. So the subscription as this order left it is the current record with every LATER
  activated change order undone, and the subscription before it is that with this order's own changes
  undone. MRR is then `subscription_mrr` (quantity at the price book entry's price, price tags applied,
  per month, less the original order line's discount) at each quantity and entry. Per change type
  (nue-api.md, Change order):
    UpdateQuantity   quantity before = quantity after - delta [doc: a delta]
    UpdateTerm, CoTerm, Renew
                     quantity and price do not move: delta 0 (the Note still records the change)
    Cancel           MRR after = 0 (what the customer pays once the cancellation takes effect)
    ConvertFreeTrial MRR before = 0 (a free trial is not charged)
    Upgrade, Downgrade, Swap
                     the entry before is the previous move's target (or the original order line's entry), the
                     entry after is this change's `targetPriceBookEntryId` [assumed name]
    a new product    (the change order's `products` [doc]): MRR before = 0, after = its new subscription's
    Reconfigure, AdjustPrice, and any type not listed here
                     their effect is not on any record the API shows (bundle options priced inside the bundle,
                     a price that is no subscription field): the Note says so for that asset, and the order's
                     delta is Nue's own total, `orderACV` / 12 [assumed: a change order's orderACV is its net
                     annual change]; the same when a changed asset cannot be priced. Never a silent skip: with
                     no orderACV either, the Note says the delta is unknown and no opportunity is made.
  Why not the account's MRR__c as "before": flow 2 writes it on the very events that announce the change
  (subscription.updated may be processed before order.activated), so it may already show the "after"
  figure; and it is per account, not per subscription. Reconstructing from Nue gives the same Note
  whatever the delivery order, and on any replay.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from typing import Any, Literal

from revdaemon.connectors import nue_wire
from revdaemon.domain.money import ZERO, PriceEntry, PricingError, cents, to_decimal
from revdaemon.domain.subscriptions import (
    LineTerms,
    customer_state,
    order_lines,
    price_entries,
    subscription_mrr,
    version_of,
)
from revdaemon.flows import sources
from revdaemon.flows.base import FlowEvent, Found, Needs
from revdaemon.flows.common import (
    account_id_of,
    account_link,
    customer_id_of,
    is_activated,
    is_change_order,
    order_by_id,
    order_of_event,
    same,
    was,
)
from revdaemon.flows.plan import Plan, SfCreate, SfUpdate, SfUpsert, Write

NAME = "amendments"
# order.updated comes from the Nue order poll (the safety net for a missed webhook); the flow re-reads
# the order and acts only on an activated change order either way.
EVENT_TYPES = frozenset({"order.activated", "order.updated"})
SOURCES = sources.FROM_NUE  # a notification or a poll of Nue's own records

# Change types of POST /change-orders (nue-api.md, Change order): the first ten [doc], AdjustPrice [assumed].
UPDATE_QUANTITY = "UpdateQuantity"
UPDATE_TERM = "UpdateTerm"
RENEW = "Renew"
CO_TERM = "CoTerm"
CANCEL = "Cancel"
CONVERT_FREE_TRIAL = "ConvertFreeTrial"
UPGRADE = "Upgrade"
DOWNGRADE = "Downgrade"
SWAP = "Swap"
RECONFIGURE = "Reconfigure"
ADJUST_PRICE = "AdjustPrice"
PRODUCT_MOVES = frozenset({UPGRADE, DOWNGRADE, SWAP})
PRICED = frozenset({UPDATE_QUANTITY, UPDATE_TERM, RENEW, CO_TERM, CANCEL, CONVERT_FREE_TRIAL}) | PRODUCT_MOVES
NEW_PRODUCT = "New product"  # a line of the change order's `products` [doc], as the Note names it
TARGET_ENTRY_FIELD = "targetPriceBookEntryId"  # [assumed] the entry an Upgrade / Downgrade / Swap moves to
UNPRICED_WHY = {
    RECONFIGURE: "it changes the bundle's options, which are priced inside the bundle and on no record the "
                 "API shows",
    ADJUST_PRICE: "the subscription's price is no field of the subscription the API shows",
}
MONTHS_PER_YEAR = Decimal(12)

# What kind of amendment an order is; the keys of the `amendment_type` lookup table (Opportunity.Type values).
ADD_ON = "add_on"
UPSELL = "upsell"
DOWNSELL = "downsell"
CANCELLATION = "cancellation"
RENEWAL = "renewal"
NO_CHANGE = "no_change"
DEFAULT_TYPES = {ADD_ON: "Add-on", UPSELL: "Upsell", DOWNSELL: "Downsell", CANCELLATION: "Downsell"}

OPPORTUNITY_FIELDS = ("Name", "AccountId", "StageName", "CloseDate", "Amount", "Type", "OwnerId", "ContractId")
CONTRACT_FIELDS = ("StartDate", "ContractTerm")


@dataclass(frozen=True, kw_only=True)
class AmendmentMapping:
    account_object: str = "Account"
    note_title: str = "Nue amendment {order_number}"
    opportunity: bool = True  # flows.amendments.opportunity
    contract: bool = True  # flows.amendments.contract
    amount_basis: Literal["acv", "mrr"] = "acv"  # flows.amendments.amount_basis
    types: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_TYPES))  # mapping.lookups.amendment_type
    key_field: str = "Nue_Amendment_Key__c"
    order_id_field: str = "Nue_Order_Id__c"  # flow 1's: set, it means "ordered"
    order_number_field: str = "Nue_Order_Number__c"
    stage: str = "Closed Won"
    contract_mrr_field: str = "MRR__c"


@dataclass(frozen=True, kw_only=True)
class AssetDelta:
    """One changed subscription of a change order; before/after None: its effect cannot be priced (`why`)."""

    asset_number: str
    change_types: tuple[str, ...]
    before: Decimal | None
    after: Decimal | None
    why: str | None = None

    @property
    def known(self) -> bool:
        return self.before is not None and self.after is not None

    @property
    def delta(self) -> Decimal:
        if self.before is None or self.after is None:
            raise PricingError(f"{self.asset_number}: {self.why}")
        return self.after - self.before


@dataclass(frozen=True, kw_only=True)
class Amendment:
    """A change order's net effect: per asset, and in all (MRR a month; None when not known at all)."""

    deltas: tuple[AssetDelta, ...]
    mrr_delta: Decimal | None
    acv_delta: Decimal | None
    from_nue_totals: bool  # the totals are Nue's own (orderACV), not priced from the subscriptions
    kind: str | None  # ADD_ON, UPSELL, ...; None when the delta is unknown


class AmendmentsFlow:
    name = NAME
    event_types = EVENT_TYPES
    sources = SOURCES

    def __init__(self, mapping: AmendmentMapping | None = None) -> None:
        self.mapping = mapping or AmendmentMapping()
        m = self.mapping
        # Set by this flow alone on the opportunities it creates (the change stream knows its own echo by it).
        self.own_create_markers = frozenset({m.key_field}) if m.opportunity else frozenset()
        fields: dict[str, frozenset[str]] = {"Note": frozenset({"ParentId", "Title", "Body"})}
        if m.opportunity:
            fields["Opportunity"] = frozenset((*OPPORTUNITY_FIELDS, m.key_field, m.order_id_field,
                                               m.order_number_field))
            fields[m.account_object] = frozenset({"Name", "OwnerId"})
        if m.contract:
            fields["Opportunity"] = fields.get("Opportunity", frozenset()) | {m.order_id_field, "ContractId"}
            fields["Contract"] = frozenset((*CONTRACT_FIELDS, m.contract_mrr_field))
        self.salesforce_fields = fields

    def needs(self, event: FlowEvent, found: Found) -> Needs:
        customer_id = customer_id_of(event)
        if customer_id is None or event.resource_id is None:
            return Needs()
        m = self.mapping
        needs = Needs(nue_orders_of=frozenset({customer_id}), nue_customers=frozenset({customer_id})) \
            | account_link(customer_id)
        orders = found.nue_orders.get(customer_id, [])
        order = order_by_id(orders, event.resource_id)
        if order is None or not is_change_order(order):
            return needs  # not (yet) known to be a change order: nothing more to read for it
        needs |= Needs(nue_subscriptions_of=frozenset({customer_id}), catalog=True)
        account_id = account_id_of(customer_id, found.nue_customers.get(customer_id), found)
        if account_id:
            needs |= Needs(sf_records=frozenset({(m.account_object, account_id)}),
                           sf_children=frozenset({("Note", "ParentId", account_id)}),
                           sf_fields=frozenset({("Note", "Title")}))
        if m.opportunity:
            order_id = str(order.get("id"))
            needs |= Needs(sf_children=frozenset({("Opportunity", m.key_field, order_id),
                                                  ("Opportunity", m.order_id_field, order_id)}),
                           sf_fields=frozenset({("Opportunity", m.key_field), ("Opportunity", m.order_id_field),
                                                (m.account_object, "Name"), (m.account_object, "OwnerId")}))
        if m.contract and customer_id in found.nue_subscriptions:
            originals = _original_orders(order, orders, found.nue_subscriptions[customer_id])
            needs |= Needs(sf_children=frozenset(("Opportunity", m.order_id_field, o) for o in originals),
                           sf_fields=frozenset({("Opportunity", m.order_id_field), ("Opportunity", "ContractId"),
                                                *(("Contract", f) for f in (*CONTRACT_FIELDS, m.contract_mrr_field))}))
            for original in originals:
                for opportunity in found.sf_children.get(("Opportunity", m.order_id_field, original), []):
                    if opportunity.get("ContractId"):
                        needs |= Needs(sf_records=frozenset({("Contract", str(opportunity["ContractId"]))}))
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
        account_id = account_id_of(customer_id, customer, found)
        if customer is None or not account_id:
            return Plan(skip_reason=f"customer {customer_id} is not linked to a Salesforce account yet")
        account = found.sf_records.get((self.mapping.account_object, account_id))
        if account is None:
            return Plan(skip_reason=f"Salesforce has no account {account_id}")
        subscriptions = found.nue_subscriptions.get(customer_id, [])
        entries = price_entries(found.catalog)
        lines = order_lines(orders)
        try:
            amendment = amend(order, orders, subscriptions, entries, lines)
        except LookupError as exc:
            return Plan(skip_reason=f"cannot price change order {order.get('orderNumber')}: {exc}")
        if not amendment.deltas:
            return Plan(skip_reason=f"change order {order.get('orderNumber')} changes no subscription")
        writes: list[Write] = []
        skipped: list[str] = []
        title = self.mapping.note_title.format(order_number=order.get("orderNumber") or order_id)
        notes = found.sf_children.get(("Note", "ParentId", account_id), [])
        if any(str(n.get("Title")).casefold() == title.casefold() for n in notes):  # as SOQL compares text
            skipped.append(f"the account already has the note {title!r}")
        else:
            fields = {"ParentId": account_id, "Title": title, "Body": note_body(order, amendment)}
            writes.append(SfCreate(sobject="Note", fields=fields, match={"ParentId": account_id, "Title": title},
                                   idem_key=f"{NAME}:note:{order_id}", seen_absent=True))
        if self.mapping.opportunity:
            write, why = self._opportunity(order, amendment, account_id, account, found)
            writes += [write] if write else []
            skipped += [why] if why else []
        if self.mapping.contract:
            writes += self._contracts(order, orders, subscriptions, entries, lines, found)
        if not writes:
            return Plan(skip_reason="; ".join(skipped) or "nothing to write")
        return Plan(writes=tuple(writes))

    def _opportunity(self, order: Mapping[str, Any], amendment: Amendment, account_id: str,
                     account: Mapping[str, Any], found: Found) -> tuple[Write | None, str | None]:
        """The amendment opportunity to upsert, or why there is none."""
        m = self.mapping
        order_id = str(order.get("id"))
        number = str(order.get("orderNumber") or order_id)
        if found.sf_children.get(("Opportunity", m.key_field, order_id)):
            return None, f"the amendment opportunity of {number} exists"
        other = found.sf_children.get(("Opportunity", m.order_id_field, order_id)) or []
        if other:
            return None, f"opportunity {other[0].get('Id')} already shows change order {number}"
        # A rep's own deal made this change order (Nue's quote-to-order flow): flow 1 links that opportunity when its
        # poll sees it won, so an opportunity of flow 5's would count the change twice in the pipeline.
        made_from = nue_wire.opportunity_of_order(order, None) or next(
            (str(order[f]) for f in (*nue_wire.ASSUMED_ORDER_OPPORTUNITY_FIELDS, *nue_wire.ASSUMED_ORDER_QUOTE_FIELDS)
             if order.get(f)), None)
        if made_from:
            return None, f"change order {number} was made from a deal in Salesforce ({made_from}): that deal shows it"
        if amendment.kind is None:
            return None, f"no amendment opportunity for {number}: its MRR delta is not known"
        opportunity_type = m.types.get(amendment.kind)
        if not opportunity_type:
            return None, f"no amendment opportunity for {number}: the amendment_type table has no {amendment.kind}"
        amount = amendment.acv_delta if m.amount_basis == "acv" else amendment.mrr_delta
        assert amount is not None  # a kind is given only with a known delta
        fields: dict[str, Any] = {
            "Name": f"{account.get('Name') or 'Account'} - {opportunity_type} {number}",
            "AccountId": account_id,
            "StageName": m.stage,
            "CloseDate": _activation_day(order),
            "Amount": cents(amount),
            "Type": opportunity_type,
            m.order_id_field: order_id,
            m.order_number_field: number,
        }
        if account.get("OwnerId"):
            fields["OwnerId"] = account["OwnerId"]
        return SfUpsert(sobject="Opportunity", external_id_field=m.key_field, external_id=order_id, fields=fields,
                        idem_key=f"{NAME}:opportunity:{order_id}"), None

    def _contracts(self, order: Mapping[str, Any], orders: Sequence[Mapping[str, Any]],
                   subscriptions: Sequence[Mapping[str, Any]], entries: Mapping[str, PriceEntry],
                   lines: Mapping[str, LineTerms], found: Found) -> list[Write]:
        """Each Contract of an original deal the order changed, brought to Nue's state now (term and MRR)."""
        m = self.mapping
        writes: list[Write] = []
        seen: set[str] = set()
        for original in _original_orders(order, orders, subscriptions):
            for opportunity in found.sf_children.get(("Opportunity", m.order_id_field, original), []):
                contract_id = str(opportunity.get("ContractId") or "")
                contract = found.sf_records.get(("Contract", contract_id)) if contract_id else None
                if contract is None or contract_id in seen:
                    continue  # the org does not use Contracts for this deal
                seen.add(contract_id)
                covered = _deal_subscriptions(original, orders, subscriptions)
                try:
                    wanted: dict[str, Any] = {m.contract_mrr_field: customer_state(covered, entries, lines).mrr}
                except PricingError:
                    wanted = {}
                term = _contract_term(contract.get("StartDate"), covered)
                if term is not None:
                    wanted["ContractTerm"] = term
                changed = {k: v for k, v in wanted.items() if not same(contract.get(k), v)}
                if changed:
                    writes.append(SfUpdate(sobject="Contract", record_id=contract_id, fields=changed,
                                           idem_key=f"{NAME}:contract:{contract_id}:{order.get('id')}:"
                                                    f"{was(contract, changed)}"))
        return writes


# --- the MRR maths (pure, on Nue's records) ---------------------------------------------------------------


def amend(order: Mapping[str, Any], orders: Sequence[Mapping[str, Any]], subscriptions: Sequence[Mapping[str, Any]],
          entries: Mapping[str, PriceEntry], lines: Mapping[str, LineTerms]) -> Amendment:
    """The order's deltas, its net MRR and ACV change and its kind. Raises LookupError for an asset the customer
    does not have."""
    deltas = tuple(amendment_deltas(order, orders, subscriptions, entries, lines))
    mrr: Decimal | None
    acv: Decimal | None
    if all(d.known for d in deltas):
        mrr = sum((d.delta for d in deltas), ZERO)
        acv = mrr * MONTHS_PER_YEAR
        from_totals = False
    else:
        acv = _order_acv(order)
        mrr = None if acv is None else cents(acv / MONTHS_PER_YEAR)
        from_totals = True
    return Amendment(deltas=deltas, mrr_delta=mrr, acv_delta=acv, from_nue_totals=from_totals,
                     kind=None if mrr is None else amendment_kind(deltas, mrr))


def amendment_kind(deltas: Sequence[AssetDelta], mrr_delta: Decimal) -> str:
    types = {t for d in deltas for t in d.change_types}
    if mrr_delta > 0:
        return ADD_ON if NEW_PRODUCT in types else UPSELL
    if mrr_delta < 0:
        return CANCELLATION if types == {CANCEL} else DOWNSELL
    return RENEWAL if RENEW in types else NO_CHANGE


def amendment_deltas(order: Mapping[str, Any], orders: Sequence[Mapping[str, Any]],
                     subscriptions: Sequence[Mapping[str, Any]], entries: Mapping[str, PriceEntry],
                     lines: Mapping[str, LineTerms]) -> list[AssetDelta]:
    """MRR before and after `order` for each subscription it changed, in the order's own asset order, then each
    subscription its `products` made. Raises LookupError for an asset the customer does not have; an asset that
    cannot be priced comes back with before/after None and the reason."""
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
        unpriced = [t for t in types if t not in PRICED]
        if unpriced:
            why = "; ".join(f"{t}: {UNPRICED_WHY.get(t, 'a change type revdaemon cannot price')}" for t in unpriced)
            out.append(AssetDelta(asset_number=asset, change_types=types, before=None, after=None, why=why))
            continue
        try:
            quantity_after = to_decimal(subscription.get("quantity", 0), "quantity") - _quantity_delta(later, asset)
            quantity_before = quantity_after - _quantity_delta([order], asset)
            if quantity_before < 0 or quantity_after < 0:
                raise PricingError(f"{asset}: the change orders do not add up to its quantity")
            entry_before, entry_after = _entries_around(order, orders, subscription, asset)
            before = ZERO if CONVERT_FREE_TRIAL in types else _mrr(subscription, quantity_before, entry_before,
                                                                   entries, lines)
            after = ZERO if CANCEL in types else _mrr(subscription, quantity_after, entry_after, entries, lines)
        except PricingError as exc:
            out.append(AssetDelta(asset_number=asset, change_types=types, before=None, after=None, why=str(exc)))
            continue
        out.append(AssetDelta(asset_number=asset, change_types=types, before=before, after=after))
    added = _line_ids(order.get("orderProducts") or [])
    for subscription in subscriptions:
        if str(subscription.get("orderProductId")) not in added:
            continue
        asset = str(subscription.get("name"))
        try:
            quantity = to_decimal(subscription.get("quantity", 0), "quantity") - _quantity_delta(later, asset)
            entry_after = _entries_around(order, orders, subscription, asset)[1]
            after = _mrr(subscription, quantity, entry_after, entries, lines)
        except PricingError as exc:
            out.append(AssetDelta(asset_number=asset, change_types=(NEW_PRODUCT,), before=ZERO, after=None,
                                  why=str(exc)))
            continue
        out.append(AssetDelta(asset_number=asset, change_types=(NEW_PRODUCT,), before=ZERO, after=after))
    return out


def note_body(order: Mapping[str, Any], amendment: Amendment) -> str:
    deltas = amendment.deltas
    lines = [f"Nue change order {order.get('orderNumber')} activated {str(order.get('activatedDate') or '')[:10]}"
             .rstrip()]
    for d in deltas:
        lines += ["", f"Change type: {', '.join(d.change_types)}", f"Asset: {d.asset_number}"]
        if d.known:
            assert d.before is not None and d.after is not None
            lines += [f"MRR before: {money_text(d.before)}", f"MRR after: {money_text(d.after)}",
                      f"MRR delta: {money_text(d.delta, signed=True)}"]
        else:
            lines += [f"MRR delta: not known from Nue's API ({d.why})"]
    if amendment.from_nue_totals:
        if amendment.mrr_delta is None:
            lines += ["", "Total MRR delta: unknown (Nue shows no orderACV for this order either)"]
        else:
            lines += ["", f"Total MRR delta: {money_text(amendment.mrr_delta, signed=True)} (Nue's own total for "
                          f"the order: orderACV {money_text(amendment.acv_delta or ZERO, signed=True)} / 12)"]
    elif len(deltas) > 1:
        before = sum((d.before or ZERO for d in deltas), ZERO)
        after = sum((d.after or ZERO for d in deltas), ZERO)
        lines += ["", f"Total MRR before: {money_text(before)}", f"Total MRR after: {money_text(after)}",
                  f"Total MRR delta: {money_text(after - before, signed=True)}"]
    return "\n".join(lines)


def money_text(value: Decimal, *, signed: bool = False) -> str:
    """Two places, half up; a delta carries its sign ("+200.00", "-80.00", "0.00")."""
    amount = cents(value)
    return f"{amount:+f}" if signed and amount != 0 else f"{amount:f}"


def _mrr(subscription: Mapping[str, Any], quantity: Decimal, entry_id: str, entries: Mapping[str, PriceEntry],
         lines: Mapping[str, LineTerms]) -> Decimal:
    return subscription_mrr({**subscription, "quantity": quantity, "priceBookEntryId": entry_id}, entries, lines)


def _changes(order: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    return [c for c in order.get("assetChanges") or [] if isinstance(c, Mapping) and c.get("assetNumber")]


def _quantity_delta(orders: Sequence[Mapping[str, Any]], asset: str) -> Decimal:
    return sum((to_decimal(c.get("quantity") or 0, "quantity delta") for o in orders for c in _changes(o)
                if str(c.get("assetNumber")) == asset and c.get("changeType") == UPDATE_QUANTITY), ZERO)


def _entries_around(order: Mapping[str, Any], orders: Sequence[Mapping[str, Any]], subscription: Mapping[str, Any],
                    asset: str) -> tuple[str, str]:
    """The price book entry of the subscription before and after `order`: the last product move's target up to
    then, else the entry of the order line that made it (the current entry when no move was ever made)."""
    moves: list[tuple[tuple[str, str], str]] = []
    for o in orders:
        if not (is_change_order(o) and is_activated(o)) and o is not order:
            continue
        for c in _changes(o):
            if str(c.get("assetNumber")) == asset and c.get("changeType") in PRODUCT_MOVES:
                target = c.get(TARGET_ENTRY_FIELD)
                if not target:
                    raise PricingError(f"{asset}: the {c.get('changeType')} names no {TARGET_ENTRY_FIELD}")
                moves.append((_activation(o), str(target)))
    if not moves:
        current = str(subscription.get("priceBookEntryId"))
        return current, current
    moves.sort(key=lambda m: m[0])
    original = _line_entry(orders, str(subscription.get("orderProductId")))
    if original is None:
        raise PricingError(f"{asset}: the order line that made it is not among the customer's orders")
    at = _activation(order)
    before = [t for when, t in moves if when < at]
    upto = [t for when, t in moves if when <= at]
    return (before[-1] if before else original), (upto[-1] if upto else original)


def _line_entry(orders: Sequence[Mapping[str, Any]], line_id: str) -> str | None:
    def walk(items: Sequence[Mapping[str, Any]]) -> str | None:
        for line in items:
            if str(line.get("id")) == line_id:
                return str(line.get("priceBookEntryId"))
            nested = walk(line.get("addOns") or [])
            if nested is not None:
                return nested
        return None

    for o in orders:
        found = walk(o.get("orderProducts") or [])
        if found is not None:
            return found
    return None


def _line_ids(items: Sequence[Mapping[str, Any]]) -> set[str]:
    out: set[str] = set()
    for line in items:
        out.add(str(line.get("id")))
        out |= _line_ids(line.get("addOns") or [])
    return out


def _order_acv(order: Mapping[str, Any]) -> Decimal | None:
    value = order.get("orderACV")
    if value is None:
        return None
    try:
        return to_decimal(value, "orderACV")
    except PricingError:
        return None


def _activation(order: Mapping[str, Any]) -> tuple[str, str]:
    """When an order took effect, for ordering change orders: activation time, then order number."""
    return (version_of(order.get("activatedDate")), str(order.get("orderNumber") or ""))


def _activation_day(order: Mapping[str, Any]) -> str:
    return str(order.get("activatedDate") or order.get("orderPlacedDate") or order.get("effectiveDate") or "")[:10]


# --- the contract of the original deal --------------------------------------------------------------------


def _original_orders(order: Mapping[str, Any], orders: Sequence[Mapping[str, Any]],
                     subscriptions: Sequence[Mapping[str, Any]]) -> list[str]:
    """The ids of the orders (not change orders) whose lines made the subscriptions `order` changed."""
    by_name = {str(s.get("name")): s for s in subscriptions}
    wanted = {str(by_name[a].get("orderProductId")) for a in (str(c.get("assetNumber")) for c in _changes(order))
              if a in by_name}
    return [str(o.get("id")) for o in orders if not is_change_order(o)
            and wanted & _line_ids(o.get("orderProducts") or [])]


def _deal_subscriptions(original_id: str, orders: Sequence[Mapping[str, Any]],
                        subscriptions: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The subscriptions of one deal: those its order made, and those made by change orders that amended them."""
    original = order_by_id(orders, original_id)
    line_ids = _line_ids(original.get("orderProducts") or []) if original else set()
    names = {str(s.get("name")) for s in subscriptions if str(s.get("orderProductId")) in line_ids}
    for o in orders:
        if is_change_order(o) and is_activated(o) and names & {str(c.get("assetNumber")) for c in _changes(o)}:
            line_ids |= _line_ids(o.get("orderProducts") or [])
    return [s for s in subscriptions if str(s.get("orderProductId")) in line_ids]


def _contract_term(start_text: Any, covered: Sequence[Mapping[str, Any]]) -> int | None:
    """Whole months from the contract's start to the last subscription end (rounded up, so the contract covers
    it); None when either is unknown. Salesforce derives EndDate from StartDate and ContractTerm."""
    try:
        start = date.fromisoformat(str(start_text or "")[:10])
        ends = [date.fromisoformat(str(s["subscriptionEndDate"])[:10]) for s in covered
                if s.get("subscriptionEndDate")]
    except ValueError:
        return None
    if not ends:
        return None
    end = max(ends)
    months = (end.year - start.year) * 12 + (end.month - start.month)
    if end.day > start.day:
        months += 1
    return max(1, months)
