"""NueSim: the simulated tenant, its app (auth, faults, request log), webhooks and scenario driver."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Send

from revdaemon.sandbox.lost_answers import LostAnswerMiddleware
from revdaemon.sandbox.nue import wire
from revdaemon.sandbox.nue.admin import admin_routes
from revdaemon.sandbox.nue.brownfield import load_brownfield
from revdaemon.sandbox.nue.dates import Clock
from revdaemon.sandbox.nue.errors import ApiError
from revdaemon.sandbox.nue.gate import Faults, GateMiddleware
from revdaemon.sandbox.nue.graphql_schema import Constraint, GraphQLEndpoint
from revdaemon.sandbox.nue.responses import error_response, send_error, send_raw
from revdaemon.sandbox.nue.routes import api_routes
from revdaemon.sandbox.nue.scenario import Scenario
from revdaemon.sandbox.nue.settings import NueSimSettings
from revdaemon.sandbox.nue.store import Record, Store
from revdaemon.sandbox.nue.table import Table
from revdaemon.sandbox.nue.webhooks import WebhookDispatcher
from revdaemon.sandbox.seed import SeedData, build_seed
from revdaemon.sandbox.server import RequestLog, RequestLogMiddleware


class NueSim:
    """`app` is the ASGI app to serve (already wrapped in RequestLogMiddleware); `close()` stops webhooks."""

    def __init__(self, settings: NueSimSettings | None = None, seed_data: SeedData | None = None) -> None:
        self.settings = settings or NueSimSettings()
        self.settings.validate()
        self.seed_data = seed_data or build_seed(self.settings.seed)
        self.log = RequestLog()
        self.clock = Clock()
        self.webhooks = WebhookDispatcher(self.settings)
        self.faults = Faults(self.settings)
        self.scenario = Scenario(self)
        self.store = self._new_store()
        self.graphql = GraphQLEndpoint(self._rows)
        starlette = Starlette(
            routes=[*api_routes(self), *admin_routes(self)],
            exception_handlers={ApiError: self._api_error, HTTPException: self._http_error,
                                Exception: self._crash},
        )
        applied = LostAnswerMiddleware(starlette, self.faults, self._send_applied_error)
        self.app = RequestLogMiddleware(GateMiddleware(applied, self.settings, self.faults), self.log)

    def _new_store(self) -> Store:
        store = Store(self.settings, self.seed_data, self.webhooks.publish, self.clock)
        self.store = store  # the scenario driver loads the brownfield history through it
        load_brownfield(store, self.scenario)
        return store

    def _rows(self, type_name: str, constraints: list[Constraint]) -> list[Record]:
        """The table's rows (rendered, in its order) that can meet the constraints: through ids or an index
        when a constraint is on one, else by a look at the stored field (a string field renders as itself, and
        a value of any other type never equals a string); the resolver filters on the whole query after."""
        store = self.store
        tables: dict[str, Table] = {"Customer": store.customers, "Order": store.orders,
                                    "Subscription": store.subscriptions, "Invoice": store.invoices,
                                    "Quote": store.quotes, "Contact": store.contacts}
        table = tables[type_name]
        with store.lock:
            records: Iterable[Record] = table.values()
            by_id: list[frozenset[str]] = [values for name, values in constraints if name == "id"]
            indexed = [(name, values) for name, values in constraints if table.indexed(name)]
            if by_id:
                ids = min(by_id, key=len)
                records = table.ordered(ids)
            elif indexed:
                records = table.where(*min(indexed, key=lambda c: len(c[1])))
            elif constraints:
                name, values = constraints[0]
                records = [r for r in records if isinstance(v := r.get(name), str) and v in values]
            return [wire.render(r) for r in records]

    # --- errors in the assumed body shape ------------------------------------------------------------------
    async def _api_error(self, request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ApiError)
        return error_response(self.settings, exc.status, exc.message, exc.error_code)

    async def _http_error(self, request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        return error_response(self.settings, exc.status_code, str(exc.detail))

    async def _crash(self, request: Request, exc: Exception) -> Response:
        return error_response(self.settings, 500, f"internal error: {type(exc).__name__}")

    async def _send_applied_error(self, send: Send, status: int) -> None:
        """The 5xx a client gets for a request that was applied (gate.py's after-apply faults)."""
        if status == 504:
            await send_raw(send, 504, wire.GATEWAY_TIMEOUT_HTML, "text/html")
        else:
            await send_error(send, self.settings, status, "service unavailable")

    # --- control ---------------------------------------------------------------------------------------------
    def reset(self) -> None:
        """Back to the seed: empty tenant, empty logs, same deterministic ids and fault draws."""
        self.webhooks.clear()
        self.log.clear()
        self.faults.reset()
        self.store = self._new_store()

    def close(self) -> None:
        self.webhooks.close()

    def __enter__(self) -> NueSim:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
