"""Runs the reads flows ask for, batched: one GraphQL `_in` read for many customers, one `customerIds`
read for many customers' subscriptions or orders, one SOQL `Id IN (...)` per object type.

This is what makes a webhook a hint: the state a flow plans from is always read here, never taken from
the notification's body.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from datetime import date
from typing import Any

from revdaemon.connectors import nue_wire, salesforce_wire
from revdaemon.connectors.nue import NueClient
from revdaemon.connectors.salesforce import SalesforceClient
from revdaemon.errors import Permanent
from revdaemon.flows.base import Found, Needs
from revdaemon.limits import Priority
from revdaemon.store import Store
from revdaemon.store.records import SyncedRecord

SOQL_IN_MAX = 200  # ids per IN list: keeps the query text well under Salesforce's 100,000-character limit


class Fetcher:
    def __init__(self, salesforce: SalesforceClient, nue: NueClient, store: Store | None = None) -> None:
        self._sf = salesforce
        self._nue = nue
        self._store = store  # for the last synced values; without it none are known

    @property
    def clients(self) -> tuple[SalesforceClient, NueClient]:
        return self._sf, self._nue

    async def fetch(self, needs: Needs) -> Found:
        customers = await self._customers(needs.nue_customers)
        aliases = _aliases(customers)
        return Found(
            nue_customers=customers,
            nue_subscriptions=await self._by_customer(needs.nue_subscriptions_of, aliases,
                                                      self._nue.list_subscriptions),
            nue_orders=await self._by_customer(needs.nue_orders_of, aliases, self._nue.list_orders),
            nue_invoices=await self._invoices(needs.nue_invoices),
            nue_quotes=await self._quotes(needs.nue_quotes),
            nue_quotes_of=await self._quotes_of(needs.nue_quotes_of),
            sf_records=await self._sf_records(needs.sf_records, needs.sf_fields),
            sf_children=await self._sf_children(needs.sf_children, needs.sf_fields),
            sf_selected=_selected(needs),
            catalog=tuple(await self._nue.products()) if needs.catalog else (),
            synced=await self._synced(needs.synced_of),
            go_live=await self._go_live() if needs.go_live else None,
        )

    async def _go_live(self) -> date:
        # Without a store (a bare preview) nothing is known of a go-live: no cut-off.
        return await self._store.created_on() if self._store is not None else date.min

    async def _synced(self, refs: frozenset[str]) -> dict[str, SyncedRecord]:
        if not refs:
            return {}
        known = await self._store.get_synced(sorted(refs)) if self._store is not None else {}
        return {ref: known.get(ref, SyncedRecord()) for ref in refs}

    async def _customers(self, ids: frozenset[str]) -> dict[str, Mapping[str, Any] | None]:
        if not ids:
            return {}
        wanted = sorted(ids)
        # A customer is asked for by its Nue id or its Salesforce Account id, which sits in externalId once
        # Nue's own sync ran, and in salesAccountId as soon as revdaemon created it.
        # Each key is asked only for the ids the previous keys did not find: usually one read in all.
        found: dict[str, Mapping[str, Any] | None] = dict.fromkeys(wanted)
        for field_name in ("id", "externalId", "salesAccountId"):
            missing = [i for i in wanted if found[i] is None]
            if not missing:
                break
            for row in await self._nue.read_where_in("Customer", field_name, missing, nue_wire.CUSTOMER_FIELDS):
                value = row.get(field_name)
                if value in found and found[value] is None:
                    found[value] = row
        return found

    async def _by_customer(self, ids: frozenset[str], aliases: Mapping[str, str], read: Any
                           ) -> dict[str, list[Mapping[str, Any]]]:
        if not ids:
            return {}
        wanted = sorted(ids)
        nue_ids = sorted({aliases.get(i, i) for i in wanted})
        grouped: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
        for row in await read(nue_ids):
            grouped[str(row.get("customerId"))].append(row)
        return {i: grouped.get(aliases.get(i, i), []) for i in wanted}

    async def _invoices(self, ids: frozenset[str]) -> dict[str, Mapping[str, Any] | None]:
        if not ids:
            return {}
        found: dict[str, Mapping[str, Any] | None] = dict.fromkeys(sorted(ids))
        for row in await self._nue.read_where_in("Invoice", "id", sorted(ids), nue_wire.INVOICE_FIELDS):
            found[str(row["id"])] = row
        return found

    async def _quotes(self, ids: frozenset[str]) -> dict[str, Mapping[str, Any] | None]:
        # Whole quotes (their products are not in the GraphQL subset): one read each; quote events are few.
        found: dict[str, Mapping[str, Any] | None] = {}
        for quote_id in sorted(ids):
            try:
                found[quote_id] = await self._nue.get_quote(quote_id)
            except Permanent as exc:
                if exc.context.status != 404:
                    raise
                found[quote_id] = None
        return found

    async def _quotes_of(self, opportunity_ids: frozenset[str]) -> dict[str, list[Mapping[str, Any]]]:
        if not opportunity_ids:
            return {}
        grouped: dict[str, list[Mapping[str, Any]]] = {i: [] for i in opportunity_ids}
        for row in await self._nue.read_where_in("Quote", "opportunityId", sorted(opportunity_ids),
                                                 nue_wire.QUOTE_FIELDS):
            grouped.setdefault(str(row.get("opportunityId")), []).append(row)
        return grouped

    async def _sf_records(self, keys: frozenset[tuple[str, str]], fields: frozenset[tuple[str, str]]
                          ) -> dict[tuple[str, str], Mapping[str, Any] | None]:
        found: dict[tuple[str, str], Mapping[str, Any] | None] = dict.fromkeys(keys)
        by_object: dict[str, list[str]] = defaultdict(list)
        for sobject, record_id in sorted(keys):
            by_object[sobject].append(record_id)
        for sobject, ids in by_object.items():
            selected = sorted({"Id", *(name for obj, name in fields if obj == sobject)})
            for chunk in _chunks(ids, SOQL_IN_MAX):
                quoted = ", ".join(salesforce_wire.soql_literal(i) for i in chunk)
                soql = f"SELECT {', '.join(selected)} FROM {sobject} WHERE Id IN ({quoted})"
                async for row in self._sf.query(soql, priority=Priority.REALTIME):
                    # Ids are compared as given: flows ask with the 18-character ids the APIs return.
                    found[(sobject, str(row["Id"]))] = row
        return found

    async def _sf_children(self, keys: frozenset[tuple[str, str, str]], fields: frozenset[tuple[str, str]]
                           ) -> dict[tuple[str, str, str], list[Mapping[str, Any]]]:
        found: dict[tuple[str, str, str], list[Mapping[str, Any]]] = {key: [] for key in keys}
        by_relation: dict[tuple[str, str], list[str]] = defaultdict(list)
        for sobject, parent_field, parent_id in sorted(keys):
            by_relation[(sobject, parent_field)].append(parent_id)
        for (sobject, parent_field), parents in by_relation.items():
            selected = sorted({"Id", parent_field, *(name for obj, name in fields if obj == sobject)})
            for chunk in _chunks(parents, SOQL_IN_MAX):
                quoted = ", ".join(salesforce_wire.soql_literal(i) for i in chunk)
                soql = f"SELECT {', '.join(selected)} FROM {sobject} WHERE {parent_field} IN ({quoted}) ORDER BY Id"
                # SOQL's = ignores case on text fields: file each row under the value as it was asked for.
                asked = {p.lower(): p for p in chunk}
                async for row in self._sf.query(soql, priority=Priority.REALTIME):
                    value = str(row[parent_field])
                    key = (sobject, parent_field, asked.get(value.lower(), value))
                    found.setdefault(key, []).append(row)
        return found


def _selected(needs: Needs) -> dict[str, frozenset[str]]:
    """The fields this read selects, per object it reads (Id and the relation fields included)."""
    objects = {o for o, _ in needs.sf_records} | {o for o, _, _ in needs.sf_children}
    return {o: frozenset({"Id", *(f for obj, f in needs.sf_fields if obj == o),
                          *(p for obj, p, _ in needs.sf_children if obj == o)}) for o in objects}


def _aliases(customers: Mapping[str, Mapping[str, Any] | None]) -> dict[str, str]:
    """Requested id (Nue or Salesforce) -> the Nue customer id, for customer-scoped reads."""
    return {requested: str(row["id"]) for requested, row in customers.items() if row is not None}


def _chunks(items: Sequence[str], size: int) -> list[Sequence[str]]:
    return [items[i:i + size] for i in range(0, len(items), size)]


