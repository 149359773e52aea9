"""The executor: carries out planned writes exactly once, in batches.

Theory of operation:
1. Coalesce. Writes with the same idempotency key are one write; Salesforce writes to the same record
   are merged into one (every plan of a claim was made from the same fresh read, so they agree).
2. Record. Each write's intent is recorded under its key before anything is sent. A key already
   confirmed is not sent again; a key left `sent` by a crash is sent again only where that is safe
   (Salesforce updates and upserts by external id are idempotent; a Nue create is preceded by its
   natural-key lookup, always).
3. Send in batches: Salesforce updates and upserts through sObject Collections, 200 per call, grouped by
   object (and external id field); Salesforce creates (no external id) after one SOQL read for the earlier
   copies of up to 200 of them, then through Collections; Nue customers created in one array; other Nue
   calls one by one.
4. Record the outcome per write (confirmed with its result, or failed with the API's own error) in the
   store's audit log, in a shielded scope so a shutdown cannot lose what was sent.

Outcomes come back per idempotency key; the worker turns them into event outcomes.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import anyio
import structlog

from revdaemon.connectors import nue_wire, salesforce_wire
from revdaemon.connectors.nue import NueClient
from revdaemon.connectors.salesforce import SalesforceClient
from revdaemon.engine.sync_status import SyncStatus
from revdaemon.errors import Busy, ErrorContext, HeldElsewhere, Retryable, SyncError
from revdaemon.flows.plan import (
    NueActivateOrder,
    NueCreateCustomer,
    NueCreateOrder,
    SfCreate,
    SfDelete,
    SfUpdate,
    SfUpsert,
    Write,
)
from revdaemon.store import Store
from revdaemon.store.records import NewAuditEntry, NewIntent, utcnow
from revdaemon.store.states import IntentStatus

log = structlog.get_logger("revdaemon.executor")


@dataclass(frozen=True, kw_only=True)
class WriteOutcome:
    ok: bool
    result: Mapping[str, Any] | None = None
    error: SyncError | None = None
    skipped: bool = False  # already confirmed earlier: nothing was sent
    stale: bool = False  # a newer state of its entity was applied before: nothing was sent


@dataclass(frozen=True, kw_only=True)
class PendingWrite:
    write: Write
    event_id: int | None
    entity: str | None = None  # the source entity whose state the write carries (ordering)
    version: str | None = None  # that state's version (fixed-width UTC text)
    mapping_version: int | None = None  # the mapping version it was planned with (None: the executor's)


class Executor:
    def __init__(self, store: Store, salesforce: SalesforceClient, nue: NueClient, *, mapping_version: int | None,
                 dry_run: bool = False, sync_status: SyncStatus | None = None,
                 sync_status_parked: Callable[[], object] = lambda: None,
                 intent_owner: str | None = None, intent_lease: timedelta = timedelta(minutes=5)) -> None:
        # Replicas sharing a store: an intent is sent only by the replica holding it (Store.claim_intent), so
        # two boxes never send one write twice, and a dead box's write is taken over (and looked up first)
        # once its lease runs out. None on one box, where `_in_flight` below is enough.
        self._intent_owner = intent_owner
        self._intent_lease = intent_lease
        self._sync_status = sync_status if sync_status else None
        self._sync_status_parked = sync_status_parked
        self._store = store
        self._sf = salesforce
        self._nue = nue
        self._mapping_version = mapping_version  # the current mapping version, for writes that name none
        self.dry_run = dry_run
        # Keys and entities being written by this process right now. Two workers may plan the same write,
        # or writes from two reads of one entity; the second waits for a retry and a fresh read, so an
        # older state can never land after a newer one.
        self._in_flight: set[str] = set()
        self._just_recorded: set[str] = set()  # keys whose intent is `recorded`, not yet marked sent

    async def execute(self, pending: Sequence[PendingWrite]) -> dict[str, WriteOutcome]:
        unique: dict[str, PendingWrite] = {}
        status = self._sync_status if self._sync_status is not None and not self._sync_status_parked() else None
        now = utcnow()
        for item in pending:
            if status is not None:
                # The status fields ride in the data write itself: the same record of the same call.
                item = dataclasses.replace(item, write=status.decorate(item.write, now))
            unique.setdefault(item.write.idem_key, item)
        outcomes: dict[str, WriteOutcome] = {}
        if self.dry_run:
            for key, item in unique.items():
                log.info("write_planned", idem_key=key, write=_describe(item.write), dry_run=True,
                         mapping_version=self._version_of(item))
                outcomes[key] = WriteOutcome(ok=True, skipped=True)
            return outcomes
        claimed: set[str] = set()
        try:
            entities = {item.entity for item in unique.values() if item.entity}
            busy = {e for e in entities if e in self._in_flight}
            accepted: list[PendingWrite] = []
            for key, item in unique.items():
                if key in self._in_flight or (item.entity in busy):
                    outcomes[key] = WriteOutcome(ok=False, error=Busy(
                        "the same record is being written by another worker", ErrorContext(
                            system=item.write.target[0], operation=type(item.write).__name__,
                            record_ref=_record_ref(item.write))))
                else:
                    accepted.append(item)
            # Claimed before any await, so no other worker of this process can slip in between.
            for token in {i.write.idem_key for i in accepted} | {i.entity for i in accepted if i.entity}:
                self._in_flight.add(token)
                claimed.add(token)
            # The ordering check and the version's raise both happen while the entity is held: no other
            # worker can write an older state between them.
            fresh: list[PendingWrite] = []
            for item in accepted:
                if item.entity and item.version:
                    applied = await self._store.get_entity_version(item.entity)
                    if applied is not None and applied > item.version:
                        log.info("stale_state_skipped", entity=item.entity, version=item.version, applied=applied)
                        outcomes[item.write.idem_key] = WriteOutcome(ok=True, skipped=True, stale=True)
                        continue
                fresh.append(item)
            sent = await self._record_and_send(fresh)
            outcomes.update(sent)
            for item in fresh:
                outcome = sent.get(item.write.idem_key)
                if item.entity and item.version and outcome is not None and outcome.ok:
                    await self._store.raise_entity_version(item.entity, item.version)
        finally:
            self._in_flight -= claimed
            self._just_recorded -= set(unique)  # a crash mid-send must not leave keys for a later call
        return outcomes

    async def _record_and_send(self, items: Sequence[PendingWrite]) -> dict[str, WriteOutcome]:
        outcomes: dict[str, WriteOutcome] = {}
        to_send: list[PendingWrite] = []
        maybe_sent: set[str] = set()  # keys an earlier attempt may have sent (a crash, a retry, a replay)
        for item in items:
            key = item.write.idem_key
            intent = await self._store.record_intent(NewIntent(
                key=key, system=item.write.target[0], operation=type(item.write).__name__,
                target=f"{item.write.target[1]}:{item.write.target[2]}", request=_describe(item.write),
                event_id=item.event_id))
            if intent.status is IntentStatus.CONFIRMED:
                outcomes[key] = WriteOutcome(ok=True, result=intent.result, skipped=True)
                continue
            if self._intent_owner is not None and not await self._store.claim_intent(
                    key, owner=self._intent_owner, lease=self._intent_lease):
                outcomes[key] = _held_elsewhere(item)
                continue
            if intent.status is IntentStatus.FAILED:
                await self._store.reopen_intent(key)  # back to `recorded`: marked sent again before sending
            if intent.status in (IntentStatus.RECORDED, IntentStatus.FAILED):
                self._just_recorded.add(key)
            if intent.status is not IntentStatus.RECORDED:
                maybe_sent.add(key)
            to_send.append(item)
        outcomes.update(await self._send(to_send, maybe_sent))
        return outcomes

    async def _send(self, to_send: Sequence[PendingWrite], maybe_sent: set[str]) -> dict[str, WriteOutcome]:
        outcomes: dict[str, WriteOutcome] = {}
        sf_updates = [i for i in to_send if isinstance(i.write, SfUpdate)]
        sf_upserts = [i for i in to_send if isinstance(i.write, SfUpsert)]
        customers = [i for i in to_send if isinstance(i.write, NueCreateCustomer)]
        others = [i for i in to_send if isinstance(i.write, NueCreateOrder | NueActivateOrder)]
        outcomes.update(await self._salesforce_updates(sf_updates))
        outcomes.update(await self._salesforce_upserts(sf_upserts))
        outcomes.update(await self._salesforce_creates([i for i in to_send if isinstance(i.write, SfCreate)],
                                                       maybe_sent))
        for item in to_send:
            if isinstance(item.write, SfDelete):
                outcomes[item.write.idem_key] = await self._salesforce_one(item)
        outcomes.update(await self._nue_customers(customers))
        for item in others:
            outcomes[item.write.idem_key] = await self._nue_one(item)
        return outcomes

    # --- Salesforce -------------------------------------------------------------------------------

    async def _salesforce_updates(self, items: Sequence[PendingWrite]) -> dict[str, WriteOutcome]:
        return await self._salesforce_batches(items, verb="update")

    async def _salesforce_upserts(self, items: Sequence[PendingWrite]) -> dict[str, WriteOutcome]:
        return await self._salesforce_batches(items, verb="upsert")

    async def _salesforce_batches(self, items: Sequence[PendingWrite], *, verb: str) -> dict[str, WriteOutcome]:
        """Updates by Id or upserts by an external id, merged per record and sent through Collections."""
        # (sobject, external id field or "Id") -> record key -> the writes merged into that record
        batches: dict[tuple[str, str], dict[str, list[PendingWrite]]] = defaultdict(lambda: defaultdict(list))
        for item in items:
            w = item.write
            if isinstance(w, SfUpdate):
                batches[(w.sobject, "Id")][w.record_id].append(item)
            else:
                assert isinstance(w, SfUpsert)
                batches[(w.sobject, w.external_id_field)][w.external_id].append(item)
        outcomes: dict[str, WriteOutcome] = {}
        for (sobject, key_field), by_record in batches.items():
            kept = await self._sending(list(by_record.values()), outcomes)
            pairs = [(key, group) for key, group in zip(by_record, kept, strict=True) if group]
            if not pairs:
                continue
            records = [{key_field: key, **_merged(group)} for key, group in pairs]
            groups = [group for _, group in pairs]
            operation = f"{verb} {sobject}"
            try:
                results = (await self._sf.update_many(sobject, records) if verb == "update"
                           else await self._sf.upsert_many(sobject, key_field, records))
            except SyncError as exc:
                outcomes.update(await self._fail_all(groups, exc))
                continue
            for group, result in zip(groups, results, strict=True):
                if _split(group, result):
                    outcomes.update(await self._one_by_one(group, operation=operation))
                else:
                    outcomes.update(await self._settle_sf(group, result, operation=operation))
        return outcomes

    async def _one_by_one(self, group: Sequence[PendingWrite], *, operation: str) -> dict[str, WriteOutcome]:
        """A merged record write was refused: send its parts alone, so one flow's bad field fails only its own
        event, not every event whose write was merged with it."""
        outcomes: dict[str, WriteOutcome] = {}
        for item in group:
            write = item.write
            try:
                if isinstance(write, SfUpdate):
                    await self._sf.update(write.sobject, write.record_id, write.fields)
                    result: dict[str, Any] = {"id": write.record_id}
                else:
                    assert isinstance(write, SfUpsert)
                    done = await self._sf.upsert(write.sobject, write.external_id_field, write.external_id,
                                                 write.fields)
                    result = {"id": done.id, "created": done.created}
                outcome = WriteOutcome(ok=True, result=result)
            except SyncError as exc:
                outcome = WriteOutcome(ok=False, error=exc)
            outcomes[write.idem_key] = await self._settle(item, outcome)
        log.info("merged_write_split", operation=operation, parts=len(group))
        return outcomes

    async def _settle_sf(self, group: Sequence[PendingWrite], result: salesforce_wire.WriteResult,
                         *, operation: str) -> dict[str, WriteOutcome]:
        if result.ok:
            outcome = WriteOutcome(ok=True, result={"id": result.id, "created": result.created})
        elif result.failure is not None:
            outcome = WriteOutcome(ok=False, error=result.failure)
        else:
            error = salesforce_wire.classify(400, [{"errorCode": e.code, "message": e.message,
                                                    "fields": list(e.fields)} for e in result.errors],
                                             operation=operation, record_ref=_record_ref(group[0].write))
            outcome = WriteOutcome(ok=False, error=error)
        return {item.write.idem_key: await self._settle(item, outcome) for item in group}

    async def _salesforce_creates(self, items: Sequence[PendingWrite], maybe_sent: set[str]
                                  ) -> dict[str, WriteOutcome]:
        """Records without an external id (Tasks, Notes): per object, one SOQL read finds the earlier copies of
        up to 200 of them (a crash after sending, or a replay), and one Collections call creates the rest. A
        chunk whose every write is a first attempt the flow saw absent (`seen_absent`) skips the read."""
        # (sobject, the match fields) -> match values -> the writes that would create that one record
        batches: dict[tuple[str, tuple[str, ...]], dict[tuple[str, ...], list[PendingWrite]]] = defaultdict(
            lambda: defaultdict(list))
        for item in items:
            assert isinstance(item.write, SfCreate)
            names = tuple(sorted(item.write.match))
            batches[(item.write.sobject, names)][_match_key(item.write.match, names)].append(item)
        outcomes: dict[str, WriteOutcome] = {}
        for (sobject, names), by_match in batches.items():
            for whole in _lookup_chunks(list(by_match.items()), names):
                kept = await self._sending([group for _, group in whole], outcomes)
                chunk = [(key, group) for (key, _), group in zip(whole, kept, strict=True) if group]
                if not chunk:
                    continue
                groups = [group for _, group in chunk]
                look = any(not _seen_absent(i) or i.write.idem_key in maybe_sent for g in groups for i in g)
                try:
                    existing = await self._existing(sobject, names, groups) if look else {}
                except SyncError as exc:
                    outcomes.update(await self._fail_all(groups, exc))
                    continue
                missing = [(key, group) for key, group in chunk if key not in existing]
                for key, group in chunk:
                    if key in existing:
                        found = WriteOutcome(ok=True, result={"id": existing[key], "created": False})
                        outcomes.update({i.write.idem_key: await self._settle(i, found) for i in group})
                if not missing:
                    continue
                try:
                    results = await self._sf.create_many(sobject, [_fields(group[0]) for _, group in missing])
                except SyncError as exc:
                    outcomes.update(await self._fail_all([group for _, group in missing], exc))
                    continue
                for (_, group), result in zip(missing, results, strict=True):
                    if result.ok:
                        result = salesforce_wire.WriteResult(ok=True, id=result.id, created=True)
                    outcomes.update(await self._settle_sf(group, result, operation=f"create {sobject}"))
        return outcomes

    async def _existing(self, sobject: str, names: tuple[str, ...], groups: Sequence[Sequence[PendingWrite]]
                        ) -> dict[tuple[str, ...], str]:
        """Ids of records already holding these match values. One IN list per match field (a superset of the
        wanted combinations), narrowed here as SOQL's `=` compares (`_match_key`)."""
        matches = [_match(group[0]) for group in groups]
        conditions = " AND ".join(
            f"{name} IN ({', '.join(sorted({salesforce_wire.soql_literal(m[name]) for m in matches}))})"
            for name in names)
        wanted = {_match_key(m, names) for m in matches}
        found: dict[tuple[str, ...], str] = {}
        async for row in self._sf.query(f"SELECT Id, {', '.join(names)} FROM {sobject} WHERE {conditions}"):
            key = _match_key(row, names)
            if key in wanted:
                found.setdefault(key, str(row["Id"]))
        return found

    async def _salesforce_one(self, item: PendingWrite) -> WriteOutcome:
        write = item.write
        assert isinstance(write, SfDelete)
        outcomes: dict[str, WriteOutcome] = {}
        if not (await self._sending([[item]], outcomes))[0]:
            return outcomes[write.idem_key]
        try:
            try:
                await self._sf.delete(write.sobject, write.record_id)
            except SyncError as exc:
                if exc.context.error_code not in ("ENTITY_IS_DELETED", "NOT_FOUND"):
                    raise  # already gone is what a delete wants
            outcome = WriteOutcome(ok=True, result={"id": write.record_id})
        except SyncError as exc:
            outcome = WriteOutcome(ok=False, error=exc)
        return await self._settle(item, outcome)

    # --- Nue ----------------------------------------------------------------------------------------

    async def _nue_customers(self, items: Sequence[PendingWrite]) -> dict[str, WriteOutcome]:
        if not items:
            return {}
        outcomes: dict[str, WriteOutcome] = {}
        by_account: dict[str, list[PendingWrite]] = defaultdict(list)
        for item in items:
            assert isinstance(item.write, NueCreateCustomer)
            by_account[item.write.salesforce_account_id].append(item)
        kept = await self._sending(list(by_account.values()), outcomes)
        by_account = {account: group for account, group in zip(by_account, kept, strict=True) if group}
        if not by_account:
            return outcomes
        try:
            # Lookup before create: Nue documents no idempotency header, so this read is the guard. Both
            # keys are read: externalId is set by Nue's own sync, salesAccountId by our create.
            existing: dict[str, Mapping[str, Any]] = {}
            for key in ("externalId", "salesAccountId"):
                for match in await self._nue.read_where_in("Customer", key, sorted(by_account),
                                                           ("id", "externalId", "salesAccountId", "name")):
                    existing.setdefault(str(match.get(key)), match)
        except SyncError as exc:
            outcomes.update(await self._fail_all(list(by_account.values()), exc))
            return outcomes
        missing = [a for a in sorted(by_account) if a not in existing]
        for start in range(0, len(missing), nue_wire.CUSTOMER_BATCH_MAX):
            chunk = missing[start:start + nue_wire.CUSTOMER_BATCH_MAX]
            payloads = [{**_payload(by_account[a][0].write), "salesAccountId": a} for a in chunk]
            try:
                created = await self._nue.create_customers(payloads)
            except SyncError as exc:
                outcomes.update(await self._fail_all([by_account[a] for a in chunk], exc))
                continue
            for account, made in zip(chunk, created, strict=True):
                existing[account] = made
        for account, group in by_account.items():
            found = existing.get(account)
            if found is None:
                continue  # its chunk failed: already settled above
            for item in group:
                outcomes[item.write.idem_key] = await self._settle(
                    item, WriteOutcome(ok=True, result={"id": found.get("id"), "created": account in missing}))
        return outcomes

    async def _nue_one(self, item: PendingWrite) -> WriteOutcome:
        write = item.write
        outcomes: dict[str, WriteOutcome] = {}
        if not (await self._sending([[item]], outcomes))[0]:
            return outcomes[write.idem_key]
        try:
            if isinstance(write, NueCreateOrder):
                order = await self._nue.find_order_for_opportunity(write.customer_id, write.opportunity_id,
                                                                   write.marker_field)
                created = order is None
                if order is None:
                    order = await self._nue.create_order(write.payload)
                outcome = WriteOutcome(ok=True, result={"id": order.get("id"), "orderNumber":
                                                        order.get("orderNumber"), "created": created})
            else:
                assert isinstance(write, NueActivateOrder)
                order, _assets = await self._nue.activate_order(write.order_id,
                                                               generate_invoice=write.generate_invoice,
                                                               activate_invoice=write.activate_invoice)
                outcome = WriteOutcome(ok=True, result={"id": order.get("id"), "status": order.get("status")})
        except SyncError as exc:
            outcome = WriteOutcome(ok=False, error=exc)
        return await self._settle(item, outcome)

    async def report_failures(self, failures: Sequence[tuple[str, str]]) -> None:
        """Write why these records could not be synced to their sync status fields, one batched call per
        object. Best effort: a failure here is logged, never retried or dead-lettered (it is a note)."""
        if self._sync_status is None or self._sync_status_parked() or self.dry_run or not failures:
            return
        for sobject, rows in self._sync_status.error_updates(failures).items():
            try:
                results = await self._sf.update_many(sobject, rows)
            except SyncError as exc:
                log.warning("sync_status_not_written", sobject=sobject, records=len(rows), error=exc.message)
                continue
            refused = [r for r in results if not r.ok]
            log.info("sync_status_errors_written", sobject=sobject, records=len(rows) - len(refused),
                     refused=len(refused))

    # --- bookkeeping ------------------------------------------------------------------------------

    async def _sending(self, groups: Sequence[Sequence[PendingWrite]], outcomes: dict[str, WriteOutcome]
                       ) -> list[list[PendingWrite]]:
        """Right before a call: on a shared store, renew this replica's hold on each intent (a long batch may
        outlast the first lease) and drop the writes another replica has taken over (Busy in `outcomes`); then
        mark the intents recorded in this attempt as sent. Returns the groups, in order, without the dropped."""
        kept: list[list[PendingWrite]] = []
        for group in groups:
            mine: list[PendingWrite] = []
            for item in group:
                key = item.write.idem_key
                if self._intent_owner is not None and not await self._store.claim_intent(
                        key, owner=self._intent_owner, lease=self._intent_lease):
                    outcomes[key] = _held_elsewhere(item)
                    continue
                # Only intents recorded in this attempt are `recorded`; the rest were marked sent before.
                if key in self._just_recorded:
                    self._just_recorded.discard(key)
                    await self._store.mark_intent_sent(key)
                mine.append(item)
            kept.append(mine)
        return kept

    async def _fail_all(self, groups: Sequence[Sequence[PendingWrite]], exc: SyncError) -> dict[str, WriteOutcome]:
        outcome = WriteOutcome(ok=False, error=exc)
        return {item.write.idem_key: await self._settle(item, outcome) for group in groups for item in group}

    def _version_of(self, item: PendingWrite) -> int | None:
        return item.mapping_version if item.mapping_version is not None else self._mapping_version

    async def _settle(self, item: PendingWrite, outcome: WriteOutcome) -> WriteOutcome:
        write = item.write
        with anyio.CancelScope(shield=True):
            if outcome.ok:
                await self._store.confirm_intent(write.idem_key, dict(outcome.result or {}))
            else:
                assert outcome.error is not None
                await self._store.fail_intent(write.idem_key, outcome.error.message)
            error = outcome.error
            await self._store.record_write(NewAuditEntry(
                system=write.target[0], operation=type(write).__name__, target=write.target[1],
                outcome="ok" if outcome.ok else ("error" if isinstance(error, Retryable) else "rejected"),
                idem_key=write.idem_key, event_id=item.event_id, record_ref=_record_ref(write),
                status=error.context.status if error else None,
                detail={"request": _describe(write), "result": dict(outcome.result or {}),
                        "error": error.message if error else None,
                        "error_code": error.context.error_code if error else None},
                mapping_version=self._version_of(item),
                synced_fields=dict(write.fields) if isinstance(write, SfUpdate | SfUpsert | SfCreate) else {},
            ))
        if outcome.ok:
            log.info("write_confirmed", idem_key=write.idem_key, target=_record_ref(write))
        else:
            log.warning("write_failed", idem_key=write.idem_key, target=_record_ref(write),
                        error=outcome.error.message if outcome.error else None)
        return outcome


def _split(group: Sequence[PendingWrite], result: salesforce_wire.WriteResult) -> bool:
    """A record-level refusal of a write merged from several plans (not a whole-call failure)."""
    return not result.ok and result.failure is None and len({i.write.idem_key for i in group}) > 1


def _held_elsewhere(item: PendingWrite) -> WriteOutcome:
    return WriteOutcome(ok=False, error=HeldElsewhere(
        "another replica holds this write (sending it, or until its lease runs out)", ErrorContext(
            system=item.write.target[0], operation=type(item.write).__name__, record_ref=_record_ref(item.write))))


SF_ID_LENGTHS = (15, 18)  # a Salesforce id, and the same id with its case-checksum suffix


def _match_key(values: Mapping[str, Any], names: tuple[str, ...]) -> tuple[str, ...]:
    """The values as SOQL's `=` compares them: an id (WhatId, ParentId) by its 15 case-sensitive characters, so
    a flow's 15-character id finds the 18-character one Salesforce returns; other text without case."""
    return tuple(_comparable(name, values.get(name)) for name in names)


def _comparable(name: str, value: Any) -> str:
    text = str(value)
    if name.endswith("Id") and len(text) in SF_ID_LENGTHS and text.isalnum():
        return text[:15]
    return text.casefold()


def _match(item: PendingWrite) -> Mapping[str, Any]:
    assert isinstance(item.write, SfCreate)
    return item.write.match


def _seen_absent(item: PendingWrite) -> bool:
    assert isinstance(item.write, SfCreate)
    return item.write.seen_absent


def _fields(item: PendingWrite) -> dict[str, Any]:
    assert isinstance(item.write, SfCreate)
    return dict(item.write.fields)


LOOKUP_TEXT_MAX = 8_000  # characters of IN-list values per lookup query: the query travels in a GET URL


def _lookup_chunks(pairs: Sequence[tuple[tuple[str, ...], list[PendingWrite]]], names: tuple[str, ...]
                   ) -> list[list[tuple[tuple[str, ...], list[PendingWrite]]]]:
    """Up to 200 records a chunk (one Collections call), fewer when their match values would make the lookup's
    query text long (long Subjects)."""
    chunks: list[list[tuple[tuple[str, ...], list[PendingWrite]]]] = []
    current: list[tuple[tuple[str, ...], list[PendingWrite]]] = []
    size = 0
    for pair in pairs:
        length = sum(len(salesforce_wire.soql_literal(_match(pair[1][0])[name])) + 2 for name in names)
        if current and (len(current) == salesforce_wire.COLLECTION_MAX or size + length > LOOKUP_TEXT_MAX):
            chunks.append(current)
            current, size = [], 0
        current.append(pair)
        size += length
    if current:
        chunks.append(current)
    return chunks


def _payload(write: Write) -> Mapping[str, Any]:
    assert isinstance(write, NueCreateCustomer | NueCreateOrder)
    return write.payload


def _merged(group: Sequence[PendingWrite]) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    for item in group:
        assert isinstance(item.write, SfUpdate | SfUpsert)
        fields.update(item.write.fields)
    return fields


def _record_ref(write: Write) -> str:
    return f"{write.target[0]}:{write.target[1]}:{write.target[2]}"


def _describe(write: Write) -> dict[str, Any]:
    body: dict[str, Any] = {"kind": type(write).__name__, "target": _record_ref(write)}
    if isinstance(write, SfUpdate | SfUpsert | SfCreate):
        body["fields"] = dict(write.fields)
    elif isinstance(write, NueCreateCustomer | NueCreateOrder):
        body["payload"] = dict(write.payload)
    return body

