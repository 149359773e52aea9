"""The metrics listener (metrics.listen: admin): /metrics for Prometheus and a /healthz with the pollers' errors.

The webhook listener faces Nue, and whoever reaches it; event counts per type, API usage and pollers' errors
are for the operator, so by default they are served here, on a small listener of their own on loopback. It is
the webhook listener's h11 server (its timeouts and caps) with a two-route app. There is no login: a
Prometheus scraper does not log in, which is why this listens on loopback by default and shows no secret.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from revdaemon.config import ListenerSettings, MetricsSettings
from revdaemon.listener.http import HttpServer, Request, Response
from revdaemon.ops.health import Health
from revdaemon.store import Store

METRICS_PATH = "/metrics"
HEALTH_PATH = "/healthz"
MAX_CONNECTIONS = 10  # a scraper or two and an operator's curl

Scrape = Callable[[], Awaitable[tuple[bytes, str]]]  # the rendered metrics and their content type


class AdminApp:
    def __init__(self, store: Store, health: Health, scrape: Scrape) -> None:
        self._store = store
        self._health = health
        self._scrape = scrape

    async def __call__(self, request: Request) -> Response:
        if request.path not in (METRICS_PATH, HEALTH_PATH):
            return Response.json(404, {"error": "not found"})
        if request.method not in ("GET", "HEAD"):
            return Response.json(405, {"error": "method not allowed"}, headers=[("allow", "GET, HEAD")])
        if request.path == METRICS_PATH:
            body, content_type = await self._scrape()
            return Response(status=200, body=body, headers=[("content-type", content_type)])
        store_ok = await self._store.ping()
        return Response.json(200 if self._health.ready(store_ok) else 503,
                             self._health.report(store_ok=store_ok, details=True))


def metrics_server(settings: MetricsSettings, app: AdminApp) -> HttpServer:
    return HttpServer(ListenerSettings(host=settings.host, port=settings.port, max_connections=MAX_CONNECTIONS),
                      app, name="metrics")
