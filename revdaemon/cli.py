"""The `revdaemon` command: run the daemon, check a config, show status, run the demo.

Exit codes: 0 ok; 1 runtime failure (an API that cannot be reached or refuses the credentials included);
2 bad usage or bad configuration; 3 the state store refused (for example a database written by a newer
revdaemon); 4 `check --online` found refused credentials or missing fields; 5 `reconcile` found drift.
Every failure is one line on stderr; `revdaemon --debug ...` shows the traceback as well.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import anyio
import click
from rich.console import Console
from rich.table import Table

from revdaemon import __version__, service, terminal
from revdaemon.config import CONFIG_ENV_VAR, MetricsListen, Mode, Settings, load_settings
from revdaemon.domain.budget import DEFERRED_WORK, Priority, describe_seconds
from revdaemon.engine.lookups import Fetcher
from revdaemon.engine.pollers import Poller
from revdaemon.engine.preview import Preview
from revdaemon.engine.supervisor import run_daemon
from revdaemon.engine.sync_status import SyncStatus
from revdaemon.errors import (
    AuthExpired,
    AuthFailed,
    ConfigError,
    ListenError,
    RecordNotFound,
    StoreError,
    StoreMissing,
    SyncError,
    Unsent,
)
from revdaemon.flows.base import Flow
from revdaemon.ops.health import daemon_tag
from revdaemon.ops.logging import configure_logging
from revdaemon.store import Store, is_postgres_url, open_store
from revdaemon.store.ids import STORE_ID_MAX, is_store_id, parse_store_id
from revdaemon.store.records import StoreSummary
from revdaemon.store.states import EventStatus

EXIT_RUNTIME = 1
EXIT_CONFIG = 2
EXIT_STORE = 3
EXIT_ONLINE = 4  # check --online: an API refused the credentials, or mapped fields are missing
EXIT_DRIFT = 5  # reconcile: some accounts do not match Nue

F = TypeVar("F", bound=Callable[..., Any])


def config_option(func: F) -> F:
    return click.option(
        "--config",
        "config_path",
        type=click.Path(dir_okay=False, path_type=Path),
        envvar=CONFIG_ENV_VAR,
        default=None,
        help=f"Path of config.yaml (default: ${CONFIG_ENV_VAR} or ./config.yaml).",
    )(func)


def json_option(func: F) -> F:
    return click.option("--json", "as_json", is_flag=True, help="Print one JSON object for scripts.")(func)


class StoreIdType(click.ParamType):  # type: ignore[type-arg]  # generic only in recent click; pyproject allows 8.1
    """A stored row's id, bounded as the store's ids are (revdaemon/store/ids.py): a number no row can have is
    refused here, as bad usage, before the store is opened (the driver could not even send it)."""

    name = "id"

    def __init__(self, kind: str) -> None:
        self.kind = kind

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int) and is_store_id(value):
            return value
        found = parse_store_id(value.strip()) if isinstance(value, str) else None
        if found is not None:
            return found
        shown = value if isinstance(value, str) and len(value) <= 30 else "that"
        self.fail(f"no such {self.kind}: {shown!r} cannot be an id (a whole number from 1 to {STORE_ID_MAX})",
                  param, ctx)


def _load(config_path: Path | None, *, credentials: bool = True) -> Settings:
    """The settings, or exit 2 with every bad key. `credentials=False` for a command that reads the state store
    and calls no API: it then works without the API secrets (an operator without the service's credentials)."""
    try:
        settings = load_settings(config_path, credentials=credentials)
    except ConfigError as exc:
        click.echo(f"revdaemon: {exc}", err=True)
        sys.exit(EXIT_CONFIG)
    click.get_current_context().meta[_SETTINGS] = settings  # for the URL in an API failure's line
    return settings


def _setup_logging(settings: Settings) -> None:
    configure_logging(level=settings.log.level, fmt=settings.log.format, secret_values=settings.secret_values())


_SETTINGS = "revdaemon.settings"
_SYSTEMS = {"salesforce": "Salesforce", "nue": "Nue"}


def api_failure(exc: SyncError, settings: Settings | None) -> str:
    """One line for an API call that failed: which API, at which URL, and why."""
    system = exc.context.system
    url = None
    if settings is not None:
        if system == "nue":
            url = settings.nue.base_url
        elif exc.context.operation == "login" or settings.salesforce.instance_url is None:
            url = settings.salesforce.login_url
        else:
            url = settings.salesforce.instance_url
    reason = exc.message
    if isinstance(exc, AuthFailed | AuthExpired):
        verdict = "refused the credentials"
    elif isinstance(exc, Unsent):
        verdict = "cannot be reached"
        # the connectors say "cannot reach <where>: <why>"; the line already says both
        reason = reason.split(": ", 1)[1] if reason.startswith("cannot reach ") and ": " in reason else reason
    else:
        verdict = f"failed ({exc.context.operation})"
    return f"{_SYSTEMS.get(system, system)} at {url or '(no URL configured)'} {verdict}: {reason}"


def _leaf(exc: BaseException) -> BaseException:
    """The one error inside task groups' exception groups, if there is exactly one."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


class _Main(click.Group):
    """The command group with the one top-level handler: an error no command handled becomes one line and its
    exit code (README, the module docstring); only --debug shows the traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except Exception as raised:
            if ctx.params.get("debug"):
                raise
            exc = _leaf(raised)
            settings = ctx.meta.get(_SETTINGS)
            if isinstance(exc, SyncError):
                message, code = api_failure(exc, settings), EXIT_RUNTIME
            elif isinstance(exc, ConfigError):
                message, code = str(exc), EXIT_CONFIG
            elif isinstance(exc, StoreError):
                message, code = f"state store: {exc}", EXIT_STORE
            elif isinstance(exc, ListenError):
                message, code = str(exc), EXIT_RUNTIME
            else:
                message = f"unexpected error: {type(exc).__name__}: {exc} (run with --debug for the traceback)"
                code = EXIT_RUNTIME
            click.echo(f"revdaemon: {message}", err=True)
            sys.exit(code)


@click.group(cls=_Main, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show the traceback of an unexpected error.")
@click.version_option(__version__, "--version", prog_name="revdaemon", message="%(prog)s %(version)s")
def main(debug: bool) -> None:
    """revdaemon keeps Nue and Salesforce in sync."""


@main.command()
def version() -> None:
    """Print the version."""
    click.echo(f"revdaemon {__version__}")


@main.command()
@config_option
@click.option("--stop-after", type=float, default=None, hidden=True, help="Stop after N seconds.")
@click.option("--dry-run", is_flag=True, help="Plan and log every write without sending any.")
@click.option("--shadow", is_flag=True,
              help="Shadow mode (as mode: shadow): run every trigger and plan every write, record them, send none.")
def run(config_path: Path | None, stop_after: float | None, dry_run: bool, shadow: bool) -> None:
    """Run the daemon in the foreground until SIGTERM or SIGINT."""
    settings = _load(config_path)
    if shadow:
        settings = settings.model_copy(update={"mode": Mode.SHADOW})
    _setup_logging(settings)
    try:
        anyio.run(lambda: run_daemon(settings, stop_after=stop_after, dry_run=dry_run, config_path=config_path))
    except StoreError as exc:
        click.echo(f"revdaemon: state store: {exc}", err=True)
        sys.exit(EXIT_STORE)
    except ConfigError as exc:  # found only at start: a replica id another live box uses
        click.echo(f"revdaemon: {exc}", err=True)
        sys.exit(EXIT_CONFIG)
    except ListenError as exc:
        click.echo(f"revdaemon: {exc}", err=True)
        sys.exit(EXIT_RUNTIME)


@main.command()
@config_option
@json_option
@click.option("--online", is_flag=True, help="Also log in to both APIs, compare describe with the flows' fields, and "
                                           "check that this box is ready to go live.")
@click.option("--public-url", default=None, help="With --online: the public https URL Nue reaches the listener at "
                                                 "(its /healthz must answer from this box's daemon).")
def check(config_path: Path | None, as_json: bool, online: bool, public_url: str | None) -> None:
    """Validate the configuration and the state store without starting the daemon."""
    settings = _load(config_path)
    _setup_logging(settings)  # to stderr: stdout carries the report
    try:
        version = anyio.run(_store_version, settings)
    except StoreError as exc:
        click.echo(f"revdaemon: state store: {exc}", err=True)
        sys.exit(EXIT_STORE)
    report: dict[str, Any] = {
        "config": "ok",
        "state_database": settings.store_display,
        "schema_version": version,
        "salesforce": {"login_url": settings.salesforce.login_url, "auth": settings.salesforce.auth.value,
                       "api_version": settings.salesforce.api_version},
        "nue": {"base_url": settings.nue.base_url, "webhook_auth": settings.nue.webhook_auth.value},
        "listener": f"{settings.listener.host}:{settings.listener.port}",
        "metrics": _metrics_where(settings),
        "mapped_objects": sorted(settings.mapping.objects),
    }
    if online:
        report["online"] = anyio.run(online_check, settings, public_url)
    failed = online and not report["online"]["ok"]
    if as_json:
        click.echo(json.dumps(report))
        if failed:
            sys.exit(EXIT_ONLINE)
        return
    console = terminal.console()
    table = Table(title="revdaemon check", show_header=False)
    table.add_row("configuration", "[green]ok[/green]")
    state = f"schema v{version}" if version is not None else "not created yet: the daemon creates it on first start"
    table.add_row("state database", f"{report['state_database']} ({state})")
    table.add_row("salesforce", f"{settings.salesforce.login_url} auth={settings.salesforce.auth.value} "
                                f"v{settings.salesforce.api_version}")
    table.add_row("nue", f"{settings.nue.base_url} webhooks={settings.nue.webhook_auth.value}")
    table.add_row("listener", str(report["listener"]))
    table.add_row("metrics", str(report["metrics"]))
    table.add_row("mapped objects", ", ".join(report["mapped_objects"]) or "(none)")
    if online:
        result = report["online"]
        for system in ("salesforce", "nue"):
            table.add_row(f"{system} login", "[red]failed (below)[/red]" if result[system] != "ok" else "ok")
        for flow, missing in result["missing_fields"].items():
            table.add_row(f"flow {flow}", "[red]parked: missing " + "; ".join(
                f"{obj}.{', '.join(fields)}" for obj, fields in missing.items()) + "[/red]")
        if not result["missing_fields"] and result["salesforce"] == "ok":
            table.add_row("flows", "[green]every mapped field exists[/green]")
        for line in result["checks"]:
            verdict = "[green]ok[/green]" if line["ok"] else "[red]problem[/red]"
            fix = f" — fix: {line['fix']}" if line["fix"] else ""
            table.add_row(line["name"], f"{verdict} {line['detail']}{fix}")
    console.print(table)
    for system in ("salesforce", "nue") if online else ():
        if report["online"][system] != "ok":  # one unwrapped line each: the API, its URL and the reason
            click.echo(f"revdaemon: {report['online'][system]}", err=True)
    if failed:
        sys.exit(EXIT_ONLINE)


async def online_check(settings: Settings, public_url: str | None = None) -> dict[str, Any]:
    """Log in to both APIs, compare describe with the fields each flow reads and writes, and the go-live lines:
    the setup plan, the integration user, the webhook, the clock, the store (setup/golive.py)."""
    import httpx

    from revdaemon.cli_setup import required_by
    from revdaemon.engine.clients import build_clients
    from revdaemon.engine.schema import SchemaGuard
    from revdaemon.engine.supervisor import default_flows, schema_checked
    from revdaemon.limits import RetryPolicy
    from revdaemon.setup import golive
    from revdaemon.setup.plan import compare
    from revdaemon.setup.salesforce import describe_objects

    retry = RetryPolicy(max_attempts=2, max_total=20)
    result: dict[str, Any] = {"salesforce": "not tried", "nue": "not tried", "missing_fields": {}}
    checks: list[golive.Check] = []
    async with httpx.AsyncClient() as http:
        salesforce, nue = build_clients(settings, http, retry, budget_share=1.0)
        try:
            await salesforce.limits()
            result["salesforce"] = "ok"
            result["missing_fields"] = await SchemaGuard(salesforce, schema_checked(settings)).check_all()
            required = required_by(settings)
            rows = compare(required, await describe_objects(salesforce, sorted({r.object for r in required})))
            checks.append(golive.fields_check(rows))
            checks.append(await golive.integration_user_check(salesforce, all(row.ok for row in rows)))
            checks.append(await golive.change_data_capture_check(settings, salesforce))
        except SyncError as exc:
            result["salesforce"] = api_failure(exc, settings)
        try:
            await nue.products()
            result["nue"] = "ok"
            checks.append(golive.Check("nue api key", True, "reads; whether it may create orders and customers "
                                       "shows at the first create (Nue's API does not say) [assumed]"))
        except SyncError as exc:
            result["nue"] = api_failure(exc, settings)
        checks.append(await golive.webhook_check(settings, default_flows(settings), public_url, http))
        checks.append(await golive.clock_check(settings, http))
    checks.append(golive.store_check(settings))
    result["checks"] = [check.as_dict() for check in checks]
    result["ok"] = (result["salesforce"] == "ok" and result["nue"] == "ok" and not result["missing_fields"]
                    and all(check.ok for check in checks))
    return result


# --- operators' commands: the same service functions the console will call -----------------------------


def _run_with_store(settings: Settings, action: Callable[[Any], Any], *, read_only: bool) -> Any:
    async def go() -> Any:
        store = await open_store(settings.store_target, read_only=read_only)
        try:
            return await action(store)
        finally:
            await store.close()

    try:
        return anyio.run(go)
    except StoreMissing as exc:
        click.echo(f"revdaemon: {exc}", err=True)
        sys.exit(EXIT_STORE)
    except RecordNotFound as exc:
        click.echo(f"revdaemon: {exc}", err=True)
        sys.exit(EXIT_RUNTIME)
    except StoreError as exc:
        click.echo(f"revdaemon: state store: {exc}", err=True)
        sys.exit(EXIT_STORE)


def _emit(rows: Any, as_json: bool, columns: tuple[str, ...], title: str) -> None:
    if as_json:
        click.echo(json.dumps(rows, default=str))
        return
    console = terminal.console()
    if isinstance(rows, dict):
        table = Table(title=title, show_header=False)
        for key, value in rows.items():
            table.add_row(key, json.dumps(value, default=str, indent=1) if isinstance(value, dict | list)
                          else str(value))
        console.print(table)
        return
    table = Table(title=f"{title} ({len(rows)})")
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*(str(row.get(c, "")) if row.get(c) is not None else "" for c in columns))
    console.print(table)


@main.group()
def events() -> None:
    """Inbox events: what arrived and what became of it."""


@events.command("list")
@config_option
@json_option
@click.option("--status", type=click.Choice([s.value for s in EventStatus]), default=None)
@click.option("--limit", type=click.IntRange(1, STORE_ID_MAX), default=50, show_default=True)
def events_list(config_path: Path | None, as_json: bool, status: str | None, limit: int) -> None:
    """The newest events, optionally of one status."""
    settings = _load(config_path, credentials=False)
    rows = _run_with_store(settings, lambda s: service.list_events(s, status=status, limit=limit), read_only=True)
    _emit(rows, as_json, ("id", "type", "status", "attempts", "received_at", "about", "key", "last_error"), "events")


@events.command("show")
@config_option
@json_option
@click.argument("event_id", type=StoreIdType("event"))
def events_show(config_path: Path | None, as_json: bool, event_id: int) -> None:
    """One event with its payload and every external write it caused."""
    _show_one(config_path, as_json, lambda s: service.show_event(s, event_id), _print_event)


def _show_one(config_path: Path | None, as_json: bool, read: Callable[[Any], Any],
              printer: Callable[[Console, dict[str, Any]], None]) -> None:
    """One row read from the store: as JSON, or as `printer` lays it out for a person."""
    shown = _run_with_store(_load(config_path, credentials=False), read, read_only=True)
    if as_json:
        click.echo(json.dumps(shown, default=str))
        return
    printer(terminal.console(), shown)


def _print_event(console: Console, event: dict[str, Any]) -> None:
    """The event in words, its payload on one line, and the writes it caused as a table (--json has it all)."""
    console.print(f"event {event['id']}: {event['type']} from {event['source']}, {event['status']} after "
                  f"{event['attempts']} attempt(s); received {event['received_at']}", highlight=False)
    console.print(f"key: {event['key']}", highlight=False, markup=False)
    if event.get("about"):
        console.print(f"about: {event['about']}", highlight=False, markup=False)
    if event.get("last_error"):
        console.print(f"last error: {event['last_error']}", highlight=False, markup=False)
    if event["status"] == "received" and event.get("next_attempt_at"):
        console.print(f"next attempt: {event['next_attempt_at']}", highlight=False)
    console.print(f"payload: {json.dumps(event['payload'], default=str)}", highlight=False, markup=False)
    writes = Table(title=f"writes it caused ({len(event['writes'])})", title_justify="left")
    for column in ("at", "system", "operation", "target", "about", "outcome", "record"):
        writes.add_column(column)
    for write in event["writes"]:
        writes.add_row(*(str(write.get(key) or "") for key in ("at", "system", "operation", "target", "about",
                                                                "outcome", "record_ref")))
    console.print(writes)


@main.group()
def shadow() -> None:
    """Shadow mode: what revdaemon would have written while it wrote nothing, and going live from it."""


@shadow.command("report")
@config_option
@json_option
@click.option("--since", type=click.DateTime(formats=["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S"]), default=None,
              help="Only what was planned since then (UTC).")
def shadow_report(config_path: Path | None, as_json: bool, since: datetime | None) -> None:
    """Per flow and object, what would have been created or updated, the conflicts and dead letters it would
    have opened, and what a person should look at before going live."""
    settings = _load(config_path, credentials=False)
    when = since.replace(tzinfo=UTC) if since else None
    report = _run_with_store(settings, lambda s: service.shadow_report(s, since=when), read_only=True)
    if as_json:
        click.echo(json.dumps(report, default=str))
        return
    _print_shadow_report(terminal.console(), report, settings)


def _print_shadow_report(console: Console, report: dict[str, Any], settings: Settings) -> None:
    promoted = report.get("promoted")
    state = (f"promoted to live on {promoted['at']} by {promoted['actor']} (go-live cut-off {promoted['go_live']})"
             if promoted else f"mode: {settings.mode.value}")
    console.print(f"shadow report: {report['events']} event(s) planned from {report['first_at'] or '-'} to "
                  f"{report['last_at'] or '-'}; {state}", highlight=False, markup=False)
    counts = Table(title="would write (per flow and object)", title_justify="left")
    for column in ("flow", "system", "object", "create", "update", "activate", "delete"):
        counts.add_column(column)
    for row in report["counts"]:
        counts.add_row(*(str(row[c]) for c in ("flow", "system", "object", "create", "update", "activate", "delete")))
    console.print(counts)
    if report["left_alone"]:
        console.print("left alone (nothing to write): " + ", ".join(f"{flow} {n}" for flow, n in
                                                                   report["left_alone"].items()), highlight=False)
    for title, key, columns in (("would open conflicts", "conflicts", ("flow", "event_key", "reason")),
                                ("would become dead letters", "dead_letters", ("flow", "target", "why")),
                                ("look at these before going live", "flags", ("flow", "target", "flag"))):
        table = Table(title=f"{title} ({len(report[key])})", title_justify="left")
        for column in columns:
            table.add_column(column)
        for row in report[key]:
            table.add_row(*(str(row.get(c) or "") for c in columns))
        console.print(table)
    if not promoted:
        console.print("go live: revdaemon shadow promote [--go-live YYYY-MM-DD]", highlight=False, markup=False)


@shadow.command("promote")
@config_option
@json_option
@click.option("--go-live", "go_live", type=click.DateTime(formats=["%Y-%m-%d"]), default=None,
              help="The go-live cut-off (deals won before it are history); default: today.")
@click.option("--actor", default=lambda: os.environ.get("USER", "operator"), show_default="$USER")
def shadow_promote(config_path: Path | None, as_json: bool, go_live: datetime | None, actor: str) -> None:
    """Go live: a running daemon's workers write from their next claim. Events already shadowed are not replayed
    (their writes were never sent, and the state may have moved since); set mode: live in config.yaml."""
    settings = _load(config_path, credentials=False)
    done = _run_with_store(settings, lambda s: service.promote_shadow(
        s, actor=actor, go_live=go_live.date() if go_live else None), read_only=False)
    if as_json:
        click.echo(json.dumps(done, default=str))
        return
    if done["already"]:
        click.echo(f"already promoted on {done['at']} by {done['actor']} (go-live cut-off {done['go_live']})")
        return
    click.echo(f"promoted: revdaemon writes from now on (go-live cut-off {done['go_live']}); "
               "set mode: live in config.yaml so a restart stays live")


@main.group("dead-letters")
def dead_letters() -> None:
    """Records an API refused, with its own error; replay them once fixed."""


@dead_letters.command("list")
@config_option
@json_option
@click.option("--all", "include_replayed", is_flag=True, help="Include letters already replayed.")
@click.option("--code", "error_code", default=None, metavar="CODE",
              help="Only letters with this error code (e.g. INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST).")
def dead_letters_list(config_path: Path | None, as_json: bool, include_replayed: bool, error_code: str | None) -> None:
    """Dead letters not yet replayed (or all), optionally of one error code."""
    settings = _load(config_path, credentials=False)
    rows = _run_with_store(settings, lambda s: service.list_dead_letters(s, include_replayed=include_replayed,
                                                                         error_code=error_code), read_only=True)
    _emit(rows, as_json, ("id", "event_id", "system", "operation", "about", "error_code", "status", "error"),
          "dead letters")


@dead_letters.command("show")
@config_option
@json_option
@click.argument("letter_id", type=StoreIdType("dead letter"))
def dead_letters_show(config_path: Path | None, as_json: bool, letter_id: int) -> None:
    """One dead letter: the API's error verbatim, how to fix it, and the record that was sent."""
    _show_one(config_path, as_json, lambda s: service.show_dead_letter(s, letter_id), _print_dead_letter)


def _print_dead_letter(console: Console, letter: dict[str, Any]) -> None:
    """Who and what, the API's error as it came, the fix, the sent record field by field (--json has it all)."""
    state = f"replayed {letter['replayed_at']}" if letter.get("replayed_at") else "open"
    console.print(f"dead letter {letter['id']} ({state}): {letter['system']} refused {letter['operation']}, record "
                  f"{letter.get('record_ref') or '-'}, event {letter.get('event_id') or '-'}, at "
                  f"{letter['created_at']}", highlight=False, markup=False)
    if letter.get("about"):
        console.print(f"about: {letter['about']}", highlight=False, markup=False)
    code, text = letter.get("error_code"), letter["error"]
    if code and text.startswith(code):  # the code once, not twice
        text = text[len(code):].lstrip(": ")
    head = " ".join(p for p in (code, f"(HTTP {letter['status']})" if letter.get("status") else None) if p)
    console.print(f"error: {head}: {text}" if head else f"error: {text}", highlight=False, markup=False)
    request = letter.get("request") or {}
    items = request.get("items") or []
    if len(items) > 1 or any(i.get("message") != letter["error"] for i in items):
        table = Table(title="the error's items", title_justify="left")
        for column in ("code", "message", "fields"):
            table.add_column(column)
        for item in items:
            table.add_row(str(item.get("code") or ""), str(item.get("message") or ""),
                          ", ".join(item.get("fields") or ()))
        console.print(table)
    if letter.get("fix"):
        console.print(f"fix: {letter['fix']}", highlight=False, markup=False)
    sent = request.get("sent")
    if sent:
        values = sent.get("fields") or sent.get("payload") or {}
        console.print(f"what was sent: {sent.get('kind')} of {sent.get('target')}", highlight=False, markup=False)
        table = Table()
        table.add_column("field")
        table.add_column("value sent")
        for name, value in values.items():  # null as null: a field sent empty is part of the story
            table.add_row(name, value if isinstance(value, str) else json.dumps(value, default=str))
        console.print(table)
    elif request.get("traceback"):
        console.print("what was sent: nothing (revdaemon failed before sending; its traceback is in the log)",
                      highlight=False)
    else:
        console.print("what was sent: not recorded (a letter from before revdaemon kept it, or no write was made)",
                      highlight=False)
    if not letter.get("replayed_at"):
        console.print(f"replay: revdaemon dead-letters replay {letter['id']} --dry-run, then without --dry-run",
                      highlight=False, markup=False)


@dead_letters.command("replay")
@config_option
@json_option
@click.argument("letter_ids", type=StoreIdType("dead letter"), nargs=-1)
@click.option("--all", "replay_all", is_flag=True, help="Replay every open dead letter.")
@click.option("--code", "error_code", default=None, metavar="CODE",
              help="Replay every open dead letter with this error code.")
@click.option("--dry-run", is_flag=True, help="Print what the replay would write, field by field; send nothing.")
@click.option("--remap", is_flag=True, help="Plan with the current mapping, not the version each event first ran "
              "with (with --dry-run: show the writes under both).")
@click.option("--actor", default=lambda: os.environ.get("USER", "operator"), show_default="$USER")
def dead_letters_replay(config_path: Path | None, as_json: bool, letter_ids: tuple[int, ...],
                        replay_all: bool, error_code: str | None, dry_run: bool, remap: bool, actor: str) -> None:
    """Put dead letters' events back in the inbox (the daemon retries them), each with the mapping version it
    first ran with unless --remap."""
    if sum((bool(letter_ids), replay_all, error_code is not None)) != 1:
        raise click.UsageError("give dead letter ids, --all, or --code CODE")
    if error_code is not None:
        settings = _load(config_path, credentials=False)
        rows = _run_with_store(settings, lambda s: service.list_dead_letters(s, limit=10_000, error_code=error_code),
                               read_only=True)
        if not rows:
            raise click.UsageError(f"no open dead letter has the error code {error_code}")
        letter_ids = tuple(sorted(row["id"] for row in rows))
    settings = _load(config_path, credentials=dry_run)  # only a dry run calls the APIs
    if dry_run:
        _setup_logging(settings)

        async def plan(store: Store) -> Any:
            from revdaemon.engine.mappings import FlowVersions
            from revdaemon.engine.supervisor import default_flows

            ids = list(letter_ids) or [d["id"] for d in await service.list_dead_letters(store, limit=10_000)]

            async def diff(flows: list[Flow], fetcher: Fetcher, status: SyncStatus) -> Preview:
                versions = await FlowVersions.load(store, settings, flows, default_flows, register=False)
                return await service.preview_replay(store, ids, flows, fetcher, versions=versions, remap=remap,
                                                    sync_status=status)

            return await _with_engine(settings, diff, store)

        _print_preview(_run_with_store(settings, plan, read_only=True), as_json)
        return
    rows = _run_with_store(settings, lambda s: service.replay_dead_letters(s, None if replay_all else list(letter_ids),
                                                                           actor=actor, remap=remap), read_only=False)
    _emit(rows, as_json, ("id", "type", "status", "key"), "replayed")


def _cell(value: Any) -> str:
    return "-" if value is None else str(value)


async def _with_engine(settings: Settings, action: Callable[[list[Flow], Fetcher, SyncStatus], Awaitable[Any]],
                       store: Store | None = None) -> Any:
    """Run `action` with the configured flows, a fetcher on fresh API clients and the sync status fields the
    executor would add (for dry-run diffs); with the store, the fetcher knows the last synced values, so a
    planned conflict shows as one."""
    import httpx

    from revdaemon.engine.clients import build_clients
    from revdaemon.engine.supervisor import build_sync_status, default_flows
    from revdaemon.limits import RetryPolicy

    async with httpx.AsyncClient() as http:
        salesforce, nue = build_clients(settings, http, RetryPolicy(max_attempts=3, max_total=60))
        return await action(default_flows(settings), Fetcher(salesforce, nue, store), build_sync_status(settings))


def _preview_json(preview: Preview) -> dict[str, Any]:
    """Every record's field-level diff, and the totals the text form ends with."""
    return {**dataclasses.asdict(preview), "writes": preview.writes, "fields_changed": preview.fields_changed,
            "warnings": preview.warnings}


def _print_preview(preview: Preview, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(_preview_json(preview), default=str))
        return
    console = terminal.console()
    for shown in preview.events:
        console.print(f"[bold]{shown.event_key}[/bold] ({shown.flow}): {shown.outcome}"
                      + (f" · mapping {shown.mapping}" if shown.mapping else "")
                      + ("" if shown.used else " · for comparison only: this replay does not write it")
                      + (f" - {shown.note}" if shown.note else ""), markup=True, highlight=False)
        for write in shown.writes:
            table = Table(title=f"{write.system}: {write.action} {write.target}", title_justify="left")
            for column in ("field", "now", "after"):
                table.add_column(column)
            for change in write.fields:
                table.add_row(change.field, _cell(change.current), _cell(change.planned),
                              style=None if change.changes else "dim")
            console.print(table)
            for warning in write.warnings:
                console.print(f"warning: Salesforce would refuse this again: {warning}", highlight=False,
                              markup=False)
    console.print(f"dry run: {preview.writes} write(s), {preview.fields_changed} field change(s); nothing was sent"
                  + (f"; {preview.warnings} write(s) would be refused as describe stands" if preview.warnings else "")
                  + (f"; not checked against describe: {preview.unchecked}" if preview.unchecked else ""),
                  highlight=False, markup=False)


@main.group()
def mappings() -> None:
    """Mapping versions: each distinct mapping config.yaml has had, as the daemon stored it at start."""


def _mapping_text(settings: Settings) -> str:
    from revdaemon.engine.mappings import mapping_text

    return mapping_text(settings)


@mappings.command("list")
@config_option
@json_option
def mappings_list(config_path: Path | None, as_json: bool) -> None:
    """Every stored mapping version; * marks the one config.yaml holds now."""
    settings = _load(config_path, credentials=False)
    rows = _run_with_store(settings, lambda s: service.list_mappings(s, _mapping_text(settings)), read_only=True)
    if as_json:
        click.echo(json.dumps(rows))
        return
    _emit([{**row, "current": "*" if row["current"] else None} for row in rows], False,
          ("version", "hash", "created_at", "current"), "mapping versions")
    if not any(row["current"] for row in rows):
        click.echo("the mapping in config.yaml is not stored yet: the daemon stores it as a new version at its "
                   "next start")


@mappings.command("show")
@config_option
@json_option
@click.argument("version")
def mappings_show(config_path: Path | None, as_json: bool, version: str) -> None:
    """The text of one mapping version (a number, or `current` for config.yaml's)."""
    settings = _load(config_path, credentials=False)
    shown = _run_with_store(settings, lambda s: service.show_mapping(s, version, _mapping_text(settings)),
                            read_only=True)
    if as_json:
        click.echo(json.dumps(shown))
        return
    click.echo(f"# mapping {shown['version']}, sha256 {shown['hash']}")
    click.echo(shown["text"], nl=False)


@mappings.command("diff")
@config_option
@json_option
@click.argument("a")
@click.argument("b")
def mappings_diff(config_path: Path | None, as_json: bool, a: str, b: str) -> None:
    """A unified diff of two mapping versions (numbers, or `current`)."""
    settings = _load(config_path, credentials=False)
    diff = _run_with_store(settings, lambda s: service.diff_mappings(s, a, b, _mapping_text(settings)),
                           read_only=True)
    if as_json:
        click.echo(json.dumps(diff))
    elif diff["same"]:
        click.echo(f"{diff['a']} and {diff['b']} are the same mapping")
    else:
        click.echo(diff["diff"], nl=False)


@main.group()
def conflicts() -> None:
    """Disagreements a person decides."""


@conflicts.command("list")
@config_option
@json_option
@click.option("--all", "include_resolved", is_flag=True, help="Include resolved conflicts.")
def conflicts_list(config_path: Path | None, as_json: bool, include_resolved: bool) -> None:
    """Open conflicts (or all)."""
    settings = _load(config_path, credentials=False)
    rows = _run_with_store(settings, lambda s: service.list_conflicts(s, include_resolved=include_resolved),
                           read_only=True)
    _emit(rows, as_json, ("id", "flow", "about", "record_ref", "status", "resolution", "reason"), "conflicts")


@conflicts.command("show")
@config_option
@json_option
@click.argument("conflict_id", type=StoreIdType("conflict"))
def conflicts_show(config_path: Path | None, as_json: bool, conflict_id: int) -> None:
    """One conflict with both sides' values, the differing ones marked."""
    _show_one(config_path, as_json, lambda s: service.show_conflict(s, conflict_id), _print_conflict)


def _print_conflict(console: Console, conflict: dict[str, Any]) -> None:
    """The conflict in words and its fields side by side, the differing ones marked (--json has it all)."""
    decided = f", {conflict['resolution']} by {conflict['resolved_by']}" if conflict.get("resolution") else ""
    console.print(f"conflict {conflict['id']} ({conflict['status']}{decided}): flow {conflict['flow']}, record "
                  f"{conflict['record_ref']}, event {conflict['event_id']}, since {conflict['created_at']}",
                  highlight=False, markup=False)
    if conflict.get("about"):
        console.print(f"about: {conflict['about']}", highlight=False, markup=False)
    console.print(f"why: {conflict['reason']}", highlight=False, markup=False)
    fields = Table(title="fields (* differ)", title_justify="left")
    for column in ("", "field", "Nue", "Salesforce", "last synced"):
        fields.add_column(column)
    for field in conflict["fields"]:
        values = ("" if field.get(side) is None else str(field[side]) for side in ("nue", "salesforce", "synced"))
        fields.add_row("*" if field["differs"] else "", field["field"], *values)
    console.print(fields)
    if conflict.get("comment"):
        console.print(f"comment: {conflict['comment']}", highlight=False, markup=False)
    if conflict["status"] == "open":
        console.print(f"decide: revdaemon conflicts resolve {conflict['id']} --take nue|salesforce|skip [--dry-run]",
                      highlight=False, markup=False)


@conflicts.command("resolve")
@config_option
@json_option
@click.argument("conflict_ids", type=StoreIdType("conflict"), nargs=-1)
@click.option("--take", type=click.Choice(list(service.TAKES)), required=True)
@click.option("--flow", "flow_name", default=None, metavar="NAME",
              help="Instead of ids: every open conflict of this flow (as `conflicts list` names it).")
@click.option("--all-open", is_flag=True, help="Instead of ids: every open conflict.")
@click.option("--comment", default=None)
@click.option("--dry-run", is_flag=True, help="Print what resolving would write, field by field; store and send "
              "nothing.")
@click.option("--actor", default=lambda: os.environ.get("USER", "operator"), show_default="$USER")
def conflicts_resolve(config_path: Path | None, as_json: bool, conflict_ids: tuple[int, ...], take: str,
                      flow_name: str | None, all_open: bool, comment: str | None, dry_run: bool, actor: str) -> None:
    """Decide one conflict, or many the same way (ids, --flow or --all-open); each decision is recorded with who
    and when. One decided meanwhile by someone else is skipped, and the table says so."""
    if bool(conflict_ids) == bool(flow_name or all_open):
        raise click.UsageError("give conflict ids, or --flow NAME, or --all-open")
    settings = _load(config_path, credentials=dry_run)  # only a dry run calls the APIs
    single = conflict_ids[0] if len(conflict_ids) == 1 else None  # one id: the answer as it always was

    async def chosen(store: Store) -> list[int]:
        if conflict_ids:
            return list(conflict_ids)
        ids = await service.open_conflict_ids(store, flow=flow_name)
        if not ids:
            named = f" of flow {flow_name!r}" if flow_name else ""
            flows = sorted({row["flow"] for row in await service.list_conflicts(store, limit=10_000)})
            click.echo(f"no open conflicts{named}" + (f" (open ones are of: {', '.join(flows)})" if flows else ""),
                       err=True)
        return ids

    if dry_run:
        _setup_logging(settings)

        async def plan(store: Store) -> Any:
            from revdaemon.engine.mappings import FlowVersions
            from revdaemon.engine.supervisor import default_flows

            ids = await chosen(store)

            async def diff(flows: list[Flow], fetcher: Fetcher, status: SyncStatus) -> Preview:
                # Taking Nue plans each event again with the mapping version it is pinned to, as a worker will.
                versions = await FlowVersions.load(store, settings, flows, default_flows, register=False)
                if single is not None:
                    return await service.preview_resolution(store, single, take, flows, fetcher, versions=versions,
                                                            sync_status=status)
                return await service.preview_resolutions(store, ids, take, flows, fetcher, versions=versions,
                                                         sync_status=status)

            return await _with_engine(settings, diff, store)

        _print_preview(_run_with_store(settings, plan, read_only=True), as_json)
        return
    if single is not None:
        row = _run_with_store(settings, lambda s: service.resolve_conflict(s, single, take=take, actor=actor,
                                                                           comment=comment), read_only=False)
        _emit(row, as_json, (), f"conflict {single}")
        return

    async def resolve(store: Store) -> dict[str, Any]:
        return await service.resolve_conflicts(store, await chosen(store), take=take, actor=actor, comment=comment)

    _print_resolved(_run_with_store(settings, resolve, read_only=False), as_json)


def _print_resolved(done: dict[str, Any], as_json: bool) -> None:
    """Each selected conflict once: resolved, or skipped with why (decided meanwhile, or gone)."""
    if as_json:
        click.echo(json.dumps(done, default=str))
        return
    rows = [{"id": r["id"], "record_ref": r["record_ref"], "flow": r["flow"], "outcome": "resolved",
             "detail": ("skip" if r["resolution"] == "skip" else f"take {r['resolution']}") + f" by {r['resolved_by']}"}
            for r in done["resolved"]]
    rows += [{"id": r["id"], "record_ref": r["record_ref"], "flow": r["flow"], "outcome": "skipped",
              "detail": r["reason"]} for r in done["skipped"]]
    _emit(rows, False, ("id", "record_ref", "flow", "outcome", "detail"), f"conflicts, take {done['take']}")
    click.echo(f"{len(done['resolved'])} resolved, {len(done['skipped'])} skipped")


@main.command()
@config_option
@json_option
@click.option("--since", type=click.DateTime(formats=["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S"]), required=True,
              help="Read every change since this day (UTC) again.")
@click.option("--flow", type=click.Choice(sorted([*service.BACKFILL_SOURCES, *service.BACKFILL_ALIASES])),
              default=None, help="Only the changes that feed this flow. closed_won (closed_won_to_order) also "
              "orders deals won before the go-live cut-off, back to --since.")
@click.option("--dry-run", is_flag=True, help="Print what the backfill would write, field by field (for "
              "closed_won: each deal, whether it would be ordered and why); store and send nothing.")
def backfill(config_path: Path | None, as_json: bool, since: Any, flow: str | None, dry_run: bool) -> None:
    """Re-read changes since a date into the inbox (keys dedupe; no cursor moves); the daemon does the rest."""
    settings = _load(config_path)
    _setup_logging(settings)
    flow = service.backfill_flow(flow)
    if dry_run and flow == "closed_won_to_order":
        _print_won_deals(anyio.run(_won_deals_preview, settings, since.replace(tzinfo=UTC)), as_json)
        return
    if dry_run:
        _print_preview(anyio.run(_backfill_preview, settings, since.replace(tzinfo=UTC), flow), as_json)
        return
    stored = anyio.run(_backfill, settings, since.replace(tzinfo=UTC), flow, as_json)
    if as_json:
        click.echo(json.dumps({"stored": stored}))


async def _backfill_preview(settings: Settings, since: Any, flow: str | None) -> Preview:
    async def plan(pollers: list[Poller], flows: list[Flow], fetcher: Fetcher, status: SyncStatus) -> Preview:
        return await service.preview_backfill(pollers, since, flows, fetcher, flow=flow, sync_status=status)

    result: Preview = await _with_pollers(settings, plan)
    return result


async def _with_pollers(settings: Settings, action: Callable[[list[Poller], list[Flow], Fetcher, SyncStatus],
                                                            Awaitable[Any]]) -> Any:
    """Run a dry-run `action` with the pollers (the closed-won one first) on the state store read-only, or on
    an empty scratch store when nothing was synced yet."""
    import tempfile

    from revdaemon.engine.pollers import NUE_FIELDS, NuePoller, SalesforceClosedWonPoller
    from revdaemon.errors import StoreMissing

    scratch = None
    try:
        store = await open_store(settings.store_target, read_only=True)
    except StoreMissing:  # nothing synced yet: plan against an empty scratch store, removed after
        scratch = tempfile.TemporaryDirectory()
        store = await open_store(Path(scratch.name) / "scratch.sqlite3")
    try:
        async def run(flows: list[Flow], fetcher: Fetcher, status: SyncStatus) -> Any:
            salesforce, nue = fetcher.clients
            pollers: list[Poller] = [SalesforceClosedWonPoller(salesforce, store)]
            pollers += [NuePoller(type_name, nue, store) for type_name in NUE_FIELDS]
            return await action(pollers, flows, fetcher, status)

        return await _with_engine(settings, run, store)
    finally:
        await store.close()
        if scratch is not None:
            scratch.cleanup()


async def _won_deals_preview(settings: Settings, since: Any) -> list[dict[str, Any]]:
    from revdaemon.flows.closed_won_to_order import ClosedWonToOrderFlow

    async def assess(pollers: list[Poller], flows: list[Flow], fetcher: Fetcher, status: SyncStatus
                     ) -> list[dict[str, Any]]:
        flow = next((f for f in flows if isinstance(f, ClosedWonToOrderFlow)), None)
        if flow is None:
            raise click.UsageError("flows.closed_won is switched off: nothing would be ordered")
        return await service.assess_won_deals(pollers[0], since, flow, fetcher)

    result: list[dict[str, Any]] = await _with_pollers(settings, assess)
    return result


def _print_won_deals(rows: list[dict[str, Any]], as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps({"deals": rows}, default=str))
        return
    table = Table(title="won deals the backfill reads", title_justify="left")
    for column in ("opportunity", "name", "close date", "verdict", "reason"):
        table.add_column(column)
    for row in rows:
        table.add_row(row["opportunity"], str(row["name"] or ""), str(row["close_date"] or ""), row["verdict"],
                      row["reason"])
    console = terminal.console()
    console.print(table)
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["verdict"]] = counts.get(row["verdict"], 0) + 1
    console.print("dry run: " + (", ".join(f"{n} {verdict}" for verdict, n in sorted(counts.items())) or "no deals")
                  + "; nothing was stored or sent")


async def _backfill(settings: Settings, since: Any, flow: str | None, quiet: bool) -> dict[str, int]:
    import httpx
    from rich.progress import Progress, SpinnerColumn, TextColumn

    from revdaemon.engine.clients import build_clients
    from revdaemon.engine.pollers import NUE_FIELDS, NuePoller, SalesforceClosedWonPoller
    from revdaemon.limits import RetryPolicy

    retry = RetryPolicy(max_attempts=4, max_total=120)
    async with httpx.AsyncClient() as http:
        salesforce, nue = build_clients(settings, http, retry)
        store = await open_store(settings.store_target)
        try:
            # bulk priority: a backfill is the first work the budget planner holds back
            pollers: list[Poller] = [SalesforceClosedWonPoller(salesforce, store, priority=Priority.BULK)]
            pollers += [NuePoller(type_name, nue, store) for type_name in NUE_FIELDS]
            with Progress(SpinnerColumn(), TextColumn("{task.description}"), disable=quiet) as progress:
                tasks: dict[str, Any] = {}

                def show(name: str, count: int) -> None:
                    if name not in tasks:
                        tasks[name] = progress.add_task(name)
                    progress.update(tasks[name], description=f"{name}: {count} new events")

                return await service.backfill(store, pollers, since, flow=flow, on_progress=show)
        finally:
            await store.close()


@main.command()
@config_option
@json_option
@click.argument("destination", type=click.Path(dir_okay=False, path_type=Path))
def backup(config_path: Path | None, as_json: bool, destination: Path) -> None:
    """A consistent copy of the state database, safe while the daemon runs."""
    settings = _load(config_path, credentials=False)
    _emit(_run_with_store(settings, lambda s: service.backup(s, destination), read_only=True), as_json, (),
          "backup")


@main.command()
@config_option
@json_option
@click.option("--dry-run", is_flag=True, help="Count what would be pruned; change nothing.")
@click.option("--vacuum", is_flag=True, help="Then give the freed space back: SQLite rewrites its file (stop the "
              "daemon first: it holds the write lock throughout); PostgreSQL vacuums the pruned tables.")
@click.option("--actor", default=lambda: os.environ.get("USER", "operator"), show_default="$USER")
def prune(config_path: Path | None, as_json: bool, dry_run: bool, vacuum: bool, actor: str) -> None:
    """Prune what store.retention_days lets go now, in small batches, as the leader does nightly: done events'
    payloads (their keys stay), audit entries and settled intents of idempotent writes older than that."""
    if dry_run and vacuum:
        raise click.UsageError("--dry-run changes nothing: it cannot --vacuum")
    settings = _load(config_path, credentials=False)
    _setup_logging(settings)
    days = settings.store.retention_days
    alone = not is_postgres_url(settings.store_target)  # SQLite's VACUUM holds the write lock throughout
    result = _run_with_store(settings, lambda s: service.prune(s, days, dry_run=dry_run, vacuum=vacuum,
                                                               vacuum_alone=alone, actor=actor), read_only=dry_run)
    if as_json:
        click.echo(json.dumps(result))
        return
    if result["cutoff"] is None:
        click.echo("store.retention_days is 0: everything is kept")
    else:
        verb = "would be pruned" if dry_run else "pruned"
        click.echo(f"older than {days} days (before {result['cutoff']}), {verb}: "
                   f"{result['event_payloads']} done events' payloads (their keys stay), "
                   f"{result['write_intents']} write intents, {result['audit_entries']} audit entries")
    click.echo(f"store size: {_size(result['size_bytes_before'])} before, {_size(result['size_bytes_after'])} after"
               + ("" if vacuum or dry_run else " (the space freed is reused before the store grows; --vacuum gives it "
                  "back)"))


@main.command()
@config_option
@json_option
@click.option("--report", "report_only", is_flag=True, help="Only report the drift (the default).")
@click.option("--repair", is_flag=True, help="Also queue a repair for each account showing wrong figures.")
@click.option("--dry-run", is_flag=True, help="With --repair: print what each repair would write, field by field; "
              "queue and send nothing.")
def reconcile(config_path: Path | None, as_json: bool, report_only: bool, repair: bool, dry_run: bool) -> None:
    """Compare every Nue customer's MRR with its Salesforce account now (flow 8) and print the drift."""
    if report_only and repair:
        raise click.UsageError("--report and --repair exclude each other")
    if dry_run and not repair:
        raise click.UsageError("--dry-run previews a repair: use it with --repair")
    settings = _load(config_path)
    _setup_logging(settings)
    try:
        report, preview = anyio.run(_reconcile, settings, repair, dry_run)
    except StoreError as exc:
        click.echo(f"revdaemon: state store: {exc}", err=True)
        sys.exit(EXIT_STORE)
    if as_json:
        click.echo(json.dumps({**report.as_dict(), **({"dry_run": _preview_json(preview)} if preview else {})},
                              default=str))
    else:
        click.echo(report.as_text_table(only_drift=True))
        if preview is not None:
            _print_preview(preview, False)
    if report.drifted:
        sys.exit(EXIT_DRIFT)


async def _reconcile(settings: Settings, repair: bool, dry_run: bool = False) -> tuple[Any, Preview | None]:
    """The drift report; with `repair` the repairs queued, or with `dry_run` only their preview (what each
    would write now), nothing queued and nothing sent."""
    import httpx

    from revdaemon.engine.clients import build_clients
    from revdaemon.engine.reconcile import repair_targets
    from revdaemon.engine.supervisor import build_sync_status, default_flows, run_reconciliation
    from revdaemon.limits import RetryPolicy

    retry = RetryPolicy(max_attempts=3, max_total=60)
    async with httpx.AsyncClient() as http:
        salesforce, nue = build_clients(settings, http, retry)
        if dry_run:
            report = await run_reconciliation(settings, nue, salesforce, store=None, repair=False)
            # The repair events as they would be queued, planned by the current flows, as a worker will.
            preview = await service.preview_repairs(repair_targets(report.repairable), default_flows(settings),
                                                    Fetcher(salesforce, nue), sync_status=build_sync_status(settings))
            return report, preview
        # Only a repair writes to the state store (the queued events); a report reads the APIs alone.
        store = await open_store(settings.store_target) if repair else None
        try:
            return await run_reconciliation(settings, nue, salesforce, store=store, repair=repair), None
        finally:
            if store is not None:
                await store.close()


async def _store_version(settings: Settings) -> int | None:
    """The schema version of an existing state database, or None before the first start. Read-only:
    `check` must not create the file (a root-owned file would lock out the service's own user)."""
    try:
        store = await open_store(settings.store_target, read_only=True)
    except StoreMissing:
        return None
    try:
        return await store.schema_version()
    finally:
        await store.close()


@main.command()
@config_option
@json_option
def status(config_path: Path | None, as_json: bool) -> None:
    """Queue depths, cursors, open conflicts and dead letters from the state store; with the daemon
    running, also its readiness, each poll's last success, the Salesforce budget left, when it runs out at
    the recent rate and what the budget planner defers."""
    settings = _load(config_path, credentials=False)
    try:
        summary, replica_rows, active, footprint, mode = anyio.run(_summary, settings)
        drift = anyio.run(_drift, settings)
    except StoreMissing as exc:
        click.echo(f"revdaemon: {exc}")
        return
    except StoreError as exc:
        click.echo(f"revdaemon: state store: {exc}", err=True)
        sys.exit(EXIT_STORE)
    live, elsewhere = _store_daemon(settings, replica_rows)
    if as_json:
        click.echo(json.dumps({**_summary_json(summary), "mode": mode["mode"], "shadow": mode,
                               "store": footprint, "replicas": replica_rows,
                               "active_replica": active, "drift": drift,
                               "daemon": live, "other_daemon_on_listener": elsewhere}))
        return
    console = terminal.console()
    _print_summary(console, summary)
    console.print(_mode_line(mode), highlight=False, markup=False)
    _print_footprint(console, footprint)
    console.print(_drift_line(drift))
    _print_replicas(console, replica_rows, active)
    if elsewhere is not None:
        console.print(f"daemon: the one answering on {elsewhere} is not this store's (it is none of the replicas "
                      "above): its readiness and figures are not shown")
        return
    if live is None:
        console.print("daemon: not reachable on its listener (not running, or another port)")
        return
    console.print(f"daemon: ready={live['ready']}  Salesforce budget left: {live['salesforce_budget_remaining']}")
    _print_budget_plan(console, settings, live)
    for name, at in sorted(live["last_polls"].items()):
        console.print(f"  last poll {name}: {at or 'never'}")
    for topic, stream in sorted(live["streams"].items()):
        console.print(f"  {_stream_line(topic, stream)}")


def _stream_line(topic: str, stream: dict[str, Any]) -> str:
    """One change stream in words: its state since when, its lag, and a fall-back to LATEST if there was one."""
    line = f"change stream {topic}: {stream['state']} since {stream['since']}"
    if stream.get("lag_seconds") is not None:
        line += f", last event {stream['lag_seconds']:.1f} s after its commit"
    if stream.get("fell_back_at"):
        line += (f"; its replay id was refused at {stream['fell_back_at']}: it resubscribed from the newest event "
                 "and the poll read what it missed")
    return line


def _store_daemon(settings: Settings, replica_rows: list[dict[str, Any]]) -> tuple[dict[str, Any] | None,
                                                                                  str | None]:
    """The live figures of the daemon on the configured listener when it is one of this store's replicas (its
    /healthz tag matches a replica's id and pid), else None; and the listener's URL when a daemon answers there
    that is not (another store's, say a demo on the same port)."""
    live = _live_daemon(settings)
    if live is None:
        return None, None
    if live.get("daemon") in {daemon_tag(r["id"], r["pid"]) for r in replica_rows}:
        return live, None
    return None, _local_url(settings.listener.host, settings.listener.port)


def _live_daemon(settings: Settings) -> dict[str, Any] | None:
    """What only the running daemon knows, from its listener's /healthz and its /metrics (wherever
    metrics.listen serves them; without, the budget figures are None); None when it does not answer."""
    import re

    import httpx

    try:
        health = httpx.get(f"{_local_url(settings.listener.host, settings.listener.port)}/healthz", timeout=1.0).json()
    except (httpx.HTTPError, ValueError):
        return None
    try:
        metrics = httpx.get(f"{_metrics_base(settings)}/metrics", timeout=1.0).text \
            if settings.metrics.listen is not MetricsListen.OFF else ""
    except httpx.HTTPError:
        metrics = ""  # the daemon answers but its metrics listener does not: the figures stay unknown

    def sample(name: str, labels: str = "") -> float | None:
        found = re.search(rf"^revdaemon_{name}{re.escape(labels)} (\S+)$", metrics, re.M)
        return float(found[1]) if found else None

    return {"ready": health.get("ready"), "daemon": health.get("daemon"), "last_polls": health.get("last_polls", {}),
            "salesforce_budget_remaining": sample("api_budget_remaining", '{api="salesforce"}'),
            "salesforce_calls_per_minute": sample("api_usage_per_minute", '{api="salesforce"}'),
            "salesforce_exhaustion_seconds": sample("api_budget_exhaustion_seconds", '{api="salesforce"}'),
            "poll_interval_multiplier": sample("poll_interval_multiplier"),
            "deferred": [p.value for p in Priority if sample("work_deferred", f'{{kind="{p.value}"}}')],
            "nue_calls": sample("api_calls_total", '{api="nue"}'),
            "streams": {topic: {**state, "lag_seconds": sample("change_event_lag_seconds", f'{{topic="{topic}"}}')}
                        for topic, state in health.get("streams", {}).items()}}


def _metrics_where(settings: Settings) -> str:
    metrics = settings.metrics
    if metrics.listen is MetricsListen.ADMIN:
        return f"{metrics.host}:{metrics.port}"
    return "on the webhook listener" if metrics.listen is MetricsListen.WEBHOOK else "off"


def _local_url(host: str, port: int) -> str:
    """The URL this box reaches a listener of the daemon's at (one bound to every address: on loopback)."""
    return f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}"


def _metrics_base(settings: Settings) -> str:
    if settings.metrics.listen is MetricsListen.WEBHOOK:
        return _local_url(settings.listener.host, settings.listener.port)
    return _local_url(settings.metrics.host, settings.metrics.port)


def _print_budget_plan(console: Console, settings: Settings, live: dict[str, Any]) -> None:
    """The budget planner's view: when the allocation runs out at the recent rate, and what waits."""
    rate = live.get("salesforce_calls_per_minute")
    if rate is not None:
        console.print(f"  Salesforce: {rate:.1f} calls/min lately; allocation spent in "
                      f"{describe_seconds(live.get('salesforce_exhaustion_seconds'))}")
    deferred = [DEFERRED_WORK[Priority(kind)] for kind in live.get("deferred", [])]
    console.print(f"  polls at {live.get('poll_interval_multiplier') or 1:g}x their interval; deferred: "
                  f"{', '.join(deferred) or 'nothing'}")
    nue = settings.limits.nue
    console.print(f"  Nue: no daily allocation; {nue.requests_per_second:g} requests/s (token bucket), "
                  f"{int(live.get('nue_calls') or 0)} calls since start")


async def _summary(settings: Settings) -> tuple[StoreSummary, list[dict[str, Any]], dict[str, Any] | None,
                                           dict[str, Any], dict[str, Any]]:
    store = await open_store(settings.store_target, read_only=True)
    try:
        footprint = service.footprint_row(await store.footprint(), settings.store.retention_days)
        return (await store.summary(), await service.replicas(store), await service.active_replica(store), footprint,
                await service.mode_status(store, settings.mode.value))
    finally:
        await store.close()


def _mode_line(mode: dict[str, Any]) -> str:
    """The mode in words: shadow since when with how many writes planned, or live (and promoted from shadow)."""
    promoted = mode["promoted"]
    if promoted:
        return (f"mode: live (promoted from shadow on {promoted['at']} by {promoted['actor']}; go-live cut-off "
                f"{promoted['go_live']})")
    if mode["mode"] == "shadow":
        return (f"mode: shadow since {mode['first_at']} ({mode['writes']} writes planned; revdaemon shadow report)"
                if mode["ran"] else "mode: shadow (nothing planned yet; revdaemon shadow report)")
    if mode["ran"]:  # config says live, but a `run --shadow` planned writes and was never promoted: it may still run
        return (f"mode: live as configured, but shadow mode (run --shadow) planned {mode['writes']} writes since "
                f"{mode['first_at']} and was never promoted; a daemon started with --shadow still writes nothing "
                "(revdaemon shadow report, revdaemon shadow promote)")
    return "mode: live"


async def _drift(settings: Settings) -> dict[str, Any] | None:
    """The latest reconciliation report's drift left (repaired customers not counted); None before the first."""
    store = await open_store(settings.store_target, read_only=True)
    try:
        view = await service.reconciliation_view(store, settings.state_dir / settings.flows.reconciliation.report_file)
    finally:
        await store.close()
    return view["drift"] if view else None


def _drift_line(drift: dict[str, Any] | None) -> str:
    if drift is None:
        return "reconciliation: no report yet (the nightly run, or `revdaemon reconcile`)"
    line = f"reconciliation of {drift['generated_at'] or '?'}: {drift['drifted']} customer(s) drifted"
    if drift["repaired"]:
        line += f" ({drift['repaired']} repaired since, not counted)"
    amounts = [f"{'no live subscription' if c == '?' else c} {a}" for c, a in drift["difference"].items()]
    return line + (f"; MRR difference (Salesforce minus Nue): {', '.join(amounts)}" if amounts else "")


def _size(size: int | None) -> str:
    if size is None:
        return "unknown"
    if size < 1024:
        return f"{size} bytes"
    scaled = size / 1024
    for unit in ("KB", "MB"):
        if scaled < 1024:
            return f"{scaled:,.1f} {unit}"
        scaled /= 1024
    return f"{scaled:,.1f} GB"


def _print_footprint(console: Console, footprint: dict[str, Any]) -> None:
    """The store's size, the oldest rows it keeps and the retention that bounds them."""
    days = footprint["retention_days"]
    retention = f"retention {days} days" if days else "retention off: everything kept"
    console.print(f"store: {_size(footprint['size_bytes'])} on disk; {retention} (store.retention_days)")
    if footprint["free_bytes"]:
        console.print(f"  free inside the file (reused before it grows): {_size(footprint['free_bytes'])}")
    console.print(f"  oldest event kept: {footprint['oldest_event_at'] or 'none'} (every event's key is kept)")
    console.print(f"  oldest audit entry: {footprint['oldest_audit_at'] or 'none'}")
    console.print(f"  done events' payloads pruned before: {footprint['payloads_pruned_before'] or 'none yet'}")


def _print_replicas(console: Console, rows: list[dict[str, Any]], active: dict[str, Any] | None) -> None:
    """The daemon processes sharing this store: which one is active (workers, executor, scheduler), since when,
    which stand by, which are gone."""
    table = Table(title="replicas")
    for column in ("id", "host", "pid", "last heartbeat", "role"):
        table.add_column(column)
    for r in rows:
        role = ("active (runs the workers, the executor and the scheduler)" if r["leader"]
                else "standby (takes webhooks)") if r["alive"] else "gone (no heartbeat lately)"
        table.add_row(r["id"], r["host"], str(r["pid"]), r["last_heartbeat"][:19], role)
    if not rows:
        table.add_row("(no daemon has run yet)", "", "", "", "")
    console.print(table)
    console.print(_active_line(active))


def _active_line(active: dict[str, Any] | None) -> str:
    if active is None:
        return "active replica: none yet (no daemon has led)"
    state = "" if active["alive"] else " (not heard from lately: another replica takes over within seconds)"
    return f"active replica: {active['id']} since {active['since'][:19]} (leadership epoch {active['epoch']}){state}"


def _summary_json(summary: StoreSummary) -> dict[str, Any]:
    return {
        "queue_depths": {status.value: count for status, count in summary.queue_depths.items()},
        "cursors": [{**asdict(c), "updated_at": c.updated_at.isoformat()} for c in summary.cursors],
        "open_conflicts": summary.open_conflicts,
        "dead_letters": summary.dead_letters,
        "oldest_due_at": summary.oldest_due_at.isoformat() if summary.oldest_due_at else None,
    }


def _print_summary(console: Console, summary: StoreSummary) -> None:
    queues = Table(title="inbox")
    queues.add_column("status")
    queues.add_column("events", justify="right")
    for state, count in summary.queue_depths.items():
        queues.add_row(state.value, str(count))
    console.print(queues)
    cursors = Table(title="poll cursors")
    cursors.add_column("name")
    cursors.add_column("value")
    cursors.add_column("updated")
    for cursor in summary.cursors:
        cursors.add_row(cursor.name, cursor.value, cursor.updated_at.isoformat(timespec="seconds"))
    if not summary.cursors:
        cursors.add_row("(none yet)", "", "")
    console.print(cursors)
    console.print(f"open conflicts: {summary.open_conflicts}    dead letters: {summary.dead_letters}")


@main.command()
@click.option("--sf-port", type=int, default=0, show_default=True, help="Salesforce simulator port (0: any free).")
@click.option("--nue-port", type=int, default=0, show_default=True, help="Nue simulator port (0: any free).")
@click.option("--pubsub-port", type=int, default=0, show_default=True,
              help="The Salesforce simulator's Pub/Sub API (gRPC) port (0: any free).")
@click.option("--seed", type=int, default=1, show_default=True, help="Seed of the data set and of random faults.")
@click.option("--webhook-target", "webhook_targets", multiple=True,
              help="URL the Nue simulator delivers webhooks to (repeatable).")
@click.option("--key-dir", type=click.Path(file_okay=False, path_type=Path), default=Path("state/sandbox"),
              show_default=True, help="Where the JWT signing key for the Salesforce simulator is written.")
@click.option("--brownfield", type=click.IntRange(min=0), default=0, show_default=True,
              help="Add this many won deals of a tenant that already has orders (e.g. 1000); their go-live "
              "cut-off is printed as brownfield_won_since.")
@json_option
def sandbox(sf_port: int, nue_port: int, pubsub_port: int, seed: int, webhook_targets: tuple[str, ...], key_dir: Path,
            brownfield: int, as_json: bool) -> None:
    """Run the Salesforce and Nue simulators on loopback until interrupted."""
    from revdaemon.sandbox.runner import create_sandbox

    try:
        box = create_sandbox(key_dir=key_dir, seed=seed, sf_port=sf_port, nue_port=nue_port, pubsub_port=pubsub_port,
                             webhook_targets=list(webhook_targets), brownfield=brownfield)
    except OSError as exc:
        click.echo(f"revdaemon: cannot start the sandbox: {exc}", err=True)
        sys.exit(EXIT_RUNTIME)
    info = box.info()
    if as_json:
        click.echo(json.dumps(info), nl=True)
    else:
        console = terminal.console()
        table = Table(title=f"revdaemon sandbox (seed {seed})", show_header=False)
        for system in ("salesforce", "nue"):
            for key, value in info[system].items():
                table.add_row(f"{system}.{key}", str(value))
        console.print(table)
        console.print("Ctrl-C stops both.")
    sys.stdout.flush()
    try:
        anyio.run(_serve_until_signal, box)
    finally:
        box.close()


async def _serve_until_signal(box: Any) -> None:
    import signal

    async with anyio.create_task_group() as tg:
        tg.start_soon(box.serve)
        with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async for _ in signals:
                tg.cancel_scope.cancel()
                return


@main.command()
@config_option
@click.option("--console", "with_console", is_flag=True,
              help="Also start the web console, print its URL and a login token made for this run, leave the "
                   "conflict, dead letter and drift for you to decide there, and keep running until Ctrl-C "
                   "(make demo CONSOLE=1).")
def demo(config_path: Path | None, with_console: bool) -> None:
    """Run the sandbox simulators and the daemon together through a short scripted story: a go-live on a tenant
    with history (shadow mode first, its report, then promotion), a visible sync, then a conflict, a dead letter
    and a drift, each decided through the service layer."""
    from revdaemon.demo import run_demo

    settings = _load(config_path)
    # Errors only: the story shows its conflict and dead letter in tables, the warnings would repeat them.
    configure_logging(level="error", fmt=settings.log.format, secret_values=settings.secret_values())
    try:
        summary = anyio.run(lambda: run_demo(settings, with_console=with_console))
    except StoreError as exc:
        click.echo(f"revdaemon: state store: {exc}", err=True)
        sys.exit(EXIT_STORE)
    if not with_console and (summary.get("events_waiting") or summary.get("dead_letters")
                             or summary.get("conflicts_open")):
        sys.exit(EXIT_RUNTIME)


@main.group()
def setup() -> None:
    """Prepare an org or a tenant for revdaemon."""


@setup.command("salesforce")
@config_option
@json_option
@click.option("--apply", "apply_changes", is_flag=True,
              help="Create what is missing and grant the integration user access (default: only show the plan).")
@click.option("--assign", is_flag=True,
              help="With --apply: assign the permission set to the user revdaemon logs in as.")
@click.option("--assign-to", default=None, metavar="USERNAME",
              help="With --apply: assign the permission set to this user (an administrator runs setup, the "
                   "integration user syncs).")
@click.option("--export", "export_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Write the definitions as a Salesforce DX source folder instead of reading the org.")
def setup_salesforce(config_path: Path | None, as_json: bool, apply_changes: bool, assign: bool,
                     assign_to: str | None, export_dir: Path | None) -> None:
    """Compare what revdaemon needs in Salesforce with the org; exit 4 while anything is missing or wrong."""
    from revdaemon.cli_setup import EXIT_APPLY_FAILED, EXIT_NOT_READY
    from revdaemon.cli_setup import setup_salesforce as run

    settings = _load(config_path, credentials=export_dir is None)  # an export reads no org
    _setup_logging(settings)
    outcome = run(settings, as_json=as_json, apply_changes=apply_changes, assign=assign, assign_to=assign_to,
                  export_dir=export_dir)
    sys.exit({EXIT_NOT_READY: EXIT_ONLINE, EXIT_APPLY_FAILED: EXIT_RUNTIME}.get(outcome, outcome))


if __name__ == "__main__":
    main()
