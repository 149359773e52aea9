"""Nue's API on the wire: every path, field and event name the daemon uses, and reading the envelope.

From ../shared/design/nue-api.md. What that file marks [assumed] is kept in this module only (the
`ASSUMED_*` names and the functions that use them), so that correcting an assumption is an edit here.
No I/O: `NueClient` (nue.py) sends what these functions build.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from revdaemon.connectors import salesforce_wire
from revdaemon.errors import (
    ApiErrorItem,
    AuthFailed,
    ErrorContext,
    Permanent,
    Retryable,
    SyncError,
    Throttled,
)

SYSTEM = "nue"
API_KEY_HEADER = "nue-api-key"  # [doc] Transport

# [doc] Resources: paths sit on the host, with no version segment.
CUSTOMERS = "/customers"
ORDERS = "/orders"
SUBSCRIPTIONS = "/subscriptions"
CHANGE_ORDERS = "/change-orders"
INVOICES = "/invoices"
CREDIT_MEMOS = "/credit-memos"
PRODUCTS = "/catalog/products"
QUOTES = "/cpq/quotes"
PAY_INVOICES = "/billing/invoices:pay"
GRAPHQL = "/async/graphql"

CUSTOMER_BATCH_MAX = 200  # [doc] POST /customers takes an array of up to 200
INVOICE_PAGE_MAX = 500  # [doc] limit <= 500
# customerIds travel as a URL-encoded JSON array; keep each URL well under common 8 KiB server limits.
MAX_CUSTOMER_IDS_QUERY_CHARS = 6000

# [doc] order and subscription statuses, compared case-insensitively.
ORDER_ACTIVATED = "activated"
SUBSCRIPTION_STATUSES = ("Active", "Ended", "Expired", "Canceled", "Scheduled for cancellation")
CHANGE_TYPES = ("UpdateQuantity", "UpdateTerm", "Renew", "CoTerm", "Cancel", "ConvertFreeTrial")

# [doc] webhook event types, plus the [assumed] ones.
DOCUMENTED_EVENTS = ("customer.created", "order.created", "order.activated", "invoice.activated")
ASSUMED_EVENTS = ("customer.updated", "subscription.updated")

# [doc] field lists (Resources), selected in GraphQL reads.
CUSTOMER_FIELDS = ("id", "name", "recordType", "accountNumber", "externalId", "email", "phone", "website",
                   "billingStreet", "billingCity", "billingState", "billingPostalCode", "billingCountry",
                   "paymentTerm", "billCycleDay", "salesAccountId", "todayARR", "todayCMRR", "totalTCV",
                   "createdDate", "lastModifiedDate")
INVOICE_FIELDS = ("id", "name", "customerId", "amount", "balance", "invoiceDate", "dueDate", "status",
                  "paymentStatus", "lastModifiedDate")
QUOTE_FIELDS = ("id", "name", "opportunityId", "customerId", "status", "quoteVersion", "subtotal", "totalAmount",
                "discount", "discountAmount", "lastModifiedDate")  # quoteVersion, status, totals: [assumed]
# [doc] contacts are made with POST /customers/{id}/contacts (firstName, lastName, name, unique email); [assumed]
# they are read back through the GraphQL subset as `Contact` rows carrying `customerId`.
CONTACT_FIELDS = ("id", "customerId", "firstName", "lastName", "name", "email", "phone", "title", "createdDate",
                  "lastModifiedDate")
# [assumed] an order names its bill-to contact as `billToContactId` (the create takes `billToContact: {id}` [doc]);
# the customer's primary contact as `primaryContactId`, on the order or else the customer. Neither read-back name
# is documented: every name listed is read, the first one set wins.
ASSUMED_BILL_TO_CONTACT_FIELDS = ("billToContactId",)
ASSUMED_PRIMARY_CONTACT_FIELDS = ("primaryContactId",)
GRAPHQL_IN_MAX = 200  # values per `_in` list: keeps one query well under any body limit

# [assumed] webhook envelope and signature.
ASSUMED_SIGNATURE_HEADER = "Nue-Signature"
ASSUMED_ENVELOPE_FIELDS = ("id", "type", "createdDate", "data")
# [assumed design] an order carries the Salesforce opportunity id; by default as a marker in `description`.
ASSUMED_ORDER_MARKER_PREFIX = "sfdc-opportunity:"
# [assumed] the links Nue itself keeps on orders it (or a person) made in a tenant connected to Salesforce:
# an order names its opportunity, and an order made from a quote (Nue's quote-to-order flow) names that
# quote, whose `opportunityId` [doc] names the opportunity. Neither order field is documented; every name
# listed is read, and any one matching is a link.
ASSUMED_ORDER_OPPORTUNITY_FIELDS = ("opportunityId",)
ASSUMED_ORDER_QUOTE_FIELDS = ("quoteId", "sourceQuoteId")
# [assumed] error body: {"status": "failure", "message", "errorCode", "errorId"}.


@dataclass(frozen=True, kw_only=True)
class NueRequest:
    method: str
    path: str
    params: Mapping[str, str] = field(default_factory=dict)
    json: Any = None


@dataclass(frozen=True, kw_only=True)
class Envelope:
    data: Any
    warnings: tuple[str, ...]


# --- building requests ------------------------------------------------------------------------------


def customer_ids_param(customer_ids: Sequence[str]) -> str:
    return json.dumps(list(customer_ids), separators=(",", ":"))


def batches_by_query_length(ids: Sequence[str], limit: int = MAX_CUSTOMER_IDS_QUERY_CHARS) -> Iterator[list[str]]:
    """Split ids so that each URL-encoded `customerIds` array stays under `limit` characters."""
    # URL-encoding works character by character, so the array's encoded length is the sum of its parts': each id
    # is encoded once, not the whole growing array again per id (which made a long list quadratic).
    brackets, comma = len(quote("[]", safe="")), len(quote(",", safe=""))
    batch: list[str] = []
    length = brackets
    for customer_id in ids:
        size = len(quote(json.dumps(customer_id), safe=""))
        if batch and length + comma + size > limit:
            yield batch
            batch, length = [], brackets
        length += size + (comma if batch else 0)
        batch.append(customer_id)
    if batch:
        yield batch


def get_customer_request(customer_id: str) -> NueRequest:
    return NueRequest(method="GET", path=f"{CUSTOMERS}/{quote(customer_id, safe='')}")


def create_customers_request(customers: Sequence[Mapping[str, Any]]) -> NueRequest:
    if not 1 <= len(customers) <= CUSTOMER_BATCH_MAX:
        raise ValueError(f"POST /customers takes 1 to {CUSTOMER_BATCH_MAX} customers, got {len(customers)}")
    return NueRequest(method="POST", path=CUSTOMERS, json=[dict(c) for c in customers])


def list_orders_request(customer_ids: Sequence[str], *, status: str | None = None,
                        includes: Sequence[str] = ("assets", "invoices")) -> NueRequest:
    params = {"customerIds": customer_ids_param(customer_ids)}
    if includes:
        params["includes"] = ",".join(includes)
    if status:
        params["status"] = status
    return NueRequest(method="GET", path=ORDERS, params=params)


def create_order_request(order: Mapping[str, Any]) -> NueRequest:
    return NueRequest(method="POST", path=ORDERS, json=dict(order))


def activate_order_request(order_id: str, *, generate_invoice: bool = True,
                           activate_invoice: bool = True) -> NueRequest:
    return NueRequest(method="POST", path=f"{ORDERS}/{quote(order_id, safe='')}",
                      json={"options": {"generateInvoice": generate_invoice, "activateInvoice": activate_invoice}})


def create_change_order_request(asset_changes: Sequence[Mapping[str, Any]],
                                products: Sequence[Mapping[str, Any]] = ()) -> NueRequest:
    for change in asset_changes:
        if change.get("changeType") not in CHANGE_TYPES:
            raise ValueError(f"unknown changeType {change.get('changeType')!r}")
    return NueRequest(method="POST", path=CHANGE_ORDERS,
                      json={"assetChanges": [dict(c) for c in asset_changes], "products": [dict(p) for p in products]})


def list_subscriptions_request(customer_ids: Sequence[str]) -> NueRequest:
    return NueRequest(method="GET", path=SUBSCRIPTIONS, params={"customerIds": customer_ids_param(customer_ids)})


PAGED_RESOURCES = {INVOICES: "invoices", CREDIT_MEMOS: "creditMemos"}  # path -> key if data is wrapped


def page_request(path: str, *, page: int, limit: int, filters: Mapping[str, str] | None = None,
                 includes: Sequence[str] = ()) -> NueRequest:
    """[doc] page (1-based) and limit (<= 500), with dynamic field filters in the query string."""
    if path not in PAGED_RESOURCES:
        raise ValueError(f"{path} is not a paged resource")
    if not 1 <= limit <= INVOICE_PAGE_MAX:
        raise ValueError(f"page limit must be 1..{INVOICE_PAGE_MAX}")
    params = {"page": str(page), "limit": str(limit), **dict(filters or {})}
    if includes:
        params["includes"] = ",".join(includes)
    return NueRequest(method="GET", path=path, params=params)


def get_invoice_request(invoice_id: str) -> NueRequest:
    return NueRequest(method="GET", path=f"{INVOICES}/{quote(invoice_id, safe='')}")


def products_request() -> NueRequest:
    return NueRequest(method="GET", path=PRODUCTS)


def create_quote_request(quote_body: Mapping[str, Any]) -> NueRequest:
    return NueRequest(method="POST", path=QUOTES, json=dict(quote_body))


def get_quote_request(quote_id: str) -> NueRequest:
    return NueRequest(method="GET", path=f"{QUOTES}/{quote(quote_id, safe='')}")


def pay_invoices_request(payments: Sequence[Mapping[str, Any]]) -> NueRequest:
    return NueRequest(method="POST", path=PAY_INVOICES, json={"payInvoices": [dict(p) for p in payments]})


def graphql_poll_request(type_name: str, fields: Sequence[str], *, since: str | None, limit: int,
                         after: tuple[str, str] | None = None) -> NueRequest:
    """[assumed] Hasura-style arguments, ordered by (lastModifiedDate, id). The first page reads from `since`;
    each next page is the keyset after the last (lastModifiedDate, id) read, as the values came (never an
    offset: a row that moves or arrives between pages shifts offsets, and an offset then skips a row)."""
    if after is not None:
        moment, last_id = (json.dumps(v) for v in after)
        where = (f"where: {{_or: [{{lastModifiedDate: {{_gt: {moment}}}}}, "
                 f"{{lastModifiedDate: {{_eq: {moment}}}, id: {{_gt: {last_id}}}}}]}}, ")
    else:
        where = f'where: {{lastModifiedDate: {{_gte: {json.dumps(since)}}}}}, ' if since else ""
    selection = " ".join(dict.fromkeys([*fields, "id", "lastModifiedDate"]))
    query = (f"query {{ {type_name}({where}order_by: {{lastModifiedDate: asc, id: asc}}, "
             f"limit: {int(limit)}) {{ {selection} }} }}")
    return NueRequest(method="POST", path=GRAPHQL, json={"query": query})


def graphql_in_request(type_name: str, field_name: str, values: Sequence[str], fields: Sequence[str]) -> NueRequest:
    """[assumed] Hasura-style `_in`: many records of one type in one read."""
    if not 1 <= len(values) <= GRAPHQL_IN_MAX:
        raise ValueError(f"an _in read takes 1 to {GRAPHQL_IN_MAX} values")
    selection = " ".join(dict.fromkeys([*fields, "id"]))
    query = (f"query {{ {type_name}(where: {{{field_name}: {{_in: {json.dumps(list(values))}}}}}, "
             f"limit: {len(values) * 2}) {{ {selection} }} }}")
    return NueRequest(method="POST", path=GRAPHQL, json={"query": query})


def order_marker(opportunity_id: str) -> str:
    return f"{ASSUMED_ORDER_MARKER_PREFIX}{opportunity_id}"


def opportunity_of_order(order: Mapping[str, Any], marker_field: str | None) -> str | None:
    """The Salesforce opportunity an order was made for, by the same marker `order_matches_opportunity` reads."""
    if marker_field:
        value = order.get(marker_field)
        return str(value) if value else None
    description = str(order.get("description") or "")
    start = description.find(ASSUMED_ORDER_MARKER_PREFIX)
    if start < 0:
        return None
    rest = description[start + len(ASSUMED_ORDER_MARKER_PREFIX):]
    opportunity = "".join(c for c in rest[:18] if c.isalnum())
    return opportunity or None


def order_matches_opportunity(order: Mapping[str, Any], opportunity_id: str, marker_field: str | None) -> bool:
    """[assumed design] the order names its opportunity in `marker_field`, else in its description."""
    if marker_field:
        return order.get(marker_field) == opportunity_id
    return order_marker(opportunity_id) in str(order.get("description") or "")


# How an existing order is known to belong to an opportunity, strongest first (flow 1 reports which).
LINK_MARKER = "marker"  # revdaemon's own marker: the order is revdaemon's
LINK_ORDER_ID = "order id on the opportunity"  # Nue_Order_Id__c already names it
LINK_OPPORTUNITY = "opportunity id on the order"  # [assumed] ASSUMED_ORDER_OPPORTUNITY_FIELDS
LINK_QUOTE = "quote of the opportunity"  # [assumed] ASSUMED_ORDER_QUOTE_FIELDS -> a quote's opportunityId


LINK_RANK = (LINK_MARKER, LINK_ORDER_ID, LINK_OPPORTUNITY, LINK_QUOTE)


def linked_orders(orders: Sequence[Mapping[str, Any]], opportunity_id: str, *, marker_field: str | None,
                  quote_ids: frozenset[str] = frozenset(), order_id: str | None = None
                  ) -> list[tuple[Mapping[str, Any], str]]:
    """The orders tied to the opportunity by any link (`order_link`), with that link, strongest first."""
    linked = [(order, link) for order in orders if (link := order_link(
        order, opportunity_id, marker_field=marker_field, quote_ids=quote_ids, order_id=order_id)) is not None]
    return sorted(linked, key=lambda pair: LINK_RANK.index(pair[1]))


def quote_ids_of(quotes: Sequence[Mapping[str, Any]], opportunity_id: str) -> frozenset[str]:
    """The ids of the quotes that [doc] name this opportunity in `opportunityId`."""
    return frozenset(str(q["id"]) for q in quotes
                     if q.get("id") and salesforce_wire.same_id(q.get("opportunityId"), opportunity_id))


def order_link(order: Mapping[str, Any], opportunity_id: str, *, marker_field: str | None,
               quote_ids: frozenset[str] = frozenset(), order_id: str | None = None) -> str | None:
    """Which link ties `order` to the opportunity (a LINK_* name), or None: the marker, the order id the
    opportunity shows, the opportunity id on the order, or a quote of the opportunity named on the order."""
    if order_matches_opportunity(order, opportunity_id, marker_field):
        return LINK_MARKER
    if order_id and str(order.get("id")) == order_id:
        return LINK_ORDER_ID
    if any(salesforce_wire.same_id(order.get(f), opportunity_id) for f in ASSUMED_ORDER_OPPORTUNITY_FIELDS):
        return LINK_OPPORTUNITY
    if quote_ids and any(str(order.get(f)) in quote_ids for f in ASSUMED_ORDER_QUOTE_FIELDS if order.get(f)):
        return LINK_QUOTE
    return None


# --- reading responses ------------------------------------------------------------------------------


def parse_envelope(body: Any) -> Envelope:
    """[doc] {"status": "success", "data": ..., "warnings": [...]}."""
    if not isinstance(body, dict) or "data" not in body:
        raise ValueError("Nue answered without the {status, data} envelope")
    warnings = tuple(str(w) for w in body.get("warnings") or ())
    return Envelope(data=body["data"], warnings=warnings)


def one(data: Any) -> dict[str, Any]:
    """A single record whether `data` is the record, `data[0]`, or a one-key wrapper."""
    if isinstance(data, list):
        if not data:
            raise ValueError("expected one record, got an empty list")
        data = data[0]
    if not isinstance(data, dict):
        raise ValueError(f"expected a record, got {type(data).__name__}")
    return data


def many(data: Any, key: str | None = None) -> list[dict[str, Any]]:
    """A list of records from `data[]` or `data.<key>[]`."""
    if key and isinstance(data, dict) and isinstance(data.get(key), list):
        data = data[key]
    if not isinstance(data, list):
        raise ValueError(f"expected a list of records, got {type(data).__name__}")
    return data


def unwrap_order(data: Any) -> dict[str, Any]:
    """[doc] POST /orders -> data.order."""
    if isinstance(data, dict) and isinstance(data.get("order"), dict):
        order: dict[str, Any] = data["order"]
        return order
    return one(data)


def unwrap_activation(data: Any) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """[doc] POST /orders/{id} -> data.order and data.assets[]."""
    return unwrap_order(data), list(data.get("assets") or []) if isinstance(data, dict) else []


def unwrap_page(body: Any, path: str) -> tuple[list[dict[str, Any]], int | None]:
    """[doc] data[] and pagination.total (the total may also sit inside data)."""
    envelope = parse_envelope(body)
    records = many(envelope.data, PAGED_RESOURCES[path])
    pagination = body.get("pagination") or (envelope.data.get("pagination") if isinstance(envelope.data, dict)
                                            else None)
    total = pagination.get("total") if isinstance(pagination, dict) else None
    return records, int(total) if total is not None else None


def unwrap_graphql(body: Any, type_name: str) -> list[dict[str, Any]]:
    """A GraphQL answer, plain ({"data": {Type: [...]}}) or inside Nue's envelope."""
    if isinstance(body, dict) and body.get("errors"):
        messages = "; ".join(str(e.get("message", e)) for e in body["errors"])
        raise ValueError(f"GraphQL errors: {messages}")
    data = body.get("data") if isinstance(body, dict) else None
    if isinstance(data, dict) and "data" in data and type_name not in data:
        data = data["data"]
    if not isinstance(data, dict) or not isinstance(data.get(type_name), list):
        raise ValueError(f"GraphQL answer has no {type_name} list")
    records: list[dict[str, Any]] = data[type_name]
    return records


def classify(status: int, body: Any, *, operation: str, record_ref: str | None = None,
             retry_after: float | None = None) -> SyncError:
    """[assumed] error bodies, read tolerantly: an HTML 502 page still gives a typed error with its status."""
    message, code = _error_text(body, status)
    item = ApiErrorItem(code=code or f"HTTP_{status}", message=message)
    context = ErrorContext(system=SYSTEM, operation=operation, status=status, error_code=code, record_ref=record_ref)
    if status == 429:
        return Throttled(message, context, (item,), retry_after=retry_after)
    if status in (401, 403):
        return AuthFailed(message, context, (item,))
    if status >= 500 or status == 408:
        return Retryable(message, context, (item,))
    return Permanent(message, context, (item,))


def _error_text(body: Any, status: int) -> tuple[str, str | None]:
    if isinstance(body, dict):
        message = body.get("message") or body.get("error") or body.get("error_description")
        code = body.get("errorCode") or (body.get("error") if isinstance(body.get("error"), str) else None)
        if message:
            return str(message), str(code) if code else None
    if isinstance(body, str) and body.strip():
        text = " ".join(body.split())
        return f"HTTP {status}: {text[:200]}", None
    return f"HTTP {status}", None
