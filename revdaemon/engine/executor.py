"""The executor: carries out planned writes exactly once, in batches.

One path for every write kind (issue 22):

    record the intent -> [look up, if it may ever have been sent or its kind always looks] -> send -> settle

1. Coalesce. Writes with the same idempotency key are one write; Salesforce writes to the same record
   are merged into one (every plan of a claim was made from the same fresh read, so they agree).
2. Record. Each write's intent is recorded under its key before anything is sent. A confirmed key is not
   sent again. An intent carries `ever_sent`, set when it is first marked sent and never cleared: a write
   that may have reached its API is looked up before it is sent again (for the kinds where sending twice
   would duplicate), however many times it failed or was reopened since.
3. Unknown outcomes. A create whose answer was lost (a timeout, a dropped connection, a 5xx: the client's
   OutcomeUnknown), or one left `sent` by a crash, may still be committing. It is neither looked up nor sent
   again until `settle` has passed since it was sent (the event waits as Settling, no fault of its own). One
   left `sent` by a former leader (an older epoch) may have left as late as the takeover: `settle` counts from
   the later of the two. One it recorded but never marked sent never left: it goes at once.
4. Fence and send in batches: `begin_send` marks a chunk's writes sent under this term's epoch (refused once
   another replica leads), and the request hook checks the epoch again if time passed before the request
   leaves (engine/fencing.py). Then settle each write (confirmed with its result, or failed with the API's own
   error) in its audit log, then its intent, in a shielded scope so a shutdown cannot lose what was sent.

The table (ROUTES below), one row per write kind:

    kind               idempotent  looks before a first send       batches
    SfUpdate           yes         no                              Collections, 200 per call, per object
    SfUpsert           yes         no                              Collections, per object and external id
    SfDelete           yes         no                              one by one (already gone is done)
    SfCreate           no          unless the flow saw it absent    one SOQL read + one Collections call, <=200
    NueCreateCustomer  no          always (externalId, salesAccountId)  one array of up to 200
    NueCreateOrder     no          always (every link to the deal)  one by one
    NueActivateOrder   no          no (after a send: its status)    one by one

An idempotent kind is simply sent again after any failure; a non-idempotent one that may have been sent is
looked up first, whatever its row says. Outcomes come back per idempotency key; the worker turns them into
event outcomes.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import anyio
import structlog

from revdaemon.connectors import nue_wire, salesforce_wire
from revdaemon.connectors.nue import NueClient
from revdaemon.connectors.salesforce import SalesforceClient
from revdaemon.engine.fencing import Term, guarding
from revdaemon.engine.sync_status import SyncStatus
from revdaemon.errors import Busy, ErrorContext, OutcomeUnknown, Retryable, Settling, SyncError
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
from revdaemon.store.records import NewAuditEntry, NewIntent, Settlement, WriteIntent, utcnow
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


@dataclass
class _Attempt:
    """One `execute` call: the term it runs under, and what it learnt from each write's stored intent."""

    term: Term | None  # None: unfenced (a test, or a tool that is no replica)
    ever_sent: set[str] = field(default_factory=set)  # may have reached the API before: look up if not idempotent

    @property
    def epoch(self) -> int | None:
        return self.term.epoch if self.term is not None else None

    def now(self) -> datetime:
        """The store's clock (the term's), against which settle times are judged."""
        return self.term.now() if self.term is not None else utcnow()


Groups = list[list[PendingWrite]]  # the writes merged into each record (or call) of one chunk
Lookup = Callable[["Executor", Groups], Awaitable[dict[int, Mapping[str, Any]]]]
Send = Callable[["Executor", Groups], Awaitable[dict[str, WriteOutcome]]]


@dataclass(frozen=True, kw_only=True)
class Route:
    """How one write kind goes through the path: see the table in the module docstring."""

    idempotent: bool
    chunks: Callable[[Sequence[PendingWrite]], list[Groups]]  # one API call each
    send: Send
    lookup: Lookup | None = None  # finds writes already made: group index in the chunk -> the record found
    look_first: Callable[[PendingWrite], bool] = lambda item: False  # look before even a first send


class Executor:
    def __init__(self, store: Store, salesforce: SalesforceClient, nue: NueClient, *, mapping_version: int | None,
                 dry_run: bool = False, sync_status: SyncStatus | None = None,
                 sync_status_parked: Callable[[], object] = lambda: None,
                 settle: timedelta = timedelta(minutes=3)) -> None:
        self._settle_delay = settle  # an unknown outcome is looked up no sooner than this after it was sent
        self._sync_status = sync_status if sync_status else None
        self._sync_status_parked = sync_status_parked
        self._store = store
        self._sf = salesforce
        self._nue = nue
        self._mapping_version = mapping_version  # the current mapping version, for writes that name none
        self.dry_run = dry_run
        # Keys and entities being written by this process right now. Two workers may plan the same write,
        # or writes from two reads of one entity; the second waits for a retry and a fresh read, so an
        # older state can never land after a newer one. Only the leader writes, so this process is the only one.
        self._in_flight: set[str] = set()

    async def execute(self, pending: Sequence[PendingWrite], *, term: Term | None = None) -> dict[str, WriteOutcome]:
        """Carry out these writes under `term` (the leader's: every step is fenced by its epoch)."""
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
                log.info("write_planned", idem_key=key, write=describe_write(item.write), dry_run=True,
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
                        "the same record is being written by another worker", _context(item.write)))
                else:
                    accepted.append(item)
            # Claimed before any await, so no other worker of this process can slip in between.
            for token in {i.write.idem_key for i in accepted} | {i.entity for i in accepted if i.entity}:
                self._in_flight.add(token)
                claimed.add(token)
            # The ordering check and the version's raise both happen while the entity is held: no other
            # worker can write an older state between them.
            fresh: list[PendingWrite] = []
            versions = await self._store.get_entity_versions([i.entity for i in accepted if i.entity and i.version])
            for item in accepted:
                if item.entity and item.version:
                    applied = versions.get(item.entity)
                    if applied is not None and applied > item.version:
                        log.info("stale_state_skipped", entity=item.entity, version=item.version, applied=applied)
                        outcomes[item.write.idem_key] = WriteOutcome(ok=True, skipped=True, stale=True)
                        continue
                fresh.append(item)
            sent = await self._record_and_send(fresh, _Attempt(term))
            outcomes.update(sent)
            raised: dict[str, str] = {}
            for item in fresh:
                outcome = sent.get(item.write.idem_key)
                if item.entity and item.version and outcome is not None and outcome.ok:
                    raised[item.entity] = max(item.version, raised.get(item.entity, item.version))
            await self._store.raise_entity_versions(raised)
        finally:
            self._in_flight -= claimed
        return outcomes

    async def _record_and_send(self, items: Sequence[PendingWrite], attempt: _Attempt) -> dict[str, WriteOutcome]:
        """Record every intent, set aside what is confirmed or still settling, then carry the rest out kind by
        kind."""
        outcomes: dict[str, WriteOutcome] = {}
        ready: list[PendingWrite] = []
        now = attempt.now()
        # One transaction for every intent of the step: recorded before any of them is sent, as one by one.
        intents = await self._store.record_intents([NewIntent(
            key=item.write.idem_key, system=item.write.target[0], operation=type(item.write).__name__,
            target=f"{item.write.target[1]}:{item.write.target[2]}", request=describe_write(item.write),
            event_id=item.event_id) for item in items], epoch=attempt.epoch)
        for item, intent in zip(items, intents, strict=True):
            key = item.write.idem_key
            route = ROUTES[type(item.write)]
            settled = self._settled(item, intent, route, now, attempt.term)
            if settled is not None:
                outcomes[key] = settled
                continue
            if intent.status is IntentStatus.FAILED:
                await self._store.reopen_intent(key, epoch=attempt.epoch)  # back to `recorded`, sent again below
            if intent.ever_sent or intent.status is IntentStatus.SENT:
                attempt.ever_sent.add(key)
            ready.append(item)
        for kind, route in ROUTES.items():
            mine = [i for i in ready if type(i.write) is kind]
            if mine:
                outcomes.update(await self._carry_out(route, mine, attempt))
        return outcomes

    def _settled(self, item: PendingWrite, intent: WriteIntent, route: Route, now: datetime,
                 term: Term | None) -> WriteOutcome | None:
        """The outcome of a write that needs no call now: confirmed earlier, or still settling; else None."""
        if intent.status is IntentStatus.CONFIRMED:
            return WriteOutcome(ok=True, result=intent.result, skipped=True)
        if not route.idempotent and (wait := self._settling(intent, now, term)) > 0:
            return WriteOutcome(ok=False, error=Settling(
                f"the outcome of an earlier send is unknown: looked up in {wait:.0f} s, once it has settled",
                _context(item.write), retry_after=wait))
        return None

    def _settling(self, intent: WriteIntent, now: datetime, term: Term | None) -> float:
        """Seconds before an earlier send of unknown outcome may be looked up (0: now). A `failed` intent says
        when (`settle_after`); one left `sent` (a crash mid-call) counts from when it was marked sent, or, marked
        by a former leader, from the takeover: that leader may have sent it until its epoch ended."""
        if intent.status is IntentStatus.FAILED or intent.status is IntentStatus.RECORDED:
            until = intent.settle_after
        elif intent.status is IntentStatus.SENT:
            sent_at = intent.updated_at
            if term is not None and (intent.epoch or 0) < term.epoch:
                sent_at = max(sent_at, term.since)
            until = sent_at + self._settle_delay
        else:
            return 0.0
        return max(0.0, (until - now).total_seconds()) if until is not None else 0.0

    async def _carry_out(self, route: Route, items: Sequence[PendingWrite], attempt: _Attempt
                         ) -> dict[str, WriteOutcome]:
        """The one path, per chunk (one API call): look up if needed, fence and mark sent, send, settle."""
        outcomes: dict[str, WriteOutcome] = {}
        for chunk in route.chunks(items):
            groups = list(chunk)
            if route.lookup is not None and any(
                    route.look_first(i) or (i.write.idem_key in attempt.ever_sent) for g in groups for i in g):
                try:
                    found = await route.lookup(self, groups)
                except SyncError as exc:
                    outcomes.update(await self._fail_all(groups, exc, route, attempt))
                    continue
                outcomes.update(await self._settle(
                    [(item, WriteOutcome(ok=True, result={**record, "created": False}))
                     for index, record in found.items() for item in groups[index]], route, attempt))
                groups = [g for index, g in enumerate(groups) if index not in found]
                if not groups:
                    continue
            # The fence: after it, the call may be on the wire, so this epoch's writes are `sent` from here on.
            await self._store.begin_send([i.write.idem_key for g in groups for i in g], epoch=attempt.epoch)
            try:
                with guarding(self._store, attempt.term):
                    sent = await route.send(self, groups)
            except SyncError as exc:
                sent = {i.write.idem_key: WriteOutcome(ok=False, error=exc) for g in groups for i in g}
            outcomes.update(await self._settle([(item, sent[item.write.idem_key]) for g in groups for item in g],
                                               route, attempt))
        return outcomes

    # --- Salesforce -------------------------------------------------------------------------------

    async def _send_sf_records(self, groups: Groups) -> dict[str, WriteOutcome]:
        """Updates by Id or upserts by an external id, each group merged into one record, one Collections call."""
        first = groups[0][0].write
        assert isinstance(first, SfUpdate | SfUpsert)
        key_field = "Id" if isinstance(first, SfUpdate) else first.external_id_field
        records = [{key_field: _record_key(group[0].write), **_merged(group)} for group in groups]
        operation = f"{'update' if isinstance(first, SfUpdate) else 'upsert'} {first.sobject}"
        results = (await self._sf.update_many(first.sobject, records) if isinstance(first, SfUpdate)
                   else await self._sf.upsert_many(first.sobject, key_field, records))
        outcomes: dict[str, WriteOutcome] = {}
        for group, result in zip(groups, results, strict=True):
            if _split(group, result):
                outcomes.update(await self._one_by_one(group, operation=operation))
            else:
                outcome = _sf_outcome(group, result, operation=operation)
                outcomes.update({item.write.idem_key: outcome for item in group})
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
                outcomes[write.idem_key] = WriteOutcome(ok=True, result=result)
            except SyncError as exc:
                outcomes[write.idem_key] = WriteOutcome(ok=False, error=exc)
        log.info("merged_write_split", operation=operation, parts=len(group))
        return outcomes

    async def _look_up_sf_creates(self, groups: Groups) -> dict[int, Mapping[str, Any]]:
        """Ids of records already holding these match values. One IN list per match field (a superset of the
        wanted combinations), narrowed here as SOQL's `=` compares (`_match_key`)."""
        first = groups[0][0].write
        assert isinstance(first, SfCreate)
        names = tuple(sorted(first.match))
        matches = [_match(group[0]) for group in groups]
        conditions = " AND ".join(
            f"{name} IN ({', '.join(sorted({salesforce_wire.soql_literal(m[name]) for m in matches}))})"
            for name in names)
        found: dict[tuple[str, ...], str] = {}
        async for row in self._sf.query(f"SELECT Id, {', '.join(names)} FROM {first.sobject} WHERE {conditions}"):
            found.setdefault(_match_key(row, names), str(row["Id"]))
        return {index: {"id": found[key]} for index, m in enumerate(matches)
                if (key := _match_key(m, names)) in found}

    async def _send_sf_creates(self, groups: Groups) -> dict[str, WriteOutcome]:
        first = groups[0][0].write
        assert isinstance(first, SfCreate)
        results = await self._sf.create_many(first.sobject, [_fields(group[0]) for group in groups])
        outcomes: dict[str, WriteOutcome] = {}
        for group, result in zip(groups, results, strict=True):
            if result.ok:
                result = salesforce_wire.WriteResult(ok=True, id=result.id, created=True)
            outcome = _sf_outcome(group, result, operation=f"create {first.sobject}")
            outcomes.update({item.write.idem_key: outcome for item in group})
        return outcomes

    async def _send_sf_delete(self, groups: Groups) -> dict[str, WriteOutcome]:
        (item,) = groups[0]
        write = item.write
        assert isinstance(write, SfDelete)
        try:
            await self._sf.delete(write.sobject, write.record_id)
        except SyncError as exc:
            if exc.context.error_code not in ("ENTITY_IS_DELETED", "NOT_FOUND"):
                raise  # already gone is what a delete wants
        return {write.idem_key: WriteOutcome(ok=True, result={"id": write.record_id})}

    # --- Nue ----------------------------------------------------------------------------------------

    async def _look_up_customers(self, groups: Groups) -> dict[int, Mapping[str, Any]]:
        # Nue documents no idempotency header, so this read is the guard. Both keys are read: externalId is
        # set by Nue's own sync, salesAccountId by our create.
        accounts = [_account(group) for group in groups]
        existing: dict[str, Mapping[str, Any]] = {}
        for key in ("externalId", "salesAccountId"):
            for match in await self._nue.read_where_in("Customer", key, sorted(set(accounts)),
                                                       ("id", "externalId", "salesAccountId", "name")):
                existing.setdefault(str(match.get(key)), match)
        return {index: {"id": existing[account].get("id")} for index, account in enumerate(accounts)
                if account in existing}

    async def _send_customers(self, groups: Groups) -> dict[str, WriteOutcome]:
        payloads = [{**_payload(group[0].write), "salesAccountId": _account(group)} for group in groups]
        created = await self._nue.create_customers(payloads)
        return {item.write.idem_key: WriteOutcome(ok=True, result={"id": made.get("id"), "created": True})
                for group, made in zip(groups, created, strict=True) for item in group}

    async def _look_up_order(self, groups: Groups) -> dict[int, Mapping[str, Any]]:
        write = groups[0][0].write
        assert isinstance(write, NueCreateOrder)
        order = await self._nue.find_order_for_opportunity(write.customer_id, write.opportunity_id,
                                                           write.marker_field)
        return {} if order is None else {0: {"id": order.get("id"), "orderNumber": order.get("orderNumber")}}

    async def _send_order(self, groups: Groups) -> dict[str, WriteOutcome]:
        write = groups[0][0].write
        assert isinstance(write, NueCreateOrder)
        order = await self._nue.create_order(write.payload)
        return {write.idem_key: WriteOutcome(ok=True, result={"id": order.get("id"), "orderNumber":
                                                               order.get("orderNumber"), "created": True})}

    async def _look_up_activation(self, groups: Groups) -> dict[int, Mapping[str, Any]]:
        """After an activation of unknown outcome: the order's status says whether it took."""
        write = groups[0][0].write
        assert isinstance(write, NueActivateOrder)
        for order in await self._nue.read_where_in("Order", "id", [write.order_id], ("id", "status")):
            if str(order.get("status", "")).lower() in ("activated", "active"):
                return {0: {"id": order.get("id"), "status": order.get("status")}}
        return {}

    async def _send_activation(self, groups: Groups) -> dict[str, WriteOutcome]:
        write = groups[0][0].write
        assert isinstance(write, NueActivateOrder)
        order, _assets = await self._nue.activate_order(write.order_id, generate_invoice=write.generate_invoice,
                                                        activate_invoice=write.activate_invoice)
        return {write.idem_key: WriteOutcome(ok=True, result={"id": order.get("id"), "status": order.get("status")})}

    async def report_failures(self, failures: Sequence[tuple[str, str]], *, term: Term | None = None) -> None:
        """Write why these records could not be synced to their sync status fields, one batched call per
        object. Best effort: a failure here is logged, never retried or dead-lettered (it is a note). Fenced like
        every write: no note leaves a replica that has lost leadership."""
        if self._sync_status is None or self._sync_status_parked() or self.dry_run or not failures:
            return
        if term is not None:
            await self._store.check_epoch(term.epoch)
        for sobject, rows in self._sync_status.error_updates(failures).items():
            try:
                with guarding(self._store, term):
                    results = await self._sf.update_many(sobject, rows)
            except SyncError as exc:
                log.warning("sync_status_not_written", sobject=sobject, records=len(rows), error=exc.message)
                continue
            refused = [r for r in results if not r.ok]
            log.info("sync_status_errors_written", sobject=sobject, records=len(rows) - len(refused),
                     refused=len(refused))

    # --- bookkeeping ------------------------------------------------------------------------------

    async def _fail_all(self, groups: Groups, exc: SyncError, route: Route, attempt: _Attempt
                        ) -> dict[str, WriteOutcome]:
        outcome = WriteOutcome(ok=False, error=exc)
        return await self._settle([(item, outcome) for group in groups for item in group], route, attempt)

    def _version_of(self, item: PendingWrite) -> int | None:
        return item.mapping_version if item.mapping_version is not None else self._mapping_version

    async def _settle(self, answered: Sequence[tuple[PendingWrite, WriteOutcome]], route: Route, attempt: _Attempt
                      ) -> dict[str, WriteOutcome]:
        """Keep one API call's answers: every write's audit entry (which moves its record's synced values, by
        which a later read tells a person's edit from revdaemon's own write) and its intent settled, in one
        transaction. Killed before it commits, every intent is still unsettled (looked up or sent again, and
        counted as revdaemon's meanwhile); there is no state with a confirmed write and no audit entry."""
        settlements: list[Settlement] = []
        for item, outcome in answered:
            write = item.write
            error = outcome.error
            unknown = isinstance(error, OutcomeUnknown) and not route.idempotent
            if unknown:
                # It may exist, or be committing still: not looked up (nor sent) before the settle delay.
                assert isinstance(error, OutcomeUnknown)
                error.retry_after = self._settle_delay.total_seconds()
            settlements.append(Settlement(
                entry=NewAuditEntry(
                    system=write.target[0], operation=type(write).__name__, target=write.target[1],
                    outcome="ok" if outcome.ok else ("error" if isinstance(error, Retryable) else "rejected"),
                    idem_key=write.idem_key, event_id=item.event_id, record_ref=_record_ref(write),
                    status=error.context.status if error else None,
                    detail={"request": describe_write(write), "result": dict(outcome.result or {}),
                            "error": error.message if error else None,
                            "error_code": error.context.error_code if error else None,
                            **({"outcome_unknown": True} if unknown else {})},
                    mapping_version=self._version_of(item),
                    synced_fields=dict(write.fields) if isinstance(write, SfUpdate | SfUpsert | SfCreate) else {}),
                confirmed=outcome.ok, result=dict(outcome.result or {}),
                error=error.message if error is not None and not outcome.ok else None,
                settle_for=self._settle_delay if unknown else None))
        with anyio.CancelScope(shield=True):
            await self._store.settle_writes(settlements, epoch=attempt.epoch)
        for (item, outcome), settled in zip(answered, settlements, strict=True):
            write, error = item.write, outcome.error
            if outcome.ok:
                log.info("write_confirmed", idem_key=write.idem_key, target=_record_ref(write))
            elif settled.settle_for is not None:
                log.warning("write_outcome_unknown", idem_key=write.idem_key, target=_record_ref(write),
                            error=error.message if error else None,
                            look_up_in_seconds=self._settle_delay.total_seconds())
            else:
                log.warning("write_failed", idem_key=write.idem_key, target=_record_ref(write),
                            error=error.message if error else None)
        return {item.write.idem_key: outcome for item, outcome in answered}


# --- the table's chunking: each chunk is one API call ------------------------------------------------


def _one_each(items: Sequence[PendingWrite]) -> list[Groups]:
    return [[[item]] for item in items]


def _sf_record_chunks(items: Sequence[PendingWrite]) -> list[Groups]:
    """Per object (and external id field), the writes to one record merged, up to 200 records a call."""
    by_record: dict[tuple[str, str, str], list[PendingWrite]] = defaultdict(list)
    for item in items:
        w = item.write
        assert isinstance(w, SfUpdate | SfUpsert)
        key_field = "Id" if isinstance(w, SfUpdate) else w.external_id_field
        by_record[(w.sobject, key_field, _record_key(w))].append(item)
    per_call: dict[tuple[str, str], Groups] = defaultdict(list)
    for (sobject, key_field, _), group in by_record.items():
        per_call[(sobject, key_field)].append(group)
    return [groups[start:start + salesforce_wire.COLLECTION_MAX] for groups in per_call.values()
            for start in range(0, len(groups), salesforce_wire.COLLECTION_MAX)]


def _sf_create_chunks(items: Sequence[PendingWrite]) -> list[Groups]:
    """Per object and match fields, the writes that would make one record together, up to 200 a call and
    fewer when their match values would make the lookup's query text long."""
    batches: dict[tuple[str, tuple[str, ...]], dict[tuple[str, ...], list[PendingWrite]]] = defaultdict(
        lambda: defaultdict(list))
    for item in items:
        assert isinstance(item.write, SfCreate)
        names = tuple(sorted(item.write.match))
        batches[(item.write.sobject, names)][_match_key(item.write.match, names)].append(item)
    return [[group for _, group in chunk] for (_, names), by_match in batches.items()
            for chunk in _lookup_chunks(list(by_match.items()), names)]


def _customer_chunks(items: Sequence[PendingWrite]) -> list[Groups]:
    by_account: dict[str, list[PendingWrite]] = defaultdict(list)
    for item in items:
        by_account[_account([item])].append(item)
    groups = list(by_account.values())
    return [groups[start:start + nue_wire.CUSTOMER_BATCH_MAX]
            for start in range(0, len(groups), nue_wire.CUSTOMER_BATCH_MAX)]


ROUTES: dict[type, Route] = {
    SfUpdate: Route(idempotent=True, chunks=_sf_record_chunks, send=Executor._send_sf_records),
    SfUpsert: Route(idempotent=True, chunks=_sf_record_chunks, send=Executor._send_sf_records),
    SfDelete: Route(idempotent=True, chunks=_one_each, send=Executor._send_sf_delete),
    SfCreate: Route(idempotent=False, chunks=_sf_create_chunks, send=Executor._send_sf_creates,
                    lookup=Executor._look_up_sf_creates, look_first=lambda item: not _seen_absent(item)),
    NueCreateCustomer: Route(idempotent=False, chunks=_customer_chunks, send=Executor._send_customers,
                             lookup=Executor._look_up_customers, look_first=lambda item: True),
    NueCreateOrder: Route(idempotent=False, chunks=_one_each, send=Executor._send_order,
                          lookup=Executor._look_up_order, look_first=lambda item: True),
    NueActivateOrder: Route(idempotent=False, chunks=_one_each, send=Executor._send_activation,
                            lookup=Executor._look_up_activation),
}


def _sf_outcome(group: Sequence[PendingWrite], result: salesforce_wire.WriteResult, *, operation: str
                ) -> WriteOutcome:
    if result.ok:
        return WriteOutcome(ok=True, result={"id": result.id, "created": result.created})
    if result.failure is not None:
        return WriteOutcome(ok=False, error=result.failure)
    error = salesforce_wire.classify(400, [{"errorCode": e.code, "message": e.message, "fields": list(e.fields)}
                                           for e in result.errors],
                                     operation=operation, record_ref=_record_ref(group[0].write))
    return WriteOutcome(ok=False, error=error)


def _record_key(write: Write) -> str:
    if isinstance(write, SfUpdate):
        return write.record_id
    assert isinstance(write, SfUpsert)
    return write.external_id


def _account(group: Sequence[PendingWrite]) -> str:
    write = group[0].write
    assert isinstance(write, NueCreateCustomer)
    return write.salesforce_account_id


def _context(write: Write) -> ErrorContext:
    return ErrorContext(system=write.target[0], operation=type(write).__name__, record_ref=_record_ref(write))


def _split(group: Sequence[PendingWrite], result: salesforce_wire.WriteResult) -> bool:
    """A record-level refusal of a write merged from several plans (not a whole-call failure)."""
    return not result.ok and result.failure is None and len({i.write.idem_key for i in group}) > 1


def _match_key(values: Mapping[str, Any], names: tuple[str, ...]) -> tuple[str, ...]:
    """The values as SOQL's `=` compares them: an id (WhatId, ParentId) by its 15 case-sensitive characters, so
    a flow's 15-character id finds the 18-character one Salesforce returns; other text without case."""
    return tuple(_comparable(name, values.get(name)) for name in names)


def _comparable(name: str, value: Any) -> str:
    text = str(value)
    if name.endswith("Id") and salesforce_wire.looks_like_id(text):
        return salesforce_wire.id_key(text)
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


def describe_write(write: Write) -> dict[str, Any]:
    """A write as the audit log, a dry run and a dead letter show it: its kind, its record and what it carries."""
    body: dict[str, Any] = {"kind": type(write).__name__, "target": _record_ref(write)}
    if isinstance(write, SfUpdate | SfUpsert | SfCreate):
        body["fields"] = dict(write.fields)
    elif isinstance(write, NueCreateCustomer | NueCreateOrder):
        body["payload"] = dict(write.payload)
    return body

