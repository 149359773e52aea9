"""Baseline: the same burst handled by a plain simple-salesforce script, next to revdaemon's burst_drain.

The script (what a hand-written integration does, one notification at a time, in the order received; no
inbox, so a duplicated notification is handled again):
- subscription.created / updated, customer.updated, order.activated: GET the Nue customer and its
  subscriptions (httpx with the nue-api-key), compute the account's status, MRR, ARR and next renewal
  naively (quantity x list price, monthly; no price tags, discounts or proration), SOQL-query the Account by
  its id and update it (create it when the query finds nothing): 2 Salesforce calls;
- order.activated of a new order, besides: SOQL-query the account's onboarding Tasks and create each missing
  one (the three of config.yaml); of a change order: SOQL-query the account's Note for it, create it if
  missing;
- invoice.activated / updated: GET the Nue customer for its account, then upsert Nue_Billing_Event__c by its
  external id (one call; the invoice is taken from the notification, not re-read: generous to the script).
The catalog is read once per run, not per notification (generous too).

Setup (not measured) is burst_drain.py's, in a fresh sandbox subprocess with the same seed: the same
customers, the same genuine notifications, the same shuffled burst with 5% duplicates.

Same cap, measured the same way, within a bench run: at a 10 calls/s cap the script's ~2.4 Salesforce calls
per notification would take about 40 minutes for 10,000. So the burst is handled once, in two parts:
1. the first --sample notifications with the simulator's cap at --cap calls/s (the same cap as revdaemon's
   run), the script pacing its Salesforce calls at the cap (at most one per 1/cap s; a 403 over the cap is
   waited out until the next second and sent again, and counted); its drain time is measured;
2. the rest with the cap lifted, so the run stays short; calls and records are counted the same way.
Salesforce calls, Nue calls and records synced (distinct records created or changed in the simulator,
as for revdaemon) cover the whole burst and are measured. The drain time of the whole burst at the cap is
PROJECTED, not measured: the sample's seconds per Salesforce call at the cap x the whole burst's calls (the
script is one call at a time, so its time scales with its calls). It is printed as projected.

Then the ratios revdaemon / baseline: Salesforce calls per synced record, Nue calls per event, drain time
(revdaemon's measured drain / the baseline's projected one). bench/burst_drain.py runs first as a
subprocess with the same --events, --cap and --seed (its own fresh sandbox), unless --revdaemon-json names
the JSON line of such a run (bench/run_all.py passes the one it has just made, so it does not run twice).
Usage: python bench/baseline_simple_salesforce.py [--events 10000] [--cap 10] [--sample 300] [--seed 7]
       [--skip-revdaemon | --revdaemon-json FILE]
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import subprocess
import sys
import tempfile
import time
from collections import Counter
from decimal import Decimal
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlsplit, urlunsplit

import anyio
import httpx
import requests
from simple_salesforce.api import Salesforce

sys.path.insert(0, str(Path(__file__).resolve().parent))
import burst_drain  # bench/ is not a package: burst_drain.py's sandbox, setup, burst and counting, shared

from revdaemon.config import Settings
from revdaemon.ops.logging import configure_logging

STATUS_PICKLIST = {"Active": "Active", "Scheduled for cancellation": "Active", "Ended": "Churned",
                   "Expired": "Churned", "Canceled": "Canceled"}
PERIOD_MONTHS = {"Month": 1, "Quarter": 3, "Semi-Annual": 6, "Annual": 12, "Year": 12}
BILLING_STATUS = {"Paid": "Paid", "Applied": "Paid", "TransferError": "Overdue", "Canceled": "Void",
                  "Refunded": "Void", "WrittenOff": "Void"}
ACCOUNT_EVENTS = frozenset({"subscription.created", "subscription.updated", "customer.updated", "order.activated"})
INVOICE_EVENTS = frozenset({"invoice.activated", "invoice.updated"})


class SimulatorSession(requests.Session):
    """Sends *.salesforce.com (the login host) and https://<simulator> to the simulator over plain HTTP
    (as tests/sandbox/sf_fixtures.py does), and paces REST calls at `cap` per second when one is set: what a
    plain script does about a per-second limit (a sleep between calls, and on a 403 wait for the next second)."""

    def __init__(self, base_url: str) -> None:
        super().__init__()
        self.base = urlsplit(base_url)
        self.cap: int | None = None
        self.refused = 0
        self._last = 0.0

    def request(self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any) -> requests.Response:
        parts = urlsplit(url if isinstance(url, str) else url.decode())
        host = parts.hostname or ""
        if parts.netloc == self.base.netloc or host.endswith("salesforce.com"):
            url = urlunsplit((self.base.scheme, self.base.netloc, parts.path, parts.query, parts.fragment))
        verb = str(method if isinstance(method, str) else method.decode())
        capped = self.cap is not None and "/services/data/" in str(url)
        while True:
            if capped:
                assert self.cap is not None
                wait = self._last + 1 / self.cap - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
                self._last = time.monotonic()
            response = super().request(verb, url, *args, **kwargs)
            if capped and response.status_code == 403 and b"REQUEST_LIMIT_EXCEEDED" in response.content:
                self.refused += 1
                time.sleep(1 - time.time() % 1)
                continue
            return response


async def prepare(info: dict[str, Any], settings: Settings, events: int, seed: int) -> list[dict[str, Any]]:
    """burst_drain.py's setup and burst (same seed); returns the notification bodies in burst order."""
    rng = random.Random(seed)
    unique = int(events * (1 - burst_drain.DUPLICATE_SHARE))
    notifications, customers = await burst_drain.setup(info, settings, unique, rng)
    print(f"  {customers} customers", flush=True)
    return [dict(event.payload) for event in burst_drain.burst(notifications, events, rng)]


def naive_state(subscriptions: list[dict[str, Any]], prices: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Status, MRR, ARR, next renewal the way a quick script computes them: quantity x list price."""
    live = [s for s in subscriptions if s.get("status") in ("Active", "Scheduled for cancellation")]
    mrr = Decimal(0)
    for sub in live:
        entry = prices.get(str(sub.get("priceBookEntryId")), {})
        months = PERIOD_MONTHS.get(str(entry.get("billingPeriod") or "Month"), 1)
        mrr += Decimal(str(sub.get("quantity") or 0)) * Decimal(str(entry.get("listPrice") or 0)) / months
    status = live[0]["status"] if live else (subscriptions[0]["status"] if subscriptions else None)
    ends = sorted(str(s["subscriptionEndDate"])[:10] for s in live if s.get("subscriptionEndDate"))
    return {"Subscription_Status__c": STATUS_PICKLIST.get(status) if status else None,
            "MRR__c": float(round(mrr, 2)), "ARR__c": float(round(mrr * 12, 2)),
            "Next_Renewal_Date__c": ends[0] if ends else None}


class PlainScript:
    def __init__(self, info: dict[str, Any], settings: Settings, session: SimulatorSession,
                 nue: httpx.Client) -> None:
        sf_info = info["salesforce"]
        self.sf = Salesforce(username=sf_info["username"], consumer_key=sf_info["consumer_key"],
                             privatekey_file=sf_info["private_key_file"], session=session)
        self.nue = nue
        self.tasks = [(t.subject, t.due_days) for t in settings.flows.onboarding.tasks]
        catalog = nue.get("/catalog/products").json()["data"]
        self.prices = {e["id"]: e for product in catalog for e in product.get("priceBookEntries") or []}
        self.errors = 0

    def sobject(self, name: str) -> Any:
        return getattr(cast(Any, self.sf), name)  # simple-salesforce's SFType (made on attribute access)

    def customer(self, customer_id: str) -> dict[str, Any]:
        body = self.nue.get(f"/customers/{customer_id}")
        body.raise_for_status()
        data = body.json()["data"]
        return dict(data[0] if isinstance(data, list) else data)

    def handle(self, notification: dict[str, Any]) -> None:
        kind, data = notification["type"], notification["data"]
        customer_id = data["id"] if kind == "customer.updated" else data["customerId"]
        customer = self.customer(customer_id)
        account_id = customer.get("externalId") or customer.get("salesAccountId")
        if not account_id:
            return
        if kind in INVOICE_EVENTS:
            self.billing_event(account_id, data)
            return
        self.refresh_account(account_id, customer)
        if kind == "order.activated":
            if data.get("orderType") == "New" and not data.get("assetChanges"):
                self.onboarding(account_id, data)
            else:
                self.amendment_note(account_id, data)

    def refresh_account(self, account_id: str, customer: dict[str, Any]) -> None:
        listed = self.nue.get("/subscriptions", params={"customerIds": json.dumps([customer["id"]])})
        listed.raise_for_status()
        subscriptions = listed.json()["data"]
        if isinstance(subscriptions, dict):
            subscriptions = subscriptions.get("subscriptions", [])
        fields = naive_state(subscriptions, self.prices)
        found = self.sf.query(f"SELECT Id, Name, MRR__c FROM Account WHERE Id = '{account_id}'")
        if found["totalSize"]:
            self.sobject("Account").update(found["records"][0]["Id"], fields)
        else:
            self.sobject("Account").create({"Name": customer.get("name") or customer["id"], **fields})

    def onboarding(self, account_id: str, order: dict[str, Any]) -> None:
        subjects = {f"{subject} ({order.get('orderNumber')})": days for subject, days in self.tasks}
        quoted = ", ".join(f"'{s}'" for s in subjects)
        found = self.sf.query(f"SELECT Id, Subject FROM Task WHERE WhatId = '{account_id}' AND Subject IN ({quoted})")
        have = {r["Subject"] for r in found["records"]}
        for subject in subjects:
            if subject not in have:
                self.sobject("Task").create({"WhatId": account_id, "Subject": subject, "Status": "Not Started",
                                             "Priority": "Normal", "ActivityDate": str(order.get("orderStartDate"))})

    def amendment_note(self, account_id: str, order: dict[str, Any]) -> None:
        title = f"Nue amendment {order.get('orderNumber')}"
        found = self.sf.query(f"SELECT Id FROM Note WHERE ParentId = '{account_id}' AND Title = '{title}'")
        if not found["totalSize"]:
            self.sobject("Note").create({"ParentId": account_id, "Title": title,
                                         "Body": f"Change order {order.get('orderNumber')} activated"})

    def billing_event(self, account_id: str, invoice: dict[str, Any]) -> None:
        if str(invoice.get("status")).lower() in ("draft", "pending activation"):
            return
        key = f"{invoice['id']}:{invoice.get('paymentStatus')}"
        self.sobject("Nue_Billing_Event__c").upsert(f"Nue_Event_Key__c/{key}", {
            "Account__c": account_id, "Invoice_Number__c": invoice.get("name"),
            "Amount__c": float(invoice.get("amount") or 0), "Balance__c": float(invoice.get("balance") or 0),
            "Invoice_Status__c": invoice.get("status"), "Payment_Status__c": invoice.get("paymentStatus"),
            "Due_Date__c": str(invoice.get("dueDate"))[:10] if invoice.get("dueDate") else None,
            "Status__c": BILLING_STATUS.get(str(invoice.get("paymentStatus")), "Posted")})

    def run(self, notifications: list[dict[str, Any]]) -> float:
        started = time.perf_counter()
        for notification in notifications:
            try:
                self.handle(notification)
            except Exception as exc:  # a plain script logs and moves on
                self.errors += 1
                if self.errors <= 3:
                    print(f"  error: {exc!r}", flush=True)
        return time.perf_counter() - started


def run_revdaemon(args: argparse.Namespace) -> dict[str, Any]:
    if args.revdaemon_json is not None:
        # burst_drain.py's JSON line from the same bench run (bench/run_all.py runs it just before).
        loaded: dict[str, Any] = json.loads(args.revdaemon_json.read_text())["results"]
        print(f"revdaemon: burst_drain.py's figures from {args.revdaemon_json}", flush=True)
        if (loaded["events_sent"], loaded["cap_per_second"]) != (args.events, args.cap):
            sys.exit(f"{args.revdaemon_json} is a run of {loaded['events_sent']} events at a cap of "
                     f"{loaded['cap_per_second']}, not {args.events} at {args.cap}")
        return loaded
    script = Path(__file__).with_name("burst_drain.py")
    command = [sys.executable, str(script), "--events", str(args.events), "--cap", str(args.cap),
               "--seed", str(args.seed)]
    print(f"revdaemon: {' '.join(command[1:])} ...", flush=True)
    out = subprocess.run(command, capture_output=True, text=True)
    for line in out.stdout.splitlines():
        if not line.startswith("{"):
            print(f"  {line}")
    lines = [line for line in out.stdout.splitlines() if line.startswith('{"benchmark"')]
    if not lines:
        sys.exit(f"burst_drain.py gave no JSON line (exit {out.returncode}):\n{out.stderr[-2000:]}")
    results: dict[str, Any] = json.loads(lines[-1])["results"]
    return results


def baseline(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp, burst_drain.sandbox(Path(tmp)) as info:
        settings = burst_drain.bench_settings(info, args, Path(tmp))
        sf_url, nue_url = info["salesforce"]["url"], info["nue"]["url"]
        print("baseline setup (not measured): the same customers and burst ...", flush=True)
        notifications = anyio.run(prepare, info, settings, args.events, args.seed)
        sample, rest = notifications[:args.sample], notifications[args.sample:]
        before = burst_drain.sf_snapshot(sf_url)
        sf_start, nue_start = burst_drain.api_calls(sf_url), burst_drain.api_calls(nue_url)
        session = SimulatorSession(sf_url)
        with httpx.Client(base_url=nue_url, headers={"nue-api-key": info["nue"]["api_key"]}, timeout=30) as nue:
            script = PlainScript(info, settings, session, nue)  # logs in and reads the catalog: counted
            burst_drain.set_cap(sf_url, args.cap)
            session.cap = args.cap
            print(f"baseline: {len(sample)} notifications one at a time, Salesforce capped at {args.cap} calls/s ...",
                  flush=True)
            sample_seconds = script.run(sample)
            sample_entries = burst_drain.request_log(sf_url)[sf_start:]
            burst_drain.set_cap(sf_url, None)
            session.cap = None
            print(f"baseline: the other {len(rest)} notifications, cap lifted ...", flush=True)
            rest_seconds = script.run(rest)
        entries = burst_drain.request_log(sf_url)[sf_start:]
        nue_calls = burst_drain.api_calls(nue_url) - nue_start
        written = burst_drain.records_written(before, burst_drain.sf_snapshot(sf_url))
    events = len(notifications)
    sf_calls, records = len(entries), sum(written.values())
    sample_calls = len(sample_entries)
    seconds_per_call = sample_seconds / sample_calls
    capped_total = len(burst_drain.admitted(entries))
    return {
        "events_sent": events, "errors": script.errors, "cap_per_second": args.cap,
        "sample_events": len(sample), "sample_salesforce_calls": sample_calls, "sample_seconds": sample_seconds,
        "sample_403": session.refused,
        "sample_max_per_second": max(Counter(int(e["at"]) for e in burst_drain.admitted(sample_entries)).values(),
                                     default=0),
        "uncapped_events": len(rest), "uncapped_seconds": rest_seconds,
        "salesforce_calls": sf_calls, "salesforce_call_kinds": burst_drain.call_kinds(entries),
        "records_synced": records, "records_synced_by_object": written,
        "salesforce_calls_per_record": sf_calls / records if records else None,
        "salesforce_calls_per_event": sf_calls / events,
        "nue_calls": nue_calls, "nue_calls_per_event": nue_calls / events,
        "floor_seconds": capped_total / args.cap,
        "projected_drain_seconds": seconds_per_call * sf_calls,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def compare(rd: dict[str, Any], bl: dict[str, Any]) -> dict[str, Any]:
    def ratio(a: float | None, b: float | None) -> float | None:
        return a / b if a is not None and b else None

    return {
        "revdaemon_salesforce_calls_per_record": rd["salesforce_calls_per_record"],
        "baseline_salesforce_calls_per_record": bl["salesforce_calls_per_record"],
        "salesforce_calls_per_record_ratio": ratio(rd["salesforce_calls_per_record"],
                                                   bl["salesforce_calls_per_record"]),
        # Per notification sent: the same burst in on both sides.
        "salesforce_calls_per_event_ratio": ratio(rd["salesforce_calls"] / rd["events_sent"],
                                                  bl["salesforce_calls_per_event"]),
        "nue_calls_per_event_ratio": ratio(rd["nue_calls"] / rd["events_sent"], bl["nue_calls_per_event"]),
        "revdaemon_drain_seconds": rd["drain_seconds"],
        "baseline_projected_drain_seconds": bl["projected_drain_seconds"],
        "drain_seconds_ratio": ratio(rd["drain_seconds"], bl["projected_drain_seconds"]),
    }


def fmt(value: float | None, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--cap", type=int, default=burst_drain.DEFAULT_CAP,
                        help="Salesforce calls per second, as burst_drain.py's --cap")
    parser.add_argument("--sample", type=int, default=300, help="notifications handled under the cap")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--skip-revdaemon", action="store_true", help="only the baseline, no burst_drain run")
    parser.add_argument("--revdaemon-json", type=Path, default=None,
                        help="a file holding burst_drain.py's JSON line from this bench run, instead of running it")
    args = parser.parse_args()
    args.workers = args.batch = None  # burst_drain.bench_settings: config.yaml's engine settings
    args.nue_rate = 1000.0
    configure_logging(level="warning")
    revdaemon = None if args.skip_revdaemon else run_revdaemon(args)
    figures = baseline(args)
    f = figures
    print(f"baseline: {f['events_sent']} notifications, {f['errors']} errors; the first {f['sample_events']} at the "
          f"cap ({f['cap_per_second']} calls/s): {f['sample_salesforce_calls']} Salesforce calls in "
          f"{f['sample_seconds']:.1f} s ({f['sample_salesforce_calls'] / f['sample_seconds']:.1f} calls/s, "
          f"{f['sample_403']} refused with 403); the other {f['uncapped_events']} uncapped in "
          f"{f['uncapped_seconds']:.1f} s")
    kinds = ", ".join(f"{k} {v}" for k, v in f["salesforce_call_kinds"].items())
    written = ", ".join(f"{k} {v}" for k, v in f["records_synced_by_object"].items() if v)
    print(f"baseline Salesforce: {f['salesforce_calls']} calls ({kinds}) for {f['records_synced']} records synced "
          f"({written}): {fmt(f['salesforce_calls_per_record'], '.3f')} per synced record, "
          f"{f['salesforce_calls_per_event']:.3f} per notification")
    print(f"baseline Nue: {f['nue_calls']} calls, {f['nue_calls_per_event']:.3f} per notification")
    print(f"baseline drain of the whole burst at the cap: PROJECTED {f['projected_drain_seconds']:.0f} s "
          f"(the sample's {f['sample_seconds'] / f['sample_salesforce_calls']:.3f} s per call x "
          f"{f['salesforce_calls']} calls; its floor {f['floor_seconds']:.0f} s)")
    comparison: dict[str, Any] = {}
    if revdaemon is not None:
        c = comparison = compare(revdaemon, figures)
        if revdaemon["events_left"] or revdaemon["dead"]:
            print(f"note: revdaemon's burst left {revdaemon['events_left']} events undrained and "
                  f"{revdaemon['dead']} dead; its figures cover the events it drained")
        print(f"revdaemon / baseline, Salesforce calls per synced record: "
              f"{fmt(c['revdaemon_salesforce_calls_per_record'], '.4f')} / "
              f"{fmt(c['baseline_salesforce_calls_per_record'], '.4f')} = "
              f"{fmt(c['salesforce_calls_per_record_ratio'], '.3f')}")
        print(f"revdaemon / baseline, Salesforce calls per notification: "
              f"{fmt(c['salesforce_calls_per_event_ratio'], '.3f')}; Nue calls per notification: "
              f"{fmt(c['nue_calls_per_event_ratio'], '.3f')}")
        print(f"revdaemon / baseline, drain time at the cap: {revdaemon['drain_seconds']:.1f} s measured / "
              f"{f['projected_drain_seconds']:.0f} s projected = {fmt(c['drain_seconds_ratio'], '.3f')}")
    print(json.dumps({"benchmark": "baseline_simple_salesforce", "results": figures, "revdaemon": revdaemon,
                      "comparison": comparison}))
    if figures["errors"]:
        sys.exit("the baseline met errors: the figures above are not valid")


if __name__ == "__main__":
    main()
