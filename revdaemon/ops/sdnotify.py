"""sd_notify: tell systemd that the daemon is ready, what it is doing, that it is alive, and that it stops.

The protocol (sd_notify(3)) is one datagram of newline-separated `KEY=VALUE` lines sent to the AF_UNIX
socket named by `$NOTIFY_SOCKET`: a filesystem path, or an abstract address written with a leading `@`
(sent as a leading NUL byte). No reply comes back. Outside systemd the variable is unset and every call
here does nothing, so the daemon runs the same from a terminal, a test or the unit.

The watchdog (`WatchdogSec=` in the unit) arrives as `$WATCHDOG_USEC`, meant for `$WATCHDOG_PID` when that
is set; sd_watchdog_enabled(3) advises pinging at half the interval, which `run_watchdog` does from inside
the supervisor's task group, so a wedged event loop stops the pings and systemd restarts the service.

Sending never raises: a lost notification must not take the daemon down. The first failure is logged as a
warning (later ones at debug), since a notifier that cannot reach systemd fails the same way every time.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Mapping

import anyio
import structlog
from anyio.abc import TaskStatus

log = structlog.get_logger("revdaemon.sdnotify")

NOTIFY_SOCKET = "NOTIFY_SOCKET"
WATCHDOG_USEC = "WATCHDOG_USEC"
WATCHDOG_PID = "WATCHDOG_PID"


class Notifier:
    """Sends sd_notify messages to the socket systemd named; a no-op when there is none."""

    __slots__ = ("_address", "_source", "_warned")

    def __init__(self, socket_name: str | None) -> None:
        self._source = socket_name or None
        self._address = _parse_address(self._source)
        self._warned = False
        if self._source and self._address is None:
            self._warn("unsupported NOTIFY_SOCKET address (only a path or @abstract name)")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Notifier:
        """The notifier for `$NOTIFY_SOCKET` (`os.environ` unless `environ` is given)."""
        env = os.environ if environ is None else environ
        return cls(env.get(NOTIFY_SOCKET))

    @property
    def enabled(self) -> bool:
        """True when there is a socket to send to (the daemon runs under a Type=notify unit)."""
        return self._address is not None

    def ready(self, status: str | None = None) -> bool:
        """Start-up is complete: systemd marks the unit active and starts what waits on it."""
        return self.notify("READY=1", *_status(status))

    def reloading(self) -> bool:
        """A reload (SIGHUP) has begun; follow with `ready()` once the new settings are in force."""
        monotonic_usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self.notify("RELOADING=1", f"MONOTONIC_USEC={monotonic_usec}")

    def status(self, text: str) -> bool:
        """One line for `systemctl status` (the `Status:` row)."""
        return self.notify(*_status(text))

    def stopping(self, status: str | None = None) -> bool:
        """Shutdown has begun: systemd shows the unit as deactivating rather than failed or hung."""
        return self.notify("STOPPING=1", *_status(status))

    def watchdog(self) -> bool:
        """Still alive: resets the `WatchdogSec=` timer."""
        return self.notify("WATCHDOG=1")

    def notify(self, *fields: str) -> bool:
        """Send the `KEY=VALUE` fields as one datagram; True if it was sent, False if disabled or failed."""
        if self._address is None or not fields:
            return False
        payload = "\n".join(fields).encode()
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                # Never block the event loop: a full receive queue means PID 1 is not reading at all.
                sock.setblocking(False)
                sock.sendto(payload, self._address)
        except OSError as exc:
            self._warn(f"{type(exc).__name__}: {exc.strerror or exc}")
            return False
        return True

    def _warn(self, error: str) -> None:
        emit = log.debug if self._warned else log.warning
        self._warned = True
        emit("sd_notify_failed", socket=self._source, error=error)


def _parse_address(name: str | None) -> bytes | None:
    if not name:
        return None
    if name.startswith("@"):
        return b"\0" + os.fsencode(name[1:])
    if name.startswith("/"):
        return os.fsencode(name)
    return None  # e.g. systemd 254's "vsock:CID:PORT", which this daemon never runs behind


def _status(text: str | None) -> tuple[str, ...]:
    if text is None:
        return ()
    # A newline would start a new field; systemd shows a status on one line anyway.
    return (f"STATUS={' '.join(text.splitlines())}",)


def watchdog_interval(environ: Mapping[str, str] | None = None, *, pid: int | None = None) -> float | None:
    """Seconds between watchdog pings (half of `WatchdogSec=`), or None when no watchdog applies to us.

    None when `$WATCHDOG_USEC` is unset, not a positive integer, or `$WATCHDOG_PID` names another process
    (the variable leaked from a parent): the same rules as sd_watchdog_enabled(3).
    """
    env = os.environ if environ is None else environ
    try:
        usec = int(env.get(WATCHDOG_USEC, ""))
    except ValueError:
        return None
    if usec <= 0:
        return None
    if env.get(WATCHDOG_PID):
        try:
            owner = int(env[WATCHDOG_PID])
        except ValueError:
            return None
        if owner != (os.getpid() if pid is None else pid):
            return None
    return usec / 2 / 1_000_000


async def run_watchdog(
    notifier: Notifier,
    *,
    interval: float | None = None,
    task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Send WATCHDOG=1 every `interval` seconds (default: `watchdog_interval()`) until cancelled.

    Returns at once when there is no socket or no watchdog, so the supervisor can start it unconditionally.
    """
    every = watchdog_interval() if interval is None else interval
    if not notifier.enabled or every is None:
        task_status.started()
        return
    log.info("watchdog_started", interval_seconds=every)
    notifier.watchdog()
    task_status.started()
    while True:
        await anyio.sleep(every)
        notifier.watchdog()
