"""Dry-run diffs: what processing some events would write, field by field, before anything is sent.

For each event, its flows are asked for their first step exactly as a worker would (the same batched
lookups, the same plans), but the writes go nowhere: their targets' current values are read in batches
(SOQL `IN` lists of up to 200 ids, one per object) and set beside the planned values. A target the lookups
already read with every field a write sets is not read again. A plan whose later steps depend on this
step's results (a Nue customer before its order) says so instead of guessing them.

Shown as the executor sends them: with the sync status fields added (`mapping.sync_status`), and a write
that several events plan (the same idempotency key) once, under the first of them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from decimal import Decimal, InvalidOperation
from typing import Any

from revdaemon.domain.describe_check import check_write
from revdaemon.engine.lookups import Fetcher
from revdaemon.engine.sync_status import SyncStatus
from revdaemon.errors import SyncError
from revdaemon.flows.base import Flow, FlowEvent, Found, Needs, takes, why_not_taken
from revdaemon.flows.plan import (
    NueActivateOrder,
    NueCreateCustomer,
    NueCreateOrder,
    Plan,
    SfCreate,
    SfDelete,
    SfUpdate,
    SfUpsert,
    Write,
)
from revdaemon.flows.what_if import applied, real_needs
from revdaemon.setup.salesforce import describe_objects
from revdaemon.store.records import Event, utcnow

MAX_LOOKUP_ROUNDS = 6
MAX_STEPS = 6  # as the worker: closed won's customer, order, activation, write-back, and room to spare


@dataclass(frozen=True, kw_only=True)
class FieldChange:
    field: str
    current: Any
    planned: Any

    @property
    def changes(self) -> bool:
        return comparable(self.current) != comparable(self.planned)


@dataclass(frozen=True, kw_only=True)
class PlannedWrite:
    system: str  # "salesforce" or "nue"
    action: str  # "update", "upsert", "create", "delete", "activate"
    target: str  # e.g. "Account 001..." or "Order for opportunity 006..."
    fields: tuple[FieldChange, ...] = ()
    warnings: tuple[str, ...] = ()  # why Salesforce would refuse it, as describe shows (describe_warnings)
    idem_key: str = ""  # the write's idempotency key: live mode sends it once

    @property
    def changed(self) -> tuple[FieldChange, ...]:
        return tuple(f for f in self.fields if f.changes)


@dataclass(frozen=True, kw_only=True)
class EventPreview:
    event_id: int
    event_key: str
    flow: str
    writes: tuple[PlannedWrite, ...] = ()
    outcome: str = "writes"  # "writes", "nothing", "conflict", "error", "skipped" (not done at all)
    note: str | None = None  # why nothing, the conflict's reason, the error, or "later steps follow"
    mapping: str | None = None  # the mapping version that planned it, when shown: "v1 (pinned)", "v2 (current)"
    used: bool = True  # False: the other mapping version's writes, shown beside those a replay makes; not counted


@dataclass(frozen=True, kw_only=True)
class Preview:
    events: tuple[EventPreview, ...] = ()
    unchecked: str | None = None  # why the Salesforce writes were not checked against describe (it could not be read)

    @property
    def writes(self) -> int:
        return sum(len(e.writes) for e in self.events if e.used)

    @property
    def fields_changed(self) -> int:
        return sum(len(w.changed) for e in self.events if e.used for w in e.writes)

    @property
    def warnings(self) -> int:
        """Writes describe says Salesforce would refuse."""
        return sum(1 for e in self.events if e.used for w in e.writes if w.warnings)


async def preview(events: Sequence[Event], flows: Sequence[Flow], fetcher: Fetcher, *,
                  sync_status: SyncStatus | None = None, known: Found | None = None,
                  follow_steps: bool = False) -> Preview:
    """The first step of every flow for each event, with the targets' current values. Sends no write.

    `sync_status`: the status fields the executor adds to each data write (None or empty: off). `known`:
    values to plan with instead of reading them, e.g. the last synced values a decision not yet stored
    would set. `follow_steps`: plan every step a flow would take, each on the state read with the earlier
    steps' writes laid over it (flows.what_if), as shadow mode does; else the first step, saying when more follow."""
    jobs = [(event, flow, FlowEvent(key=event.key, type=event.type, source=event.source, payload=event.payload))
            for event in events for flow in flows if takes(flow, event.type, event.source)]
    if not jobs:
        return Preview(events=tuple(EventPreview(event_id=e.id, event_key=e.key, flow="-", outcome="nothing",
                                                 note=why_not_taken(flows, e.type, e.source)) for e in events))
    status = sync_status or None
    found = known or Found()
    laid: dict[int, list[Write]] = {i: [] for i in range(len(jobs))}  # each job's earlier steps' writes
    # Per job, each step: its plan, its writes, and the earlier steps' writes it was planned on.
    steps: dict[int, list[tuple[Plan | Exception, tuple[Write, ...], tuple[Write, ...]]]] = \
        {i: [] for i in range(len(jobs))}
    active = set(range(len(jobs)))
    for _step in range(MAX_STEPS if follow_steps else 1):
        for _ in range(MAX_LOOKUP_ROUNDS):
            needs = Needs.union([jobs[index][1].needs(jobs[index][2], applied(found, laid[index]))
                                 for index in active])
            missing = real_needs(_with_status_fields(needs, status).minus(found))
            if not missing:
                break
            found = found.merged(await fetcher.fetch(missing))
        now = utcnow()
        for index in sorted(active):
            _event, flow, view = jobs[index]
            earlier = tuple(laid[index])
            try:
                made = flow.plan(view, applied(found, earlier))
            except Exception as exc:  # a flow's bug shows as this event's error, not a broken page
                steps[index].append((exc, (), earlier))
                active.discard(index)
                continue
            # Decorated as the executor decorates them, so the diff is what would be sent.
            writes = tuple(status.decorate(w, now) for w in made.writes) if status else made.writes
            steps[index].append((made, writes, earlier))
            if made.conflict is not None or not writes or made.done:
                active.discard(index)
            else:
                laid[index].extend(writes)
        if not active:
            break
    # Every target's current value in one batched read for all jobs and steps; each step's diff is then taken
    # against it with that job's earlier steps laid over (no read per job).
    targets = await _with_targets([w for taken in steps.values() for _plan, writes, _earlier in taken for w in writes],
                                  fetcher, found)
    current = {index: [_Current.of(applied(targets, earlier)) for _plan, _writes, earlier in taken]
               for index, taken in steps.items()}
    first_planner: dict[str, str] = {}  # idempotency key -> the event that plans it first
    out: list[EventPreview] = []
    for index, (event, flow, _view) in enumerate(jobs):
        shown: list[PlannedWrite] = []
        repeated: set[str] = set()
        outcome, notes = "nothing", list[str]()
        for (plan, writes, _earlier), values in zip(steps[index], current[index], strict=True):
            if isinstance(plan, Exception):
                outcome, notes = "error", [*notes, f"{type(plan).__name__}: {plan}"]
                break
            # The executor sends a write once per idempotency key: a repeat is shown once, not counted again.
            fresh = [w for w in writes if first_planner.setdefault(w.idem_key, event.key) == event.key]
            repeated |= {first_planner[w.idem_key] for w in writes} - {event.key}
            shown += [replace(_planned(w, values), idem_key=w.idem_key) for w in fresh]
            if plan.conflict is not None:
                outcome, notes = "conflict", [*notes, plan.conflict.reason]
                break
            if not writes and not shown and plan.skip_reason:
                notes.append(plan.skip_reason)
            if fresh and not plan.done and not follow_steps:
                notes.append("later steps follow from this step's results and are not shown")
        if outcome == "nothing" and shown:
            outcome = "writes"
        if index in active:
            notes.append(f"more steps would follow: the flow did not finish within {MAX_STEPS}")
        if repeated:
            notes.insert(0, f"the same write as {', '.join(sorted(repeated))} plans: sent once")
        out.append(EventPreview(event_id=event.id, event_key=event.key, flow=flow.name, writes=tuple(shown),
                                outcome=outcome, note="; ".join(notes) or None))
    return Preview(events=tuple(out))


Described = Mapping[str, Mapping[str, Mapping[str, Any]] | None]  # object -> field name -> describe's field


async def describe_warnings(shown: Preview, fetcher: Fetcher,
                            cached: Callable[[Sequence[str]], Awaitable[Described]] | None = None) -> Preview:
    """`shown` with each Salesforce write checked against describe, read fresh once per object (an admin may
    just have added the missing value), or through `cached`: what Salesforce would refuse is in the write's
    `warnings`."""
    objects = sorted({w.target.split(" ", 1)[0] for e in shown.events for w in e.writes
                      if w.system == "salesforce" and w.action != "delete"})
    if not objects:
        return shown
    try:
        described = await (cached or (lambda names: describe_objects(fetcher.clients[0], names)))(objects)
    except SyncError as exc:
        return replace(shown, unchecked=exc.message)

    def check(write: PlannedWrite) -> tuple[str, ...]:
        if write.system != "salesforce" or write.action == "delete":
            return ()
        sobject = write.target.split(" ", 1)[0]
        # The action shown is the one it would take: an upsert whose record exists is an update.
        creates = write.action.startswith("create")
        problems = check_write(sobject, {f.field: f.planned for f in write.fields}, described.get(sobject),
                               creates=creates, updates=not creates)
        return tuple(str(p) for p in problems)

    return _replaced(shown, check)


def _replaced(shown: Preview, warn: Callable[[PlannedWrite], tuple[str, ...]]) -> Preview:
    return replace(shown, events=tuple(replace(e, writes=tuple(replace(w, warnings=warn(w)) for w in e.writes))
                                       for e in shown.events))


def _with_status_fields(needs: Needs, status: SyncStatus | None) -> Needs:
    """The lookups select the status fields too on the objects that carry them, so the current values of
    the decorated writes need no second read."""
    if status is None:
        return needs
    read = {sobject for sobject, _ in needs.sf_records} | {sobject for sobject, _, _ in needs.sf_children}
    extra = frozenset((sobject, name) for sobject in read & status.objects.keys()
                      for name in status.objects[sobject].names)
    return needs | Needs(sf_fields=extra) if extra else needs


async def preview_safely(events: Sequence[Event], flows: Sequence[Flow], fetcher: Fetcher, *,
                         sync_status: SyncStatus | None = None, known: Found | None = None,
                         follow_steps: bool = False) -> Preview:
    """`preview`, with an API failure shown on every event instead of raised (a page must still render)."""
    try:
        return await preview(events, flows, fetcher, sync_status=sync_status, known=known, follow_steps=follow_steps)
    except SyncError as exc:
        return Preview(events=tuple(EventPreview(event_id=e.id, event_key=e.key, flow="-", outcome="error",
                                                 note=f"the current values could not be read: {exc.message}")
                                    for e in events))


@dataclass
class _Current:
    by_id: Mapping[tuple[str, str], Mapping[str, Any] | None] = field(default_factory=dict)
    by_external: Mapping[tuple[str, str, str], list[Mapping[str, Any]]] = field(default_factory=dict)

    @classmethod
    def of(cls, found: Found) -> _Current:
        return cls(by_id=found.sf_records, by_external=found.sf_children)


async def _with_targets(writes: Sequence[Write], fetcher: Fetcher, found: Found) -> Found:
    """`found` with the current values of every Salesforce write's target, by id or by external id: those the
    lookups already read with each field written are taken from `found`, the rest read in one batched fetch."""
    records: set[tuple[str, str]] = set()
    children: set[tuple[str, str, str]] = set()
    fields: set[tuple[str, str]] = set()
    for write in writes:
        if isinstance(write, SfUpdate):
            records.add((write.sobject, write.record_id))
            fields.update((write.sobject, name) for name in write.fields)
        elif isinstance(write, SfUpsert):
            children.add((write.sobject, write.external_id_field, write.external_id))
            fields.update((write.sobject, name) for name in write.fields)
    if not records and not children:
        return found
    wanted = Needs(sf_records=frozenset(records), sf_children=frozenset(children), sf_fields=frozenset(fields))
    missing = real_needs(wanted.minus(found))
    if missing.sf_records or missing.sf_children:
        found = found.merged(await fetcher.fetch(Needs(sf_records=missing.sf_records,
                                                       sf_children=missing.sf_children, sf_fields=wanted.sf_fields)))
    return found


def _planned(write: Write, current: _Current) -> PlannedWrite:
    if isinstance(write, SfUpdate):
        record = current.by_id.get((write.sobject, write.record_id)) or {}
        return PlannedWrite(system="salesforce", action="update", target=f"{write.sobject} {write.record_id}",
                            fields=_changes(write.fields, record))
    if isinstance(write, SfUpsert):
        rows = current.by_external.get((write.sobject, write.external_id_field, write.external_id)) or []
        action = "update" if rows else "create"
        return PlannedWrite(system="salesforce", action=action,
                            target=f"{write.sobject} {write.external_id_field}={write.external_id}",
                            fields=_changes(write.fields, rows[0] if rows else {}))
    if isinstance(write, SfCreate):
        return PlannedWrite(system="salesforce", action="create (unless one matches)", target=write.sobject,
                            fields=_changes(write.fields, {}))
    if isinstance(write, SfDelete):
        return PlannedWrite(system="salesforce", action="delete", target=f"{write.sobject} {write.record_id}")
    if isinstance(write, NueCreateCustomer):
        return PlannedWrite(system="nue", action="create (unless found)",
                            target=f"Customer for account {write.salesforce_account_id}",
                            fields=_changes(_flat(write.payload), {}))
    if isinstance(write, NueCreateOrder):
        return PlannedWrite(system="nue", action="create (unless found)",
                            target=f"Order for opportunity {write.opportunity_id}",
                            fields=_changes(_flat(write.payload), {}))
    assert isinstance(write, NueActivateOrder)
    return PlannedWrite(system="nue", action="activate", target=f"Order {write.order_id}")


def _changes(planned: Mapping[str, Any], record: Mapping[str, Any]) -> tuple[FieldChange, ...]:
    return tuple(FieldChange(field=name, current=record.get(name), planned=value)
                 for name, value in sorted(planned.items()))


def _flat(payload: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested payload as dotted fields (orderProducts.0.quantity), for a readable field-level list."""
    out: dict[str, Any] = {}
    for key, value in payload.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(_flat(value, f"{name}."))
        elif isinstance(value, list | tuple):
            for index, item in enumerate(value):
                if isinstance(item, Mapping):
                    out.update(_flat(item, f"{name}.{index}."))
                else:
                    out[f"{name}.{index}"] = item
        else:
            out[name] = value
    return out


def comparable(value: Any) -> str | None:
    """Values compared as Salesforce shows them: 1400.0 and Decimal('1400.00') are the same amount."""
    if value is None:
        return None
    if isinstance(value, bool):
        return str(value)
    try:
        return str(Decimal(str(value)).normalize())
    except (InvalidOperation, ValueError):
        return str(value)
