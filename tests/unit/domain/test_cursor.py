from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from revdaemon.domain.cursor import Cursor, UnsortedPage, advance, query_floor

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


class TestAdvance:
    def test_moves_to_the_last_key(self) -> None:
        """The cursor lands on the page's last (time, id)."""
        assert advance(None, [(at(1), "a"), (at(2), "b")], signpost=at(100)) == Cursor(at(2), "b")

    def test_never_passes_the_signpost(self) -> None:
        """Rows newer than the signpost are read again next time."""
        assert advance(None, [(at(1), "a"), (at(50), "b")], signpost=at(10)) == Cursor(at(10), "")

    def test_never_goes_backwards(self) -> None:
        """An overlap re-read of older rows leaves the cursor where it was."""
        cursor = Cursor(at(20), "z")
        assert advance(cursor, [(at(15), "a"), (at(18), "b")], signpost=at(100)) == cursor

    def test_empty_page_keeps_the_cursor(self) -> None:
        """No rows, no move."""
        assert advance(Cursor(at(5), "x"), [], signpost=at(100)) == Cursor(at(5), "x")

    def test_unsorted_page_raises(self) -> None:
        """A page that goes backwards is an error, not a silent skip."""
        with pytest.raises(UnsortedPage):
            advance(None, [(at(2), "a"), (at(1), "b")], signpost=at(100))

    def test_same_time_orders_by_id(self) -> None:
        """Ties on time are ordered by id, so (t, b) after (t, a) is sorted."""
        assert advance(None, [(at(1), "a"), (at(1), "b")], signpost=at(9)) == Cursor(at(1), "b")


class TestFloorAndEncoding:
    def test_floor_subtracts_the_overlap(self) -> None:
        """The next query starts an overlap before the cursor."""
        assert query_floor(Cursor(at(100)), overlap=timedelta(seconds=60), start=T0) == at(40)
        assert query_floor(None, overlap=timedelta(seconds=60), start=at(7)) == at(7)

    def test_round_trip(self) -> None:
        """A cursor survives being stored as text."""
        cursor = Cursor(at(1.5), "006A")
        assert Cursor.decode(cursor.encode()) == cursor

    def test_naive_time_is_refused(self) -> None:
        """A stored cursor without a timezone is refused rather than guessed."""
        with pytest.raises(ValueError):
            Cursor.decode("2026-01-01T00:00:00|x")


@given(st.lists(st.tuples(st.integers(0, 1000), st.sampled_from("abc")), max_size=30),
       st.integers(0, 1000))
def test_cursor_is_monotonic_and_capped(keys: list[tuple[int, str]], signpost: int) -> None:
    """Whatever sorted page arrives, the cursor never moves back and never passes the signpost."""
    page = sorted((at(t), i) for t, i in keys)
    start = Cursor(at(300), "b")
    moved = advance(start, page, signpost=at(signpost))
    assert moved is not None and moved >= start
    assert moved == start or moved.at <= at(signpost)
