"""Quotes [doc]: keyed by the Salesforce opportunityId; posting again for the same opportunity is a requote."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from revdaemon.sandbox.nue import wire
from revdaemon.sandbox.nue.dates import add_months, months_between, parse_day
from revdaemon.sandbox.nue.errors import bad_request, not_found, unprocessable
from revdaemon.sandbox.nue.orders import to_decimal
from revdaemon.sandbox.nue.pricing import ZERO, charge, money, monthly
from revdaemon.sandbox.nue.store import Record, Store

BILLING_PERIODS = ("Month", "Quarter", "Semi-Annual", "Annual")
BILLING_TIMINGS = ("In Advance", "In Arrears")


def _price(store: Store, body: dict[str, Any]) -> Record:
    opportunity = body.get("opportunityId")
    if not isinstance(opportunity, str) or not opportunity:
        raise bad_request("opportunityId is required")
    start = parse_day(body["subscriptionStartDate"], "subscriptionStartDate") if body.get("subscriptionStartDate") \
        else store.clock.today()
    if body.get("subscriptionTerm") is not None:
        term = to_decimal(body["subscriptionTerm"], "subscriptionTerm")
        end = parse_day(body["subscriptionEndDate"], "subscriptionEndDate") if body.get("subscriptionEndDate") \
            else add_months(start, int(term))
    elif body.get("subscriptionEndDate"):
        end = parse_day(body["subscriptionEndDate"], "subscriptionEndDate")
        term = months_between(start, end)
    else:
        term = Decimal(12)
        end = add_months(start, 12)
    if term <= 0 or end <= start:
        raise unprocessable("the quote's term must be positive")
    price_book = body.get("priceBookId", store.catalog.price_book_id)
    if price_book != store.catalog.price_book_id:
        raise unprocessable(f"price book {price_book!r} not found")
    customer_id = None
    if body.get("customerId"):
        customer_id = store.require_customer(body["customerId"])["id"]
    products = body.get("products")
    if not isinstance(products, list) or not products:
        raise bad_request("products is required")
    lines: list[Record] = []
    for index, item in enumerate(products):
        where = f"products[{index}]"
        entry = store.catalog.by_sku.get(str(item.get("productSku"))) if isinstance(item, dict) else None
        if entry is None:
            raise unprocessable(f"{where}: no product with that productSku")
        uom: str = item.get("uom") or entry.uom
        if uom != entry.uom:
            raise unprocessable(f"{where}: uom {uom!r} is not {entry.uom!r}")
        quantity = to_decimal(item.get("quantity", 1), f"{where}.quantity")
        if quantity <= 0:
            raise bad_request(f"{where}.quantity must be positive")
        total = money(monthly(entry, quantity) * term) if entry.recurring else charge(entry, quantity)
        lines.append({"productSku": entry.sku, "productId": entry.product_id, "priceBookEntryId": entry.id,
                      "uom": uom, "quantity": quantity, "listPrice": entry.unit_price, "totalPrice": total})
    subtotal = money(sum((li["totalPrice"] for li in lines), ZERO))
    discount = to_decimal(body.get("discount", 0), "discount")
    if body.get("discountAmount") is not None:
        discount_amount = money(to_decimal(body["discountAmount"], "discountAmount"))
    else:
        discount_amount = money(subtotal * discount / 100)
    period = body.get("billingPeriod", "Month")
    timing = body.get("billingTiming", "In Advance")
    if period not in BILLING_PERIODS or timing not in BILLING_TIMINGS:
        raise bad_request(f"billingPeriod is one of {BILLING_PERIODS}, billingTiming one of {BILLING_TIMINGS}")
    return {
        "opportunityId": opportunity, "name": body.get("name") or f"Quote for {opportunity}",
        "customerId": customer_id, "status": "Draft",
        "subscriptionStartDate": start.isoformat(), "subscriptionEndDate": end.isoformat(),
        "subscriptionTerm": int(term) if term == int(term) else term, "priceBookId": price_book,
        "discount": discount, "discountAmount": discount_amount, "billingPeriod": period, "billingTiming": timing,
        "currencyIsoCode": body.get("currencyIsoCode", "USD"), "products": lines,
        "subtotal": subtotal, "totalAmount": money(subtotal - discount_amount),  # [assumed] totals
    }


def preview(store: Store, body: Any) -> Record:
    if not isinstance(body, dict):
        raise bad_request("the body must be a JSON object")
    with store.lock:
        quote = _price(store, body)
        quote.update(id=None, quoteNumber=None, quoteVersion=None)
        return quote


def save(store: Store, body: Any) -> Record:
    """Creates the opportunity's quote, or requotes it (same id, quoteVersion + 1, back to Draft)."""
    if not isinstance(body, dict):
        raise bad_request("the body must be a JSON object")
    with store.lock:
        priced = _price(store, body)
        existing_id = store.quotes_by_opportunity.get(priced["opportunityId"])
        if existing_id is not None:
            quote = store.quotes[existing_id]
            priced["customerId"] = priced["customerId"] or quote["customerId"]
            quote.update(priced, quoteVersion=quote["quoteVersion"] + 1)
            store.quotes.reindex(quote["id"])
            store.touch(quote)
            store.emit("quote.updated", quote)
            return quote
        quote = {"id": store.ids.uuid(), "quoteNumber": store.ids.number("quote"), "quoteVersion": 1, **priced}
        store.touch(quote, created=True)
        store.quotes[quote["id"]] = quote
        store.quotes_by_opportunity[quote["opportunityId"]] = quote["id"]
        store.emit("quote.created", quote)
        return quote


def get(store: Store, key: str) -> Record:
    """By quote id or by the Salesforce opportunityId."""
    with store.lock:
        quote = store.quotes.get(key) or store.quotes.get(store.quotes_by_opportunity.get(key, ""))
        if quote is None:
            raise not_found(f"quote {key} not found")
        return quote


def set_status(store: Store, key: str, status: str) -> Record:
    if status not in wire.QUOTE_STATUSES:
        raise bad_request(f"status is one of {wire.QUOTE_STATUSES}")
    with store.lock:
        quote = get(store, key)
        quote["status"] = status
        store.touch(quote)
        store.emit("quote.updated", quote)
        return quote


