"""SOQL `IN` lists split by the query's URL-encoded length (salesforce_wire.where_in_batches): every query fits the
limit, none could have taken the next value, every value is asked once and in order, and the query asks for exactly
the values it yields with, by field. A property test against the definition: the whole query encoded each time."""

from __future__ import annotations

from urllib.parse import quote_plus, urlencode

import pytest
from hypothesis import given
from hypothesis import strategies as st

from revdaemon.connectors.salesforce_wire import IDS_PER_IN_LIST, soql_literal, where_in_batches

SELECT = "SELECT Id, Name FROM Account"
TAIL = "ORDER BY Id"
FIELDS = ("Name", "Site", "Nue_Customer_Id__c")


def query_of(asked: dict[str, list[str]]) -> str:
    where = " OR ".join(f"{name} IN ({', '.join(soql_literal(v) for v in values)})" for name, values in asked.items())
    return f"{SELECT} WHERE {where} {TAIL}"


def encoded(asked: dict[str, list[str]]) -> int:
    return len(quote_plus(query_of(asked)))


def plus(asked: dict[str, list[str]], name: str, value: str) -> dict[str, list[str]]:
    grown = {k: list(v) for k, v in asked.items()}
    grown.setdefault(name, []).append(value)
    return grown


lists = st.lists(st.tuples(st.sampled_from(FIELDS), st.lists(st.text(min_size=1, max_size=30), max_size=30)),
                 max_size=3, unique_by=lambda pair: pair[0])


@given(lists=lists, limit=st.integers(min_value=200, max_value=3000), max_values=st.integers(min_value=1, max_value=25))
def test_each_query_fits_and_is_as_long_as_it_can_be(lists: list[tuple[str, list[str]]], limit: int,
                                                     max_values: int) -> None:
    try:
        batches = list(where_in_batches(SELECT, lists, tail=TAIL, limit=limit, max_values=max_values))
    except ValueError:
        assert any(encoded({name: [v]}) > limit for name, values in lists for v in values)  # a value too long alone
        return
    asked_in_order = [(name, v) for _soql, asked in batches for name, values in asked.items() for v in values]
    assert asked_in_order == [(name, v) for name, values in lists for v in values]
    for index, (soql, asked) in enumerate(batches):
        assert soql == query_of(asked)
        count = sum(len(values) for values in asked.values())
        assert 1 <= count <= max_values and encoded(asked) <= limit
        if index + 1 < len(batches) and count < max_values:
            name, values = next(iter(batches[index + 1][1].items()))
            assert encoded(plus(asked, name, values[0])) > limit


def test_about_five_hundred_salesforce_ids_go_in_one_query_within_the_documented_uri_limit() -> None:
    ids = [f"001{n:012d}AAA" for n in range(1200)]
    select = "SELECT Id, Name, SystemModstamp, Nue_Customer_Id__c FROM Account"
    batches = list(where_in_batches(select, [("Id", ids)]))
    assert [len(asked["Id"]) for _soql, asked in batches] == [514, 514, 172]
    assert IDS_PER_IN_LIST <= 514
    for soql, _asked in batches:
        # as httpx sends it, with the path: under the 16,384 bytes a REST call's URI and headers may take
        assert len(f"/services/data/v63.0/query?{urlencode({'q': soql})}") < 14_600


def test_two_fields_of_one_object_are_asked_in_one_query() -> None:
    [(soql, asked)] = where_in_batches("SELECT Id FROM Opportunity",
                                       [("Nue_Amendment_Key__c", ["a-1", "a-2"]), ("Nue_Order_Id__c", ["o-1"])])
    assert soql == ("SELECT Id FROM Opportunity WHERE Nue_Amendment_Key__c IN ('a-1', 'a-2') "
                    "OR Nue_Order_Id__c IN ('o-1')")
    assert asked == {"Nue_Amendment_Key__c": ["a-1", "a-2"], "Nue_Order_Id__c": ["o-1"]}


def test_a_value_that_cannot_fit_alone_is_refused() -> None:
    with pytest.raises(ValueError, match="one IN value alone"):
        list(where_in_batches(SELECT, [("Name", ["x" * 500])], limit=400))
