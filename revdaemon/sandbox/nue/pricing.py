"""Money, as Decimal: the charge of a quantity under a price book entry (price tags applied) and its MRR."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

from revdaemon.sandbox.nue.catalog import Entry
from revdaemon.sandbox.seed import PriceTag

CENT = Decimal("0.01")
ZERO = Decimal(0)
MONTHS_PER_PERIOD = {"Month": Decimal(1), "Year": Decimal(12)}


def money(value: Decimal) -> Decimal:
    return value.quantize(CENT, rounding=ROUND_HALF_UP)


def _volume(tag: PriceTag, quantity: Decimal) -> Decimal:
    # Volume: the whole quantity at the price of the tier it falls in.
    chosen = tag.tiers[-1]
    for tier in tag.tiers:
        if quantity <= (tier.upper_bound if tier.upper_bound is not None else quantity):
            chosen = tier
            break
    return chosen.price if chosen.charge_model == "FlatFee" else quantity * chosen.price


def _tiered(tag: PriceTag, quantity: Decimal) -> Decimal:
    # Tiered: each slice of the quantity at its own tier's price. A tier starts where the previous one
    # ended; the first starts at its lower bound minus one when bounds are inclusive integers (1-50).
    total = ZERO
    start = max(tag.tiers[0].lower_bound - 1, ZERO) if tag.tiers[0].lower_bound >= 1 else tag.tiers[0].lower_bound
    for tier in tag.tiers:
        end = tier.upper_bound if tier.upper_bound is not None else max(quantity, start)
        units = max(ZERO, min(quantity, end) - start)
        if units > 0:
            total += tier.price if tier.charge_model == "FlatFee" else units * tier.price
        start = end
    return total


def charge(entry: Entry, quantity: Decimal) -> Decimal:
    """Price of `quantity` units for one billing period (or once, for one-time entries)."""
    tag = entry.price_tag
    if tag is None:
        return money(quantity * entry.unit_price)
    if tag.type == "Volume":
        return money(_volume(tag, quantity))
    return money(_tiered(tag, quantity))


def monthly(entry: Entry, quantity: Decimal) -> Decimal:
    """The charge normalised to a month; zero for one-time entries."""
    months = MONTHS_PER_PERIOD.get(entry.billing_period)
    if months is None:
        return ZERO
    return money(charge(entry, quantity) / months)


def discounted(amount: Decimal, discount_percent: Decimal) -> Decimal:
    return money(amount * (Decimal(100) - discount_percent) / Decimal(100))
