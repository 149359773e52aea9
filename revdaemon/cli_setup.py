"""`revdaemon setup salesforce` (its options are in cli.py): what the config needs in the org, checked, created
(--apply) or exported."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anyio
import click
import httpx
from rich.table import Table

from revdaemon import terminal
from revdaemon.config import Settings
from revdaemon.engine.schema import flow_fields
from revdaemon.engine.supervisor import schema_checked
from revdaemon.errors import SyncError
from revdaemon.setup.export import dx_source
from revdaemon.setup.plan import PlanRow, Requirement, Status, compare, requirements
from revdaemon.setup.salesforce import Action, apply, describe_objects

STATUS_STYLE = {Status.OK: "green", Status.MISSING: "red", Status.READ_ONLY: "yellow", Status.WRONG: "red"}


def required_by(settings: Settings) -> list[Requirement]:
    """Every object and field the enabled flows and the sync status fields use, from the config."""
    needed = {part.name: flow_fields(part) for part in schema_checked(settings)}
    return requirements(needed, settings.mapping.lookups)


EXIT_NOT_READY = -1  # something is missing or wrong (the CLI's EXIT_ONLINE)
EXIT_APPLY_FAILED = -2  # an --apply step failed (the CLI's EXIT_RUNTIME)


def setup_salesforce(settings: Settings, *, as_json: bool, apply_changes: bool, assign: bool,
                     export_dir: Path | None, assign_to: str | None = None) -> int:
    """`revdaemon setup salesforce` (cli.py holds its options): 0 when ready or exported, else one of the codes
    above."""
    required = required_by(settings)
    if export_dir is not None:
        files = dx_source(required)
        for relative, text in files.items():
            target = export_dir / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text, encoding="utf-8")
        click.echo(f"wrote {len(files)} files to {export_dir} (deploy with: sf project deploy start "
                   f"--source-dir {export_dir / 'force-app'})")
        return 0
    try:
        rows, actions = anyio.run(plan_and_apply, settings, required, apply_changes, assign, assign_to)
    except SyncError as exc:
        click.echo(f"revdaemon: salesforce: {exc.message}", err=True)
        return EXIT_NOT_READY
    problems = [row for row in rows if not row.ok]
    if as_json:
        click.echo(json.dumps({"ok": not problems, "actions": [vars(a) for a in actions],
                               "plan": [_as_dict(row) for row in rows]}))
    else:
        _print(rows, actions)
    if any(not action.ok for action in actions):
        return EXIT_APPLY_FAILED
    return EXIT_NOT_READY if problems else 0


async def plan_and_apply(settings: Settings, required: list[Requirement], apply_changes: bool,
                         assign: bool, assign_to: str | None = None) -> tuple[list[PlanRow], list[Action]]:
    """The plan as the org is; with `apply_changes`, what was done and the plan as the org is after it."""
    from revdaemon.engine.clients import build_clients
    from revdaemon.limits import RetryPolicy

    objects = sorted({r.object for r in required})
    async with httpx.AsyncClient() as http:
        client, _ = build_clients(settings, http, RetryPolicy(max_attempts=2, max_total=20), budget_share=1.0)
        rows = compare(required, await describe_objects(client, objects))
        actions: list[Action] = []
        # Assigning is asked for even when the org looks ready: it may look so only to the administrator running it.
        if apply_changes and (any(row.applies for row in rows) or assign or assign_to):
            actions = await apply(client, rows, required, assign=assign, assign_to=assign_to)
            rows = compare(required, await describe_objects(client, objects))  # as the org is now
    return rows, actions


def _as_dict(row: PlanRow) -> dict[str, Any]:
    return {"name": row.requirement.name, "status": row.status.value, "detail": row.detail, "fix": row.fix,
            "needed_by": list(row.requirement.needed_by), "revdaemons_own": row.requirement.definition is not None}


def _print(rows: list[PlanRow], actions: list[Action]) -> None:
    """What was done, then only what is not ready (--json has every row)."""
    console = terminal.console()
    for action in actions:
        mark = "[green]done[/green]" if action.ok else "[red]failed[/red]"
        console.print(f"{mark} {action.what}" + (f": {action.detail}" if action.detail else ""))
    problems = [row for row in rows if not row.ok]
    if problems:
        table = Table(title="not ready in Salesforce")
        for column in ("object / field", "status", "needed by", "what to do"):
            table.add_column(column, overflow="fold")
        for row in problems:
            style = STATUS_STYLE[row.status]
            detail = f" ({row.detail})" if row.detail else ""
            table.add_row(row.requirement.name, f"[{style}]{row.status.value}[/{style}]{detail}",
                          ", ".join(row.requirement.needed_by), row.fix)
        console.print(table)
    console.print(f"{len(rows) - len(problems)} of {len(rows)} objects and fields ready" + (
        "" if not problems else f"; {len(problems)} to fix (`revdaemon setup salesforce --apply` fixes those "
                                "marked so)"))
