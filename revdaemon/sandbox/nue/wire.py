"""How the simulated Nue looks on the wire; every [assumed] shape of nue-api.md lives here, and only here.

[doc] shapes are reproduced as documented; the [assumed] ones are marked, and where nue-api.md asks for it
a setting (settings.py) switches between variants. Correcting an assumption is an edit in this file.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

# --- Success envelope [doc] -------------------------------------------------------------------------------
STATUS_SUCCESS = "success"


def envelope(data: Any, warnings: list[str] | None = None, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"status": STATUS_SUCCESS, "data": data, "warnings": list(warnings or [])}
    body.update(extra)  # e.g. pagination on invoice lists
    return body


def pagination(page: int, limit: int, total: int) -> dict[str, Any]:
    # [doc] `pagination.total`; [assumed] it sits beside `data` and also echoes page and limit.
    return {"pagination": {"page": page, "limit": limit, "total": total}}


# Per-endpoint shape of `data` [doc: data.order, data[], data[0]]. Values: "list" (array of records),
# "single" (settings.single_record_shape: [record] or record, [assumed]), or a key name (an object
# `{"<key>": record, ...}`).
DATA_SHAPES: dict[str, str] = {
    "customers.create": "list",  # [doc] array in, array out
    "customers.get": "single",  # [assumed] data[0]
    "customers.update": "single",  # [assumed]
    "contacts.create": "list",  # [doc] array in; [assumed] array out
    "orders.create": "order",  # [doc] data.order.id
    "orders.activate": "order",  # [doc] data.order and data.assets[] (+ subscriptions, invoices [assumed])
    "orders.list": "list",  # [doc]
    "change_orders.create": "order",  # [assumed] like a draft order
    "subscriptions.list": "list",  # [doc]
    "subscriptions.update": "single",  # [assumed]
    "invoices.list": "list",  # [doc] with pagination
    "invoices.get": "single",  # [assumed]
    "invoices.pay": "paymentApplications",  # [assumed] {"paymentApplications": [...], "invoices": [...]}
    "quotes.create": "quote",  # [assumed] {"quote": {...}}
    "quotes.get": "quote",  # [assumed]
    "catalog.products": "list",  # [doc]
    "credit_memos.list": "list",  # [assumed] like invoices.list, with pagination
    "credit_memos.get": "single",  # [assumed]
    # [assumed] {"appliedInvoices": [applications], "creditMemos": [...], "invoices": [...]}
    "credit_memos.apply": "appliedInvoices",
}


def single(record: dict[str, Any], shape: str) -> Any:
    return [record] if shape == "list" else record


# --- Errors [assumed] -------------------------------------------------------------------------------------
ERROR_CODES: dict[int, str] = {
    400: "INVALID_REQUEST",
    401: "UNAUTHORIZED",
    403: "FORBIDDEN",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    409: "CONFLICT",
    422: "UNPROCESSABLE_ENTITY",
    429: "TOO_MANY_REQUESTS",
    500: "INTERNAL_SERVER_ERROR",
    502: "BAD_GATEWAY",
    503: "SERVICE_UNAVAILABLE",
}
_error_ids = itertools.count(1)


def error_body(status: int, message: str, style: str, error_code: str | None = None) -> dict[str, Any]:
    """`{"status": "failure", "message", "errorCode", "errorId"}`; the other styles test tolerant clients."""
    if style == "message_only":
        return {"message": message}
    if style == "error_only":
        return {"error": message}
    return {"status": "failure", "message": message, "errorCode": error_code or ERROR_CODES.get(status, "ERROR"),
            "errorId": f"err-{next(_error_ids):08d}"}


BAD_GATEWAY_HTML = (b"<html><head><title>502 Bad Gateway</title></head>"
                    b"<body><h1>502 Bad Gateway</h1></body></html>")
# [assumed] a 504 comes from a gateway in front of the API, like the 502: an HTML page, not the error body.
GATEWAY_TIMEOUT_HTML = (b"<html><head><title>504 Gateway Time-out</title></head>"
                        b"<body><h1>504 Gateway Time-out</h1></body></html>")
RETRY_AFTER_HEADER = "Retry-After"  # [assumed] seconds

# --- Auth [doc] -------------------------------------------------------------------------------------------
API_KEY_HEADER = "nue-api-key"

# --- Numbers, timestamps ----------------------------------------------------------------------------------
NUMBER_PREFIXES = {  # [doc] O-00000300, SUB-00000309; [assumed] the others
    "order": "O-",
    "subscription": "SUB-",
    "asset": "AST-",
    "invoice": "INV-",
    "customer": "CUST-",
    "quote": "Q-",
    "payment": "PA-",
    "credit_memo": "CM-",
}


def number(kind: str, n: int) -> str:
    return f"{NUMBER_PREFIXES[kind]}{n:08d}"


def composite_id(subscription_name: str, version: int) -> str:
    """`subscriptionCompositeId`: "composite identifier with version", e.g. SUB-00000309 version 1 [doc,
    api-docs.nue.io/subscription-data-reference]. The stored copy of that page drops punctuation, so the
    hyphen between number and version is [assumed]."""
    return f"{subscription_name}-{version}"


def timestamp(moment: datetime) -> str:
    """ISO-8601 in UTC with milliseconds and a Z [doc: ISO-8601; the exact form is assumed]."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def day(value: date) -> str:
    return value.isoformat()


# --- JSON: Decimal inside, numbers on the wire -------------------------------------------------------------
def _default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, datetime):
        return timestamp(value)
    if isinstance(value, date):
        return value.isoformat()
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


def dumps(value: Any) -> bytes:
    return json.dumps(value, default=_default, separators=(",", ":")).encode()


def render(record: dict[str, Any]) -> dict[str, Any]:
    """The public view of a stored record: keys starting with "_" are the simulator's own bookkeeping."""
    out: dict[str, Any] = {}
    for key, value in record.items():
        if key[0] == "_":
            continue
        if isinstance(value, list):
            value = [render(v) if isinstance(v, dict) else v for v in value]
        elif isinstance(value, dict):
            value = render(value)
        out[key] = value
    return out


# --- Price tags [assumed JSON shape] ------------------------------------------------------------------------
def price_tag(tag_type: str, tiers: list[dict[str, Any]]) -> dict[str, Any]:
    return {"priceTagType": tag_type, "tiers": tiers}


def price_tier(lower: Decimal, upper: Decimal | None, price: Decimal, charge_model: str) -> dict[str, Any]:
    return {"lowerBound": lower, "upperBound": upper, "price": price, "chargeModel": charge_model}


# --- Status values ------------------------------------------------------------------------------------------
ORDER_STATUSES = ("Draft", "Activated", "Canceled")  # [doc]
SUBSCRIPTION_STATUSES = ("Active", "Ended", "Expired", "Canceled", "Scheduled for cancellation")  # [doc]
INVOICE_STATUSES = ("Draft", "Pending Activation", "Active", "Canceled")  # [doc]
PAYMENT_STATUSES = ("NotTransferred", "Transferred", "TransferError", "Paid", "PartiallyPaid", "Canceled",
                    "CreditBack", "Applied", "PartiallyApplied", "Refunded", "PartiallyRefunded",
                    "WrittenOff", "PartiallyWrittenOff")  # [doc]
QUOTE_STATUSES = ("Draft", "Approved", "Accepted")  # [assumed]
# The ten change types of POST /change-orders [doc: api-docs.nue.io "Create Change Order" enum and "Creating Draft
# Change Orders"], plus AdjustPrice [assumed: not in that enum; a price change of one subscription].
CHANGE_TYPES = ("UpdateQuantity", "UpdateTerm", "Renew", "CoTerm", "Cancel", "ConvertFreeTrial",
                "Upgrade", "Downgrade", "Swap", "Reconfigure", "AdjustPrice")
# Upgrade / Downgrade / Swap move the subscription to a related product [doc: docs.nue.io "Upgrade, Downgrade &
# Swap"]; the field naming the price book entry moved to is [assumed] (revdaemon's flows/amendments.py reads the
# same name).
CHANGE_TARGET_ENTRY_FIELD = "targetPriceBookEntryId"
# Reconfigure changes a bundle's options [assumed: given as `addOns`, like an order line's]; AdjustPrice gives the
# subscription's new discount percentage [assumed: `discount`]. Neither shows on the subscription record.
RECORD_TYPES = ("Business", "Consumer")  # [doc]

# --- Links to Salesforce on orders [assumed] ----------------------------------------------------------------
# An order Nue makes from a quote names the quote; an order made by hand in a connected tenant may name the
# opportunity. Both are stored as given on POST /orders and shown on every read (revdaemon's nue_wire reads
# the same names).
ORDER_QUOTE_FIELD = "quoteId"
ORDER_OPPORTUNITY_FIELD = "opportunityId"

# --- Webhooks [assumed] -------------------------------------------------------------------------------------
# Documented: customer.created, order.created, order.activated, invoice.activated. Assumed ("very likely"):
# customer.updated, subscription.updated. Added for the scenarios: contact.created, subscription.created,
# invoice.created, invoice.updated, quote.created, quote.updated.
WEBHOOK_EVENT_TYPES = (
    "customer.created", "customer.updated", "contact.created",
    "order.created", "order.activated",
    "subscription.created", "subscription.updated",
    "invoice.created", "invoice.activated", "invoice.updated",
    "quote.created", "quote.updated",
)
SIGNATURE_HEADER = "Nue-Signature"
SIGNATURE_TOLERANCE_SECONDS = 300


def webhook_envelope(event_id: str, event_type: str, created: str, data: dict[str, Any]) -> dict[str, Any]:
    return {"id": event_id, "type": event_type, "createdDate": created, "data": data}


def sign(secret: str, unix_seconds: int, raw_body: bytes) -> str:
    """`t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<raw body>">`."""
    mac = hmac.new(secret.encode(), f"{unix_seconds}.".encode() + raw_body, hashlib.sha256).hexdigest()
    return f"t={unix_seconds},v1={mac}"


def path_token_url(target: str, token: str) -> str:
    return f"{target.rstrip('/')}/{token}"
