"""The operator's actions, written once: the CLI calls them now, and the console will call the same.

Each takes an open `Store` and returns plain values (dicts and lists) that a table, a JSON line or a
web page can show; none prints or exits.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict
from datetime import datetime
from pathlib import Path
from typing import Any

import anyio

from revdaemon.engine.pollers import Poller
from revdaemon.errors import RecordNotFound
from revdaemon.store import Store
from revdaemon.store.records import ConflictRecord, DeadLetter, Event, NewEvent, Resolution
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


def event_row(event: Event) -> dict[str, Any]:
    return {"id": event.id, "key": event.key, "type": event.type, "source": event.source,
            "status": event.status.value, "attempts": event.attempts, "last_error": event.last_error,
            "received_at": _plain(event.received_at), "next_attempt_at": _plain(event.next_attempt_at)}


async def list_events(store: Store, *, status: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
    chosen = EventStatus(status) if status else None
    return [event_row(e) for e in await store.list_events(status=chosen, limit=limit)]


async def show_event(store: Store, event_id: int) -> dict[str, Any]:
    event = await store.get_event(event_id)
    if event is None:
        raise RecordNotFound(f"no event {event_id}")
    writes = await store.list_writes(event_id=event_id, limit=100)
    return {**event_row(event), "payload": event.payload,
            "writes": [_plain(asdict(w)) for w in writes]}


def letter_row(letter: DeadLetter) -> dict[str, Any]:
    return {"id": letter.id, "event_id": letter.event_id, "system": letter.system, "operation": letter.operation,
            "error_code": letter.error_code, "status": letter.status, "error": letter.error,
            "record_ref": letter.record_ref, "created_at": _plain(letter.created_at),
            "replayed_at": _plain(letter.replayed_at)}


async def list_dead_letters(store: Store, *, include_replayed: bool = False, limit: int = 50) -> list[dict[str, Any]]:
    return [letter_row(d) for d in await store.list_dead_letters(include_replayed=include_replayed, limit=limit)]


async def show_dead_letter(store: Store, letter_id: int) -> dict[str, Any]:
    letter = await store.get_dead_letter(letter_id)
    if letter is None:
        raise RecordNotFound(f"no dead letter {letter_id}")
    return {**letter_row(letter), "request": letter.request}


async def replay_dead_letters(store: Store, letter_ids: list[int] | None = None) -> list[dict[str, Any]]:
    """Put dead letters' events back in the inbox (all open ones when `letter_ids` is None)."""
    ids = letter_ids if letter_ids is not None else [d.id for d in await store.list_dead_letters(limit=10_000)]
    return [event_row(await store.replay_dead_letter(letter_id)) for letter_id in ids]


def conflict_row(conflict: ConflictRecord) -> dict[str, Any]:
    return {"id": conflict.id, "event_id": conflict.event_id, "flow": conflict.flow,
            "record_ref": conflict.record_ref, "reason": conflict.reason, "status": conflict.status.value,
            "resolution": conflict.resolution.value if conflict.resolution else None,
            "resolved_by": conflict.resolved_by, "created_at": _plain(conflict.created_at)}


async def list_conflicts(store: Store, *, include_resolved: bool = False, limit: int = 50) -> list[dict[str, Any]]:
    from revdaemon.store.records import ConflictStatus

    status = None if include_resolved else ConflictStatus.OPEN
    return [conflict_row(c) for c in await store.list_conflicts(status=status, limit=limit)]


async def show_conflict(store: Store, conflict_id: int) -> dict[str, Any]:
    conflict = await store.get_conflict(conflict_id)
    if conflict is None:
        raise RecordNotFound(f"no conflict {conflict_id}")
    names = sorted({*conflict.nue_values, *conflict.salesforce_values, *conflict.synced_values})
    fields = [{"field": n, "nue": conflict.nue_values.get(n), "salesforce": conflict.salesforce_values.get(n),
               "synced": conflict.synced_values.get(n),
               "differs": conflict.nue_values.get(n) != conflict.salesforce_values.get(n)} for n in names]
    return {**conflict_row(conflict), "comment": conflict.comment, "fields": fields}


async def resolve_conflict(store: Store, conflict_id: int, *, take: str, actor: str,
                           comment: str | None = None) -> dict[str, Any]:
    """Record who decided what; the event goes back to the inbox (take a side) or is finished (skip)."""
    resolution = {"nue": Resolution.TAKE_NUE, "salesforce": Resolution.TAKE_SALESFORCE, "skip": Resolution.SKIP}[take]
    return conflict_row(await store.resolve_conflict(conflict_id, resolution=resolution, actor=actor,
                                                     comment=comment))


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


async def backfill(store: Store, pollers: Sequence[Poller], since: datetime, *, flow: str | None = None,
                   on_progress: Callable[[str, int], None] | None = None, batch: int = 200) -> dict[str, int]:
    """Read every change since `since` again and store it as inbox events. Keys dedupe what is already there,
    and no poll cursor moves, so a backfill can neither lose nor duplicate work."""
    if flow is not None and flow not in BACKFILL_SOURCES:
        raise ValueError(f"no flow {flow!r}; known: {', '.join(sorted(BACKFILL_SOURCES))}")
    chosen = [p for p in pollers if flow is None or p.name in BACKFILL_SOURCES[flow]]
    stored: dict[str, int] = {}
    for poller in chosen:
        pending: list[NewEvent] = []
        count = 0
        async for record in poller.fetch_since(since):
            pending.append(poller.event_of(record))
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
