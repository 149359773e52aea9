"""Real-time latency (issue 27): from "opportunity saved as Closed Won" to "Nue order activated and written back",
with Change Data Capture on and with the poll alone at its default interval; and from a Nue webhook to the
Salesforce account write (flow 2, subscription status).

Every mode runs a fresh `revdaemon sandbox` and a `revdaemon run --config` daemon as separate processes (the driver
shares neither's GIL). Both clocks are this machine's time.time(): the simulators stamp with it.

Mode "cdc": change_data_capture enabled on the simulator's plaintext loopback Pub/Sub port, `schedule` and `engine`
at their defaults (the Salesforce poll is the net at poll_seconds_while_streaming). Mode "cdc-nue": the same with
the daemon's Nue limiter (limits.nue) at --fast-nue-rate requests/s: Nue documents no limit, and the default 10/s is
revdaemon's own guess; at 10/s a won deal's ~20 Nue calls (flow 1 and the flows its order's webhooks start) take
2 s of limiter time, so mode cdc measures the limiter, and cdc-nue the real-time path. Mode "poll": CDC off,
schedule.salesforce_poll_seconds at its default, 60 s (--poll-seconds changes it; --quick sets 15 s, and says so).
Setup (not measured): --deals open opportunities with two line items (SEAT-VOL x 5-24, SUP-PREM x 1) on the seeded
accounts and price book, as tests/e2e/helpers.py's new_deal; the printout says how many of those accounts had a Nue
customer before (the first deal on each of the others creates it). The daemon is the Nue simulator's webhook target, as
on a real box, so the order's own notifications (order.activated, subscription.created, invoice...) reach it and
its other flows (subscription status, onboarding, billing events) work beside flow 1. The deals are then closed one
at a time, one every --pace seconds (2 s; --fast-pace, 1 s, in mode cdc-nue; --poll-pace, 0.5 s, in mode poll: a
steady trickle, not a burst).
- start: the opportunity's SystemModstamp in the simulator's answer to the close (its own clock);
- end: the write-back's confirmation in the daemon's audit log (its store's clock: this machine's time.time(), as
  the simulator's), once the opportunity shows Nue_Order_Id__c (read every 0.25 s, only to know it is done). Each
  end is checked against the simulator's request log: a Salesforce PATCH answered at most 0.5 s before it. The
  opportunity's own SystemModstamp cannot be the end: flow 2 may write the opportunity again within milliseconds.
- then: every deal has exactly one Nue order, Activated, and Nue_Order_Id__c names it; otherwise a failure line.

Mode "webhook": the daemon (CDC on, as in "cdc") is the Nue simulator's webhook target. Setup (not measured):
--samples new Salesforce accounts, a Nue customer each (POST /customers, salesAccountId), an order of a seed
opportunity's lines activated (scenario create-and-activate-order); the daemon syncs their state; then, one every
--webhook-pace (0.25 s), each customer's first subscription changes quantity (scenario change, UpdateQuantity +3):
Nue publishes order.activated and subscription.updated, flow 2 writes the account's MRR__c/ARR__c.
- start: the first delivery of that change's notifications in the Nue simulator's webhook log (its `at`, stamped
  when the daemon's listener answered: a few ms after the send, so the figure is a little short);
- end: the account's SystemModstamp once its MRR__c differs from before the change.

Printed: p50, p90, p99, max per mode side by side, the counts, then one JSON line. Targets: cdc p99 < 2 s, webhook
p99 < 2 s; the poll has none (shown for comparison).
Usage: python bench/realtime_latency.py [--deals 200] [--samples 200] [--pace 2] [--fast-pace 1] [--poll-pace 0.5]
       [--webhook-pace 0.25] [--fast-nue-rate 30]
       [--poll-seconds 60] [--workdir DIR]
       [--modes cdc cdc-nue poll webhook]
"""

from __future__ import annotations

import argparse
import json
import math
import re
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import anyio
import httpx
import yaml

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT))

from revdaemon.store import open_store  # noqa: E402
from tests.e2e.helpers import (  # noqa: E402
    Sandbox,
    orders_by_opportunity,
    sandbox_process,
    start_daemon,
    status,
    wait_ready,
)

TARGET_P99_SECONDS = 2.0
DEFAULT_POLL_SECONDS = 60.0  # config.py ScheduleSettings.salesforce_poll_seconds
WATCH_INTERVAL = 0.25
ANSWER_TO_AUDIT_SECONDS = 0.5  # from the simulator's answer to the daemon's audit entry of it, at most
NUE_RATE = 10.0  # config.py LimitsSettings.nue: ApiRate() requests_per_second
DAILY_ALLOCATION = 200_000  # an Enterprise org: the Developer Edition's 15,000 is not what this measures


def sf_time(value: str) -> float:
    """A Salesforce datetime (2026-01-01T10:00:00.123+0000) as Unix seconds."""
    return datetime.strptime(value, "%Y-%m-%dT%H:%M:%S.%f%z").timestamp()


def percentiles(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p90": None, "p99": None, "max": None, "mean": None}
    ordered = sorted(values)

    def pick(q: float) -> float:  # nearest rank
        return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]

    return {"p50": pick(0.50), "p90": pick(0.90), "p99": pick(0.99), "max": ordered[-1],
            "mean": statistics.fmean(ordered)}


# --- the daemon -----------------------------------------------------------------------------------------

def daemon_config(tmp: Path, box: Sandbox, *, cdc: bool, poll_seconds: float, nue_rate: float | None = None) -> Path:
    """The shipped defaults but for the connections; CDC on or off; the Salesforce poll's interval; the Nue
    limiter's rate when given (mode cdc-nue)."""
    sf, nue = box.info["salesforce"], box.info["nue"]
    body: dict[str, Any] = {
        "state_dir": str(tmp / "state"),
        "salesforce": {"login_url": sf["login_url"], "auth": "jwt", "client_id": sf["consumer_key"],
                       "username": sf["username"], "private_key_file": sf["private_key_file"]},
        "nue": {"base_url": nue["url"], "api_key": nue["api_key"], "webhook_secret": nue["webhook_secret"]},
        "listener": {"port": box.info["listener_port"]},
        "metrics": {"port": 0},
        "log": {"format": "json", "level": "info"},
    }
    if cdc:
        body["change_data_capture"] = {"enabled": True, "endpoint": sf["pubsub_url"], "tls": False}
    if poll_seconds != DEFAULT_POLL_SECONDS:
        body["schedule"] = {"salesforce_poll_seconds": poll_seconds}
    if nue_rate is not None:
        body["limits"] = {"nue": {"requests_per_second": nue_rate, "burst": max(1, int(nue_rate)),
                                  "max_concurrency": 4}}
    tmp.mkdir(parents=True, exist_ok=True)
    path = tmp / "config.yaml"
    path.write_text(yaml.safe_dump(body))
    return path


def log_entries(log: Path) -> list[dict[str, Any]]:
    out = []
    for line in log.read_text(errors="replace").splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict):
            out.append(entry)
    return out


def log_time(entry: dict[str, Any]) -> float:
    return datetime.fromisoformat(str(entry["timestamp"]).replace("Z", "+00:00")).timestamp()


def wait_logged(log: Path, name: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(e.get("event") == name for e in log_entries(log)):
            return
        time.sleep(0.1)
    raise SystemExit(f"no {name} in the daemon's log after {timeout:.0f} s:\n{log.read_text()[-3000:]}")


def stop(daemon: Any) -> int:
    if daemon.poll() is None:
        daemon.terminate()
    return int(daemon.wait(timeout=30))


class Watcher(threading.Thread):
    """Reads one object's records from the simulator every WATCH_INTERVAL and keeps, per id, the first record
    for which `done(id, record)` holds. Only the record's own stamps are used, never when it was read."""

    def __init__(self, url: str, sobject: str, done: Callable[[str, dict[str, Any]], bool]) -> None:
        super().__init__(daemon=True)
        self.url, self.sobject, self.done = url, sobject, done
        self.wanted: set[str] = set()
        self.found: dict[str, dict[str, Any]] = {}
        self.lock = threading.Lock()
        self.stopping = threading.Event()

    def want(self, record_id: str) -> None:
        with self.lock:
            self.wanted.add(record_id)

    def run(self) -> None:
        with httpx.Client(timeout=30) as http:
            while not self.stopping.is_set():
                records = http.get(f"{self.url}/__sandbox/records/{self.sobject}").json()
                with self.lock:
                    for record in records:
                        rid = record["Id"]
                        if rid in self.wanted and rid not in self.found and self.done(rid, record):
                            self.found[rid] = record
                self.stopping.wait(WATCH_INTERVAL)

    def complete(self) -> bool:
        with self.lock:
            return self.wanted <= self.found.keys()


def paced(items: list[Any], pace: float, act: Callable[[int, Any], None]) -> None:
    started = time.monotonic()
    for index, item in enumerate(items):
        delay = started + index * pace - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        act(index, item)


def write_patches(box: Sandbox) -> list[tuple[float, float]]:
    """[start, end] of every Salesforce PATCH request the simulator answered (the write-backs are among them)."""
    spans = []
    for entry in box.sf_requests():
        if entry["method"] == "PATCH" and "/sobjects" in str(entry["path"]):
            spans.append((float(entry["at"]), float(entry["at"]) + float(entry.get("duration_ms") or 0) / 1000))
    return spans


def answered_before(stamp: float, spans: list[tuple[float, float]]) -> bool:
    """A Salesforce PATCH the simulator answered shortly before `stamp` (the daemon records the write-back once
    the answer is in): the audit's time is that of a real write, not of something else."""
    return any(end - 0.001 <= stamp <= end + ANSWER_TO_AUDIT_SECONDS for _, end in spans)


def write_back_times(database: Path, deals: list[str]) -> dict[str, float]:
    """When each opportunity's write-back was confirmed: the first successful write whose fields carry the order id,
    in the daemon's audit log (its store's clock, this machine's time.time(), as the simulator's). The opportunity's
    own SystemModstamp cannot say it: flow 2 may write the opportunity again before it is read (with a fast Nue,
    within milliseconds)."""

    async def read() -> dict[str, float]:
        store = await open_store(database, read_only=True)
        try:
            found: dict[str, float] = {}
            for deal in deals:
                for write in await store.list_writes(record_ref=f"salesforce:Opportunity:{deal}", limit=50):
                    request = write.detail.get("request")
                    fields = request.get("fields") if isinstance(request, dict) else None
                    if write.outcome == "ok" and isinstance(fields, dict) and "Nue_Order_Id__c" in fields:
                        found[deal] = min(found.get(deal, math.inf), write.at.timestamp())
            return found
        finally:
            await store.close()

    return anyio.run(read)


# --- modes cdc and poll ---------------------------------------------------------------------------------

def deal_mode(mode: str, args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    cdc = mode in ("cdc", "cdc-nue")
    nue_rate = args.fast_nue_rate if mode == "cdc-nue" else None
    pace = args.fast_pace if mode == "cdc-nue" else args.pace if cdc else args.poll_pace
    poll_seconds = DEFAULT_POLL_SECONDS if cdc else args.poll_seconds
    print(f"== mode {mode}: {'CDC on' if cdc else 'CDC off'}, Salesforce poll every {poll_seconds:g} s"
          f"{' (while streaming: poll_seconds_while_streaming, 900 s)' if cdc else ''}"
          f"{f'; limits.nue at {nue_rate:g} requests/s (default {NUE_RATE:g})' if nue_rate else ''}", flush=True)
    work = tmp / mode
    with sandbox_process(work) as box:
        box.sf_usage()  # answers: the sandbox is up
        box.http.post(f"{box.sf_url}/__sandbox/usage", json={"max": DAILY_ALLOCATION}).raise_for_status()
        entries = {e["ProductCode"]: e["Id"] for e in box.sf_records("PricebookEntry")}
        accounts = sorted(a["Id"] for a in box.sf_records("Account"))
        customers = box.graphql("Customer", "id salesAccountId externalId")
        linked = {c.get("salesAccountId") or c.get("externalId") for c in customers}
        had_customer = sum(1 for a in accounts if a in linked)
        started = time.monotonic()
        deals = [box.new_deal(accounts[i % len(accounts)], f"RT {mode} {i:04d}",
                              [(entries["SEAT-VOL"], 5 + i % 20), (entries["SUP-PREM"], 1)])
                 for i in range(args.deals)]
        print(f"  setup: {len(deals)} open deals on {len(accounts)} seeded accounts ({had_customer} with a Nue "
              f"customer before, the first deal on each of the other {len(accounts) - had_customer} creates it) in "
              f"{time.monotonic() - started:.1f} s", flush=True)
        config = daemon_config(work, box, cdc=cdc, poll_seconds=poll_seconds, nue_rate=nue_rate)
        log = work / "daemon.log"
        daemon = start_daemon(config, log)
        try:
            wait_ready(box, daemon, log, timeout=60)
            if cdc:
                wait_logged(log, "change_stream_subscribed", 30)
            time.sleep(1.0)  # the first poll at start-up (it finds nothing: no deal is won yet)
            watcher = Watcher(box.sf_url, "Opportunity", lambda _id, r: bool(r.get("Nue_Order_Id__c")))
            watcher.start()
            closed: dict[str, float] = {}

            def close(_index: int, deal: str) -> None:
                watcher.want(deal)
                response = box.http.post(f"{box.sf_url}/__sandbox/scenario/close-won", json={"opportunity_id": deal})
                response.raise_for_status()
                closed[deal] = sf_time(response.json()["SystemModstamp"])

            began = time.monotonic()
            paced(deals, pace, close)
            closing = time.monotonic() - began
            print(f"  closed {len(deals)} deals, one every {pace:g} s, in {closing:.1f} s", flush=True)
            deadline = time.monotonic() + poll_seconds + 90
            while not watcher.complete() and time.monotonic() < deadline:
                time.sleep(0.5)
            watcher.stopping.set()
            watcher.join()
            waited = time.monotonic() - began
            time.sleep(2.0)  # let any last step settle before the checks
            spans = write_patches(box)
            by_opportunity = orders_by_opportunity(box)
            nue_kinds = Counter(f"{e['method']} /{str(e['path']).strip('/').split('/')[0]}" for e in box.nue_requests())
            opportunities = {o["Id"]: o for o in box.sf_records("Opportunity")}
        finally:
            code = stop(daemon)
    written = write_back_times(work / "state" / "revdaemon.sqlite3", deals)
    latencies: dict[str, float] = {}
    failures: list[str] = []
    unmatched = 0
    for deal in deals:
        mine = by_opportunity.get(deal, [])
        if len(mine) != 1:
            failures.append(f"{deal}: {len(mine)} Nue orders")
        elif mine[0]["status"] != "Activated":
            failures.append(f"{deal}: its order {mine[0]['id']} is {mine[0]['status']}")
        elif opportunities[deal].get("Nue_Order_Id__c") != mine[0]["id"]:
            failures.append(f"{deal}: Nue_Order_Id__c {opportunities[deal].get('Nue_Order_Id__c')!r}, "
                            f"its order is {mine[0]['id']}")
        if deal not in watcher.found:
            failures.append(f"{deal}: not written back within {poll_seconds + 90:.0f} s of the last close")
            continue
        end = written.get(deal)
        if end is None:
            failures.append(f"{deal}: written back, but the daemon's audit log has no write-back of it")
            continue
        if not answered_before(end, spans):
            unmatched += 1
        latencies[deal] = end - closed[deal]
    figures = percentiles(list(latencies.values()))
    result = {"deals": len(deals), "measured": len(latencies), "failures": len(failures),
              "failure_lines": failures[:20], "end_not_after_a_patch": unmatched,
              "accounts": len(accounts), "accounts_with_customer": had_customer, "poll_seconds": poll_seconds,
              "pace_seconds": pace, "closing_seconds": round(closing, 1), "waited_seconds": round(waited, 1),
              "first_deal_seconds": latencies.get(deals[0]), "daemon_exit": code, "nue_calls": sum(nue_kinds.values()),
              "nue_call_kinds": dict(nue_kinds.most_common()),
              "nue_calls_per_deal": round(sum(nue_kinds.values()) / max(1, len(deals)), 2), **figures}
    if cdc:
        result["breakdown"] = cdc_breakdown(log, closed, latencies)
    for line in failures[:20]:
        print(f"  FAILURE {line}", flush=True)
    print(f"  {mode}: {len(latencies)} measured of {len(deals)}; p50 {fmt(figures['p50'])}, p99 "
          f"{fmt(figures['p99'])}; failures {len(failures)}, end not just after a PATCH answer "
          f"{unmatched}; daemon exit {code}", flush=True)
    print(f"  Nue calls: {result['nue_calls']} ({result['nue_calls_per_deal']} a deal): "
          f"{dict(nue_kinds.most_common())}", flush=True)
    return result


def cdc_breakdown(log: Path, closed: dict[str, float], latencies: dict[str, float]) -> dict[str, Any]:
    """Where the time goes, from the daemon's own log: close -> hint stored (the stream) and hint stored ->
    event done (the worker), per deal, when the log names the deal."""
    entries = log_entries(log)
    done: dict[str, float] = {}
    steps: Counter[str] = Counter()
    for entry in entries:
        key = str(entry.get("event_key") or "")
        match = re.search(r"006[A-Za-z0-9]{12,15}", key)
        if entry.get("event") == "event_done" and match:
            deal = match.group(0)
            done.setdefault(deal, log_time(entry))
            steps[deal] += 1
    to_done = [done[d] - closed[d] for d in latencies if d in done]
    after_done = [latencies[d] - (done[d] - closed[d]) for d in latencies if d in done]
    return {"close_to_first_event_done": percentiles(to_done),
            "first_event_done_to_write_back": percentiles(after_done), "event_done_lines_per_deal":
            percentiles([float(n) for n in steps.values()])}


# --- mode webhook ---------------------------------------------------------------------------------------

def webhook_mode(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    print("== mode webhook: Nue subscription change -> webhook -> Salesforce account write (CDC on)", flush=True)
    work = tmp / "webhook"
    with sandbox_process(work) as box:
        box.http.post(f"{box.sf_url}/__sandbox/usage", json={"max": DAILY_ALLOCATION}).raise_for_status()
        config = daemon_config(work, box, cdc=True, poll_seconds=DEFAULT_POLL_SECONDS)
        log = work / "daemon.log"
        daemon = start_daemon(config, log)
        try:
            wait_ready(box, daemon, log, timeout=60)
            started = time.monotonic()
            changes = subscription_samples(box, args.samples, "RT webhook")
            accounts = [account for account, *_ in changes]
            print(f"  setup: {len(accounts)} accounts, Nue customers and activated orders in "
                  f"{time.monotonic() - started:.1f} s; waiting for the daemon to sync them", flush=True)
            settle(config, box, accounts)
            before = {a["Id"]: a.get("MRR__c") for a in box.sf_records("Account")}
            watcher = Watcher(box.sf_url, "Account", lambda rid, r: r.get("MRR__c") != before.get(rid))
            watcher.start()
            triggered: dict[str, float] = {}

            def change(_index: int, item: tuple[str, str, str, int]) -> None:
                account, _customer, subscription, quantity = item
                watcher.want(account)
                triggered[account] = time.time()
                box.scenario("change", asset_number=subscription, change_type="UpdateQuantity", quantity=quantity)

            began = time.monotonic()
            paced(changes, args.webhook_pace, change)
            print(f"  changed {len(changes)} subscriptions, one every {args.webhook_pace:g} s, in "
                  f"{time.monotonic() - began:.1f} s", flush=True)
            deadline = time.monotonic() + 60
            while not watcher.complete() and time.monotonic() < deadline:
                time.sleep(0.5)
            watcher.stopping.set()
            watcher.join()
            hooks = box.http.get(f"{box.nue_url}/__sandbox/webhooks").json()
        finally:
            code = stop(daemon)
    customer_of_event = {e["id"]: customer_in(e) for e in hooks["published"]}
    first_delivery: dict[str, float] = {}
    customers = {c: a for a, c, _s, _q in changes}
    types: Counter[str] = Counter()
    for delivery in hooks["deliveries"]:
        customer = customer_of_event.get(delivery["eventId"])
        account = customers.get(customer or "")
        if account is None or account not in triggered or delivery["at"] < triggered[account]:
            continue
        types[delivery["type"]] += 1
        first_delivery[account] = min(first_delivery.get(account, delivery["at"]), delivery["at"])
    latencies: dict[str, float] = {}
    failures = []
    for account, *_ in changes:
        record = watcher.found.get(account)
        if record is None or account not in first_delivery:
            failures.append(f"account {account}: " + ("no webhook delivered" if account not in first_delivery
                                                      else "MRR__c not written within 60 s"))
            continue
        latencies[account] = sf_time(record["SystemModstamp"]) - first_delivery[account]
    figures = percentiles(list(latencies.values()))
    for line in failures[:20]:
        print(f"  FAILURE {line}", flush=True)
    print(f"  webhook: {len(latencies)} measured of {len(changes)}; p50 {fmt(figures['p50'])}, p99 "
          f"{fmt(figures['p99'])}; failures {len(failures)}; notifications delivered after the changes: "
          f"{dict(types)}; daemon exit {code}", flush=True)
    return {"samples": len(changes), "measured": len(latencies), "failures": len(failures),
            "failure_lines": failures[:20], "pace_seconds": args.webhook_pace, "notification_types": dict(types),
            "negative": sum(1 for v in latencies.values() if v < 0), "daemon_exit": code, **figures}


def subscription_samples(box: Sandbox, count: int, name: str) -> list[tuple[str, str, str, int]]:
    """`count` Salesforce accounts, a Nue customer each (salesAccountId) and an order activated for it; each as
    (account, customer, subscription, its quantity + 3): the change a sample makes."""
    accounts = [box.sf_create("Account", {"Name": f"{name} {i:04d}"})["Id"] for i in range(count)]
    nue_headers = {"nue-api-key": box.info["nue"]["api_key"]}
    for first in range(0, len(accounts), 200):
        body = [{"name": f"{name} {first + j:04d}", "recordType": "Business", "salesAccountId": a}
                for j, a in enumerate(accounts[first:first + 200])]
        box.http.post(f"{box.nue_url}/customers", json=body, headers=nue_headers).raise_for_status()
    customer_of = {c["salesAccountId"]: c["id"] for c in box.graphql("Customer", "id salesAccountId")
                   if c.get("salesAccountId")}
    changes = []
    for i, account in enumerate(accounts):
        result = box.scenario("create-and-activate-order", customer=customer_of[account], opportunity=i % 6)
        subscription = next(s for s in result["subscriptions"] if s.get("name"))
        changes.append((account, customer_of[account], subscription["name"],
                        int(subscription.get("quantity") or 1) + 3))
    return changes


def customer_in(event: dict[str, Any]) -> str | None:
    data = event.get("data") or {}
    for record in (data, *(v for v in data.values() if isinstance(v, dict))):
        value = record.get("customerId") or (record.get("customer") or {}).get("id")
        if value:
            return str(value)
    return None


def settle(config: Path, box: Sandbox, accounts: list[str], timeout: float = 120) -> None:
    """Until the inbox is empty twice in a row and every account shows an MRR."""
    deadline = time.monotonic() + timeout
    quiet = 0
    while time.monotonic() < deadline:
        depths = status(config)["queue_depths"]
        shown = {a["Id"] for a in box.sf_records("Account") if a.get("MRR__c") not in (None, 0)}
        idle = int(depths.get("received", 0)) == 0 and int(depths.get("claimed", 0)) == 0
        quiet = quiet + 1 if idle and set(accounts) <= shown else 0
        if quiet >= 2:
            return
        time.sleep(1.0)
    print("  WARNING: the setup's events were not all synced; measuring anyway", flush=True)


# --- printing -------------------------------------------------------------------------------------------

def fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f} s"


def table(results: dict[str, dict[str, Any]]) -> None:
    modes = list(results)
    print()
    print(f"{'':<28}" + "".join(f"{m:>16}" for m in modes))
    for key in ("p50", "p90", "p99", "max", "mean"):
        print(f"{key:<28}" + "".join(f"{fmt(results[m].get(key)):>16}" for m in modes))
    counts = {"samples": lambda r: r.get("deals", r.get("samples")), "measured": lambda r: r["measured"],
              "failures": lambda r: r["failures"]}
    for label, get in counts.items():
        print(f"{label:<28}" + "".join(f"{get(results[m]):>16}" for m in modes))
    targets = {"cdc": "p99 < 2 s", "cdc-nue": "p99 < 2 s", "webhook": "p99 < 2 s", "poll": "none"}
    print(f"{'target':<28}" + "".join(f"{targets[m]:>16}" for m in modes))
    verdicts = []
    for m in modes:
        p99 = results[m].get("p99")
        verdicts.append("-" if m == "poll" else "n/a" if p99 is None else
                        "met" if p99 < TARGET_P99_SECONDS and not results[m]["failures"] else "MISSED")
    print(f"{'met?':<28}" + "".join(f"{v:>16}" for v in verdicts))
    print()


def why_missed(results: dict[str, dict[str, Any]]) -> list[str]:
    """The measured cause of a missed CDC target: the Nue calls a deal costs (all flows, the webhooks its order
    fires included) against the daemon's Nue limiter (limits.nue, 10 requests/s by default; the simulator has no
    cap), so the deals a second the one worker can finish, against the deals a second offered."""
    cdc = results.get("cdc")
    if not cdc or cdc["p99"] is None or cdc["p99"] < TARGET_P99_SECONDS:
        return []
    per_deal = cdc["nue_calls_per_deal"]
    capacity = NUE_RATE / per_deal if per_deal else float("inf")
    offered = 1 / cdc["pace_seconds"]
    breakdown = cdc.get("breakdown", {}).get("close_to_first_event_done", {})
    return [f"each won deal costs {per_deal:g} Nue calls (flow 1's lookups, creates and activation, and the reads of "
            f"the flows its order's webhooks start: {_kinds(cdc['nue_call_kinds'])}); the daemon's Nue limiter "
            f"(limits.nue, {NUE_RATE:g} requests/s by default) lets one worker finish about {capacity:.2f} deals/s, "
            f"and {offered:.2f} deals/s were closed: the inbox queues and every deal waits for the claim before it "
            f"(the closed_won event's event_done comes {fmt(breakdown.get('p50'))} after the close at p50). The "
            "first deal, with nothing queued before it, was written back "
            f"{fmt(cdc.get('first_deal_seconds'))} after its close"]


def _kinds(kinds: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in kinds.items())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--deals", type=int, default=200, help="deals closed per mode (cdc, poll)")
    parser.add_argument("--samples", type=int, default=200, help="subscription changes in mode webhook")
    parser.add_argument("--pace", type=float, default=2.0, help="seconds between two closes in mode cdc")
    parser.add_argument("--fast-pace", type=float, default=1.0, help="seconds between two closes in mode cdc-nue")
    parser.add_argument("--poll-pace", type=float, default=0.5, help="seconds between two closes in mode poll")
    parser.add_argument("--webhook-pace", type=float, default=0.25, help="seconds between two subscription changes")
    parser.add_argument("--poll-seconds", type=float, default=DEFAULT_POLL_SECONDS,
                        help="mode poll's schedule.salesforce_poll_seconds (the default: 60)")
    parser.add_argument("--workdir", type=Path, help="keep the sandboxes' and daemons' files (logs) here")
    parser.add_argument("--fast-nue-rate", type=float, default=30.0,
                        help="mode cdc-nue's limits.nue requests/s (Nue documents no limit; the default 10 is ours)")
    parser.add_argument("--modes", nargs="+", default=["cdc", "cdc-nue", "poll", "webhook"],
                        choices=["cdc", "cdc-nue", "poll", "webhook"])
    args = parser.parse_args()
    if args.poll_seconds != DEFAULT_POLL_SECONDS:
        print(f"NOTE: mode poll runs at {args.poll_seconds:g} s, not the default {DEFAULT_POLL_SECONDS:g} s (a "
              "shorter run): its latencies scale with the interval", flush=True)
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="realtime-") as scratch:
        tmp = args.workdir or Path(scratch)
        for mode in args.modes:
            results[mode] = webhook_mode(args, tmp) if mode == "webhook" else deal_mode(mode, args, tmp)
    table(results)
    notes = why_missed(results)
    for note in notes:
        print(f"MISSED, why: {note}", flush=True)
    print(json.dumps({"benchmark": "realtime_latency", "notes": notes,
                      "targets": {"cdc_p99_seconds": TARGET_P99_SECONDS, "webhook_p99_seconds": TARGET_P99_SECONDS},
                      "results": results}))


if __name__ == "__main__":
    main()
