"""`GET /customers`: customers by ids, or every customer a page at a time, with their contacts when asked.

[doc: api-docs.nue.io "Fetching Customers"] `customerIds` is a JSON array (URL-encoded) of Nue or Salesforce
ids; `includes`, `page`, `limit` and `predicate` are reserved; any other parameter filters on a customer field
(`field=value`, `>=`, `<=`, `>`, `<`, `!=`), joined by AND unless `predicate=or`. The answer is the usual
envelope, `data` a list. [assumed] `includes=contacts` adds each customer's `contacts` list (the contacts'
shape as `POST /customers/{id}/contacts` returns them); the order is oldest change first, like the invoices'.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from revdaemon.sandbox.nue import wire
from revdaemon.sandbox.nue.billing import _compare, parse_query
from revdaemon.sandbox.nue.errors import bad_request
from revdaemon.sandbox.nue.responses import json_response
from revdaemon.sandbox.nue.store import Record, Store

RESERVED = frozenset({"customerIds", "includes", "page", "limit", "predicate"})
INCLUDABLE = frozenset({"contacts"})


def list_customers(store: Store, raw_query: str) -> tuple[list[Record], int, int, int]:
    """One page of customers: the records (rendered), the total, page and limit."""
    plain, parsed = parse_query(raw_query)  # `plain`: the billing lists' reserved names (page, limit, includes)
    params = {key: value for key, value in plain.items() if key in RESERVED}
    params |= {key: value for key, operator, value in parsed if key in RESERVED and operator == "="}
    filters = [(key, operator, value) for key, operator, value in parsed if key not in RESERVED]
    filters += [(key, "=", value) for key, value in plain.items() if key not in RESERVED]  # e.g. status=Active
    try:
        page, limit = int(params.get("page", "1")), int(params.get("limit", "100"))
    except ValueError:
        raise bad_request("page and limit are integers") from None
    if page < 1 or not 1 <= limit <= store.settings.max_page_limit:
        raise bad_request(f"page is 1-based and limit between 1 and {store.settings.max_page_limit}")
    includes = {part for part in params.get("includes", "").split(",") if part}
    if unknown := includes - INCLUDABLE:
        raise bad_request(f"cannot include {', '.join(sorted(unknown))}")
    joined = params.get("predicate", "and").lower()
    if joined not in ("and", "or"):
        raise bad_request("predicate is and or or")
    with store.lock:
        chosen = _by_ids(store, params["customerIds"]) if "customerIds" in params else list(store.customers.values())
        # The fields any customer has, to refuse an unknown one: a pass over every customer, so only when the
        # query filters (a read by customerIds costs what it names; issue 30).
        known = ({key for customer in store.customers.values() for key in customer if not key.startswith("_")}
                 if filters else set())
        for field, _, _ in filters:
            if field not in known:
                raise bad_request(f"unknown customer field {field!r} in the query")
        if filters:
            test = any if joined == "or" else all
            chosen = [c for c in chosen if test(_compare(c.get(f), op, v) for f, op, v in filters)]
        chosen.sort(key=lambda c: (c.get("lastModifiedDate") or "", c["id"]))
        rows = chosen[(page - 1) * limit: page * limit]
        out = []
        for customer in rows:
            view = wire.render(customer)
            if "contacts" in includes:
                view["contacts"] = [wire.render(c) for c in store.contacts.where("customerId", [customer["id"]])
                                    if c.get("customerId") == customer["id"]]
            out.append(view)
    return out, len(chosen), page, limit


def _by_ids(store: Store, text: str) -> list[Record]:
    try:
        ids: Any = json.loads(text)
    except ValueError:
        raise bad_request("customerIds is a JSON array of ids") from None
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        raise bad_request("customerIds is a JSON array of ids")
    found: dict[str, Record] = {}
    for key in ids:
        customer = store.customer(key)  # a Nue id or a Salesforce account id, as GET /customers/{id} takes
        if customer is not None:
            found[customer["id"]] = customer
    return list(found.values())


def customer_list_routes(host: Any) -> list[Route]:
    async def listing(request: Request) -> Response:
        rows, total, page, limit = list_customers(host.store, request.url.query)
        return json_response(wire.envelope(rows, None, **wire.pagination(page, limit, total)))

    return [Route("/customers", listing, methods=["GET"])]
