"""Serving the Pub/Sub API (gRPC, plaintext, loopback), the two ways server.py serves the HTTP simulators:

- `serve_pubsub(service, host, port)`: inside the caller's event loop until cancelled (`Sandbox.serve`).
- `PubSubServerThread`: in a thread with its own loop; as a context manager it yields once listening, and
  `address` ("127.0.0.1:<port>") is known then, port 0 giving an ephemeral port.

grpc binds its own sockets, so a caller that must print the port before serving (`revdaemon sandbox --json`)
holds it with `reserve_port`: a bound, never-listening socket with SO_REUSEPORT, which grpc (that sets
SO_REUSEPORT too) can bind alongside while no other program can take the port.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from types import TracebackType

import anyio
import grpc

from revdaemon.connectors.pubsub_api import pubsub_api_pb2_grpc as pb_grpc
from revdaemon.sandbox.salesforce.pubsub.service import PubSubService

GRPC_OPTIONS = [("grpc.so_reuseport", 1)]


def reserve_port(host: str = "127.0.0.1", port: int = 0) -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    return sock


def _address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _build(service: PubSubService, host: str, port: int) -> tuple[grpc.aio.Server, int]:
    server = grpc.aio.server(options=GRPC_OPTIONS)
    pb_grpc.add_PubSubServicer_to_server(service, server)  # type: ignore[no-untyped-call]  # generated code
    bound = server.add_insecure_port(_address(host, port))
    if not bound:
        raise OSError(f"cannot bind the Pub/Sub API to {_address(host, port)}")
    return server, int(bound)


async def serve_pubsub(service: PubSubService, host: str, port: int) -> None:
    """Serve in the current event loop until cancelled."""
    server, _ = _build(service, host, port)
    await server.start()
    try:
        await server.wait_for_termination()
    finally:
        with anyio.CancelScope(shield=True):  # open streams are cut, not left dangling
            await server.stop(grace=None)


class PubSubServerThread:
    """The Pub/Sub API on loopback, served from a background thread."""

    def __init__(self, service: PubSubService, host: str = "127.0.0.1", port: int = 0) -> None:
        self._service = service
        self._host = host
        self._port = port
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=f"sandbox-pubsub-{host}:{port}", daemon=True)

    @property
    def address(self) -> str:
        """host:port for a plaintext gRPC channel (grpc.insecure_channel)."""
        return _address(self._host, self._port)

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # reported by start() instead of dying silently in the thread
            self._error = exc
            self._ready.set()

    async def _main(self) -> None:
        server, self._port = _build(self._service, self._host, self._port)
        await server.start()
        self._loop, self._stopping = asyncio.get_running_loop(), asyncio.Event()
        self._ready.set()
        await self._stopping.wait()
        await server.stop(grace=None)

    def start(self) -> PubSubServerThread:
        self._thread.start()
        if not self._ready.wait(10) or self._error is not None:
            raise RuntimeError(f"the Pub/Sub API at {self.address} did not start") from self._error
        return self

    def stop(self) -> None:
        if self._loop is not None and self._stopping is not None:
            self._loop.call_soon_threadsafe(self._stopping.set)
        self._thread.join(timeout=10)

    def __enter__(self) -> PubSubServerThread:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
