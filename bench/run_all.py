"""Run every benchmark under bench/ in order and write bench/RESULTS.md: a table per benchmark of
figure / value / target / met?, with the date and the machine.

Each script runs as its own process (its output is shown as it comes); its last `{"benchmark": ...}` line
is what goes into the table. A target not reached says "missed"; a script that fails or prints no JSON line
is reported as such, and the others still run. The targets are issue 12's and are not relaxed in --quick.
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
    "burst_drain": ([], ["--events", "2000", "--customers", "100"]),
    "baseline_simple_salesforce": ([], ["--events", "2000", "--customers", "100"]),
    "idle": ([], ["--seconds", "20", "--warmup", "5"]),
}


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


def run(name: str, args: list[str]) -> Outcome:
    command = [sys.executable, str(BENCH / f"{name}.py"), *args]
    print(f"\n=== {name} {' '.join(args)}".rstrip(), flush=True)
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


def burst_rows(r: dict[str, Any]) -> list[Row]:
    f = r["results"]
    return [Row("notifications sent (unique stored)", f"{f['events_sent']:.0f} ({f['events_stored']:.0f})"),
            Row("left undrained / dead", f"{f['events_left']:.0f} / {f['dead']:.0f}", "0 / 0",
                f["events_left"] == 0 and f["dead"] == 0),
            Row("drain time", f"{f['drain_seconds']:.2f} s"),
            Row("events/s", fmt(f["events_per_second"])),
            Row("Salesforce calls", fmt(f["salesforce_calls"])),
            Row("Salesforce calls per event", fmt(f["salesforce_calls_per_event"], 4), "<= 0.02",
                at_most(f["salesforce_calls_per_event"], 0.02)),
            Row("Salesforce calls per account written", fmt(f["salesforce_calls_per_account_written"], 3)),
            Row("Nue calls per event", fmt(f["nue_calls_per_event"], 4), "<= 0.05",
                at_most(f["nue_calls_per_event"], 0.05)),
            Row("peak RSS", f"{f['peak_rss_mb']:.0f} MB")]


def baseline_rows(r: dict[str, Any]) -> list[Row]:
    f, c = r["results"], r.get("comparison") or {}
    rows = [Row("baseline: notifications processed", fmt(f["events_sent"])),
            Row("baseline: drain time", f"{f['drain_seconds']:.2f} s"),
            Row("baseline: events/s", fmt(f["events_per_second"])),
            Row("baseline: Salesforce calls per event", fmt(f["salesforce_calls_per_event"], 3)),
            Row("baseline: Salesforce calls per account written", fmt(f["salesforce_calls_per_account_written"], 1)),
            Row("baseline: Nue calls per event", fmt(f["nue_calls_per_event"], 3)),
            Row("baseline: errors", fmt(f["errors"]), "0", f["errors"] == 0)]
    rd = r.get("revdaemon") or {}
    if rd:
        rows.append(Row("revdaemon run: left undrained / dead", f"{rd['events_left']:.0f} / {rd['dead']:.0f}",
                        "0 / 0", rd["events_left"] == 0 and rd["dead"] == 0))
    if c:
        rows += [Row("revdaemon: Salesforce calls per notification sent",
                     fmt(c["revdaemon_salesforce_calls_per_event"], 4)),
                 Row("ratio revdaemon / baseline, Salesforce calls per event", fmt(c["salesforce_calls_ratio"], 4)),
                 Row("fewer Salesforce calls than the baseline", f"{c['fewer_salesforce_calls_x']:.0f}x", ">= 50x",
                     c["fewer_salesforce_calls_x"] >= 50),
                 Row("ratio revdaemon / baseline, Nue calls per event", fmt(c["nue_calls_ratio"], 4)),
                 Row("ratio revdaemon / baseline, drain time", fmt(c["drain_seconds_ratio"], 3))]
    else:
        rows.append(Row("fewer Salesforce calls than the baseline", "not measured (no revdaemon run)", ">= 50x",
                        False))
    return rows


def idle_rows(r: dict[str, Any]) -> list[Row]:
    f = r["results"]
    return [Row("window", f"{f['seconds']:.0f} s, {f['samples']:.0f} samples"),
            Row("peak RSS", f"{f['peak_rss_mb']:.1f} MB", "< 80 MB", f["peak_rss_mb"] < 80),
            Row("mean RSS", f"{f['mean_rss_mb']:.1f} MB"),
            Row("CPU (one core)", f"{f['cpu_percent']:.2f}% ({f['cpu_seconds']:.2f} s)"),
            Row("poller calls during the window (Salesforce / Nue)",
                f"{f['salesforce_calls']:.0f} / {f['nue_calls']:.0f}")]


TABLES: dict[str, Callable[[dict[str, Any]], list[Row]]] = {
    "sandbox_throughput": sandbox_rows, "salesforce_upsert": upsert_rows, "webhook_ingest": ingest_rows,
    "burst_drain": burst_rows, "baseline_simple_salesforce": baseline_rows, "idle": idle_rows,
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
        sections += [f"## {outcome.name}", "", f"`python bench/{outcome.name}.py {args}`: exit {outcome.exit_code}, "
                     f"{outcome.seconds:.0f} s", ""]
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
    for name, (full, quick) in SCRIPTS.items():
        if args.only and name not in args.only:
            continue
        outcomes.append(run(name, quick if args.quick else full))
    args.output.write_text(render(outcomes, args.quick))
    print(f"\nwrote {args.output}")
    failed = [o.name for o in outcomes if o.result is None]
    if failed:
        sys.exit(f"no figures from: {', '.join(failed)}")


if __name__ == "__main__":
    main()
