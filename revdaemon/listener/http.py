"""A small HTTP/1.1 server: h11 (sans-I/O) over anyio TCP streams, in the daemon's event loop.

Why h11 rather than uvicorn: the listener must cut off slow clients while they are still sending
headers, refuse an oversized body before reading it, cap connections, and answer 503 while the daemon
shuts down. With h11 each of these is a few lines at the place it happens; uvicorn has no header-read
timeout. The operator console, which needs none of this, is a Starlette app served by uvicorn.

Theory of operation: one task per connection, bounded by a capacity limiter (a connection over the cap
gets 503 and is closed). For each request: the head must arrive within `header_timeout` (the first byte
of a kept-alive connection's next request within `keepalive_timeout`), the body within `body_timeout`;
a Content-Length over `max_body_bytes` gets 413 before the body is read, a chunked body is cut off at
the cap. The handler receives the whole request and returns the whole response.
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import anyio
import h11
import structlog
from anyio.abc import SocketAttribute, SocketStream, TaskStatus

from revdaemon.config import ListenerSettings
from revdaemon.errors import ListenError

log = structlog.get_logger("revdaemon.listener")

MAX_HEAD_BYTES = 16 * 1024  # request line and headers; h11's default is 16 KiB as well
READ_CHUNK = 64 * 1024
SERVER_HEADER = b"revdaemon"
LINGER_SECONDS = 2.0
LINGER_MAX_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True, kw_only=True)
class Request:
    method: str
    path: str
    query: str
    headers: dict[str, str]  # lower-cased names; repeated headers joined with ", "
    body: bytes


@dataclass(frozen=True, kw_only=True)
class Response:
    status: int
    body: bytes = b""
    headers: list[tuple[str, str]] = field(default_factory=list)
    close: bool = False

    @classmethod
    def json(cls, status: int, document: Any, *, headers: list[tuple[str, str]] | None = None,
             close: bool = False) -> Response:
        return cls(status=status, body=json.dumps(document, separators=(",", ":")).encode(),
                   headers=[("content-type", "application/json"), *(headers or [])], close=close)


Handler = Callable[[Request], Awaitable[Response]]


class _TooLarge(Exception):
    pass


class HttpServer:
    def __init__(self, settings: ListenerSettings, handler: Handler, *, name: str = "listener") -> None:
        self._settings = settings
        self._handler = handler
        self._name = name
        self._connections = anyio.CapacityLimiter(settings.max_connections)
        self.port: int | None = None

    async def serve(self, *, task_status: TaskStatus[int] = anyio.TASK_STATUS_IGNORED) -> None:
        host, port = self._settings.host, self._settings.port
        try:
            listener = await anyio.create_tcp_listener(local_host=host, local_port=port, reuse_port=False, backlog=1024)
        except OSError as exc:
            raise ListenError(f"the {self._name} cannot listen on {host}:{port}: {exc.strerror or exc} (another "
                              f"process holds the port, or the address is not this machine's; see {self._name}.host "
                              f"and {self._name}.port)") from exc
        async with listener:
            self.port = int(listener.extra(SocketAttribute.local_port))
            log.info("listener_started", name=self._name, host=self._settings.host, port=self.port)
            task_status.started(self.port)
            await listener.serve(self._connection)

    async def _connection(self, stream: SocketStream) -> None:
        async with stream:
            try:
                self._connections.acquire_on_behalf_of_nowait(stream)
            except anyio.WouldBlock:
                await _send_simple(stream, Response.json(503, {"error": "too many connections"}, close=True))
                return
            try:
                # A client that went away mid-request gets no answer: there is no one to send it to.
                with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError, anyio.EndOfStream,
                                         ConnectionError):
                    await self._serve_connection(stream)
            finally:
                self._connections.release_on_behalf_of(stream)

    async def _serve_connection(self, stream: SocketStream) -> None:
        s = self._settings
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD_BYTES)
        first = True
        phase = "head"
        # One cancel scope for the whole connection, its deadline moved at each phase: a scope per read
        # costs more than parsing a small webhook does.
        with anyio.CancelScope() as deadline:
            while True:
                phase = "head"
                deadline.deadline = anyio.current_time() + (s.header_timeout_seconds if first
                                                             else s.keepalive_timeout_seconds)
                try:
                    head = await _read_head(conn, stream)
                except h11.RemoteProtocolError as exc:
                    await _answer(conn, stream, Response.json(exc.error_status_hint, {"error": str(exc)}, close=True))
                    return
                if head is None:
                    return
                first = False
                phase = "body"
                deadline.deadline = anyio.current_time() + s.body_timeout_seconds
                try:
                    body = await self._read_body(conn, stream, head)
                except _TooLarge:
                    await _answer(conn, stream, Response.json(413, {"error": "body too large",
                                                                    "max_bytes": s.max_body_bytes}, close=True))
                    await _linger(stream)
                    return
                except h11.RemoteProtocolError as exc:
                    await _answer(conn, stream, Response.json(400, {"error": str(exc)}, close=True))
                    return
                phase = "handler"
                deadline.deadline = math.inf  # the handler waits for its own commit; shutdown cancels it
                request = _request(head, body)
                try:
                    response = await self._handler(request)
                except Exception:
                    log.exception("listener_handler_failed", path=request.path)
                    response = Response.json(500, {"error": "internal error"}, close=True)
                phase = "answer"
                deadline.deadline = anyio.current_time() + s.body_timeout_seconds
                await _answer(conn, stream, response, send_body=head.method != b"HEAD")
                if conn.our_state is h11.MUST_CLOSE or response.close:
                    return
                try:
                    conn.start_next_cycle()
                except h11.LocalProtocolError:
                    return
        if deadline.cancelled_caught:
            if phase == "body":
                log.info("listener_client_cut_off", reason="body too slow")
                with anyio.move_on_after(LINGER_SECONDS):
                    await _answer(conn, stream, Response.json(408, {"error": "body not received in time"},
                                                              close=True))
            elif phase == "head" and conn.their_state is not h11.IDLE:
                log.info("listener_client_cut_off", reason="headers too slow")

    async def _read_body(self, conn: h11.Connection, stream: SocketStream, head: h11.Request) -> bytes:
        limit = self._settings.max_body_bytes
        length = _content_length(head)
        if length is not None and length > limit:
            raise _TooLarge
        if conn.they_are_waiting_for_100_continue:
            await stream.send(conn.send(h11.InformationalResponse(status_code=100, headers=[])))
        chunks: list[bytes] = []
        size = 0
        while True:
            event = await _next_event(conn, stream)
            if isinstance(event, h11.Data):
                size += len(event.data)
                if size > limit:
                    raise _TooLarge
                chunks.append(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage):
                return b"".join(chunks)
            elif isinstance(event, h11.ConnectionClosed):
                raise anyio.EndOfStream


async def _read_head(conn: h11.Connection, stream: SocketStream) -> h11.Request | None:
    event = await _next_event(conn, stream)
    if isinstance(event, h11.ConnectionClosed):
        return None
    if not isinstance(event, h11.Request):
        raise h11.RemoteProtocolError("expected a request", error_status_hint=400)
    if _head_size(event) > MAX_HEAD_BYTES:
        # h11 bounds only a head still incomplete; one that arrived whole in a single read is measured here.
        raise h11.RemoteProtocolError("request head too large", error_status_hint=431)
    names = {name for name, _ in event.headers}
    if b"content-length" in names and b"transfer-encoding" in names:
        # h11 reads the body by Transfer-Encoding alone and keeps the connection; RFC 9112 §6.3 calls this
        # shape a likely smuggling attempt, and a server must then close after answering. Nue never sends it.
        raise h11.RemoteProtocolError("both Content-Length and Transfer-Encoding: send one (RFC 9112 §6.3)",
                                      error_status_hint=400)
    return event


async def _next_event(conn: h11.Connection, stream: SocketStream) -> Any:
    while True:
        event = conn.next_event()
        if event is not h11.NEED_DATA:
            return event
        conn.receive_data(await _receive(stream))


async def _receive(stream: SocketStream) -> bytes:
    try:
        return await stream.receive(READ_CHUNK)
    except anyio.EndOfStream:
        return b""  # h11 turns an empty read into ConnectionClosed or a protocol error


def _head_size(head: h11.Request) -> int:
    return len(head.target) + sum(len(name) + len(value) + 4 for name, value in head.headers)


def _content_length(head: h11.Request) -> int | None:
    for name, value in head.headers:
        if name == b"content-length":
            return int(value)
    return None


def _request(head: h11.Request, body: bytes) -> Request:
    target = head.target.decode("latin-1")
    path, _, query = target.partition("?")
    headers: dict[str, str] = {}
    for name, value in head.headers:
        key = name.decode("latin-1")
        text = value.decode("latin-1")
        headers[key] = f"{headers[key]}, {text}" if key in headers else text
    return Request(method=head.method.decode("ascii"), path=path, query=query, headers=headers, body=body)


async def _answer(conn: h11.Connection, stream: SocketStream, response: Response, *, send_body: bool = True) -> None:
    """Send `response`. `send_body` False answers a HEAD request: the same headers, the length of the body
    a GET would get (RFC 9110 §9.3.2), and no body, which h11 refuses to send (it would fail the answer)."""
    headers = [(b"server", SERVER_HEADER), (b"content-length", str(len(response.body)).encode())]
    headers += [(k.encode("latin-1"), v.encode("latin-1")) for k, v in response.headers]
    if response.close:
        headers.append((b"connection", b"close"))
    try:
        data = conn.send(h11.Response(status_code=response.status, headers=headers))
        data += conn.send(h11.Data(data=response.body)) if response.body and send_body else b""
        data += conn.send(h11.EndOfMessage())
    except h11.LocalProtocolError:
        return  # the connection is in no state to answer (e.g. the request was never read)
    await stream.send(data)


async def _linger(stream: SocketStream) -> None:
    """Close gently after refusing a body the client is still sending: closing with unread data makes the
    kernel send a reset, which can destroy our answer before the client reads it (nginx's lingering_close)."""
    with anyio.move_on_after(LINGER_SECONDS):
        try:
            await stream.send_eof()
            drained = 0
            while drained < LINGER_MAX_BYTES:
                drained += len(await stream.receive(READ_CHUNK))
        except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError, ConnectionError):
            pass


async def _send_simple(stream: SocketStream, response: Response) -> None:
    """Answer before reading any request (h11 cannot send a response to a request it has not seen)."""
    head = (f"HTTP/1.1 {response.status} \r\ncontent-type: application/json\r\n"
            f"content-length: {len(response.body)}\r\nconnection: close\r\n\r\n")
    with anyio.move_on_after(5):
        await stream.send(head.encode() + response.body)
