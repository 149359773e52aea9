"""Retention: a month of traffic into two SQLite stores, one pruned nightly and one never; sizes and ingest rates.

--events (1,000,000) events spread evenly over --days (30) simulated days, through the store's own calls, on
the store's injected clock: each simulated hour's events are stored with `add_events` in batches of --batch
(100, about what the listener's group commit gathers), then claimed 1,000 at a time and completed. Half are
webhook notifications (Nue's shape, ~200 bytes), half poll events carrying the record's fields (~900 bytes),
each with its own key. A share of the events (--writes-per-event, 0.3) makes one write, whose intent (confirmed)
and audit entry are stored as the executor leaves them; --create-share (0.6) of those writes are creates
without an external id (Tasks, Notes: their intents are kept for ever), the rest updates and upserts. These
rows go in with one INSERT per hour on a second connection (the executor's four transactions per write would
make the run take an hour; the rows are the same). The proportions follow bench/burst_drain.py's burst, where
0.78 records were synced per notification, 63% of them Tasks and Notes; a real month has more events that plan
nothing (the polls re-deliver what webhooks brought, revdaemon's own writes come back as echoes), hence 0.3.

One store is pruned every simulated night at 03:30 with `engine.prune.prune_store` and --retention-days (7, so
that a month shows the steady state a 90-day retention reaches after three months); the other never is.
Printed: both stores' size on disk (file and WAL) at the end, and their growth per day over the last week (the
pruned store's is what a day adds for good: event keys and the creates' intents); the pruned store's size after
a VACUUM (of a copy); the ingest rate (`add_events`, in batches of --batch) of each store when empty and at the
end, five rounds of 2,000 new events each time: events per second of the least disturbed round, and events per
CPU second of this process (the machine is shared with other work, which moves wall-clock figures a lot and CPU
time little), and the median hour of the first and the last simulated day; the prune transactions' times (what a
worker's claim or a webhook's commit waits for at most), wall-clock and CPU, and the nightly prune's.

Usage: python bench/retention.py [--events 1000000] [--days 30] [--retention-days 7] [--batch 100]
       [--writes-per-event 0.3] [--create-share 0.6] [--seed 5]
"""

from __future__ import annotations

import argparse
import json
import random
import sqlite3
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from itertools import chain
from pathlib import Path
from typing import Any

import anyio

from revdaemon.engine.prune import prune_store
from revdaemon.ops.logging import configure_logging
from revdaemon.store import Store, open_store
from revdaemon.store.encoding import dumps, ts_text
from revdaemon.store.records import NewEvent
from revdaemon.store.retention import ORDER, PruneStep, cutoff_of

START = datetime(2026, 3, 1, tzinfo=UTC)
CLAIM = 1_000  # events per claim, as engine.batch_size
PRUNE_AT = timedelta(hours=3, minutes=30)  # schedule.prune_cron's default
LEASE = timedelta(minutes=5)
PROBE_EVENTS, PROBE_ROUNDS = 2_000, 5


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> datetime:
        return self.now


@dataclass
class Figures:
    """One store's run."""

    pruned: bool
    ingest: dict[int, list[float]] = field(default_factory=dict)  # day -> each hour's events/s in add_events
    probes: dict[str, dict[str, float]] = field(default_factory=dict)  # "start", "end" -> probe_ingest's figures
    size_by_day: dict[int, int] = field(default_factory=dict)
    prune_seconds: list[float] = field(default_factory=list)
    batch_ms: dict[str, list[float]] = field(default_factory=dict)  # target -> each prune transaction's time
    batch_cpu_ms: dict[str, list[float]] = field(default_factory=dict)  # and the CPU this process spent on it
    pruned_rows: dict[str, int] = field(default_factory=dict)
    vacuumed_size: int | None = None  # a copy's size at the end, after VACUUM

    def rate(self, day: int) -> float:
        """The day's median hourly rate: the machine is shared, and a median shrugs off a busy moment."""
        return statistics.median(self.ingest[day])


def size_of(path: Path) -> int:
    return sum(part.stat().st_size for part in (path, path.with_name(path.name + "-wal")) if part.exists())


def new_event(rng: random.Random, serial: int, at: datetime) -> NewEvent:
    """A webhook notification or a poll event, as the listener and the pollers store them."""
    stamp = ts_text(at)
    customer = f"c-{rng.randrange(20_000):05d}"
    if serial % 2:
        kind = rng.choice(("subscription.updated", "invoice.updated", "order.activated", "customer.updated"))
        return NewEvent(source="nue_webhook", key=f"nue:evt-{serial:09d}-{rng.getrandbits(32):08x}", type=kind,
                        payload={"id": f"evt-{serial}", "type": kind, "createdDate": stamp,
                                 "data": {"id": f"rec-{serial}", "customerId": customer, "lastModifiedDate": stamp}})
    record = {"id": f"sub-{serial}", "customerId": customer, "status": rng.choice(("Active", "Canceled", "Expired")),
              "subscriptionVersion": rng.randrange(1, 9), "quantity": rng.randrange(1, 500),
              "startDate": "2026-01-01", "endDate": "2027-01-01", "totalAmount": f"{rng.uniform(10, 90_000):.2f}",
              "currencyIsoCode": "USD", "productId": f"01t{rng.getrandbits(48):012x}",
              "priceBookEntryId": f"01u{rng.getrandbits(48):012x}", "lastModifiedDate": stamp,
              "createdDate": stamp, "name": f"SUB-{serial:08d}", "autoRenew": True, "termMonths": 12}
    return NewEvent(source="nue_poll", key=f"nue:Subscription:sub-{serial}:{stamp}", type="subscription.updated",
                    payload={"data": record})


def writes_of(rng: random.Random, event_ids: list[int], at: datetime, share: float,
              create_share: float) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """Intent and audit rows of the writes these events made, as the executor leaves them once confirmed."""
    intents: list[tuple[Any, ...]] = []
    audits: list[tuple[Any, ...]] = []
    stamp = ts_text(at)
    for event_id in event_ids:
        if rng.random() >= share:
            continue
        account = f"001{rng.getrandbits(60):015x}"
        if rng.random() < create_share:
            operation, sobject, key = "SfCreate", "Task", f"onboarding:task:ord-{event_id}:Kick-off call"
            fields = {"WhatId": account, "Subject": f"Kick-off call (ORD-{event_id:08d})", "Status": "Not Started",
                      "Priority": "Normal", "OwnerId": f"005{rng.getrandbits(60):015x}",
                      "ActivityDate": "2026-03-08"}
            result = {"id": f"00T{rng.getrandbits(60):015x}", "created": True}
        else:
            operation, sobject = rng.choice((("SfUpdate", "Account"), ("SfUpsert", "Nue_Billing_Event__c")))
            key = f"subscription_status:account:{account}:{stamp}:{rng.getrandbits(32):08x}"
            fields = {"Nue_Subscription_Status__c": "Active", "MRR__c": f"{rng.uniform(10, 9_000):.2f}",
                      "ARR__c": f"{rng.uniform(100, 99_000):.2f}", "Next_Renewal_Date__c": "2027-01-01"}
            result = {"id": account, "created": False}
        request = {"kind": operation, "target": f"salesforce:{sobject}:{account}", "fields": fields}
        intents.append((key, "salesforce", operation, f"{sobject}:{account}", dumps(request), event_id, "confirmed",
                        dumps(result), stamp, stamp))
        audits.append((stamp, "salesforce", operation, sobject, "ok", key, event_id, f"salesforce:{sobject}:{account}",
                       dumps({"request": request, "result": result, "error": None, "error_code": None}), 1))
    return intents, audits


def insert_writes(db: sqlite3.Connection, intents: list[tuple[Any, ...]], audits: list[tuple[Any, ...]]) -> None:
    with db:
        db.executemany("""INSERT INTO write_intents (idem_key, system, operation, target, request, event_id, status,
                              result, created_at, updated_at, ever_sent) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 1)
                          ON CONFLICT (idem_key) DO NOTHING""", intents)
        db.executemany("""INSERT INTO audit_log (at, system, operation, target, outcome, idem_key, event_id, record_ref,
                              detail, mapping_version) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""", audits)


async def simulate(path: Path, args: argparse.Namespace, pruned: bool) -> Figures:
    clock = Clock()
    store: Store = await open_store(path, clock=clock)
    db = sqlite3.connect(path, timeout=30)
    rng = random.Random(args.seed)
    figures = Figures(pruned=pruned)
    per_hour = args.events / (args.days * 24)
    serial = 0
    try:
        figures.probes["start"] = await probe_ingest(store, rng, args.batch, "start")
        for day in range(1, args.days + 1):
            figures.ingest[day] = []
            for hour in range(24):
                clock.now = START + timedelta(days=day - 1, hours=hour)
                if pruned and timedelta(hours=hour) <= PRUNE_AT < timedelta(hours=hour + 1):
                    await prune_nightly(store, clock, args.retention_days, figures)
                count = int(per_hour * (24 * (day - 1) + hour + 1)) - serial
                events = [new_event(rng, serial + i, clock.now) for i in range(count)]
                serial += count
                began = time.perf_counter()
                for start in range(0, len(events), args.batch):
                    await store.add_events(events[start:start + args.batch])
                figures.ingest[day].append(len(events) / (time.perf_counter() - began))
                done: list[int] = []
                while claimed := await store.claim_events(worker="w", limit=CLAIM, lease=LEASE):
                    await store.complete_events([e.id for e in claimed], claimed_by="w")
                    done += [e.id for e in claimed]
                insert_writes(db, *writes_of(rng, done, clock.now, args.writes_per_event, args.create_share))
            figures.size_by_day[day] = size_of(path)
            print(f"  {'pruned' if pruned else 'kept  '} day {day:2d}: {serial:,} events, "
                  f"{figures.size_by_day[day] / 2**20:,.1f} MB, add_events {figures.rate(day):,.0f} events/s",
                  flush=True)
        if pruned:
            figures.vacuumed_size = await vacuumed_size(store, path.with_name("copy.sqlite3"))
        figures.probes["end"] = await probe_ingest(store, rng, args.batch, "end")
    finally:
        db.close()
        await store.close()
    return figures


async def probe_ingest(store: Store, rng: random.Random, batch: int, label: str) -> dict[str, float]:
    """add_events' rate on this store now, over PROBE_ROUNDS rounds of PROBE_EVENTS new events (then worked off
    like the others): events per second of the least disturbed round, and events per CPU second of this process
    (the SQLite thread's included), which other programs on the machine hardly move."""
    wall, cpu = [], []
    for round_ in range(PROBE_ROUNDS):
        events = [new_event(rng, 10**9 + i, START) for i in range(PROBE_EVENTS)]
        events = [NewEvent(source=e.source, key=f"probe-{label}-{round_}:{e.key}", type=e.type, payload=e.payload)
                  for e in events]
        began, began_cpu = time.perf_counter(), time.process_time()
        for start in range(0, len(events), batch):
            await store.add_events(events[start:start + batch])
        wall.append(len(events) / (time.perf_counter() - began))
        cpu.append(len(events) / (time.process_time() - began_cpu))
    while claimed := await store.claim_events(worker="w", limit=CLAIM, lease=LEASE):
        await store.complete_events([e.id for e in claimed], claimed_by="w")
    return {"events_per_second": max(wall), "events_per_cpu_second": statistics.median(cpu)}


async def prune_nightly(store: Store, clock: Clock, retention_days: int, figures: Figures) -> None:
    cutoff = cutoff_of(clock.now, retention_days)
    assert cutoff is not None
    last, last_cpu = time.perf_counter(), time.process_time()
    target = ORDER[0].value  # of the batch being carried out

    def timed(step: PruneStep) -> None:  # called right after each transaction (pause=0: nothing in between)
        nonlocal last, last_cpu, target
        now, now_cpu = time.perf_counter(), time.process_time()
        figures.batch_ms.setdefault(target, []).append((now - last) * 1000)
        figures.batch_cpu_ms.setdefault(target, []).append((now_cpu - last_cpu) * 1000)
        last, last_cpu = now, now_cpu
        target = step.target.value if step.target is not None else ""

    began = time.perf_counter()
    step = await prune_store(store, cutoff, pause=0, on_batch=timed)
    figures.prune_seconds.append(time.perf_counter() - began)
    for target, count in step.pruned.items():
        figures.pruned_rows[target.value] = figures.pruned_rows.get(target.value, 0) + count


async def vacuumed_size(store: Store, copy: Path) -> int:
    """The store's size once VACUUMed, measured on a copy (the end's ingest probe runs on the store as it is)."""
    await store.backup(copy)
    vacuumed = await open_store(copy)
    try:
        await vacuumed.reclaim_space()
    finally:
        await vacuumed.close()
    size = size_of(copy)
    await anyio.Path(copy).unlink()
    return size


def times(wall: list[float], cpu: list[float]) -> dict[str, float]:
    """Transactions' times in ms: wall-clock (what a writer waiting on one sees) and this process's CPU."""
    def p99(values: list[float]) -> float:
        return statistics.quantiles(values, n=100, method="inclusive")[98]

    return {"median": statistics.median(wall), "p99": p99(wall), "max": max(wall), "cpu_median": statistics.median(cpu),
            "cpu_p99": p99(cpu), "count": len(wall)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--retention-days", type=int, default=7)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--writes-per-event", type=float, default=0.3)
    parser.add_argument("--create-share", type=float, default=0.6)
    parser.add_argument("--seed", type=int, default=5)
    args = parser.parse_args()
    configure_logging(level="warning")  # the nightly prune's log line each simulated night is not a figure
    if args.days <= args.retention_days:
        parser.error("--days must exceed --retention-days, or nothing is ever old enough to prune")
    print(f"retention: {args.events:,} events over {args.days} days, {args.writes_per_event:g} writes per event "
          f"({args.create_share:.0%} creates), nightly prune at {args.retention_days} days", flush=True)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        kept_path, pruned_path = Path(tmp) / "kept.sqlite3", Path(tmp) / "pruned.sqlite3"
        kept = anyio.run(simulate, kept_path, args, False)
        pruned = anyio.run(simulate, pruned_path, args, True)
    week = min(7, args.days - 1)
    last, first = args.days, 1

    def per_day(f: Figures) -> float:
        return (f.size_by_day[last] - f.size_by_day[last - week]) / week

    results = {
        "events": args.events, "days": args.days, "retention_days": args.retention_days, "batch": args.batch,
        "writes_per_event": args.writes_per_event, "create_share": args.create_share,
        "size_bytes": {"kept": kept.size_by_day[last], "pruned": pruned.size_by_day[last],
                       "pruned_after_vacuum": pruned.vacuumed_size},
        "growth_bytes_per_day_last_week": {"kept": per_day(kept), "pruned": per_day(pruned)},
        "ingest": {name: {"start": f.probes["start"], "end": f.probes["end"],
                          "first_day_median_hour_events_per_second": f.rate(first),
                          "last_day_median_hour_events_per_second": f.rate(last)}
                   for name, f in (("kept", kept), ("pruned", pruned))},
        "pruned_rows": pruned.pruned_rows,
        "nightly_prune_seconds": {"mean": sum(pruned.prune_seconds) / len(pruned.prune_seconds),
                                  "max": max(pruned.prune_seconds)},
        "prune_transaction_ms": {
            "all": times(list(chain.from_iterable(pruned.batch_ms.values())),
                         list(chain.from_iterable(pruned.batch_cpu_ms.values()))),
            **{t.value: times(pruned.batch_ms[t.value], pruned.batch_cpu_ms[t.value]) for t in ORDER}},
        "seconds": time.perf_counter() - started,
    }
    mb = 2**20
    print(f"store size after {args.days} days: {kept.size_by_day[last] / mb:,.0f} MB never pruned, "
          f"{pruned.size_by_day[last] / mb:,.0f} MB pruned nightly ({(pruned.vacuumed_size or 0) / mb:,.0f} MB after "
          "VACUUM)")
    print(f"growth per day over the last week: {per_day(kept) / mb:,.1f} MB never pruned, "
          f"{per_day(pruned) / mb:,.1f} MB pruned")
    for name, f in (("never pruned", kept), ("pruned", pruned)):
        start, end = f.probes["start"], f.probes["end"]
        print(f"add_events {name}, empty store -> after {args.days} days: {start['events_per_second']:,.0f} -> "
              f"{end['events_per_second']:,.0f} events/s; {start['events_per_cpu_second']:,.0f} -> "
              f"{end['events_per_cpu_second']:,.0f} events per CPU second")
    batches = results["prune_transaction_ms"]["all"]
    print(f"nightly prune: {results['nightly_prune_seconds']['mean']:.1f} s on average; its transactions "
          f"{batches['median']:.0f} ms median, {batches['p99']:.0f} ms p99, {batches['max']:.0f} ms at most "
          f"(CPU {batches['cpu_median']:.0f} ms median, {batches['cpu_p99']:.0f} ms p99); "
          f"pruned in all: {pruned.pruned_rows}")
    print(json.dumps({"benchmark": "retention", "results": results}))


if __name__ == "__main__":
    main()
