"""SOQL `IN` lists split by the query's URL-encoded length (salesforce_wire.in_list_batches): every query fits the
limit, none could have taken the next value, every value is asked once and in order, and the query asks for exactly
the values it yields with. A property test against the definition: the whole query encoded each time."""

from __future__ import annotations

from urllib.parse import quote_plus, urlencode

import pytest
from hypothesis import given
from hypothesis import strategies as st

from revdaemon.connectors.salesforce_wire import IDS_PER_IN_LIST, in_list_batches, soql_literal

AROUND = "SELECT Id, Name FROM Account WHERE Name IN ({in_list}) ORDER BY Id"


def query_of(values: list[str]) -> str:
    return AROUND.replace("{in_list}", ", ".join(soql_literal(v) for v in values))


def encoded(values: list[str]) -> int:
    return len(quote_plus(query_of(values)))


@given(values=st.lists(st.text(min_size=1, max_size=30), max_size=60),
       limit=st.integers(min_value=200, max_value=3000), max_values=st.integers(min_value=1, max_value=25))
def test_each_query_fits_and_is_as_long_as_it_can_be(values: list[str], limit: int, max_values: int) -> None:
    try:
        batches = list(in_list_batches(values, AROUND, limit=limit, max_values=max_values))
    except ValueError:
        assert any(encoded([v]) > limit for v in values)  # refused only for a value too long to ask alone
        return
    assert [v for _soql, batch in batches for v in batch] == values
    for index, (soql, batch) in enumerate(batches):
        assert soql == query_of(batch)
        assert 1 <= len(batch) <= max_values and encoded(batch) <= limit
        if index + 1 < len(batches) and len(batch) < max_values:
            assert encoded([*batch, batches[index + 1][1][0]]) > limit


def test_about_four_hundred_salesforce_ids_go_in_one_query_within_the_documented_uri_limit() -> None:
    ids = [f"001{n:012d}AAA" for n in range(1000)]
    around = "SELECT Id, Name, SystemModstamp, Nue_Customer_Id__c FROM Account WHERE Id IN ({in_list})"
    batches = list(in_list_batches(ids, around))
    assert [len(batch) for _soql, batch in batches] == [425, 425, 150]
    assert IDS_PER_IN_LIST <= 425
    for soql, _batch in batches:
        # as httpx sends it, with the path: under the 16,384 bytes a REST call's URI and headers may take
        assert len(f"/services/data/v63.0/query?{urlencode({'q': soql})}") < 12_100


def test_a_value_that_cannot_fit_alone_is_refused() -> None:
    with pytest.raises(ValueError, match="one IN value alone"):
        list(in_list_batches(["x" * 500], AROUND, limit=400))
