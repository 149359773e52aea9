"""Serving a simulator: a request log every simulator shares, and two ways to run an ASGI app on loopback.

- `serve(app, sock)`: inside the caller's event loop (the `revdaemon sandbox` command, the demo).
- `ServerThread`: in a thread with its own loop, so synchronous clients (simple-salesforce, in tests) and
  async tests alike can call it; used as a context manager, it yields once the socket is listening.

Both bind the socket first, so port 0 gives an ephemeral port known before the first request.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import uvicorn
from starlette.types import ASGIApp, Message, Receive, Scope, Send

ADMIN_PREFIX = "/__sandbox"  # scenario and fault endpoints; not API traffic, so not in the request log
# A fault layer names the fault it made of a request here (in the ASGI scope); the log records it.
FAULT_SCOPE_KEY = "revdaemon.sandbox.fault"


@dataclass(frozen=True, kw_only=True)
class LoggedRequest:
    method: str
    path: str
    query: str
    status: int
    at: float  # unix time the request arrived
    duration_ms: float
    fault: str | None = None  # a fault fired after the request was applied (lost_answers.KINDS), if any

    def as_dict(self) -> dict[str, Any]:
        return {"method": self.method, "path": self.path, "query": self.query, "status": self.status,
                "at": self.at, "duration_ms": round(self.duration_ms, 3), "fault": self.fault}


class RequestLog:
    """Every API request a simulator answered, in order; safe to read from another thread."""

    def __init__(self) -> None:
        self._entries: list[LoggedRequest] = []
        self._lock = threading.Lock()

    def add(self, entry: LoggedRequest) -> None:
        with self._lock:
            self._entries.append(entry)

    def entries(self) -> list[LoggedRequest]:
        with self._lock:
            return list(self._entries)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def count(self, *, method: str | None = None, path_prefix: str | None = None,
              status: int | None = None, fault: str | None = None) -> int:
        return sum(
            1
            for e in self.entries()
            if (method is None or e.method == method)
            and (path_prefix is None or e.path.startswith(path_prefix))
            and (status is None or e.status == status)
            and (fault is None or e.fault == fault)
        )

    def writes(self) -> list[LoggedRequest]:
        """Requests that could change state (anything but GET and HEAD)."""
        return [e for e in self.entries() if e.method not in ("GET", "HEAD")]


class RequestLogMiddleware:
    """Pure ASGI middleware: records method, path, status, time and any after-apply fault of each non-admin
    HTTP request."""

    def __init__(self, app: ASGIApp, log: RequestLog) -> None:
        self.app = app
        self.log = log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith(ADMIN_PREFIX):
            await self.app(scope, receive, send)
            return
        started = time.time()
        clock = time.perf_counter()
        status = 500
        logged = False

        def note() -> None:
            nonlocal logged
            if not logged:
                logged = True
                self.log.add(LoggedRequest(
                    method=scope["method"], path=scope["path"], query=scope["query_string"].decode("latin-1"),
                    status=status, at=started, duration_ms=(time.perf_counter() - clock) * 1000,
                    fault=scope.get(FAULT_SCOPE_KEY),
                ))

        async def send_and_note(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                # Logged before the head leaves: a 204 is complete for the client with its head alone, and a
                # client that has its answer must find it in the log.
                note()
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            note()


def bind(host: str = "127.0.0.1", port: int = 0) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP stated explicitly: only then does asyncio set TCP_NODELAY on accepted connections, and
    # without it uvicorn's two writes per response wait ~40 ms on the client's delayed ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(1024)
    sock.setblocking(False)
    return sock


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _config(app: ASGIApp) -> uvicorn.Config:
    # h11 refuses a request head over 16 KiB with its own 400 before the app sees it; the simulators answer length
    # limits themselves, as the APIs document them (Salesforce: 414/431 past 16,384 bytes).
    return uvicorn.Config(app, lifespan="off", log_level="warning", access_log=False, timeout_graceful_shutdown=2,
                          h11_max_incomplete_event_size=64 * 1024)


async def serve(app: ASGIApp, sock: socket.socket) -> None:
    """Serve `app` on an already bound socket in the current event loop until cancelled."""
    server = uvicorn.Server(_config(app))
    await server.serve(sockets=[sock])


class ServerThread:
    """Runs an ASGI app on loopback in a background thread; `url` is known once entered."""

    def __init__(self, app: ASGIApp, host: str = "127.0.0.1", port: int = 0,
                 sock: socket.socket | None = None) -> None:
        self._sock = sock if sock is not None else bind(host, port)
        self.url = url_of(self._sock)
        self._server = uvicorn.Server(_config(app))
        self._thread = threading.Thread(target=self._run, name=f"sandbox-{self.url}", daemon=True)

    def _run(self) -> None:
        self._server.run(sockets=[self._sock])

    def start(self) -> ServerThread:
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"sandbox server at {self.url} did not start")
            time.sleep(0.005)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)
        self._sock.close()

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def iter_entries(log: RequestLog) -> Iterator[dict[str, Any]]:
    for entry in log.entries():
        yield entry.as_dict()
