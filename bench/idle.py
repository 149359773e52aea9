"""Idle: the daemon's RSS and CPU over a minute of idling, with its pollers scheduled.

The sandbox runs in its own process; the daemon runs as `python -m revdaemon.cli run` with a config that
points at it, both pollers every 10 s (so they run during the window, against a quiet sandbox) and the
listener on a free port. After a warm-up, VmRSS (/proc/<pid>/status) and utime+stime (/proc/<pid>/stat)
are sampled every second. Printed: peak and mean RSS, CPU % of one core over the window, and the API
calls the daemon made meanwhile (from the simulators' request logs). Target (issue 12): idle RSS < 80 MB.
Usage: python bench/idle.py [--seconds 60] [--warmup 15] [--poll 10]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import yaml

TARGET_RSS_MB = 80.0
TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def write_config(workdir: Path, info: dict[str, Any], port: int, poll: float) -> Path:
    sf, nue = info["salesforce"], info["nue"]
    config = {
        "state_dir": str(workdir / "state"),
        "salesforce": {"login_url": sf["login_url"], "auth": "jwt", "client_id": sf["consumer_key"],
                       "username": sf["username"], "private_key_file": sf["private_key_file"]},
        "nue": {"base_url": nue["url"], "api_key": nue["api_key"], "webhook_secret": nue["webhook_secret"]},
        "listener": {"port": port},
        "metrics": {"port": 0},  # the default admin listener, on any free port
        "schedule": {"salesforce_poll_seconds": poll, "nue_poll_seconds": poll},
        "log": {"format": "json", "level": "warning"},
    }
    path = workdir / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for {pid}")


def cpu_seconds(pid: int) -> float:
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) "; fields[0] is field 3 (state)
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime: fields 14 and 15


def api_calls(url: str) -> int:
    body = httpx.get(f"{url}/__sandbox/requests", timeout=60).json()
    return len(body["requests"] if isinstance(body, dict) else body)


def wait_listening(port: int, daemon: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if daemon.poll() is not None:
            raise RuntimeError(f"the daemon exited with {daemon.returncode} before listening")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"the daemon's listener did not open port {port} within {timeout:g} s")


def measure(daemon: subprocess.Popen[bytes], info: dict[str, Any], seconds: float) -> dict[str, float]:
    pid = daemon.pid
    sf_before, nue_before = api_calls(info["salesforce"]["url"]), api_calls(info["nue"]["url"])
    samples: list[float] = []
    cpu_start, started = cpu_seconds(pid), time.monotonic()
    next_at = started
    while time.monotonic() - started < seconds:
        if daemon.poll() is not None:
            raise RuntimeError(f"the daemon exited with {daemon.returncode} during the window")
        samples.append(rss_mb(pid))
        next_at += 1.0
        time.sleep(max(0.0, next_at - time.monotonic()))
    cpu_used, elapsed = cpu_seconds(pid) - cpu_start, time.monotonic() - started
    samples.append(rss_mb(pid))
    return {
        "seconds": elapsed, "samples": len(samples),
        "peak_rss_mb": max(samples), "mean_rss_mb": sum(samples) / len(samples), "final_rss_mb": samples[-1],
        "cpu_seconds": cpu_used, "cpu_percent": 100 * cpu_used / elapsed,
        "salesforce_calls": api_calls(info["salesforce"]["url"]) - sf_before,
        "nue_calls": api_calls(info["nue"]["url"]) - nue_before,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--warmup", type=float, default=15.0, help="seconds after the listener opens")
    parser.add_argument("--poll", type=float, default=10.0, help="salesforce/nue_poll_seconds (>= 5)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        sandbox = subprocess.Popen([sys.executable, "-m", "revdaemon.cli", "sandbox", "--json", "--key-dir", tmp],
                                   stdout=subprocess.PIPE, text=True)
        daemon: subprocess.Popen[bytes] | None = None
        log = workdir / "daemon.log"
        try:
            assert sandbox.stdout is not None
            info = json.loads(sandbox.stdout.readline())
            port = free_port()
            config = write_config(workdir, info, port, args.poll)
            with log.open("ab") as out:
                daemon = subprocess.Popen([sys.executable, "-m", "revdaemon.cli", "run", "--config", str(config)],
                                          stdout=out, stderr=subprocess.STDOUT)
            wait_listening(port, daemon, 60)
            print(f"daemon up (pid {daemon.pid}), pollers every {args.poll:g} s; warm-up {args.warmup:g} s, "
                  f"then {args.seconds:g} s of sampling ...", flush=True)
            time.sleep(args.warmup)
            figures = measure(daemon, info, args.seconds)
        except Exception:
            if log.exists():
                print(log.read_text()[-3000:], file=sys.stderr)
            raise
        finally:
            if daemon is not None and daemon.poll() is None:
                daemon.send_signal(signal.SIGTERM)
                try:
                    daemon.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    daemon.kill()
                    daemon.wait()
            sandbox.send_signal(signal.SIGTERM)
            sandbox.wait(timeout=15)
    met = "met" if figures["peak_rss_mb"] < TARGET_RSS_MB else "MISSED"
    print(f"idle {figures['seconds']:.0f} s: RSS peak {figures['peak_rss_mb']:.1f} MB, mean "
          f"{figures['mean_rss_mb']:.1f} MB (target < {TARGET_RSS_MB:.0f} MB: {met}); CPU "
          f"{figures['cpu_seconds']:.2f} s = {figures['cpu_percent']:.2f}% of one core")
    print(f"API calls meanwhile (the pollers): Salesforce {figures['salesforce_calls']:.0f}, "
          f"Nue {figures['nue_calls']:.0f}")
    print(json.dumps({"benchmark": "idle", "results": figures}))


if __name__ == "__main__":
    main()
