"""Invoices and payments [doc]: two status axes, payment applications, dynamic list filters."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import unquote_plus

from revdaemon.sandbox.nue import wire
from revdaemon.sandbox.nue.errors import bad_request, not_found, unprocessable
from revdaemon.sandbox.nue.pricing import ZERO, charge, discounted, money
from revdaemon.sandbox.nue.store import Record, Store
from revdaemon.sandbox.nue.table import Table

INVOICE_FIELDS = ("id", "name", "customerId", "orderId", "amount", "balance", "taxAmount", "invoiceDate",
                  "dueDate", "status", "paymentStatus", "currencyIsoCode", "createdDate", "lastModifiedDate")
RESERVED_PARAMS = ("page", "limit", "includes", "status", "paymentStatus", "customerId")
OPERATORS = (">=", "<=", "!=", ">", "<", "=")  # longest first


def _payment_days(term: Any) -> int:
    digits = "".join(c for c in str(term or "") if c.isdigit())
    return int(digits) if digits else 30


# --- invoice items ------------------------------------------------------------------------------------
def items_for_lines(store: Store, lines: list[Record]) -> list[Record]:
    """First billing period of each charged order product (one-time ones in full)."""
    items = []
    stack = list(lines)
    while stack:
        line = stack.pop(0)
        stack[0:0] = line.get("addOns", [])
        if line["_included"] or line["freeTrial"]:
            continue
        entry = store.catalog.entries[line["priceBookEntryId"]]
        amount = discounted(charge(entry, line["quantity"]), line["discount"])
        items.append({"productId": entry.product_id, "priceBookEntryId": entry.id, "quantity": line["quantity"],
                      "amount": amount, "startDate": line.get("subscriptionStartDate"), "subscriptionId": None})
    return items


def items_for_changes(store: Store, subs: list[Record]) -> list[Record]:
    """A change order bills one month of each subscription's current price [assumed, simplified]."""
    items = []
    for sub in subs:
        amount = store.subscription_mrr(sub)
        if amount > 0:
            items.append({"productId": sub["productId"], "priceBookEntryId": sub["priceBookEntryId"],
                          "quantity": sub["quantity"], "amount": amount, "startDate": store.clock.today().isoformat(),
                          "subscriptionId": sub["id"]})
    return items


def items_for_customer(store: Store, customer_id: str) -> list[Record]:
    """One month of every live subscription: what a bill run would post."""
    return items_for_changes(store, [s for s in store.subscriptions.where("customerId", [customer_id])
                                     if s["customerId"] == customer_id])


# --- invoices -----------------------------------------------------------------------------------------
def _invoice(store: Store, customer_id: str, items: list[Record], order_id: str | None) -> Record:
    today = store.clock.today()
    customer = store.customers[customer_id]
    amount = money(sum((i["amount"] for i in items), ZERO))
    return {
        "id": store.ids.uuid(), "name": store.ids.number("invoice"), "customerId": customer_id,
        "orderId": order_id, "amount": amount, "balance": amount, "taxAmount": ZERO,
        "invoiceDate": today.isoformat(),
        "dueDate": (today + timedelta(days=_payment_days(customer.get("paymentTerm")))).isoformat(),
        "status": "Draft", "paymentStatus": "NotTransferred", "currencyIsoCode": "USD",
        "invoiceItems": [{"id": store.ids.uuid(), **i} for i in items],
    }


def preview(store: Store, customer_id: str, items: list[Record], order_id: str | None) -> Record:
    invoice = _invoice(store, customer_id, items, order_id)
    invoice["id"] = None
    invoice["name"] = None
    return invoice


def create_invoice(store: Store, customer_id: str, items: list[Record], order_id: str | None, *,
                   activate: bool) -> Record:
    with store.lock:
        invoice = _invoice(store, customer_id, items, order_id)
        store.touch(invoice, created=True)
        store.invoices[invoice["id"]] = invoice
        store.payment_applications[invoice["id"]] = []
        store.emit("invoice.created", invoice)
        if activate:
            activate_invoice(store, invoice["id"])
        return invoice


def _get(store: Store, invoice_id: str) -> Record:
    invoice = store.invoices.get(invoice_id)
    if invoice is None:
        raise not_found(f"invoice {invoice_id} not found")
    return invoice


def submit_invoice(store: Store, invoice_id: str) -> Record:
    """Draft -> Pending Activation."""
    with store.lock:
        invoice = _get(store, invoice_id)
        if invoice["status"] != "Draft":
            raise unprocessable(f"invoice {invoice['name']} is {invoice['status']}, not Draft")
        invoice["status"] = "Pending Activation"
        store.touch(invoice)
        store.emit("invoice.updated", invoice)
        return invoice


def activate_invoice(store: Store, invoice_id: str) -> Record:
    with store.lock:
        invoice = _get(store, invoice_id)
        if invoice["status"] not in ("Draft", "Pending Activation"):
            raise unprocessable(f"invoice {invoice['name']} is {invoice['status']}")
        invoice["status"] = "Active"
        store.touch(invoice)
        store.emit("invoice.activated", invoice)
        return invoice


def cancel_invoice(store: Store, invoice_id: str) -> Record:
    with store.lock:
        invoice = _get(store, invoice_id)
        if invoice["paymentStatus"] in ("Paid", "PartiallyPaid"):
            raise unprocessable(f"invoice {invoice['name']} has payments")
        invoice.update(status="Canceled", paymentStatus="Canceled")
        store.touch(invoice)
        store.emit("invoice.updated", invoice)
        return invoice


def set_payment_status(store: Store, invoice_id: str, payment_status: str) -> Record:
    """Collection outcomes that are not payments: Transferred, TransferError (a failed collection)."""
    if payment_status not in wire.PAYMENT_STATUSES:
        raise bad_request(f"paymentStatus must be one of {', '.join(wire.PAYMENT_STATUSES)}")
    with store.lock:
        invoice = _get(store, invoice_id)
        if invoice["status"] != "Active":
            raise unprocessable(f"invoice {invoice['name']} is {invoice['status']}, not Active")
        invoice["paymentStatus"] = payment_status
        store.touch(invoice)
        store.emit("invoice.updated", invoice)
        return invoice


# --- payments -----------------------------------------------------------------------------------------
def amount_in(value: Any, where: str) -> Decimal:
    """A request body's amount (a JSON number or numeric text) as a Decimal, or 400 naming `where`."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise bad_request(f"{where} must be a number")
    try:
        return Decimal(str(value))
    except InvalidOperation:
        raise bad_request(f"{where} must be a number") from None


def pay(store: Store, body: Any) -> dict[str, Any]:
    items = body.get("payInvoices") if isinstance(body, dict) else None
    if not isinstance(items, list) or not items:
        raise bad_request("payInvoices must be a non-empty array")
    with store.lock:
        planned: list[tuple[Record, Decimal, dict[str, Any]]] = []
        owed: dict[str, Decimal] = {}
        for index, item in enumerate(items):
            where = f"payInvoices[{index}]"
            if not isinstance(item, dict):
                raise bad_request(f"{where} must be an object")
            invoice = store.invoices.get(str(item.get("invoiceId")))
            if invoice is None:
                raise unprocessable(f"{where}: invoice {item.get('invoiceId')!r} not found")
            customer = store.customer(item["customerId"]) if isinstance(item.get("customerId"), str) else None
            if customer is None or customer["id"] != invoice["customerId"]:
                raise unprocessable(f"{where}: customerId does not own the invoice")
            amount = amount_in(item.get("transactionAmount"), f"{where}.transactionAmount")
            if invoice["status"] != "Active":
                raise unprocessable(f"{where}: invoice {invoice['name']} is {invoice['status']}, not Active")
            left: Decimal = owed[invoice["id"]] if invoice["id"] in owed else invoice["balance"]
            if amount <= 0 or amount > left:
                raise unprocessable(f"{where}: transactionAmount must be in (0, {left}]")
            owed[invoice["id"]] = left - amount
            planned.append((invoice, amount, item))
        applications = []
        touched: dict[str, Record] = {}
        for invoice, amount, item in planned:
            application = {
                "id": store.ids.uuid(), "name": store.ids.number("payment"), "invoiceId": invoice["id"],
                "customerId": invoice["customerId"], "appliedAmount": money(amount),
                "transactionAmount": money(amount), "paymentSource": item.get("paymentSource"),
                "paymentMethod": item.get("paymentMethod"), "appliedDate": store.clock.today().isoformat(),
            }
            store.touch(application, created=True)
            store.payment_applications[invoice["id"]].append(application)
            invoice["balance"] = money(invoice["balance"] - amount)
            invoice["paymentStatus"] = "Paid" if invoice["balance"] == 0 else "PartiallyPaid"
            touched[invoice["id"]] = invoice
            applications.append(application)
        for invoice in touched.values():
            store.touch(invoice)
            store.emit("invoice.updated", invoice)
        return {"paymentApplications": applications, "invoices": list(touched.values())}


# --- reads --------------------------------------------------------------------------------------------
def parse_query(raw_query: str) -> tuple[dict[str, str], list[tuple[str, str, str]]]:
    """Plain parameters, and dynamic field filters such as `amount>=1000` [doc], from the raw query."""
    params: dict[str, str] = {}
    filters: list[tuple[str, str, str]] = []
    for part in raw_query.split("&"):
        if not part:
            continue
        text = unquote_plus(part)
        position, operator = min(((text.find(op), op) for op in OPERATORS if op in text),
                                 key=lambda found: (found[0], -len(found[1])), default=(-1, ""))
        if position <= 0:
            raise bad_request(f"cannot read query parameter {text!r}")
        key, value = text[:position], text[position + len(operator):]
        if operator == "=" and key in RESERVED_PARAMS:
            params[key] = value
        else:
            filters.append((key, operator, value))
    return params, filters


def _compare(left: Any, operator: str, right: Any) -> bool:
    if left is None:
        return operator == "!=" and right is not None
    if operator == "=":
        return bool(left == right)
    if operator == "!=":
        return bool(left != right)
    if operator == ">":
        return bool(left > right)
    if operator == ">=":
        return bool(left >= right)
    if operator == "<":
        return bool(left < right)
    return bool(left <= right)


def _typed(field: str, value: str) -> Any:
    if field in ("amount", "balance", "taxAmount", "amountWithoutTax"):
        try:
            return Decimal(value)
        except InvalidOperation:
            raise bad_request(f"{field} filter needs a number, got {value!r}") from None
    return value  # ISO dates and timestamps compare as text


def paged(store: Store, raw_query: str, table: dict[str, Record], fields: tuple[str, ...], noun: str,
          customer_key: str | None = None) -> tuple[list[Record], int, int, int, dict[str, str]]:
    """One page of a billing table [doc: page (1-based), limit, status, paymentStatus, customerId and dynamic
    field filters]: the chosen records, the total, page, limit and the plain parameters. Call under the lock."""
    params, filters = parse_query(raw_query)
    try:
        page = int(params.get("page", "1"))
        limit = int(params.get("limit", "100"))
    except ValueError:
        raise bad_request("page and limit are integers") from None
    if page < 1:
        raise bad_request("page is 1-based")
    if not 1 <= limit <= store.settings.max_page_limit:
        raise bad_request(f"limit must be between 1 and {store.settings.max_page_limit}")
    typed = []
    for field, operator, value in filters:
        if field not in fields:
            raise bad_request(f"unknown {noun} field {field!r} in the query")
        typed.append((field, operator, _typed(field, value)))
    statuses = set(params["status"].split(",")) if "status" in params else None
    payment = set(params["paymentStatus"].split(",")) if "paymentStatus" in params else None
    owner = customer_key or params.get("customerId")
    owner_id = None
    if owner is not None:
        customer = store.customer(owner)
        if customer is None:
            if customer_key is not None:
                raise not_found(f"customer {customer_key} not found")
            return [], 0, page, limit, params
        owner_id = customer["id"]
    candidates = (table.where("customerId", [owner_id]) if owner_id is not None and isinstance(table, Table)
                  else table.values())
    rows = [
        r for r in candidates
        if (owner_id is None or r["customerId"] == owner_id)
        and (statuses is None or r["status"] in statuses)
        and (payment is None or r["paymentStatus"] in payment)
        and all(_compare(r.get(f), op, v) for f, op, v in typed)
    ]
    # Stable order for page walks: oldest change first [assumed].
    rows.sort(key=lambda r: (r["lastModifiedDate"], r["id"]))
    return rows[(page - 1) * limit: page * limit], len(rows), page, limit, params


def list_invoices(store: Store, raw_query: str, customer_key: str | None = None
                  ) -> tuple[list[Record], int, int, int]:
    with store.lock:
        chosen, total, page, limit, params = paged(store, raw_query, store.invoices, INVOICE_FIELDS, "invoice",
                                                   customer_key)
        include_payments = "paymentApplications" in params.get("includes", "").split(",")
        return [invoice_view(store, i, include_payments) for i in chosen], total, page, limit


def invoice_view(store: Store, invoice: Record, include_payments: bool) -> Record:
    view = wire.render(invoice)
    if include_payments:
        view["paymentApplications"] = [wire.render(a) for a in store.payment_applications.get(invoice["id"], [])]
    return view


def get_invoice(store: Store, invoice_id: str, include_payments: bool) -> Record:
    with store.lock:
        return invoice_view(store, _get(store, invoice_id), include_payments)

