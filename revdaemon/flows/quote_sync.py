"""Flow 7 (architecture.md): a Nue quote, and each requote, reflected on its Salesforce opportunity.

Trigger:   quote.created / quote.updated (webhook or poll); data.id is the quote, data.opportunityId a hint.
Reads:     the whole quote (GET /cpq/quotes/{id}: products and totals), the quotes of its opportunity
           (to know the newest quoteVersion), the catalog (SKU -> price book entry), the Salesforce
           opportunity (Nue_Quote_* fields, Pricebook2Id) and its line items.
Steps:     1. lines: each quote product (summed per SKU) becomes one OpportunityLineItem keyed by
              Nue_Line_Key__c = quote:<opportunity id>:<sku>: created with OpportunityId and PricebookEntryId,
              or updated in Quantity, UnitPrice and Discount only (those two ids are create-only; a line whose
              entry changed is deleted first, then made again). A keyed line whose SKU left the quote, or
              whose quantity is now zero, is deleted; lines without a quote key are a rep's and stay.
              UnitPrice is the quote line's value for the whole term / quantity and Discount the quote's
              discount in percent, so Salesforce's Amount roll-up (sum of TotalPrice) is the quote total.
              An opportunity without a price book is given the one of the quote's entries, in the same step.
           2. then the opportunity's Nue_Quote_Id__c, _Version__c, _Total__c and _Discount__c, last, so a
              version shown on the opportunity means its lines are done.
Key:       quote_sync:line:<line key>:v<version>:<values>[:<current values>] and
           quote_sync:opportunity:<id>:v<version>:<current values> (flows.common.was): a line or a summary that
           drifted after it was written, and is corrected again, is written again.
Ordering:  version = the quoteVersion (zero-padded, so it compares as text) on entity
           salesforce:Opportunity:<id>:quote. An older version is skipped when the opportunity's quotes
           list a newer one, when the opportunity already shows a newer (or this) version, and by the
           worker's entity guard.
Won deals: an opportunity that is Closed Won (IsWon) or shows its Nue order id (flow 1's order_id_field) is
           skipped and logged: flow 1 ordered it from its lines, and compares them with the order.
Conflicts: a SKU with no price book entry in the catalog; an opportunity bound to another price book.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from revdaemon.domain.money import HUNDRED, ZERO, PriceEntry, PricingError, cents, charge, monthly, to_decimal
from revdaemon.flows import sources
from revdaemon.flows.base import FlowEvent, Found, Needs
from revdaemon.flows.common import same, was
from revdaemon.flows.plan import OpenConflict, Plan, SfDelete, SfUpdate, SfUpsert, Write

NAME = "quote_sync"
EVENT_TYPES = frozenset({"quote.created", "quote.updated"})
SOURCES = sources.FROM_NUE  # a notification or a poll of Nue's own records
KEY_PREFIX = "quote:"
PERCENT = Decimal("0.01")  # Discount is a percent field with two decimals


@dataclass(frozen=True, kw_only=True)
class QuoteSyncMapping:
    quote_id_field: str = "Nue_Quote_Id__c"
    version_field: str = "Nue_Quote_Version__c"
    total_field: str = "Nue_Quote_Total__c"
    discount_field: str = "Nue_Quote_Discount__c"
    line_key_field: str = "Nue_Line_Key__c"
    # Flow 1's write-back of the Nue order id (ClosedWonMapping.order_id_field): set, the deal is ordered.
    order_id_field: str = "Nue_Order_Id__c"

    @property
    def opportunity_fields(self) -> tuple[str, ...]:
        return (self.quote_id_field, self.version_field, self.total_field, self.discount_field, "Pricebook2Id",
                "IsWon", self.order_id_field)

    @property
    def line_fields(self) -> tuple[str, ...]:
        return (self.line_key_field, "PricebookEntryId", "Quantity", "UnitPrice", "Discount")


@dataclass(frozen=True, kw_only=True)
class _Line:
    key: str
    entry_id: str
    price_book_id: str | None
    quantity: Decimal
    unit_price: Decimal
    discount: Decimal


def line_key(opportunity_id: str, sku: str) -> str:
    return f"{KEY_PREFIX}{opportunity_id}:{sku}"


def version_text(quote_version: int) -> str:
    return f"{quote_version:010d}"


class QuoteSyncFlow:
    name = NAME
    event_types = EVENT_TYPES
    sources = SOURCES

    def __init__(self, mapping: QuoteSyncMapping | None = None) -> None:
        self.mapping = mapping or QuoteSyncMapping()
        self.salesforce_fields = {"Opportunity": frozenset(self.mapping.opportunity_fields),
                                  "OpportunityLineItem": frozenset((*self.mapping.line_fields, "OpportunityId"))}

    def needs(self, event: FlowEvent, found: Found) -> Needs:
        quote_id = event.resource_id
        if quote_id is None:
            return Needs()
        needs = Needs(nue_quotes=frozenset({quote_id}), catalog=True)
        quote = _quote(found, quote_id)
        hint = event.data.get("opportunityId")
        opportunity_id = quote.get("opportunityId") if quote else (hint if quote_id not in found.nue_quotes else None)
        if opportunity_id:
            m = self.mapping
            fields = frozenset(("Opportunity", f) for f in m.opportunity_fields)
            fields |= frozenset(("OpportunityLineItem", f) for f in m.line_fields)
            opportunity = str(opportunity_id)
            needs = needs | Needs(nue_quotes_of=frozenset({opportunity}), sf_fields=fields,
                                  sf_records=frozenset({("Opportunity", opportunity)}),
                                  sf_children=frozenset({("OpportunityLineItem", "OpportunityId", opportunity)}))
        return needs

    def plan(self, event: FlowEvent, found: Found) -> Plan:
        quote_id = event.resource_id
        if quote_id is None:
            return Plan(skip_reason="the event names no quote")
        quote = _quote(found, quote_id)
        if quote is None:
            return Plan(skip_reason=f"Nue has no quote {quote_id}")
        opportunity_id = str(quote.get("opportunityId") or "")
        if not opportunity_id:
            return Plan(skip_reason="the quote names no opportunity")
        version_number = _version(quote)
        version, entity = version_text(version_number), f"salesforce:Opportunity:{opportunity_id}:quote"
        newest = max((_version(q) for q in found.nue_quotes_of.get(opportunity_id, [])), default=0)
        if newest > version_number:
            return Plan(skip_reason=f"quote version {version_number} is older than version {newest} of the "
                                    f"opportunity's quotes", version=version, entity=entity)
        opportunity = found.sf_records.get(("Opportunity", opportunity_id))
        if opportunity is None:
            return Plan(skip_reason=f"Salesforce has no opportunity {opportunity_id}")
        m = self.mapping
        if opportunity.get("IsWon") or opportunity.get(m.order_id_field):
            # Flow 1 orders a won deal from its lines and compares them with the order afterwards: lines
            # rewritten here would show as the deal edited after its order (a false conflict there).
            return Plan(skip_reason=f"opportunity {opportunity_id} is Closed Won or has its Nue order "
                                    f"({m.order_id_field}): its lines are the order's now", version=version,
                        entity=entity)
        shown = opportunity.get(m.version_field)
        if shown is not None and to_decimal(shown, m.version_field) >= version_number:
            return Plan(skip_reason=f"the opportunity already shows quote version {_plain(to_decimal(shown))}",
                        version=version, entity=entity)
        record_ref = f"salesforce:Opportunity:{opportunity_id}"
        try:
            discount = _discount_percent(quote)
            wanted = _wanted_lines(quote, opportunity_id, found.catalog, discount)
        except PricingError as exc:
            return Plan(conflict=OpenConflict(flow=NAME, record_ref=record_ref,
                                              reason=f"the quote's products cannot be put on the opportunity: {exc}",
                                              nue_values={"quote": str(quote.get("id")),
                                                          "quoteVersion": str(version_number)}))
        books = {line.price_book_id for line in wanted.values() if line.price_book_id}
        current_book = opportunity.get("Pricebook2Id")
        if current_book and books - {str(current_book)}:
            return Plan(conflict=OpenConflict(
                flow=NAME, record_ref=record_ref,
                reason="the opportunity uses another price book than the quote's products",
                salesforce_values={"Pricebook2Id": str(current_book)},
                nue_values={"priceBookId": ", ".join(sorted(books))}))

        existing = found.sf_children.get(("OpportunityLineItem", "OpportunityId", opportunity_id), [])
        writes = self._line_writes(opportunity_id, wanted, existing, version_number)
        if writes:
            if not current_book and len(books) == 1 and any(isinstance(w, SfUpsert) and "OpportunityId" in w.fields
                                                            for w in writes):
                writes.insert(0, SfUpdate(sobject="Opportunity", record_id=opportunity_id,
                                          fields={"Pricebook2Id": books.pop()},
                                          idem_key=f"{NAME}:pricebook:{opportunity_id}:v{version_number}"))
            return Plan(writes=tuple(writes), done=False, version=version, entity=entity)

        summary = {m.quote_id_field: str(quote.get("id")), m.version_field: version_number,
                   m.total_field: _money(quote.get("totalAmount")), m.discount_field: discount}
        changed = {k: v for k, v in summary.items() if not same(opportunity.get(k), v)}
        if not changed:
            return Plan(skip_reason="the opportunity already shows this quote", version=version, entity=entity)
        return Plan(writes=(SfUpdate(sobject="Opportunity", record_id=opportunity_id, fields=changed,
                                     idem_key=f"{NAME}:opportunity:{opportunity_id}:v{version_number}:"
                                              f"{was(opportunity, changed)}"),),
                    version=version, entity=entity)

    def _line_writes(self, opportunity_id: str, wanted: Mapping[str, _Line],
                     existing: Sequence[Mapping[str, Any]], version: int) -> list[Write]:
        key_field = self.mapping.line_key_field
        ours = {str(r[key_field]): r for r in existing if str(r.get(key_field) or "").startswith(KEY_PREFIX)}
        writes: list[Write] = []
        for key, record in sorted(ours.items()):
            line = wanted.get(key)
            if line is None or str(record.get("PricebookEntryId")) != line.entry_id:
                # gone from the quote, or its entry changed (create-only): delete; step 2 makes it again
                writes.append(SfDelete(sobject="OpportunityLineItem", record_id=str(record["Id"]),
                                       idem_key=f"{NAME}:delete:{record['Id']}"))
        for key, line in sorted(wanted.items()):
            current = ours.get(key)
            values = {"Quantity": line.quantity, "UnitPrice": line.unit_price, "Discount": line.discount}
            stamp = f"{_plain(line.quantity)}:{_plain(line.unit_price)}:{_plain(line.discount)}"
            if current is None:
                writes.append(SfUpsert(
                    sobject="OpportunityLineItem", external_id_field=key_field, external_id=key,
                    fields={"OpportunityId": opportunity_id, "PricebookEntryId": line.entry_id, **values},
                    idem_key=f"{NAME}:line:{key}:v{version}:create:{stamp}"))
            elif str(current.get("PricebookEntryId")) == line.entry_id:
                changed = {k: v for k, v in values.items() if not same(current.get(k) or 0, v)}
                if changed:
                    writes.append(SfUpsert(sobject="OpportunityLineItem", external_id_field=key_field,
                                           external_id=key, fields=values,
                                           idem_key=f"{NAME}:line:{key}:v{version}:update:{stamp}:"
                                                    f"{was(current, changed)}"))
        return writes


def _quote(found: Found, quote_id: str) -> Mapping[str, Any] | None:
    """The quote as read (the client unwraps `data.quote`)."""
    return found.nue_quotes.get(quote_id)


def _version(quote: Mapping[str, Any]) -> int:
    return int(to_decimal(quote.get("quoteVersion") or 0, "quoteVersion"))


def _money(value: Any) -> Decimal:
    return cents(to_decimal(value or 0, "totalAmount"))


def _discount_percent(quote: Mapping[str, Any]) -> Decimal:
    """The quote's discount as a percent: `discount` when set, else `discountAmount` over the subtotal."""
    percent = to_decimal(quote.get("discount") or 0, "discount")
    if percent == ZERO and quote.get("discountAmount"):
        subtotal = to_decimal(quote.get("subtotal") or 0, "subtotal")
        if subtotal > ZERO:
            percent = to_decimal(quote["discountAmount"], "discountAmount") * HUNDRED / subtotal
    return percent.quantize(PERCENT)


def _wanted_lines(quote: Mapping[str, Any], opportunity_id: str, catalog: Sequence[Mapping[str, Any]],
                  discount: Decimal) -> dict[str, _Line]:
    """One line per SKU with a positive quantity, priced for the quote's whole term."""
    by_sku: dict[str, tuple[Mapping[str, Any], Mapping[str, Any]]] = {}
    for product in catalog:
        for entry in product.get("priceBookEntries") or []:
            if product.get("sku"):
                by_sku.setdefault(str(product["sku"]), (product, entry))
                if quote.get("priceBookId") and entry.get("priceBookId") == quote["priceBookId"]:
                    by_sku[str(product["sku"])] = (product, entry)  # the quote's own price book wins
    term = to_decimal(quote.get("subscriptionTerm") or 12, "subscriptionTerm")
    totals: dict[str, tuple[Decimal, Decimal]] = {}
    for item in quote.get("products") or []:
        sku = str(item.get("productSku") or "")
        if sku not in by_sku:
            raise PricingError(f"no price book entry for SKU {sku!r}")
        quantity = to_decimal(item.get("quantity") or 0, "quantity")
        if quantity < ZERO:
            raise PricingError(f"SKU {sku} has a negative quantity")
        if quantity == ZERO:
            continue
        if item.get("totalPrice") is not None:
            total = to_decimal(item["totalPrice"], "totalPrice")
        else:
            entry = PriceEntry.from_nue(by_sku[sku][1])
            total = cents(monthly(entry, quantity) * term) if entry.recurring else charge(entry, quantity)
        before = totals.get(sku, (ZERO, ZERO))
        totals[sku] = (before[0] + quantity, before[1] + total)
    lines: dict[str, _Line] = {}
    for sku, (quantity, total) in totals.items():
        _product, entry = by_sku[sku]
        key = line_key(opportunity_id, sku)
        lines[key] = _Line(key=key, entry_id=str(entry["id"]),
                           price_book_id=str(entry["priceBookId"]) if entry.get("priceBookId") else None,
                           quantity=quantity, unit_price=cents(total / quantity), discount=discount)
    return lines


def _plain(value: Decimal) -> str:
    return f"{value.normalize():f}"
