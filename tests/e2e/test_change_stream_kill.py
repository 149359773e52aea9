"""Change Data Capture under kill -9 and a stream reset, with the sandbox and the daemon as separate processes.

Deals are won one after another while the daemon subscribes to /data/OpportunityChangeEvent. The daemon is
killed with SIGKILL mid-burst (Nue answers slowly, so work is in flight), more deals are won while it is dead,
and it restarts: its subscription resumes from the replay id it stored with its last events, so Salesforce
replays what happened meanwhile. In the second run the server also cuts the stream mid-burst. In the end every
deal has exactly one activated order, written back; nothing lost, nothing made twice, though some creates'
answers were lost after the simulators applied them. The poll is the net at a
long interval here: it runs once at each start, and the proof does not lean on it (the replayed Subscribe call
itself is counted in the simulator's log).
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import httpx

from tests.e2e.helpers import (
    LOST_ANSWER_RATE,
    Sandbox,
    check_exactly_once,
    inbox_idle,
    nue_lost_answers,
    sandbox_process,
    sf_lost_answers,
    start_daemon,
    stop_daemon,
    wait_for,
    wait_ready,
    write_config,
)

BEFORE_KILL, WHILE_DEAD, AFTER_RESTART = 4, 3, 3
NUE_LATENCY_MS = 150
TOPIC = "/data/OpportunityChangeEvent"


def stream_state(box: Sandbox) -> str | None:
    try:
        health = httpx.get(f"http://127.0.0.1:{box.info['listener_port']}/healthz", timeout=1).json()
    except (httpx.TransportError, ValueError):
        return None
    return health.get("streams", {}).get(TOPIC, {}).get("state")


def subscribed(box: Sandbox) -> bool:
    """The daemon says it streams, and the server has placed its stream (nothing published after is missed)."""
    streams = box.http.get(f"{box.sf_url}/__sandbox/pubsub/streams").json()["open_streams"]
    return stream_state(box) == "streaming" and streams > 0


def subscribes(box: Sandbox) -> list[dict[str, object]]:
    calls = box.http.get(f"{box.sf_url}/__sandbox/pubsub/requests").json()
    return [c for c in calls if c["method"] == "Subscribe"]


def written_back(box: Sandbox, deals: list[str]) -> int:
    records = {o["Id"]: o for o in box.sf_records("Opportunity")}
    return sum(1 for d in deals if records[d].get("Nue_Order_Id__c"))


def test_kill_9_and_a_stream_reset_mid_burst_lose_nothing_and_duplicate_nothing(tmp_path: Path) -> None:
    with sandbox_process(tmp_path) as box:
        entries = [e["Id"] for e in box.sf_records("PricebookEntry")][:2]
        accounts = [a["Id"] for a in box.sf_records("Account")][:3]
        deals = [box.new_deal(accounts[n % len(accounts)], f"CDC deal {n}", [(entries[0], 2), (entries[1], 1)])
                 for n in range(BEFORE_KILL + WHILE_DEAD + AFTER_RESTART)]
        config = write_config(
            tmp_path, box,
            change_data_capture={"enabled": True, "endpoint": box.info["salesforce"]["pubsub_url"], "tls": False,
                                 "poll_seconds_while_streaming": 3600},
            schedule={"salesforce_poll_seconds": 3600, "nue_poll_seconds": 3600})
        log = tmp_path / "daemon.log"
        # Nue slow, and some creates' answers lost after the simulators applied them (both sides)
        box.nue_faults(latency_ms=NUE_LATENCY_MS, **nue_lost_answers(LOST_ANSWER_RATE))
        box.sf_faults(**sf_lost_answers(LOST_ANSWER_RATE))
        daemon = start_daemon(config, log)
        try:
            wait_ready(box, daemon, log)
            wait_for(lambda: subscribed(box), 20, "the subscription")
            first, dead, last = (deals[:BEFORE_KILL], deals[BEFORE_KILL:BEFORE_KILL + WHILE_DEAD],
                                 deals[BEFORE_KILL + WHILE_DEAD:])
            for deal in first:
                box.close_won(deal)
                time.sleep(0.2)
            wait_for(lambda: written_back(box, first) >= 1, 60, "the first write-back")
            os.kill(daemon.pid, signal.SIGKILL)  # no clean stop: claims, intents and the stream as they were
            daemon.wait(timeout=10)
            assert written_back(box, first) < len(first), "the kill came too late to interrupt anything"
            for deal in dead:  # won while nothing listens: only a replay from the stored id brings them
                box.close_won(deal)
            before_restart = len(subscribes(box))

            box.nue_faults(latency_ms=0)  # the answers stay lossy to the end
            daemon = start_daemon(config, log)
            wait_ready(box, daemon, log)
            wait_for(lambda: subscribed(box), 20, "the subscription again")
            box.http.post(f"{box.sf_url}/__sandbox/pubsub/reset-streams", json={"after_events": 2}).raise_for_status()
            for deal in last:
                box.close_won(deal)
                time.sleep(0.1)
            wait_for(lambda: written_back(box, deals) == len(deals), 90, "every deal written back")
            wait_for(lambda: inbox_idle(config), 60, "the rest of the work (onboarding, from Nue's webhooks)")
        finally:
            stop_daemon(daemon, log)
        lost = sum(bool(r.get("fault")) for r in box.nue_requests() + box.sf_requests())
        print(f"answers lost after the request was applied: {lost}")
        calls = subscribes(box)
        resumed = calls[before_restart]
        # The restart resumed from its stored replay id: Salesforce replayed what was won while it was dead.
        assert int(resumed["events"]) >= WHILE_DEAD, calls  # type: ignore[call-overload]
        assert any(c["status"] == "UNAVAILABLE" for c in calls[before_restart:]), calls  # the reset happened
        problems = check_exactly_once(box, deals, sorted(set(accounts)))
        assert problems == [], problems
