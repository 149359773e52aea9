"""Credit memos [doc]: the list (global and per customer), one by id, and applying them to invoices.

api-docs.nue.io: fetching-credit-memos (GET /credit-memos, GET /customers/{customerId}/credit-memos with a Nue
or external customer id, GET /credit-memos/{creditMemoId}; pagination, filtering, includes),
credit-memos-overview (Draft -> Pending Activation -> Active -> Canceled; applying sets the payment status to
Applied or PartiallyApplied), process-payment (POST /billing/credit-memos:apply with
`{"appliedInvoices": [{"invoiceId", "creditMemoId", "transactionAmount"}]}`), and the credit memo fields of
the get-credit-memos-by-invoice-id and convert-credits-to-credit-memos responses.
[assumed]: the list's envelope and filters are the invoices' (data[] + pagination), the apply answer's shape
(wire.DATA_SHAPES), and what applying does to the invoice (its balance falls, its paymentStatus becomes
Paid or PartiallyPaid, and the application shows among its paymentApplications).
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any, Protocol

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from revdaemon.sandbox.nue import billing, wire
from revdaemon.sandbox.nue.errors import bad_request, not_found, unprocessable
from revdaemon.sandbox.nue.pricing import ZERO, money
from revdaemon.sandbox.nue.responses import json_response
from revdaemon.sandbox.nue.settings import NueSimSettings
from revdaemon.sandbox.nue.store import Record, Store

CREDIT_MEMO_FIELDS = ("id", "name", "customerId", "invoiceId", "creditMemoDate", "startDate", "endDate",
                      "dueDate", "amount", "amountWithoutTax", "taxAmount", "balance", "status", "paymentStatus",
                      "source", "appliedByObject", "appliedById", "currencyIsoCode", "salesAccountId",
                      "createdDate", "lastModifiedDate")
STATUSES = ("Draft", "Pending Activation", "Active", "Canceled")  # [doc] overview


def issue(store: Store, customer: str, amount: Decimal, *, invoice_id: str | None = None,
          activate: bool = True) -> Record:
    """A credit memo: standalone (source Standalone) or crediting an invoice (source PaymentOperation,
    appliedByObject Invoice) [doc: the two ways credit memos arise]."""
    if amount <= 0:
        raise unprocessable("a credit memo's amount must be positive")
    with store.lock:
        owner = store.require_customer(customer)
        if invoice_id is not None and invoice_id not in store.invoices:
            raise unprocessable(f"invoice {invoice_id!r} not found")
        today = store.clock.today().isoformat()
        memo: Record = {
            "id": store.ids.uuid(), "name": store.ids.number("credit_memo"), "customerId": owner["id"],
            "invoiceId": invoice_id, "creditMemoDate": today, "startDate": today, "endDate": today,
            "dueDate": today, "amount": money(amount), "amountWithoutTax": money(amount), "taxAmount": ZERO,
            "balance": money(amount), "status": "Active" if activate else "Draft",
            "paymentStatus": "NotTransferred", "source": "PaymentOperation" if invoice_id else "Standalone",
            "appliedByObject": "Invoice" if invoice_id else None, "appliedById": invoice_id,
            "currencyIsoCode": "USD", "salesAccountId": owner.get("externalId"), "items": [],
        }
        store.touch(memo, created=True)
        store.credit_memos[memo["id"]] = memo
        return memo


def _get(store: Store, memo_id: str) -> Record:
    memo = store.credit_memos.get(memo_id)
    if memo is None:
        raise not_found(f"credit memo {memo_id} not found")
    return memo


def apply(store: Store, body: Any) -> dict[str, Any]:
    """All or nothing: every line is checked before any balance moves."""
    lines = body.get("appliedInvoices") if isinstance(body, dict) else None
    if not isinstance(lines, list) or not lines:
        raise bad_request("appliedInvoices must be a non-empty array")
    with store.lock:
        planned: list[tuple[Record, Record, Decimal]] = []
        left: dict[str, Decimal] = {}
        for index, line in enumerate(lines):
            where = f"appliedInvoices[{index}]"
            if not isinstance(line, dict):
                raise bad_request(f"{where} must be an object")
            invoice = store.invoices.get(str(line.get("invoiceId")))
            memo = store.credit_memos.get(str(line.get("creditMemoId")))
            if invoice is None or memo is None:
                raise unprocessable(f"{where}: invoice or credit memo not found")
            if memo["customerId"] != invoice["customerId"]:
                raise unprocessable(f"{where}: the credit memo and the invoice belong to different customers")
            if memo["status"] != "Active" or invoice["status"] != "Active":
                raise unprocessable(f"{where}: credit memo {memo['name']} is {memo['status']}, "
                                    f"invoice {invoice['name']} is {invoice['status']}; both must be Active")
            amount = billing.amount_in(line.get("transactionAmount"), f"{where}.transactionAmount")
            memo_left: Decimal = left[memo["id"]] if memo["id"] in left else memo["balance"]
            invoice_left: Decimal = left[invoice["id"]] if invoice["id"] in left else invoice["balance"]
            if amount <= 0 or amount > min(memo_left, invoice_left):
                raise unprocessable(f"{where}: transactionAmount must be in (0, {min(memo_left, invoice_left)}]")
            left[memo["id"]], left[invoice["id"]] = memo_left - amount, invoice_left - amount
            planned.append((memo, invoice, amount))
        applications, memos, invoices = [], {}, {}
        for memo, invoice, amount in planned:
            application = {
                "id": store.ids.uuid(), "name": store.ids.number("payment"), "invoiceId": invoice["id"],
                "creditMemoId": memo["id"], "customerId": invoice["customerId"], "appliedAmount": money(amount),
                "transactionAmount": money(amount), "paymentSource": "CreditMemo", "paymentMethod": None,
                "appliedDate": store.clock.today().isoformat(),
            }
            store.touch(application, created=True)
            store.payment_applications[invoice["id"]].append(application)
            memo["balance"] = money(memo["balance"] - amount)
            memo["paymentStatus"] = "Applied" if memo["balance"] == 0 else "PartiallyApplied"
            invoice["balance"] = money(invoice["balance"] - amount)
            invoice["paymentStatus"] = "Paid" if invoice["balance"] == 0 else "PartiallyPaid"
            applications.append(application)
            memos[memo["id"]], invoices[invoice["id"]] = memo, invoice
        for memo in memos.values():
            store.touch(memo)
        for invoice in invoices.values():
            store.touch(invoice)
            store.emit("invoice.updated", invoice)
        return {"appliedInvoices": applications, "creditMemos": list(memos.values()),
                "invoices": list(invoices.values())}


def seed(store: Store) -> None:
    """Some credit memos so the reads return data: for each customer already in the tenant (the brownfield
    history), a standalone goodwill credit of 50.00, active and unapplied [assumed amounts]."""
    for customer_id in list(store.customers):
        issue(store, customer_id, Decimal("50.00"))


class _Host(Protocol):  # the part of routes.Host these routes read
    store: Store
    settings: NueSimSettings


def credit_memo_routes(host: _Host) -> list[Route]:
    async def listing(request: Request) -> Response:
        store = host.store
        with store.lock:
            chosen, total, page, limit, _ = billing.paged(store, request.url.query, store.credit_memos,
                                                          CREDIT_MEMO_FIELDS, "credit memo",
                                                          request.path_params.get("id"))
            rows = [wire.render(m) for m in chosen]
        return json_response(wire.envelope(rows, None, **wire.pagination(page, limit, total)))

    async def one(request: Request) -> Response:
        store = host.store
        with store.lock:
            memo = _get(store, request.path_params["memo_id"])
            owner = request.path_params.get("id")
            if owner is not None and (store.customer(owner) or {}).get("id") != memo["customerId"]:
                raise not_found(f"credit memo {memo['id']} not found for customer {owner}")
            memo = wire.render(memo)
        return json_response(wire.envelope(wire.single(memo, host.settings.single_record_shape)))

    async def apply_route(request: Request) -> Response:
        raw = await request.body()
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            raise bad_request("the body is not valid JSON") from None
        return json_response(wire.envelope(wire.render(apply(host.store, body))))

    return [
        Route("/credit-memos", listing, methods=["GET"]),
        Route("/credit-memos/{memo_id}", one, methods=["GET"]),
        Route("/customers/{id}/credit-memos", listing, methods=["GET"]),
        # [assumed] the guide's fourth pattern is cut off in the stored copy; the invoices' fourth is this one.
        Route("/customers/{id}/credit-memos/{memo_id}", one, methods=["GET"]),
        Route("/billing/credit-memos:apply", apply_route, methods=["POST"]),
    ]
