"""The API's routes: paths without a version segment [doc], each answering in the envelope of wire.py."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from revdaemon.sandbox.nue import billing, customers, orders, quotes, wire
from revdaemon.sandbox.nue.credit_memos import credit_memo_routes
from revdaemon.sandbox.nue.customer_list import customer_list_routes
from revdaemon.sandbox.nue.errors import ApiError, bad_request, not_found
from revdaemon.sandbox.nue.graphql_schema import GraphQLEndpoint
from revdaemon.sandbox.nue.responses import json_response
from revdaemon.sandbox.nue.settings import NueSimSettings
from revdaemon.sandbox.nue.store import Store


class Host(Protocol):
    """What the routes need from the simulator; `store` is replaced on reset, so it is read per request."""

    settings: NueSimSettings
    store: Store
    graphql: GraphQLEndpoint


Handler = Callable[[Request], Awaitable[Response]]


async def read_json(request: Request) -> Any:
    raw = await request.body()
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        raise bad_request("the body is not valid JSON") from None


def api_routes(host: Host) -> list[Route]:
    def ok(endpoint: str, payload: Any, warnings: list[str] | None = None, **extra: Any) -> Response:
        shape = wire.DATA_SHAPES[endpoint]
        if shape == "single":
            data = wire.single(wire.render(payload), host.settings.single_record_shape)
        elif shape == "list":
            data = [wire.render(p) for p in payload]
        else:
            data = wire.render(payload)  # an object of named parts: {"order": ..., "assets": [...]}
        return json_response(wire.envelope(data, warnings, **extra))

    async def create_customers(request: Request) -> Response:
        created, warnings = customers.create_customers(host.store, await read_json(request))
        return ok("customers.create", created, warnings)

    async def get_customer(request: Request) -> Response:
        store = host.store
        with store.lock:
            return ok("customers.get", customers.get_customer(store, request.path_params["id"]))

    async def patch_customer(request: Request) -> Response:
        record, warnings = customers.update_customer(host.store, request.path_params["id"], await read_json(request))
        return ok("customers.update", record, warnings)

    async def create_contacts(request: Request) -> Response:
        created = customers.create_contacts(host.store, request.path_params["id"], await read_json(request))
        return ok("contacts.create", created)

    async def customer_invoices(request: Request) -> Response:
        rows, total, page, limit = billing.list_invoices(host.store, request.url.query, request.path_params["id"])
        return json_response(wire.envelope(rows, None, **wire.pagination(page, limit, total)))

    async def create_order(request: Request) -> Response:
        return ok("orders.create", orders.create_order(host.store, await read_json(request)))

    async def activate_order(request: Request) -> Response:
        result = orders.activate_order(host.store, request.path_params["id"], await read_json(request))
        return ok("orders.activate", result)

    async def list_orders(request: Request) -> Response:
        q = request.query_params
        rows = orders.list_orders(host.store, q.get("customerIds"), q.get("includes"), q.get("status"))
        return json_response(wire.envelope(rows))

    async def create_change_order(request: Request) -> Response:
        return ok("change_orders.create", orders.create_change_order(host.store, await read_json(request)))

    async def list_subscriptions(request: Request) -> Response:
        q = request.query_params
        return json_response(wire.envelope(orders.list_subscriptions(host.store, q.get("customerIds"),
                                                                     q.get("status"))))

    async def patch_subscription(request: Request) -> Response:
        record, warnings = orders.update_subscription(host.store, request.path_params["id"],
                                                      await read_json(request))
        return ok("subscriptions.update", record, warnings)

    async def list_invoices(request: Request) -> Response:
        rows, total, page, limit = billing.list_invoices(host.store, request.url.query)
        return json_response(wire.envelope(rows, None, **wire.pagination(page, limit, total)))

    async def get_invoice(request: Request) -> Response:
        include = "paymentApplications" in request.query_params.get("includes", "").split(",")
        view = billing.get_invoice(host.store, request.path_params["id"], include)
        return json_response(wire.envelope(wire.single(view, host.settings.single_record_shape)))

    async def pay(request: Request) -> Response:
        return ok("invoices.pay", billing.pay(host.store, await read_json(request)))

    async def create_quote(request: Request) -> Response:
        return ok("quotes.create", {"quote": quotes.save(host.store, await read_json(request))})

    async def preview_quote(request: Request) -> Response:
        return ok("quotes.create", {"quote": quotes.preview(host.store, await read_json(request))})

    async def get_quote(request: Request) -> Response:
        return ok("quotes.get", {"quote": quotes.get(host.store, request.path_params["id"])})

    async def products(request: Request) -> Response:
        return json_response(wire.envelope(host.store.catalog.products))

    async def graphql(request: Request) -> Response:
        if not host.settings.graphql_enabled:
            raise not_found("GraphQL is not enabled on this tenant")
        body = await read_json(request)
        if not isinstance(body, dict) or not isinstance(body.get("query"), str):
            raise bad_request("the body must be {\"query\": \"...\", \"variables\": {...}}")
        variables = body.get("variables")
        if variables is not None and not isinstance(variables, dict):
            raise bad_request("variables must be an object")
        result, _invalid = host.graphql.run(body["query"], variables, body.get("operationName"))
        # [assumed] Hasura-like: a query that does not parse or validate is still a 200 with `errors`.
        return json_response(result, 200)

    return [
        Route("/customers", create_customers, methods=["POST"]),
        Route("/customers/{id}", get_customer, methods=["GET"]),
        Route("/customers/{id}", patch_customer, methods=["PATCH"]),
        Route("/customers/{id}/contacts", create_contacts, methods=["POST"]),
        Route("/customers/{id}/invoices", customer_invoices, methods=["GET"]),
        Route("/orders", create_order, methods=["POST"]),
        Route("/orders", list_orders, methods=["GET"]),
        Route("/orders/{id}", activate_order, methods=["POST"]),
        Route("/change-orders", create_change_order, methods=["POST"]),
        Route("/subscriptions", list_subscriptions, methods=["GET"]),
        Route("/subscriptions/{id}", patch_subscription, methods=["PATCH"]),
        Route("/invoices", list_invoices, methods=["GET"]),
        Route("/invoices/{id}", get_invoice, methods=["GET"]),
        Route("/billing/invoices:pay", pay, methods=["POST"]),
        Route("/cpq/quotes", create_quote, methods=["POST"]),
        Route("/cpq/quotes:preview", preview_quote, methods=["POST"]),
        Route("/cpq/quotes/{id}", get_quote, methods=["GET"]),
        Route("/catalog/products", products, methods=["GET"]),
        Route("/async/graphql", graphql, methods=["POST"]),
        *credit_memo_routes(host),
        *customer_list_routes(host),
    ]


__all__ = ["ApiError", "Host", "api_routes"]
