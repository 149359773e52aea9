"""Run every benchmark under bench/ in order and write bench/RESULTS.md: a table per benchmark of
figure / value / target / met?, with the date and the machine.

Each script runs as its own process (its output is shown as it comes); its last `{"benchmark": ...}` line
is what goes into the table. A target not reached says "missed"; a script that fails or prints no JSON line
is reported as such, and the others still run. The targets are issues 12, 14, 22 and 30's and are not relaxed in
--quick. baseline_simple_salesforce is given burst_drain's JSON line of the same run (--revdaemon-json), so the
burst is not drained twice; without it (burst_drain failed or was left out) it runs burst_drain itself.
burst_scale and burst_uncapped are burst_drain.py again (SCRIPT_OF), with --sizes (the same burst at 10,000, 30,000
and 100,000: issue 30's linear cost) and --uncapped (the Salesforce cap lifted: events/s against 500).
Usage: python bench/run_all.py [--quick] [--output bench/RESULTS.md] [--only NAME ...]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent

# name -> (full-run arguments, --quick arguments)
SCRIPTS: dict[str, tuple[list[str], list[str]]] = {
    "sandbox_throughput": ([], ["--seconds", "2"]),
    "salesforce_upsert": ([], ["--records", "2000"]),
    "webhook_ingest": ([], ["--seconds", "3"]),
    "burst_drain": ([], ["--events", "2000"]),
    "baseline_simple_salesforce": ([], ["--events", "2000", "--sample", "100"]),
    "burst_scale": (["--sizes", "10000", "30000", "100000"], ["--sizes", "1000", "3000"]),
    "burst_uncapped": (["--uncapped"], ["--uncapped", "--events", "2000"]),
    "idle": ([], ["--seconds", "20", "--warmup", "5"]),
    "replicas": ([], ["--events", "1000", "--seconds", "3"]),
    "lost_answers": ([], ["--events", "2000", "--deals", "100"]),
    "retention": ([], ["--events", "100000"]),
    "realtime_latency": ([], ["--deals", "30", "--samples", "40", "--poll-seconds", "15", "--pace", "1"]),
    "under_load": ([], ["--events", "4000", "--samples", "10", "--seconds", "3"]),
}

# entries that run another entry's script with other arguments (issue 30: burst_drain.py --sizes / --uncapped)
SCRIPT_OF: dict[str, str] = {"burst_scale": "burst_drain", "burst_uncapped": "burst_drain"}


def script(name: str) -> str:
    return f"{SCRIPT_OF.get(name, name)}.py"


@dataclass
class Row:
    figure: str
    value: str
    target: str = ""
    met: bool | None = None  # None: no target for this figure


@dataclass
class Outcome:
    name: str
    args: list[str]
    exit_code: int
    seconds: float
    result: dict[str, Any] | None


def run(name: str, args: list[str], extra: list[str] | None = None) -> Outcome:
    """`extra` arguments are passed but not shown (a temporary file's path)."""
    command = [sys.executable, str(BENCH / script(name)), *args, *(extra or [])]
    print(f"\n=== {name} ({script(name)}) {' '.join(args)}".rstrip(), flush=True)
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, cwd=BENCH.parent)
    result = None
    assert process.stdout is not None
    for line in process.stdout:
        print(line, end="", flush=True)
        if line.startswith('{"benchmark"'):
            with contextlib.suppress(json.JSONDecodeError):
                result = json.loads(line)
    code = process.wait()
    return Outcome(name, args, code, time.perf_counter() - started, result)


def fmt(value: Any, digits: int = 0) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, str):
        return value
    return f"{value:,.{digits}f}"


def at_most(value: float | None, limit: float) -> bool | None:
    return None if value is None else value <= limit


def sandbox_rows(r: dict[str, Any]) -> list[Row]:
    rows = []
    for key, label in (("salesforce_get_record", "Salesforce GET record"), ("nue_get_customer", "Nue GET customer")):
        f = r["results"][key]
        rows += [Row(f"{label}: requests/s", fmt(f["requests_per_second"]), ">= 1,000",
                     f["requests_per_second"] >= 1000),
                 Row(f"{label}: p50 / p99 latency", f"{f['p50_ms']:.2f} / {f['p99_ms']:.2f} ms"),
                 Row(f"{label}: errors", fmt(f["errors"]), "0", f["errors"] == 0)]
    return rows


def upsert_rows(r: dict[str, Any]) -> list[Row]:
    f = r["results"]
    per_record = (f["api_calls"] + f["logins"]) / f["records"]
    return [Row("records upserted", fmt(f["records"])),
            Row("records/s", fmt(f["records_per_second"])),
            Row("API calls (+ logins)", f"{f['api_calls']:.0f} (+ {f['logins']:.0f})",
                f"{f['expected_calls']:.0f} (one per 200 records)", f["api_calls"] == f["expected_calls"]),
            Row("Salesforce calls per record (logins included)", fmt(per_record, 4), "<= 0.02",
                at_most(per_record, 0.02)),
            Row("failed records", fmt(f["failed"]), "0", f["failed"] == 0)]


def ingest_rows(r: dict[str, Any]) -> list[Row]:
    ref, rd = r["reference"], r["revdaemon"]
    return [Row("revdaemon: events/s durably stored", fmt(rd["events_per_second"]), ">= 4,000",
                rd["events_per_second"] >= 4000),
            Row("revdaemon: p50 ack latency", f"{rd['p50_ms']:.2f} ms"),
            Row("revdaemon: p99 ack latency", f"{rd['p99_ms']:.2f} ms", "< 20 ms", rd["p99_ms"] < 20),
            Row("revdaemon: non-2xx / socket errors", f"{rd['non_2xx']:.0f} / {rd['socket_errors']}"),
            Row("reference (bare ASGI + SQLite): events/s", fmt(ref["events_per_second"])),
            Row("reference: p99 ack latency", f"{ref['p99_ms']:.2f} ms"),
            Row("ratio revdaemon / reference, events/s", f"{r['ratio']:.2f}x", ">= 1.0x", r["ratio"] >= 1.0)]


def _by(counts: dict[str, Any]) -> str:
    return ", ".join(f"{k} {v:,}" for k, v in counts.items() if v) or "none"


def _ratio(value: float | None, digits: int = 4) -> str:
    return fmt(value, digits)


def burst_rows(r: dict[str, Any]) -> list[Row]:
    f = r["results"]
    cap, ps = f["cap_per_second"], f["salesforce_per_second"]
    rows = [Row("notifications sent (unique stored)", f"{f['events_sent']:,} ({f['events_stored']:,})"),
            Row("unique notifications by type", _by(f["event_types"])),
            Row("customers (Salesforce accounts, Nue customers)", fmt(f["customers"])),
            Row("left undrained / dead", f"{f['events_left']} / {f['dead']}", "0 / 0",
                f["events_left"] == 0 and f["dead"] == 0 and not f["timed_out"]),
            Row("Salesforce cap (simulator) = revdaemon's limiter", f"{cap} calls/s"),
            Row("drain time", f"{f['drain_seconds']:.1f} s"),
            Row("rate-limit floor (Salesforce calls admitted / cap)",
                f"{f['salesforce_calls_admitted']:,} / {cap} = {f['floor_seconds']:.1f} s"),
            Row("drain time / floor (issue 14)", f"{_ratio(f['floor_ratio'], 2)}x", "<= 1.2x",
                at_most(f["floor_ratio"], 1.2)),
            Row("drain time / floor (issue 30)", f"{_ratio(f['floor_ratio'], 2)}x", "<= 1.5x",
                at_most(f["floor_ratio"], 1.5)),
            Row("calendar seconds at the cap / with no call",
                f"{ps.get(f'seconds_with_{cap}', 0)} / {ps['idle_seconds']} of {ps['seconds']}"),
            Row("Salesforce calls refused over the cap (403)", fmt(f["salesforce_403"]), "0", f["salesforce_403"] == 0),
            Row("Salesforce calls, by kind", f"{f['salesforce_calls']:,}: {_by(f['salesforce_call_kinds'])}"),
            Row("Salesforce records synced (created or changed), by object",
                f"{f['records_synced']:,}: {_by(f['records_synced_by_object'])}"),
            Row("Salesforce calls per synced record", _ratio(f["salesforce_calls_per_record"]), "<= 0.02",
                at_most(f["salesforce_calls_per_record"], 0.02)),
            Row("Salesforce calls per event (issue 12)", _ratio(f["salesforce_calls_per_event"]), "<= 0.02",
                at_most(f["salesforce_calls_per_event"], 0.02)),
            Row("Nue calls per event", _ratio(f["nue_calls_per_event"]), "<= 0.05",
                at_most(f["nue_calls_per_event"], 0.05)),
            Row("events/s", fmt(f["events_per_second"], 1)),
            Row("peak RSS (the drain process's own, VmHWM)", f"{f['peak_rss_mb']:.0f} MB"),
            Row("the drain process's CPU per event (both its threads) / the simulators' answer time",
                f"{f['cpu_ms_per_event']:.2f} ms / Salesforce {f['simulator_seconds']['salesforce']:.1f} s, "
                f"Nue {f['simulator_seconds']['nue']:.1f} s")]
    if "status_fields_calls" in f:
        sc = f["status_fields_calls"]
        rows.append(Row("Salesforce calls with the sync status fields off / on (issue 16; a second burst, fresh "
                        "simulators, the fields on Account and Opportunity)", f"{sc['off']:,} / {sc['on']:,}",
                        "equal", sc["off"] == sc["on"]))
    rows += [Row("why missed", note) for note in f.get("notes", [])]
    return rows


def baseline_rows(r: dict[str, Any]) -> list[Row]:
    f, c = r["results"], r.get("comparison") or {}
    rows = [Row("baseline: method", "the whole burst handled once by the script; the first part with the "
                "simulator at the cap and the script pacing itself at it (drain time measured), the rest with the "
                "cap lifted so the run stays short (calls and records counted the same way); the drain time of the "
                "whole burst at the cap is projected from the first part, not measured"),
            Row("baseline: notifications handled", fmt(f["events_sent"])),
            Row("baseline: errors", fmt(f["errors"]), "0", f["errors"] == 0),
            Row("baseline: first part, at the cap (measured)",
                f"{f['sample_events']:,} notifications, {f['sample_salesforce_calls']:,} Salesforce calls in "
                f"{f['sample_seconds']:.1f} s ({f['sample_salesforce_calls'] / f['sample_seconds']:.1f} calls/s at a "
                f"cap of {f['cap_per_second']}/s; {f['sample_403']} refused)"),
            Row("baseline: the rest, cap lifted (to keep the run short)",
                f"{f['uncapped_events']:,} notifications in {f['uncapped_seconds']:.1f} s"),
            Row("baseline: Salesforce calls, by kind", f"{f['salesforce_calls']:,}: {_by(f['salesforce_call_kinds'])}"),
            Row("baseline: Salesforce records synced, by object",
                f"{f['records_synced']:,}: {_by(f['records_synced_by_object'])}"),
            Row("baseline: Salesforce calls per synced record", _ratio(f["salesforce_calls_per_record"])),
            Row("baseline: Salesforce calls per notification", _ratio(f["salesforce_calls_per_event"], 3)),
            Row("baseline: Nue calls per notification", _ratio(f["nue_calls_per_event"], 3)),
            Row("baseline: drain time of the whole burst at the cap",
                f"PROJECTED {f['projected_drain_seconds']:,.0f} s (the first part's seconds per call x all its calls;"
                f" floor {f['floor_seconds']:,.0f} s)")]
    rd = r.get("revdaemon") or {}
    if rd:
        rows.append(Row("revdaemon run: left undrained / dead", f"{rd['events_left']} / {rd['dead']}", "0 / 0",
                        rd["events_left"] == 0 and rd["dead"] == 0))
    if c:
        fewer = 1 / c["salesforce_calls_per_event_ratio"] if c["salesforce_calls_per_event_ratio"] else None
        rows += [Row("ratio revdaemon / baseline, Salesforce calls per synced record",
                     _ratio(c["salesforce_calls_per_record_ratio"])),
                 Row("ratio revdaemon / baseline, Salesforce calls per notification",
                     _ratio(c["salesforce_calls_per_event_ratio"])),
                 Row("fewer Salesforce calls than the baseline (issue 12)", f"{fmt(fewer, 1)}x", ">= 50x",
                     None if fewer is None else fewer >= 50),
                 *([Row("why missed", f"revdaemon's {rd['salesforce_calls']:,} Salesforce calls: "
                        f"{_by(rd['salesforce_call_kinds'])} (burst_drain's why-missed line says why)")]
                   if fewer is not None and fewer < 50 else []),
                 Row("ratio revdaemon / baseline, Nue calls per notification", _ratio(c["nue_calls_per_event_ratio"])),
                 Row("ratio revdaemon / baseline, drain time (measured / projected)",
                     f"{c['revdaemon_drain_seconds']:,.1f} s / {c['baseline_projected_drain_seconds']:,.0f} s = "
                     f"{_ratio(c['drain_seconds_ratio'], 3)}")]
    else:
        rows.append(Row("fewer Salesforce calls than the baseline (issue 12)", "not measured (no revdaemon run)",
                        ">= 50x", False))
    return rows


def scale_rows(r: dict[str, Any]) -> list[Row]:
    """burst_drain.py --sizes (issue 30's linear cost)."""
    f = r["results"]
    runs = {int(n): figures for n, figures in f["sizes"].items()}
    cap = next(iter(runs.values()))["cap_per_second"]
    rows = [Row("method", "the same burst (seed, mix of burst_drain) at each size, each in fresh simulators, sync "
                "status fields off, Salesforce " + ("not capped" if cap is None else f"capped at {cap} calls/s "
                "(revdaemon's limiter at the cap)"))]
    for n, s in sorted(runs.items()):
        rows += [Row(f"{n:,}: left undrained / dead", f"{s['events_left']} / {s['dead']}", "0 / 0",
                     s["events_left"] == 0 and s["dead"] == 0 and not s["timed_out"]),
                 Row(f"{n:,}: drain time, events/s, ms per event",
                     f"{s['drain_seconds']:,.1f} s, {s['events_per_second']:,.0f} events/s, "
                     f"{s['ms_per_event']:.2f} ms"),
                 Row(f"{n:,}: Salesforce / Nue calls per event; Salesforce calls per synced record",
                     f"{_ratio(s['salesforce_calls_per_event'])} / {_ratio(s['nue_calls_per_event'])}; "
                     f"{_ratio(s['salesforce_calls_per_record'])} ({s['salesforce_calls']:,} calls, "
                     f"{s['records_synced']:,} records)"),
                 Row(f"{n:,}: drain time / floor", "n/a (not capped)" if s["floor_ratio"] is None else
                     f"{s['floor_ratio']:.2f}x (floor {s['floor_seconds']:.1f} s; "
                     f"{s['salesforce_per_second']['idle_seconds']} of {s['salesforce_per_second']['seconds']} s "
                     "without a Salesforce call)"),
                 Row(f"{n:,}: peak RSS", f"{s['peak_rss_mb']:.0f} MB", "< 300 MB", s["peak_rss_mb"] < 300),
                 *([Row(f"{n:,}: drain process in the garbage collector (full collections)",
                        f"{s['gc']['seconds']:.1f} s ({s['gc']['full_collections']}: {s['gc']['full_seconds']:.1f} s)")]
                   if "gc" in s else []),
                 Row(f"{n:,}: setup (not measured)", f"{s['setup_seconds']:.0f} s, {s['customers']:,} customers")]
    small, large = f["smallest"], f["largest"]
    labels = {"ms_per_event": "per-event time", "salesforce_calls_per_event": "Salesforce calls per event",
              "nue_calls_per_event": "Nue calls per event"}
    for key, label in labels.items():
        ratio = f["ratios"][key]
        rows.append(Row(f"{label} at {large:,} / at {small:,}", f"{_ratio(ratio, 2)}x", "<= 1.2x",
                        at_most(ratio, 1.2)))
    rows += [Row("why missed", note) for note in f.get("notes", [])]
    return rows


def uncapped_rows(r: dict[str, Any]) -> list[Row]:
    """burst_drain.py --uncapped (issue 30: the drain's own pace, no API cap)."""
    f = r["results"]
    ps = f["salesforce_per_second"]
    rows = [Row("method", "burst_drain's burst, sync status fields off; the Salesforce simulator does not cap and "
                "revdaemon's Salesforce limiter is as high as its Nue one (1,000 requests/s, 8 at once)"),
            Row("notifications sent (unique stored)", f"{f['events_sent']:,} ({f['events_stored']:,})"),
            Row("left undrained / dead", f"{f['events_left']} / {f['dead']}", "0 / 0",
                f["events_left"] == 0 and f["dead"] == 0 and not f["timed_out"]),
            Row("drain time", f"{f['drain_seconds']:.1f} s ({f['ms_per_event']:.2f} ms per event)"),
            Row("events/s, Salesforce not capped", fmt(f["events_per_second"], 0), ">= 500",
                f["events_per_second"] >= 500),
            Row("Salesforce calls: busiest second / seconds without a call",
                f"{ps['max_per_second']} / {ps['idle_seconds']} of {ps['seconds']}"),
            Row("Salesforce calls, by kind", f"{f['salesforce_calls']:,}: {_by(f['salesforce_call_kinds'])}"),
            Row("Salesforce / Nue calls per event", f"{_ratio(f['salesforce_calls_per_event'])} / "
                f"{_ratio(f['nue_calls_per_event'])}"),
            Row("Salesforce calls refused (403)", fmt(f["salesforce_403"]), "0", f["salesforce_403"] == 0),
            Row("peak RSS (the drain process's own, VmHWM)", f"{f['peak_rss_mb']:.0f} MB"),
            Row("the drain process's CPU per event (both its threads) / the simulators' answer time",
                f"{f['cpu_ms_per_event']:.2f} ms / Salesforce {f['simulator_seconds']['salesforce']:.1f} s, "
                f"Nue {f['simulator_seconds']['nue']:.1f} s")]
    rows += [Row("why missed", note) for note in f.get("notes", []) if "cap lifted" in note]
    return rows


def idle_rows(r: dict[str, Any]) -> list[Row]:
    f = r["results"]
    return [Row("window", f"{f['seconds']:.0f} s, {f['samples']:.0f} samples"),
            Row("peak RSS", f"{f['peak_rss_mb']:.1f} MB", "< 80 MB", f["peak_rss_mb"] < 80),
            Row("mean RSS", f"{f['mean_rss_mb']:.1f} MB"),
            Row("CPU (one core)", f"{f['cpu_percent']:.2f}% ({f['cpu_seconds']:.2f} s)"),
            Row("poller calls during the window (Salesforce / Nue)",
                f"{f['salesforce_calls']:.0f} / {f['nue_calls']:.0f}")]


def replicas_rows(r: dict[str, Any]) -> list[Row]:
    f = r["results"]
    one, two = f["drain"]["1"], f["drain"]["2"]
    sqlite, postgres = f["ingest"]["sqlite"], f["ingest"]["postgresql"]
    ratio = f["drain_ratio_two_to_one"]
    kill, stop = f["takeover_seconds"]["kill_9"], f["takeover_seconds"]["sigstop"]
    rows = [Row("burst on PostgreSQL (fsync on)", f"{f['events']:,} notifications, Salesforce capped at "
                f"{f['cap_per_second']} calls/s; with two replicas one is active, the other on standby"),
            Row("drain, 1 replica", f"{one['drain_seconds']:.1f} s; {one['salesforce_calls']} Salesforce calls, "
                f"{one['nue_calls']} Nue calls; left/dead {one['events_left']}/{one['dead']}", "0/0",
                one["events_left"] == one["dead"] == 0),
            Row("drain, 2 replicas", f"{two['drain_seconds']:.1f} s; {two['salesforce_calls']} Salesforce calls, "
                f"{two['nue_calls']} Nue calls; left/dead {two['events_left']}/{two['dead']}; events processed by "
                "replica " + " / ".join(str(n) for _, n in sorted(two["processed_by_replica"].items())), "0/0",
                two["events_left"] == two["dead"] == 0),
            Row("Salesforce calls, 2 replicas vs 1", f"{two['salesforce_calls']} vs {one['salesforce_calls']}",
                "equal (one active replica)", two["salesforce_calls"] == one["salesforce_calls"]),
            Row("drain 2 replicas / 1 replica", f"{ratio:.2f}x", "<= 1.1x", ratio <= 1.1),
            Row("takeover after kill -9 (idle daemons)", ", ".join(f"{v:.1f}" for v in kill) + " s",
                "within a few seconds", max(kill) <= 6),
            Row("takeover after SIGSTOP (idle daemons)", ", ".join(f"{v:.1f}" for v in stop) + " s",
                "the silence limit (6 s) + one 2 s step", max(stop) <= 8.5),
            Row("webhook ingest, events/s durably stored: SQLite / PostgreSQL",
                f"{sqlite['events_per_second']:,.0f} / {postgres['events_per_second']:,.0f} (p99 "
                f"{sqlite['p99_ms']:.1f} / {postgres['p99_ms']:.1f} ms)")]
    if ratio > 1.1:
        rows.append(Row("why missed", "both replicas run on this one 2-core machine, beside both simulators and "
                        "PostgreSQL: the standby's start and its steps take CPU from the active one"))
    return rows


def lost_answers_rows(r: dict[str, Any]) -> list[Row]:
    f = r["results"]
    lost = f["lost_answers"]
    drain = f["drain_seconds"]
    rows = [Row("burst (the same seed, twice, fresh simulators)",
                f"{f['events']:,} events ({f['events_stored']:,} unique): burst_drain's notifications from "
                f"{f['customers']:,} customers + {f['deals']} Closed Won deals on new accounts; Salesforce capped at "
                f"{f['cap_per_second']} calls/s; engine.settle_seconds {f['settle_seconds']:g}, "
                f"create_timeout_seconds {f['create_timeout_seconds']:g}"),
            Row(f"answers lost after apply ({f['rate']:.0%} of the creates)",
                f"{f['lost_answers_total']}: Salesforce {_by(lost['salesforce'])}; Nue {_by(lost['nue'])}"),
            Row("left undrained / dead (clean; faulted)",
                f"{'/'.join(map(str, f['left_dead']['clean']))}; {'/'.join(map(str, f['left_dead']['faulted']))}",
                "0/0; 0/0", not any(f["left_dead"]["clean"] + f["left_dead"]["faulted"]))]
    for entity, c in f["exactly_once"].items():
        clean = f["exactly_once_clean"][entity]
        rows.append(Row(f"{entity}: duplicated / lost (faulted run; clean run)",
                        f"{c['duplicates']} / {c['lost']}; {clean['duplicates']} / {clean['lost']}", "0 / 0",
                        c["duplicates"] == c["lost"] == clean["duplicates"] == clean["lost"] == 0))
    for api, e in f["extra_calls"].items():
        reads = ", ".join(f"{k} {v:+d}" for k, v in e["reads"].items()) or "none"
        writes = ", ".join(f"{k} {v:+d}" for k, v in e["writes"].items()) or "none"
        rows.append(Row(f"extra {api} calls, faulted - clean", f"{e['calls']:+d}: lookups/reads {e['read_calls']:+d} "
                        f"({reads}); writes {e['write_calls']:+d} ({writes})"))
    rows.append(Row("drain time clean / faulted", f"{drain['clean']:.1f} s / {drain['faulted']:.1f} s = "
                    f"{f['drain_ratio']:.2f}x"))
    overlap = "; ".join(f"{name} {o['0']['calls']} -> {o['600']['calls']} calls ({o['600']['rows'] - o['0']['rows']:+d}"
                        " rows)" for name, o in f["overlap"].items())
    rows.append(Row("poll overlap 0 -> 600 s: one steady-state poll each, right after the faulted run",
                    f"{f['overlap_extra_calls_per_poll_round']:+d} calls a round: {overlap}"))
    return rows


def retention_rows(r: dict[str, Any]) -> list[Row]:
    f = r["results"]
    mb = 2**20
    size, growth = f["size_bytes"], f["growth_bytes_per_day_last_week"]
    rows = [Row("traffic", f"{f['events']:,} events over {f['days']} days through add_events, claim and complete; "
                f"{f['writes_per_event']:g} writes per event ({f['create_share']:.0%} creates without an external id), "
                f"their intents and audit entries; pruned nightly at {f['retention_days']} days"),
            Row("store size at the end: never pruned / pruned nightly / pruned, after VACUUM",
                f"{size['kept'] / mb:,.0f} / {size['pruned'] / mb:,.0f} / {size['pruned_after_vacuum'] / mb:,.0f} MB"),
            Row("growth per day over the last week: never pruned / pruned (event keys and creates' intents stay)",
                f"{growth['kept'] / mb:,.1f} / {growth['pruned'] / mb:,.1f} MB")]
    for name, label in (("kept", "never pruned"), ("pruned", "pruned")):
        i = f["ingest"][name]
        rows.append(Row(f"add_events, {label}: empty store -> after the month, events/s (best of 5 x 2,000) and "
                        "events per CPU second (median)",
                        f"{i['start']['events_per_second']:,.0f} -> {i['end']['events_per_second']:,.0f}; "
                        f"{i['start']['events_per_cpu_second']:,.0f} -> {i['end']['events_per_cpu_second']:,.0f}"))
    rows += [Row("rows pruned in all", _by(f["pruned_rows"])),
             Row("nightly prune: mean / longest run", f"{f['nightly_prune_seconds']['mean']:.1f} / "
                 f"{f['nightly_prune_seconds']['max']:.1f} s")]
    for name, batches in f["prune_transaction_ms"].items():
        rows.append(Row(f"prune transactions ({name.replace('_', ' ')}): median / p99 / max wall-clock (a writer "
                        "waits for one at most); CPU median / p99",
                        f"{batches['median']:.0f} / {batches['p99']:.0f} / {batches['max']:.0f} ms; "
                        f"{batches['cpu_median']:.0f} / {batches['cpu_p99']:.0f} ms; {batches['count']:,} "
                        "transactions"))
    return rows


def realtime_rows(r: dict[str, Any]) -> list[Row]:
    f = r["results"]
    limit = r["targets"]["cdc_p99_seconds"]

    def spread(m: dict[str, Any]) -> str:
        return " / ".join(fmt(m.get(k), 2) for k in ("p50", "p90", "p99", "max")) + " s"

    rows = []
    labels = {"cdc": "close -> order activated and written back, CDC on (default schedule and limits)",
              "cdc-nue": "the same, the Nue limiter at the --fast-nue-rate (limits.nue)",
              "poll": "close -> written back, poll alone",
              "webhook": "Nue subscription change: webhook -> account write"}
    for mode, label in labels.items():
        m = f.get(mode)
        if m is None:
            continue
        if mode == "poll":
            label += f" every {m['poll_seconds']:g} s" + ("" if m["poll_seconds"] == 60 else " (NOT the default 60 s)")
        pace = m["pace_seconds"]
        count = m.get("deals", m.get("samples"))
        rows.append(Row(f"{label}: p50 / p90 / p99 / max ({m['measured']} of {count}, one every {pace:g} s)",
                        spread(m), "" if mode == "poll" else f"p99 < {limit:g} s",
                        None if mode == "poll" else (m["p99"] is not None and m["p99"] < limit)))
        if "deals" in m:
            rows.append(Row(f"{mode}: deals without exactly one activated, written-back Nue order / end not just "
                            "after a PATCH answer", f"{m['failures']} / {m['end_not_after_a_patch']}", "0 / 0",
                            m["failures"] == 0 and not m["end_not_after_a_patch"]))
            rows.append(Row(f"{mode}: Nue calls per deal (all flows)", f"{m['nue_calls_per_deal']:g}: "
                            f"{_by(m['nue_call_kinds'])}"))
        else:
            rows.append(Row("webhook: samples failed", fmt(m["failures"]), "0", m["failures"] == 0))
    rows += [Row("why missed", note) for note in r.get("notes", [])]
    return rows


def under_load_rows(r: dict[str, Any]) -> list[Row]:
    f, t = r["results"], r["targets"]
    ing, lo, idle = f["ingest"], f["latency_under_load"], f["latency_idle"]
    rd, ref = ing["revdaemon"], ing["reference"]
    drain = f["drain_seconds"]

    def spread(m: dict[str, Any]) -> str:
        return " / ".join(fmt(m.get(k), 2) for k in ("p50", "p90", "p99", "max")) + " s"

    rows = [Row("burst drained by the real daemon (Salesforce capped)",
                f"{f['events_sent']:,} notifications ({f['events_stored']:,} unique) from {f['customers']:,} customers "
                f"in {'TIMED OUT' if drain is None else f'{drain:.1f} s'} at {f['cap_per_second']} calls/s; "
                f"{f['drain_salesforce_calls_admitted']} Salesforce calls admitted (floor "
                f"{f['drain_floor_seconds']:.1f} s); daemon / simulators CPU "
                f"{fmt(f['daemon_cpu_percent_of_one_core_in_drain'])}% / "
                f"{fmt(f['simulators_cpu_percent_of_one_core_in_drain'])}% of a core, the machine's CPUs "
                f"{fmt(f['machine_cpu_busy_percent_in_drain'])}% busy"),
            Row("ingest during the drain: wrk at each, the same seconds",
                f"{ing['seconds']:.1f} s, -c{ing['connections']}; burst pending {ing['burst_pending_at_start']} -> "
                f"{ing['burst_pending_at_end']}", "inside the drain", bool(ing["drain_running_at_end"])),
            Row("revdaemon: events/s durably stored; p50 / p99 ack",
                f"{fmt(rd['events_per_second'])}; {rd['p50_ms']:.1f} / {rd['p99_ms']:.1f} ms"),
            Row("reference (bare ASGI + SQLite): events/s; p50 / p99 ack",
                f"{fmt(ref['events_per_second'])}; {ref['p50_ms']:.1f} / {ref['p99_ms']:.1f} ms"),
            Row("ratio revdaemon / reference during the drain, events/s", f"{ing['ratio']:.2f}x",
                f">= {t['ingest_ratio']:g}x", ing["ratio"] >= t["ingest_ratio"]),
            Row(f"webhook 202 -> account write during the drain: p50 / p90 / p99 / max ({lo['measured']} of "
                f"{lo['samples']} written before the drain ended, one every {lo['pace_seconds']:g} s)", spread(lo),
                f"p99 < {t['p99_under_load_seconds']:g} s",
                lo["p99"] is not None and lo["p99"] < t["p99_under_load_seconds"]),
            Row("samples written after the drain ended (not under load): count; p50 / p99",
                f"{lo['finished_after_drain']}; {fmt(lo['after_drain']['p50'], 2)} / "
                f"{fmt(lo['after_drain']['p99'], 2)} s"),
            Row(f"webhook 202 -> account write, inbox idle: p50 / p90 / p99 / max ({idle['measured']} of "
                f"{idle['samples']})", spread(idle), f"p99 < {t['p99_idle_seconds']:g} s",
                idle["p99"] is not None and idle["p99"] < t["p99_idle_seconds"]),
            Row("samples failed (during the drain / idle)", f"{lo['failures']} / {idle['failures']}", "0 / 0",
                lo["failures"] == idle["failures"] == 0)]
    rows += [Row("why missed", note) for note in f.get("notes", [])]
    return rows


TABLES: dict[str, Callable[[dict[str, Any]], list[Row]]] = {
    "sandbox_throughput": sandbox_rows, "salesforce_upsert": upsert_rows, "webhook_ingest": ingest_rows,
    "burst_drain": burst_rows, "baseline_simple_salesforce": baseline_rows, "burst_scale": scale_rows,
    "burst_uncapped": uncapped_rows, "idle": idle_rows,
    "replicas": replicas_rows, "lost_answers": lost_answers_rows, "retention": retention_rows,
    "realtime_latency": realtime_rows, "under_load": under_load_rows,
}


def verdict(met: bool | None) -> str:
    return "" if met is None else "met" if met else "missed"


def render(outcomes: list[Outcome], quick: bool) -> str:
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = ["# Benchmark results", "",
             f"- date: {now}",
             f"- machine: {os.cpu_count()} CPUs (nproc {len(os.sched_getaffinity(0))}), {platform.machine()}, "
             f"{platform.system()} {platform.release()}",
             f"- Python {platform.python_version()} ({sys.executable})",
             f"- mode: {'--quick (shorter runs; targets unchanged)' if quick else 'full'}; "
             "written by `bench/run_all.py`", ""]
    summary = ["| benchmark | arguments | exit | time | targets met | missed |",
               "| --- | --- | --- | --- | --- | --- |"]
    sections: list[str] = []
    for outcome in outcomes:
        args = " ".join(outcome.args) or "(defaults)"
        rows: list[Row] = []
        problem = ""
        if outcome.result is None:
            problem = f"no JSON line (exit {outcome.exit_code}): no figures"
        else:
            try:
                rows = TABLES[outcome.name](outcome.result)
            except (KeyError, TypeError, ValueError, ZeroDivisionError) as exc:
                problem = f"unreadable JSON line ({exc!r})"
        met = sum(1 for r in rows if r.met is True)
        missed = sum(1 for r in rows if r.met is False) + (1 if problem else 0)
        summary.append(f"| {outcome.name} | `{args}` | {outcome.exit_code} | {outcome.seconds:.0f} s | {met} | "
                       f"{missed} |")
        sections += [f"## {outcome.name}", "", f"`python bench/{script(outcome.name)} {args}`: exit "
                     f"{outcome.exit_code}, {outcome.seconds:.0f} s", ""]
        if problem:
            sections += [f"**failed**: {problem}", ""]
        if rows:
            sections += ["| figure | value | target | met? |", "| --- | --- | --- | --- |"]
            sections += [f"| {r.figure} | {r.value} | {r.target} | {verdict(r.met)} |" for r in rows]
            sections.append("")
    return "\n".join([*lines, *summary, "", *sections])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="shorter runs: fewer events, 20 s idle")
    parser.add_argument("--output", type=Path, default=BENCH / "RESULTS.md")
    parser.add_argument("--only", nargs="+", choices=list(SCRIPTS), help="run only these benchmarks")
    args = parser.parse_args()
    outcomes = []
    with tempfile.TemporaryDirectory() as tmp:
        burst_json = Path(tmp) / "burst_drain.json"
        for name, (full, quick) in SCRIPTS.items():
            if args.only and name not in args.only:
                continue
            extra = []
            if name == "baseline_simple_salesforce" and burst_json.exists():
                extra = ["--revdaemon-json", str(burst_json)]  # the same burst, drained once in this run
            outcome = run(name, quick if args.quick else full, extra)
            if name == "burst_drain" and outcome.result is not None:
                burst_json.write_text(json.dumps(outcome.result))
            outcomes.append(outcome)
    args.output.write_text(render(outcomes, args.quick))
    print(f"\nwrote {args.output}")
    failed = [o.name for o in outcomes if o.result is None]
    if failed:
        sys.exit(f"no figures from: {', '.join(failed)}")


if __name__ == "__main__":
    main()
