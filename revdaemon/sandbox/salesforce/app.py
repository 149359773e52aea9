"""`SalesforceSim`: the org state, the Starlette app serving it, and a Python API for tests and scenarios.

Layers, outermost first: the request log, `FaultGate` (latency, dropped connections: before the request is
handled), `LostAnswerMiddleware` (after it is applied: a lost, 5xx or late answer; faults.py), the app.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, date, datetime
from typing import Any
from urllib.parse import parse_qsl, unquote

import anyio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from revdaemon.sandbox import lost_answers
from revdaemon.sandbox.lost_answers import LostAnswerMiddleware, SimulatedDrop
from revdaemon.sandbox.salesforce import admin
from revdaemon.sandbox.salesforce.errors import SESSION_INVALID, SfError, bad_request, not_found
from revdaemon.sandbox.salesforce.faults import LOCK_ROW_MESSAGE, UNAVAILABLE, Faults
from revdaemon.sandbox.salesforce.limits import ApiUsage
from revdaemon.sandbox.salesforce.oauth import OAuthError, Sessions, TokenEndpoint
from revdaemon.sandbox.salesforce.permissions import RULES, AccessControl
from revdaemon.sandbox.salesforce.pubsub import ChangeDataCapture, PubSubServerThread, PubSubService, RpcLog
from revdaemon.sandbox.salesforce.rest import VERSION_RE, Call, Reply, RestApi
from revdaemon.sandbox.salesforce.schema import Schema
from revdaemon.sandbox.salesforce.seeding import load_seed
from revdaemon.sandbox.salesforce.settings import CustomField, SalesforceSimSettings
from revdaemon.sandbox.salesforce.soql import QueryEngine
from revdaemon.sandbox.salesforce.store import Record, Store
from revdaemon.sandbox.salesforce.tooling import ToolingApi
from revdaemon.sandbox.seed import SeedData, build_seed
from revdaemon.sandbox.server import ADMIN_PREFIX, RequestLog, RequestLogMiddleware, ServerThread
from revdaemon.sandbox.sfids import IdFactory

JSON_TYPE = "application/json;charset=UTF-8"  # §2 "General"
WRITE_METHODS = frozenset({"POST", "PATCH", "PUT", "DELETE"})
SUPPORTED_VERSIONS = tuple(f"{v}.0" for v in range(20, 68))
SESSION_BODY = json.dumps(SESSION_INVALID).encode()
DATA_PATH = re.compile(r"/services/data/v\d+\.\d+(/.*)?\Z")
URI_AND_HEADERS_MAX = 16_384  # §2.1: a REST call's URI and headers together [doc]
# [assumed] a 504 comes from the edge in front of the org, as a gateway's page rather than the REST error array.
GATEWAY_TIMEOUT_HTML = (b"<html><head><title>504 Gateway Time-out</title></head>"
                        b"<body><h1>504 Gateway Time-out</h1></body></html>")


def _too_long(path: bytes, scope: Scope) -> Response | None:
    """A call whose URI and headers pass 16,384 bytes is refused, 414 when the URI alone does (salesforce-api.md
    §2.1, [doc]; the bodies are [assumed])."""
    uri = len(path) + (1 + len(scope["query_string"]) if scope["query_string"] else 0)
    headers = sum(len(name) + len(value) + 4 for name, value in scope["headers"])
    if uri > URI_AND_HEADERS_MAX:
        return _json(414, [{"errorCode": "URI_TOO_LONG", "message": f"The request URI is {uri} bytes long"}])
    if uri + headers > URI_AND_HEADERS_MAX:
        return _json(431, [{"errorCode": "REQUEST_HEADER_FIELDS_TOO_LARGE",
                            "message": f"The request URI and headers are {uri + headers} bytes long"}])
    return None


def _json(status: int, body: Any, headers: dict[str, str] | None = None) -> Response:
    content = b"" if body is None else json.dumps(body, separators=(",", ":")).encode()
    return Response(content, status_code=status, headers=headers, media_type=None if body is None else JSON_TYPE)


class FaultGate:
    """Outermost layer for API traffic: injected latency and dropped connections."""

    def __init__(self, app: ASGIApp, faults: Faults) -> None:
        self.app = app
        self.faults = faults

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith(ADMIN_PREFIX):
            await self.app(scope, receive, send)
            return
        if self.faults.settings.latency_ms:
            await anyio.sleep(self.faults.latency_seconds)
        if self.faults.drop():
            await lost_answers.send_truncated(send, content_type=JSON_TYPE.encode())
            raise SimulatedDrop("connection dropped by fault injection")
        await self.app(scope, receive, send)


def _api_path(path: str) -> str | None:
    """The path after /services/data/vNN.0, which `applied_paths` patterns match; None for other paths."""
    match = DATA_PATH.match(path)
    return None if match is None else (match.group(1) or "/")


async def _send_applied_error(send: Send, status: int) -> None:
    if status == 503:
        body, content_type = json.dumps(UNAVAILABLE.body()).encode(), JSON_TYPE.encode()
    else:
        body, content_type = GATEWAY_TIMEOUT_HTML, b"text/html"
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


class SalesforceSim:
    """One simulated org. `app` is the ASGI app (already logging requests into `log`)."""

    def __init__(self, settings: SalesforceSimSettings | None = None, seed_data: SeedData | None = None) -> None:
        self.settings = settings or SalesforceSimSettings()
        self.seed_data = seed_data or build_seed(self.settings.seed)
        self.log = RequestLog()
        self.faults = Faults(self.settings.faults)
        self.sessions = Sessions(self.settings.token_lifetime_seconds, self.settings.clock)
        self.usage = ApiUsage(self.settings.daily_limit, self.settings.per_second_cap, self.settings.clock)
        self.cdc = ChangeDataCapture(self.settings.clock, self.settings.cdc_entities,
                                     self.settings.event_retention_hours, self.settings.pubsub_keepalive_seconds)
        self._build_org()
        self.oauth = TokenEndpoint(self.settings, self.sessions, self.seed_data.organization_id, self._user_id_of)
        lost_answers.quiet_drops()
        routes = [
            Route("/services/oauth2/token", self._token, methods=["POST"]),
            Route("/services/data", self._versions, methods=["GET"]),
            Route("/services/data/", self._versions, methods=["GET"]),
            Route("/services/data/{rest:path}", self._rest,
                  methods=["GET", "HEAD", "POST", "PATCH", "PUT", "DELETE"]),
            admin.mount(self),
        ]
        self.starlette = Starlette(routes=routes)
        applied = LostAnswerMiddleware(self.starlette, self.faults, _send_applied_error, _api_path)
        self.app: ASGIApp = RequestLogMiddleware(FaultGate(applied, self.faults), self.log)

    def _build_org(self) -> None:
        s = self.settings
        self.schema = Schema(s.custom_fields, s.custom_objects, s.removed_fields, s.ungranted_fields)
        self.store = Store(self.schema, IdFactory((self.seed_data.seed + 1_000) % 3_844), s.clock)
        self.store.rules.update(RULES)
        load_seed(self.store, self.seed_data)
        if self._user_id_of(s.username) is None:  # the API user is a User record whatever its name
            local = s.username.partition("@")[0]
            self.store.create("User", {"Username": s.username, "LastName": local, "Email": s.username,
                                       "Alias": local[:8], "IsActive": True}, self.seed_data.users[0].id,
                              system=True)
        self.access = AccessControl(self.schema, self.store)
        self.engine = QueryEngine(self.schema)
        self.rest = RestApi(self.store, self.schema, self.engine, page_size=s.page_size,
                            max_cursors=s.max_query_cursors, clock=s.clock,
                            usage=lambda: (self.usage.used, self.usage.daily_limit),
                            schema_for=self.access.schema_for)
        self.tooling = ToolingApi(self.schema, self.store, s.clock)
        self.rest.mounts["tooling"] = self.tooling.handle
        self.cdc.attach(self.store, self.schema)  # after the seed: loading it is not a change anyone hears of

    # ---- HTTP handlers -----------------------------------------------------------------------------

    def _base_url(self, request: Request) -> str:
        return str(request.base_url).rstrip("/")

    async def _token(self, request: Request) -> Response:
        form = dict(parse_qsl((await request.body()).decode()))
        try:
            body = self.oauth.exchange(form, request.headers.get("authorization"), self._base_url(request))
        except OAuthError as error:
            return _json(400, error.body)
        return _json(200, body)

    async def _versions(self, request: Request) -> Response:
        # The versions resource does not count against limits (§3.2).
        return _json(200, [{"label": f"v{v}", "url": f"/services/data/v{v}", "version": v}
                           for v in SUPPORTED_VERSIONS[-12:]])

    async def _rest(self, request: Request) -> Response:
        path_bytes: bytes = request.scope.get("raw_path") or request.scope["path"].encode()
        too_long = _too_long(path_bytes, request.scope)
        if too_long is not None:
            return too_long
        match = VERSION_RE.match(path_bytes.decode("latin-1").rstrip("/"))
        session = self._session(request.headers.get("authorization"))
        if isinstance(session, Response):
            return session
        user_id = session
        limit_header = {"Sforce-Limit-Info": ""}
        try:
            self.usage.admit()
        except SfError as error:
            return _json(error.status, error.body(), {"Sforce-Limit-Info": self.usage.header()})
        limit_header["Sforce-Limit-Info"] = self.usage.header()
        if match is None or match.group(1) not in SUPPORTED_VERSIONS:
            return _json(404, not_found().body(), limit_header)
        if self.faults.unavailable():
            return _json(UNAVAILABLE.status, UNAVAILABLE.body(), limit_header)
        method = request.method
        if method in WRITE_METHODS and self.faults.lock_row():
            locked = bad_request("UNABLE_TO_LOCK_ROW", LOCK_ROW_MESSAGE, [])
            return _json(locked.status, locked.body(), limit_header)
        rest = (match.group(2) or "").strip("/")
        body: Any = None
        if method in WRITE_METHODS:
            raw = await request.body()
            if raw.strip():
                try:
                    body = json.loads(raw)
                except json.JSONDecodeError as exc:
                    parse = bad_request("JSON_PARSER_ERROR", f"Unexpected character: {exc.msg} at [line:{exc.lineno}, "
                                                             f"column:{exc.colno}]")
                    return _json(400, parse.body(), limit_header)
                except UnicodeDecodeError:
                    return _json(400, bad_request("JSON_PARSER_ERROR", "Invalid UTF-8 in the request body").body(),
                                 limit_header)
        call = Call(method=method, segments=[unquote(s) for s in rest.split("/")] if rest else [],
                    version=match.group(1), params=dict(parse_qsl(request.scope["query_string"].decode())),
                    body=body, headers=request.headers, user_id=user_id)
        with self.cdc.capture.origin(f"com/salesforce/api/rest/{match.group(1)}"):
            reply: Reply = self.rest.handle(call)
        return _json(reply.status, reply.body, {**reply.headers, **limit_header})

    def _session(self, authorization: str | None) -> str | Response:
        if not authorization:
            return Response(SESSION_BODY, status_code=401, media_type=JSON_TYPE)
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() not in ("bearer", "oauth") or not token.strip():
            body = [{"message": "INVALID_HEADER_TYPE", "errorCode": "INVALID_AUTH_HEADER"}]  # §1.6
            return _json(401, body)
        session = self.sessions.check(token.strip())
        if session is None:
            return Response(SESSION_BODY, status_code=401, media_type=JSON_TYPE)
        return session.user_id

    @property
    def integration_user_id(self) -> str:
        """The User record the API sessions act as (settings.username)."""
        user_id = self._user_id_of(self.settings.username)
        assert user_id is not None
        return user_id

    def _user_id_of(self, username: str) -> str | None:
        with self.store.lock:
            for user in self.store.table("User").values():
                if str(user.get("Username", "")).lower() == username.lower() and not user["IsDeleted"]:
                    return str(user["Id"])
        return None

    # ---- Python API (tests, scenario driver) -------------------------------------------------------

    @property
    def sales_rep_id(self) -> str:
        """The seeded sales user; scenario edits are made as this user, like a rep in the UI."""
        return self.seed_data.users[1].id

    def serve(self, host: str = "127.0.0.1", port: int = 0) -> ServerThread:
        """A not-yet-started ServerThread for this app; use it as a context manager."""
        return ServerThread(self.app, host, port)

    def pubsub_service(self) -> PubSubService:
        """The org's Pub/Sub API (gRPC servicer); serve it with `serve_pubsub` or pubsub.serve_pubsub."""
        def user_of(token: str) -> str | None:
            session = self.sessions.check(token)
            return None if session is None else session.user_id
        return PubSubService(self.cdc, user_of, self.seed_data.organization_id)

    def serve_pubsub(self, host: str = "127.0.0.1", port: int = 0) -> PubSubServerThread:
        """A not-yet-started PubSubServerThread for this org; use it as a context manager."""
        return PubSubServerThread(self.pubsub_service(), host, port)

    @property
    def pubsub_log(self) -> RpcLog:
        return self.cdc.log

    def records(self, sobject: str, *, include_deleted: bool = False) -> list[Record]:
        od = self.schema.get(sobject)
        if od is None:
            raise KeyError(sobject)
        with self.store.lock:
            rows = [dict(r) for r in self.store.table(od.name).values() if include_deleted or not r["IsDeleted"]]
        return [{k: v for k, v in r.items() if k in od.fields} for r in rows]

    def record(self, sobject: str, record_id: str) -> Record:
        od = self.schema.get(sobject)
        if od is None:
            raise KeyError(sobject)
        with self.store.lock:
            return {k: v for k, v in self.store.find_live(od, record_id).items() if k in od.fields}

    def create(self, sobject: str, fields: dict[str, Any], *, user_id: str | None = None) -> str:
        return self.store.create(sobject, fields, user_id or self.sales_rep_id)

    def update(self, sobject: str, record_id: str, fields: dict[str, Any], *, user_id: str | None = None) -> Record:
        self.store.update(sobject, record_id, fields, user_id or self.sales_rep_id)
        return self.record(sobject, record_id)

    def commit_late(self, sobject: str, record_id: str, fields: dict[str, Any], *, minutes_ago: float = 5.0,
                    user_id: str | None = None) -> Record:
        """An edit whose transaction began `minutes_ago` and commits now (salesforce-api.md §4.1): its
        SystemModstamp is that earlier time, behind a poll cursor that has already passed it."""
        stamp = self.settings.clock() - minutes_ago * 60
        self.store.update(sobject, record_id, fields, user_id or self.sales_rep_id, stamp=stamp)
        return self.record(sobject, record_id)

    def delete(self, sobject: str, record_id: str, *, user_id: str | None = None) -> None:
        self.store.delete(sobject, record_id, user_id or self.sales_rep_id)

    def undelete(self, sobject: str, record_id: str, *, user_id: str | None = None) -> Record:
        """A rep restores the record from the Recycle Bin."""
        self.store.undelete(sobject, record_id, user_id or self.sales_rep_id)
        return self.record(sobject, record_id)

    # ---- Change Data Capture: selection and faults (pubsub/) --------------------------------------

    def select_for_cdc(self, sobject: str, selected: bool = True) -> list[str]:
        """Setup > Change Data Capture: (de)select an object; returns the selected ones. A Subscribe to a topic
        of an object no longer selected is refused from then on; open streams of it stay."""
        self.cdc.select(sobject, selected)
        return sorted(self.cdc.capture.selected)

    def reset_pubsub_streams(self, *, after_events: int | None = None) -> None:
        """Cut every open Subscribe stream with UNAVAILABLE: now, or once `after_events` more events have been
        delivered (mid-burst)."""
        self.cdc.streams.reset(after_events)

    def expire_replay_ids(self) -> None:
        """Purge the event bus as if the retention window had passed: a stored replay id is now invalid."""
        self.cdc.bus.expire()

    def publish_gap_event(self, sobject: str, record_ids: list[str], change_type: str = "GAP_UPDATE") -> None:
        """A gap event (GAP_CREATE, GAP_UPDATE, GAP_DELETE, GAP_UNDELETE) for the records: header only."""
        self.cdc.capture.publish_gap(self._cdc_entity(sobject), change_type, record_ids, self.sales_rep_id)

    def publish_gap_overflow(self, sobject: str) -> None:
        """A GAP_OVERFLOW event: too many changes in one transaction for change events to follow."""
        self.cdc.capture.publish_gap(self._cdc_entity(sobject), "GAP_OVERFLOW", [], self.sales_rep_id)

    def _cdc_entity(self, sobject: str) -> str:
        od = self.schema.get(sobject)
        if od is None:
            raise KeyError(sobject)
        return od.name

    def close_won(self, opportunity_id: str, *, close_date: date | None = None) -> Record:
        """A sales rep moves the opportunity to Closed Won (IsWon/IsClosed follow, SystemModstamp moves). Its
        CloseDate, unless the rep gives one, is what Salesforce itself leaves [doc: Salesforce Help 004517774,
        "Validation Rule Does Not Trigger for System Updates"]: a future date becomes today (UTC), a past one
        stays (so a deal dated before a go-live stays before it)."""
        today = datetime.fromtimestamp(self.settings.clock(), UTC).date()
        if close_date is None:
            current = self.store.table("Opportunity").get(opportunity_id, {}).get("CloseDate")
            close_date = min(date.fromisoformat(str(current)[:10]), today) if current else today
        return self.update("Opportunity", opportunity_id, {"StageName": "Closed Won",
                                                           "CloseDate": close_date.isoformat()})

    def set_faults(self, **changes: Any) -> dict[str, Any]:
        self.faults.update(**changes)
        return self.faults.as_dict()

    def faults_fired(self) -> dict[str, int]:
        """How many after-apply faults of each kind fired since the start or the last reset."""
        return self.faults.fired.as_dict()

    def expire_sessions(self) -> None:
        self.sessions.expire_all()

    def issue_refresh_token(self) -> str:
        return self.oauth.issue_refresh_token()

    @property
    def api_usage(self) -> int:
        return self.usage.used

    def set_api_usage(self, used: int) -> None:
        self.usage.reset(used)

    def add_field(self, field: CustomField) -> None:
        with self.store.lock:
            self.schema.add_field(field)

    def remove_field(self, sobject: str, field: str) -> None:
        """Schema drift: the field vanishes from describe, queries and writes (stored values stay hidden)."""
        with self.store.lock:
            self.schema.remove_field(sobject, field)

    def reset(self) -> None:
        """Back to the seeded org: records, schema, usage, faults, cursors and the request log. Sessions stay."""
        with self.store.lock:
            self._build_org()
        self.usage.reset()
        self.usage.set_daily_limit(self.settings.daily_limit)
        self.usage.set_per_second_cap(self.settings.per_second_cap)
        self.faults.configure(self.settings.faults)
        self.faults.fired.clear()
        self.log.clear()
        self.cdc.reset(self.settings.cdc_entities)
