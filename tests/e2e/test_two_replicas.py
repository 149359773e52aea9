"""Two daemons on one PostgreSQL database behave as one: one active (the leader runs workers, executor and
scheduler), one on standby (it takes webhooks). The leader is lost in two ways, and nothing is lost or made
twice on either side:

- killed with `kill -9` midway through a burst: its session ends with it, the survivor leads within seconds and
  takes over its claims at once (an older epoch's), and its pollers write back the deals won after the kill;
- paused with SIGSTOP for longer than the takeover, while Nue answers slowly: the server ends the silent
  leader's lock session, the survivor leads and drains the burst (the paused leader's writes in flight are
  looked up once settled, never repeated blind), and then the paused process is resumed with its work in hand:
  it must log that it lost leadership, and neither simulator may see a write from it.

The sandbox delivers every Nue webhook to both replicas' listeners (the inbox's unique key makes the second
copy a no-op). Closed Won deals reach the daemons only through the Salesforce poller, which runs on the leader
alone: the deals won after the leader is lost are written back only if the survivor's pollers run.

REVDAEMON_PAUSE_SECONDS (default 0) keeps the paused leader stopped that much longer after the survivor has
drained the burst (the long proof: e.g. 300).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from tests.e2e.helpers import (
    LOST_ANSWER_RATE,
    Sandbox,
    check_exactly_once,
    env_float,
    inbox_idle,
    log_events,
    mrr_drift,
    nue_lost_answers,
    print_exactly_once,
    sandbox_process,
    sf_lost_answers,
    start_daemon,
    status,
    stop_daemon,
    wait_for,
    wait_ready,
    write_config,
)
from tests.e2e.test_crash_many import NueSide, _in_flight_at, _prepare_deals

PAUSE_SECONDS = env_float("REVDAEMON_PAUSE_SECONDS", 0.0)
NUE_LATENCY_MS = 300  # Nue answers slowly throughout
HELD_ANSWER_SECONDS = 6.0  # and holds the answer of one create of the leader's: the pause lands while it waits
READ_POSTS = ("/async/graphql",)  # Nue's read-only POST


def _log_entries(log: Path, name: str) -> list[dict[str, Any]]:
    found = []
    for line in log.read_text(errors="replace").splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict) and entry.get("event") == name:
            entry["at"] = datetime.fromisoformat(str(entry["timestamp"]).replace("Z", "+00:00")).timestamp()
            found.append(entry)
    return found


def _logged_at(log: Path, name: str) -> float | None:
    """Unix time of the last `name` line in a daemon's JSON log."""
    entries = _log_entries(log, name)
    return entries[-1]["at"] if entries else None


def _active(config: Path) -> str | None:
    """The replica status names as active and alive (the leadership row, and its heartbeat)."""
    active = status(config).get("active_replica")
    return active["id"] if active and active["alive"] else None


def _writes(requests: list[dict[str, Any]], since: float) -> list[str]:
    """Write requests (not logins, not Nue's GraphQL reads) that reached a simulator at or after `since`."""
    return [f"{r['method']} {r['path']}" for r in requests
            if r["at"] >= since and r["method"] in ("POST", "PATCH", "PUT", "DELETE")
            and "/oauth2/" not in r["path"] and not r["path"].startswith(READ_POSTS)]


@dataclass
class Replicas:
    configs: dict[str, Path]
    logs: dict[str, Path]
    daemons: dict[str, subprocess.Popen[bytes]]

    def other(self, name: str) -> str:
        return next(n for n in self.configs if n != name)


@contextmanager
def two_daemons(tmp_path: Path, box: Sandbox, pg_url: str) -> Iterator[Replicas]:
    """box-a and box-b on one database, each with its own listener; yields once one of them leads."""
    replicas = Replicas({}, {}, {})
    for name, port in zip(("box-a", "box-b"), box.info["listener_ports"], strict=True):
        replicas.configs[name] = write_config(tmp_path / name, box, listener={"port": port},
                                              store={"url": pg_url, "replica_id": name})
        replicas.logs[name] = tmp_path / f"{name}.log"
    try:
        for index, name in enumerate(replicas.configs):
            replicas.daemons[name] = start_daemon(replicas.configs[name], replicas.logs[name])
            wait_ready(box, replicas.daemons[name], replicas.logs[name], port=box.info["listener_ports"][index])
        wait_for(lambda: _active(replicas.configs["box-a"]) is not None, 15, "a leader")
        yield replicas
    finally:
        for name, daemon in replicas.daemons.items():
            if daemon.poll() is None:
                daemon.send_signal(signal.SIGCONT)  # a paused one must be able to stop
                stop_daemon(daemon, replicas.logs[name])


def _burst_of_both_sides(box: Sandbox) -> tuple[list[str], list[str], NueSide, list[str]]:
    """The deals to win (and their accounts), and the Nue side's work on two seed customers (and theirs)."""
    deals, deal_accounts = _prepare_deals(box)
    customers = ("Umbrella Health", "Stark Logistics")
    nue_side = NueSide(box, list(customers))
    nue_accounts = [a["Id"] for a in box.sf_records("Account") if a["Name"] in customers]
    return deals, deal_accounts, nue_side, nue_accounts


def _close_in_two_halves(box: Sandbox, deals: list[str], nue_side: NueSide, rng: random.Random,
                         pause: float) -> tuple[list[str], list[str]]:
    """The deals in a shuffled order, halved; the first half is closed now, with Nue's side moving between them
    (the burst the leader is in when it is stopped), the second is the caller's to close after the takeover."""
    to_close = list(deals)
    rng.shuffle(to_close)
    half = len(to_close) // 2
    for deal in to_close[:half]:
        box.close_won(deal)
        nue_side.step(rng)
        time.sleep(rng.uniform(0.1, pause))
    return to_close[:half], to_close[half:]


def _converged(box: Sandbox, deals: list[str], config: Path) -> bool:
    opportunities = {o["Id"]: o for o in box.sf_records("Opportunity")}
    return (all(opportunities[d].get("Nue_Order_Id__c") for d in deals)
            and not mrr_drift(box) and inbox_idle(config))


def test_the_leader_killed_midway_loses_nothing_and_the_survivor_polls(tmp_path: Path, pg_url: str) -> None:
    rng = random.Random(11)
    with sandbox_process(tmp_path, listeners=2) as box:
        deals, deal_accounts, nue_side, nue_accounts = _burst_of_both_sides(box)
        # creates applied and their answers lost (issue 22), beside the leader's death
        box.nue_faults(**nue_lost_answers(LOST_ANSWER_RATE))
        box.sf_faults(**sf_lost_answers(LOST_ANSWER_RATE))
        with two_daemons(tmp_path, box, pg_url) as replicas:
            leader = _active(replicas.configs["box-a"])
            assert leader is not None
            survivor = replicas.other(leader)
            standby_log = log_events(replicas.logs[survivor], "event_done", "write_confirmed")
            assert not standby_log, f"the standby worked: {standby_log}"

            _, later = _close_in_two_halves(box, deals, nue_side, rng, 0.5)
            killed_wall = time.time()
            os.kill(replicas.daemons[leader].pid, signal.SIGKILL)
            replicas.daemons[leader].wait(timeout=10)
            wait_for(lambda: _active(replicas.configs[survivor]) == survivor, 30, f"{survivor} to lead",
                     interval=0.2)
            for deal in later:
                box.close_won(deal)
                nue_side.step(rng)

            wait_for(lambda: _converged(box, deals, replicas.configs[survivor]), 120,
                     "every deal written back, MRR equal to Nue's, an idle inbox", interval=1.0)
            time.sleep(2)
            wait_for(lambda: inbox_idle(replicas.configs[survivor]), 30, "an idle inbox")
            taken = _logged_at(replicas.logs[survivor], "leadership_taken")
            print(f"\nleader {leader} killed; {survivor} logged leadership_taken "
                  f"{(taken - killed_wall) if taken else float('nan'):.1f} s later; survivor log: "
                  f"{dict(log_events(replicas.logs[survivor], 'leadership_taken', 'event_retry_scheduled'))}")
            summary = status(replicas.configs[survivor])

        lost = sum(bool(r.get("fault")) for r in box.nue_requests() + box.sf_requests())
        print(f"answers lost after the request was applied: {lost}")
        problems = check_exactly_once(box, deals, deal_accounts + nue_accounts)
        print_exactly_once(problems)
        assert not problems, "\n".join(problems)
        assert summary["dead_letters"] == 0 and summary["open_conflicts"] == 0, summary
        # The survivor asks every 2 s (engine/replicas.py) and the dead leader's session ends with its process.
        assert taken is not None and taken - killed_wall < 6, f"leadership moved after {taken} (killed {killed_wall})"


def test_the_leader_paused_past_the_takeover_wakes_fenced_and_sends_nothing(tmp_path: Path, pg_url: str) -> None:
    rng = random.Random(5)
    with sandbox_process(tmp_path, listeners=2) as box:
        deals, deal_accounts, nue_side, nue_accounts = _burst_of_both_sides(box)
        box.nue_faults(latency_ms=NUE_LATENCY_MS, applied_paths=["POST /orders", "POST /customers"],
                       applied_slow_seconds=HELD_ANSWER_SECONDS)
        with two_daemons(tmp_path, box, pg_url) as replicas:
            leader = _active(replicas.configs["box-a"])
            assert leader is not None
            survivor = replicas.other(leader)
            _, later = _close_in_two_halves(box, deals, nue_side, rng, 0.4)
            # The leader is mid-burst: its next Nue create is applied and its answer held; freeze it waiting for it.
            box.nue_faults(applied_next=["slow"])
            wait_for(lambda: box.nue_faults_fired().get("applied_slow", 0) >= 1, 60, "a Nue create of the leader's",
                     interval=0.1)
            paused_wall = time.time()
            os.kill(replicas.daemons[leader].pid, signal.SIGSTOP)
            wait_for(lambda: _active(replicas.configs[survivor]) == survivor, 60, f"{survivor} to lead",
                     interval=0.2)
            taken = _logged_at(replicas.logs[survivor], "leadership_taken")
            for deal in later:
                box.close_won(deal)
                nue_side.step(rng)
            wait_for(lambda: _converged(box, deals, replicas.configs[survivor]), 150,
                     "the survivor to drain the burst: every deal written back, MRR equal, an idle inbox",
                     interval=1.0)
            time.sleep(PAUSE_SECONDS)

            resumed_wall = time.time()
            os.kill(replicas.daemons[leader].pid, signal.SIGCONT)
            wait_for(lambda: any(e["at"] >= resumed_wall - 1
                                 for e in _log_entries(replicas.logs[leader], "leadership_lost")), 30,
                     f"{leader} to log that it lost leadership")
            time.sleep(4)  # whatever it would still send, it has had the time to
            sent_after = _writes(box.nue_requests(), resumed_wall) + _writes(box.sf_requests(), resumed_wall)
            [lost] = [e for e in _log_entries(replicas.logs[leader], "leadership_lost") if e["at"] >= resumed_wall - 1]
            refused = _log_entries(replicas.logs[leader], "send_refused_fenced")
            fenced = _log_entries(replicas.logs[leader], "worker_fenced")
            in_flight = _in_flight_at(box.nue_requests(), paused_wall)
            assert _active(replicas.configs[survivor]) == survivor
            wait_for(lambda: inbox_idle(replicas.configs[survivor]), 30, "an idle inbox")
            summary = status(replicas.configs[survivor])
            print(f"\nleader {leader} paused (SIGSTOP) with Nue writes in flight {in_flight}; {survivor} logged "
                  f"leadership_taken {(taken - paused_wall) if taken else float('nan'):.1f} s later and drained the "
                  f"burst; resumed after {resumed_wall - paused_wall:.1f} s: leadership_lost ({lost['reason']}), "
                  f"requests of its term {lost['requests_sent']}, the last {lost['last_request_seconds_ago']} s "
                  f"before; {len(refused)} refused by the fence, {len(fenced)} workers fenced; writes after the "
                  f"resume: {sent_after}")

        problems = check_exactly_once(box, deals, deal_accounts + nue_accounts)
        print_exactly_once(problems)
        assert not problems, "\n".join(problems)
        assert summary["dead_letters"] == 0 and summary["open_conflicts"] == 0, summary
        assert sent_after == [], f"the resumed former leader sent {sent_after}"
        # It says so itself: its last request left before the pause, not after it.
        last = lost["last_request_seconds_ago"]
        assert last is None or last >= resumed_wall - paused_wall - 1, lost
        assert taken is not None and taken > paused_wall
