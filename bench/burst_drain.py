"""A burst of 10,000 Nue notifications drained by revdaemon against the sandbox, Salesforce at a per-second cap.

Setup (not measured): the sandbox runs in its own process. Customers are added in chunks of 100, each with a
Salesforce account (Nue_Customer_Id__c) and a linked Nue customer, and each goes through a short lifecycle
in the Nue simulator's scenario driver (deterministic for --seed): a new order activated with its invoice
activated; then the invoice paid in full (55%), partly paid (15%), its collection failed (10%) or left open
(20%); and for 40% an amendment (a change order raising one subscription's quantity). The notifications the
simulator publishes for all this are genuine (its own envelopes, ids and bodies); the burst is the first
95% x --events of them whose type some flow handles (as an operator subscribes the webhook to those types
only): order.activated (new and change orders), subscription.created / updated, customer.updated,
invoice.activated / updated. The remaining 5% are duplicates (the same envelope again, deduplicated by the
inbox); the whole burst is shuffled, so most notifications arrive out of order. Each is read by the
listener's own parser and stored in the inbox at once.

Measured: the daemon's workers (the flows of `default_flows`, built from config.yaml as the supervisor
builds them, `engine.workers` workers claiming `engine.batch_size` events) drain the inbox, while the
Salesforce simulator refuses any request over --cap per calendar second (403 REQUEST_LIMIT_EXCEEDED, set
through POST /__sandbox/usage after the setup, with an Enterprise org's daily allocation, 200,000, instead of
the simulator's Developer Edition 15,000: past half of that config.yaml's budget share holds work back, and
the daily allocation is not what this measures). revdaemon's Salesforce limiter is configured at the cap, as
an operator would: requests_per_second = cap, burst 1 (the simulator counts per calendar second, so a bucket
that may spend a burst on top of its rate would pass the cap), max_concurrency 8. Nue is not capped and its
limiter is set high (--nue-rate), so the Salesforce cap is the only pacing.

Printed, with targets (issue 14):
- Salesforce calls per synced record (<= 0.02): every Salesforce request of the drain (login and any 403
  included) / distinct Salesforce records created or changed (Account, Task, Note, Nue_Billing_Event__c,
  Opportunity; compared in the simulator before and after, so revdaemon's own bookkeeping is not trusted);
- Nue calls per event (<= 0.05): Nue requests of the drain / unique events stored;
- drain time and the rate-limit floor = Salesforce requests admitted under the cap / cap, and their ratio
  (<= 1.2x); with any 403 the daemon met (it should meet none: its limiter is at the cap);
- peak RSS of the daemon: the drain runs in a process of its own (this script with --drain-only), apart from
  the setup, the measuring and the simulators.
A missed target is printed as MISSED with the figures that explain it (calls by kind; seconds at the cap).

Issue 30 adds two runs, each with its own JSON line (bench/run_all.py: burst_scale, burst_uncapped):
- --sizes N [N ...]: the same burst (same seed, same mix; a smaller size's notifications are the first of a
  larger one's) at each size, one after another, each in fresh simulators, the sync status fields off. Per
  size: drain time, events/s, ms per event, Salesforce and Nue calls per event, Salesforce calls per synced
  record, drain/floor, peak RSS, and the setup's time; then the largest size's per-event time and calls per
  event against the smallest's (target <= 1.2x: linear cost) and peak RSS < 300 MB at every size.
- --uncapped: the simulator does not cap and revdaemon's Salesforce limiter is as high as its Nue one
  (--nue-rate, 8 at once): events/s against 500 (the daemon's own pace); status fields off.

Run time: the setup (not measured) took 10 s for 10,000 events and 35 s for 30,000 on a quiet machine, once the
published notifications are read only near the end (83 s at 30,000 when they were read after every chunk, which
grew quadratically: about 12 minutes extrapolated to 100,000). At 100,000 it took 871 s with the machine shared
(load average 5-8, other simulators running): the simulator's own work, single-threaded, not this script's.
The capped drain takes under a minute at 10,000: revdaemon needs about one Salesforce call per 50-75 events
(reads and writes batched per claim), so at 10 calls/s the cap is not what bounds it (see the "why missed"
lines).
Usage: python bench/burst_drain.py [--events 10000] [--cap 10] [--workers N] [--batch N] [--seed 7]
       python bench/burst_drain.py --sizes 10000 30000 100000 | --uncapped [--events 10000]
"""

from __future__ import annotations

import argparse
import gc
import itertools
import json
import random
import resource
import signal
import subprocess
import sys
import tempfile
import time
import urllib.parse
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import anyio
import httpx
from pydantic import SecretStr

from revdaemon.config import ApiRate, Settings, SyncStatusSettings, load_settings
from revdaemon.demo import on_sandbox
from revdaemon.engine.clients import build_clients
from revdaemon.engine.executor import Executor
from revdaemon.engine.fencing import REQUEST_HOOKS
from revdaemon.engine.lookups import Fetcher
from revdaemon.engine.replicas import ReplicaRole
from revdaemon.engine.supervisor import default_flows
from revdaemon.engine.worker import Worker, WorkerStats
from revdaemon.limits import RetryPolicy
from revdaemon.listener.envelope import parse_notification
from revdaemon.ops.heap import freeze_startup_heap
from revdaemon.ops.logging import configure_logging
from revdaemon.store import open_store
from revdaemon.store.records import NewEvent
from revdaemon.store.states import EventStatus

ROOT = Path(__file__).resolve().parent.parent
TARGET_SF_PER_RECORD = 0.02
TARGET_NUE_PER_EVENT = 0.05
TARGET_FLOOR_RATIO = 1.2
TARGET_UNCAPPED_RATE = 500  # events/s with the Salesforce cap lifted (issue 30)
TARGET_SCALE_RATIO = 1.2  # per-event time and calls at the largest --sizes / at the smallest (issue 30)
TARGET_PEAK_RSS_MB = 300  # at every size (issue 30)
DUPLICATE_SHARE = 0.05
DEFAULT_CAP = 10  # Salesforce calls per second: low enough that the drain is bound by it
DAILY_ALLOCATION = 200_000  # an Enterprise org with 100 licences: 100,000 + 100 x 1,000 requests a day
CHUNK = 100  # customers added per setup round
SYNCED_OBJECTS = ("Account", "Task", "Note", "Nue_Billing_Event__c", "Opportunity")
FAST = ApiRate(requests_per_second=1000, burst=1000, max_concurrency=8)
IDLE_SECONDS = 0.05  # a worker finding nothing due looks again this soon (the daemon's doorbell, without the ring)


# --- the sandbox and what it saw -------------------------------------------------------------------------

@contextmanager
def sandbox(tmp: Path) -> Iterator[dict[str, Any]]:
    """`revdaemon sandbox` in its own process; yields its --json line (URLs, credentials)."""
    process = subprocess.Popen([sys.executable, "-m", "revdaemon.cli", "sandbox", "--json", "--key-dir", str(tmp)],
                               stdout=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        assert process.stdout is not None
        yield json.loads(process.stdout.readline())
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=15)


def request_log(url: str) -> list[dict[str, Any]]:
    """API requests the simulator has answered so far (admin calls are not in it)."""
    body = httpx.get(f"{url}/__sandbox/requests", timeout=60).json()
    return list(body["requests"] if isinstance(body, dict) else body)


def api_calls(url: str) -> int:
    return len(request_log(url))


def set_cap(sf_url: str, cap: int | None) -> None:
    """The simulator's per-second cap (None: none), and an Enterprise org's daily allocation: the simulator's
    default, a Developer Edition's 15,000, is not what this benchmark is about (the baseline alone needs more)."""
    httpx.post(f"{sf_url}/__sandbox/usage", json={"per_second_cap": cap, "max": DAILY_ALLOCATION},
               timeout=30).raise_for_status()


def nue_call_kinds(entries: list[dict[str, Any]]) -> dict[str, int]:
    kinds = Counter(f"{e['method']} /{str(e['path']).strip('/').split('/')[0]}" for e in entries)
    return dict(kinds.most_common())


def sf_snapshot(sf_url: str) -> dict[tuple[str, str], dict[str, Any]]:
    """Every record of the synced objects, as the simulator holds it."""
    out: dict[tuple[str, str], dict[str, Any]] = {}
    with httpx.Client(base_url=sf_url, timeout=60) as admin:
        for sobject in SYNCED_OBJECTS:
            response = admin.get(f"/__sandbox/records/{sobject}")
            if response.status_code == 200:
                out.update(((sobject, str(r["Id"])), r) for r in response.json())
    return out


def records_written(before: dict[tuple[str, str], dict[str, Any]],
                    after: dict[tuple[str, str], dict[str, Any]]) -> dict[str, int]:
    """Distinct records created or changed between two snapshots, per object."""
    counts: Counter[str] = Counter(key[0] for key, record in after.items() if before.get(key) != record)
    return {sobject: counts.get(sobject, 0) for sobject in SYNCED_OBJECTS}


def call_kinds(entries: list[dict[str, Any]]) -> dict[str, int]:
    """Salesforce requests by kind, to explain a calls-per-record figure."""
    kinds: Counter[str] = Counter()
    for e in entries:
        path = str(e["path"])
        if e["status"] == 403:
            kinds["refused 403"] += 1
        elif "/oauth2/" in path:
            kinds["login"] += 1
        elif path.endswith("/query") or "/query/" in path:
            kinds[f"SOQL query {soql_object(str(e.get('query', '')))}".rstrip()] += 1
        elif "/composite/sobjects" in path:
            kinds[f"collections {e['method']}"] += 1
        elif "/sobjects/" in path and e["method"] != "GET":
            kinds[f"single-record {e['method']}"] += 1
        else:
            kinds[f"other {e['method']}"] += 1
    return dict(kinds.most_common())


def soql_object(query_string: str) -> str:
    """The object a logged query reads (FROM X), to tell the flows' reads from the executor's lookups."""
    soql = urllib.parse.parse_qs(query_string).get("q", [""])[0]
    words = soql.split()
    upper = [w.upper() for w in words]
    return words[upper.index("FROM") + 1] if "FROM" in upper[:-1] else ""


def admitted(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """REST requests the cap counted (the token endpoint is not capped; a refused request does not count)."""
    return [e for e in entries if "/services/data/" in str(e["path"]) and e["status"] != 403]


def per_second(entries: list[dict[str, Any]], start: float, end: float) -> dict[str, float]:
    """Calls per calendar second over [start, end]: the busiest second, and how many seconds were at the cap,
    below it, or without any call."""
    counts = Counter(int(e["at"]) for e in entries)
    seconds = range(int(start), int(end) + 1)
    return {"max_per_second": max(counts.values(), default=0), "seconds": len(seconds),
            "idle_seconds": sum(1 for s in seconds if not counts.get(s)),
            **{f"seconds_with_{n}": sum(1 for s in seconds if counts.get(s) == n)
               for n in sorted(set(counts.values()))}}


# --- setup -----------------------------------------------------------------------------------------------

def handled_types(settings: Settings) -> frozenset[str]:
    return frozenset(t for flow in default_flows(settings) for t in flow.event_types)


async def lifecycle(admin: httpx.AsyncClient, customer_id: str, index: int, rng: random.Random) -> None:
    """One customer's business events, through the Nue simulator's scenario driver."""
    async def scenario(action: str, **kwargs: Any) -> Any:
        response = await admin.post(f"/__sandbox/scenario/{action}", json=kwargs)
        response.raise_for_status()
        return response.json()["result"]

    result = await scenario("create-and-activate-order", customer=customer_id, opportunity=index % 6,
                            generate_invoice=True, activate_invoice=True)
    invoices = [i["id"] for i in result.get("invoices") or [] if i.get("status") == "Active"]
    assets = [s["name"] for s in result.get("subscriptions") or [] if s.get("name")]
    draw = rng.random()
    for invoice_id in invoices:
        if draw < 0.55:
            await scenario("pay-invoice", invoice_id=invoice_id)
        elif draw < 0.70:
            await scenario("pay-invoice", invoice_id=invoice_id, amount="10.00")
        elif draw < 0.80:
            await scenario("fail-collection", invoice_id=invoice_id)
    if assets and rng.random() < 0.40:
        await scenario("change", asset_number=rng.choice(assets), change_type="UpdateQuantity",
                       quantity=rng.randint(1, 5))


def customer_of(notification: dict[str, Any]) -> str:
    """The Nue customer a notification is about (every handled type names one)."""
    data = notification.get("data") or {}
    return str(data["id"] if str(notification.get("type", "")).startswith("customer.") else data["customerId"])


async def setup(info: dict[str, Any], settings: Settings, wanted: int, rng: random.Random
                ) -> tuple[list[dict[str, Any]], int]:
    """Customers and their lifecycles, a chunk of CHUNK at a time, until `wanted` notifications of handled types
    are published; returns them in publish order, and the number of customers.

    The simulator's list of published notifications is read whole (GET /__sandbox/webhooks: about 9 KB per
    customer), so reading it after every chunk made the setup quadratic (at 30,000 events its last reads were
    over 30 MB each, 3.5 s a chunk against 0.7 s at the start). It is read after the first chunk, to learn how
    many notifications a customer brings, then only once the customers made so far may be near `wanted` (two
    chunks' worth or 1% short of it). The burst is the one reading it after every chunk gives: the lifecycles
    run one after another, so the list is in chunk order and each notification names its customer; the first
    chunk at which `wanted` were published is found from that, and should the setup have gone past it, the
    random generator is put back as it was after that chunk (burst() draws from it next) and the customers are
    counted up to it; the extra customers stay in the simulators, unused by the burst, and a line says so."""
    types = handled_types(settings)
    customers = 0
    chunk_of: dict[str, int] = {}  # Nue customer id -> its chunk
    after_chunk: list[tuple[int, Any]] = []  # per chunk: customers so far, and the generator's state
    per_customer: float | None = None  # handled notifications per customer, at the last read
    started = time.perf_counter()
    admin = httpx.AsyncClient(base_url=info["nue"]["url"], timeout=120)
    async with httpx.AsyncClient(timeout=60) as http, admin:
        fast = settings.model_copy(update={"limits": settings.limits.model_copy(update={"salesforce": FAST,
                                                                                         "nue": FAST})})
        sf, nue = build_clients(fast, http, RetryPolicy())
        while True:
            names = [f"burst-{i:05d}" for i in range(customers, customers + CHUNK)]
            results = await sf.upsert_many("Account", "Nue_Customer_Id__c",
                                           [{"Name": f"Burst Customer {n}", "Nue_Customer_Id__c": n} for n in names])
            created = await nue.create_customers([
                {"name": f"Burst {n}", "recordType": "Business", "salesAccountId": r.id}
                for n, r in zip(names, results, strict=True)])
            for offset, customer in enumerate(created):
                await lifecycle(admin, customer["id"], customers + offset, rng)
            chunk_of.update((str(c["id"]), len(after_chunk)) for c in created)
            customers += len(created)
            after_chunk.append((customers, rng.getstate()))
            if per_customer is not None and (customers * per_customer
                                             < wanted - max(2 * CHUNK * per_customer, 0.01 * wanted)):
                if len(after_chunk) % 10 == 0:
                    print(f"  setup: {customers} customers, about {customers * per_customer:.0f} notifications "
                          f"({time.perf_counter() - started:.0f} s)", flush=True)
                continue
            published = (await admin.get("/__sandbox/webhooks")).json()["published"]
            notifications = [n for n in published if n.get("type") in types]
            per_customer = len(notifications) / customers
            print(f"  setup: {customers} customers, {len(notifications)} notifications "
                  f"({time.perf_counter() - started:.0f} s)", flush=True)
            if len(notifications) >= wanted:
                break
    chunks = [chunk_of[customer_of(n)] for n in notifications]
    if chunks != sorted(chunks):
        raise RuntimeError("setup: notifications not in chunk order; the burst would not be the same")
    last = chunks[wanted - 1]  # the chunk at which `wanted` handled notifications had been published
    if last < len(after_chunk) - 1:
        print(f"  setup: went {len(after_chunk) - 1 - last} chunk(s) past the burst's last; those customers are "
              "not in the burst", flush=True)
        customers, state = after_chunk[last]
        rng.setstate(state)
    return notifications[:wanted], customers


def burst(notifications: list[dict[str, Any]], events: int, rng: random.Random) -> list[NewEvent]:
    """The notifications as the listener stores them, 5% duplicated, shuffled."""
    out = [parse_notification(json.dumps(n).encode()) for n in notifications[: int(events * (1 - DUPLICATE_SHARE))]]
    out += [rng.choice(out) for _ in range(events - len(out))]  # a redelivery: same envelope, stored once
    rng.shuffle(out)
    return out


STATUS_FIELDS = SyncStatusSettings(status_field="Nue_Sync_Status__c", synced_at_field="Nue_Last_Synced_At__c",
                                   error_field="Nue_Sync_Error__c")


def bench_settings(info: dict[str, Any], args: argparse.Namespace, state_dir: Path) -> Settings:
    """config.yaml (no environment overrides), pointed at the sandbox, the Salesforce limiter at the cap."""
    base = on_sandbox(load_settings(ROOT / "config.yaml", environ={}), info)
    # Each replica's limiter at the whole cap: only the active one sends.
    high = ApiRate(requests_per_second=args.nue_rate, burst=int(args.nue_rate), max_concurrency=8)
    # --uncapped (issue 30): the simulator does not cap, and the Salesforce limiter is as high as the Nue one
    salesforce = high if getattr(args, "uncapped", False) else ApiRate(requests_per_second=args.cap, burst=1,
                                                                      max_concurrency=8)
    limits = base.limits.model_copy(update={"salesforce": salesforce, "nue": high})
    engine = base.engine.model_copy(update={k: v for k, v in (("workers", args.workers), ("batch_size", args.batch),
                                                              ("settle_seconds", getattr(args, "settle", None)))
                                            if v is not None})
    create_timeout = getattr(args, "create_timeout", None)  # bench/lost_answers.py: short, beside a short settle
    if create_timeout is not None:
        base = base.model_copy(update={
            "salesforce": base.salesforce.model_copy(update={"create_timeout_seconds": create_timeout}),
            "nue": base.nue.model_copy(update={"create_timeout_seconds": create_timeout})})
    mapping = base.mapping
    if getattr(args, "status_fields", "off") == "on":
        # Issue 16: the status fields ride in the data writes, so the calls must not change.
        mapping = mapping.model_copy(update={"sync_status": {obj: STATUS_FIELDS for obj in ("Account", "Opportunity")}})
    store = base.store
    if getattr(args, "store_url", None):
        store = store.model_copy(update={"url": SecretStr(args.store_url)})
    return base.model_copy(update={"limits": limits, "engine": engine, "mapping": mapping, "state_dir": state_dir,
                                   "store": store})


# --- the measured drain ----------------------------------------------------------------------------------

class GcTimer:
    """Time the drain process spends in Python's cyclic garbage collector, per generation (gc.callbacks): a full
    collection walks every tracked object, so its cost grows with what the process holds (issue 30)."""

    def __init__(self) -> None:
        self.seconds = [0.0, 0.0, 0.0]
        self.collections = [0, 0, 0]
        self._started = 0.0

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.seconds[info["generation"]] += time.perf_counter() - self._started
            self.collections[info["generation"]] += 1

    def figures(self) -> dict[str, Any]:
        return {"seconds": sum(self.seconds), "full_seconds": self.seconds[2], "full_collections": self.collections[2],
                "collections": sum(self.collections)}


async def drain(job: dict[str, Any]) -> dict[str, Any]:
    """In the daemon's own process (--drain-only): the replica role runs the workers as the daemon does (leading,
    every step fenced by its epoch); with several replicas one leads and drains, the others stand by. Each process
    ends once the inbox is drained."""
    args = argparse.Namespace(**job["args"])
    settings = bench_settings(job["info"], args, Path(job["state_dir"]))
    replica = job.get("replica", 1)
    shared = args.replicas > 1
    store = await open_store(settings.store_target)
    async with httpx.AsyncClient(limits=httpx.Limits(max_connections=50, max_keepalive_connections=20),
                                 event_hooks=REQUEST_HOOKS) as http:
        lim = settings.limits
        retry = RetryPolicy(max_attempts=lim.max_attempts, max_delay=lim.max_backoff_seconds,
                            max_total=lim.max_backoff_seconds * 2)
        sf, nue = build_clients(settings, http, retry)
        flows = default_flows(settings)
        executor = Executor(store, sf, nue, mapping_version=settings.mapping.version,
                            settle=timedelta(seconds=settings.engine.settle_seconds))  # as the supervisor does
        # with the store, as the supervisor builds it: the synced values, links and record names a claim reads and
        # keeps are the daemon's work too (without it the drain skipped them)
        fetcher = Fetcher(sf, nue, store)
        stats = WorkerStats()
        engine = settings.engine
        prefix = f"replica-{replica}/" if shared else ""
        workers = [Worker(store, fetcher, executor, flows, name=f"{prefix}worker-{i + 1}", batch_size=engine.batch_size,
                          lease=timedelta(seconds=engine.lease_seconds), max_attempts=lim.max_attempts,
                          backoff=RetryPolicy(base_delay=2.0, max_delay=lim.max_backoff_seconds), stats=stats,
                          idle_seconds=IDLE_SECONDS)
                   for i in range(engine.workers)]
        role = ReplicaRole(store, None, replica_id=f"replica-{replica}", workers=workers)
        freeze_startup_heap()  # as the supervisor does once the daemon is built
        gc_timer = GcTimer()
        gc.callbacks.append(gc_timer)
        wall_start = time.time()
        started = time.perf_counter()
        cpu_started = time.process_time()  # the whole process: the event loop's thread and the store's

        async def drained() -> bool:
            # received or claimed: an event retried with backoff is not due yet, so an idle worker is no end
            depths = await store.queue_depths()
            return depths[EventStatus.RECEIVED] + depths[EventStatus.CLAIMED] == 0

        with anyio.move_on_after(args.timeout) as scope:
            async with anyio.create_task_group() as tg:
                await tg.start(role.run)
                while True:
                    if await drained():
                        break
                    # The count scans the whole inbox's status index and shares the store with the workers: at
                    # 100,000 events, ten a second would be the measuring's own cost growing with the burst. So a
                    # long drain looks less often: 0.1 s apart for the first 20 s, then 0.5% of the time so far (the
                    # end is seen at most that late), at most 1 s. A standby looks less often still: the drain's
                    # end is the first process to see it (drain_in_child).
                    pause = min(1.0, max(0.1, (time.perf_counter() - started) / 200))
                    await anyio.sleep(pause if role.leading else max(pause, 0.5))
                tg.cancel_scope.cancel()
        elapsed = time.perf_counter() - started
        wall_end = time.time()
        gc.callbacks.remove(gc_timer)
        depths = await store.queue_depths()
    await store.close()
    return {"elapsed": elapsed, "timed_out": scope.cancelled_caught, "window": [wall_start, wall_end],
            "depths": {str(k): v for k, v in depths.items()}, "processed": stats.processed, "replica": replica,
            "peak_rss_mb": own_peak_rss_mb(), "gc": gc_timer.figures(),
            "cpu_seconds": time.process_time() - cpu_started}


def own_peak_rss_mb() -> float:
    """This process's own peak RSS: VmHWM, its memory map's high-water mark. Not getrusage's ru_maxrss: Linux
    carries that over from the parent through fork and exec (a child of a 300 MB parent starts at 300 MB), so
    for the drain child it showed the setup's memory, which holds the whole burst (issue 30)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def drain_in_child(job_file: Path, replicas: int = 1) -> dict[str, Any]:
    """This script again with --drain-only: the daemon side in a process of its own, so its peak RSS is the
    daemon's, not the setup's or the measuring's. Its log lines are passed through. With `replicas` > 1, that
    many processes share the one store (PostgreSQL), one active and the others on standby, as the daemon's
    replicas are: the drain is from the first start to the first process seeing the inbox drained."""
    job = json.loads(job_file.read_text())
    processes = []
    for replica in range(1, replicas + 1):
        own = job_file.with_name(f"{job_file.stem}-{replica}.json")
        own.write_text(json.dumps({**job, "replica": replica}))
        processes.append(subprocess.Popen([sys.executable, __file__, "--drain-only", str(own)],
                                          stdout=subprocess.PIPE, text=True, cwd=ROOT))
    results = []
    for process in processes:
        assert process.stdout is not None
        result = None
        for line in process.stdout:
            if line.startswith('{"drain"'):
                result = json.loads(line)["drain"]
            else:
                print(line, end="", flush=True)
        if process.wait() != 0 or result is None:
            sys.exit(f"a drain process failed (exit {process.returncode})")
        results.append(result)
    start, end = min(r["window"][0] for r in results), min(r["window"][1] for r in results)
    return {"elapsed": end - start, "timed_out": any(r["timed_out"] for r in results), "window": [start, end],
            "depths": max(results, key=lambda r: r["window"][1])["depths"],  # read by the last to finish
            "processed_by_replica": {str(r["replica"]): r["processed"] for r in results},
            "peak_rss_mb": max(r["peak_rss_mb"] for r in results),
            "gc": results[0]["gc"],  # the first replica's (the active one, but for a takeover)
            "cpu_seconds": sum(r["cpu_seconds"] for r in results)}


async def prepare(info: dict[str, Any], args: argparse.Namespace, workdir: Path
                  ) -> tuple[list[NewEvent], int, int]:
    """The unmeasured part: customers, their notifications, the burst stored in the inbox."""
    settings = bench_settings(info, args, workdir)
    rng = random.Random(args.seed)
    unique = int(args.events * (1 - DUPLICATE_SHARE))
    print(f"setup (not measured): customers until {unique} notifications are published ...", flush=True)
    notifications, customers = await setup(info, settings, unique, rng)
    events = burst(notifications, args.events, rng)
    store = await open_store(settings.store_target)
    stored = sum(await store.add_events(events))
    await store.close()
    return events, stored, customers


def longest_gap(entries: list[dict[str, Any]], start: float, end: float) -> tuple[float, float]:
    """The longest stretch of the drain without a request."""
    stamps = [start, *sorted(float(e["at"]) for e in entries), end]
    return max(itertools.pairwise(stamps), key=lambda pair: pair[1] - pair[0])


def run(info: dict[str, Any], args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    setup_started = time.perf_counter()
    events, stored, customers = anyio.run(prepare, info, args, workdir)
    setup_seconds = time.perf_counter() - setup_started
    sf_url, nue_url = info["salesforce"]["url"], info["nue"]["url"]
    uncapped = bool(getattr(args, "uncapped", False))
    set_cap(sf_url, None if uncapped else args.cap)
    before = sf_snapshot(sf_url)
    sf_start, nue_start = api_calls(sf_url), api_calls(nue_url)
    job = workdir / "drain.json"
    job.write_text(json.dumps({"info": info, "state_dir": str(workdir), "args": vars(args)}))
    pace = "not capped" if uncapped else f"capped at {args.cap} calls/s"
    print(f"drain: {len(events)} notifications, Salesforce {pace} ...", flush=True)
    d = drain_in_child(job, args.replicas)
    entries = request_log(sf_url)[sf_start:]
    nue_entries = request_log(nue_url)[nue_start:]
    written = records_written(before, sf_snapshot(sf_url))
    depths = d["depths"]
    sf_calls, refused = len(entries), sum(1 for e in entries if e["status"] == 403)
    capped = len(admitted(entries))
    records = sum(written.values())
    floor = None if uncapped else capped / args.cap
    types = Counter(e.type for e in {e.key: e for e in events}.values())
    gap = longest_gap(entries, *d["window"])
    figures = {
        "events_sent": len(events), "events_stored": stored, "customers": customers,
        "event_types": dict(types.most_common()),
        "events_done": depths[EventStatus.DONE], "dead": depths[EventStatus.DEAD],
        "events_left": depths[EventStatus.RECEIVED] + depths[EventStatus.CLAIMED], "timed_out": d["timed_out"],
        "cap_per_second": None if uncapped else args.cap, "drain_seconds": d["elapsed"],
        "events_per_second": stored / d["elapsed"], "ms_per_event": d["elapsed"] * 1000 / stored,
        "salesforce_calls": sf_calls, "salesforce_calls_admitted": capped, "salesforce_403": refused,
        "salesforce_call_kinds": call_kinds(entries),
        "salesforce_per_second": per_second(admitted(entries), *d["window"]),
        "salesforce_longest_gap_seconds": gap[1] - gap[0],
        "nue_calls_in_longest_gap": sum(1 for e in nue_entries if gap[0] <= float(e["at"]) <= gap[1]),
        "records_synced": records, "records_synced_by_object": written,
        "salesforce_calls_per_record": sf_calls / records if records else None,
        "salesforce_calls_per_event": sf_calls / stored,
        "floor_seconds": floor, "floor_ratio": d["elapsed"] / floor if floor else None,
        "setup_seconds": setup_seconds,  # not measured: how long the burst took to build (issue 30's sizes)
        "nue_calls": len(nue_entries), "nue_call_kinds": nue_call_kinds(nue_entries),
        "nue_calls_per_event": len(nue_entries) / stored,
        "peak_rss_mb": d["peak_rss_mb"],
        # Where a drain's time went besides the daemon's own work: its CPU (both threads), and the simulators'
        # answer time summed over its calls (each simulator answers one request at a time)
        "cpu_seconds": d["cpu_seconds"], "cpu_ms_per_event": d["cpu_seconds"] * 1000 / stored,
        "simulator_seconds": {"salesforce": sum(float(e.get("duration_ms", 0)) for e in entries) / 1000,
                              "nue": sum(float(e.get("duration_ms", 0)) for e in nue_entries) / 1000},
        "gc": d["gc"],  # the drain process's time in the cyclic garbage collector (issue 30)
        "processed_by_replica": d["processed_by_replica"],  # with --replicas: one active, the others on standby
    }
    figures["notes"] = explain(figures)
    return figures


def explain(f: dict[str, Any]) -> list[str]:
    """For each target missed, the figures that say why."""
    notes = []
    kinds, cpr = f["salesforce_call_kinds"], f["salesforce_calls_per_record"]
    if cpr is None or cpr > TARGET_SF_PER_RECORD:
        singles = sum(v for k, v in kinds.items() if k.startswith("single-record"))
        collections = sum(v for k, v in kinds.items() if k.startswith("collections"))
        queries = sum(n for kind, n in kinds.items() if kind.startswith("SOQL query"))
        reads = ", ".join(f"{k.removeprefix('SOQL query ')} {v}" for k, v in kinds.items()
                          if k.startswith("SOQL query"))
        floor_calls = sum(-(-n // 200) for n in f["records_synced_by_object"].values())
        notes.append(
            f"Salesforce calls per synced record: of {f['salesforce_calls']:,} calls, {collections:,} are "
            f"Collections writes (at 200 records a call these {f['records_synced']:,} records need "
            f"{floor_calls}), {singles:,} single-record writes and {queries:,} SOQL reads ({reads}): each claim of "
            "events reads the records its flows plan from, once per step, so the reads scale with the claims "
            "(engine.workers, engine.batch_size), not with the records.")
    if f["nue_calls_per_event"] > TARGET_NUE_PER_EVENT:
        nue = ", ".join(f"{k} {v}" for k, v in f["nue_call_kinds"].items())
        notes.append(f"Nue calls per event: {f['nue_calls']:,} calls ({nue}) for {f['events_stored']:,} events.")
    ratio, ps, cap = f["floor_ratio"], f["salesforce_per_second"], f["cap_per_second"]
    if cap is None and f["events_per_second"] < TARGET_UNCAPPED_RATE:
        notes.append(
            f"events/s with the cap lifted: {f['events_per_second']:.0f} against {TARGET_UNCAPPED_RATE}; "
            f"{f['salesforce_calls']:,} Salesforce calls in {f['drain_seconds']:.1f} s (busiest second "
            f"{ps['max_per_second']}, {ps['idle_seconds']} of {ps['seconds']} seconds without a call): with no API "
            "pacing at all, the time is the daemon's own (planning, the store's bookkeeping) on this machine's 2 "
            "cores, shared with both simulators (bench/PROFILE.md: where the time goes).")
    elif cap is not None and (ratio is None or ratio > TARGET_FLOOR_RATIO):
        at_cap = ps.get(f"seconds_with_{cap}", 0)
        notes.append(
            f"drain / floor: in {ps['seconds'] - at_cap} of {ps['seconds']} calendar seconds revdaemon sent fewer than "
            f"{cap} Salesforce calls ({ps['idle_seconds']} without any): reading Nue, planning, writing its own store "
            "or waiting out retries, the cap was not the only bound. At these few calls per event the floor is "
            f"{f['floor_seconds']:.1f} s, while planning {f['events_stored']:,} events and the store's durable "
            "bookkeeping of its writes (a step's intents in one fsync'd transaction, each API call's marking sent "
            "and settling in one each) take longer on this machine's 2 cores, shared with both simulators "
            "(bench/PROFILE.md: where the time goes).")
    if f["salesforce_403"]:
        notes.append(
            f"{f['salesforce_403']} Salesforce call(s) refused over the cap (403 REQUEST_LIMIT_EXCEEDED, "
            "ConcurrentRequests): the limiter at the cap spaces its grants 1/cap s apart, but a request granted late "
            "in one second can reach the simulator early in the next; each was retried after a second.")
    if f["events_left"] or f["dead"] or f["timed_out"]:
        notes.append(f"the burst did not drain: {f['events_left']} left, {f['dead']} dead"
                     f"{', timed out' if f['timed_out'] else ''}.")
    return notes


def verdict(value: float | None, limit: float) -> str:
    return "n/a" if value is None else "met" if value <= limit else "MISSED"


def report(f: dict[str, Any]) -> None:
    print(f"burst: {f['events_sent']} notifications ({f['events_stored']} unique) from {f['customers']} customers: "
          + ", ".join(f"{t} {n}" for t, n in f["event_types"].items()))
    print(f"drained in {f['drain_seconds']:.1f} s ({f['events_per_second']:.0f} events/s); {f['events_left']} left, "
          f"{f['dead']} dead{'; TIMED OUT' if f['timed_out'] else ''}")
    if len(f["processed_by_replica"]) > 1:
        print("events processed per replica: " + ", ".join(
            f"replica-{r} {n}" for r, n in sorted(f["processed_by_replica"].items())))
    written = ", ".join(f"{k} {v}" for k, v in f["records_synced_by_object"].items() if v)
    cpr = f["salesforce_calls_per_record"]
    kinds = ", ".join(f"{k} {v}" for k, v in f["salesforce_call_kinds"].items())
    print(f"Salesforce: {f['salesforce_calls']} calls ({kinds}) for {f['records_synced']} records synced ({written})")
    print(f"  calls per synced record {cpr if cpr is None else format(cpr, '.4f')}, target <= {TARGET_SF_PER_RECORD}: "
          f"{verdict(cpr, TARGET_SF_PER_RECORD)}; calls per event {f['salesforce_calls_per_event']:.4f}")
    nue = f["nue_calls_per_event"]
    print(f"Nue: {f['nue_calls']} calls, {nue:.4f} per event, target <= {TARGET_NUE_PER_EVENT}: "
          f"{verdict(nue, TARGET_NUE_PER_EVENT)}")
    ratio, ps, cap = f["floor_ratio"], f["salesforce_per_second"], f["cap_per_second"]
    if cap is None:
        rate = f["events_per_second"]
        print(f"Salesforce not capped (simulator and revdaemon's limiter): {rate:.0f} events/s, target >= "
              f"{TARGET_UNCAPPED_RATE}: {'met' if rate >= TARGET_UNCAPPED_RATE else 'MISSED'}; "
              f"{f['ms_per_event']:.2f} ms per event")
        print(f"  busiest second {ps['max_per_second']} calls; of {ps['seconds']} calendar seconds "
              f"{ps['idle_seconds']} without a call; {f['salesforce_403']} refused with 403")
    else:
        print(f"rate-limit floor: {f['salesforce_calls_admitted']} capped calls / {cap} per s = "
              f"{f['floor_seconds']:.1f} s; drain / floor = {ratio if ratio is None else format(ratio, '.2f')}x, "
              f"target <= {TARGET_FLOOR_RATIO}x: {verdict(ratio, TARGET_FLOOR_RATIO)}")
        print(f"  cap: busiest second {ps['max_per_second']} calls; of {ps['seconds']} calendar seconds "
              f"{ps.get(f'seconds_with_{cap}', 0)} at the cap, {ps['idle_seconds']} without a call; "
              f"{f['salesforce_403']} refused with 403")
    g = f["gc"]
    print(f"peak RSS {f['peak_rss_mb']:.0f} MB; garbage collector {g['seconds']:.1f} s of the drain "
          f"({g['full_collections']} full collections, {g['full_seconds']:.1f} s); setup (not measured) "
          f"{f['setup_seconds']:.0f} s")
    if "status_fields_calls" in f:
        sc = f["status_fields_calls"]
        print(f"sync status fields (issue 16): Salesforce calls off {sc['off']}, on {sc['on']}, target equal: "
              f"{'met' if sc['off'] == sc['on'] else 'MISSED'}")
    for note in f["notes"]:
        print(f"why missed: {note}")


def write_tracemalloc(path: str, top: int = 40) -> None:
    """The drain process's Python allocations still held at its end, by the line that made them, and the traced
    peak (RSS also holds what is not Python's: SQLite's page cache, freed memory the allocator kept)."""
    import gc
    import tracemalloc

    gc.collect()
    current, peak = tracemalloc.get_traced_memory()
    stats = tracemalloc.take_snapshot().filter_traces(
        [tracemalloc.Filter(False, tracemalloc.__file__)]).statistics("lineno")
    lines = [f"traced now {current / 2**20:.1f} MB, traced peak {peak / 2**20:.1f} MB"]
    lines += [f"{s.size / 2**20:8.2f} MB {s.count:9d} blocks  {s.traceback}" for s in stats[:top]]
    Path(path).write_text("\n".join(lines) + "\n")


def scale(runs: dict[int, dict[str, Any]]) -> dict[str, Any]:
    """Issue 30's linear cost: the largest size's per-event time and calls against the smallest's, and the peak
    RSS at every size."""
    small, large = runs[min(runs)], runs[max(runs)]

    def ratio(key: str) -> float | None:
        return large[key] / small[key] if small[key] else None

    ratios = {key: ratio(key) for key in ("ms_per_event", "salesforce_calls_per_event", "nue_calls_per_event",
                                          "cpu_ms_per_event")}
    notes = []
    over = {key for key, r in ratios.items() if r is not None and r > TARGET_SCALE_RATIO}
    if "ms_per_event" in over:
        notes.append("per-event time grows with the burst: " + "; ".join(
            f"{n:,}: {f['drain_seconds']:.1f} s, {f['ms_per_event']:.2f} ms per event, "
            f"{f['salesforce_per_second']['idle_seconds']} of {f['salesforce_per_second']['seconds']} s without a "
            f"Salesforce call, longest gap {f['salesforce_longest_gap_seconds']:.1f} s, garbage collector "
            f"{f['gc']['seconds']:.1f} s ({f['gc']['full_collections']} full collections, "
            f"{f['gc']['full_seconds']:.1f} s), peak RSS {f['peak_rss_mb']:.0f} MB, the daemon's CPU "
            f"{f['cpu_ms_per_event']:.2f} ms per event, the simulators' answer time "
            f"{f['simulator_seconds']['salesforce']:.1f} s Salesforce ("
            f"{f['simulator_seconds']['salesforce'] * 1000 / max(f['salesforce_calls'], 1):.0f} ms a call) and "
            f"{f['simulator_seconds']['nue']:.1f} s Nue "
            f"({f['simulator_seconds']['nue'] * 1000 / max(f['nue_calls'], 1):.0f} ms a call)"
            for n, f in runs.items()) + f"; the daemon's CPU per event at {max(runs):,} / at {min(runs):,}: "
            f"{ratios['cpu_ms_per_event'] or 0:.2f}x (the profile of a size: --profile; bench/PROFILE.md).")
    if "salesforce_calls_per_event" in over:
        notes.append("Salesforce calls per event grow with the burst: " + "; ".join(
            f"{n:,}: {f['salesforce_calls']:,} ({_kinds(f['salesforce_call_kinds'])})" for n, f in runs.items())
            + f"{SMALL_NOTE if small['events_sent'] < 10_000 else ''}.")
    if "nue_calls_per_event" in over:
        notes.append("Nue calls per event grow with the burst: " + "; ".join(
            f"{n:,}: {f['nue_calls']:,} ({_kinds(f['nue_call_kinds'])})" for n, f in runs.items())
            + f"{SMALL_NOTE if small['events_sent'] < 10_000 else ''}.")
    heavy = {n: f["peak_rss_mb"] for n, f in runs.items() if f["peak_rss_mb"] >= TARGET_PEAK_RSS_MB}
    if heavy:
        notes.append("peak RSS at or over " f"{TARGET_PEAK_RSS_MB} MB at " + ", ".join(
            f"{n:,} ({mb:.0f} MB)" for n, mb in heavy.items()) + ": the drain process holds something that grows "
            "with the burst (a claim's working set alone is bounded).")
    return {"smallest": min(runs), "largest": max(runs), "ratios": ratios,
            "peak_rss_mb": {str(n): f["peak_rss_mb"] for n, f in runs.items()},
            "rss_met": not heavy, "notes": notes}


SMALL_NOTE = ("; at a few thousand events (--quick) a handful of calls that do not grow with the burst (login, the "
              "catalog) and the last, partly filled claims weigh on the per-event figures")


def _kinds(kinds: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in kinds.items())


def report_scale(runs: dict[int, dict[str, Any]], s: dict[str, Any]) -> None:
    cap = next(iter(runs.values()))["cap_per_second"]
    print(f"\nthe same burst (seed, mix) at {len(runs)} sizes, fresh simulators each, sync status fields off, "
          + ("Salesforce not capped" if cap is None else f"Salesforce capped at {cap} calls/s") + ":")
    print(f"{'events':>8} {'drain s':>8} {'events/s':>8} {'ms/event':>8} {'SF/event':>9} {'Nue/event':>9} "
          f"{'SF/record':>9} {'/floor':>7} {'RSS MB':>7} {'GC s':>6} {'CPU ms/ev':>9} {'sim s':>6} {'left/dead':>9} "
          f"{'setup s':>8}")
    for n, f in runs.items():
        floor = "n/a" if f["floor_ratio"] is None else f"{f['floor_ratio']:.2f}x"
        cpr = f["salesforce_calls_per_record"]
        print(f"{n:>8} {f['drain_seconds']:>8.1f} {f['events_per_second']:>8.0f} {f['ms_per_event']:>8.2f} "
              f"{f['salesforce_calls_per_event']:>9.4f} {f['nue_calls_per_event']:>9.4f} "
              f"{'n/a' if cpr is None else format(cpr, '.4f'):>9} {floor:>7} {f['peak_rss_mb']:>7.0f} "
              f"{f['gc']['seconds']:>6.1f} {f['cpu_ms_per_event']:>9.2f} "
              f"{f['simulator_seconds']['salesforce'] + f['simulator_seconds']['nue']:>6.1f} "
              f"{str(f['events_left']) + '/' + str(f['dead']):>9} {f['setup_seconds']:>8.0f}")
    labels = {"ms_per_event": "per-event time", "salesforce_calls_per_event": "Salesforce calls per event",
              "nue_calls_per_event": "Nue calls per event"}
    for key, label in labels.items():
        r = s["ratios"][key]
        print(f"{label} at {s['largest']:,} / at {s['smallest']:,}: "
              f"{'n/a' if r is None else format(r, '.2f')}x, target <= {TARGET_SCALE_RATIO}x: "
              f"{verdict(r, TARGET_SCALE_RATIO)}")
    cpu = s["ratios"]["cpu_ms_per_event"]
    print(f"the daemon's CPU per event at {s['largest']:,} / at {s['smallest']:,}: "
          f"{'n/a' if cpu is None else format(cpu, '.2f')}x (both its threads; no target: what the time is made of)")
    worst = max(runs, key=lambda n: runs[n]["peak_rss_mb"])
    print(f"peak RSS under {TARGET_PEAK_RSS_MB} MB at every size: {'met' if s['rss_met'] else 'MISSED'} "
          f"(highest {runs[worst]['peak_rss_mb']:.0f} MB, at {worst:,})")
    for note in s["notes"]:
        print(f"why missed: {note}")


def main_sizes(args: argparse.Namespace) -> None:
    """--sizes: the same burst at each size, one after another, each in fresh simulators (issue 30)."""
    args.status_fields = "off"
    profile = args.profile
    runs: dict[int, dict[str, Any]] = {}
    for size in sorted(set(args.sizes)):
        args.events = size
        if profile:
            args.profile = f"{profile}-{size}"  # one cProfile per size: PROFILE-<size>.<replica>
        print(f"\n--- {size:,} notifications", flush=True)
        with tempfile.TemporaryDirectory() as tmp, sandbox(Path(tmp)) as info:
            runs[size] = run(info, args, Path(tmp))
        report(runs[size])
    s = scale(runs)
    report_scale(runs, s)
    print(json.dumps({"benchmark": "burst_scale", "results": {"sizes": {str(n): f for n, f in runs.items()}, **s}}))
    if any(f["events_left"] or f["dead"] for f in runs.values()):
        sys.exit("a burst did not drain cleanly")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--cap", type=int, default=DEFAULT_CAP,
                        help="Salesforce calls per calendar second: the simulator's cap, and revdaemon's limiter")
    parser.add_argument("--workers", type=int, default=None, help="default: engine.workers of config.yaml")
    parser.add_argument("--batch", type=int, default=None, help="default: engine.batch_size of config.yaml")
    parser.add_argument("--nue-rate", type=float, default=1000.0, help="revdaemon's Nue limiter, requests/s")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--timeout", type=float, default=3600.0, help="give up draining after this many seconds")
    parser.add_argument("--store-url", default=None,
                        help="a PostgreSQL URL (an empty database) for the store instead of a SQLite file")
    parser.add_argument("--replicas", type=int, default=1,
                        help="processes sharing the one store (needs --store-url): one active, the others "
                             "on standby")
    parser.add_argument("--status-fields", choices=("off", "on", "both"), default="both",
                        help="the sync status fields (mapping.sync_status) on Account and Opportunity; both: the "
                             "burst twice, in fresh simulators, and the Salesforce calls of each (issue 16)")
    parser.add_argument("--profile", default=None,
                        help="write a cProfile of the drain process to PROFILE.<replica> (pstats format)")
    parser.add_argument("--tracemalloc", default=None,
                        help="trace the drain process's Python allocations: the top sites still held at the drain's "
                             "end, and the traced peak, written to TRACEMALLOC.<replica> (issue 30: memory)")
    parser.add_argument("--sizes", type=int, nargs="+", default=None,
                        help="issue 30's linear cost: the same burst at each of these sizes, fresh simulators each, "
                             "status fields off; per size drain time, calls per event and peak RSS, and the largest "
                             "size's per-event time and calls against the smallest's (JSON: burst_scale)")
    parser.add_argument("--uncapped", action="store_true",
                        help="the Salesforce simulator does not cap, and revdaemon's Salesforce limiter is as high as "
                             f"its Nue one (--nue-rate): events/s against {TARGET_UNCAPPED_RATE} (issue 30; JSON: "
                             "burst_uncapped, status fields off unless --status-fields says otherwise)")
    parser.add_argument("--drain-only", type=Path, help=argparse.SUPPRESS)  # the child process: see drain_in_child
    args = parser.parse_args()
    configure_logging(level="warning")  # a log line per event would measure the terminal, not the daemon
    if args.drain_only is not None:
        job = json.loads(args.drain_only.read_text())
        if job["args"].get("tracemalloc"):
            import tracemalloc

            tracemalloc.start()
        if job["args"].get("profile"):
            # cProfile of the daemon side only (the drain process): where a drain's time goes (issue 30)
            import cProfile

            profiler = cProfile.Profile()
            result = profiler.runcall(anyio.run, drain, job)
            profiler.dump_stats(f"{job['args']['profile']}.{job.get('replica', 1)}")
        else:
            result = anyio.run(drain, job)
        if job["args"].get("tracemalloc"):
            write_tracemalloc(f"{job['args']['tracemalloc']}.{job.get('replica', 1)}")
        print(json.dumps({"drain": result}), flush=True)
        return
    if args.sizes:
        main_sizes(args)
        return
    if args.uncapped and args.status_fields == "both":
        args.status_fields = "off"  # issue 16's comparison is the capped run's
    modes = ("off", "on") if args.status_fields == "both" else (args.status_fields,)
    runs: dict[str, dict[str, Any]] = {}
    for mode in modes:
        args.status_fields = mode
        with tempfile.TemporaryDirectory() as tmp, sandbox(Path(tmp)) as info:
            runs[mode] = run(info, args, Path(tmp))
    figures = runs[modes[0]]
    figures["status_fields"] = mode if len(modes) == 1 else "off (first run)"
    if len(modes) == 2:
        off, on = runs["off"], runs["on"]
        figures["status_fields_calls"] = {"off": off["salesforce_calls"], "on": on["salesforce_calls"],
                                          "off_kinds": off["salesforce_call_kinds"],
                                          "on_kinds": on["salesforce_call_kinds"],
                                          "on_drain_seconds": on["drain_seconds"]}
        if off["salesforce_calls"] != on["salesforce_calls"]:
            figures["notes"].append(
                f"status fields: {off['salesforce_calls']} Salesforce calls without them, {on['salesforce_calls']} "
                f"with them ({on['salesforce_call_kinds']}).")
    report(figures)
    name = "burst_uncapped" if args.uncapped else "burst_drain"
    print(json.dumps({"benchmark": name, "results": figures}))
    if figures["events_left"] or figures["dead"]:
        sys.exit("the burst did not drain cleanly")


if __name__ == "__main__":
    main()
