"""Baseline: the same burst drained by a plain simple-salesforce script, next to revdaemon's burst_drain.

What a hand-written integration does for each notification (the seed's template: query for an existing
record, then create or update): GET the Nue customer and its subscriptions (httpx with the nue-api-key),
compute MRR naively (quantity x listPrice of the price book entry, monthly; no price tags, no discounts,
no proration), then with simple-salesforce SOQL-query the Account by its id and update it (create it when
the query finds nothing). The catalog is read once per run, not per event (generous to the baseline).
Duplicated notifications are processed again: a plain script has no inbox to dedupe them.

Setup (not measured) is burst_drain.py's: N customers with Salesforce accounts and activated Nue orders in
a sandbox subprocess, and the same shuffled burst (same seed, 5% duplicates). API calls are counted from
the simulators' request logs. Then bench/burst_drain.py runs as a subprocess with the same --events and
--customers (its own fresh sandbox) and the ratios revdaemon / baseline are printed; target (issue 12):
revdaemon spends >= 50x fewer Salesforce calls than the baseline.
Usage: python bench/baseline_simple_salesforce.py [--events 10000] [--customers 300] [--skip-revdaemon]
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import signal
import subprocess
import sys
import tempfile
import time
from decimal import Decimal
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlsplit, urlunsplit

import anyio
import httpx
import requests
from simple_salesforce.api import Salesforce

sys.path.insert(0, str(Path(__file__).resolve().parent))
import burst_drain  # bench/ is not a package: burst_drain.py's setup and burst, shared

from revdaemon.config import ApiRate, NueSettings, SalesforceAuth, SalesforceSettings
from revdaemon.connectors.nue import NueClient
from revdaemon.connectors.salesforce import SalesforceClient
from revdaemon.limits import ApiLimiter, DailyBudget, RetryPolicy
from revdaemon.ops.logging import configure_logging

TARGET_FEWER_CALLS = 50.0  # issue 12: >= 50x fewer Salesforce calls than the baseline
STATUS_PICKLIST = {"Active": "Active", "Scheduled for cancellation": "Active", "Ended": "Churned",
                   "Expired": "Churned", "Canceled": "Canceled"}
PERIOD_MONTHS = {"Month": 1, "Quarter": 3, "Semi-Annual": 6, "Annual": 12, "Year": 12}


class SimulatorSession(requests.Session):
    """Sends *.salesforce.com (the login host) and https://<simulator> to the simulator over plain HTTP
    (as tests/sandbox/sf_fixtures.py does)."""

    def __init__(self, base_url: str) -> None:
        super().__init__()
        self.base = urlsplit(base_url)

    def request(self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any) -> requests.Response:
        parts = urlsplit(url if isinstance(url, str) else url.decode())
        host = parts.hostname or ""
        if parts.netloc == self.base.netloc or host.endswith("salesforce.com"):
            url = urlunsplit((self.base.scheme, self.base.netloc, parts.path, parts.query, parts.fragment))
        return super().request(str(method if isinstance(method, str) else method.decode()), url, *args,
                               **kwargs)


async def prepare(info: dict[str, Any], customers: int, events: int) -> list[dict[str, Any]]:
    """burst_drain.py's setup with its clients; returns the burst's notification bodies, in order."""
    sf_info, nue_info = info["salesforce"], info["nue"]
    fast = ApiRate(requests_per_second=1000, burst=1000, max_concurrency=8)
    async with httpx.AsyncClient(timeout=60) as http:
        sf = SalesforceClient(SalesforceSettings(login_url=sf_info["login_url"], auth=SalesforceAuth.JWT,
                                                 client_id=sf_info["consumer_key"], username=sf_info["username"],
                                                 private_key_file=sf_info["private_key_file"]),
                              http, limiter=ApiLimiter(fast), budget=DailyBudget(share=1.0), retry=RetryPolicy())
        nue = NueClient(NueSettings(base_url=nue_info["url"], api_key=nue_info["api_key"]), http,
                        limiter=ApiLimiter(fast), retry=RetryPolicy())
        subscriptions = await burst_drain.setup(sf, nue, nue_info["url"], customers)
    return [dict(event.payload) for event in burst_drain.burst(subscriptions, events, random.Random(7))]


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


def drain(info: dict[str, Any], notifications: list[dict[str, Any]]) -> dict[str, float]:
    sf_info, nue_info = info["salesforce"], info["nue"]
    started = time.perf_counter()
    sf = Salesforce(username=sf_info["username"], consumer_key=sf_info["consumer_key"],
                    privatekey_file=sf_info["private_key_file"], session=SimulatorSession(sf_info["url"]))
    account = cast(Any, sf).Account  # simple-salesforce's SFType for Account (made on attribute access)
    errors = created = updated = 0
    accounts: set[str] = set()
    with httpx.Client(base_url=nue_info["url"], headers={"nue-api-key": nue_info["api_key"]}, timeout=30) as nue:
        catalog = nue.get("/catalog/products").json()["data"]
        prices = {e["id"]: e for product in catalog for e in product.get("priceBookEntries") or []}
        for notification in notifications:
            try:
                customer_id = notification["data"]["customerId"]
                customer = nue.get(f"/customers/{customer_id}").json()["data"]
                subscriptions = nue.get("/subscriptions", params={"customerIds": json.dumps([customer_id])}
                                        ).json()["data"]
                if isinstance(subscriptions, dict):
                    subscriptions = subscriptions.get("subscriptions", [])
                if isinstance(customer, list):
                    customer = customer[0]
                account_id = customer.get("externalId") or customer.get("salesAccountId")
                if not account_id:
                    continue
                fields = naive_state(subscriptions, prices)
                found = sf.query(f"SELECT Id, Name, MRR__c FROM Account WHERE Id = '{account_id}'")
                if found["totalSize"]:
                    account.update(found["records"][0]["Id"], fields)
                    updated += 1
                else:
                    account.create({"Name": customer.get("name") or customer_id, **fields})
                    created += 1
                accounts.add(str(account_id))
            except Exception as exc:  # a plain script logs and moves on
                errors += 1
                if errors <= 3:
                    print(f"  error: {exc!r}", flush=True)
    elapsed = time.perf_counter() - started
    return {"drain_seconds": elapsed, "errors": errors, "accounts_created": created, "accounts_updated": updated,
            "accounts_written": len(accounts)}


def run_revdaemon(events: int, customers: int) -> dict[str, Any]:
    script = Path(__file__).with_name("burst_drain.py")
    print(f"revdaemon: bench/burst_drain.py --events {events} --customers {customers} ...", flush=True)
    out = subprocess.run([sys.executable, str(script), "--events", str(events), "--customers", str(customers)],
                         capture_output=True, text=True)
    for line in out.stdout.splitlines():
        if not line.startswith("{"):
            print(f"  {line}")
    lines = [line for line in out.stdout.splitlines() if line.startswith('{"benchmark"')]
    if not lines:
        sys.exit(f"burst_drain.py gave no JSON line (exit {out.returncode}):\n{out.stderr[-2000:]}")
    results: dict[str, Any] = json.loads(lines[-1])["results"]
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--customers", type=int, default=300)
    parser.add_argument("--skip-revdaemon", action="store_true", help="only the baseline, no burst_drain run")
    args = parser.parse_args()
    configure_logging(level="warning")
    revdaemon = None if args.skip_revdaemon else run_revdaemon(args.events, args.customers)
    with tempfile.TemporaryDirectory() as tmp:
        sandbox = subprocess.Popen([sys.executable, "-m", "revdaemon.cli", "sandbox", "--json", "--key-dir", tmp],
                                   stdout=subprocess.PIPE, text=True)
        try:
            assert sandbox.stdout is not None
            info = json.loads(sandbox.stdout.readline())
            print(f"baseline setup: {args.customers} customers with activated orders ...", flush=True)
            notifications = anyio.run(prepare, info, args.customers, args.events)
            sf_before = burst_drain.api_calls(info["salesforce"]["url"])
            nue_before = burst_drain.api_calls(info["nue"]["url"])
            print(f"baseline: {len(notifications)} notifications, one at a time ...", flush=True)
            figures: dict[str, float] = drain(info, notifications)
            sf_calls = burst_drain.api_calls(info["salesforce"]["url"]) - sf_before
            nue_calls = burst_drain.api_calls(info["nue"]["url"]) - nue_before
        finally:
            sandbox.send_signal(signal.SIGTERM)
            sandbox.wait(timeout=15)
    events = len(notifications)
    figures.update({
        "events_sent": events, "events_per_second": events / figures["drain_seconds"],
        "salesforce_calls": sf_calls, "salesforce_calls_per_event": sf_calls / events,
        "salesforce_calls_per_account_written": sf_calls / max(figures["accounts_written"], 1),
        "nue_calls": nue_calls, "nue_calls_per_event": nue_calls / events,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    })
    print(f"baseline: {events} notifications drained in {figures['drain_seconds']:.1f} s "
          f"({figures['events_per_second']:.0f} events/s), {figures['errors']:.0f} errors")
    print(f"baseline Salesforce: {sf_calls} calls (login included), {figures['salesforce_calls_per_event']:.3f} per "
          f"event, {figures['salesforce_calls_per_account_written']:.1f} per account written "
          f"({figures['accounts_written']:.0f} accounts)")
    print(f"baseline Nue: {nue_calls} calls, {figures['nue_calls_per_event']:.3f} per event")
    comparison: dict[str, float] = {}
    if revdaemon is not None:
        # Per notification sent: the same burst in, both sides (revdaemon's own figures divide by stored events).
        rd_sf = revdaemon["salesforce_calls"] / revdaemon["events_sent"]
        rd_nue = revdaemon["nue_calls"] / revdaemon["events_sent"]
        comparison = {
            "revdaemon_salesforce_calls_per_event": rd_sf,
            "baseline_salesforce_calls_per_event": figures["salesforce_calls_per_event"],
            "salesforce_calls_ratio": rd_sf / figures["salesforce_calls_per_event"],
            "fewer_salesforce_calls_x": figures["salesforce_calls_per_event"] / rd_sf if rd_sf else float("inf"),
            "nue_calls_ratio": rd_nue / figures["nue_calls_per_event"],
            "drain_seconds_ratio": revdaemon["drain_seconds"] / figures["drain_seconds"],
        }
        if revdaemon["events_left"] or revdaemon["dead"]:
            print(f"note: revdaemon's burst left {revdaemon['events_left']:.0f} events undrained and "
                  f"{revdaemon['dead']:.0f} dead; its figures cover the events it drained")
        met = "met" if comparison["fewer_salesforce_calls_x"] >= TARGET_FEWER_CALLS else "MISSED"
        print(f"revdaemon / baseline, Salesforce calls per event: {rd_sf:.4f} / "
              f"{figures['salesforce_calls_per_event']:.3f} = {comparison['salesforce_calls_ratio']:.4f} "
              f"({comparison['fewer_salesforce_calls_x']:.0f}x fewer; target >= {TARGET_FEWER_CALLS:.0f}x "
              f"fewer: {met})")
        print(f"revdaemon / baseline, Nue calls per event: {rd_nue:.4f} / {figures['nue_calls_per_event']:.3f} = "
              f"{comparison['nue_calls_ratio']:.4f}")
        print(f"revdaemon / baseline, drain time: {revdaemon['drain_seconds']:.1f} s / "
              f"{figures['drain_seconds']:.1f} s = {comparison['drain_seconds_ratio']:.3f}")
    print(json.dumps({"benchmark": "baseline_simple_salesforce", "results": figures, "revdaemon": revdaemon,
                      "comparison": comparison}))
    if figures["errors"]:
        sys.exit("the baseline met errors: the figures above are not valid")


if __name__ == "__main__":
    main()
