"""The admin listener: uvicorn serving the console inside the daemon's own event loop and task group.

uvicorn's signal handlers are left out: the daemon owns SIGTERM/SIGHUP. Stopping sets uvicorn's own exit
flag and waits (shielded, bounded) for its graceful shutdown, so no socket or connection is left behind.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator

import anyio
import structlog
import uvicorn
from anyio.abc import TaskStatus
from starlette.types import ASGIApp

from revdaemon.errors import ListenError

log = structlog.get_logger("revdaemon.console")
STOP_GRACE_SECONDS = 5.0


class _Server(uvicorn.Server):
    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.settled = anyio.Event()  # listening, or given up

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        self.settled.set()

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield  # the daemon handles signals; uvicorn must not replace its handlers


class ConsoleServer:
    def __init__(self, app: ASGIApp, host: str, port: int) -> None:
        self._app = app
        self._host = host
        self._port = port
        self.port: int | None = None

    def _bind(self) -> socket.socket:
        family = socket.AF_INET6 if ":" in self._host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self._host.strip("[]"), self._port))
        sock.setblocking(False)
        return sock

    async def serve(self, *, task_status: TaskStatus[int] = anyio.TASK_STATUS_IGNORED) -> None:
        try:
            sock = self._bind()
        except OSError as exc:
            raise ListenError(f"the console cannot listen on {self._host}:{self._port}: {exc.strerror or exc} "
                              "(another process holds the port; see console.host and console.port)") from exc
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(self._app, lifespan="off", log_config=None, access_log=False,
                                timeout_graceful_shutdown=2, server_header=False, proxy_headers=False)
        server = _Server(config)
        finished = anyio.Event()

        async def run() -> None:
            try:
                with anyio.CancelScope(shield=True):  # stopped by its exit flag, never cut mid-response
                    await server.serve(sockets=[sock])
            finally:
                sock.close()
                finished.set()
                server.settled.set()

        async with anyio.create_task_group() as tg:
            tg.start_soon(run)
            with anyio.fail_after(10):
                await server.settled.wait()
            if finished.is_set() or not server.started:
                raise ListenError(f"the console could not listen on {self._host}:{self._port}")
            log.info("console_listening", host=self._host, port=self.port)
            task_status.started(self.port)
            try:
                await anyio.sleep_forever()
            finally:
                server.should_exit = True
                with anyio.CancelScope(shield=True):
                    with anyio.move_on_after(STOP_GRACE_SECONDS):
                        await finished.wait()
                    server.force_exit = True  # connections that would not close in time are dropped
                    await finished.wait()
