"""Routes of the webhook listener: /webhooks/nue[/<token>], /healthz, and /metrics only with metrics.listen: webhook.

A notification is authenticated before anything else is read from it, stored in the inbox through the
group committer, and acknowledged only after that commit. It is only a hint: the worker re-reads the
resource it names before planning any write.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

import structlog

from revdaemon.config import NueSettings, WebhookAuth
from revdaemon.listener import signature
from revdaemon.listener.envelope import EnvelopeError, InternalType, internal_flags, parse_notification
from revdaemon.listener.group_commit import GroupCommitter
from revdaemon.listener.http import Request, Response
from revdaemon.ops.health import Health
from revdaemon.ops.metrics import Metrics
from revdaemon.store import Store

log = structlog.get_logger("revdaemon.listener")

WEBHOOK_PATH = "/webhooks/nue"
METRICS_PATH = "/metrics"
HEALTH_PATH = "/healthz"
# `check --online --public-url` sends this type through the public URL: authenticated and parsed like any
# notification, answered with this daemon's tag, never stored.
PING_TYPE = "revdaemon.ping"
JSON_TYPES = ("application/json",)


class ListenerApp:
    def __init__(self, nue: NueSettings, committer: GroupCommitter, store: Store, health: Health,
                 *, clock: Callable[[], float] = time.time, metrics: Metrics | None = None,
                 scrape: Callable[[], Awaitable[tuple[bytes, str]]] | None = None) -> None:
        self._metrics = metrics
        self._scrape = scrape
        self._nue = nue
        self._committer = committer
        self._store = store
        self._health = health
        self._clock = clock
        self.received = 0
        self.refused: dict[int, int] = {}

    async def __call__(self, request: Request) -> Response:
        response = await self._route(request)
        if response.status >= 400:
            self.refused[response.status] = self.refused.get(response.status, 0) + 1
        return response

    async def _route(self, request: Request) -> Response:
        if self._health.shutting_down:
            return Response.json(503, {"error": "shutting down"}, headers=[("retry-after", "5")], close=True)
        if request.path == METRICS_PATH and self._scrape is not None:
            if request.method not in ("GET", "HEAD"):
                return _not_allowed("GET, HEAD")
            body, content_type = await self._scrape()
            return Response(status=200, body=body, headers=[("content-type", content_type)])
        if request.path == HEALTH_PATH:
            if request.method not in ("GET", "HEAD"):
                return _not_allowed("GET, HEAD")
            return await self._healthz()
        if request.path == WEBHOOK_PATH or request.path.startswith(WEBHOOK_PATH + "/"):
            token = request.path[len(WEBHOOK_PATH) + 1:] or None
            if token is not None and "/" in token:
                return Response.json(404, {"error": "not found"})
            if request.method != "POST":
                return _not_allowed("POST")
            return await self._webhook(request, token)
        return Response.json(404, {"error": "not found"})

    async def _webhook(self, request: Request, token: str | None) -> Response:
        refusal = self._authenticate(request, token)
        if refusal is not None:
            return refusal
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type not in JSON_TYPES:
            return Response.json(415, {"error": "content-type must be application/json"})
        try:
            event = parse_notification(request.body)
        except InternalType as exc:
            log.warning("webhook_refused", reason=str(exc))
            return Response.json(400, {"error": str(exc)})
        except EnvelopeError as exc:
            return Response.json(400, {"error": str(exc)})
        if event.type == PING_TYPE:
            log.info("webhook_ping_answered", event_key=event.key)
            return Response.json(200, {"pong": True, "daemon": self._health.daemon})
        if flags := internal_flags(event.payload):
            log.warning("webhook_flag_ignored", event_key=event.key, flags=flags,
                        reason="set only by revdaemon's own sources; a webhook's is stored as sent and not honoured")
        inserted = await self._committer.submit(event)
        self.received += 1
        if self._metrics is not None and inserted:
            self._metrics.event_received(event.source, event.type)
        if not inserted:
            return Response.json(200, {"stored": False, "duplicate": True, "key": event.key})
        return Response.json(202, {"stored": True, "key": event.key})

    def _authenticate(self, request: Request, token: str | None) -> Response | None:
        mode = self._nue.webhook_auth
        if mode is WebhookAuth.NONE:
            return None
        if mode is WebhookAuth.PATH_TOKEN:
            expected = self._nue.webhook_path_token
            if token is None or expected is None or not signature.token_matches(token, expected.get_secret_value()):
                log.warning("webhook_refused", reason="bad or missing path token")
                return Response.json(401, {"error": "bad or missing path token"})
            return None
        if token is not None:
            return Response.json(404, {"error": "not found"})
        assert self._nue.webhook_secret is not None  # config validation guarantees it in signature mode
        try:
            signature.verify(request.headers.get("nue-signature"), request.body,
                             self._nue.webhook_secret.get_secret_value(), now=self._clock(),
                             tolerance_seconds=self._nue.signature_tolerance_seconds)
        except signature.SignatureError as exc:
            log.warning("webhook_refused", reason=str(exc))
            return Response.json(401, {"error": str(exc)})
        return None

    async def _healthz(self) -> Response:
        # This port faces Nue, so poller errors (API messages, record ids) stay off it; they belong on the
        # admin listener (ops/admin.py) and in `revdaemon status`.
        store_ok = await self._store.ping()
        return Response.json(200 if self._health.ready(store_ok) else 503, self._health.report(store_ok=store_ok))


def _not_allowed(allow: str) -> Response:
    return Response.json(405, {"error": "method not allowed"}, headers=[("allow", allow)])
