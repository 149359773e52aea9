"""Money and MRR: Decimal only, never float. Pure.

Price tags are [assumed] in nue-api.md: {"priceTagType": "Tiered" | "Volume", "tiers": [{"lowerBound",
"upperBound", "price", "chargeModel": "PerUnit" | "FlatFee"}]}. Read here as: Volume prices the whole
quantity at the tier it falls in; Tiered prices each slice at its own tier; integer bounds are inclusive
(1-50, 51-200), and a tier starting at 0 covers (0, upper].
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any

CENT = Decimal("0.01")
ZERO = Decimal(0)
HUNDRED = Decimal(100)
MONTHS_PER_PERIOD: Mapping[str, Decimal] = {"Month": Decimal(1), "Quarter": Decimal(3), "Year": Decimal(12)}


class PricingError(ValueError):
    """A price book entry or subscription cannot be priced as given."""


def to_decimal(value: Any, what: str = "amount") -> Decimal:
    if isinstance(value, float):
        value = repr(value)  # the shortest exact decimal text of the JSON number
    try:
        return Decimal(value)
    except (InvalidOperation, TypeError, ValueError):
        raise PricingError(f"{what} is not a number: {value!r}") from None


def cents(value: Decimal) -> Decimal:
    return value.quantize(CENT, rounding=ROUND_HALF_UP)


@dataclass(frozen=True, kw_only=True)
class Tier:
    lower: Decimal
    upper: Decimal | None
    price: Decimal
    flat: bool


@dataclass(frozen=True, kw_only=True)
class PriceEntry:
    """A Nue price book entry as far as pricing needs it."""

    id: str
    list_price: Decimal
    billing_period: str  # "Month" | "Quarter" | "Year" | "OneTime"
    currency: str
    tag_type: str | None = None  # "Tiered" | "Volume"
    tiers: tuple[Tier, ...] = ()

    @property
    def recurring(self) -> bool:
        return self.billing_period in MONTHS_PER_PERIOD

    @classmethod
    def from_nue(cls, entry: Mapping[str, Any]) -> PriceEntry:
        tags = entry.get("priceTags") or []
        tag = tags[0] if tags else None
        tiers: tuple[Tier, ...] = ()
        if tag:
            tiers = tuple(
                Tier(lower=to_decimal(t.get("lowerBound", 0), "lowerBound"),
                     upper=None if t.get("upperBound") is None else to_decimal(t["upperBound"], "upperBound"),
                     price=to_decimal(t["price"], "tier price"), flat=t.get("chargeModel") == "FlatFee")
                for t in tag.get("tiers", [])
            )
            if not tiers:
                raise PricingError(f"price tag on entry {entry.get('id')} has no tiers")
        return cls(id=str(entry["id"]), list_price=to_decimal(entry.get("listPrice", 0), "listPrice"),
                   billing_period=str(entry.get("billingPeriod") or "Month"),
                   currency=str(entry.get("currencyIsoCode") or "USD"),
                   tag_type=tag.get("priceTagType") if tag else None, tiers=tiers)


def charge(entry: PriceEntry, quantity: Decimal) -> Decimal:
    """The price of `quantity` units for one billing period."""
    if quantity < 0:
        raise PricingError("quantity cannot be negative")
    if entry.tag_type is None:
        return cents(quantity * entry.list_price)
    if entry.tag_type == "Volume":
        return cents(_volume(entry.tiers, quantity))
    if entry.tag_type == "Tiered":
        return cents(_tiered(entry.tiers, quantity))
    raise PricingError(f"unknown price tag type {entry.tag_type!r}")


def _volume(tiers: Sequence[Tier], quantity: Decimal) -> Decimal:
    chosen = tiers[-1]
    for tier in tiers:
        if tier.upper is None or quantity <= tier.upper:
            chosen = tier
            break
    return chosen.price if chosen.flat else quantity * chosen.price


def _tiered(tiers: Sequence[Tier], quantity: Decimal) -> Decimal:
    total = ZERO
    start = tiers[0].lower - 1 if tiers[0].lower >= 1 else tiers[0].lower
    for tier in tiers:
        end = tier.upper if tier.upper is not None else max(quantity, start)
        units = max(ZERO, min(quantity, end) - start)
        if units > 0:
            total += tier.price if tier.flat else units * tier.price
        start = end
    return total


def monthly(entry: PriceEntry, quantity: Decimal) -> Decimal:
    """The charge normalised to a month: MRR. One-time entries contribute nothing."""
    if not entry.recurring:
        return ZERO
    return cents(charge(entry, quantity) / MONTHS_PER_PERIOD[entry.billing_period])
