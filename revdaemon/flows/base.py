"""What every flow shares: the event it is given, what it asks to have looked up, and what it is given
back. A flow is two pure functions, `needs(event, found) -> Needs` and `plan(event, found) -> Plan`. The worker
asks for needs with what it has found so far (empty at first), fetches what is new, batched across every
event of a claim, and asks again until nothing new is needed (a read can depend on an earlier one: the
Salesforce account is known only once the Nue customer is read). Then it asks for the plan.

A flow is given an event only if it takes the event's type from the event's source (`takes`): the type
alone is whatever a webhook body says, the source is set by whoever stored the event (flows/sources.py).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Any, Protocol

from revdaemon.domain.synced import SyncedRecord
from revdaemon.flows.plan import Plan


@dataclass(frozen=True, kw_only=True)
class FlowEvent:
    """An inbox event as a flow sees it."""

    key: str
    type: str
    source: str
    payload: Mapping[str, Any]

    @property
    def data(self) -> Mapping[str, Any]:
        data = self.payload.get("data")
        return data if isinstance(data, Mapping) else {}

    @property
    def resource_id(self) -> str | None:
        value = self.data.get("id") or self.data.get("Id")
        return str(value) if value else None


_NEEDS_SETS = ("nue_customers", "nue_subscriptions_of", "nue_orders_of", "nue_contacts_of", "nue_invoices",
               "nue_quotes", "nue_quotes_of", "sf_records", "sf_fields", "sf_children", "synced_of", "id_links")


def _or(a: frozenset[Any], b: frozenset[Any]) -> frozenset[Any]:
    return a | b if a and b else a or b


@dataclass(frozen=True, kw_only=True)
class Needs:
    """Reads the worker performs before planning; merged across events and fetched in batches."""

    nue_customers: frozenset[str] = frozenset()  # Nue customer ids or Salesforce Account ids
    nue_subscriptions_of: frozenset[str] = frozenset()  # customer ids whose subscriptions to read
    nue_orders_of: frozenset[str] = frozenset()  # customer ids whose orders to read
    nue_contacts_of: frozenset[str] = frozenset()  # customer ids whose contacts to read
    nue_invoices: frozenset[str] = frozenset()
    nue_quotes: frozenset[str] = frozenset()  # quote ids, read whole (with products)
    nue_quotes_of: frozenset[str] = frozenset()  # Salesforce opportunity ids whose quotes to list
    sf_records: frozenset[tuple[str, str]] = frozenset()  # (sobject, id)
    sf_fields: frozenset[tuple[str, str]] = frozenset()  # (sobject, field) to select besides Id
    sf_children: frozenset[tuple[str, str, str]] = frozenset()  # (sobject, parent field, parent id)
    catalog: bool = False
    synced_of: frozenset[str] = frozenset()  # record refs whose last synced values to read (revdaemon's store)
    id_links: frozenset[tuple[str, str]] = frozenset()  # (object type, Nue id) whose id link to read (the store)
    go_live: bool = False  # the store's go-live date (Store.go_live)

    def minus(self, found: Found) -> Needs:
        """What is still to fetch after `found`. A Salesforce object read without a field now asked for is
        read again whole (a later lookup round may want fields an earlier one did not select)."""
        short = {sobject for sobject, name in self.sf_fields if name not in found.sf_selected.get(sobject, ())}
        return Needs(
            nue_customers=frozenset(self.nue_customers - found.nue_customers.keys()),
            nue_subscriptions_of=frozenset(self.nue_subscriptions_of - found.nue_subscriptions.keys()),
            nue_orders_of=frozenset(self.nue_orders_of - found.nue_orders.keys()),
            nue_contacts_of=frozenset(self.nue_contacts_of - found.nue_contacts.keys()),
            nue_invoices=frozenset(self.nue_invoices - found.nue_invoices.keys()),
            nue_quotes=frozenset(self.nue_quotes - found.nue_quotes.keys()),
            nue_quotes_of=frozenset(self.nue_quotes_of - found.nue_quotes_of.keys()),
            sf_records=frozenset(k for k in self.sf_records if k not in found.sf_records or k[0] in short),
            sf_fields=self.sf_fields,
            sf_children=frozenset(k for k in self.sf_children if k not in found.sf_children or k[0] in short),
            catalog=self.catalog and not found.catalog,
            synced_of=frozenset(self.synced_of - found.synced.keys()),
            id_links=frozenset(self.id_links - found.id_links.keys()),
            go_live=self.go_live and found.go_live is None,
        )

    def __bool__(self) -> bool:
        return bool(self.nue_customers or self.nue_subscriptions_of or self.nue_orders_of or self.nue_contacts_of
                    or self.nue_invoices or self.nue_quotes or self.nue_quotes_of or self.sf_records
                    or self.sf_children or self.catalog or self.synced_of or self.id_links or self.go_live)

    @classmethod
    def union(cls, many: Iterable[Needs]) -> Needs:
        """All of `many` at once: one set per field built from every part, where `a | b | c ...` would copy the
        growing sets again for each part (a claim of hundreds of events)."""
        parts = list(many)
        if len(parts) == 1:
            return parts[0]
        sets = {name: set[Any]() for name in _NEEDS_SETS}
        for part in parts:
            for name in _NEEDS_SETS:
                sets[name].update(getattr(part, name))
        return cls(**{name: frozenset(values) for name, values in sets.items()},
                   catalog=any(p.catalog for p in parts), go_live=any(p.go_live for p in parts))

    def __or__(self, other: Needs) -> Needs:
        # Flows or small needs together many times per claim (28,000 times in a 10,000-event burst): only the
        # fields `other` adds to are built anew, and the copy skips the frozen dataclass's __init__.
        mine, theirs = self.__dict__, other.__dict__
        changes: dict[str, Any] = {name: _or(mine[name], theirs[name]) for name in _NEEDS_SETS if theirs[name]}
        if other.catalog and not self.catalog:
            changes["catalog"] = True
        if other.go_live and not self.go_live:
            changes["go_live"] = True
        if not changes:
            return self
        merged = object.__new__(Needs)
        merged.__dict__.update(mine)
        merged.__dict__.update(changes)
        return merged


@dataclass(frozen=True, kw_only=True)
class Found:
    """The current state of everything that was asked for. A missing record maps to None."""

    nue_customers: Mapping[str, Mapping[str, Any] | None] = field(default_factory=dict)
    nue_subscriptions: Mapping[str, list[Mapping[str, Any]]] = field(default_factory=dict)
    nue_orders: Mapping[str, list[Mapping[str, Any]]] = field(default_factory=dict)
    nue_contacts: Mapping[str, list[Mapping[str, Any]]] = field(default_factory=dict)  # customer id -> contacts
    nue_invoices: Mapping[str, Mapping[str, Any] | None] = field(default_factory=dict)
    nue_quotes: Mapping[str, Mapping[str, Any] | None] = field(default_factory=dict)
    nue_quotes_of: Mapping[str, list[Mapping[str, Any]]] = field(default_factory=dict)
    sf_records: Mapping[tuple[str, str], Mapping[str, Any] | None] = field(default_factory=dict)
    sf_children: Mapping[tuple[str, str, str], list[Mapping[str, Any]]] = field(default_factory=dict)
    sf_selected: Mapping[str, frozenset[str]] = field(default_factory=dict)  # fields read, per object
    catalog: tuple[Mapping[str, Any], ...] = ()
    synced: Mapping[str, SyncedRecord] = field(default_factory=dict)  # record ref -> last synced values
    id_links: Mapping[tuple[str, str], str | None] = field(default_factory=dict)  # -> the Salesforce id, or None
    go_live: date | None = None  # the store's go-live date once read (date.min read without a store: none)

    def merged(self, other: Found) -> Found:
        return Found(
            nue_customers={**self.nue_customers, **other.nue_customers},
            nue_subscriptions={**self.nue_subscriptions, **other.nue_subscriptions},
            nue_orders={**self.nue_orders, **other.nue_orders},
            nue_contacts={**self.nue_contacts, **other.nue_contacts},
            nue_invoices={**self.nue_invoices, **other.nue_invoices},
            nue_quotes={**self.nue_quotes, **other.nue_quotes},
            nue_quotes_of={**self.nue_quotes_of, **other.nue_quotes_of},
            sf_records={**self.sf_records, **other.sf_records},
            sf_children={**self.sf_children, **other.sf_children},
            sf_selected={**self.sf_selected, **other.sf_selected},
            catalog=other.catalog or self.catalog,
            synced={**self.synced, **other.synced},
            id_links={**self.id_links, **other.id_links},
            go_live=other.go_live or self.go_live,
        )


class Flow(Protocol):
    name: str
    event_types: frozenset[str]
    sources: frozenset[str]  # where it takes those types from (flows/sources.py)

    def needs(self, event: FlowEvent, found: Found) -> Needs: ...

    def plan(self, event: FlowEvent, found: Found) -> Plan: ...


def takes(flow: Flow, event_type: str, source: str) -> bool:
    """Whether `flow` acts on an event of this type from this source."""
    return event_type in flow.event_types and source in flow.sources


def why_not_taken(flows: Sequence[Flow], event_type: str, source: str) -> str:
    """Why none of `flows` takes an event (for the log line of an event finished without a job)."""
    handling = [flow for flow in flows if event_type in flow.event_types]
    if not handling:
        return "no flow handles this type"
    names = ", ".join(sorted(flow.name for flow in handling))
    trusted = ", ".join(sorted({s for flow in handling for s in flow.sources}))
    return f"{names} take {event_type} only from {trusted}, not from {source}"
