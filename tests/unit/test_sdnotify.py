"""sd_notify over a real AF_UNIX datagram socket, as systemd's PID 1 would receive it."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest
from structlog.testing import capture_logs

from revdaemon.ops.sdnotify import Notifier, run_watchdog, watchdog_interval


def receive(sock: socket.socket) -> list[str]:
    """Every datagram waiting on `sock`, decoded."""
    out = []
    while True:
        try:
            out.append(sock.recv(4096).decode())
        except BlockingIOError:
            return out


@pytest.fixture
def listener(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    """A datagram socket bound in tmp_path and named by $NOTIFY_SOCKET."""
    path = tmp_path / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        sock.setblocking(False)
        monkeypatch.setenv("NOTIFY_SOCKET", str(path))
        yield sock


class TestNotifier:
    def test_ready_with_status_is_one_datagram(self, listener: socket.socket) -> None:
        """ready() sends READY=1 and the STATUS= line together, in one datagram."""
        assert Notifier.from_env().ready("listening on 127.0.0.1:8787")
        assert receive(listener) == ["READY=1\nSTATUS=listening on 127.0.0.1:8787"]

    def test_status_stopping_and_watchdog_arrive_as_sent(self, listener: socket.socket) -> None:
        """status(), stopping() and watchdog() each send their own line, in order."""
        notifier = Notifier.from_env()
        notifier.status("queued=3 claimed=1")
        notifier.watchdog()
        notifier.stopping()
        notifier.stopping("SIGTERM")
        assert receive(listener) == ["STATUS=queued=3 claimed=1", "WATCHDOG=1", "STOPPING=1",
                                     "STOPPING=1\nSTATUS=SIGTERM"]

    def test_reloading_carries_a_monotonic_timestamp(self, listener: socket.socket) -> None:
        """reloading() sends RELOADING=1 with MONOTONIC_USEC, as systemd 253+ asks of a reload."""
        Notifier.from_env().reloading()
        [message] = receive(listener)
        reloading, stamp = message.split("\n")
        assert reloading == "RELOADING=1"
        assert stamp.startswith("MONOTONIC_USEC=") and int(stamp.partition("=")[2]) > 0

    def test_a_newline_in_a_status_cannot_inject_a_field(self, listener: socket.socket) -> None:
        """A multi-line status is folded onto one line, so it cannot smuggle READY=1 or similar."""
        Notifier.from_env().status("bad\nREADY=1")
        assert receive(listener) == ["STATUS=bad READY=1"]

    def test_abstract_socket_address(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """A NOTIFY_SOCKET starting with '@' is sent to the abstract namespace."""
        name = f"revdaemon-test-{uuid.uuid4().hex}"
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.bind("\0" + name)
            sock.setblocking(False)
            monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
            notifier = Notifier.from_env()
            assert notifier.enabled
            assert notifier.ready("up")
            assert receive(sock) == ["READY=1\nSTATUS=up"]

    def test_unset_notify_socket_is_a_no_op(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Without $NOTIFY_SOCKET nothing is sent, nothing raises and nothing is logged."""
        monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
        notifier = Notifier.from_env()
        with capture_logs() as logs:
            assert not notifier.enabled
            assert not notifier.ready("up")
            assert not notifier.watchdog()
            assert not notifier.stopping()
        assert logs == []

    def test_missing_socket_does_not_raise_and_warns_once(self, tmp_path: Path) -> None:
        """Sending to a path with no socket returns False every time and logs one warning."""
        notifier = Notifier(str(tmp_path / "gone"))
        with capture_logs() as logs:
            assert not notifier.ready("up")
            assert not notifier.watchdog()
            assert not notifier.stopping()
        warnings = [entry for entry in logs if entry["log_level"] == "warning"]
        assert len(warnings) == 1
        assert warnings[0]["event"] == "sd_notify_failed"
        assert "FileNotFoundError" in warnings[0]["error"]

    def test_socket_with_no_reader_does_not_raise(self, tmp_path: Path) -> None:
        """A socket file left behind by a closed receiver (connection refused) is a logged no-op."""
        path = tmp_path / "stale"
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.bind(str(path))
        assert not Notifier(str(path)).watchdog()

    def test_unsupported_address_is_disabled(self) -> None:
        """A relative path or another transport (vsock:) is not a socket this notifier can reach."""
        with capture_logs() as logs:
            notifier = Notifier("vsock:2:1234")
        assert not notifier.enabled
        assert not notifier.ready()
        assert [entry["event"] for entry in logs] == ["sd_notify_failed"]


class TestWatchdogInterval:
    def test_half_of_watchdog_usec(self) -> None:
        """WatchdogSec=30s arrives as 30000000 microseconds and gives a 15-second ping interval."""
        assert watchdog_interval({"WATCHDOG_USEC": "30000000"}) == 15.0

    def test_unset_invalid_or_zero_is_none(self) -> None:
        """No watchdog, a non-number or a non-positive value means no pings."""
        for env in ({}, {"WATCHDOG_USEC": ""}, {"WATCHDOG_USEC": "soon"}, {"WATCHDOG_USEC": "0"},
                    {"WATCHDOG_USEC": "-5"}):
            assert watchdog_interval(env) is None, env

    def test_watchdog_pid_of_this_process(self) -> None:
        """WATCHDOG_PID naming this process keeps the watchdog."""
        env = {"WATCHDOG_USEC": "200000", "WATCHDOG_PID": str(os.getpid())}
        assert watchdog_interval(env) == 0.1

    def test_watchdog_pid_of_another_process_is_none(self) -> None:
        """WATCHDOG_PID naming another process (inherited from a parent) means the watchdog is not ours."""
        env = {"WATCHDOG_USEC": "200000", "WATCHDOG_PID": str(os.getpid() + 1)}
        assert watchdog_interval(env) is None
        assert watchdog_interval({"WATCHDOG_USEC": "200000", "WATCHDOG_PID": "1"}, pid=1) == 0.1
        assert watchdog_interval({"WATCHDOG_USEC": "200000", "WATCHDOG_PID": "x"}) is None

    def test_reads_os_environ_by_default(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Without an explicit mapping the process environment is read."""
        monkeypatch.setenv("WATCHDOG_USEC", "4000000")
        monkeypatch.delenv("WATCHDOG_PID", raising=False)
        assert watchdog_interval() == 2.0


@pytest.mark.anyio
class TestRunWatchdog:
    async def test_pings_at_half_the_interval_until_cancelled(
        self, listener: socket.socket, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """With WATCHDOG_USEC=200000 at least two WATCHDOG=1 arrive within a few seconds, then stop."""
        monkeypatch.setenv("WATCHDOG_USEC", "200000")
        monkeypatch.delenv("WATCHDOG_PID", raising=False)
        seen: list[str] = []
        async with anyio.create_task_group() as tg:
            await tg.start(run_watchdog, Notifier.from_env())
            with anyio.fail_after(5):
                while len(seen) < 2:
                    seen += receive(listener)
                    await anyio.sleep(0.02)
            tg.cancel_scope.cancel()
        assert set(seen) == {"WATCHDOG=1"}

    async def test_returns_at_once_without_a_watchdog(
        self, listener: socket.socket, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """No WATCHDOG_USEC: the task reports started and ends, sending nothing."""
        monkeypatch.delenv("WATCHDOG_USEC", raising=False)
        with anyio.fail_after(5):
            async with anyio.create_task_group() as tg:
                await tg.start(run_watchdog, Notifier.from_env())
        assert receive(listener) == []

    async def test_returns_at_once_without_a_socket(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """No NOTIFY_SOCKET: nothing to ping even when WATCHDOG_USEC is set."""
        monkeypatch.setenv("WATCHDOG_USEC", "200000")
        with anyio.fail_after(5):
            await run_watchdog(Notifier(None))
