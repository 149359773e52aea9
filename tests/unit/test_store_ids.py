"""The one bound on stored rows' ids (revdaemon/store/ids.py): the route pattern and the number check agree."""

from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st

from revdaemon.store.ids import STORE_ID_MAX, decimal_pattern, is_store_id, parse_store_id


class TestDecimalPattern:
    def test_matches_exactly_one_to_high(self) -> None:
        """For every bound up to 1,200, the pattern matches the numbers 1..bound and no other up to 1,500."""
        for high in range(1, 1201):
            pattern = re.compile(decimal_pattern(high))
            assert [n for n in range(1500) if pattern.fullmatch(str(n))] == list(range(1, high + 1)), high

    @given(st.integers(min_value=0, max_value=2**70))
    def test_store_ids_agree_with_the_number_check(self, value: int) -> None:
        """Text is an id exactly when its number is one, on both sides of 2^63 - 1."""
        assert (parse_store_id(str(value)) is not None) is is_store_id(value)


class TestParseStoreId:
    def test_the_edges(self) -> None:
        """1 and 2^63 - 1 are ids; 0, 2^63, signs, spaces, leading zeros, other digits and 300 digits are not."""
        assert parse_store_id("1") == 1 and parse_store_id(str(STORE_ID_MAX)) == STORE_ID_MAX
        for text in ("0", str(2**63), str(2**64 + 1), "-1", "+1", " 1", "1\n", "007", "1_0", "\u0661", "9" * 300, ""):
            assert parse_store_id(text) is None, text
