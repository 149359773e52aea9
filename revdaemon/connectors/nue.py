"""The Nue client: sends what `nue_wire` builds over an injected `httpx.AsyncClient`.

Nue documents no idempotency header, so creates are made safe by the caller's lookups: `find_customer`
(by Nue or Salesforce Account id) and `find_order_for_opportunity` (by every link to the opportunity) run
before a create, and again when the engine finds a create recorded but never confirmed. For the same
reason a create is only repeated here when the request certainly never reached Nue.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import Any, TypeVar

import anyio
import httpx
import structlog

from revdaemon.config import NueSettings
from revdaemon.connectors import nue_wire as wire
from revdaemon.connectors.nue_wire import NueRequest
from revdaemon.connectors.wire_json import jsonable
from revdaemon.errors import ErrorContext, OutcomeUnknown, Permanent, Retryable, SyncError, Throttled, Unsent
from revdaemon.limits import ApiLimiter, RetryPolicy, parse_retry_after, retrying

log = structlog.get_logger("revdaemon.nue")

_UNSENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)


class NueClient:
    def __init__(
        self,
        settings: NueSettings,
        http: httpx.AsyncClient,
        *,
        limiter: ApiLimiter,
        retry: RetryPolicy,
        rng: random.Random | None = None,
        sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
    ) -> None:
        if settings.api_key is None:
            raise ValueError("nue.api_key is required")
        self._settings = settings
        self._http = http
        self._limiter = limiter
        self._retry = retry
        self._rng = rng or random.Random()
        self._sleep = sleep
        self._products: list[dict[str, Any]] | None = None
        self.calls = 0

    def set_limiter(self, limiter: ApiLimiter) -> None:
        """Swap the rate limiter (SIGHUP reload); calls already holding a slot finish under the old one."""
        self._limiter = limiter

    # --- customers ----------------------------------------------------------------------------

    async def find_customer(self, customer_id: str) -> dict[str, Any] | None:
        """A customer by its Nue id or its Salesforce Account id; None when Nue has no such customer."""
        try:
            body = await self._send(wire.get_customer_request(customer_id), operation="get customer",
                                    record_ref=customer_id)
        except Permanent as exc:
            if exc.context.status == 404:
                return None
            raise
        return wire.one(body.data)

    async def create_customers(self, customers: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """One POST of at most 200 customers (the caller batches, so a failed call loses no earlier one)."""
        operation = f"create customers x{len(customers)}"
        body = await self._send(wire.create_customers_request(customers), operation=operation, idempotent=False)
        created = _read_created(lambda: wire.many(body.data, "customers"), operation)
        if len(created) != len(customers):
            raise OutcomeUnknown(f"{operation}: Nue answered {len(created)} customers for {len(customers)} asked "
                                 "(it may have made them all)", ErrorContext(system=wire.SYSTEM, operation=operation))
        return created

    # --- orders and change orders -------------------------------------------------------------

    async def list_orders(self, customer_ids: Sequence[str], *, status: str | None = None) -> list[dict[str, Any]]:
        """Orders of many customers, in as few calls as the URL length allows."""
        orders: list[dict[str, Any]] = []
        for batch in wire.batches_by_query_length(list(dict.fromkeys(customer_ids))):
            body = await self._send(wire.list_orders_request(batch, status=status), operation="list orders")
            orders.extend(wire.many(body.data, "orders"))
        return orders

    async def find_order_for_opportunity(self, customer_id: str, opportunity_id: str,
                                         marker_field: str | None = None, *, order_id: str | None = None,
                                         quote_ids: Sequence[str] | None = None) -> dict[str, Any] | None:
        """The customer's order made for this opportunity by any link flow 1 recognises (nue_wire.order_link):
        revdaemon's marker, `order_id` (the one the opportunity shows), the opportunity id on the order, or
        one of the opportunity's quotes on the order. The quotes are read here (one GraphQL read, only when
        nothing else matched) unless `quote_ids` gives them. A live order is preferred to a canceled one."""
        orders = await self.list_orders([customer_id])
        found = self._linked(orders, opportunity_id, marker_field, order_id, frozenset(quote_ids or ()))
        if found is None and quote_ids is None and any(
                o.get(f) for o in orders for f in wire.ASSUMED_ORDER_QUOTE_FIELDS):
            quotes = await self.read_where_in("Quote", "opportunityId", [opportunity_id], wire.QUOTE_FIELDS)
            found = self._linked(orders, opportunity_id, marker_field, order_id,
                                 wire.quote_ids_of(quotes, opportunity_id))
        return found

    @staticmethod
    def _linked(orders: Sequence[dict[str, Any]], opportunity_id: str, marker_field: str | None,
                order_id: str | None, quote_ids: frozenset[str]) -> dict[str, Any] | None:
        linked = [dict(order) for order, _ in wire.linked_orders(
            orders, opportunity_id, marker_field=marker_field, quote_ids=quote_ids, order_id=order_id)]
        live = [o for o in linked if str(o.get("status", "")).lower() != "canceled"]
        chosen = live or linked
        return chosen[0] if chosen else None

    async def create_order(self, order: Mapping[str, Any]) -> dict[str, Any]:
        body = await self._send(wire.create_order_request(order), operation="create order", idempotent=False)
        return _read_created(lambda: wire.unwrap_order(body.data), "create order")

    async def activate_order(self, order_id: str, *, generate_invoice: bool = True,
                             activate_invoice: bool = True) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        # Not repeated after an ambiguous failure: a second activation is refused, which would turn a
        # success into an error. The flow re-reads the order's status instead.
        body = await self._send(wire.activate_order_request(order_id, generate_invoice=generate_invoice,
                                                            activate_invoice=activate_invoice),
                                operation="activate order", record_ref=order_id, idempotent=False)
        return _read_created(lambda: wire.unwrap_activation(body.data), "activate order", order_id)

    async def create_change_order(self, asset_changes: Sequence[Mapping[str, Any]],
                                  products: Sequence[Mapping[str, Any]] = ()) -> dict[str, Any]:
        body = await self._send(wire.create_change_order_request(asset_changes, products),
                                operation="create change order", idempotent=False)
        return wire.unwrap_order(body.data)

    # --- subscriptions, invoices, catalog, quotes -----------------------------------------------

    async def list_subscriptions(self, customer_ids: Sequence[str]) -> list[dict[str, Any]]:
        subscriptions: list[dict[str, Any]] = []
        for batch in wire.batches_by_query_length(list(dict.fromkeys(customer_ids))):
            body = await self._send(wire.list_subscriptions_request(batch), operation="list subscriptions")
            subscriptions.extend(wire.many(body.data, "subscriptions"))
        return subscriptions

    def iter_invoices(self, filters: Mapping[str, str] | None = None, *, page_size: int = wire.INVOICE_PAGE_MAX,
                      includes: Sequence[str] = ()) -> AsyncIterator[dict[str, Any]]:
        """Every invoice matching `filters` (e.g. {"lastModifiedDate>": "2026-01-01"}), page by page."""
        return self._pages(wire.INVOICES, filters, page_size=page_size, includes=includes)

    def iter_credit_memos(self, filters: Mapping[str, str] | None = None, *,
                          page_size: int = wire.INVOICE_PAGE_MAX) -> AsyncIterator[dict[str, Any]]:
        return self._pages(wire.CREDIT_MEMOS, filters, page_size=page_size)

    async def _pages(self, path: str, filters: Mapping[str, str] | None, *, page_size: int,
                     includes: Sequence[str] = ()) -> AsyncIterator[dict[str, Any]]:
        page = 1
        seen = 0
        while True:
            request = wire.page_request(path, page=page, limit=page_size, filters=filters, includes=includes)
            body = await self._send_raw(request, operation=f"list {path.strip('/')}")
            records, total = wire.unwrap_page(body, path)
            for record in records:
                yield record
            seen += len(records)
            if not records or len(records) < page_size or (total is not None and seen >= total):
                return
            page += 1

    async def get_invoice(self, invoice_id: str) -> dict[str, Any]:
        body = await self._send(wire.get_invoice_request(invoice_id), operation="get invoice", record_ref=invoice_id)
        return wire.one(body.data)

    async def products(self, *, refresh: bool = False) -> list[dict[str, Any]]:
        """The catalog, cached: it changes rarely and every order line needs it."""
        if refresh or self._products is None:
            body = await self._send(wire.products_request(), operation="list products")
            self._products = wire.many(body.data, "products")
        return self._products

    async def create_quote(self, quote: Mapping[str, Any]) -> dict[str, Any]:
        body = await self._send(wire.create_quote_request(quote), operation="create quote", idempotent=False)
        return wire.one(body.data.get("quote", body.data) if isinstance(body.data, dict) else body.data)

    async def get_quote(self, quote_id: str) -> dict[str, Any]:
        body = await self._send(wire.get_quote_request(quote_id), operation="get quote", record_ref=quote_id)
        return wire.one(body.data.get("quote", body.data) if isinstance(body.data, dict) else body.data)

    async def pay_invoices(self, payments: Sequence[Mapping[str, Any]]) -> Any:
        body = await self._send(wire.pay_invoices_request(payments), operation="pay invoices", idempotent=False)
        return body.data

    async def read_where_in(self, type_name: str, field_name: str, values: Sequence[str],
                            fields: Sequence[str]) -> list[dict[str, Any]]:
        """Records of `type_name` whose `field_name` is one of `values`, in as few GraphQL reads as allowed."""
        unique = list(dict.fromkeys(values))
        records: list[dict[str, Any]] = []
        for start in range(0, len(unique), wire.GRAPHQL_IN_MAX):
            request = wire.graphql_in_request(type_name, field_name, unique[start:start + wire.GRAPHQL_IN_MAX],
                                              fields)
            body = await self._send_raw(request, operation=f"read {type_name}")
            try:
                records.extend(wire.unwrap_graphql(body, type_name))
            except ValueError as exc:
                raise Permanent(str(exc), ErrorContext(system=wire.SYSTEM, operation=f"read {type_name}")) from exc
        return records

    async def poll(self, type_name: str, fields: Sequence[str], *, since: str | None,
                   page_size: int = 200) -> AsyncIterator[dict[str, Any]]:
        """Records of `type_name` modified at or after `since`, in (lastModifiedDate, id) order, over GraphQL.

        One paging rule: each page after the first is the keyset after the last row read. A run of equal
        timestamps longer than a page (a bulk billing run) is then walked by id, so a row that moves or is
        added between pages shifts no later row out of reach (offsets would)."""
        after: tuple[str, str] | None = None
        while True:
            request = wire.graphql_poll_request(type_name, fields, since=since, limit=page_size, after=after)
            body = await self._send_raw(request, operation=f"poll {type_name}")
            try:
                records = wire.unwrap_graphql(body, type_name)
            except ValueError as exc:
                raise Permanent(str(exc), ErrorContext(system=wire.SYSTEM, operation=f"poll {type_name}")) from exc
            for record in records:
                yield record
            if len(records) < page_size:
                return
            last = records[-1]
            if last.get("lastModifiedDate") is None or last.get("id") is None:
                # no key to continue from: an offset would be the only way on, and it can skip rows
                raise Permanent(f"a {type_name} row without lastModifiedDate or id ends a full page",
                                ErrorContext(system=wire.SYSTEM, operation=f"poll {type_name}"))
            after = (str(last["lastModifiedDate"]), str(last["id"]))

    # --- sending ------------------------------------------------------------------------------

    async def _send(self, request: NueRequest, *, operation: str, record_ref: str | None = None,
                    idempotent: bool = True) -> wire.Envelope:
        body = await self._send_raw(request, operation=operation, record_ref=record_ref, idempotent=idempotent)
        try:
            envelope = wire.parse_envelope(body)
        except ValueError as exc:
            # A create answered with no readable record was applied or not: the same unknown as a lost answer.
            raise (Retryable if idempotent else OutcomeUnknown)(str(exc), ErrorContext(
                system=wire.SYSTEM, operation=operation, record_ref=record_ref)) from exc
        for warning in envelope.warnings:
            log.warning("nue_warning", operation=operation, warning=warning, record_ref=record_ref)
        return envelope

    async def _send_raw(self, request: NueRequest, *, operation: str, record_ref: str | None = None,
                        idempotent: bool = True) -> Any:
        timeout = self._settings.timeout_seconds if idempotent else self._settings.create_timeout_seconds

        async def attempt() -> Any:
            return await self._send_once(request, operation=operation, record_ref=record_ref, wait_seconds=timeout)

        try:
            return await retrying(attempt, policy=self._retry, operation=operation, rng=self._rng, sleep=self._sleep,
                                  retry_if=(lambda exc: True) if idempotent else _safe_to_repeat)
        except Retryable as exc:
            if idempotent or _safe_to_repeat(exc):
                raise
            # Nue documents no idempotency key: a create that timed out or got a 5xx may exist [assumed].
            raise OutcomeUnknown(f"{exc.message} (it may have been applied)", exc.context, exc.items) from exc

    async def _send_once(self, request: NueRequest, *, operation: str, record_ref: str | None,
                         wait_seconds: float) -> Any:
        assert self._settings.api_key is not None
        headers = {wire.API_KEY_HEADER: self._settings.api_key.get_secret_value(), "Accept": "application/json"}
        context = ErrorContext(system=wire.SYSTEM, operation=operation, record_ref=record_ref)
        async with self._limiter.slot():
            try:
                response = await self._http.request(
                    request.method, self._settings.base_url + request.path, params=request.params or None,
                    json=jsonable(request.json), headers=headers, timeout=wait_seconds,
                )
            except _UNSENT as exc:
                raise Unsent(f"cannot reach Nue: {exc!r}", context) from exc
            except httpx.HTTPError as exc:
                raise Retryable(f"Nue request failed: {exc!r}", context) from exc
        self.calls += 1
        body = _body(response)
        if response.status_code >= 400:
            raise wire.classify(response.status_code, body, operation=operation, record_ref=record_ref,
                                retry_after=parse_retry_after(response.headers.get("Retry-After")))
        return body


T = TypeVar("T")


def _read_created(read: Callable[[], T], operation: str, record_ref: str | None = None) -> T:
    """The record a create or an activation answered with; an answer it cannot be read from leaves the outcome
    unknown (the request was applied, or not): the executor looks it up after the settle delay."""
    try:
        found = read()
        records = found if isinstance(found, list) else [found[0] if isinstance(found, tuple) else found]
        if not all(isinstance(r, dict) and r.get("id") for r in records):
            raise ValueError("a record without an id")
        return found
    except (ValueError, KeyError, TypeError, IndexError) as exc:
        raise OutcomeUnknown(f"{operation}: unreadable answer ({exc}); it may have been applied",
                             ErrorContext(system=wire.SYSTEM, operation=operation, record_ref=record_ref)) from exc


def _safe_to_repeat(exc: SyncError) -> bool:
    return isinstance(exc, Unsent | Throttled)


def _body(response: httpx.Response) -> Any:
    if not response.content:
        return None
    try:
        return response.json()
    except ValueError:
        return response.text
