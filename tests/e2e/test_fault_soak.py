"""A bounded soak under injected faults: the daemon keeps working through 5xx, UNABLE_TO_LOCK_ROW, expired
sessions, Nue's 429s and a spent Salesforce daily allocation, and ends converged with nothing lost.

The sandbox and the daemon run as separate processes. While a stream of work is fed in (deals won in
Salesforce; orders, amendments, invoices and payments in Nue), the Salesforce simulator fails 5% of REST
calls with 503 and 2% of writes with UNABLE_TO_LOCK_ROW, and Nue answers 5% with 429 (Retry-After) and 5%
with 5xx; every few seconds every Salesforce session expires; midway the daily allocation is spent and,
some seconds later, restored (Salesforce's window rolls on). Then the faults stop and the test waits for
the two systems to agree.

REVDAEMON_SOAK_SECONDS (default 24, which keeps `make test` under its 10 minutes) sets how long work and faults
run; an hour is 3600.
REVDAEMON_SOAK_SEED sets the random stream.

The daemon pauses all Salesforce work for 15 minutes on REQUEST_LIMIT_EXCEEDED (no Retry-After comes with
it; connectors/salesforce_wire.LIMIT_EXCEEDED_PAUSE_SECONDS), and no setting shortens that. So, once the
allocation is back, the test stops the daemon with SIGTERM (which must still exit 0) and starts it again,
as an operator would. That lifts the in-memory pause, but an event that itself met the 403 was put back in
the inbox 900 s ahead, and it stays there: until the daemon offers a way to shorten or lift that delay,
this test cannot converge within a bounded run when the exhaustion catches an event, and it says so.
"""

from __future__ import annotations

import json
import random
import re
import time
from pathlib import Path
from typing import Any

from tests.e2e.helpers import (
    LOST_ANSWER_RATE,
    Sandbox,
    check_exactly_once,
    env_float,
    env_int,
    inbox_idle,
    log_events,
    mrr_drift,
    nue_lost_answers,
    pending_events,
    print_exactly_once,
    sandbox_process,
    sf_lost_answers,
    start_daemon,
    status,
    stop_daemon,
    wait_until,
    write_config,
)

SOAK_SECONDS = env_float("REVDAEMON_SOAK_SECONDS", 24.0)
SOAK_SEED = env_int("REVDAEMON_SOAK_SEED", 11)
EXPIRE_EVERY_SECONDS = 10.0
LIMIT_SPENT_SECONDS = 6.0
CONVERGE_SECONDS = 90.0
SF_FAULTS: dict[str, Any] = {"unavailable_rate": 0.05, "lock_row_rate": 0.02, "seed": SOAK_SEED}
NUE_FAULTS: dict[str, Any] = {"rate_429": 0.05, "error_rate": 0.05, "retry_after_seconds": 1}


class Stream:
    """The stream of business events, fed through the simulators' scenario endpoints (never faulted)."""

    def __init__(self, box: Sandbox, rng: random.Random) -> None:
        self.box, self.rng = box, rng
        self.entries = {e["ProductCode"]: e["Id"] for e in box.sf_records("PricebookEntry")}
        self.deals: list[str] = []
        self.accounts: list[str] = []
        self.customers: dict[str, str] = {}
        self.assets: list[str] = []
        self.invoices: list[str] = []  # drafts
        self.active_invoices: list[str] = []
        self.counts: dict[str, int] = {}
        for name in ("Umbrella Health", "Stark Logistics"):
            self.customers[box.scenario("create_customer", account=name)["id"]] = name
        self.nue_accounts = [a["Id"] for a in box.sf_records("Account")
                             if a["Name"] in ("Umbrella Health", "Stark Logistics")]

    def _count(self, what: str) -> None:
        self.counts[what] = self.counts.get(what, 0) + 1

    def win_deal(self) -> None:
        """A deal won in Salesforce: on a new account, or a further deal on an account already won."""
        if self.accounts and self.rng.random() < 0.3:
            account_id = self.rng.choice(self.accounts)
        else:
            account_id = self.box.sf_create("Account", {"Name": f"Soak {len(self.accounts)}", "BillingCountry": "US",
                                                        "BillingCity": "Denver"})["Id"]
            self.accounts.append(account_id)
        lines = [(self.entries["PLAT-SUB"], 1), (self.entries["SEAT-VOL"], self.rng.randint(5, 80))]
        if self.rng.random() < 0.5:
            lines.append((self.entries["API-TIER"], self.rng.randint(50, 1500)))
        deal = self.box.new_deal(account_id, f"Soak deal {len(self.deals)}", lines)
        self.box.close_won(deal)
        self.deals.append(deal)
        self._count("deal won")

    def nue_order(self) -> None:
        customer_id = self.rng.choice(list(self.customers))
        result = self.box.scenario("create_and_activate_order", customer=customer_id,
                                   opportunity=self.rng.choice([0, 3, 5]), generate_invoice=True)
        self.assets += [s["name"] for s in result["subscriptions"] if s.get("name")]
        self.invoices += [i["id"] for i in result.get("invoices", [])]
        self._count("nue order")

    def step(self) -> None:
        choice = self.rng.choice(["deal", "deal", "order", "change", "invoice", "pay"])
        if choice == "deal":
            self.win_deal()
        elif choice == "change" and self.assets:
            self.box.scenario("change", asset_number=self.rng.choice(self.assets), change_type="UpdateQuantity",
                              quantity=self.rng.randint(1, 4))
            self._count("amendment")
        elif choice == "invoice" and self.invoices:
            invoice = self.invoices.pop(0)
            self.box.scenario("activate_invoice", invoice_id=invoice)
            self.active_invoices.append(invoice)
            self._count("invoice activated")
        elif choice == "pay" and self.active_invoices:
            self.box.scenario("pay_invoice", invoice_id=self.active_invoices.pop(0))
            self._count("invoice paid")
        else:
            self.nue_order()


def test_soak_under_faults_ends_converged_with_nothing_lost(tmp_path: Path) -> None:
    rng = random.Random(SOAK_SEED)
    with sandbox_process(tmp_path, seed=SOAK_SEED) as box:
        stream = Stream(box, rng)
        config = write_config(tmp_path, box)
        log = tmp_path / "daemon.log"
        box.sf_faults(**SF_FAULTS, **sf_lost_answers(LOST_ANSWER_RATE))
        box.nue_faults(**NUE_FAULTS, **nue_lost_answers(LOST_ANSWER_RATE))
        daemon = start_daemon(config, log)
        try:
            started = time.monotonic()
            next_expiry = started + EXPIRE_EVERY_SECONDS
            spend_at = started + SOAK_SECONDS * 0.4
            spent_until: float | None = None
            restarted = False
            limit = box.sf_usage()["max"]
            expiries = 0
            while (now := time.monotonic()) < started + SOAK_SECONDS or not restarted:
                assert daemon.poll() is None, f"the daemon stopped by itself:\n{log.read_text()[-3000:]}"
                if now < started + SOAK_SECONDS:
                    stream.step()
                if now >= next_expiry:
                    box.sf_expire_sessions()
                    expiries += 1
                    next_expiry = now + EXPIRE_EVERY_SECONDS
                if spent_until is None and now >= spend_at:
                    box.sf_usage(used=limit)  # the org's 24-hour allocation is spent
                    spent_until = now + LIMIT_SPENT_SECONDS
                elif spent_until is not None and not restarted and now >= spent_until:
                    box.sf_usage(used=limit // 10)  # the rolling window frees most of it again
                    # The daemon sits out its 15-minute pause; an operator restarts it (SIGTERM: exit 0).
                    stop_daemon(daemon, log)
                    daemon = start_daemon(config, log)
                    restarted = True
                time.sleep(rng.uniform(0.3, 1.2))
            soak_seconds = time.monotonic() - started

            box.sf_faults(unavailable_rate=0.0, lock_row_rate=0.0, **sf_lost_answers(0.0))
            box.nue_faults(rate_429=0.0, error_rate=0.0, **nue_lost_answers(0.0))

            def converged() -> bool:
                opportunities = {o["Id"]: o for o in box.sf_records("Opportunity")}
                return (all(opportunities[d].get("Nue_Order_Id__c") for d in stream.deals)
                        and not mrr_drift(box) and inbox_idle(config))

            in_time = wait_until(converged, CONVERGE_SECONDS)
            # The daemon still polls: a poll may store an event (the echo of its own last writes) at any moment
            # and settle it a moment later. Settled means an inbox seen empty, not one read at a fixed instant.
            pending = pending_events(config)
            if in_time:
                time.sleep(2)

                def settled() -> bool:
                    nonlocal pending
                    pending = pending_events(config)
                    return not pending

                in_time = wait_until(settled, 30)
        finally:
            stop_daemon(daemon, log)

        sf_requests, nue_requests = box.sf_requests(), box.nue_requests()
        faults_hit = {
            "salesforce 503": sum(r["status"] == 503 for r in sf_requests),
            "salesforce 400 (lock row)": sum(r["status"] == 400 for r in sf_requests),
            "salesforce 401 (expired session)": sum(r["status"] == 401 for r in sf_requests),
            "salesforce 403 (limit)": sum(r["status"] == 403 for r in sf_requests),
            "nue 429": sum(r["status"] == 429 for r in nue_requests),
            "nue 5xx": sum(r["status"] >= 500 for r in nue_requests),
            "salesforce answers lost after applying": sum(bool(r.get("fault")) for r in sf_requests),
            "nue answers lost after applying": sum(bool(r.get("fault")) for r in nue_requests),
        }
        logged = log_events(log, "salesforce_limit_exceeded", "salesforce_session_expired", "event_retry_scheduled",
                            "event_dead_lettered")
        print(f"\nsoak {soak_seconds:.0f} s (seed {SOAK_SEED}), {expiries} session expiries; work: {stream.counts}; "
              f"faults answered: {faults_hit}; daemon log: {dict(logged)}")

        problems = check_exactly_once(box, stream.deals, stream.accounts + stream.nue_accounts)
        print_exactly_once(problems)
        duplicates = [p for p in problems if re.search(r": (?:[2-9]|\d{2,}) (?:Nue|orders|copies)", p)]
        assert not duplicates, "\n".join(duplicates)
        # Converged: every event settled, every deal ordered and written back, every MRR equal to Nue's. An
        # event that met REQUEST_LIMIT_EXCEEDED is put off for 900 s in the inbox itself, so neither the
        # restored allocation nor the restart brings it back within a bounded run (see the module docstring).
        assert in_time and not problems and not pending, (
            f"not converged {CONVERGE_SECONDS:.0f} s after the faults stopped; drift {mrr_drift(box)};\n"
            + "\n".join(problems) + "\npending inbox events:\n"
            + "\n".join(json.dumps(e, default=str)[:400] for e in pending))
        summary = status(config)
        assert summary["queue_depths"].get("dead", 0) == 0 and summary["dead_letters"] == 0, summary
        assert summary["queue_depths"].get("conflict", 0) == 0 and summary["open_conflicts"] == 0, summary
        # The faults were met, not dodged.
        assert faults_hit["salesforce 503"] and faults_hit["nue 429"] and faults_hit["nue 5xx"], faults_hit
        assert faults_hit["nue answers lost after applying"], faults_hit
        assert faults_hit["salesforce 403 (limit)"] and logged["salesforce_limit_exceeded"], faults_hit
        assert faults_hit["salesforce 401 (expired session)"] and logged["salesforce_session_expired"], faults_hit
