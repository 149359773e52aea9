"""A burst of Nue notifications drained by revdaemon's workers against the sandbox: API calls spent.

Setup (not measured): the sandbox runs in its own process; N customers, each with a Salesforce account
and an activated Nue order. Then 10,000 subscription notifications (5% duplicates, shuffled, so many
arrive out of order) go into the inbox at once, and the daemon's workers drain it. Printed: Salesforce
calls per event and per account written, Nue calls per event (the batched re-reads included), drain
time, and peak RSS. Targets (issue 12): <= 0.02 Salesforce calls per event, <= 0.05 Nue calls per event.
Usage: python bench/burst_drain.py [--events 10000] [--customers 300] [--workers 2] [--batch 200]
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
from pathlib import Path
from typing import Any

import anyio
import httpx

from revdaemon.config import ApiRate, NueSettings, SalesforceAuth, SalesforceSettings
from revdaemon.connectors.nue import NueClient
from revdaemon.connectors.salesforce import SalesforceClient
from revdaemon.engine.executor import Executor
from revdaemon.engine.lookups import Fetcher
from revdaemon.engine.worker import Worker, WorkerStats
from revdaemon.flows.subscription_status import SubscriptionStatusFlow
from revdaemon.limits import ApiLimiter, DailyBudget, RetryPolicy
from revdaemon.ops.logging import configure_logging
from revdaemon.store import open_store
from revdaemon.store.records import NewEvent
from revdaemon.store.states import EventStatus


def api_calls(url: str) -> int:
    """API requests the simulator has answered so far (its request log; admin calls are not in it)."""
    body = httpx.get(f"{url}/__sandbox/requests", timeout=60).json()
    return len(body["requests"] if isinstance(body, dict) else body)


async def setup(sf: SalesforceClient, nue: NueClient, nue_url: str, customers: int) -> list[dict[str, Any]]:
    """Accounts in Salesforce, linked customers with activated orders in Nue; their subscriptions."""
    accounts = [{"Name": f"Burst Customer {i:04d}", "Nue_Customer_Id__c": f"burst-{i:04d}"} for i in range(customers)]
    results = await sf.upsert_many("Account", "Nue_Customer_Id__c", accounts)
    account_ids = [r.id for r in results if r.id]
    created: list[dict[str, Any]] = []
    for start in range(0, len(account_ids), 200):
        chunk = account_ids[start:start + 200]
        created += await nue.create_customers([{"name": f"Burst {i}", "recordType": "Business",
                                                "salesAccountId": a} for i, a in enumerate(chunk, start)])
    async with httpx.AsyncClient(base_url=nue_url, timeout=30) as admin:
        for i, customer in enumerate(created):
            response = await admin.post("/__sandbox/scenario/create-and-activate-order",
                                        json={"customer": customer["id"], "opportunity": i % 6})
            response.raise_for_status()
    return await nue.list_subscriptions([c["id"] for c in created])


def burst(subscriptions: list[dict[str, Any]], events: int, rng: random.Random) -> list[NewEvent]:
    unique = int(events * 0.95)
    out = []
    for i in range(unique):
        sub = rng.choice(subscriptions)
        modified = f"2026-01-01T00:{(i // 60) % 60:02d}:{i % 60:02d}Z"
        out.append(NewEvent(source="nue_webhook", key=f"nue:burst-{i}", type="subscription.updated",
                            payload={"id": f"burst-{i}", "type": "subscription.updated",
                                     "data": {**sub, "lastModifiedDate": modified}}))
    out += [rng.choice(out) for _ in range(events - unique)]  # duplicates: same key, stored once
    rng.shuffle(out)
    return out


async def run(info: dict[str, Any], args: argparse.Namespace, workdir: Path) -> dict[str, float]:
    sf_info, nue_info = info["salesforce"], info["nue"]
    fast = ApiRate(requests_per_second=1000, burst=1000, max_concurrency=8)
    async with httpx.AsyncClient(timeout=60) as http:
        sf = SalesforceClient(SalesforceSettings(login_url=sf_info["login_url"], auth=SalesforceAuth.JWT,
                                                 client_id=sf_info["consumer_key"], username=sf_info["username"],
                                                 private_key_file=sf_info["private_key_file"]),
                              http, limiter=ApiLimiter(fast), budget=DailyBudget(share=1.0), retry=RetryPolicy())
        nue = NueClient(NueSettings(base_url=nue_info["url"], api_key=nue_info["api_key"]), http,
                        limiter=ApiLimiter(fast), retry=RetryPolicy())
        print(f"setup: {args.customers} customers with activated orders ...", flush=True)
        subscriptions = await setup(sf, nue, nue_info["url"], args.customers)
        events = burst(subscriptions, args.events, random.Random(7))
        store = await open_store(workdir / "burst.sqlite3")
        inserted = await store.add_events(events)
        stored = sum(inserted)
        sf_before, nue_before = api_calls(sf_info["url"]), api_calls(nue_info["url"])
        stats = WorkerStats()
        executor = Executor(store, sf, nue, mapping_version=1)
        workers = [Worker(store, Fetcher(sf, nue), executor, [SubscriptionStatusFlow()], name=f"w{i}",
                          batch_size=args.batch, stats=stats) for i in range(args.workers)]
        started = time.perf_counter()

        async def drain(worker: Worker) -> None:
            # Until the inbox is empty: an event retried with backoff (two workers reached the same record at
            # once) is not due yet, so an idle round does not mean the burst is drained.
            while True:
                if await worker.run_once():
                    continue
                depths = await store.queue_depths()
                if depths[EventStatus.RECEIVED] + depths[EventStatus.CLAIMED] == 0:
                    return
                await anyio.sleep(0.05)

        async with anyio.create_task_group() as tg:
            for worker in workers:
                tg.start_soon(drain, worker)
        elapsed = time.perf_counter() - started
        depths = await store.queue_depths()
        writes = [w for w in await store.list_writes(limit=100_000) if w.outcome == "ok"]
        await store.close()
    sf_calls = api_calls(sf_info["url"]) - sf_before
    nue_calls = api_calls(nue_info["url"]) - nue_before
    accounts_written = len({w.record_ref for w in writes})
    return {
        "events_sent": len(events), "events_stored": stored, "events_done": depths[EventStatus.DONE],
        "events_left": depths[EventStatus.RECEIVED] + depths[EventStatus.CLAIMED], "dead": depths[EventStatus.DEAD],
        "drain_seconds": elapsed, "events_per_second": stored / elapsed,
        "salesforce_calls": sf_calls, "salesforce_calls_per_event": sf_calls / stored,
        "accounts_written": accounts_written,
        "salesforce_calls_per_account_written": sf_calls / max(accounts_written, 1),
        "nue_calls": nue_calls, "nue_calls_per_event": nue_calls / stored,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--customers", type=int, default=300)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch", type=int, default=200)
    args = parser.parse_args()
    configure_logging(level="warning")  # a log line per event would measure the terminal, not the daemon
    with tempfile.TemporaryDirectory() as tmp:
        sandbox = subprocess.Popen([sys.executable, "-m", "revdaemon.cli", "sandbox", "--json", "--key-dir", tmp],
                                   stdout=subprocess.PIPE, text=True)
        try:
            assert sandbox.stdout is not None
            info = json.loads(sandbox.stdout.readline())
            figures = anyio.run(run, info, args, Path(tmp))
        finally:
            sandbox.send_signal(signal.SIGTERM)
            sandbox.wait(timeout=15)
    print(f"burst of {figures['events_sent']:.0f} notifications ({figures['events_stored']:.0f} unique) drained in "
          f"{figures['drain_seconds']:.1f} s ({figures['events_per_second']:.0f} events/s); "
          f"{figures['events_left']:.0f} left, {figures['dead']:.0f} dead")
    print(f"Salesforce: {figures['salesforce_calls']:.0f} calls, {figures['salesforce_calls_per_event']:.4f} per event,"
          f" {figures['salesforce_calls_per_account_written']:.3f} per account written "
          f"({figures['accounts_written']:.0f} accounts)")
    print(f"Nue: {figures['nue_calls']:.0f} calls, {figures['nue_calls_per_event']:.4f} per event")
    print(f"peak RSS {figures['peak_rss_mb']:.0f} MB")
    print(json.dumps({"benchmark": "burst_drain", "results": figures}))
    if figures["events_left"] or figures["dead"]:
        sys.exit("the burst did not drain cleanly")


if __name__ == "__main__":
    main()
