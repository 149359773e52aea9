"""Flow 3 (architecture.md): a subscription nearing its end gets one renewal opportunity, ever.

Trigger:   renewal.due, stored by the daily scan (engine/renewal_scan.py) once per subscription term:
           key renewal:<subscription id>:<subscriptionEndDate>, so a second scan adds nothing. Only from
           the scan's source: a renewal.due a webhook sent (refused by the listener, or stored before it
           was) is ignored, or it would make an opportunity for any term, due or not.
Reads:     the Nue customer, its subscriptions and orders, the catalog (never the event's body: the
           subscription is read again); the Salesforce account (Name, OwnerId); the renewal opportunity
           already made for this term (by Nue_Renewal_Key__c) and its line items.
Steps:     1. no opportunity carries the renewal key -> upsert it by that key: Name "<Account> - Renewal
              <SUB>", Stage Prospecting, Type from the mapping, CloseDate = the end date, owner = the
              account owner, Amount = one renewal term of the current contract value (MRR with its order
              line's discount x renewalTerm, else subscriptionTerm, months), the subscription's number,
              Expansion_Signal__c, and the price book of its entry;
           2. the opportunity lacks its product line -> upsert the OpportunityLineItem by Nue_Line_Key__c
              = renewal:<subscription id>:<end date>:<price book entry id> (same entry id as Nue's in a
              connected tenant), Quantity = the subscription's quantity, UnitPrice = the line's value for
              the term / quantity, so Salesforce's Amount roll-up lands on the same contract value.
Key:       renewals:opportunity:<renewal key>, renewals:line:<line key>; the external ids make two runs
           or two daemons converge on one record, whichever writes first.
Ownership: the flow creates, it never edits: once the opportunity (or its line) exists, a rep's changes
           to stage, amount, products or owner stay. A rep's deleted line is not put back.
Expansion: True when the subscription was amended (subscriptionVersion > 1) and its quantity is now
           above the quantity of the order line that created it. Usage is not read (no usage source yet).
Skips:     the subscription is gone, no longer Active, or its end date moved (renewed or amended since
           the scan: that term needs no renewal); a bundle option priced inside its bundle; a customer
           not linked to an account. Conflicts: the subscription cannot be priced (unknown entry).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from typing import Any

from revdaemon.domain.money import ZERO, PricingError, cents, to_decimal
from revdaemon.domain.subscriptions import order_lines, price_entries, subscription_mrr
from revdaemon.flows import sources
from revdaemon.flows.base import FlowEvent, Found, Needs
from revdaemon.flows.common import account_id_of, account_link
from revdaemon.flows.plan import OpenConflict, Plan, SfUpsert, Write
from revdaemon.mapping.fields import FieldSpec, MappingError, render

NAME = "renewals"
EVENT_TYPES = frozenset({"renewal.due"})
SOURCES = frozenset({sources.SCHEDULE})  # the renewal scan decides which terms are due, never a notification

ACCOUNT_FIELDS = ("Name", "OwnerId")
OPPORTUNITY_FIELDS = ("Name", "AccountId", "Pricebook2Id")
LINE_FIELDS = ("PricebookEntryId", "Quantity", "UnitPrice")
DEFAULT_TERM_MONTHS = 12  # a subscription with neither renewalTerm nor subscriptionTerm renews for a year


@dataclass(frozen=True, kw_only=True)
class RenewalMapping:
    # Extra opportunity fields from config (mapping.flows.renewals); source record:
    # {"subscription": <Nue subscription>, "customer": <Nue customer>, "account": <Salesforce account>,
    #  "value": <the term's contract value>, "months": <renewal term>}.
    extra_fields: Mapping[str, FieldSpec] = field(default_factory=dict)
    lookups: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    renewal_key_field: str = "Nue_Renewal_Key__c"
    subscription_field: str = "Nue_Subscription__c"
    expansion_field: str = "Expansion_Signal__c"
    line_key_field: str = "Nue_Line_Key__c"
    stage: str = "Prospecting"
    # Opportunity.Type is a standard picklist whose values are the org's own; renewals are usually a value
    # the admin adds ("Renewal", as in the sandbox org). None leaves Type unset.
    opportunity_type: str | None = "Renewal"
    connected_to_salesforce: bool = True  # price book entry ids are shared; otherwise no product line


def renewal_key(subscription_id: str, end_date: str) -> str:
    return f"{subscription_id}:{end_date}"


def line_key(subscription_id: str, end_date: str, entry_id: str) -> str:
    return f"renewal:{subscription_id}:{end_date}:{entry_id}"


class RenewalFlow:
    name = NAME
    event_types = EVENT_TYPES
    sources = SOURCES

    def __init__(self, mapping: RenewalMapping | None = None) -> None:
        self.mapping = mapping or RenewalMapping()
        m = self.mapping
        # Set by this flow alone on the renewal opportunities it creates (the change stream knows its own echo by it).
        self.own_create_markers = frozenset({m.renewal_key_field})
        self.salesforce_fields = {
            "Account": frozenset(ACCOUNT_FIELDS),
            "Opportunity": frozenset((*OPPORTUNITY_FIELDS, m.renewal_key_field, m.subscription_field,
                                      m.expansion_field, "StageName", "CloseDate", "Amount", "OwnerId",
                                      *(("Type",) if m.opportunity_type else ()), *m.extra_fields)),
            "OpportunityLineItem": frozenset((*LINE_FIELDS, m.line_key_field, "OpportunityId")),
        }

    def needs(self, event: FlowEvent, found: Found) -> Needs:
        due = _due(event)
        if due is None:
            return Needs()
        subscription_id, customer_id, end = due
        m = self.mapping
        key = renewal_key(subscription_id, end)
        fields = frozenset(("Account", f) for f in ACCOUNT_FIELDS)
        fields |= frozenset(("Opportunity", f) for f in (*OPPORTUNITY_FIELDS, m.renewal_key_field))
        fields |= frozenset(("OpportunityLineItem", f) for f in (*LINE_FIELDS, m.line_key_field))
        needs = Needs(nue_customers=frozenset({customer_id}), nue_subscriptions_of=frozenset({customer_id}),
                      nue_orders_of=frozenset({customer_id}), catalog=True, sf_fields=fields,
                      sf_children=frozenset({("Opportunity", m.renewal_key_field, key)})) | account_link(customer_id)
        account_id = account_id_of(customer_id, found.nue_customers.get(customer_id), found)
        if account_id:
            needs = needs | Needs(sf_records=frozenset({("Account", account_id)}))
        opportunity = _first(found.sf_children.get(("Opportunity", m.renewal_key_field, key)))
        if opportunity is not None:
            needs = needs | Needs(sf_children=frozenset({("OpportunityLineItem", "OpportunityId",
                                                          str(opportunity["Id"]))}))
        return needs

    def plan(self, event: FlowEvent, found: Found) -> Plan:
        due = _due(event)
        if due is None:
            return Plan(skip_reason="the event names no subscription, customer and end date")
        subscription_id, customer_id, end = due
        m = self.mapping
        customer = found.nue_customers.get(customer_id)
        if customer is None:
            return Plan(skip_reason=f"Nue has no customer {customer_id}")
        subscriptions = found.nue_subscriptions.get(customer_id, [])
        subscription = next((s for s in subscriptions if str(s.get("id")) == subscription_id), None)
        if subscription is None:
            return Plan(skip_reason=f"Nue has no subscription {subscription_id}")
        if subscription.get("status") != "Active":
            return Plan(skip_reason=f"the subscription is {subscription.get('status')}, not Active")
        if str(subscription.get("subscriptionEndDate") or "")[:10] != end:
            return Plan(skip_reason=f"the subscription's end date moved from {end} (renewed or amended since "
                                    f"the scan)")
        account_id = account_id_of(customer_id, customer, found)
        if not account_id:
            return Plan(skip_reason=f"customer {customer_id} is not linked to a Salesforce account yet")
        account = found.sf_records.get(("Account", account_id))
        if account is None:
            return Plan(skip_reason=f"Salesforce has no account {account_id}")

        orders = found.nue_orders.get(customer_id, [])
        lines = order_lines(orders)
        if lines.get(str(subscription.get("orderProductId"))) is not None and \
                lines[str(subscription.get("orderProductId"))].included:
            return Plan(skip_reason="the subscription is a bundle option priced inside its bundle")
        try:
            entries = price_entries(found.catalog)
            months = _term_months(subscription)
            mrr = subscription_mrr(subscription, entries, lines)
        except PricingError as exc:
            return Plan(conflict=OpenConflict(flow=NAME, record_ref=f"nue:Subscription:{subscription_id}",
                                              reason=f"the subscription cannot be priced for its renewal: {exc}"))
        value = cents(mrr * months)
        entry_id = str(subscription.get("priceBookEntryId"))
        key = renewal_key(subscription_id, end)
        opportunity = _first(found.sf_children.get(("Opportunity", m.renewal_key_field, key)))
        wants_line = m.connected_to_salesforce and _quantity(subscription) > 0
        if opportunity is None:
            fields: dict[str, Any] = {
                "Name": f"{account.get('Name') or 'Account'} - Renewal {subscription.get('name')}",
                "AccountId": account_id,
                "StageName": m.stage,
                "CloseDate": end,
                "Amount": value,
                m.subscription_field: subscription.get("name"),
                m.expansion_field: _expanded(subscription, orders),
            }
            if account.get("OwnerId"):
                fields["OwnerId"] = account["OwnerId"]
            if m.opportunity_type:
                fields["Type"] = m.opportunity_type
            price_book = _price_book_of(found.catalog, entry_id)
            if wants_line and price_book:
                fields["Pricebook2Id"] = price_book
            if m.extra_fields:
                source = {"subscription": subscription, "customer": customer, "account": account, "value": value,
                          "months": months}
                try:
                    fields.update(render(m.extra_fields, source, m.lookups))
                except MappingError as exc:
                    return Plan(conflict=OpenConflict(flow=NAME, record_ref=f"nue:Subscription:{subscription_id}",
                                                      reason=f"a mapped field cannot be filled: {exc}"))
            return Plan(done=not wants_line, writes=(SfUpsert(
                sobject="Opportunity", external_id_field=m.renewal_key_field, external_id=key, fields=fields,
                idem_key=f"{NAME}:opportunity:{key}"),))
        if not wants_line:
            return Plan(skip_reason="the renewal opportunity exists")
        opportunity_id = str(opportunity["Id"])
        existing = found.sf_children.get(("OpportunityLineItem", "OpportunityId", opportunity_id), [])
        wanted_key = line_key(subscription_id, end, entry_id)
        if any(line.get(m.line_key_field) == wanted_key for line in existing):
            return Plan(skip_reason="the renewal opportunity exists with its product")
        quantity = _quantity(subscription)
        write: Write = SfUpsert(
            sobject="OpportunityLineItem", external_id_field=m.line_key_field, external_id=wanted_key,
            fields={"OpportunityId": opportunity_id, "PricebookEntryId": entry_id, "Quantity": quantity,
                    "UnitPrice": cents(value / quantity)},
            idem_key=f"{NAME}:line:{wanted_key}")
        return Plan(writes=(write,))


def _due(event: FlowEvent) -> tuple[str, str, str] | None:
    """(subscription id, customer id, end date) as the scan stored them; the state itself is re-read."""
    data = event.data
    subscription_id, customer_id = data.get("id"), data.get("customerId")
    end = str(data.get("subscriptionEndDate") or "")[:10]
    if not subscription_id or not customer_id or not end:
        return None
    try:
        date.fromisoformat(end)
    except ValueError:
        return None
    return str(subscription_id), str(customer_id), end



def _first(rows: Sequence[Mapping[str, Any]] | None) -> Mapping[str, Any] | None:
    return rows[0] if rows else None


def _quantity(subscription: Mapping[str, Any]) -> Decimal:
    return to_decimal(subscription.get("quantity") or 0, "quantity")


def _term_months(subscription: Mapping[str, Any]) -> Decimal:
    term = subscription.get("renewalTerm") or subscription.get("subscriptionTerm") or DEFAULT_TERM_MONTHS
    months = to_decimal(term, "renewalTerm")
    if months <= ZERO:
        raise PricingError(f"renewal term {term!r} is not positive")
    return months


def _expanded(subscription: Mapping[str, Any], orders: Sequence[Mapping[str, Any]]) -> bool:
    """Amended, and more units now than the order line that created the subscription."""
    if int(to_decimal(subscription.get("subscriptionVersion") or 1, "subscriptionVersion")) <= 1:
        return False
    original = _order_line(orders, str(subscription.get("orderProductId")))
    if original is None or original.get("quantity") is None:
        return False
    return _quantity(subscription) > to_decimal(original["quantity"], "quantity")


def _order_line(orders: Sequence[Mapping[str, Any]], line_id: str) -> Mapping[str, Any] | None:
    def walk(lines: Sequence[Mapping[str, Any]]) -> Mapping[str, Any] | None:
        for line in lines:
            if str(line.get("id")) == line_id:
                return line
            nested = walk(line.get("addOns") or [])
            if nested is not None:
                return nested
        return None

    for order in orders:
        found = walk(order.get("orderProducts") or [])
        if found is not None:
            return found
    return None


def _price_book_of(catalog: Sequence[Mapping[str, Any]], entry_id: str) -> str | None:
    for product in catalog:
        for entry in product.get("priceBookEntries") or []:
            if str(entry.get("id")) == entry_id and entry.get("priceBookId"):
                return str(entry["priceBookId"])
    return None
