"""The daemon under a stand-in for systemd: READY=1, STATUS=, WATCHDOG=1, SIGHUP reload, STOPPING=1."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from revdaemon.sandbox.runner import Sandbox


def write_config(path: Path, box: Sandbox, *, level: str, workers: int = 1) -> None:
    info: dict[str, Any] = box.info()
    sf, nue = info["salesforce"], info["nue"]
    path.write_text(yaml.safe_dump({
        "state_dir": str(path.parent / "state"),
        "salesforce": {"login_url": sf["login_url"], "auth": "jwt", "client_id": sf["consumer_key"],
                       "username": sf["username"], "private_key_file": sf["private_key_file"]},
        "nue": {"base_url": nue["url"], "api_key": nue["api_key"], "webhook_secret": nue["webhook_secret"]},
        "listener": {"port": 0},
        "metrics": {"port": 0},
        "engine": {"workers": workers},
        "log": {"format": "json", "level": level},
    }))


def collect(sock: socket.socket, messages: list[str], want: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            messages.append(sock.recv(4096).decode())
        except TimeoutError:
            break
        if any(want in m for m in messages):
            return
    raise AssertionError(f"no {want!r} in {messages}")


def test_daemon_speaks_sd_notify(sandbox: Sandbox, tmp_path: Path) -> None:
    """Start, reload (one good, one broken config) and stop each report to the notify socket."""
    config = tmp_path / "config.yaml"
    write_config(config, sandbox, level="info")
    log = tmp_path / "daemon.log"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(tmp_path / "notify"))
        env = {"NOTIFY_SOCKET": str(tmp_path / "notify"), "WATCHDOG_USEC": "400000",
               "PATH": "/usr/bin:/bin"}
        proc = subprocess.Popen([sys.executable, "-m", "revdaemon.cli", "run", "--config", str(config)],
                                env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT)
        try:
            seen: list[str] = []
            collect(sock, seen, "READY=1")
            ready = next(m for m in seen if "READY=1" in m)
            assert "listening on :" in ready and "queued=" in ready and "STATUS=active (leadership epoch 1)" in ready
            before = len(seen)
            collect(sock, seen, "WATCHDOG=1")
            assert seen[before:].count("WATCHDOG=1") >= 1

            write_config(config, sandbox, level="debug", workers=3)
            seen.clear()
            proc.send_signal(signal.SIGHUP)
            collect(sock, seen, "READY=1")
            assert any(m.startswith("RELOADING=1\nMONOTONIC_USEC=") for m in seen)

            config.write_text("listener: {port: nope}\n")
            seen.clear()
            proc.send_signal(signal.SIGHUP)
            collect(sock, seen, "READY=1")
            assert proc.poll() is None

            seen.clear()
            proc.send_signal(signal.SIGTERM)
            collect(sock, seen, "STOPPING=1")
            assert proc.wait(timeout=30) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    text = log.read_text()
    assert '"reload_applied"' in text and '"needs_restart": ["engine.workers"]' in text, text[-3000:]
    assert '"applied": ["log.level"]' in text
    assert '"reload_rejected"' in text
