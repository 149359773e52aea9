"""Two daemons on one PostgreSQL database behave as one: the leader is killed (-9) midway through a burst,
the survivor takes over its claims and the scheduled work, and nothing is lost or made twice.

The sandbox delivers every Nue webhook to both replicas' listeners (the inbox's unique key makes the second
copy a no-op). Closed Won deals reach the daemons only through the Salesforce poller, which runs on the leader
alone: the deals won after the kill are written back only if the survivor's pollers run.
"""

from __future__ import annotations

import json
import os
import random
import signal
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from tests.e2e.helpers import (
    LOST_ANSWER_RATE,
    check_exactly_once,
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
from tests.e2e.test_crash_many import NueSide, _prepare_deals


def _logged_at(log: Path, name: str) -> float | None:
    """Unix time of the last `name` line in a daemon's JSON log."""
    found = None
    for line in log.read_text(errors="replace").splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict) and entry.get("event") == name:
            found = datetime.fromisoformat(str(entry["timestamp"]).replace("Z", "+00:00")).timestamp()
    return found


def _leader(config: Path) -> dict[str, Any] | None:
    return next((r for r in status(config)["replicas"] if r["leader"] and r["alive"]), None)


def test_the_leader_killed_midway_loses_nothing_and_the_survivor_polls(tmp_path: Path, pg_url: str) -> None:
    rng = random.Random(11)
    with sandbox_process(tmp_path, listeners=2) as box:
        deals, deal_accounts = _prepare_deals(box)
        nue_side = NueSide(box, ["Umbrella Health", "Stark Logistics"])
        nue_accounts = [a["Id"] for a in box.sf_records("Account")
                        if a["Name"] in ("Umbrella Health", "Stark Logistics")]
        # creates applied and their answers lost (issue 22), beside the leader's death
        box.nue_faults(**nue_lost_answers(LOST_ANSWER_RATE))
        box.sf_faults(**sf_lost_answers(LOST_ANSWER_RATE))
        configs, logs, daemons = {}, {}, {}
        for name, port in zip(("box-a", "box-b"), box.info["listener_ports"], strict=True):
            configs[name] = write_config(tmp_path / name, box, listener={"port": port},
                                         store={"url": pg_url, "replica_id": name})
            logs[name] = tmp_path / f"{name}.log"
        try:
            for name in configs:
                daemons[name] = start_daemon(configs[name], logs[name])
                wait_ready(box, daemons[name], logs[name], port=box.info["listener_ports"][len(daemons) - 1])
            wait_for(lambda: _leader(configs["box-a"]) is not None, 15, "a leader")
            leader = _leader(configs["box-a"])
            assert leader is not None
            survivor = "box-b" if leader["id"] == "box-a" else "box-a"

            to_close = list(deals)
            rng.shuffle(to_close)
            half = len(to_close) // 2
            for deal in to_close[:half]:
                box.close_won(deal)
                nue_side.step(rng)
                time.sleep(rng.uniform(0.1, 0.5))
            killed_at, killed_wall = time.monotonic(), time.time()
            os.kill(daemons[leader["id"]].pid, signal.SIGKILL)
            daemons[leader["id"]].wait(timeout=10)
            wait_for(lambda: (_leader(configs[survivor]) or {}).get("id") == survivor, 30,
                     f"{survivor} to lead", interval=0.2)
            takeover = time.monotonic() - killed_at
            for deal in to_close[half:]:
                box.close_won(deal)
                nue_side.step(rng)

            def converged() -> bool:
                opportunities = {o["Id"]: o for o in box.sf_records("Opportunity")}
                return (all(opportunities[d].get("Nue_Order_Id__c") for d in deals)
                        and not mrr_drift(box) and inbox_idle(configs[survivor]))

            wait_for(converged, 120, "every deal written back, MRR equal to Nue's, an idle inbox", interval=1.0)
            time.sleep(2)
            wait_for(lambda: inbox_idle(configs[survivor]), 30, "an idle inbox")
            taken = _logged_at(logs[survivor], "leadership_taken")
            print(f"\nleader {leader['id']} killed; {survivor} logged leadership_taken "
                  f"{(taken - killed_wall) if taken else float('nan'):.1f} s later and showed as leader in status "
                  f"{takeover:.1f} s later; survivor log: "
                  f"{dict(log_events(logs[survivor], 'leadership_taken', 'event_retry_scheduled', 'claim_lost'))}")
        finally:
            for name, daemon in daemons.items():
                if daemon.poll() is None:
                    stop_daemon(daemon, logs[name])

        lost = sum(bool(r.get("fault")) for r in box.nue_requests() + box.sf_requests())
        print(f"answers lost after the request was applied: {lost}")
        problems = check_exactly_once(box, deals, deal_accounts + nue_accounts)
        print_exactly_once(problems)
        assert not problems, "\n".join(problems)
        summary = status(configs[survivor])
        assert summary["dead_letters"] == 0 and summary["open_conflicts"] == 0, summary
        # The survivor asks every 2 s (engine/replicas.py) and the dead leader's session ends with its process.
        assert taken is not None and taken - killed_wall < 6, f"leadership moved after {taken} (killed {killed_wall})"

