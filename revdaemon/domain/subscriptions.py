"""Subscription state as the flows see it: statuses, MRR of a customer, the next renewal. Pure."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from revdaemon.domain.money import HUNDRED, ZERO, PriceEntry, PricingError, cents, monthly, to_decimal

# nue-api.md: Active | Ended (past end, not locked) | Expired (final) | Canceled | Scheduled for cancellation.
LIVE_STATUSES = ("Active", "Scheduled for cancellation")
# When a customer has several subscriptions, the account shows the most alive of them.
STATUS_RANK = ("Active", "Scheduled for cancellation", "Ended", "Canceled", "Expired")


@dataclass(frozen=True, kw_only=True)
class CustomerState:
    status: str | None
    mrr: Decimal
    arr: Decimal
    next_renewal: date | None
    currency: str | None
    version: str  # the newest lastModifiedDate among the subscriptions: orders applied state


def version_of(modified: Any) -> str:
    """A modification time as fixed-width UTC text, so versions compare in time order as plain strings
    whatever format the API used ("...:00Z" vs "...:00.500Z" would not)."""
    if not modified:
        return ""
    text = str(modified).replace("Z", "+00:00")
    if len(text) >= 5 and text[-5] in "+-" and text[-3] != ":":
        text = text[:-2] + ":" + text[-2:]  # Salesforce's +0000
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def price_entries(products: Iterable[Mapping[str, Any]]) -> dict[str, PriceEntry]:
    """Every price book entry of the catalog, by id."""
    entries: dict[str, PriceEntry] = {}
    for product in products:
        for entry in product.get("priceBookEntries") or []:
            parsed = PriceEntry.from_nue(entry)
            entries[parsed.id] = parsed
    return entries


@dataclass(frozen=True, kw_only=True)
class LineTerms:
    """What an order line adds to its subscription's price: a discount, or nothing when it is a bundle
    option priced inside its bundle (an add-on line whose total is zero)."""

    discount: Decimal = ZERO
    included: bool = False


def order_lines(orders: Iterable[Mapping[str, Any]]) -> dict[str, LineTerms]:
    """Terms of every order line and nested add-on, by line id (a subscription's orderProductId)."""
    terms: dict[str, LineTerms] = {}

    def walk(lines: Iterable[Mapping[str, Any]], nested: bool) -> None:
        for line in lines:
            if line.get("id") is not None:
                total = line.get("totalAmount")
                included = nested and total is not None and to_decimal(total, "totalAmount") == ZERO
                terms[str(line["id"])] = LineTerms(discount=to_decimal(line.get("discount") or 0, "discount"),
                                                   included=included)
            walk(line.get("addOns") or [], True)

    for order in orders:
        walk(order.get("orderProducts") or [], False)
    return terms


def subscription_mrr(subscription: Mapping[str, Any], entries: Mapping[str, PriceEntry],
                     lines: Mapping[str, LineTerms] | None = None) -> Decimal:
    """Quantity at the entry's price (tags applied), per month, less the discount of its order line."""
    terms = (lines or {}).get(str(subscription.get("orderProductId")), LineTerms())
    if terms.included:
        return ZERO
    entry_id = subscription.get("priceBookEntryId")
    entry = entries.get(str(entry_id))
    if entry is None:
        raise PricingError(f"subscription {subscription.get('name')} uses unknown price book entry {entry_id}")
    gross = monthly(entry, to_decimal(subscription.get("quantity", 0), "quantity"))
    return cents(gross * (HUNDRED - terms.discount) / HUNDRED)


def customer_state(subscriptions: Iterable[Mapping[str, Any]], entries: Mapping[str, PriceEntry],
                   lines: Mapping[str, LineTerms] | None = None) -> CustomerState:
    subs = list(subscriptions)
    live = [s for s in subs if s.get("status") in LIVE_STATUSES]
    currencies = {entries[str(s["priceBookEntryId"])].currency for s in live
                  if str(s.get("priceBookEntryId")) in entries}
    if len(currencies) > 1:
        raise PricingError(f"subscriptions in several currencies ({', '.join(sorted(currencies))}) cannot share "
                           f"one MRR figure")
    mrr = sum((subscription_mrr(s, entries, lines) for s in live), ZERO)
    statuses = [s.get("status") for s in subs if s.get("status") in STATUS_RANK]
    status = min(statuses, key=STATUS_RANK.index) if statuses else None
    ends = [date.fromisoformat(str(s["subscriptionEndDate"])[:10]) for s in live if s.get("subscriptionEndDate")]
    version = max((version_of(s.get("lastModifiedDate")) for s in subs), default="")
    return CustomerState(status=status, mrr=mrr, arr=mrr * 12, next_renewal=min(ends) if ends else None,
                         currency=currencies.pop() if currencies else None, version=version)
