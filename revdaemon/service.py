"""The operator's actions and the queries behind them, written once: the CLI and the web console both
call these, so no action is implemented twice.

Each takes an open `Store` and returns plain values (dicts and lists) that a table, a JSON line or a
web page can show; none prints or exits. Every action that changes something is written to the audit
log with the actor who asked for it.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import anyio

from revdaemon.domain.fix_hints import letter_hint
from revdaemon.domain.reconciliation import Drift, RepairEvent, RepairOutcome, drift_summary, repair_outcome
from revdaemon.domain.record_names import NameBook, candidate_ids, target_ref
from revdaemon.domain.shadow_report import ShadowLine, object_of
from revdaemon.domain.shadow_report import build_report as build_shadow_report
from revdaemon.engine.lookups import Fetcher
from revdaemon.engine.mappings import FlowVersions, content_hash, preview_pinned
from revdaemon.engine.pollers import Poller, SalesforceClosedWonPoller
from revdaemon.engine.preview import EventPreview, Preview, comparable, describe_warnings, preview_safely
from revdaemon.engine.prune import prune_store
from revdaemon.engine.reconcile import repair_event, repair_key
from revdaemon.engine.sweep import backfill_event
from revdaemon.engine.sync_status import SyncStatus
from revdaemon.errors import RecordNotFound, StoreError
from revdaemon.flows.base import Flow, FlowEvent, Found, Needs
from revdaemon.flows.closed_won_to_order import NAME as CLOSED_WON
from revdaemon.flows.closed_won_to_order import ClosedWonToOrderFlow
from revdaemon.store import Store
from revdaemon.store.ids import STORE_ID_MAX, is_mapping_version, is_store_id
from revdaemon.store.records import (
    AuditEntry,
    ConflictRecord,
    ConflictStatus,
    DeadLetter,
    Event,
    NewAuditEntry,
    NewEvent,
    Resolution,
    StoreFootprint,
    SyncedRecord,
    WriteIntent,
    utcnow,
)
from revdaemon.store.retention import PruneStep, Target, cutoff_of
from revdaemon.store.states import EventStatus


def _plain(value: Any) -> Any:
    """Datetimes as ISO text, recursively; enums are already text (StrEnum)."""
    if isinstance(value, datetime):
        return value.isoformat(timespec="seconds")
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _existing(kind: str, record_id: int) -> int:
    """`record_id` when a stored row can have it. Else the same RecordNotFound as for an id no row has: a
    number past the store's 64-bit ids cannot even be sent as a query parameter (OverflowError)."""
    if not is_store_id(record_id):
        raise RecordNotFound(f"no such {kind}: ids are whole numbers from 1 to {STORE_ID_MAX}")
    return record_id


def event_row(event: Event) -> dict[str, Any]:
    return {"id": event.id, "key": event.key, "type": event.type, "source": event.source,
            "status": event.status.value, "attempts": event.attempts, "last_error": event.last_error,
            "received_at": _plain(event.received_at), "next_attempt_at": _plain(event.next_attempt_at)}


async def list_events(store: Store, *, status: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
    chosen = EventStatus(status) if status else None
    events = await store.list_events(status=chosen, limit=limit)
    book = await names_for(store, [text for e in events for text in _mentions(e)])
    return [{**event_row(e), "about": book.text_of(*_mentions(e))} for e in events]


def _mentions(event: Event) -> tuple[str, str]:
    """Where an event names records: its key (a poll's names the record) and its payload (a webhook's key is the
    notification's id; its body names the customer or order). Payloads are cut: a name needs only the ids."""
    return event.key, json.dumps(event.payload, default=str)[:PAYLOAD_NAMES_CHARS]


async def names_for(store: Store, texts: Sequence[str | None]) -> NameBook:
    """The kept names of the records `texts` mention (record refs, event keys, targets): read from the store,
    never from an API (the workers keep them as they read the records)."""
    ids = candidate_ids(texts)
    return NameBook(await store.names_of(ids)) if ids else NameBook()


async def show_event(store: Store, event_id: int) -> dict[str, Any]:
    event = await store.get_event(_existing("event", event_id))
    if event is None:
        raise RecordNotFound(f"no event {event_id}")
    writes = await store.list_writes(event_id=event_id, limit=100)
    book = await names_for(store, [*_mentions(event), *(w.target for w in writes)])
    return {**event_row(event), "about": book.text_of(*_mentions(event)), "payload": event.payload,
            "writes": [{**_plain(asdict(w)), "about": book.text_of(w.target)} for w in writes]}


def letter_row(letter: DeadLetter) -> dict[str, Any]:
    return {"id": letter.id, "event_id": letter.event_id, "system": letter.system, "operation": letter.operation,
            "error_code": letter.error_code, "status": letter.status, "error": letter.error,
            "record_ref": letter.record_ref, "created_at": _plain(letter.created_at),
            "replayed_at": _plain(letter.replayed_at),
            "fix": letter_hint(letter.system, letter.error_code, letter.status, letter.error, letter.request,
                               letter.record_ref)}


async def list_dead_letters(store: Store, *, include_replayed: bool = False, limit: int = 50,
                            error_code: str | None = None) -> list[dict[str, Any]]:
    letters = await store.list_dead_letters(include_replayed=include_replayed, limit=limit, error_code=error_code)
    book = await names_for(store, [d.record_ref for d in letters])
    return [{**letter_row(d), "about": book.text_of(d.record_ref)} for d in letters]


async def dead_letter_codes(store: Store, *, include_replayed: bool = False) -> list[dict[str, Any]]:
    """The error codes the letters have, each with its count, the most frequent first (to filter by one)."""
    return [{"code": code, "count": count}
            for code, count in await store.dead_letter_codes(include_replayed=include_replayed)]


async def show_dead_letter(store: Store, letter_id: int) -> dict[str, Any]:
    letter = await store.get_dead_letter(_existing("dead letter", letter_id))
    if letter is None:
        raise RecordNotFound(f"no dead letter {letter_id}")
    book = await names_for(store, [letter.record_ref])
    return {**letter_row(letter), "about": book.text_of(letter.record_ref), "request": letter.request}


async def replay_dead_letters(store: Store, letter_ids: list[int] | None = None, *,
                              actor: str = "operator", remap: bool = False) -> list[dict[str, Any]]:
    """Put dead letters' events back in the inbox (all open ones when `letter_ids` is None). Each is planned
    again with the mapping version it first ran with, unless `remap`: then with the current mapping."""
    ids = [_existing("dead letter", i) for i in letter_ids] if letter_ids is not None \
        else [d.id for d in await store.list_dead_letters(limit=10_000)]
    rows = [event_row(await store.replay_dead_letter(letter_id, remap=remap)) for letter_id in ids]
    for letter_id, row in zip(ids, rows, strict=True):
        await record_action(store, actor, "replay dead letter", f"dead-letter:{letter_id}", event_id=row["id"],
                            remap=remap)
    return rows


async def preview_replay(store: Store, letter_ids: Sequence[int], flows: Sequence[Flow],
                         fetcher: Fetcher, *, versions: FlowVersions | None = None, remap: bool = False,
                         sync_status: SyncStatus | None = None) -> Preview:
    """A dry-run diff of exactly what replaying these dead letters would write now; nothing is sent. With
    `versions`, each event is planned with the mapping version it is pinned to (as the replay will be), or
    with `remap` with the current one, its pinned version's writes shown beside (`flows` is then unused).
    `sync_status`: the status fields the executor adds to each write, shown among the fields. Each Salesforce
    write is checked against describe: what it would be refused for is in its `warnings`."""
    events: list[Event] = []
    for letter_id in letter_ids:
        letter = await store.get_dead_letter(_existing("dead letter", letter_id))
        if letter is None:
            raise RecordNotFound(f"no dead letter {letter_id}")
        event = await store.get_event(letter.event_id) if letter.event_id is not None else None
        if event is not None:
            events.append(event)
    if versions is not None:
        shown = await preview_pinned(events, versions, fetcher, remap=remap, sync_status=sync_status)
    else:
        shown = await preview_safely(events, flows, fetcher, sync_status=sync_status)
    # Warn when describe says the replay would meet the same refusal (the picklist still lacks the value).
    return await describe_warnings(shown, fetcher)


# --- mapping versions -------------------------------------------------------------------------------


async def list_mappings(store: Store, current_text: str | None = None) -> list[dict[str, Any]]:
    """Every stored mapping version, oldest first; `current` marks the one `current_text` (config.yaml) is."""
    digest = content_hash(current_text) if current_text is not None else None
    return [{"version": m.version, "hash": m.content_hash[:12], "created_at": _plain(m.created_at),
             "current": m.content_hash == digest} for m in await store.list_mappings()]


async def show_mapping(store: Store, which: str, current_text: str | None = None) -> dict[str, Any]:
    """One mapping version's text: `which` is its number, or `current` (the configured one, stored or not)."""
    label, text = await _mapping_of(store, which, current_text)
    return {"version": label, "hash": content_hash(text), "text": text}


async def diff_mappings(store: Store, a: str, b: str, current_text: str | None = None) -> dict[str, Any]:
    """A unified diff of two mapping versions' texts (numbers, or `current`); empty when they are the same."""
    import difflib

    (label_a, text_a), (label_b, text_b) = await _mapping_of(store, a, current_text), \
        await _mapping_of(store, b, current_text)
    diff = "".join(difflib.unified_diff(text_a.splitlines(keepends=True), text_b.splitlines(keepends=True),
                                        fromfile=label_a, tofile=label_b))
    return {"a": label_a, "b": label_b, "same": not diff, "diff": diff}


async def _mapping_of(store: Store, which: str, current_text: str | None) -> tuple[str, str]:
    if which == "current" and current_text is not None:
        return "current (config.yaml)", current_text
    try:
        version = int(which.removeprefix("v"))
    except ValueError:
        raise RecordNotFound(f"no mapping version {which!r} (a number from `mappings list`, or 'current')") from None
    stored = await store.get_mapping(version) if is_mapping_version(version) else None
    if stored is None:
        raise RecordNotFound(f"no mapping version {version}")
    return f"v{version}", stored.text


async def record_action(store: Store, actor: str, action: str, target: str, *, event_id: int | None = None,
                        **detail: Any) -> None:
    """An operator's action in the audit log, beside the API writes: who did what to which record."""
    await store.record_write(NewAuditEntry(system="operator", operation=action, target=target, outcome="ok",
                                           event_id=event_id, record_ref=target, detail={"actor": actor, **detail}))


async def timeline(store: Store, query: str, *, limit: int = 200) -> dict[str, Any]:
    """Everything revdaemon knows about one record, by Salesforce id, Nue id or external key: the events
    that named it, the writes it planned and the APIs' answers, newest first, across both systems (the ids
    paired with it included)."""
    query = query.strip()
    if not query:
        return {"query": query, "ids": [], "entries": [], "matches": []}
    # A name or a number (Acme, O-00000300) stands for the records called so; an id or a key for itself.
    matches = await store.find_names(query, limit=TIMELINE_NAME_MATCHES)
    named_ids = [m.record_id for m in matches]
    seeds = [query, *named_ids]
    links = [link for seed in seeds for link in await store.links_of(seed)]
    ids = list(dict.fromkeys([*seeds, *(i for link in links for i in (link.nue_id, link.salesforce_id))]))
    events: dict[int, Event] = {}
    intents: dict[str, WriteIntent] = {}
    writes: dict[int, AuditEntry] = {}
    for record_id in ids:
        events.update((e.id, e) for e in await store.search_events(record_id, limit=limit))
        intents.update((i.key, i) for i in await store.list_intents(mentioning=record_id, limit=limit))
        writes.update((w.id, w) for w in await store.list_writes(mentioning=record_id, limit=limit))
    if events:
        intents.update((i.key, i) for i in await store.list_intents(event_ids=sorted(events), limit=limit))
    entries = [{"at": e.received_at, "kind": "event", "title": f"{e.type} ({e.source})", "status": e.status.value,
                "detail": e.key, "event_id": e.id, "error": e.last_error, "mapping_version": None}
               for e in events.values()]
    entries += [{"at": i.created_at, "kind": "planned write", "title": f"{i.system} {i.operation} {i.target}",
                 "status": i.status.value, "detail": i.key, "event_id": i.event_id, "error": i.error,
                 "mapping_version": None} for i in intents.values()]
    entries += [{"at": w.at, "kind": "operator action" if w.system == "operator" else "API result",
                 "title": f"{w.system} {w.operation} {w.target}", "status": w.outcome,
                 "detail": w.idem_key or w.record_ref or "", "event_id": w.event_id,
                 "error": (w.detail or {}).get("error"), "mapping_version": w.mapping_version,
                 "actor": (w.detail or {}).get("actor")} for w in writes.values()]
    entries.sort(key=lambda entry: cast(datetime, entry["at"]), reverse=True)
    entries = entries[:limit]
    book = NameBook([*matches, *await store.names_of(ids)])
    for entry in entries:
        entry["about"] = book.text_of(str(entry["title"]), str(entry["detail"]))
    return {"query": query, "ids": ids, "entries": [_plain(e) for e in entries],
            "names": {i: n.text for i in ids if (n := book.of(i)) is not None},
            "matches": [{"record_id": m.record_id, "system": m.system, "object": m.object, "text": m.text}
                        for m in matches]}


PAYLOAD_NAMES_CHARS = 4000  # of an event's payload searched for the ids it names
TIMELINE_NAME_MATCHES = 20  # records a name may stand for in one timeline search


def conflict_row(conflict: ConflictRecord) -> dict[str, Any]:
    return {"id": conflict.id, "event_id": conflict.event_id, "flow": conflict.flow,
            "record_ref": conflict.record_ref, "reason": conflict.reason, "status": conflict.status.value,
            "resolution": conflict.resolution.value if conflict.resolution else None,
            "resolved_by": conflict.resolved_by, "created_at": _plain(conflict.created_at)}


async def list_conflicts(store: Store, *, include_resolved: bool = False, limit: int = 50) -> list[dict[str, Any]]:
    status = None if include_resolved else ConflictStatus.OPEN
    conflicts = await store.list_conflicts(status=status, limit=limit)
    book = await names_for(store, [c.record_ref for c in conflicts])
    return [{**conflict_row(c), "about": book.text_of(c.record_ref)} for c in conflicts]


async def open_conflict_ids(store: Store, *, flow: str | None = None, limit: int = 10_000) -> list[int]:
    """The open conflicts' ids, oldest first, of one flow or of all: a selection to decide the same way."""
    rows = await store.list_conflicts(status=ConflictStatus.OPEN, limit=limit)
    return sorted(c.id for c in rows if flow is None or c.flow == flow)


async def conflict_rows(store: Store, conflict_ids: Sequence[int]) -> list[dict[str, Any]]:
    """The rows of these conflicts in the order given, for a page that names a selection; ids no row has are
    left out (the preview names them)."""
    rows = [await store.get_conflict(_existing("conflict", i)) for i in dict.fromkeys(conflict_ids)]
    return [conflict_row(c) for c in rows if c is not None]


async def show_conflict(store: Store, conflict_id: int) -> dict[str, Any]:
    conflict = await store.get_conflict(_existing("conflict", conflict_id))
    if conflict is None:
        raise RecordNotFound(f"no conflict {conflict_id}")
    names = sorted({*conflict.nue_values, *conflict.salesforce_values, *conflict.synced_values})
    fields = [{"field": n, "nue": conflict.nue_values.get(n), "salesforce": conflict.salesforce_values.get(n),
               "synced": conflict.synced_values.get(n),
               "differs": comparable(conflict.nue_values.get(n)) != comparable(conflict.salesforce_values.get(n))}
              for n in names]
    book = await names_for(store, [conflict.record_ref])
    return {**conflict_row(conflict), "about": book.text_of(conflict.record_ref), "comment": conflict.comment,
            "fields": fields}


TAKES: dict[str, Resolution] = {"nue": Resolution.TAKE_NUE, "salesforce": Resolution.TAKE_SALESFORCE,
                                 "skip": Resolution.SKIP}


async def resolve_conflict(store: Store, conflict_id: int, *, take: str, actor: str,
                           comment: str | None = None) -> dict[str, Any]:
    """Record who decided what; the event goes back to the inbox (take a side) or is finished (skip)."""
    resolved = await store.resolve_conflict(_existing("conflict", conflict_id), resolution=TAKES[take], actor=actor,
                                            comment=comment)
    row = conflict_row(resolved)
    await record_action(store, actor, f"resolve conflict: take {take}", row["record_ref"], event_id=row["event_id"],
                        conflict=conflict_id, comment=comment)
    return row


async def resolve_conflicts(store: Store, conflict_ids: Sequence[int], *, take: str, actor: str,
                            comment: str | None = None) -> dict[str, Any]:
    """Decide many conflicts the same way: each as `resolve_conflict` does, one transaction and one audit
    entry apiece, so each decision stands alone.

    A conflict decided meanwhile (another admin, another tab) or gone is skipped and named with why; the
    others still resolve. An id no row can have refuses the whole selection before any is decided (a typo,
    not a race). Returns {"take", "resolved": [conflict rows], "skipped": [{"id", "record_ref", "flow",
    "reason"}]}: every selected id is in exactly one of the two."""
    if take not in TAKES:
        raise ValueError(f"take one of {', '.join(TAKES)}, not {take!r}")
    ids = list(dict.fromkeys(_existing("conflict", i) for i in conflict_ids))
    resolved: list[dict[str, Any]] = []
    skipped: list[dict[str, Any]] = []
    for conflict_id in ids:
        try:
            resolved.append(await resolve_conflict(store, conflict_id, take=take, actor=actor, comment=comment))
        except RecordNotFound:
            skipped.append({"id": conflict_id, "record_ref": None, "flow": None, "reason": "no such conflict"})
        except StoreError as exc:
            # The store refuses a decided conflict in the same transaction that would decide it, so the row
            # read now says who won the race; any other refusal is reported as it came.
            now = await store.get_conflict(conflict_id)
            skipped.append({"id": conflict_id, "record_ref": now.record_ref if now else None,
                            "flow": now.flow if now else None,
                            "reason": _decided(now) if now and now.status is not ConflictStatus.OPEN else str(exc)})
    return {"take": take, "resolved": resolved, "skipped": skipped}


def _decided(conflict: ConflictRecord) -> str:
    """`already resolved (take nue by ana)`: the decision in the CLI's words, and who made it."""
    decision = {None: "?", Resolution.SKIP: "skip"}.get(conflict.resolution, f"take {conflict.resolution}")
    return f"already resolved ({decision} by {conflict.resolved_by or '?'})"


async def preview_resolution(store: Store, conflict_id: int, take: str, flows: Sequence[Flow], fetcher: Fetcher, *,
                             versions: FlowVersions | None = None, sync_status: SyncStatus | None = None) -> Preview:
    """A dry-run diff of resolving a conflict; nothing is stored and nothing is sent. One already resolved is
    refused (StoreError), as deciding it would be; `preview_resolutions` tells the details."""
    conflict = await store.get_conflict(_existing("conflict", conflict_id))
    if conflict is None:
        raise RecordNotFound(f"no conflict {conflict_id}")
    if conflict.status is not ConflictStatus.OPEN:
        resolution = conflict.resolution.value if conflict.resolution else "?"
        raise StoreError(f"conflict {conflict_id} is already resolved ({resolution})")
    return await preview_resolutions(store, [conflict_id], take, flows, fetcher, versions=versions,
                                     sync_status=sync_status)


async def preview_resolutions(store: Store, conflict_ids: Sequence[int], take: str, flows: Sequence[Flow],
                              fetcher: Fetcher | None, *, versions: FlowVersions | None = None,
                              sync_status: SyncStatus | None = None) -> Preview:
    """A dry-run diff of resolving these conflicts the same way, as one preview; nothing is stored or sent.

    Taking Nue plans each conflict's event again as a worker will once the decision is stored: with the
    mapping version it is pinned to (with `versions`; else `flows`), and Salesforce's shown values accepted
    as the last synced ones, so the hand edit no longer holds the write. The events are planned together,
    so their targets' current values are read in batches and a write two of them plan is shown once. Each
    write shows the current Salesforce value beside Nue's. Taking Salesforce or skipping writes nothing to
    either system, so it needs no `fetcher` (None: refused only when an event is to be planned). A conflict
    already resolved or gone shows as `skipped`, as `resolve_conflicts` will skip it."""
    if take not in TAKES:
        raise ValueError(f"take one of {', '.join(TAKES)}, not {take!r}")
    resolution = TAKES[take]
    shown: list[EventPreview | int] = []  # in the selection's order; an int: the event planned below
    to_plan: dict[int, Event] = {}
    accepted: dict[str, SyncedRecord] = {}
    for conflict_id in dict.fromkeys(_existing("conflict", i) for i in conflict_ids):
        conflict = await store.get_conflict(conflict_id)
        if conflict is None or conflict.status is not ConflictStatus.OPEN:
            why = _decided(conflict) if conflict else "no such conflict"
            shown.append(EventPreview(event_id=(conflict.event_id or 0) if conflict else 0,
                                      event_key=conflict.record_ref if conflict else f"conflict {conflict_id}",
                                      flow=conflict.flow if conflict else "-", outcome="skipped",
                                      note=f"conflict {conflict_id} is {why}: it is skipped"))
            continue
        event = await store.get_event(conflict.event_id) if conflict.event_id is not None else None
        if resolution is Resolution.TAKE_NUE and event is not None:
            if event.id not in to_plan:  # two conflicts on one event: it is planned (and sent) once
                shown.append(event.id)
            to_plan[event.id] = event
            if conflict.record_ref.startswith("salesforce:") and conflict.salesforce_values:
                accepted[conflict.record_ref] = await _accepted(store, conflict)
            continue
        shown.append(EventPreview(event_id=event.id if event else 0,
                                  event_key=event.key if event else conflict.record_ref,
                                  flow=conflict.flow, outcome="nothing", note=_NOTHING_WRITTEN[resolution]))
    planned: tuple[EventPreview, ...] = ()
    if to_plan:
        if fetcher is None:
            raise ValueError("dry-run diffs need the daemon's API clients; none were given")
        events, known = list(to_plan.values()), Found(synced=accepted) if accepted else None
        planned = (await preview_pinned(events, versions, fetcher, sync_status=sync_status, known=known)
                   if versions is not None else
                   await preview_safely(events, flows, fetcher, sync_status=sync_status, known=known)).events
    out: list[EventPreview] = []
    for item in shown:
        out += [p for p in planned if p.event_id == item] if isinstance(item, int) else [item]
    return Preview(events=tuple(out))


_NOTHING_WRITTEN = {
    Resolution.TAKE_NUE: "the conflict has no inbox event to plan again: nothing is written",
    Resolution.TAKE_SALESFORCE: "taking Salesforce keeps its values: nothing is written to either system; "
                                "the waiting events are finished and Nue's values shown are not written "
                                "while Nue still has them",
    Resolution.SKIP: "skipping: nothing is written to either system; the waiting events are finished",
}


async def _accepted(store: Store, conflict: ConflictRecord) -> SyncedRecord:
    """The record's last synced values as taking Nue leaves them: the values Salesforce showed become the
    baseline and any declined Nue value on those fields is cleared (as the store's resolve_conflict does)."""
    stored = (await store.get_synced([conflict.record_ref])).get(conflict.record_ref, SyncedRecord())
    shown = conflict.salesforce_values
    return SyncedRecord(values={**stored.values, **shown},
                        declined={k: v for k, v in stored.declined.items() if k not in shown})


def footprint_row(footprint: StoreFootprint, retention_days: int) -> dict[str, Any]:
    """The store's size and the oldest rows it keeps, beside the retention setting."""
    return {"size_bytes": footprint.size_bytes, "free_bytes": footprint.free_bytes, "retention_days": retention_days,
            "oldest_event_at": _plain(footprint.oldest_event_at), "oldest_audit_at": _plain(footprint.oldest_audit_at),
            "payloads_pruned_before": _plain(footprint.payloads_pruned_before)}


async def prune(store: Store, retention_days: int, *, dry_run: bool = False, vacuum: bool = False,
                vacuum_alone: bool = False, actor: str = "operator",
                on_batch: Callable[[PruneStep], None] | None = None) -> dict[str, Any]:
    """Apply the retention rules now (store/retention.py), as the leader's nightly job does, then with `vacuum`
    give the space freed back (Store.reclaim_space). `dry_run` counts what would go and changes nothing.
    `vacuum_alone`: the vacuum holds the store's write lock throughout (SQLite), so it is refused while a daemon
    is heard from: its writes would wait, then fail."""
    if vacuum and vacuum_alone:
        running = [r for r in await replicas(store) if r["alive"]]
        if running:
            raise StoreError(f"a daemon is running on this store ({running[0]['host']}, pid {running[0]['pid']}, "
                             f"heard from at {running[0]['last_heartbeat'][:19]}): stop it before --vacuum, which "
                             "holds the write lock until the file is rewritten")
    cutoff = cutoff_of(utcnow(), retention_days)
    before = await store.footprint()
    pruned = dict.fromkeys((t.value for t in Target), 0)
    if cutoff is not None:
        step = await prune_store(store, cutoff, dry_run=dry_run, on_batch=on_batch)
        pruned = {target.value: count for target, count in step.pruned.items()}
    if vacuum and not dry_run:
        await store.reclaim_space()
    if not dry_run:
        await record_action(store, actor, "prune", "store", retention_days=retention_days, vacuum=vacuum, **pruned)
    after = await store.footprint()
    return {"retention_days": retention_days, "cutoff": _plain(cutoff), "dry_run": dry_run, "vacuum": vacuum,
            **pruned, "size_bytes_before": before.size_bytes, "size_bytes_after": after.size_bytes}


async def backup(store: Store, destination: Path) -> dict[str, Any]:
    await store.backup(destination)
    size = (await anyio.Path(destination).stat()).st_size
    return {"backup": str(destination), "bytes": size}


# Which change streams feed which flow, for a backfill of one flow.
BACKFILL_SOURCES: dict[str, tuple[str, ...]] = {
    "closed_won_to_order": ("salesforce:Opportunity:closed_won",),
    "subscription_status": ("nue:Subscription", "nue:Customer"),
    "billing_events": ("nue:Invoice",),
    "amendments": ("nue:Order",),
    "onboarding": ("nue:Order",),
    "quote_sync": ("nue:Quote",),
}
# Names `--flow` also takes: the config section's name of a flow (flows.closed_won, flows.quotes), where it differs.
BACKFILL_ALIASES: dict[str, str] = {"closed_won": CLOSED_WON, "quotes": "quote_sync"}


def backfill_flow(flow: str | None) -> str | None:
    """The flow a `--flow` value names (an alias resolved); ValueError for an unknown one."""
    flow = BACKFILL_ALIASES.get(flow, flow) if flow is not None else None
    if flow is not None and flow not in BACKFILL_SOURCES:
        raise ValueError(f"no flow {flow!r}; known: {', '.join(sorted([*BACKFILL_SOURCES, *BACKFILL_ALIASES]))}")
    return flow


def _backfill_event_of(poller: Poller, flow: str | None, since: datetime) -> Callable[[Any], NewEvent]:
    """A backfill of flow 1 by name lifts the go-live cut-off to `since` for the deals it reads (its own events,
    source `backfill`); any other backfill stores what the poll would, and the cut-off stands."""
    if flow == CLOSED_WON and poller.name == SalesforceClosedWonPoller.CURSOR:
        return lambda record: backfill_event(record, since.date())
    return poller.event_of


async def backfill(store: Store, pollers: Sequence[Poller], since: datetime, *, flow: str | None = None,
                   on_progress: Callable[[str, int], None] | None = None, batch: int = 200) -> dict[str, int]:
    """Read every change since `since` again and store it as inbox events. Keys dedupe what is already there,
    and no poll cursor moves, so a backfill can neither lose nor duplicate work."""
    flow = backfill_flow(flow)
    chosen = [p for p in pollers if flow is None or p.name in BACKFILL_SOURCES[flow]]
    stored: dict[str, int] = {}
    for poller in chosen:
        pending: list[NewEvent] = []
        count = 0
        event_of = _backfill_event_of(poller, flow, since)
        async for record in poller.fetch_since(since):
            pending.append(event_of(record))
            if len(pending) >= batch:
                count += sum(await store.add_events(pending))
                pending = []
                if on_progress:
                    on_progress(poller.name, count)
        if pending:
            count += sum(await store.add_events(pending))
        if on_progress:
            on_progress(poller.name, count)
        stored[poller.name] = count
    return stored


async def preview_backfill(pollers: Sequence[Poller], since: datetime, flows: Sequence[Flow], fetcher: Fetcher, *,
                           flow: str | None = None, sync_status: SyncStatus | None = None) -> Preview:
    """A dry-run diff of a backfill: the changes since `since` read once, every resulting event planned
    together (so the lookups batch across all of them), nothing stored and nothing sent."""
    flow = backfill_flow(flow)
    chosen = [p for p in pollers if flow is None or p.name in BACKFILL_SOURCES[flow]]
    events: dict[str, Event] = {}
    for poller in chosen:
        event_of = _backfill_event_of(poller, flow, since)
        async for record in poller.fetch_since(since):
            new = event_of(record)
            events.setdefault(new.key, _as_event(new))
    wanted = [f for f in flows if flow is None or f.name == flow]
    return await preview_safely(list(events.values()), wanted, fetcher, sync_status=sync_status)


async def assess_won_deals(poller: Poller, since: datetime, flow: ClosedWonToOrderFlow, fetcher: Fetcher
                           ) -> list[dict[str, Any]]:
    """A dry run of `backfill --flow closed_won`: each won deal changed since `since`, whether it would be
    ordered and why (ordered already, by which link; won before the cut-off; would be created). The deals
    are looked up together, as a worker would in one claim; nothing is stored or sent."""
    views: dict[str, FlowEvent] = {}
    async for record in poller.fetch_since(since):
        new = backfill_event(record, since.date())
        views.setdefault(str(record["Id"]), FlowEvent(key=new.key, type=new.type, source=new.source,
                                                      payload=new.payload))
    found = Found()
    while True:
        needs = Needs()
        for view in views.values():
            needs = needs | flow.needs(view, found)
        missing = needs.minus(found)
        if not missing:
            break
        found = found.merged(await fetcher.fetch(missing))
    rows = []
    for opportunity_id, view in views.items():
        assessment = flow.assess(view, found)
        opportunity = found.sf_records.get(("Opportunity", opportunity_id)) or {}
        order = assessment.order or {}
        rows.append({"opportunity": opportunity_id, "name": opportunity.get("Name"),
                     "close_date": opportunity.get("CloseDate"), "verdict": assessment.verdict,
                     "link": assessment.link, "order": order.get("orderNumber") or order.get("id"),
                     "reason": assessment.reason})
    return rows


# --- reconciliation ---------------------------------------------------------------------------------


async def read_report(path: Path) -> dict[str, Any] | None:
    """The latest drift report the nightly reconciliation (or `reconcile`) wrote; None before the first."""
    target = anyio.Path(path)
    if not await target.exists():
        return None
    return cast(dict[str, Any], json.loads(await target.read_text(encoding="utf-8")))


async def start_reconciliation(store: Store, start: Callable[[], Awaitable[str]], *, actor: str) -> str:
    """Start a reconciliation in the running daemon (`start`: its ReconciliationJob.request, which raises
    RunRefused with the reason and starts nothing), and record who asked. Returns what the operator is told."""
    message = await start()
    await record_action(store, actor, "run reconciliation now", "reconciliation")
    return message


REPAIR_LOOKBACK_DAYS = 7  # repairs are looked for on the report's day and up to this many days after it


async def reconciliation_view(store: Store, path: Path, *, today: date | None = None) -> dict[str, Any] | None:
    """The latest report as the page shows it: each drifted row with its repair's state (`repair`: None when no
    repair event was queued, or it finished before the report), and `drift`: the drift left, customers whose
    repair wrote the account after the report not counted. None before the first report."""
    report = await read_report(path)
    if report is None:
        return None
    generated_at = _parse_time(report.get("generated_at"))
    first = generated_at.date() if generated_at else (today or utcnow().date())
    days = _days(first, today or utcnow().date())
    outcomes: dict[str, RepairOutcome] = {}
    letters: dict[int, int] | None = None  # event id -> open dead letter id, read once if any repair failed
    conflicts: dict[int, int] | None = None
    for row in report.get("rows", ()):
        if row.get("drift") == Drift.IN_SYNC.value:
            continue
        event = await _newest_repair(store, str(row["customer_id"]), days)
        if event is None:
            continue
        written = [w.at for w in await store.list_writes(event_id=event.id, limit=100)
                   if w.system == "salesforce" and w.outcome == "ok"]
        letter_id = conflict_id = None
        if event.status is EventStatus.DEAD:
            if letters is None:
                letters = {d.event_id: d.id for d in await store.list_dead_letters(limit=10_000)
                           if d.event_id is not None}
            letter_id = letters.get(event.id)
        if event.status is EventStatus.CONFLICT:
            if conflicts is None:
                conflicts = {c.event_id: c.id for c in await store.list_conflicts(status=ConflictStatus.OPEN,
                                                                                  limit=10_000)
                             if c.event_id is not None}
            conflict_id = conflicts.get(event.id)
        outcome = repair_outcome(RepairEvent(
            event_id=event.id, status=event.status.value, error=event.last_error, dead_letter_id=letter_id,
            conflict_id=conflict_id, written_at=max(written) if written else None,
            finished_at=event.updated_at if event.status is EventStatus.DONE else None), generated_at)
        if outcome is not None:
            outcomes[str(row["customer_id"])] = outcome
            row["repair"] = outcome.as_dict()
    report["drift"] = drift_summary(report, outcomes).as_dict()
    return report


async def _newest_repair(store: Store, customer_id: str, days: Sequence[date]) -> Event | None:
    for day in reversed(days):
        event = await store.find_event(repair_key(customer_id, day))
        if event is not None:
            return event
    return None


def _days(first: date, last: date) -> list[date]:
    last = min(last, first + timedelta(days=REPAIR_LOOKBACK_DAYS))
    return [first + timedelta(days=n) for n in range((last - first).days + 1)]


def _parse_time(value: Any) -> datetime | None:
    try:
        return datetime.fromisoformat(str(value)) if value else None
    except ValueError:
        return None


def _as_event(new: NewEvent) -> Event:
    """A repair event as it would be stored, for a preview (it is not stored)."""
    now = utcnow()
    return Event(id=0, source=new.source, key=new.key, type=new.type, payload=new.payload,
                 status=EventStatus.RECEIVED, attempts=0, next_attempt_at=now, last_error=None, claimed_by=None,
                 claimed_until=None, received_at=now, updated_at=now)


async def preview_repairs(customer_ids: Sequence[str], flows: Sequence[Flow], fetcher: Fetcher, *,
                          sync_status: SyncStatus | None = None) -> Preview:
    """A dry-run diff of what repairing these customers' accounts would write now; nothing is sent."""
    day = utcnow().date()
    return await preview_safely([_as_event(repair_event(c, day)) for c in customer_ids], flows, fetcher,
                                sync_status=sync_status)


async def queue_repairs(store: Store, customer_ids: Sequence[str], *, actor: str) -> int:
    """Queue a repair of each customer's account (flow 2 rewrites it through the normal executor); a repeat
    the same day adds nothing. Returns how many were new."""
    day = utcnow().date()
    added = sum(await store.add_events([repair_event(c, day) for c in customer_ids]))
    await record_action(store, actor, "repair MRR drift", "reconciliation", customers=list(customer_ids), queued=added)
    return added


async def replicas(store: Store, *, now: datetime | None = None) -> list[dict[str, Any]]:
    """The daemon processes sharing the store, by their heartbeats: alive when heard from lately."""
    from revdaemon.engine.replicas import HEARTBEAT_SECONDS, STALE_AFTER_BEATS

    now = now or utcnow()
    stale = timedelta(seconds=HEARTBEAT_SECONDS * STALE_AFTER_BEATS)
    return [{"id": r.id, "host": r.host, "pid": r.pid, "started_at": r.started_at.isoformat(),
             "last_heartbeat": r.last_heartbeat.isoformat(), "leader": r.is_leader,
             "alive": now - r.last_heartbeat <= stale} for r in await store.list_replicas()]


async def active_replica(store: Store, *, now: datetime | None = None) -> dict[str, Any] | None:
    """The active replica (the one running workers, executor and scheduler): its id, leadership epoch and since when,
    as the store records it; `alive` while its heartbeat says it leads (not so: it died or went silent, and another
    takes over within seconds). None before any replica has led."""
    leadership = await store.leadership()
    if leadership is None:
        return None
    beats = {r["id"]: r for r in await replicas(store, now=now)}
    beat = beats.get(leadership.replica_id)
    return {"id": leadership.replica_id, "epoch": leadership.epoch, "since": leadership.since.isoformat(),
            "host": beat["host"] if beat else None,
            "alive": bool(beat and beat["alive"] and beat["leader"])}



# --- shadow mode ------------------------------------------------------------------------------------


async def shadow_report(store: Store, *, since: datetime | None = None) -> dict[str, Any]:
    """What shadow mode would have written since `since` (all of it by default), per flow and object, the
    conflicts and dead letters it would have opened, and its flags; with the promotion once there is one."""
    entries = await store.list_shadow(since=since)
    report = build_shadow_report(ShadowLine(event_key=e.event_key, flow=e.flow, outcome=e.outcome, system=e.system,
                                            action=e.action, target=e.target, warnings=e.warnings, flags=e.flags,
                                            note=e.note, changes=e.changes) for e in entries)
    promotion = await store.shadow_promotion()
    return {**report.as_dict(), "since": _plain(since), "first_at": _plain(entries[0].at) if entries else None,
            "last_at": _plain(entries[-1].at) if entries else None,
            "promoted": _plain(asdict(promotion)) if promotion else None}


async def promote_shadow(store: Store, *, actor: str, go_live: date | None = None) -> dict[str, Any]:
    """End shadow mode: the daemon's workers write from their next claim. Shadowed events stay done (their writes
    were never sent, and the state may have moved since); the go-live cut-off becomes `go_live`, or today."""
    before = await store.shadow_promotion()
    promotion = await store.promote_shadow(actor=actor, go_live=go_live)
    if before is None:
        await record_action(store, actor, "promote shadow mode", "shadow", go_live=promotion.go_live.isoformat())
    return {**_plain(asdict(promotion)), "already": before is not None}


async def running_mode(store: Store, configured: str) -> dict[str, Any]:
    """The mode the workers are in: "shadow" while `configured` so (mode: shadow, or run --shadow) and not promoted
    (a promotion ends shadow mode whatever config.yaml says: engine/worker.py), else "live"; with the promotion
    once there is one, and whether shadow mode ever planned anything here."""
    promotion = await store.shadow_promotion()
    return {"mode": "shadow" if configured == "shadow" and promotion is None else "live", "configured": configured,
            "promoted": {**_plain(asdict(promotion)), "go_live": promotion.go_live.isoformat()} if promotion else None,
            "ran": bool(await store.list_shadow(limit=1))}


async def shadow_writes(store: Store, *, flow: str, system: str, sobject: str, since: datetime | None = None,
                        limit: int = 300) -> dict[str, Any]:
    """The writes shadow mode planned for one row of the report's counts (flow, system, object), oldest first,
    each with its field diff; at most `limit` of them, and how many there are in all."""
    # Filtered here, not in SQL: the object is read out of the target text, as the report counts it.
    entries = [e for e in await store.list_shadow(since=since) if e.outcome == "write" and e.flow == flow
               and (e.system or "?") == system and object_of(e.target) == sobject]
    return {"total": len(entries), "writes": [
        {"id": e.id, "at": _plain(e.at), "event_key": e.event_key, "action": e.action, "target": e.target,
         "ref": target_ref(e.target, e.system), "changes": [dict(c) for c in e.changes], "warnings": list(e.warnings),
         "flags": list(e.flags), "note": e.note} for e in entries[:limit]]}


async def mode_status(store: Store, configured: str) -> dict[str, Any]:
    """The running mode (running_mode) and, while shadow mode has planned writes not yet promoted, when it first
    planned and how many writes: what `status` says about the mode."""
    mode = await running_mode(store, configured)
    if mode["ran"] and mode["promoted"] is None:
        report = await shadow_report(store)
        mode.update(first_at=report["first_at"], writes=report["writes"])
    return mode
