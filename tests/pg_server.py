"""A throwaway PostgreSQL server for the tests, started once per session from Debian's binaries.

`REVDAEMON_TEST_PG_URL` (a role that may CREATE DATABASE) is used instead when set. Without either, the
PostgreSQL parametrisations are skipped with the reason. The server listens on loopback only, on a free port,
with a random password, its socket and data in a temporary directory; fsync is off (a crash loses nothing the
tests need). PostgreSQL refuses to run as root, so as root its binaries run as the `postgres` system user.
Each test gets a fresh database, dropped after it.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import count
from pathlib import Path

import asyncpg

URL_ENV = "REVDAEMON_TEST_PG_URL"
SERVER_USER = "postgres"
START_ATTEMPTS = 3


@dataclass
class PgServer:
    """An admin URL (to template1) and the databases made from it."""

    admin_url: str
    _numbers: Iterator[int] = field(default_factory=lambda: count(1))
    _prefix: str = field(default_factory=lambda: f"revdaemon_test_{os.getpid()}_{secrets.token_hex(3)}")

    def create_database(self) -> tuple[str, str]:
        """A new empty database: its name and its URL."""
        name = f"{self._prefix}_{next(self._numbers)}"
        asyncio.run(self._admin(f'CREATE DATABASE "{name}"'))
        return name, self.url_of(name)

    def drop_database(self, name: str) -> None:
        # FORCE: a test that failed half-way may have left a connection open.
        asyncio.run(self._admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))

    def url_of(self, database: str) -> str:
        base, _, query = self.admin_url.partition("?")
        root = base.rsplit("/", 1)[0]
        return f"{root}/{database}" + (f"?{query}" if query else "")

    async def _admin(self, statement: str) -> None:
        conn = await asyncpg.connect(self.admin_url, timeout=10)
        try:
            await conn.execute(statement)
        finally:
            await conn.close()


class LocalServer:
    """initdb + pg_ctl in a temporary directory; `stop` removes it all."""

    def __init__(self, bindir: Path, *, durable: bool = False) -> None:
        self.durable = durable  # fsync on, as in production (the benchmarks); off for the tests' speed
        self.bindir = bindir
        self.root = Path(tempfile.mkdtemp(prefix="revdaemon-pg-"))
        self.data = self.root / "data"
        self.password = secrets.token_urlsafe(18)
        self.port = 0
        self.as_root = os.geteuid() == 0

    def _run(self, *args: str) -> subprocess.CompletedProcess[str]:
        command = [str(self.bindir / args[0]), *args[1:]]
        if self.as_root:
            command = ["runuser", "-u", SERVER_USER, "--", *command]
        return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)

    def start(self) -> str:
        if self.as_root:
            user = pwd.getpwnam(SERVER_USER)
            os.chown(self.root, user.pw_uid, user.pw_gid)
        password_file = self.root / "password"
        password_file.write_text(self.password + "\n")
        if self.as_root:
            os.chown(password_file, pwd.getpwnam(SERVER_USER).pw_uid, -1)
        init = self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth-local=trust",
                         "--auth-host=scram-sha-256", f"--pwfile={password_file}", "--no-sync", "-E", "UTF8",
                         "--locale=C.UTF-8")
        password_file.unlink()
        if init.returncode != 0:
            raise RuntimeError(f"initdb failed: {init.stderr.strip() or init.stdout.strip()}")
        for _ in range(START_ATTEMPTS):
            self.port = _free_port()
            options = (f"-c listen_addresses=127.0.0.1 -c port={self.port} -c unix_socket_directories={self.root} "
                       "-c max_connections=200")
            if not self.durable:
                options += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
            started = self._run("pg_ctl", "-D", str(self.data), "-o", options, "-l", str(self.root / "log"),
                                "-w", "-t", "60", "start")
            if started.returncode == 0:
                return f"postgresql://postgres:{self.password}@127.0.0.1:{self.port}/template1"
        log = (self.root / "log").read_text(errors="replace") if (self.root / "log").exists() else ""
        raise RuntimeError(f"pg_ctl start failed: {started.stderr.strip()} {log[-2000:]}")

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            if self.data.exists():
                self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.root, ignore_errors=True)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def find_bindir() -> Path | None:
    """The newest installed PostgreSQL's binaries (Debian: /usr/lib/postgresql/<major>/bin)."""
    candidates = [Path(p).parent for p in glob.glob("/usr/lib/postgresql/*/bin/initdb")]
    candidates.sort(key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0, reverse=True)
    if candidates:
        return candidates[0]
    on_path = shutil.which("initdb")
    return Path(on_path).parent if on_path and shutil.which("pg_ctl") else None


@contextlib.contextmanager
def pg_server(*, durable: bool = False) -> Iterator[PgServer | str]:
    """A server to make test databases on, or the reason there is none (the tests then skip)."""
    if os.environ.get(URL_ENV):
        yield PgServer(os.environ[URL_ENV])
        return
    bindir = find_bindir()
    if bindir is None:
        yield ("no PostgreSQL binaries (initdb, pg_ctl; Debian's `postgresql` package) and no "
               f"{URL_ENV}: the PostgreSQL store tests are skipped")
        return
    if os.geteuid() == 0:
        try:
            pwd.getpwnam(SERVER_USER)
        except KeyError:
            yield f"running as root without a `{SERVER_USER}` user to run PostgreSQL as: skipped"
            return
    server = LocalServer(bindir, durable=durable)
    try:
        try:
            url = server.start()
        except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
            yield f"could not start a test PostgreSQL server: {exc}"
            return
        yield PgServer(url)
    finally:
        server.stop()
