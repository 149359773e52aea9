"""Two replicas on one PostgreSQL store (issue 17): the burst drain with one and with two replicas against the
same Salesforce cap, and webhook ingest on PostgreSQL beside SQLite.

PostgreSQL: a throwaway server from Debian's binaries on loopback, fsync on (tests/pg_server.py, durable);
`REVDAEMON_TEST_PG_URL` names an existing one instead. Each drain gets a fresh database.
- burst: bench/burst_drain.py --store-url URL --replicas 1, then --replicas 2 (each replica's Salesforce limiter
  at half the cap, as an operator would split it); the drain should take about as long with two, bound by the
  API cap and the work, not by the store;
- ingest: bench/webhook_ingest.py's wrk run against revdaemon's listener on SQLite and on PostgreSQL.
Usage: python bench/replicas.py [--events 3000] [--cap 10] [--seconds 10]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT))

from bench.webhook_ingest import LUA, ensure_wrk, measure  # noqa: E402
from tests.pg_server import pg_server  # noqa: E402


def burst(url: str, replicas: int, args: argparse.Namespace) -> dict[str, Any]:
    command = [sys.executable, str(BENCH / "burst_drain.py"), "--events", str(args.events), "--cap", str(args.cap),
               "--store-url", url, "--replicas", str(replicas), "--status-fields", "off"]
    print(f"== burst drain, {replicas} replica(s) on PostgreSQL", flush=True)
    process = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, check=False)
    lines = [line for line in process.stdout.splitlines() if line.startswith('{"benchmark"')]
    print("\n".join(line for line in process.stdout.splitlines()
                    if line.startswith(("drained", "Salesforce:", "rate-limit", "  cap:")) or "calls per" in line),
          flush=True)
    if process.returncode != 0 or not lines:
        sys.exit(f"burst_drain with {replicas} replica(s) failed ({process.returncode}):\n{process.stderr[-3000:]}")
    return dict(json.loads(lines[-1])["results"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=3000)
    parser.add_argument("--cap", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=10.0, help="each ingest run")
    parser.add_argument("--connections", type=int, default=32)
    args = parser.parse_args()
    with pg_server(durable=True) as server:
        if isinstance(server, str):
            sys.exit(f"no PostgreSQL: {server}")
        drains: dict[int, dict[str, Any]] = {}
        for replicas in (1, 2):
            name, url = server.create_database()
            try:
                drains[replicas] = burst(url, replicas, args)
            finally:
                server.drop_database(name)
        wrk = ensure_wrk()
        with tempfile.TemporaryDirectory() as tmp:
            workdir = Path(tmp)
            script = workdir / "webhooks.lua"
            script.write_text(LUA)
            print(f"== webhook ingest, wrk -c{args.connections} -d{args.seconds:g}s", flush=True)
            sqlite = measure("revdaemon", wrk, workdir, args.seconds, args.connections, script, label="sqlite")
            name, url = server.create_database()
            try:
                postgres = measure("revdaemon", wrk, workdir, args.seconds, args.connections, script, store_url=url,
                                   label="postgresql")
            finally:
                server.drop_database(name)
    one, two = drains[1], drains[2]
    ratio = two["drain_seconds"] / one["drain_seconds"]
    print(f"drain: 1 replica {one['drain_seconds']:.1f} s, 2 replicas {two['drain_seconds']:.1f} s "
          f"({ratio:.2f}x); left/dead {one['events_left']}/{one['dead']} and {two['events_left']}/{two['dead']}")
    print(f"ingest: SQLite {sqlite['events_per_second']:.0f} events/s, PostgreSQL {postgres['events_per_second']:.0f}"
          f" events/s ({postgres['events_per_second'] / sqlite['events_per_second']:.2f}x)")
    print(json.dumps({"benchmark": "replicas", "results": {
        "events": args.events, "cap_per_second": args.cap,
        "drain": {str(k): {key: v[key] for key in ("drain_seconds", "events_stored", "events_done", "events_left",
                                                    "dead", "salesforce_calls", "salesforce_403",
                                                    "salesforce_calls_per_record", "nue_calls", "floor_seconds",
                                                    "peak_rss_mb")} for k, v in drains.items()},
        "drain_ratio_two_to_one": ratio,
        "ingest": {"sqlite": sqlite, "postgresql": postgres}}}))


if __name__ == "__main__":
    main()
