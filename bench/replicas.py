"""Replicas on one PostgreSQL store, active-passive: the burst drained by one replica and by two (one active,
one on standby), the takeover after the leader is killed or paused, and webhook ingest on PostgreSQL beside SQLite.

PostgreSQL: a throwaway server from Debian's binaries on loopback, fsync on (tests/pg_server.py, durable);
`REVDAEMON_TEST_PG_URL` names an existing one instead. Each run gets a fresh database.
- burst: bench/burst_drain.py --store-url URL --replicas 1, then --replicas 2. With two, one leads and drains and
  the other stands by (only the leader runs workers), so the Salesforce calls should equal one replica's and the
  drain take about as long (within 10%): the API caps, not the CPU, bound the work;
- takeover: two `revdaemon run` daemons on one database and the sandbox, idle. Each round the leader is killed
  with `kill -9` (its session ends with it) and restarted as the standby, then the new leader is paused with
  SIGSTOP (the server ends its lock session once it has been silent engine's LEADER_SILENCE_SECONDS) and resumed:
  the seconds from the signal to the other daemon's `leadership_taken` log line;
- ingest: bench/webhook_ingest.py's wrk run against revdaemon's listener on SQLite and on PostgreSQL.
Usage: python bench/replicas.py [--events 3000] [--cap 10] [--rounds 3] [--seconds 10]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT))

from bench.webhook_ingest import LUA, ensure_wrk, measure  # noqa: E402
from tests.e2e.helpers import (  # noqa: E402
    sandbox_process,
    start_daemon,
    status,
    stop_daemon,
    wait_for,
    wait_ready,
    write_config,
)
from tests.pg_server import pg_server  # noqa: E402

TARGET_DRAIN_RATIO = 1.1  # two replicas drain within 10% of one
DRAIN_FIGURES = ("drain_seconds", "events_stored", "events_done", "events_left", "dead", "salesforce_calls",
                 "salesforce_403", "salesforce_calls_per_record", "nue_calls", "floor_seconds", "peak_rss_mb",
                 "processed_by_replica")


def burst(url: str, replicas: int, args: argparse.Namespace) -> dict[str, Any]:
    command = [sys.executable, str(BENCH / "burst_drain.py"), "--events", str(args.events), "--cap", str(args.cap),
               "--store-url", url, "--replicas", str(replicas), "--status-fields", "off"]
    print(f"== burst drain, {replicas} replica(s) on PostgreSQL", flush=True)
    process = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, check=False)
    lines = [line for line in process.stdout.splitlines() if line.startswith('{"benchmark"')]
    print("\n".join(line for line in process.stdout.splitlines()
                    if line.startswith(("drained", "events processed", "Salesforce:", "rate-limit", "  cap:"))
                    or "calls per" in line), flush=True)
    if process.returncode != 0 or not lines:
        sys.exit(f"burst_drain with {replicas} replica(s) failed ({process.returncode}):\n{process.stderr[-3000:]}")
    return dict(json.loads(lines[-1])["results"])


def _logged_after(log: Path, name: str, since: float) -> float | None:
    """Unix time of the first `name` line of a daemon's JSON log at or after `since`."""
    for line in log.read_text(errors="replace").splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict) and entry.get("event") == name:
            at = datetime.fromisoformat(str(entry["timestamp"]).replace("Z", "+00:00")).timestamp()
            if at >= since:
                return at
    return None


def takeover(url: str, rounds: int, workdir: Path) -> dict[str, list[float]]:
    """Seconds from kill -9 (and from SIGSTOP) of the leader to the other daemon's leadership_taken."""
    times: dict[str, list[float]] = {"kill_9": [], "sigstop": []}
    with sandbox_process(workdir, listeners=2) as box:
        names = ("box-a", "box-b")
        configs = {name: write_config(workdir / name, box, listener={"port": port},
                                      store={"url": url, "replica_id": name})
                   for name, port in zip(names, box.info["listener_ports"], strict=True)}
        logs = {name: workdir / f"{name}.log" for name in names}
        ports = dict(zip(names, box.info["listener_ports"], strict=True))
        daemons: dict[str, subprocess.Popen[bytes]] = {}

        def start(name: str) -> None:
            daemons[name] = start_daemon(configs[name], logs[name])
            wait_ready(box, daemons[name], logs[name], port=ports[name])

        def leader() -> str | None:
            active = status(configs["box-a"]).get("active_replica")
            return active["id"] if active and active["alive"] else None

        def taken_by(name: str, since: float) -> float:
            wait_for(lambda: _logged_after(logs[name], "leadership_taken", since) is not None, 60,
                     f"{name} to take leadership", interval=0.05)
            at = _logged_after(logs[name], "leadership_taken", since)
            assert at is not None
            return at - since

        def one_round(first: str) -> None:
            other = next(n for n in names if n != first)
            killed = time.time()
            os.kill(daemons[first].pid, signal.SIGKILL)
            daemons[first].wait(timeout=10)
            times["kill_9"].append(taken_by(other, killed))
            start(first)  # back as the standby
            wait_for(lambda: leader() == other, 15, f"{other} as the active replica")
            paused = time.time()
            os.kill(daemons[other].pid, signal.SIGSTOP)
            times["sigstop"].append(taken_by(first, paused))
            resumed = time.time()
            os.kill(daemons[other].pid, signal.SIGCONT)
            wait_for(lambda: _logged_after(logs[other], "leadership_lost", resumed) is not None, 30,
                     f"{other} to log that it lost leadership")

        try:
            for name in names:
                start(name)
            wait_for(lambda: leader() is not None, 15, "a leader")
            for round_ in range(rounds):
                first = leader()
                assert first is not None
                one_round(first)
                print(f"  round {round_ + 1}: kill -9 -> {times['kill_9'][-1]:.1f} s, "
                      f"SIGSTOP -> {times['sigstop'][-1]:.1f} s", flush=True)
        finally:
            for name, daemon in daemons.items():
                if daemon.poll() is None:
                    daemon.send_signal(signal.SIGCONT)
                    stop_daemon(daemon, logs[name])
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=3000)
    parser.add_argument("--cap", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3, help="takeovers after kill -9, and after SIGSTOP, each")
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
        print(f"== takeover, {args.rounds} round(s): kill -9 the leader, restart it; SIGSTOP the new one, resume it",
              flush=True)
        name, url = server.create_database()
        try:
            with tempfile.TemporaryDirectory() as tmp:
                takeovers = takeover(url, args.rounds, Path(tmp))
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
    print(f"burst, 1 replica:  drained in {one['drain_seconds']:.1f} s, {one['salesforce_calls']} Salesforce calls, "
          f"{one['nue_calls']} Nue calls; left/dead {one['events_left']}/{one['dead']}")
    print(f"burst, 2 replicas: drained in {two['drain_seconds']:.1f} s, {two['salesforce_calls']} Salesforce calls, "
          f"{two['nue_calls']} Nue calls; left/dead {two['events_left']}/{two['dead']}; events processed per "
          f"replica {two['processed_by_replica']}")
    print(f"  2 replicas / 1: drain {ratio:.2f}x (target <= {TARGET_DRAIN_RATIO}x: "
          f"{'met' if ratio <= TARGET_DRAIN_RATIO else 'MISSED'}); Salesforce calls "
          f"{'equal' if two['salesforce_calls'] == one['salesforce_calls'] else 'differ'}")
    for kind, label in (("kill_9", "kill -9"), ("sigstop", "SIGSTOP")):
        values = takeovers[kind]
        print(f"takeover after {label}: " + ", ".join(f"{v:.1f}" for v in values) + f" s (max {max(values):.1f} s)")
    print(f"ingest: SQLite {sqlite['events_per_second']:.0f} events/s, PostgreSQL {postgres['events_per_second']:.0f}"
          f" events/s ({postgres['events_per_second'] / sqlite['events_per_second']:.2f}x)")
    print(json.dumps({"benchmark": "replicas", "results": {
        "events": args.events, "cap_per_second": args.cap,
        "drain": {str(k): {key: v[key] for key in DRAIN_FIGURES} for k, v in drains.items()},
        "drain_ratio_two_to_one": ratio, "takeover_seconds": takeovers,
        "ingest": {"sqlite": sqlite, "postgresql": postgres}}}))


if __name__ == "__main__":
    main()
