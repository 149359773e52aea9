"""Runs the reads flows ask for, batched: one GraphQL `_in` read for many customers, one `customerIds`
read for many customers' subscriptions or orders, one SOQL `Id IN (...)` per object type.

This is what makes a webhook a hint: the state a flow plans from is always read here, never taken from
the notification's body.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from collections.abc import Mapping, Sequence
from datetime import date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

import structlog

from revdaemon.connectors import nue_wire, salesforce_wire
from revdaemon.connectors.nue import NueClient
from revdaemon.connectors.salesforce import SalesforceClient
from revdaemon.domain.record_names import RecordName, changed
from revdaemon.errors import Permanent, StoreError
from revdaemon.flows.base import Found, Needs
from revdaemon.flows.common import ACCOUNT_LINK
from revdaemon.flows.record_names import names_in
from revdaemon.limits import Priority
from revdaemon.store import Store
from revdaemon.store.records import SyncedRecord, utcnow
from revdaemon.store.states import IntentStatus

log = structlog.get_logger("revdaemon.lookups")

# Hand edits and concurrent writers. A flow tells a person's edit from revdaemon's own write by comparing the
# record with its last synced values, but the two are read apart: another worker's or replica's write can land
# between them (the record read before it, the synced values after it is recorded), or be applied and not yet
# recorded; the record then shows a value revdaemon wrote that the synced values no longer (or not yet) hold.
# Holding each record from its read to its write would take a lock every replica shares, around API calls.
# Instead, where a record read disagrees with its synced values, the values revdaemon itself wrote there around
# the read are read too (its audit, and its intents not yet settled, which are recorded before they are sent),
# and the flow counts them as revdaemon's. A person's edit shows none of them. The cost: a person who types
# back a value revdaemon wrote within RACE_WINDOW is not seen, and Nue's value is written over it.
RACE_WINDOW = timedelta(minutes=10)  # writes settled this long before the read count too: wider than clock skew
RECENT_WRITES_MAX = 200  # audit entries read per disagreeing record
UNSETTLED = (IntentStatus.RECORDED, IntentStatus.SENT)  # may be on the record already, not yet in the audit
# Read with every record of these objects, for the pages that show a name beside an id (flows.record_names): a
# standard name field every user who can read the record can read [doc], in the same query, so at no cost.
NAMED = {"Account": ("Name",), "Opportunity": ("Name",), "Contact": ("Name",)}
KEPT_NAMES_MAX = 50_000  # names remembered as written; past it the memory starts over (a rewrite costs little)
_UNREAD = object()  # the record was not read in this fetch (an earlier round read it)


class Fetcher:
    def __init__(self, salesforce: SalesforceClient, nue: NueClient, store: Store | None = None) -> None:
        self._sf = salesforce
        self._nue = nue
        self._store = store  # for the last synced values; without it none are known
        self._kept_names: dict[tuple[str, str], RecordName] = {}  # written to the store by this process

    @property
    def clients(self) -> tuple[SalesforceClient, NueClient]:
        return self._sf, self._nue

    async def fetch(self, needs: Needs) -> Found:
        # The last synced values are read before the records they are compared with (RACE_WINDOW above).
        started = utcnow()
        synced = await self._synced(needs.synced_of)
        customers = await self._customers(needs.nue_customers)
        aliases = _aliases(customers)
        found = Found(
            nue_customers=customers,
            nue_subscriptions=await self._by_customer(needs.nue_subscriptions_of, aliases,
                                                      self._nue.list_subscriptions),
            nue_orders=await self._by_customer(needs.nue_orders_of, aliases, self._nue.list_orders),
            nue_contacts=await self._by_customer(needs.nue_contacts_of, aliases, self._contacts),
            nue_invoices=await self._invoices(needs.nue_invoices),
            nue_quotes=await self._quotes(needs.nue_quotes),
            nue_quotes_of=await self._quotes_of(needs.nue_quotes_of),
            sf_records=await self._sf_records(needs.sf_records, needs.sf_fields),
            sf_children=await self._sf_children(needs.sf_children, needs.sf_fields),
            sf_selected=_selected(needs),
            catalog=tuple(await self._nue.products()) if needs.catalog else (),
            id_links=await self._links(needs.id_links),
            go_live=await self._go_live() if needs.go_live else None,
        )
        await self._keep_names(found)
        return dataclasses.replace(found, synced=await self._with_recent(synced, found.sf_records,
                                                                         since=started - RACE_WINDOW))

    async def _keep_names(self, found: Found) -> None:
        """The names and numbers just read, for the pages that show them beside ids. Only new or changed ones
        are written (most reads repeat what was kept), and a store that cannot take them fails no event."""
        if self._store is None:
            return
        new = changed(self._kept_names, names_in(found))
        if not new:
            return
        try:
            await self._store.remember_names(new)
        except StoreError as exc:
            log.warning("record_names_not_kept", count=len(new), error=str(exc))
            return
        if len(self._kept_names) + len(new) > KEPT_NAMES_MAX:
            self._kept_names.clear()
        self._kept_names.update(((n.system, n.record_id), n) for n in new)

    async def _contacts(self, customer_ids: Sequence[str]) -> list[dict[str, Any]]:
        """Contacts of many customers in one GraphQL `_in` read (the Contact type is [assumed]: nue_wire)."""
        return await self._nue.read_where_in("Contact", "customerId", customer_ids, nue_wire.CONTACT_FIELDS)

    async def _links(self, keys: frozenset[tuple[str, str]]) -> dict[tuple[str, str], str | None]:
        """The Salesforce id each (object type, Nue id) is linked to in revdaemon's store (None: no link)."""
        found: dict[tuple[str, str], str | None] = dict.fromkeys(keys)
        if self._store is None:
            return found
        by_type: dict[str, list[str]] = defaultdict(list)
        for object_type, nue_id in keys:
            by_type[object_type].append(nue_id)
        for object_type, nue_ids in sorted(by_type.items()):
            for link in await self._store.find_links(object_type, nue_ids=nue_ids):
                found[(object_type, link.nue_id)] = link.salesforce_id
        return found

    async def _go_live(self) -> date:
        # Without a store (a bare preview) nothing is known of a go-live: no cut-off.
        return await self._store.go_live() if self._store is not None else date.min

    async def _synced(self, refs: frozenset[str]) -> dict[str, SyncedRecord]:
        if not refs:
            return {}
        known = await self._store.get_synced(sorted(refs)) if self._store is not None else {}
        return {ref: known.get(ref, SyncedRecord()) for ref in refs}

    async def _with_recent(self, synced: Mapping[str, SyncedRecord],
                           records: Mapping[tuple[str, str], Mapping[str, Any] | None], *, since: datetime
                           ) -> dict[str, SyncedRecord]:
        """Each record's synced values, with revdaemon's writes around the read where the record, read after
        them, disagrees with them."""
        found: dict[str, SyncedRecord] = {}
        for ref, record in synced.items():
            if self._store is not None and _may_differ(record, _record_of(ref, records)):
                record = dataclasses.replace(record, recent=await self._recent(ref, frozenset(record.values), since))
            found[ref] = record
        return found

    async def _recent(self, ref: str, names: frozenset[str], since: datetime) -> dict[str, tuple[Any, ...]]:
        """Values revdaemon may have put on the record's fields as of `since` and after: every write settled
        since then (an error too: a timed-out write may have been applied), per field the last one confirmed
        before then (for a record read before its synced values), and every write recorded but not yet settled."""
        assert self._store is not None
        values: dict[str, list[Any]] = defaultdict(list)
        known: set[str] = set()  # fields whose value as of `since` is found
        for entry in await self._store.list_writes(record_ref=ref, limit=RECENT_WRITES_MAX):
            if entry.at < since and names <= known:
                break
            if entry.outcome == "rejected":
                continue  # refused by the API: never on the record
            for name, value in _fields_of(entry.detail.get("request")).items():
                if entry.at >= since or name not in known:
                    _add(values[name], value)
                if entry.at < since and entry.outcome == "ok":
                    known.add(name)
        _system, sobject, record_id = ref.split(":", 2)
        for intent in await self._store.list_intents(mentioning=record_id):
            # Settled ones since `since` too (each was audited a moment before it was settled: a second witness).
            if intent.target == f"{sobject}:{record_id}" and (intent.status in UNSETTLED or intent.updated_at >= since):
                for name, value in _fields_of(intent.request).items():
                    _add(values[name], value)
        return {name: tuple(found) for name, found in values.items()}

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
        # Last, an account flow 6 made for a customer made in Nue: Nue names no account for it (externalId is
        # Nue's own sync's to set), the store's link does. Without it a deal won on that account would make a
        # second customer.
        linked: dict[str, str] = {}
        unfound = [i for i in wanted if found[i] is None]
        if self._store is not None and unfound:
            asked = set(unfound)
            for link in await self._store.find_links(ACCOUNT_LINK, salesforce_ids=unfound):
                if link.salesforce_id in asked:
                    linked[link.nue_id] = link.salesforce_id
        if linked:
            for row in await self._nue.read_where_in("Customer", "id", sorted(linked), nue_wire.CUSTOMER_FIELDS):
                if str(row.get("id")) in linked:
                    found[linked[str(row["id"])]] = row
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
            # SystemModstamp: the record's version, which a corrective write's key carries (flows.common.was)
            selected = sorted({"Id", "SystemModstamp", *NAMED.get(sobject, ()),
                               *(name for obj, name in fields if obj == sobject)})
            for soql, _asked in salesforce_wire.where_in_batches(f"SELECT {', '.join(selected)} FROM {sobject}",
                                                                 [("Id", ids)]):
                async for row in self._sf.query(soql, priority=Priority.REALTIME):
                    # Ids are compared as given: flows ask with the 18-character ids the APIs return.
                    found[(sobject, str(row["Id"]))] = row
        return found

    async def _sf_children(self, keys: frozenset[tuple[str, str, str]], fields: frozenset[tuple[str, str]]
                           ) -> dict[tuple[str, str, str], list[Mapping[str, Any]]]:
        found: dict[tuple[str, str, str], list[Mapping[str, Any]]] = {key: [] for key in keys}
        by_object: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
        for sobject, parent_field, parent_id in sorted(keys):
            by_object[sobject][parent_field].append(parent_id)
        for sobject, by_field in by_object.items():
            # One query asks by every field of this object it is read by (`a IN (..) OR b IN (..)`).
            selected = sorted({"Id", *by_field, *NAMED.get(sobject, ()),
                               *(name for obj, name in fields if obj == sobject)})
            batches = salesforce_wire.where_in_batches(f"SELECT {', '.join(selected)} FROM {sobject}",
                                                       list(by_field.items()), tail="ORDER BY Id")
            for soql, asked_by_field in batches:
                # SOQL's = ignores case on text fields: file each row under the value as it was asked for.
                asked = {name: {p.lower(): p for p in values} for name, values in asked_by_field.items()}
                async for row in self._sf.query(soql, priority=Priority.REALTIME):
                    for name, values in asked.items():
                        value = row.get(name)
                        if value is None or (str(value).lower() not in values and len(asked) > 1):
                            continue  # the row answers the query's other field
                        key = (sobject, name, values.get(str(value).lower(), str(value)))
                        found.setdefault(key, []).append(row)
        return found


def _record_of(ref: str, records: Mapping[tuple[str, str], Mapping[str, Any] | None]) -> Any:
    """The record a synced ref names, as read in this fetch; `_UNREAD` when this fetch did not read it."""
    parts = ref.split(":", 2)
    return records.get((parts[1], parts[2]), _UNREAD) if len(parts) == 3 else _UNREAD


def _may_differ(synced: SyncedRecord, record: Any) -> bool:
    """Whether the record may show a field value other than its last synced one (so a flow may see an edit)."""
    if not synced.values or record is None:
        return False
    if record is _UNREAD:
        return True
    return any(name in record and not _alike(record[name], value) for name, value in synced.values.items())


def _alike(shown: Any, synced: Any) -> bool:
    """Salesforce's 1400.0 is the synced "1400.00"; otherwise the text must be equal."""
    if shown is None or synced is None:
        return shown is None and synced is None
    if str(shown) == str(synced):
        return True
    if isinstance(shown, int | float | Decimal) and not isinstance(shown, bool):
        try:
            return Decimal(str(shown)) == Decimal(str(synced))
        except InvalidOperation:
            return False
    return False


def _fields_of(request: Any) -> Mapping[str, Any]:
    """The field values a write's recorded request carried (executor.describe_write)."""
    fields = request.get("fields") if isinstance(request, Mapping) else None
    return fields if isinstance(fields, Mapping) else {}


def _add(values: list[Any], value: Any) -> None:
    if value not in values:
        values.append(value)


def _selected(needs: Needs) -> dict[str, frozenset[str]]:
    """The fields this read selects, per object it reads (Id and the relation fields included)."""
    objects = {o for o, _ in needs.sf_records} | {o for o, _, _ in needs.sf_children}
    return {o: frozenset({"Id", *(f for obj, f in needs.sf_fields if obj == o),
                          *(p for obj, p, _ in needs.sf_children if obj == o)}) for o in objects}


def _aliases(customers: Mapping[str, Mapping[str, Any] | None]) -> dict[str, str]:
    """Requested id (Nue or Salesforce) -> the Nue customer id, for customer-scoped reads."""
    return {requested: str(row["id"]) for requested, row in customers.items() if row is not None}


