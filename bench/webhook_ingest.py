"""Durable webhook ingest: events/s stored and ack latency, revdaemon's listener against a bare reference.

wrk (Debian's package; installed here if missing) sends authenticated webhooks on loopback, each with its
own event id, to (1) revdaemon's listener (path-token auth, envelope validation, dedupe, group commit)
and (2) a minimal ASGI app that commits each body to SQLite (WAL, synchronous=FULL) before answering.
The figures are rows durably stored per second and wrk's latency percentiles.
Usage: python bench/webhook_ingest.py [--seconds 10] [--connections 32]
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TOKEN = "bench-path-token-0123456789"
LUA = r"""
local counter = 0
local thread_id = 0
setup = function(thread)
  thread_id = thread_id + 1
  thread:set("tid", thread_id)
end
request = function()
  counter = counter + 1
  local body = string.format(
    '{"id":"evt-%d-%d","type":"subscription.updated","createdDate":"2026-01-01T00:00:00Z",' ..
    '"data":{"id":"sub-%d","customerId":"c-%d","lastModifiedDate":"2026-01-01T00:00:00Z"}}',
    tid, counter, counter, counter % 97)
  return wrk.format("POST", nil, {["Content-Type"] = "application/json"}, body)
end
"""


def ensure_wrk() -> str:
    found = shutil.which("wrk")
    if found:
        return found
    print("installing wrk from Debian's packages ...", flush=True)
    subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], check=True, capture_output=True)
    found = shutil.which("wrk")
    if not found:
        sys.exit("wrk is not available")
    return found


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def count_rows(db: Path, table: str) -> int:
    with sqlite3.connect(db) as conn:
        return int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])


def count_pg_rows(url: str, table: str) -> int:
    import asyncio

    import asyncpg

    async def count() -> int:
        conn = await asyncpg.connect(url)
        try:
            return int(await conn.fetchval(f"SELECT count(*) FROM {table}"))
        finally:
            await conn.close()

    return asyncio.run(count())


def run_wrk(wrk: str, url: str, seconds: float, connections: int, script: Path) -> dict[str, float]:
    out = subprocess.run([wrk, "-t2", f"-c{connections}", f"-d{seconds:g}s", "--latency", "-s", str(script), url],
                         capture_output=True, text=True, check=True).stdout
    def ms(label: str) -> float:
        match = re.search(rf"^\s+{label}%\s+([\d.]+)(us|ms|s)", out, re.M)
        if not match:
            return float("nan")
        value, unit = float(match[1]), match[2]
        return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: (.*)", out)
    return {"p50_ms": ms("50"), "p99_ms": ms("99"), "non_2xx": float(non2xx[1]) if non2xx else 0.0,
            "socket_errors": errors[1] if errors else "none"}  # type: ignore[dict-item]


def measure(kind: str, wrk: str, workdir: Path, seconds: float, connections: int, script: Path,
            store_url: str | None = None, label: str | None = None) -> dict[str, float]:
    """One server under wrk; `store_url`: revdaemon's listener on that (PostgreSQL) store instead of SQLite."""
    db = workdir / f"{kind}.sqlite3"
    port = free_port()
    args = [sys.executable, str(Path(__file__).with_name("_ingest_servers.py")), kind, store_url or str(db), str(port)]
    if kind == "revdaemon":
        args.append(TOKEN)
    server = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        server.stdout.readline()
        time.sleep(0.5)
        path = f"/webhooks/nue/{TOKEN}" if kind == "revdaemon" else "/"
        started = time.perf_counter()
        figures = run_wrk(wrk, f"http://127.0.0.1:{port}{path}", seconds, connections, script)
        elapsed = time.perf_counter() - started
    finally:
        server.terminate()
        server.wait(timeout=15)
    stored = (count_pg_rows(store_url, "inbox_events") if store_url
              else count_rows(db, "inbox_events" if kind == "revdaemon" else "bodies"))
    figures.update({"stored": stored, "events_per_second": stored / elapsed})
    print(f"{label or kind:<10} {figures['events_per_second']:8.0f} events/s stored  p50 {figures['p50_ms']:6.2f} ms  "
          f"p99 {figures['p99_ms']:6.2f} ms  non-2xx {figures['non_2xx']:.0f}  "
          f"socket errors {figures['socket_errors']}")
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--connections", type=int, default=32)
    args = parser.parse_args()
    wrk = ensure_wrk()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        script = workdir / "webhooks.lua"
        script.write_text(LUA)
        print(f"webhook ingest, wrk -t2 -c{args.connections} -d{args.seconds:g}s on loopback")
        reference = measure("reference", wrk, workdir, args.seconds, args.connections, script)
        revdaemon = measure("revdaemon", wrk, workdir, args.seconds, args.connections, script)
    ratio = revdaemon["events_per_second"] / reference["events_per_second"]
    print(f"ratio revdaemon / reference: {ratio:.2f}x events/s")
    print(json.dumps({"benchmark": "webhook_ingest", "reference": reference, "revdaemon": revdaemon,
                      "ratio": ratio}))


if __name__ == "__main__":
    main()
