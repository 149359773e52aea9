from __future__ import annotations

from decimal import Decimal

import pytest

from revdaemon.domain.money import PriceEntry, PricingError, charge, monthly

VOLUME = {"id": "01uV", "listPrice": 40, "billingPeriod": "Month", "currencyIsoCode": "USD", "priceTags": [
    {"priceTagType": "Volume", "tiers": [
        {"lowerBound": 1, "upperBound": 50, "price": 40, "chargeModel": "PerUnit"},
        {"lowerBound": 51, "upperBound": 200, "price": 32, "chargeModel": "PerUnit"},
        {"lowerBound": 201, "upperBound": None, "price": 25, "chargeModel": "PerUnit"}]}]}
TIERED = {"id": "01uT", "listPrice": 2, "billingPeriod": "Month", "priceTags": [
    {"priceTagType": "Tiered", "tiers": [
        {"lowerBound": 0, "upperBound": 100, "price": 0, "chargeModel": "FlatFee"},
        {"lowerBound": 100, "upperBound": 1000, "price": 2, "chargeModel": "PerUnit"},
        {"lowerBound": 1000, "upperBound": None, "price": 1.5, "chargeModel": "PerUnit"}]}]}


class TestCharge:
    @pytest.mark.parametrize(("quantity", "expected"), [(1, "40.00"), (50, "2000.00"), (51, "1632.00"),
                                                         (201, "5025.00")])
    def test_volume_prices_the_whole_quantity_at_its_tier(self, quantity: int, expected: str) -> None:
        """Volume: 51 seats cost 51 x 32, not 50 x 40 + 1 x 32."""
        assert charge(PriceEntry.from_nue(VOLUME), Decimal(quantity)) == Decimal(expected)

    @pytest.mark.parametrize(("quantity", "expected"), [(50, "0.00"), (100, "0.00"), (150, "100.00"),
                                                         (1500, "2550.00")])
    def test_tiered_prices_each_slice(self, quantity: int, expected: str) -> None:
        """Tiered: 1500 calls = free first 100 + 900 x 2 + 500 x 1.5."""
        assert charge(PriceEntry.from_nue(TIERED), Decimal(quantity)) == Decimal(expected)

    def test_plain_list_price(self) -> None:
        """Without a tag, quantity times list price."""
        entry = PriceEntry.from_nue({"id": "e", "listPrice": "19.99", "billingPeriod": "Month"})
        assert charge(entry, Decimal(3)) == Decimal("59.97")

    def test_float_json_numbers_are_read_exactly(self) -> None:
        """A JSON 0.1 is 0.1, not 0.1000000000000000055511151231257827."""
        entry = PriceEntry.from_nue({"id": "e", "listPrice": 0.1, "billingPeriod": "Month"})
        assert charge(entry, Decimal(3)) == Decimal("0.30")

    def test_negative_quantity_is_refused(self) -> None:
        """A negative quantity is a data error, not a credit."""
        with pytest.raises(PricingError):
            charge(PriceEntry.from_nue(VOLUME), Decimal(-1))

    def test_tag_without_tiers_is_refused(self) -> None:
        """A price tag with no tiers cannot be priced."""
        with pytest.raises(PricingError):
            PriceEntry.from_nue({"id": "e", "listPrice": 1, "priceTags": [{"priceTagType": "Tiered", "tiers": []}]})


class TestMonthly:
    def test_yearly_is_divided_by_twelve(self) -> None:
        """An annual price contributes a twelfth per month."""
        entry = PriceEntry.from_nue({"id": "e", "listPrice": 1200, "billingPeriod": "Year"})
        assert monthly(entry, Decimal(1)) == Decimal("100.00")

    def test_one_time_is_not_recurring(self) -> None:
        """A one-time fee adds nothing to MRR."""
        entry = PriceEntry.from_nue({"id": "e", "listPrice": 2500, "billingPeriod": "OneTime"})
        assert monthly(entry, Decimal(1)) == Decimal(0)
