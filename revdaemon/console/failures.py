"""The console's last line: an exception no route handled becomes one structured log line and a plain 500.

Starlette's own error middleware answers 500 but raises the exception on, and uvicorn then prints it through
the standard library's logging as a plain-text traceback, many lines in the middle of the daemon's JSON log.
This middleware sits inside Starlette's and keeps the exception: the traceback goes into the one log line (the
pipeline's format_exc_info), the browser gets no detail of it.
"""

from __future__ import annotations

import structlog
from starlette.responses import PlainTextResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = structlog.get_logger("revdaemon.console")
FAILED_EVENT = "console_request_failed"


class LogFailures:
    def __init__(self, app: ASGIApp, *, headers: dict[str, str] | None = None) -> None:
        self._app = app
        self._headers = headers or {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        answered = False

        async def sending(message: Message) -> None:
            nonlocal answered
            answered = answered or message["type"] == "http.response.start"
            await send(message)

        try:
            await self._app(scope, receive, sending)
        except Exception as exc:
            route = scope.get("route")  # set by the router once a route matched
            log.error(FAILED_EVENT, route=getattr(route, "path", None), method=scope.get("method"),
                      path=scope.get("path"), error_type=type(exc).__name__, error=str(exc), exc_info=exc)
            if answered:
                return  # the answer had begun: the server closes the connection, nothing more can be said
            response = PlainTextResponse(f"Internal error. The daemon's log has the details ({FAILED_EVENT}).",
                                         status_code=500, headers=self._headers)
            await response(scope, receive, send)
