"""Surviving schema changes: which flows can run against the org's fields right now.

At start (and on `revdaemon check`) every enabled flow's Salesforce fields are compared with describe.
A flow missing a field is parked: its events wait in the inbox (they are neither processed nor
dead-lettered), one alert is logged, and the other flows keep running. At run time, an INVALID_FIELD or
INVALID_TYPE answer means the org changed under us: describe is read again and the flow is parked the
same way. A parked flow is checked again every `RECHECK_SECONDS` and resumes by itself once the fields
are back (or the mapping is fixed and the daemon restarted).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import structlog

from revdaemon.connectors.salesforce import SalesforceClient
from revdaemon.errors import SyncError
from revdaemon.flows.base import Flow
from revdaemon.ops.alerts import Alerter, AlertKind

log = structlog.get_logger("revdaemon.schema")

# INVALID_FIELD_FOR_INSERT_UPDATE is left out: field-level security or a create-only field also give it,
# describe still lists the field, and the flow would park and resume for ever; it is a record's error.
SCHEMA_ERROR_CODES = frozenset({"INVALID_FIELD", "INVALID_TYPE"})
RECHECK_SECONDS = 300.0
PARK_FIX = ("`revdaemon setup salesforce` names each field, absent or hidden from the integration user, and "
            "--apply creates or grants revdaemon's own; or fix the mapping")


class Checked(Protocol):
    """What the guard checks: a flow, or anything else that names the Salesforce fields it writes (the sync
    status fields) in `salesforce_fields`."""

    @property
    def name(self) -> str: ...


def flow_fields(flow: Checked) -> Mapping[str, frozenset[str]]:
    """The Salesforce fields a flow reads or writes, by object (a flow without the attribute needs none)."""
    fields: Mapping[str, frozenset[str]] = getattr(flow, "salesforce_fields", {})
    return fields


def missing_fields(needed: Mapping[str, frozenset[str]], described: Mapping[str, set[str] | None]
                   ) -> dict[str, list[str]]:
    """Object -> the needed fields describe does not list (an object Salesforce lacks: all of them)."""
    missing: dict[str, list[str]] = {}
    for sobject, names in needed.items():
        have = described.get(sobject)
        absent = sorted(names) if have is None else sorted(n for n in names if n not in have and n != "Id")
        if absent:
            missing[sobject] = absent
    return missing


@dataclass
class SchemaGuard:
    salesforce: SalesforceClient
    flows: Sequence[Checked]
    clock: Callable[[], float] = time.monotonic
    parked: dict[str, str] = field(default_factory=dict)  # flow name -> why
    _checked_at: dict[str, float] = field(default_factory=dict)
    alerter: Alerter | None = None

    async def check_all(self, *, refresh: bool = False) -> dict[str, dict[str, list[str]]]:
        """Describe every object the flows touch; park the flows with missing fields, resume the others."""
        objects = sorted({o for flow in self.flows for o in flow_fields(flow)})
        described: dict[str, set[str] | None] = {}
        for sobject in objects:
            try:
                described[sobject] = await self.salesforce.field_names(sobject, refresh=refresh)
            except SyncError as exc:
                if exc.context.status == 404 or exc.context.error_code == "NOT_FOUND":
                    described[sobject] = None
                else:
                    raise
        report: dict[str, dict[str, list[str]]] = {}
        for flow in self.flows:
            missing = missing_fields(flow_fields(flow), described)
            self._checked_at[flow.name] = self.clock()
            if missing:
                report[flow.name] = missing
                # Describe is the integration user's: a field hidden by field-level security is missing to it too.
                self._park(flow.name, "missing in Salesforce, or not visible to the integration user: " + "; ".join(
                    f"{sobject}.{', '.join(names)}" for sobject, names in missing.items()))
            elif flow.name in self.parked:
                del self.parked[flow.name]
                log.warning("flow_resumed", flow=flow.name, reason="the fields it needs are back")
        return report

    def is_parked(self, flow_name: str) -> str | None:
        return self.parked.get(flow_name)

    async def recheck_due(self) -> None:
        """Look again at parked flows whose last check is old enough (they may resume)."""
        due = [name for name in self.parked if self.clock() - self._checked_at.get(name, 0.0) >= RECHECK_SECONDS]
        if due:
            try:
                await self.check_all(refresh=True)
            except SyncError as exc:
                # Describe unavailable: stay parked and try again at the next interval, not at every batch.
                for name in due:
                    self._checked_at[name] = self.clock()
                log.warning("schema_recheck_failed", flows=due, error=exc.message)

    async def on_error(self, flow_name: str, error: SyncError) -> bool:
        """True when `error` says the org's schema changed: the flow is then parked, not its record failed."""
        if error.context.system != "salesforce" or error.context.error_code not in SCHEMA_ERROR_CODES:
            return False
        self._park(flow_name, f"Salesforce refused a field: {error.message}")
        return True

    def _park(self, flow_name: str, reason: str) -> None:
        if self.parked.get(flow_name) != reason:
            # An alert once per new reason; repeats stay quiet until something changes.
            log.error("flow_parked", flow=flow_name, reason=reason,
                      fix=PARK_FIX)
            if self.alerter is not None:
                self.alerter.alert(AlertKind.FLOW_PARKED, f"{flow_name}:{reason}", reason, flow=flow_name,
                                   fix=PARK_FIX)
        self.parked[flow_name] = reason
        self._checked_at[flow_name] = self.clock()


def describe_targets(flows: Iterable[Flow]) -> list[str]:
    return sorted({o for flow in flows for o in flow_fields(flow)})
