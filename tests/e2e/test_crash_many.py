"""kill -9 at many random points of a burst, restart each time, and count: nothing lost, nothing made twice.

The sandbox and the daemon run as separate processes. Nue answers slowly (an injected latency), so a kill
often lands while a Nue create is on the wire: Nue creates carry no idempotency header, and only the
daemon's lookup-before-create stands between a cut call and a duplicate. The burst mixes Closed Won deals
(several on one account, so one customer serves many orders) with work born in Nue (orders, amendments,
invoices and payments of customers Nue already knows), all fed in while the daemon is being killed.

REVDAEMON_CRASH_POINTS (default 14, which keeps `make test` under its 10 minutes) sets the number of kills;
REVDAEMON_CRASH_SEED the random schedule.
"""

from __future__ import annotations

import os
import random
import signal
import time
from pathlib import Path
from typing import Any

from tests.e2e.helpers import (
    LOST_ANSWER_RATE,
    Sandbox,
    check_exactly_once,
    env_int,
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

CRASH_POINTS = env_int("REVDAEMON_CRASH_POINTS", 14)
CRASH_SEED = env_int("REVDAEMON_CRASH_SEED", 7)
NUE_LATENCY_MS = 150
NUE_WRITE_PATHS = ("/customers", "/orders", "/change-orders", "/billing/invoices:pay")


def _seed_entries(box: Sandbox) -> dict[str, str]:
    """Product code -> price book entry id."""
    return {e["ProductCode"]: e["Id"] for e in box.sf_records("PricebookEntry")}


def _prepare_deals(box: Sandbox) -> tuple[list[str], list[str]]:
    """The open seed deals, a second deal on two of their accounts, and deals on new accounts."""
    entries = _seed_entries(box)
    opportunities = [o for o in box.sf_records("Opportunity") if not o["IsClosed"]]
    deals = [o["Id"] for o in opportunities]
    accounts = sorted({o["AccountId"] for o in opportunities})
    for account_id, name in ((opportunities[0]["AccountId"], "Expansion"), (opportunities[1]["AccountId"], "Add-on")):
        deals.append(box.new_deal(account_id, name, [(entries["SEAT-VOL"], 12), (entries["SUP-PREM"], 1)]))
    for index in range(4):
        account = box.sf_create("Account", {"Name": f"Crashco {index}", "BillingCity": "Oslo",
                                            "BillingCountry": "NO", "Website": f"https://crashco{index}.example"})
        accounts.append(account["Id"])
        deals.append(box.new_deal(account["Id"], f"Crashco {index} - Platform",
                                  [(entries["PLAT-SUB"], 1), (entries["SEAT-VOL"], 20 + index)]))
        if index % 2:
            deals.append(box.new_deal(account["Id"], f"Crashco {index} - API", [(entries["API-TIER"], 400)]))
    return deals, accounts


class NueSide:
    """Work born in Nue: customers Salesforce accounts already map to, their orders, amendments, invoices."""

    def __init__(self, box: Sandbox, account_names: list[str]) -> None:
        self.box = box
        self.customers: dict[str, str] = {}  # customer id -> seed account name
        self.assets: list[str] = []
        self.invoices: list[str] = []
        for name in account_names:
            customer = box.scenario("create_customer", account=name)
            self.customers[customer["id"]] = name

    def order(self, customer_id: str, opportunity: int) -> None:
        result = self.box.scenario("create_and_activate_order", customer=customer_id, opportunity=opportunity,
                                   generate_invoice=True, activate_invoice=True)
        self.assets += [s["name"] for s in result["subscriptions"] if s.get("name")]
        self.invoices += [i["id"] for i in result.get("invoices", [])]

    def step(self, rng: random.Random) -> str:
        """One business event, chosen at random among those that can apply now."""
        choice = rng.choice(["order", "change", "change", "pay"] if self.assets else ["order"])
        if choice == "change" and self.assets:
            asset = rng.choice(self.assets)
            self.box.scenario("change", asset_number=asset, change_type="UpdateQuantity",
                              quantity=rng.randint(1, 3))
            return f"change {asset}"
        if choice == "pay" and self.invoices:
            invoice = self.invoices.pop(0)
            self.box.scenario("pay_invoice", invoice_id=invoice)
            return f"pay {invoice}"
        customer_id = rng.choice(list(self.customers))
        self.order(customer_id, rng.choice([0, 5]))
        return f"order for {self.customers[customer_id]}"


def _in_flight_at(requests: list[dict[str, Any]], moment: float, *, writes_only: bool = True) -> list[str]:
    """Nue requests that had arrived and were not answered at `moment` (unix time). A request whose client
    died is logged when the server gives up on it, a few milliseconds after the kill: hence the slack."""
    slack = 0.02
    return [f"{r['method']} {r['path']} -> {r['status']}" for r in requests
            if (not writes_only or (r["method"] in ("POST", "PATCH") and r["path"].startswith(NUE_WRITE_PATHS)))
            and r["at"] <= moment <= r["at"] + r["duration_ms"] / 1000 + slack]


def test_many_kill_9_points_lose_nothing_and_duplicate_nothing(tmp_path: Path) -> None:
    rng = random.Random(CRASH_SEED)
    with sandbox_process(tmp_path) as box:
        deals, deal_accounts = _prepare_deals(box)
        # Customers born in Nue, on accounts no deal touches (Umbrella's deal is already won in the seed).
        nue_side = NueSide(box, ["Umbrella Health", "Stark Logistics"])
        nue_accounts = [a["Id"] for a in box.sf_records("Account") if a["Name"] in ("Umbrella Health",
                                                                                     "Stark Logistics")]
        for customer_id in nue_side.customers:
            nue_side.order(customer_id, 3)
        box.nue_faults(latency_ms=NUE_LATENCY_MS, **nue_lost_answers(LOST_ANSWER_RATE))
        box.sf_faults(**sf_lost_answers(LOST_ANSWER_RATE))

        to_close = list(deals)
        rng.shuffle(to_close)
        for deal in to_close[:4]:
            box.close_won(deal)
        to_close = to_close[4:]

        config = write_config(tmp_path, box)
        log = tmp_path / "daemon.log"
        cut: list[tuple[int, list[str]]] = []
        busy = 0
        cut_any = 0
        startup: list[float] = []
        started = time.monotonic()
        for kill in range(CRASH_POINTS):
            before = len([r for r in box.nue_requests() if r["method"] == "POST"])
            daemon = start_daemon(config, log)
            startup.append(wait_ready(box, daemon, log))
            # Feed the burst while the daemon runs: a deal won, and something happening in Nue.
            if to_close:
                box.close_won(to_close.pop())
            if kill % 2 == 0:
                nue_side.step(rng)
            time.sleep(rng.uniform(0.2, 1.5))
            assert daemon.poll() is None, f"the daemon stopped by itself:\n{log.read_text()[-3000:]}"
            moment = time.time()
            os.kill(daemon.pid, signal.SIGKILL)  # claims, intents and leases stay as they were
            daemon.wait(timeout=10)
            requests = box.nue_requests()
            after = len([r for r in requests if r["method"] == "POST"])
            busy += after > before
            in_flight = _in_flight_at(requests, moment)
            if in_flight:
                cut.append((kill, in_flight))
            cut_any += bool(_in_flight_at(requests, moment, writes_only=False))
        for deal in to_close:
            box.close_won(deal)
        burst_seconds = time.monotonic() - started

        box.nue_faults(latency_ms=0, **nue_lost_answers(0.0))
        box.sf_faults(**sf_lost_answers(0.0))
        lost = sum(bool(r.get("fault")) for r in box.nue_requests() + box.sf_requests())
        daemon = start_daemon(config, log)
        try:
            def converged() -> bool:
                opportunities = {o["Id"]: o for o in box.sf_records("Opportunity")}
                return (all(opportunities[d].get("Nue_Order_Id__c") for d in deals)
                        and not mrr_drift(box) and inbox_idle(config))

            wait_for(converged, 90, "every deal written back, every account's MRR equal to Nue's, an idle inbox",
                     interval=1.0)
            time.sleep(2)  # an echo or a late webhook still being worked would show in the inbox now
            wait_for(lambda: inbox_idle(config), 30, "an idle inbox")
        finally:
            stop_daemon(daemon, log)

        print(f"\n{CRASH_POINTS} kills in {burst_seconds:.0f} s (seed {CRASH_SEED}), each daemon ready after "
              f"{min(startup):.1f}-{max(startup):.1f} s: Nue POSTs in {busy} of its lives; "
              f"{cut_any} kills cut a Nue request on the wire, {len(cut)} a Nue write: {cut}")
        print(f"daemon log: {dict(log_events(log, 'event_retry_scheduled', 'event_dead_lettered', 'lease_expired'))}")

        print(f"answers lost after the request was applied: {lost}")
        problems = check_exactly_once(box, deals, deal_accounts + nue_accounts)
        print_exactly_once(problems)
        assert not problems, "\n".join(problems)
        assert not mrr_drift(box)
        summary = status(config)
        depths = summary["queue_depths"]
        assert depths.get("dead", 0) == 0 and depths.get("conflict", 0) == 0, summary
        assert summary["dead_letters"] == 0 and summary["open_conflicts"] == 0, summary
        assert busy >= CRASH_POINTS // 2, f"only {busy} of {CRASH_POINTS} kills came while Nue was being written"
