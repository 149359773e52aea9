"""Nue's `customerIds` lists split by URL length (nue_wire.batches_by_query_length): every batch fits, and none
could have taken the next id. A property test against the definition, the whole array encoded each time."""

from __future__ import annotations

from urllib.parse import quote

from hypothesis import given
from hypothesis import strategies as st

from revdaemon.connectors.nue_wire import batches_by_query_length, customer_ids_param


def encoded(ids: list[str]) -> int:
    return len(quote(customer_ids_param(ids), safe=""))


@given(ids=st.lists(st.text(min_size=1, max_size=40), max_size=60), limit=st.integers(min_value=5, max_value=2000))
def test_each_batch_fits_and_is_as_long_as_it_can_be(ids: list[str], limit: int) -> None:
    batches = list(batches_by_query_length(ids, limit))
    assert [i for batch in batches for i in batch] == ids  # every id once, in order
    for index, batch in enumerate(batches):
        assert batch and (encoded(batch) <= limit or len(batch) == 1)  # an id too long alone still goes alone
        if index + 1 < len(batches):
            assert encoded([*batch, batches[index + 1][0]]) > limit
