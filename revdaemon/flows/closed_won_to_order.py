"""Flow 1 (architecture.md): a Closed Won opportunity becomes one Nue order, ever.

Trigger:   opportunity.closed_won (the Salesforce poll on IsWon and SystemModstamp, the daily sweep of won
           deals without an order, or `revdaemon backfill --flow closed_won`); only from those sources,
           never from a Nue webhook.
Reads:     the opportunity, its line items and its account (Salesforce); the Nue customer by the
           account id, that customer's orders, the opportunity's Nue quotes, and the catalog (Nue); the
           store's go-live date.
Cut-off:   a deal won (CloseDate) before `won_since` (default: the day the store was created) is history a
           real tenant already ordered some other way: it is never ordered, unless the event comes from a
           backfill, which carries its own cut-off (the day the operator gave).
Existing:  an order of the opportunity's customer belongs to the deal by any of the links the two systems
           keep (nue_wire.order_link): revdaemon's marker; the order id the opportunity already shows
           (`Nue_Order_Id__c` set means ordered, even when the order cannot be found); the opportunity id
           on the order [assumed]; or a quote of the opportunity (its `opportunityId`) named by the order
           [assumed: Nue's quote-to-order flow]. Found by any link, the deal is ordered: linked and written
           back, never ordered again; only revdaemon's own draft (the marker) is activated. An amendment
           opportunity flow 5 made is won with `Nue_Order_Id__c` = its change order: ordered, never again.
Steps:     each plan does the next missing step, and the worker reads again before the following one:
           1. no Nue customer for the account  -> create it (the executor looks it up first);
           2. no order linked to this opportunity -> create the draft order;
           3. revdaemon's order is a draft and `activate` is on -> activate it;
           4. the opportunity does not show the order id and number -> write them back.
Key:       closed_won:<step>:<opportunity id> (one customer, one order, one activation per deal); the
           write-back's also carries what it corrects (flows.common.was), so a blanked order id is written again.
Conflicts: the opportunity's products or quantities differ from the order that exists (edited after
           the win), or its only order was canceled: a person decides; nothing is overwritten.
Echo:      the write-back moves the opportunity's SystemModstamp, so the poll sees it again; every step
           is then already done and the plan is empty.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Any

from revdaemon.connectors import nue_wire
from revdaemon.domain.money import PricingError, to_decimal
from revdaemon.flows import sources
from revdaemon.flows.base import FlowEvent, Found, Needs
from revdaemon.flows.common import is_change_order, was
from revdaemon.flows.plan import NueActivateOrder, NueCreateCustomer, NueCreateOrder, OpenConflict, Plan, SfUpdate

NAME = "closed_won_to_order"
EVENT_TYPES = frozenset({"opportunity.closed_won"})
SOURCES = sources.FROM_SALESFORCE  # a deal is won in Salesforce: never on Nue's word

# CurrencyIsoCode is left out: it exists only in multicurrency orgs (INVALID_FIELD elsewhere).
OPPORTUNITY_FIELDS = ("Name", "AccountId", "StageName", "IsWon", "CloseDate")
LINE_FIELDS = ("PricebookEntryId", "Product2Id", "ProductCode", "Quantity", "UnitPrice", "Discount")
ACCOUNT_FIELDS = ("Name", "Phone", "Website", "BillingCity", "BillingCountry")

BACKFILL_SOURCE = sources.BACKFILL  # only `revdaemon backfill --flow closed_won` stores events from this source
WON_SINCE = "won_since"  # a backfill event's payload key: its own cut-off, the day the operator gave
# Links by strength: a deal with several linked orders is reported by the strongest (revdaemon's own first).

# What `assess` finds, for a backfill's dry run.
ORDERED = "ordered"
BEFORE_CUT_OFF = "before cut-off"
TO_ORDER = "would be ordered"
NEEDS_PERSON = "needs a person"
NOT_APPLICABLE = "not applicable"


@dataclass(frozen=True, kw_only=True)
class ClosedWonMapping:
    activate: bool = True
    term_months: int = 12
    order_id_field: str = "Nue_Order_Id__c"
    order_number_field: str = "Nue_Order_Number__c"
    marker_field: str | None = None  # a custom order field for the opportunity id; None: the description
    connected_to_salesforce: bool = True  # price book entry ids are shared; otherwise map by SKU
    won_since: date | None = None  # the go-live cut-off; None: the day the store was created (Found.go_live)


@dataclass(frozen=True, kw_only=True)
class Assessment:
    """Where one deal stands: the verdict (ORDERED, BEFORE_CUT_OFF, TO_ORDER, ...) and why, in words."""

    verdict: str
    reason: str
    order: Mapping[str, Any] | None = None
    link: str | None = None


class ClosedWonToOrderFlow:
    name = NAME
    event_types = EVENT_TYPES
    sources = SOURCES

    def __init__(self, mapping: ClosedWonMapping | None = None) -> None:
        self.mapping = mapping or ClosedWonMapping()
        m = self.mapping
        self.salesforce_fields = {
            "Opportunity": frozenset((*OPPORTUNITY_FIELDS, m.order_id_field, m.order_number_field)),
            "OpportunityLineItem": frozenset((*LINE_FIELDS, "OpportunityId")),
            "Account": frozenset(ACCOUNT_FIELDS),
        }

    def needs(self, event: FlowEvent, found: Found) -> Needs:
        opportunity_id = event.resource_id
        if opportunity_id is None:
            return Needs()
        m = self.mapping
        fields = frozenset(("Opportunity", f) for f in (*OPPORTUNITY_FIELDS, m.order_id_field, m.order_number_field))
        fields |= frozenset(("OpportunityLineItem", f) for f in LINE_FIELDS)
        fields |= frozenset(("Account", f) for f in ACCOUNT_FIELDS)
        needs = Needs(sf_records=frozenset({("Opportunity", opportunity_id)}), sf_fields=fields,
                      go_live=self._event_cut_off(event) is None and m.won_since is None)
        opportunity = found.sf_records.get(("Opportunity", opportunity_id))
        # A change event names any opportunity whose stage moved: one not won costs its one read, nothing more.
        if not opportunity or not opportunity.get("IsWon"):
            return needs
        needs = needs | Needs(sf_children=frozenset({("OpportunityLineItem", "OpportunityId", opportunity_id)}),
                              catalog=True)
        if self._before_cut_off(event, opportunity, found):
            return needs  # old history: nothing in Nue is read for it
        account_id = opportunity.get("AccountId") if opportunity else None
        if account_id:
            needs = needs | Needs(sf_records=frozenset({("Account", str(account_id))}),
                                  nue_customers=frozenset({str(account_id)}))
            customer = found.nue_customers.get(str(account_id))
            if customer:
                needs = needs | Needs(nue_orders_of=frozenset({str(customer["id"])}),
                                      nue_quotes_of=frozenset({opportunity_id}))
        return needs

    def assess(self, event: FlowEvent, found: Found) -> Assessment:
        """Whether the deal is ordered already (and by which link), out of scope, or would be ordered."""
        opportunity_id = event.resource_id
        if opportunity_id is None:
            return Assessment(verdict=NOT_APPLICABLE, reason="the event names no opportunity")
        opportunity = found.sf_records.get(("Opportunity", opportunity_id))
        if opportunity is None:
            return Assessment(verdict=NOT_APPLICABLE, reason=f"Salesforce has no opportunity {opportunity_id}")
        if not opportunity.get("IsWon"):
            return Assessment(verdict=NOT_APPLICABLE, reason="the opportunity is no longer Closed Won")
        if self._before_cut_off(event, opportunity, found):
            return Assessment(verdict=BEFORE_CUT_OFF, reason=(
                f"won on {_close_date(opportunity)}, before the go-live cut-off {self._cut_off(event, found)}; "
                "only `revdaemon backfill --flow closed_won --since DATE` orders it"))
        account_id = opportunity.get("AccountId")
        if not account_id:
            return Assessment(verdict=NOT_APPLICABLE, reason="the opportunity has no account")
        shown = opportunity.get(self.mapping.order_id_field)
        customer = found.nue_customers.get(str(account_id))
        if customer is None:
            if shown:
                return Assessment(verdict=ORDERED, link=nue_wire.LINK_ORDER_ID, reason=(
                    f"ordered: the opportunity shows Nue order {shown} (its account is no Nue customer yet)"))
            return Assessment(verdict=TO_ORDER, reason="no Nue customer and no order yet: both would be created")
        orders = found.nue_orders.get(str(customer["id"]), [])
        quote_ids = nue_wire.quote_ids_of(found.nue_quotes_of.get(opportunity_id, []), opportunity_id)
        linked = nue_wire.linked_orders(orders, opportunity_id, marker_field=self.mapping.marker_field,
                                        quote_ids=quote_ids, order_id=str(shown) if shown else None)
        live = [(order, link) for order, link in linked if str(order.get("status", "")).lower() != "canceled"]
        if live:
            order, link = live[0]
            if link == nue_wire.LINK_ORDER_ID and is_change_order(order):
                return Assessment(verdict=ORDERED, order=order, link=link, reason=(
                    f"an amendment opportunity of Nue change order {order.get('orderNumber') or order.get('id')} "
                    f"(flow 5): never ordered"))
            return Assessment(verdict=ORDERED, order=order, link=link, reason=(
                f"ordered: Nue order {order.get('orderNumber') or order.get('id')} found by the {link}"))
        if linked:
            order, link = linked[0]
            return Assessment(verdict=NEEDS_PERSON, order=order, link=link, reason=(
                "the Nue order made for this opportunity was canceled; a new order needs a person"))
        if shown:
            return Assessment(verdict=ORDERED, link=nue_wire.LINK_ORDER_ID, reason=(
                f"ordered: the opportunity shows Nue order {shown} (not among its customer's orders)"))
        return Assessment(verdict=TO_ORDER, reason="no order is linked to this opportunity: it would be created")

    def plan(self, event: FlowEvent, found: Found) -> Plan:
        opportunity_id = event.resource_id
        assessment = self.assess(event, found)
        if opportunity_id is None or assessment.verdict in (NOT_APPLICABLE, BEFORE_CUT_OFF):
            return Plan(skip_reason=assessment.reason)
        record_ref = f"salesforce:Opportunity:{opportunity_id}"
        if assessment.verdict == NEEDS_PERSON:
            # One order per deal, ever: its order was canceled in Nue, and ordering again is a person's call.
            return Plan(conflict=OpenConflict(flow=NAME, record_ref=record_ref, reason=assessment.reason))
        opportunity = found.sf_records[("Opportunity", opportunity_id)]
        assert opportunity is not None
        account_id = str(opportunity["AccountId"])
        customer = found.nue_customers.get(account_id)
        order = assessment.order
        if assessment.verdict == ORDERED and order is None:
            return Plan(skip_reason=assessment.reason)  # the order id it shows is all there is: never again
        if order is not None and assessment.link == nue_wire.LINK_ORDER_ID and is_change_order(order):
            return Plan(skip_reason=assessment.reason)  # flow 5's amendment opportunity: it shows its change order
        if customer is None:
            account = found.sf_records.get(("Account", account_id)) or {}
            return Plan(done=False, writes=(NueCreateCustomer(
                salesforce_account_id=account_id, payload=_customer_payload(account),
                idem_key=f"{NAME}:customer:{account_id}"),))

        if order is not None and assessment.link != nue_wire.LINK_MARKER:
            # An order Nue's quote-to-order flow (or a person) made: linked and written back as it is. Its lines
            # were never ours to compare: a quote's discounts or extra products are not the opportunity's edit.
            return self._write_back(opportunity_id, opportunity, order)
        lines = found.sf_children.get(("OpportunityLineItem", "OpportunityId", opportunity_id), [])
        customer_id = str(customer["id"])
        try:
            wanted = self._order_lines(lines, found.catalog)
        except PricingError as exc:
            return Plan(conflict=OpenConflict(flow=NAME, record_ref=record_ref,
                                              reason=f"the products cannot be ordered in Nue: {exc}"))
        if order is None:
            if not wanted:
                return Plan(skip_reason="the opportunity has no products to order")
            return Plan(done=False, writes=(NueCreateOrder(
                customer_id=customer_id, opportunity_id=opportunity_id, marker_field=self.mapping.marker_field,
                payload=self._order_payload(opportunity, customer_id, wanted),
                idem_key=f"{NAME}:order:{opportunity_id}"),))

        drift = _drift(wanted, order)
        if drift:
            return Plan(conflict=OpenConflict(
                flow=NAME, record_ref=record_ref,
                reason="the opportunity's products changed after its Nue order was made",
                salesforce_values={k: _plain(v[0]) for k, v in drift.items()},
                nue_values={k: _plain(v[1]) for k, v in drift.items()},
                synced_values={"order": str(order.get("orderNumber") or order.get("id"))}))
        # Only revdaemon's own draft is activated: a draft someone else left may be left on purpose, and
        # activating it would invoice the customer.
        if (self.mapping.activate and assessment.link == nue_wire.LINK_MARKER
                and str(order.get("status", "")).lower() == "draft"):
            return Plan(done=False, writes=(NueActivateOrder(order_id=str(order["id"]),
                                                             idem_key=f"{NAME}:activate:{opportunity_id}"),))
        return self._write_back(opportunity_id, opportunity, order)

    def _write_back(self, opportunity_id: str, opportunity: Mapping[str, Any], order: Mapping[str, Any]) -> Plan:
        write_back = {self.mapping.order_id_field: order.get("id"),
                      self.mapping.order_number_field: order.get("orderNumber")}
        changed = {k: v for k, v in write_back.items() if v is not None and opportunity.get(k) != v}
        if not changed:
            return Plan(skip_reason="the order exists and the opportunity shows it")
        return Plan(writes=(SfUpdate(sobject="Opportunity", record_id=opportunity_id, fields=changed,
                                     idem_key=f"{NAME}:write-back:{opportunity_id}:{order.get('id')}:"
                                              f"{was(opportunity, changed)}"),))

    # --- helpers ------------------------------------------------------------------------------------

    def _event_cut_off(self, event: FlowEvent) -> date | None:
        """A backfill's own cut-off. Only the backfill source may carry one: a poll or a webhook cannot lift
        the go-live cut-off, whatever its body says."""
        if event.source != BACKFILL_SOURCE:
            return None
        text = event.payload.get(WON_SINCE)
        try:
            return date.fromisoformat(str(text)[:10]) if text else None
        except ValueError:
            return None

    def _cut_off(self, event: FlowEvent, found: Found) -> date | None:
        """The day before which a won deal is not ordered; None when not known (no cut-off)."""
        return self._event_cut_off(event) or self.mapping.won_since or found.go_live

    def _before_cut_off(self, event: FlowEvent, opportunity: Mapping[str, Any], found: Found) -> bool:
        cut_off = self._cut_off(event, found)
        closed = _close_date(opportunity)
        return cut_off is not None and closed is not None and closed < cut_off

    def _order_lines(self, lines: Sequence[Mapping[str, Any]], catalog: Sequence[Mapping[str, Any]]
                     ) -> list[dict[str, Any]]:
        """Each opportunity line as an order product: the same price book entry in a connected tenant,
        otherwise the entry of the product with the same SKU; a bundle takes its options as add-ons."""
        entries: dict[str, tuple[Mapping[str, Any], Mapping[str, Any]]] = {}
        by_sku: dict[str, tuple[Mapping[str, Any], Mapping[str, Any]]] = {}
        for product in catalog:
            for entry in product.get("priceBookEntries") or []:
                entries[str(entry["id"])] = (product, entry)
                if product.get("sku"):
                    by_sku.setdefault(str(product["sku"]), (product, entry))
        out = []
        for line in lines:
            quantity = to_decimal(line.get("Quantity") or 0, "Quantity")
            if quantity == 0:
                continue  # a zero line orders nothing; Nue refuses a zero quantity
            if self.mapping.connected_to_salesforce:
                match = entries.get(str(line.get("PricebookEntryId")))
            else:
                match = by_sku.get(str(line.get("ProductCode")))
            if match is None:
                raise PricingError(f"no Nue price book entry for line {line.get('Id')} (product "
                                   f"{line.get('ProductCode')}, price book entry {line.get('PricebookEntryId')})")
            product, entry = match
            item: dict[str, Any] = {"priceBookEntryId": entry["id"], "quantity": quantity,
                                    "discount": to_decimal(line.get("Discount") or 0, "Discount")}
            if str(entry.get("billingPeriod") or "Month") != "OneTime":
                item["subscriptionTerm"] = self.mapping.term_months
            options = product.get("productOptions") or []
            if options:
                item["addOns"] = [{"productOptionId": o["id"], "quantity": to_decimal(o.get("quantity", 1))}
                                  for o in options]
            out.append(item)
        return out

    def _order_payload(self, opportunity: Mapping[str, Any], customer_id: str,
                       lines: list[dict[str, Any]]) -> dict[str, Any]:
        start = str(opportunity.get("CloseDate") or "")[:10] or None
        payload: dict[str, Any] = {
            "customer": {"id": customer_id},
            "name": str(opportunity.get("Name") or "Order"),
            "description": f"From Salesforce opportunity {opportunity.get('Name')} "
                           f"({nue_wire.order_marker(str(opportunity['Id']))})",
            "orderProducts": [{**line, **({"subscriptionStartDate": start} if start else {})} for line in lines],
        }
        if start:
            payload["effectiveDate"] = start
        if self.mapping.marker_field:
            payload[self.mapping.marker_field] = opportunity["Id"]
        return payload


def _close_date(opportunity: Mapping[str, Any]) -> date | None:
    try:
        return date.fromisoformat(str(opportunity.get("CloseDate") or "")[:10])
    except ValueError:
        return None  # no readable CloseDate: not "before" anything


def _customer_payload(account: Mapping[str, Any]) -> dict[str, Any]:
    payload: dict[str, Any] = {"name": account.get("Name") or "Customer", "recordType": "Business"}
    for sf_field, nue_field in (("Phone", "phone"), ("Website", "website"), ("BillingCity", "billingCity"),
                                ("BillingCountry", "billingCountry")):
        if account.get(sf_field):
            payload[nue_field] = account[sf_field]
    return payload


def _plain(value: Decimal) -> str:
    """40.0 -> "40", 2.50 -> "2.5": quantities as a person writes them."""
    return f"{value.normalize():f}"


def _drift(wanted: Sequence[Mapping[str, Any]], order: Mapping[str, Any]) -> dict[str, tuple[Decimal, Decimal]]:
    """Quantity per price book entry on each side, where they differ (top-level lines only)."""
    ordered: dict[str, Decimal] = {}
    for line in order.get("orderProducts") or []:
        key = str(line.get("priceBookEntryId"))
        ordered[key] = ordered.get(key, Decimal(0)) + to_decimal(line.get("quantity") or 0)
    asked: dict[str, Decimal] = {}
    for line in wanted:
        key = str(line["priceBookEntryId"])
        asked[key] = asked.get(key, Decimal(0)) + to_decimal(line["quantity"])
    if not ordered:
        return {}  # the order list did not include its lines: nothing to compare
    return {k: (asked.get(k, Decimal(0)), ordered.get(k, Decimal(0))) for k in asked.keys() | ordered.keys()
            if asked.get(k, Decimal(0)) != ordered.get(k, Decimal(0))}
