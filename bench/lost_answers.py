"""Exactly once against lost answers (issue 22): one burst drained twice, without and with after-apply faults.

The burst is burst_drain.py's (same machinery, same --seed): Nue notifications of customers' lifecycles
(order activations, subscriptions, customer updates, invoices; 5% duplicates, shuffled), which make
Salesforce Tasks (onboarding), Notes (amendments) and Nue_Billing_Event__c records (upserted by key), and
update Accounts. To it are added --deals Closed Won opportunities, each on a new Salesforce account that
has no Nue customer yet, as the Salesforce poll stores them (its own event key): flow 1 creates the Nue
customer, the order, activates it and writes its id back. The two runs use fresh simulators, the same seed
and the same settings; the only difference is that the second one has the simulators' after-apply faults
on at --rate (default 5%) of the creates: the request is applied, then its answer is lost (40% a dropped
connection, 20% a 503, 20% a 504, 20% an answer slower than the create timeout), on

- Salesforce: POST /composite/sobjects (Collections creates: Tasks, Notes), PATCH /composite/sobjects/*
  (upserts by external id: billing events, which create), POST /sobjects/*;
- Nue: POST /customers, POST /orders, POST /orders/* (activations).

Both runs use engine.settle_seconds = --settle (5) and a create timeout (Salesforce and Nue
create_timeout_seconds) of --create-timeout (4): a create whose answer was lost waits that long, then is
looked up and created only if absent. Salesforce is capped at --cap calls/s (simulator and limiter), as in
burst_drain.py.

Printed:
- per entity type, duplicates and losses, counted from the simulators' own records (not revdaemon's
  bookkeeping): Tasks per (account, Subject), Notes per (account, Title), billing events per
  Nue_Event_Key__c (a record the clean run has and the faulted run lacks is lost; more than one per key is a
  duplicate); Nue customers per deal account (0 lost, >1 duplicates), Nue orders per deal (by revdaemon's
  marker), activations (a deal's order not Activated is lost; an order activated by more than one applied
  request is a duplicate), and the order id written back to the opportunity. Targets: all 0, in both runs.
- the answers lost: request log entries carrying a `fault`, by API and kind;
- the extra lookups: read calls (Salesforce SOQL queries by object; Nue GETs and GraphQL reads) of the
  faulted run minus the clean run's, and the write calls likewise. A net difference of two runs: an event
  retried after settling is claimed in another batch than in the clean run, so the figure also holds the
  flows' re-reads of that event and any change in batching, not only the executor's lookups (one SOQL read
  or GraphQL query finds a whole chunk: a lost Collections answer of 200 Tasks costs one lookup);
- the drain time of both runs and their ratio (the faulted one includes waiting out the settle delay).
- the poll overlap (schedule.poll_overlap_seconds, now 10 minutes; Nue's nue_poll_overlap_seconds too): the
  drain runs the workers only, no pollers, so the overlap costs nothing inside it. It is measured after the
  faulted run instead: each poller (Salesforce Closed Won; Nue Customer, Order, Subscription, Invoice) polls
  twice into a throwaway store, the second poll right after the first, once with the overlap at 0 and once
  at 600 s. The second poll's calls and rows are what one steady-state poll re-reads when the burst's writes
  are under 10 minutes old: extra calls = calls(600 s) - calls(0). No new events come of it (the re-read rows
  carry the keys already stored). Each poll of the interval (60 s Salesforce, 120 s Nue) pays this while
  that much was modified in the last 10 minutes.

Usage: python bench/lost_answers.py [--events 10000] [--deals 400] [--rate 0.05] [--cap 10] [--settle 5]
       [--create-timeout 4] [--seed 7]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections import Counter, defaultdict
from datetime import timedelta
from pathlib import Path
from typing import Any

import anyio
import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from burst_drain import (  # bench/ is not a package: burst_drain is a sibling
    FAST,
    bench_settings,
    call_kinds,
    drain_in_child,
    prepare,
    request_log,
    sandbox,
    set_cap,
)

from revdaemon.engine.clients import build_clients
from revdaemon.engine.pollers import NuePoller, SalesforceClosedWonPoller
from revdaemon.limits import RetryPolicy
from revdaemon.ops.logging import configure_logging
from revdaemon.store import open_store
from revdaemon.store.records import NewEvent
from revdaemon.store.states import EventStatus

ORDER_MARKER = "sfdc-opportunity:"  # revdaemon's marker in an order's description (flow 1)
LINES = (("PLAT-SUB", 1), ("SEAT-VOL", 20), ("SUP-PREM", 1))  # seed price book entries, by product code
ENTITIES = ("Task", "Note", "billing event", "Nue customer", "Nue order", "order activation", "order write-back")
OVERLAP = 600.0  # config.yaml's schedule.poll_overlap_seconds and nue_poll_overlap_seconds
NUE_POLLED = ("Customer", "Order", "Subscription", "Invoice")


# The after-apply faults aimed at creates (tests/e2e/helpers.py's sf_lost_answers / nue_lost_answers, with
# the slow answers outlasting the create timeout).
def sf_lost_answers(rate: float, slow: float) -> dict[str, Any]:
    return {"applied_drop_rate": rate * 0.4, "applied_503_rate": rate * 0.2, "applied_504_rate": rate * 0.2,
            "applied_slow_rate": rate * 0.2, "applied_slow_seconds": slow,
            "applied_paths": ["POST /composite/sobjects", "PATCH /composite/sobjects/*", "POST /sobjects/*"]}


def nue_lost_answers(rate: float, slow: float) -> dict[str, Any]:
    return {"applied_drop_rate": rate * 0.4, "applied_503_rate": rate * 0.2, "applied_504_rate": rate * 0.2,
            "applied_slow_rate": rate * 0.2, "applied_slow_seconds": slow,
            "applied_paths": ["POST /orders", "POST /orders/*", "POST /customers"]}


# --- setup: the Closed Won deals --------------------------------------------------------------------------

def won_deals(sf_url: str, count: int) -> list[NewEvent]:
    """`count` new accounts (no Nue customer), each with an opportunity of three lines, moved to Closed Won;
    their events as the Salesforce poll stores them."""
    with httpx.Client(base_url=f"{sf_url}/__sandbox", timeout=60) as admin:
        def create(sobject: str, fields: dict[str, Any]) -> dict[str, Any]:
            response = admin.post("/scenario/create", json={"sobject": sobject, "fields": fields})
            response.raise_for_status()
            return dict(response.json())

        entries = {e["ProductCode"]: e for e in admin.get("/records/PricebookEntry").json()}
        pricebook = entries[LINES[0][0]]["Pricebook2Id"]
        deals = []
        for index in range(count):
            account = create("Account", {"Name": f"Won Co {index:05d}", "BillingCity": "Oslo", "BillingCountry": "NO"})
            deal = create("Opportunity", {"Name": f"Won deal {index:05d}", "AccountId": account["Id"],
                                          "StageName": "Negotiation/Review", "CloseDate": time.strftime("%Y-%m-%d"),
                                          "Type": "New Business", "Pricebook2Id": pricebook})
            for code, quantity in LINES:
                create("OpportunityLineItem", {"OpportunityId": deal["Id"], "PricebookEntryId": entries[code]["Id"],
                                               "Quantity": quantity})
            admin.post("/scenario/close-won", json={"opportunity_id": deal["Id"]}).raise_for_status()
            deals.append(deal["Id"])
        wanted = set(deals)
        won = [o for o in admin.get("/records/Opportunity").json() if o["Id"] in wanted]
    poll = SalesforceClosedWonPoller
    return [NewEvent(source=poll.source, key=f"sf:Opportunity:{o['Id']}:{o['SystemModstamp']}", type=poll.EVENT_TYPE,
                     payload={"data": {f: o.get(f) for f in poll.FIELDS}}) for o in won]


async def add_events(settings: Any, events: list[NewEvent]) -> int:
    store = await open_store(settings.store_target)
    stored = sum(await store.add_events(events))
    await store.close()
    return stored


# --- what the simulators hold -----------------------------------------------------------------------------

def sf_records(sf_url: str, sobject: str) -> list[dict[str, Any]]:
    response = httpx.get(f"{sf_url}/__sandbox/records/{sobject}", timeout=60)
    return list(response.json()) if response.status_code == 200 else []


def graphql(info: dict[str, Any], type_name: str, fields: str) -> list[dict[str, Any]]:
    """Every row of one type, read with the API key (after the drain's requests were taken from the log)."""
    response = httpx.post(f"{info['nue']['url']}/async/graphql", timeout=120,
                          json={"query": f"query {{ {type_name}(limit: 10000) {{ {fields} }} }}"},
                          headers={"nue-api-key": info["nue"]["api_key"]})
    response.raise_for_status()
    body = response.json()
    if body.get("errors"):
        raise RuntimeError(f"GraphQL {type_name}: {body['errors']}")
    return list(body["data"][type_name])


def holdings(info: dict[str, Any], nue_entries: list[dict[str, Any]]) -> dict[str, Any]:
    """Each entity's records in the simulators, by a key that is the same in both runs (names, not ids)."""
    sf_url = info["salesforce"]["url"]
    names = {r["Id"]: r.get("Name") for sobject in ("Account", "Opportunity") for r in sf_records(sf_url, sobject)}
    opportunities = {o["Id"]: o for o in sf_records(sf_url, "Opportunity")}
    orders = graphql(info, "Order", "id orderNumber status description")
    by_deal: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for order in orders:
        description = order.get("description") or ""
        if ORDER_MARKER in description:
            by_deal[description.split(ORDER_MARKER, 1)[1].split()[0].strip(".,;)")].append(order)
    # An activation is POST /orders/{id}; applied = a 2xx, whether or not its answer was then lost.
    activations = Counter(parts[1] for e in nue_entries
                          if e["method"] == "POST" and (200 <= int(e["status"]) < 300 or e.get("fault"))
                          and len(parts := str(e["path"]).strip("/").split("/")) == 2 and parts[0] == "orders")
    return {
        "Task": Counter((names.get(t.get("WhatId")), t.get("Subject")) for t in sf_records(sf_url, "Task")),
        "Note": Counter((names.get(n.get("ParentId")), n.get("Title")) for n in sf_records(sf_url, "Note")),
        "billing event": Counter(e.get("Nue_Event_Key__c") or e["Id"]
                                 for e in sf_records(sf_url, "Nue_Billing_Event__c")),
        "customers": Counter(c.get("salesAccountId") or c.get("externalId")
                             for c in graphql(info, "Customer", "id salesAccountId externalId")),
        "orders_by_deal": by_deal, "activations": activations, "opportunities": opportunities,
    }


def exactly_once(held: dict[str, Any], deals: list[str], clean: dict[str, Any] | None) -> dict[str, dict[str, int]]:
    """Duplicates and losses per entity type. Salesforce records: a key held more than once is duplicated;
    a key the clean run holds and this one lacks is lost (the clean run: none lost by definition, and its
    own losses show in the Nue rows, counted against the deals)."""
    table = {entity: {"duplicates": 0, "lost": 0} for entity in ENTITIES}
    for entity in ("Task", "Note", "billing event"):
        counts: Counter[Any] = held[entity]
        table[entity]["duplicates"] = sum(n - 1 for n in counts.values() if n > 1)
        if clean is not None:
            table[entity]["lost"] = sum(1 for key in clean[entity] if not counts.get(key))
    opportunities = held["opportunities"]
    for deal in deals:
        account = opportunities[deal]["AccountId"]
        customers = held["customers"].get(account, 0)
        if customers == 0:
            table["Nue customer"]["lost"] += 1
        table["Nue customer"]["duplicates"] += max(0, customers - 1)
        orders = held["orders_by_deal"].get(deal, [])
        if not orders:
            table["Nue order"]["lost"] += 1
            continue
        table["Nue order"]["duplicates"] += len(orders) - 1
        order = orders[0]
        if order["status"] != "Activated":
            table["order activation"]["lost"] += 1
        table["order activation"]["duplicates"] += max(0, sum(held["activations"].get(o["id"], 0) for o in orders) - 1)
        if opportunities[deal].get("Nue_Order_Id__c") != order["id"]:
            table["order write-back"]["lost"] += 1
    return table


# --- calls ------------------------------------------------------------------------------------------------

def nue_kinds(entries: list[dict[str, Any]]) -> dict[str, int]:
    """Nue requests by kind: reads (GETs, GraphQL) and writes by resource."""
    kinds: Counter[str] = Counter()
    for e in entries:
        parts = str(e["path"]).strip("/").split("/")
        if e["method"] == "GET" or parts[-1] == "graphql":
            kinds[f"read {parts[-1] if parts[-1] == 'graphql' else parts[0]}"] += 1
        else:
            kinds[f"{e['method']} /{'/'.join(['*' if i % 2 else p for i, p in enumerate(parts)])}"] += 1
    return dict(kinds.most_common())


def lost(entries: list[dict[str, Any]]) -> dict[str, int]:
    return dict(Counter(str(e["fault"]) for e in entries if e.get("fault")).most_common())


def reads(kinds: dict[str, int], api: str) -> dict[str, int]:
    if api == "salesforce":
        return {k.removeprefix("SOQL query "): v for k, v in kinds.items() if k.startswith("SOQL query")}
    return {k.removeprefix("read "): v for k, v in kinds.items() if k.startswith("read ")}


def writes(kinds: dict[str, int], api: str) -> dict[str, int]:
    if api == "salesforce":
        return {k: v for k, v in kinds.items() if k.startswith(("collections", "single-record"))}
    return {k: v for k, v in kinds.items() if not k.startswith("read ")}


def minus(a: dict[str, int], b: dict[str, int]) -> dict[str, int]:
    return {k: a.get(k, 0) - b.get(k, 0) for k in sorted(set(a) | set(b)) if a.get(k, 0) != b.get(k, 0)}


# --- the overlap's re-reads -------------------------------------------------------------------------------

async def overlap_cost(info: dict[str, Any], args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """Each poller twice into a throwaway store, overlap 0 and 600 s: the second poll's calls and rows."""
    sf_url, nue_url = info["salesforce"]["url"], info["nue"]["url"]
    out: dict[str, Any] = {}
    async with httpx.AsyncClient(timeout=120) as http:
        for overlap in (0.0, OVERLAP):
            settings = bench_settings(info, args, workdir / f"overlap-{overlap:.0f}")
            settings.state_dir.mkdir(parents=True, exist_ok=True)
            fast = settings.model_copy(update={"limits": settings.limits.model_copy(update={"salesforce": FAST,
                                                                                             "nue": FAST})})
            sf, nue = build_clients(fast, http, RetryPolicy())
            store = await open_store(fast.store_target)
            pollers = [SalesforceClosedWonPoller(sf, store, overlap=timedelta(seconds=overlap)),
                       *(NuePoller(t, nue, store, overlap=timedelta(seconds=overlap)) for t in NUE_POLLED)]
            for poller in pollers:
                await poller.run_once()  # the cursor
                url = sf_url if isinstance(poller, SalesforceClosedWonPoller) else nue_url
                before = len(request_log(url))
                result = await poller.run_once()
                out.setdefault(poller.name, {})[f"{overlap:.0f}"] = {
                    "calls": len(request_log(url)) - before, "rows": result.read, "new_events": result.stored,
                    "status": str(result.status)}
            await store.close()
    return out


# --- one run ----------------------------------------------------------------------------------------------

def run(args: argparse.Namespace, faulted: bool) -> dict[str, Any]:
    label = f"after-apply faults at {args.rate:.0%}" if faulted else "no after-apply faults"
    print(f"=== run: {label}", flush=True)
    with tempfile.TemporaryDirectory() as tmp, sandbox(Path(tmp)) as info:
        workdir = Path(tmp)
        sf_url, nue_url = info["salesforce"]["url"], info["nue"]["url"]
        events, stored, customers = anyio.run(prepare, info, args, workdir)
        print(f"setup (not measured): {args.deals} Closed Won deals on new accounts ...", flush=True)
        deal_events = won_deals(sf_url, args.deals)
        stored += anyio.run(add_events, bench_settings(info, args, workdir), deal_events)
        deals = [e.payload["data"]["Id"] for e in deal_events]
        set_cap(sf_url, args.cap)
        if faulted:
            slow = args.create_timeout + 2  # slower than the client waits for a create
            httpx.post(f"{sf_url}/__sandbox/faults", json=sf_lost_answers(args.rate, slow),
                       timeout=30).raise_for_status()
            httpx.post(f"{nue_url}/__sandbox/faults", json=nue_lost_answers(args.rate, slow),
                       timeout=30).raise_for_status()
        sf_start, nue_start = len(request_log(sf_url)), len(request_log(nue_url))
        job = workdir / "drain.json"
        job.write_text(json.dumps({"info": info, "state_dir": str(workdir), "args": vars(args)}))
        print(f"drain: {len(events) + len(deal_events)} events ({stored} unique), Salesforce capped at {args.cap}/s, "
              f"settle {args.settle:g} s, create timeout {args.create_timeout:g} s ...", flush=True)
        d = drain_in_child(job)
        sf_entries, nue_entries = request_log(sf_url)[sf_start:], request_log(nue_url)[nue_start:]
        for url in (sf_url, nue_url):  # the counting reads below are no part of the run
            httpx.post(f"{url}/__sandbox/faults", json={"applied_drop_rate": 0, "applied_503_rate": 0,
                                                         "applied_504_rate": 0, "applied_slow_rate": 0},
                       timeout=30).raise_for_status()
        held = holdings(info, nue_entries)
        sf_kinds, nue_kinds_ = call_kinds(sf_entries), nue_kinds(nue_entries)
        figures = {
            "faulted": faulted, "events": len(events) + len(deal_events), "events_stored": stored,
            "customers": customers, "deals": len(deals),
            "drain_seconds": d["elapsed"], "timed_out": d["timed_out"],
            "events_left": d["depths"][EventStatus.RECEIVED] + d["depths"][EventStatus.CLAIMED],
            "dead": d["depths"][EventStatus.DEAD],
            "lost_answers": {"salesforce": lost(sf_entries), "nue": lost(nue_entries)},
            "calls": {"salesforce": len(sf_entries), "nue": len(nue_entries)},
            "call_kinds": {"salesforce": sf_kinds, "nue": nue_kinds_},
            "records": {k: sum(held[k].values()) for k in ("Task", "Note", "billing event")},
        }
        if faulted:
            print("overlap: each poller twice, overlap 0 and 600 s ...", flush=True)
            figures["overlap"] = anyio.run(overlap_cost, info, args, workdir)
    return {"figures": figures, "held": held, "deals": deals}


def report(clean: dict[str, Any], faulty: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    c, f = clean["figures"], faulty["figures"]
    table_clean = exactly_once(clean["held"], clean["deals"], None)
    table = exactly_once(faulty["held"], faulty["deals"], clean["held"])
    print(f"\nburst: {c['events']} events ({c['events_stored']} unique): burst_drain's notifications from "
          f"{c['customers']} customers + {c['deals']} Closed Won deals on new accounts; seed {args.seed}; Salesforce "
          f"capped at {args.cap} calls/s; engine.settle_seconds {args.settle:g}, create_timeout_seconds "
          f"{args.create_timeout:g} (both runs)")
    print(f"after-apply faults: {args.rate:.0%} of the creates' applied requests lose their answer (drop 40%, 503 "
          f"20%, 504 20%, slower than the create timeout 20%)")
    for name, x in (("clean", c), ("faulted", f)):
        print(f"  {name}: drained in {x['drain_seconds']:.1f} s; {x['events_left']} left, {x['dead']} dead"
              f"{'; TIMED OUT' if x['timed_out'] else ''}; records: "
              + ", ".join(f"{k} {v}" for k, v in x["records"].items()))
    total = sum(sum(v.values()) for v in f["lost_answers"].values())
    print(f"answers lost (request log `fault`): {total}: Salesforce {f['lost_answers']['salesforce'] or 'none'}; "
          f"Nue {f['lost_answers']['nue'] or 'none'}")
    print("exactly once, per entity type (faulted run; clean run in brackets), target 0 / 0:")
    all_zero = True
    for entity in ENTITIES:
        x, y = table[entity], table_clean[entity]
        zero = x["duplicates"] == x["lost"] == y["duplicates"] == y["lost"] == 0
        all_zero &= zero
        print(f"  {entity}: {x['duplicates']} duplicated, {x['lost']} lost "
              f"[{y['duplicates']} / {y['lost']}]: {'met' if zero else 'MISSED'}")
    extra: dict[str, Any] = {}
    for api in ("salesforce", "nue"):
        ck, fk = c["call_kinds"][api], f["call_kinds"][api]
        extra[api] = {"reads": minus(reads(fk, api), reads(ck, api)), "writes": minus(writes(fk, api), writes(ck, api)),
                      "read_calls": sum(reads(fk, api).values()) - sum(reads(ck, api).values()),
                      "write_calls": sum(writes(fk, api).values()) - sum(writes(ck, api).values()),
                      "calls": f["calls"][api] - c["calls"][api]}
        e = extra[api]
        print(f"extra {api} calls (faulted - clean): {e['calls']:+d} in all; lookups/reads {e['read_calls']:+d} "
              f"({', '.join(f'{k} {v:+d}' for k, v in e['reads'].items()) or 'none'}); writes {e['write_calls']:+d} "
              f"({', '.join(f'{k} {v:+d}' for k, v in e['writes'].items()) or 'none'})")
    ratio = f["drain_seconds"] / c["drain_seconds"]
    print(f"drain time: {c['drain_seconds']:.1f} s clean, {f['drain_seconds']:.1f} s faulted: {ratio:.2f}x "
          f"(the settle delay, {args.settle:g} s, is waited out after each lost answer)")
    ov = f["overlap"]
    print("poll overlap 10 min (schedule.poll_overlap_seconds; Nue's likewise), a steady-state poll right after one "
          "(calls / rows, overlap 0 -> 600 s):")
    for name, o in ov.items():
        zero, ten = o["0"], o[f"{OVERLAP:.0f}"]
        print(f"  {name}: {zero['calls']} / {zero['rows']} -> {ten['calls']} / {ten['rows']}: "
              f"{ten['calls'] - zero['calls']:+d} calls, {ten['rows'] - zero['rows']:+d} rows re-read, "
              f"{ten['new_events']} new events")
    overlap_calls = sum(o[f"{OVERLAP:.0f}"]["calls"] - o["0"]["calls"] for o in ov.values())
    ok = all_zero and not any(x["events_left"] or x["dead"] or x["timed_out"] for x in (c, f))
    return {"settle_seconds": args.settle, "create_timeout_seconds": args.create_timeout, "rate": args.rate,
            "cap_per_second": args.cap, "events": c["events"], "events_stored": c["events_stored"],
            "deals": c["deals"], "customers": c["customers"],
            "exactly_once": table, "exactly_once_clean": table_clean, "lost_answers": f["lost_answers"],
            "lost_answers_total": total, "extra_calls": extra,
            "drain_seconds": {"clean": c["drain_seconds"], "faulted": f["drain_seconds"]}, "drain_ratio": ratio,
            "left_dead": {"clean": [c["events_left"], c["dead"]], "faulted": [f["events_left"], f["dead"]]},
            "records": {"clean": c["records"], "faulted": f["records"]}, "overlap": ov,
            "overlap_extra_calls_per_poll_round": overlap_calls, "all_zero": ok}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=10_000, help="Nue notifications in the burst (burst_drain's)")
    parser.add_argument("--deals", type=int, default=400, help="Closed Won deals on new accounts added to it")
    parser.add_argument("--rate", type=float, default=0.05, help="share of applied creates whose answer is lost")
    parser.add_argument("--cap", type=int, default=10, help="Salesforce calls per second (simulator and limiter)")
    parser.add_argument("--settle", type=float, default=5.0, help="engine.settle_seconds")
    parser.add_argument("--create-timeout", type=float, default=4.0, help="Salesforce and Nue create_timeout_seconds")
    parser.add_argument("--workers", type=int, default=None, help="default: engine.workers of config.yaml")
    parser.add_argument("--batch", type=int, default=None, help="default: engine.batch_size of config.yaml")
    parser.add_argument("--nue-rate", type=float, default=1000.0, help="revdaemon's Nue limiter, requests/s")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--timeout", type=float, default=3600.0, help="give up draining after this many seconds")
    args = parser.parse_args()
    args.replicas, args.status_fields, args.store_url = 1, "off", None  # burst_drain's drain, one process
    configure_logging(level="warning")
    clean = run(args, faulted=False)
    faulty = run(args, faulted=True)
    results = report(clean, faulty, args)
    print(json.dumps({"benchmark": "lost_answers", "results": results}, default=str))
    if not results["all_zero"]:
        sys.exit("duplicates, losses or an undrained burst")


if __name__ == "__main__":
    main()
