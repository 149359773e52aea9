from __future__ import annotations

from datetime import date
from decimal import Decimal

import pytest

from revdaemon.domain.money import PricingError
from revdaemon.domain.subscriptions import customer_state, order_lines, price_entries

CATALOG = [
    {"id": "p1", "priceBookEntries": [{"id": "e1", "listPrice": 500, "billingPeriod": "Month",
                                       "currencyIsoCode": "USD"}]},
    {"id": "p2", "priceBookEntries": [{"id": "e2", "listPrice": 40, "billingPeriod": "Month",
                                       "currencyIsoCode": "USD"}]},
    {"id": "p3", "priceBookEntries": [{"id": "e3", "listPrice": 100, "billingPeriod": "Month",
                                       "currencyIsoCode": "EUR"}]},
]
ORDERS = [{"orderProducts": [
    {"id": "L1", "discount": 0, "totalAmount": 6000},
    {"id": "L2", "discount": 10, "totalAmount": 10800, "addOns": [{"id": "L3", "discount": 0, "totalAmount": 0}]},
]}]


def sub(name: str, entry: str, quantity: int, status: str = "Active", line: str = "", end: str = "2027-06-30",
        modified: str = "2026-01-01T00:00:00Z") -> dict[str, object]:
    return {"name": name, "priceBookEntryId": entry, "quantity": quantity, "status": status, "orderProductId": line,
            "subscriptionEndDate": end, "lastModifiedDate": modified}


class TestCustomerState:
    def test_mrr_applies_line_discounts_and_bundle_options(self) -> None:
        """Discounted lines count net; an option priced inside its bundle counts nothing."""
        state = customer_state([sub("S1", "e1", 1, line="L1"), sub("S2", "e2", 25, line="L2"),
                                sub("S3", "e2", 10, line="L3")], price_entries(CATALOG), order_lines(ORDERS))
        assert state.mrr == Decimal("1400.00") and state.arr == Decimal("16800.00")

    def test_only_live_subscriptions_count(self) -> None:
        """Ended and canceled subscriptions add no MRR; the account shows the most alive status."""
        state = customer_state([sub("S1", "e1", 1, status="Canceled"), sub("S2", "e2", 1, status="Ended"),
                                sub("S3", "e2", 2, status="Scheduled for cancellation", end="2026-12-31")],
                               price_entries(CATALOG))
        assert state.mrr == Decimal("80.00")
        assert state.status == "Scheduled for cancellation"
        assert state.next_renewal == date(2026, 12, 31)

    def test_version_is_the_newest_change(self) -> None:
        """The state's version is the newest lastModifiedDate of its subscriptions."""
        state = customer_state([sub("S1", "e1", 1, modified="2026-01-02T00:00:00Z"),
                                sub("S2", "e1", 1, modified="2026-03-01T00:00:00Z")], price_entries(CATALOG))
        assert state.version == "2026-03-01T00:00:00.000000Z"

    def test_mixed_currencies_are_refused(self) -> None:
        """One MRR figure cannot add dollars to euros."""
        with pytest.raises(PricingError, match="currencies"):
            customer_state([sub("S1", "e1", 1), sub("S2", "e3", 1)], price_entries(CATALOG))

    def test_unknown_entry_is_refused(self) -> None:
        """A subscription on an entry the catalog lacks cannot be priced."""
        with pytest.raises(PricingError, match="unknown price book entry"):
            customer_state([sub("S1", "nope", 1)], price_entries(CATALOG))

    def test_no_subscriptions(self) -> None:
        """A customer without subscriptions has no status and zero MRR."""
        state = customer_state([], price_entries(CATALOG))
        assert state.status is None and state.mrr == 0 and state.next_renewal is None


class TestVersions:
    @pytest.mark.parametrize(("raw", "expected"), [
        ("2026-01-01T10:00:00Z", "2026-01-01T10:00:00.000000Z"),
        ("2026-01-01T10:00:00.500Z", "2026-01-01T10:00:00.500000Z"),
        ("2013-05-07T22:07:19.000+0000", "2013-05-07T22:07:19.000000Z"),
        ("2026-01-01T12:00:00+02:00", "2026-01-01T10:00:00.000000Z"),
    ])
    def test_versions_are_fixed_width_utc(self, raw: str, expected: str) -> None:
        """Every timestamp format becomes one text form, so later always sorts after earlier."""
        from revdaemon.domain.subscriptions import version_of

        assert version_of(raw) == expected

    def test_half_a_second_later_sorts_later(self) -> None:
        """'...:00Z' then '...:00.500Z' keep their time order once normalised."""
        from revdaemon.domain.subscriptions import version_of

        assert version_of("2026-01-01T10:00:00.500Z") > version_of("2026-01-01T10:00:00Z")
