"""Salesforce change events (Change Data Capture over the Pub/Sub API, salesforce-api.md §4.3), read and judged. Pure.

A change event is a hint, like a webhook: it names records that changed, and the worker re-reads them before it
plans anything. So this module only answers two questions about a decoded event: which records does it name, and
is that worth an inbox event (`react`)?

- The payload is Avro; `read_change_event` turns the decoded record into a `ChangeEvent`. The header's
  `changedFields` and `nulledFields` come as the Pub/Sub API's bitmaps ("0x1E": bit i names the schema's field i;
  "3-0x04": a field of the compound field at position 3), decoded against the event's own schema [doc: Pub/Sub API
  guide, "Event Deserialization Considerations"].
- What is watched (`WATCHED`): an opportunity created, undeleted, or whose stage moved, may be a deal won, so it
  becomes an `opportunity.closed_won` hint (flow 1 re-reads it and skips one that is not won). Every other change
  of an opportunity is left to the poll: revdaemon's own write-back (the order id) is one, and it must not wake the
  worker again. A gap event (GAP_CREATE, GAP_UPDATE, GAP_UNDELETE: Salesforce could not build the event, so it
  carries ids but no fields) names its records: each is re-read. GAP_OVERFLOW (too many changes in one
  transaction for an event each) names none: the object is polled at once.
- An opportunity revdaemon itself created (flow 5's amendment, Closed Won from the start; flow 3's renewal) is no
  deal to order: its CREATE, committed by revdaemon's user and carrying a key field only revdaemon sets
  (`OwnCreates`), is not a hint. Both must hold: the integration user may be shared (Nue's own sync, another tool),
  and a person's later edit of that opportunity is an UPDATE, judged as any other. Without this, each amendment
  echoed back as a won deal that flow 1 read whole (the opportunity, its lines, its account, the Nue customer, its
  orders and quotes) to find it ordered already.
- The hint is keyed as the poll keys the same change, `sf:Opportunity:<id>:<modified time>`, where the event
  carries LastModifiedDate (a create, or an update that moved it): the poll's later re-read of that change
  stores nothing new, and a redelivered event neither. Change events carry no SystemModstamp [doc: CDC guide,
  "Change Event Message Structure"]; LastModifiedDate equals it for a person's or an API's edit [assumed]. An
  event without it is keyed by its transaction, which a redelivery repeats and a new change does not.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

HEADER = "ChangeEventHeader"


class ChangeType(enum.StrEnum):
    CREATE = "CREATE"
    UPDATE = "UPDATE"
    DELETE = "DELETE"
    UNDELETE = "UNDELETE"
    GAP_CREATE = "GAP_CREATE"
    GAP_UPDATE = "GAP_UPDATE"
    GAP_DELETE = "GAP_DELETE"
    GAP_UNDELETE = "GAP_UNDELETE"
    GAP_OVERFLOW = "GAP_OVERFLOW"

    @property
    def is_gap(self) -> bool:
        return self.value.startswith("GAP_")


@dataclass(frozen=True, kw_only=True)
class ChangeEvent:
    entity: str
    record_ids: tuple[str, ...]
    change_type: ChangeType
    transaction_key: str
    sequence_number: int
    committed_at: datetime
    commit_user: str
    changed_fields: tuple[str, ...] = ()
    nulled_fields: tuple[str, ...] = ()
    fields: Mapping[str, Any] = field(default_factory=dict)  # the record's fields the event carries (not None)
    replay_id: bytes = b""


@dataclass(frozen=True, kw_only=True)
class Watch:
    """An object whose change events become inbox hints of one type, when one of `fields` changed."""

    entity: str
    event_type: str
    fields: frozenset[str]


WATCHED: dict[str, Watch] = {
    "Opportunity": Watch(entity="Opportunity", event_type="opportunity.closed_won",
                         fields=frozenset({"StageName", "IsWon", "IsClosed"})),
}


@dataclass(frozen=True, kw_only=True)
class OwnCreates:
    """How revdaemon's own creates are known: the user it writes as, and the fields only it sets on the records
    it creates (flows' keys such as Nue_Amendment_Key__c)."""

    user: str
    markers: frozenset[str]

    def made(self, event: ChangeEvent) -> bool:
        # Ids compare by their first 15 characters (the 18-character form adds a case checksum).
        return (event.change_type is ChangeType.CREATE and bool(self.user)
                and event.commit_user[:15] == self.user[:15] and any(m in event.fields for m in self.markers))


@dataclass(frozen=True, kw_only=True)
class Hint:
    """One record to re-read: an inbox event's key, type and what the change event said about it."""

    key: str
    event_type: str
    record_id: str
    payload: dict[str, Any]


@dataclass(frozen=True, kw_only=True)
class Reaction:
    hints: tuple[Hint, ...] = ()
    poll: str | None = None  # an object to poll now (GAP_OVERFLOW)
    why: str = ""  # for the log, when nothing is done


class UnreadableEvent(ValueError):
    """The payload does not have the shape of a change event."""


def read_change_event(record: Mapping[str, Any], schema: Mapping[str, Any], replay_id: bytes = b"") -> ChangeEvent:
    """A decoded Avro change event (and the schema it was written with) as a `ChangeEvent`."""
    header = record.get(HEADER)
    if not isinstance(header, Mapping):
        raise UnreadableEvent(f"no {HEADER}")
    try:
        change_type = ChangeType(str(header["changeType"]))
        record_ids = tuple(str(i) for i in header.get("recordIds") or ())
        committed = datetime.fromtimestamp(int(header["commitTimestamp"]) / 1000, UTC)
    except (KeyError, ValueError, TypeError) as exc:
        raise UnreadableEvent(f"bad {HEADER}: {exc}") from exc
    return ChangeEvent(
        entity=str(header.get("entityName") or ""), record_ids=record_ids, change_type=change_type,
        transaction_key=str(header.get("transactionKey") or ""), sequence_number=int(header.get("sequenceNumber") or 0),
        committed_at=committed, commit_user=str(header.get("commitUser") or ""),
        changed_fields=decode_bitmaps(header.get("changedFields") or (), schema),
        nulled_fields=decode_bitmaps(header.get("nulledFields") or (), schema),
        fields={k: v for k, v in record.items() if k != HEADER and v is not None}, replay_id=replay_id)


def decode_bitmaps(values: Sequence[str], schema: Mapping[str, Any]) -> tuple[str, ...]:
    """The field names a header's bitmap list names ("0x..." top level, "<pos>-0x..." inside a compound field).
    A value that is already a field name (the Streaming API's form) is kept as it is."""
    top = _fields(schema)
    names: list[str] = []
    for value in values:
        parent, _, bitmap = value.rpartition("-") if "-" in value else ("", "", value)
        if not bitmap.startswith("0x"):
            names.append(value)
            continue
        if not parent:
            names += [top[i]["name"] for i in _set_bits(bitmap) if i < len(top)]
            continue
        position = int(parent)
        if position >= len(top):
            continue
        compound = top[position]
        children = _fields(_record_type(compound.get("type")))
        names += [f"{compound['name']}.{children[i]['name']}" for i in _set_bits(bitmap) if i < len(children)]
    return tuple(names)


def react(event: ChangeEvent, own: OwnCreates | None = None) -> Reaction:
    """What the inbox gets for one change event (see the module's docstring)."""
    watch = WATCHED.get(event.entity)
    if watch is None:
        return Reaction(why=f"{event.entity or 'an unnamed entity'} is not watched")
    if own is not None and own.made(event):
        return Reaction(why="revdaemon's own create (its user, its key): no deal to order")
    if event.change_type is ChangeType.GAP_OVERFLOW:
        return Reaction(poll=event.entity)
    if event.change_type in (ChangeType.DELETE, ChangeType.GAP_DELETE):
        return Reaction(why="a deleted record has nothing to sync")
    if event.change_type is ChangeType.UPDATE and not watch.fields & set(event.changed_fields):
        return Reaction(why="none of the watched fields changed")
    return Reaction(hints=tuple(_hint(watch, event, record_id) for record_id in event.record_ids))


def _hint(watch: Watch, event: ChangeEvent, record_id: str) -> Hint:
    modified = event.fields.get("LastModifiedDate")
    stamp = _wire_datetime(modified) if modified is not None and not event.change_type.is_gap else None
    key = f"sf:{event.entity}:{record_id}:{stamp}" if stamp else \
        f"sf:{event.entity}:{record_id}:cdc:{event.transaction_key}:{event.sequence_number}"
    data = {"Id": record_id, **{k: v for k, v in event.fields.items() if k in watch.fields}}
    change = {"changeType": event.change_type.value, "committedAt": event.committed_at.isoformat(),
              "commitUser": event.commit_user, "transactionKey": event.transaction_key,
              "changedFields": list(event.changed_fields), "replayId": event.replay_id.hex()}
    return Hint(key=key, event_type=watch.event_type, record_id=record_id, payload={"data": data, "change": change})


def _wire_datetime(value: Any) -> str | None:
    """A datetime field's value as the REST API writes SystemModstamp (`2026-12-06T17:10:26.000+0000`). Avro
    carries it as epoch milliseconds [doc: "epoch based"], a `long` that a `timestamp-millis` logical type (if the
    schema has one [assumed]) makes a datetime when decoded; a text value is taken as already in that form."""
    if isinstance(value, bool):
        return None
    moment = datetime.fromtimestamp(value / 1000, UTC) if isinstance(value, int) else value
    if isinstance(moment, datetime):
        moment = moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)
        return f"{moment:%Y-%m-%dT%H:%M:%S}.{moment.microsecond // 1000:03d}+0000"
    return value if isinstance(value, str) and value else None


def _set_bits(bitmap: str) -> list[int]:
    number = int(bitmap[2:] or "0", 16)
    return [i for i in range(number.bit_length()) if number >> i & 1]


def _fields(schema: Any) -> list[Mapping[str, Any]]:
    fields = schema.get("fields") if isinstance(schema, Mapping) else None
    return [f for f in fields if isinstance(f, Mapping)] if isinstance(fields, list) else []


def _record_type(type_: Any) -> Any:
    """The record inside an optional field's union (["null", {...}])."""
    if isinstance(type_, list):
        return next((t for t in type_ if isinstance(t, Mapping) and t.get("type") == "record"), None)
    return type_
