"""Shadow mode: every trigger runs and the workers claim, read and plan as in live mode, but each planned write is
recorded with its field diff against the target's current values instead of being sent (issue 29).

A claim is planned as a dry run that follows every step (engine/preview.py with `follow_steps`: each step sees the
earlier steps' writes laid over what was read), so the record shows the whole chain a live run would write. Each
Salesforce write is checked against describe (what Salesforce would refuse), and a few extra reads, made in shadow
mode only and through the same limits, flag what a person should look at before going live:

- a Nue customer it would create although a customer of the same name exists, or a Salesforce account it would
  create although an account of that name exists;
- a Nue order it would create although an order names the opportunity (by `opportunityId`, or by a quote of the
  opportunity) under any customer: flow 1 looks only among the account's own customer's orders;
- a field it would overwrite (one holding a value) on a record a person, not the integration user, last changed
  within `shadow.edited_within_days` (Salesforce's LastModifiedById: which field the person changed is not
  known without field history, so every overwritten field is named).

Nothing here writes to either API. The store keeps each write once per idempotency key, as live mode sends it once.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

import structlog

from revdaemon.connectors import nue_wire, salesforce_wire
from revdaemon.engine.lookups import Fetcher
from revdaemon.engine.mappings import FlowVersions, preview_pinned
from revdaemon.engine.pollers import parse_timestamp
from revdaemon.engine.preview import (
    Described,
    EventPreview,
    FieldChange,
    PlannedWrite,
    Preview,
    describe_warnings,
    preview,
)
from revdaemon.engine.sync_status import SyncStatus
from revdaemon.errors import SyncError
from revdaemon.flows.base import Flow
from revdaemon.flows.what_if import is_shadow_id
from revdaemon.limits import Priority
from revdaemon.setup.salesforce import describe_objects
from revdaemon.store import Store
from revdaemon.store.records import Event, NewShadowEntry, utcnow

log = structlog.get_logger("revdaemon.shadow")

# [assumed] GraphQL reads orders by the first name of each assumed link field (nue_wire): a query naming a field
# the tenant's schema lacks fails whole, so the other names (read from REST lists by flow 1) are not asked here.
DESCRIBE_SECONDS = 300.0  # how long shadow mode checks writes against one read of an object's describe
ORDER_OPPORTUNITY_FIELD = nue_wire.ASSUMED_ORDER_OPPORTUNITY_FIELDS[0]
ORDER_QUOTE_FIELD = nue_wire.ASSUMED_ORDER_QUOTE_FIELDS[0]
ORDER_LINK_FIELDS = ("id", "orderNumber", "customerId", "status", ORDER_OPPORTUNITY_FIELD, ORDER_QUOTE_FIELD)


class Shadow:
    def __init__(self, store: Store, fetcher: Fetcher, flows: Sequence[Flow], *, versions: FlowVersions | None = None,
                 sync_status: SyncStatus | None = None, own_user: Callable[[], str | None] = lambda: None,
                 edited_within: timedelta = timedelta(days=7), describe_seconds: float = DESCRIBE_SECONDS) -> None:
        self._store = store
        self._fetcher = fetcher
        self._flows = list(flows)
        self._versions = versions
        self._sync_status = sync_status
        self._own_user = own_user
        self._edited_within = edited_within
        self._describe_seconds = describe_seconds
        self._describe: dict[str, tuple[float, Mapping[str, Mapping[str, Any]] | None]] = {}

    async def plan(self, events: Sequence[Event]) -> list[NewShadowEntry]:
        """What processing `events` would write, checked and flagged. Raises SyncError when a read fails (the
        events are tried again, as live mode would)."""
        if self._versions is not None:
            shown = await preview_pinned(events, self._versions, self._fetcher, sync_status=self._sync_status,
                                         follow_steps=True, safely=False)
        else:
            shown = await preview(events, self._flows, self._fetcher, sync_status=self._sync_status,
                                  follow_steps=True)
        shown = await describe_warnings(shown, self._fetcher, cached=self._described)
        flags = await self._flags(shown)
        return entries_of(shown, flags)

    async def _described(self, objects: Sequence[str]) -> Described:
        """Describe per object, read again after `describe_seconds`: a claim's check must not cost a describe
        call per object against the daily budget, and an admin's fix shows within minutes."""
        now = time.monotonic()
        stale = [o for o in objects if o not in self._describe or now - self._describe[o][0] > self._describe_seconds]
        if stale:
            salesforce, _nue = self._fetcher.clients
            for sobject, fields in (await describe_objects(salesforce, stale)).items():
                self._describe[sobject] = (now, fields)
        return {o: self._describe[o][1] for o in objects}

    async def record(self, events: Sequence[Event]) -> int:
        entries = await self.plan(events)
        kept = await self._store.record_shadow(entries)
        log.info("shadow_planned", events=len(events), entries=len(entries), kept=kept,
                 writes=sum(1 for e in entries if e.outcome == "write"))
        return kept

    async def _flags(self, shown: Preview) -> dict[str, list[str]]:
        """Per write (by idempotency key), what a person should look at before going live."""
        writes = [w for e in shown.events if e.used for w in e.writes]
        flags: dict[str, list[str]] = defaultdict(list)
        checks = (self._same_name_customers, self._same_name_accounts, self._orders_naming, self._recent_edits)
        for check in checks:
            try:
                for key, flag in await check(writes):
                    flags[key].append(flag)
            except SyncError as exc:  # a flag is advice: its read failing loses the advice, not the event
                log.warning("shadow_check_failed", check=check.__name__, error=exc.message)
        return flags

    async def _same_name_customers(self, writes: Sequence[PlannedWrite]) -> list[tuple[str, str]]:
        wanted = {w.idem_key: name for w in writes if w.system == "nue" and w.target.startswith("Customer ")
                  and (name := _planned(w, "name"))}
        if not wanted:
            return []
        _sf, nue = self._fetcher.clients
        found = await nue.read_where_in("Customer", "name", sorted(set(wanted.values())), ("id", "name",
                                                                                             "accountNumber"))
        by_name = {str(c.get("name")).casefold(): c for c in found}
        return [(key, f"a Nue customer named {name!r} exists already ({_number(existing)}): it may be this "
                      "account's, made before revdaemon; link it (its externalId) instead of creating another")
                for key, name in wanted.items() if (existing := by_name.get(name.casefold()))]

    async def _same_name_accounts(self, writes: Sequence[PlannedWrite]) -> list[tuple[str, str]]:
        wanted = {w.idem_key: name for w in writes if w.system == "salesforce" and w.target == "Account"
                  and w.action.startswith("create") and (name := _planned(w, "Name"))}
        if not wanted:
            return []
        salesforce, _nue = self._fetcher.clients
        names = sorted(set(wanted.values()))
        found: dict[str, str] = {}
        for soql, _asked in salesforce_wire.where_in_batches("SELECT Id, Name FROM Account", [("Name", names)]):
            async for row in salesforce.query(soql, priority=Priority.REALTIME):
                found[str(row["Name"]).casefold()] = str(row["Id"])
        return [(key, f"a Salesforce account named {name!r} exists already ({found[name.casefold()]}): check it is "
                      "not this customer's before going live")
                for key, name in wanted.items() if name.casefold() in found]

    async def _orders_naming(self, writes: Sequence[PlannedWrite]) -> list[tuple[str, str]]:
        wanted = {w.idem_key: w.target.rsplit(" ", 1)[-1] for w in writes
                  if w.system == "nue" and w.target.startswith("Order for opportunity ")}
        if not wanted:
            return []
        _sf, nue = self._fetcher.clients
        opportunities = sorted(set(wanted.values()))
        orders: list[dict[str, Any]] = await nue.read_where_in("Order", ORDER_OPPORTUNITY_FIELD, opportunities,
                                                                  ORDER_LINK_FIELDS)
        quotes = await nue.read_where_in("Quote", "opportunityId", opportunities, ("id", "opportunityId"))
        quote_of = {str(q["id"]): str(q.get("opportunityId")) for q in quotes if q.get("id")}
        if quote_of:
            orders += await nue.read_where_in("Order", ORDER_QUOTE_FIELD, sorted(quote_of), ORDER_LINK_FIELDS)
        named: dict[str, list[str]] = defaultdict(list)
        for order in orders:
            for opportunity in opportunities:
                link = nue_wire.order_link(order, opportunity, marker_field=None,
                                           quote_ids=frozenset(q for q, o in quote_of.items() if o == opportunity))
                if link is not None:
                    named[opportunity].append(f"{_number(order)} of customer {order.get('customerId')} "
                                              f"({link})")
        return [(key, "a Nue order already names this opportunity: " + "; ".join(dict.fromkeys(named[opp])) +
                 ". Check it is this deal's before going live (set the opportunity's order id to link it)")
                for key, opp in wanted.items() if named.get(opp)]

    async def _recent_edits(self, writes: Sequence[PlannedWrite]) -> list[tuple[str, str]]:
        by_object: dict[str, dict[str, PlannedWrite]] = defaultdict(dict)
        for write in writes:
            sobject, _, record_id = write.target.partition(" ")
            if (write.system == "salesforce" and write.action == "update" and record_id and " " not in record_id
                    and not is_shadow_id(record_id) and _overwritten(write)):
                by_object[sobject][record_id] = write
        if not by_object:
            return []
        salesforce, _nue = self._fetcher.clients
        since = utcnow() - self._edited_within
        own = self._own_user()
        out: list[tuple[str, str]] = []
        for sobject, targets in sorted(by_object.items()):
            ids = sorted(targets)
            select = f"SELECT Id, LastModifiedDate, LastModifiedById FROM {sobject}"
            for soql, _asked in salesforce_wire.where_in_batches(select, [("Id", ids)]):
                async for row in salesforce.query(soql, priority=Priority.REALTIME):
                    edited = _when(row.get("LastModifiedDate"))
                    who = row.get("LastModifiedById")
                    target = targets.get(str(row["Id"]))
                    if target is None or edited is None or edited < since or (own and _same(who, own)):
                        continue
                    fields = ", ".join(f.field for f in _overwritten(target))
                    out.append((target.idem_key, f"{sobject} {row['Id']} was last changed by user {who} on "
                                                f"{edited:%Y-%m-%d %H:%M} UTC; this would overwrite {fields}"))
        return out


def entries_of(shown: Preview, flags: Mapping[str, Sequence[str]]) -> list[NewShadowEntry]:
    """The store's record of a shadow run: one entry per planned write, else one for the event's outcome."""
    entries: list[NewShadowEntry] = []
    for event in shown.events:
        if not event.used:
            continue  # the other mapping version's writes, shown beside a replay's: never planned here
        common: dict[str, Any] = {"event_id": event.event_id, "event_key": event.event_key, "flow": event.flow}
        entries += [NewShadowEntry(**common, outcome="write", system=w.system, action=w.action, target=w.target,
                                   idem_key=w.idem_key or None,
                                   changes=tuple({"field": f.field, "current": f.current, "planned": f.planned,
                                                  "changes": f.changes} for f in w.fields),
                                   warnings=w.warnings, flags=tuple(flags.get(w.idem_key, ())),
                                   note=event.note if event.outcome != "writes" else None)
                    for w in event.writes]
        if not event.writes or event.outcome in ("conflict", "error"):
            entries.append(NewShadowEntry(**common, outcome=_outcome(event), note=event.note))
    return entries


def _outcome(event: EventPreview) -> str:
    return {"conflict": "conflict", "error": "error"}.get(event.outcome, "nothing")


def _overwritten(write: PlannedWrite) -> tuple[FieldChange, ...]:
    """The fields the write would change from a value someone set (filling an empty field overwrites nothing)."""
    return tuple(f for f in write.changed if f.current not in (None, ""))


def _planned(write: PlannedWrite, name: str) -> str | None:
    value = next((f.planned for f in write.fields if f.field == name), None)
    return str(value) if value not in (None, "") else None


def _number(record: Mapping[str, Any]) -> str:
    return str(record.get("orderNumber") or record.get("accountNumber") or record.get("id"))


def _when(value: Any) -> datetime | None:
    try:
        return parse_timestamp(str(value)) if value else None
    except ValueError:
        return None


def _same(a: Any, b: str) -> bool:
    return salesforce_wire.same_id(a, b)
