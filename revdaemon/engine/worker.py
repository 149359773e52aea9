"""Workers: claim due events, re-read the state they name, plan with the flows, execute, settle.

Theory of operation:
- A worker claims a batch of due events (with a lease: if this process dies, another claim takes them
  over when the lease expires). Each (event, flow) pair whose flow takes the event's type from the event's
  source is a job (flows.base.takes); an event no flow takes is finished with a log line, a warning when a
  flow handles its type but not from that source (an internal type or flag a webhook sent).
- One step: ask every job's flow what it needs given what was found so far, fetch only what is new,
  batched across the whole claim, until nothing new is needed; then plan. Writes of all jobs go to the
  executor together, so they batch and coalesce. A plan that is not done (its next step depends on
  these writes) runs another step after a fresh read, up to `MAX_STEPS`.
- Ordering: a plan carries the version of the source state it reflects; a version older than the one
  already applied to that entity is skipped and logged, so reordered deliveries can't go backwards.
- Settling: conflict -> conflict log; permanent error -> dead letter with the API's own error; retryable
  error -> back to the inbox with backoff until `max_attempts`, then a dead letter; else done.
- Fencing: a worker runs only while its replica leads, under that leadership's term (engine/fencing.py). Every
  claim and every outcome names the term's epoch; when a store step says Fenced (another replica leads now),
  the worker stops at once: it completes, retries and gives back nothing, and the new leader takes over its
  claims and looks up its writes.
"""

from __future__ import annotations

import random
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import anyio
import structlog
from anyio.abc import TaskStatus
from structlog.contextvars import bound_contextvars

from revdaemon.connectors import salesforce_wire
from revdaemon.engine.executor import Executor, PendingWrite, WriteOutcome, describe_write
from revdaemon.engine.fencing import Term
from revdaemon.engine.lookups import Fetcher
from revdaemon.engine.mappings import FlowVersions, MappingUnavailable
from revdaemon.engine.pollers import parse_timestamp
from revdaemon.engine.schema import SchemaGuard
from revdaemon.engine.shadow import Shadow
from revdaemon.errors import (
    Busy,
    ClaimLost,
    Conflict,
    ErrorContext,
    Fenced,
    LinkConflict,
    OutcomeUnknown,
    Permanent,
    RequestLimitExceeded,
    Retryable,
    Settling,
    StoreBusy,
    SyncError,
    Throttled,
)
from revdaemon.flows import sources
from revdaemon.flows.base import Flow, FlowEvent, Found, Needs, takes, why_not_taken
from revdaemon.flows.plan import LinkIds, OpenConflict, Plan
from revdaemon.limits import RetryPolicy
from revdaemon.ops.alerts import Alerter, AlertKind
from revdaemon.ops.metrics import Metrics
from revdaemon.store import Store
from revdaemon.store.records import Event, Link, NewConflict, NewDeadLetter, utcnow
from revdaemon.store.states import EventStatus

log = structlog.get_logger("revdaemon.worker")

PARKED_RETRY_SECONDS = 300.0
BUSY_RETRY_SECONDS = 0.5
LIMIT_RETRY_SECONDS = 60.0
MAX_STEPS = 6  # closed won: customer, order, activation, write-back, and room to spare
MAX_LOOKUP_ROUNDS = 6  # onboarding of a new customer: customer, its account by key, then by name, then its records


class Doorbell:
    """Rung when new events are stored, so idle workers start at once instead of at the next poll."""

    def __init__(self) -> None:
        self._event = anyio.Event()

    def ring(self) -> None:
        self._event.set()
        self._event = anyio.Event()

    async def wait(self, at_most: float) -> None:
        with anyio.move_on_after(at_most):
            await self._event.wait()


@dataclass
class _Job:
    event: Event
    flow: Flow
    view: FlowEvent
    done: bool = False
    conflict: OpenConflict | None = None
    error: SyncError | None = None
    error_ref: str | None = None  # the record the failed write targeted, when the error itself names none
    error_sent: dict[str, Any] | None = None  # what that write sent (executor.describe_write), for its dead letter
    settle_wait: float = 0.0  # the longest a failed write must wait to settle (its outcome unknown), seconds
    crash: str | None = None
    parked: str | None = None  # the flow cannot run against the org's schema right now
    waiting: str | None = None  # its last plan waits for another flow of the claim (Plan.waiting)
    mapping_version: int | None = None  # the mapping version the flow was built from
    old_mapping: bool = False  # an older version than the current one (the event is pinned to it)


@dataclass
class WorkerStats:
    processed: int = 0
    failed: int = 0
    dead: int = 0
    conflicts: int = 0
    by_type: dict[str, int] = field(default_factory=dict)


class Worker:
    def __init__(self, store: Store, fetcher: Fetcher, executor: Executor, flows: Sequence[Flow], *,
                 name: str = "worker-1", batch_size: int = 100, lease: timedelta = timedelta(minutes=5),
                 max_attempts: int = 8, backoff: RetryPolicy | None = None, idle_seconds: float = 1.0,
                 doorbell: Doorbell | None = None, rng: random.Random | None = None,
                 stats: WorkerStats | None = None, schema: SchemaGuard | None = None,
                 metrics: Metrics | None = None, alerter: Alerter | None = None,
                 versions: FlowVersions | None = None, hold: Callable[[], float] = lambda: 0.0,
                 own_user: Callable[[], str | None] = lambda: None, term: Term | None = None,
                 shadow: Shadow | None = None) -> None:
        # The leadership this worker works under (set by `run`): None only outside the replicas' work (tests).
        self.term = term
        self._own_user = own_user  # the Salesforce user revdaemon writes as (None until known: no echo is dropped)
        self._hold = hold  # seconds to claim nothing for (the Salesforce pause): 0 when work may go on
        self._metrics = metrics
        self._versions = versions  # None: every event is planned with `flows`, and none is pinned
        self._alerter = alerter
        self._store = store
        self._fetcher = fetcher
        self._executor = executor
        self._flows = list(flows)
        self.name = name
        self._batch_size = batch_size
        self._lease = lease
        self._max_attempts = max_attempts
        self._backoff = backoff or RetryPolicy(base_delay=2.0, max_delay=900.0)
        self._idle = idle_seconds
        self._doorbell = doorbell or Doorbell()
        self._rng = rng or random.Random()
        self.stats = stats or WorkerStats()
        self._schema = schema
        self._dry_seen: set[int] = set()
        self._shadow = shadow  # shadow mode: plans are recorded, nothing is sent, until the store says promoted
        self._status_failures: list[tuple[str, str]] = []  # (record ref, why): for the sync status fields
        self.stopped = anyio.Event()
        self.running = False
        self._stopping = False

    async def run(self, term: Term | None = None, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED
                  ) -> None:
        """Work until stopped, under `term` (the replica's leadership; one run at a time). Fenced is raised out:
        the leadership is over and the caller ends this term's work."""
        if term is not None:
            self.term = term
        self.stopped = anyio.Event()
        self.running = True
        task_status.started()
        try:
            if term is not None:
                # Claims under this worker's name left by a term of this process that ended while the store kept its
                # epoch (a cancelled term, or the last run on one box) are due again at once, not after their lease.
                await self._store.release_claims(self.name, epoch=term.epoch)
            while not self._stopping:
                if (pause := self._hold()) > 0:
                    # Every flow writes to (or reads) Salesforce: claiming now would only re-read Nue for events
                    # that must wait anyway, spending Nue's calls for nothing.
                    await self._doorbell.wait(min(pause, self._idle * 30))
                    continue
                try:
                    held = await self.run_once()
                except Fenced as exc:
                    log.warning("worker_fenced", worker=self.name, epoch=self._epoch, detail=str(exc))
                    raise
                except Exception:
                    # A bug must not take the daemon down: give the batch back and carry on.
                    log.exception("worker_batch_failed", worker=self.name)
                    await self._give_back()
                    held = 0
                if not held and not self._stopping:
                    await self._doorbell.wait(self._idle)
        finally:
            self.running = False
            self.stopped.set()

    async def _give_back(self) -> None:
        """Release this worker's claims after a failed batch. A store busy a little longer (a lock another process
        held past the busy timeout, a deadlock retried out) is no reason to stop the daemon: the claims come back
        when their lease ends. A store that is broken (StoreUnavailable) ends the daemon with the store's exit code."""
        try:
            with anyio.CancelScope(shield=True):
                await self._store.release_claims(self.name, epoch=self._epoch)
        except StoreBusy as exc:
            log.warning("claims_not_released", worker=self.name, error=str(exc),
                        reason="the store was busy: the claims come back when their lease ends")
            await anyio.sleep(self._idle)  # not straight back into a busy store

    def stop(self) -> None:
        """Finish the batch in hand, then claim nothing more."""
        self._stopping = True
        self._doorbell.ring()

    @property
    def _epoch(self) -> int | None:
        return self.term.epoch if self.term is not None else None

    def _now(self) -> datetime:
        """The store's clock, as the term carries it: retries are due by it."""
        return self.term.now() if self.term is not None else utcnow()

    async def run_once(self) -> int:
        """Claim and process one batch; the number of events it held."""
        if self._executor.dry_run:
            return await self._dry_run_once()
        if self._shadow is not None and await self._store.shadow_promotion() is not None:
            log.warning("shadow_promoted", worker=self.name,
                        detail="shadow mode was promoted: this worker now writes (set mode: live in config.yaml)")
            self._shadow = None
        events = await self._store.claim_events(
            worker=self.name, limit=self._batch_size, lease=self._lease,
            mapping_version=self._versions.current_version if self._versions is not None else None,
            epoch=self._epoch)
        if events and self._shadow is not None:
            await self._shadow_process(events)
        elif events:
            try:
                await self.process(events)
            except Fenced:
                raise  # the leadership is over: nothing of this batch is settled here
            except Exception:
                await self._after_crash(events, traceback.format_exc(limit=8))
        return len(events)

    @property
    def shadowing(self) -> bool:
        return self._shadow is not None

    async def _shadow_process(self, events: Sequence[Event]) -> None:
        """Shadow mode: the claim is planned, checked and recorded (engine/shadow.py), and its events finished;
        nothing is sent. A failed read gives the events back to be tried again, as live mode would."""
        assert self._shadow is not None
        try:
            await self._shadow.record(events)
        except SyncError as exc:
            retry_after = exc.retry_after if isinstance(exc, Throttled) else None
            with anyio.CancelScope(shield=True):
                for event in events:
                    delay = self._backoff.delay(event.attempts, retry_after, self._rng)
                    try:
                        await self._store.retry_event(event.id, error=f"shadow: {exc.message}",
                                                      next_attempt_at=self._now() + timedelta(seconds=delay),
                                                      claimed_by=self.name, epoch=self._epoch)
                    except ClaimLost:
                        continue
            return
        except Exception:
            await self._after_crash(events, traceback.format_exc(limit=8))
            return
        lost = await self._store.complete_events([e.id for e in events], claimed_by=self.name, epoch=self._epoch)
        self.stats.processed += len(events) - len(lost)

    async def _after_crash(self, events: Sequence[Event], trace: str) -> None:
        """A bug, not an API answer: events that have had their attempts become dead letters carrying the
        traceback (else the same oldest batch would be claimed and fail for ever); the rest wait a while."""
        log.error("worker_batch_failed", worker=self.name, events=len(events), error=trace.strip().splitlines()[-1])
        with anyio.CancelScope(shield=True):
            for event in events:
                try:
                    if event.attempts >= self._max_attempts:
                        await self._dead(event, NewDeadLetter(system="revdaemon", operation="process batch",
                                                              error=trace.strip().splitlines()[-1],
                                                              request={"traceback": trace}))
                    else:
                        delay = self._backoff.delay(event.attempts, None, self._rng)
                        await self._store.retry_event(event.id, error="worker crash: " + trace.strip().splitlines()[-1],
                                                      next_attempt_at=self._now() + timedelta(seconds=delay),
                                                      claimed_by=self.name, epoch=self._epoch)
                except ClaimLost:
                    continue

    async def _dry_run_once(self) -> int:
        """--dry-run: plan the first step of each waiting event and log its writes; claim, settle and send
        nothing, so a real run later finds the inbox as it was."""
        waiting = [e for e in await self._store.list_events(status=EventStatus.RECEIVED, limit=self._batch_size * 4)
                   if e.id not in self._dry_seen][: self._batch_size]
        if not waiting:
            return 0
        self._dry_seen.update(e.id for e in waiting)
        jobs: list[_Job] = []
        for event in waiting:
            try:
                jobs += await self._jobs_of(event)
            except MappingUnavailable as exc:
                log.info("dry_run_planned", event_key=event.key, outcome="error", reason=str(exc))
        if jobs:
            await self._step(jobs)
        for job in jobs:
            outcome = ("conflict" if job.conflict else "crash" if job.crash else "error" if job.error
                       else "planned")
            log.info("dry_run_planned", event_key=job.event.key, flow=job.flow.name, outcome=outcome,
                     reason=job.conflict.reason if job.conflict else job.error.message if job.error else None,
                     mapping_version=job.mapping_version)
        return len(waiting)

    async def process(self, events: Sequence[Event]) -> None:
        if self._schema is not None:
            await self._schema.recheck_due()
        jobs: list[_Job] = []
        unusable: dict[int, MappingUnavailable] = {}
        for event in events:
            if await self._is_own_echo(event):
                log.info("event_ignored", event_key=event.key, type=event.type,
                         reason="the echo of revdaemon's own write, unchanged since")
                continue  # finished below with no job, like an event no flow handles
            try:
                matched = await self._jobs_of(event)
            except MappingUnavailable as exc:
                unusable[event.id] = exc
                continue
            if not matched:
                self._log_ignored(event)
            jobs.extend(matched)
        for job in jobs:
            job.parked = self._schema.is_parked(job.flow.name) if self._schema is not None else None
        pending = [j for j in jobs if not j.parked]
        for _step in range(MAX_STEPS):
            if not pending:
                break
            await self._step(pending)
            for job in pending:
                # The current fields are what the schema guard checks: a field only an older mapping version
                # writes is that event's own error (a dead letter the operator can replay with --remap).
                if job.error is not None and self._schema is not None and not job.old_mapping and \
                        await self._schema.on_error(job.flow.name, job.error):
                    job.parked, job.error = self._schema.is_parked(job.flow.name), None
            pending = [j for j in pending if not (j.done or j.conflict or j.error or j.crash or j.parked)]
        for job in pending:
            if job.waiting is not None:
                # What it waited for was not made in this claim (the other flow opened a conflict, or runs on
                # another claim): skipped, as it was before it could wait.
                log.info("event_skipped", event_key=job.event.key, flow=job.flow.name, reason=job.waiting)
                job.done = True
                continue
            job.error = Retryable("the flow did not finish within its steps; trying again later",
                                  _context(job, "plan"))
        by_event: dict[int, list[_Job]] = {}
        for job in jobs:
            by_event.setdefault(job.event.id, []).append(job)
        done: list[Event] = []
        for event in events:
            if event.id in unusable:
                try:
                    await self._dead(event, NewDeadLetter(
                        system="revdaemon", operation=f"load mapping version {event.mapping_version}",
                        error=f"{unusable[event.id]}; replay it with --remap to use the current mapping"))
                except ClaimLost as exc:
                    log.warning("claim_lost", event_key=event.key, detail=str(exc))
                continue
            event_jobs = by_event.get(event.id, [])
            if not any(j.conflict or j.crash or j.error or j.parked for j in event_jobs):
                done.append(event)  # the common case, finished together in one transaction below
                continue
            try:
                await self._settle_unfinished(event, event_jobs)
            except ClaimLost as exc:
                # Another worker took the event over after our lease ran out: it settles it, not us.
                log.warning("claim_lost", event_key=event.key, detail=str(exc))
        if self._status_failures:
            # Why each record could not be synced, on the record itself: one batched write per object.
            failures, self._status_failures = self._status_failures, []
            await self._executor.report_failures(failures, term=self.term)
        lost = set(await self._store.complete_events([e.id for e in done], claimed_by=self.name, epoch=self._epoch))
        for event in done:
            if event.id in lost:
                log.warning("claim_lost", event_key=event.key)
                continue
            self.stats.processed += 1
            self.stats.by_type[event.type] = self.stats.by_type.get(event.type, 0) + 1
            if self._metrics is not None:
                self._metrics.event_processed(event.type)
            log.info("event_done", event_key=event.key, event_type=event.type,
                     flows=[j.flow.name for j in by_event.get(event.id, [])])

    async def _is_own_echo(self, event: Event) -> bool:
        """True when a polled Salesforce row shows nothing but revdaemon's own last write.

        Checked here, before planning, and not in the poller: the poller only stores hints (it keeps the
        (id, SystemModstamp) key, so re-reads still dedupe), while the worker is where every source meets and the
        audit log is read; the check uses the event's own row and the store, so an echo costs no API call.

        Both witnesses must agree. Salesforce: the row was last modified by revdaemon's user. The audit log:
        revdaemon's newest confirmed write to the record was recorded no earlier than the row's SystemModstamp
        (nothing modified it after), the row still shows the values it wrote, and every other field the row
        carries equals the row of the event that write was planned from (nothing else changed in between). The
        integration user may be shared (Nue's own sync, another tool), so its name alone drops nothing; a clock
        skew or a write planned from another kind of event errs towards planning, which is always safe."""
        user = self._own_user()
        data = event.payload.get("data")
        if not user or event.source != sources.SALESFORCE_POLL or not isinstance(data, dict):
            return False
        modified_by, modstamp, record_id = data.get("LastModifiedById"), data.get("SystemModstamp"), data.get("Id")
        if not (isinstance(modified_by, str) and isinstance(modstamp, str) and isinstance(record_id, str)):
            return False
        if not salesforce_wire.same_id(modified_by, user):
            return False
        sobject = event.key.split(":", 2)[1] if event.key.startswith("sf:") else None
        if sobject is None:
            return False
        ours = next((w for w in await self._store.list_writes(record_ref=f"salesforce:{sobject}:{record_id}",
                                                              limit=20) if w.outcome == "ok"), None)
        if ours is None or ours.event_id is None or ours.at < parse_timestamp(modstamp):
            return False
        request = ours.detail.get("request")
        written = request.get("fields") if isinstance(request, dict) else None
        if not isinstance(written, dict) or any(data[k] != v for k, v in written.items() if k in data):
            return False
        source = await self._store.get_event(ours.event_id)
        before = source.payload.get("data") if source is not None and source.source == event.source else None
        if not isinstance(before, dict) or before.get("Id") != record_id:
            return False
        unwritten = set(data) - set(written) - {"SystemModstamp", "LastModifiedById", "attributes"}
        return all(before.get(k) == data[k] for k in unwritten)

    def _log_ignored(self, event: Event) -> None:
        # Every mapping version's flows are the same classes, so the current ones say why as well as any.
        reason = why_not_taken(self._flows, event.type, event.source)
        if any(event.type in flow.event_types for flow in self._flows):
            # A type some flow handles, from a source it does not trust: someone tried to reach internal work.
            log.warning("event_ignored", event_key=event.key, type=event.type, source=event.source, reason=reason)
        else:
            log.info("event_ignored", event_key=event.key, type=event.type, source=event.source, reason=reason)

    async def _jobs_of(self, event: Event) -> list[_Job]:
        """One job per flow taking the event, from the flows of the mapping version it is pinned to."""
        view = FlowEvent(key=event.key, type=event.type, source=event.source, payload=event.payload)
        if self._versions is None:
            flows, version, old = self._flows, None, False
        else:
            flows = await self._versions.flows_for(event.mapping_version)
            old = not self._versions.is_current(event.mapping_version)
            version = event.mapping_version if old else self._versions.current_version
        return [_Job(event=event, flow=flow, view=view, mapping_version=version, old_mapping=old)
                for flow in flows if takes(flow, event.type, event.source)]

    async def _step(self, jobs: list[_Job]) -> None:
        found = Found()
        try:
            for _ in range(MAX_LOOKUP_ROUNDS):
                parts = []
                for index, job in enumerate(jobs):
                    await _breathe(index)
                    parts.append(self._needs(job, found))
                needs = Needs.union(parts)
                missing = needs.minus(found)
                if not missing:
                    break
                found = found.merged(await self._fetcher.fetch(missing))
        except SyncError as exc:
            if len(jobs) > 1:
                # One bad read must not fail the whole claim: look each job up alone to find whose it was.
                await self._step_one_by_one(jobs, exc)
                return
            jobs[0].error = exc
            return
        plans: dict[int, Plan] = {}
        for index, job in enumerate(jobs):
            if job.crash:
                continue
            await _breathe(index)
            try:
                plans[index] = job.flow.plan(job.view, found)
            except Exception:
                job.crash = traceback.format_exc(limit=5)
        pending_writes: list[PendingWrite] = []
        for index, plan in plans.items():
            job = jobs[index]
            if plan.conflict is not None:
                job.conflict = plan.conflict
                continue
            if plan.skip_reason and not plan.writes:
                log.info("event_skipped", event_key=job.event.key, flow=job.flow.name, reason=plan.skip_reason)
            pending_writes.extend(PendingWrite(write=w, event_id=job.event.id, entity=plan.entity,
                                               version=plan.version, mapping_version=job.mapping_version)
                                  for w in plan.writes)
        outcomes = await self._executor.execute(pending_writes, term=self.term) if pending_writes else {}
        for index, plan in plans.items():
            job = jobs[index]
            if job.conflict or job.done:
                continue
            failed = [w for w in plan.writes if not outcomes[w.idem_key].ok]
            if failed:
                job.error = _worst([outcomes[w.idem_key] for w in failed])
                # A dead letter names its record (a Nue create's error may not): that is how the record shows
                # the failure in its status fields, and how a later failure about it joins the same letter.
                job.settle_wait = max(_settle_wait(outcomes[w.idem_key].error) for w in failed)
                worst = next(w for w in failed if outcomes[w.idem_key].error is job.error)
                job.error_ref = f"{worst.target[0]}:{worst.target[1]}:{worst.target[2]}"
                job.error_sent = describe_write(worst)
                continue
            if any(outcomes[w.idem_key].stale for w in plan.writes):
                job.done = True  # a newer state of the entity was already applied: this one is history
                continue
            await self._link(job, plan.links)
            job.waiting = plan.waiting
            job.done = plan.done and plan.waiting is None

    async def _link(self, job: _Job, links: Sequence[LinkIds]) -> None:
        """Record the pairings a plan found (after its writes succeeded). A pairing that contradicts one already
        kept is logged and left: the flow found it by ids both systems hold, so the older link is the one to check."""
        if self._executor.dry_run:
            return  # a dry run stores nothing
        for link in links:
            try:
                await self._store.put_link(Link(object_type=link.object_type, nue_id=link.nue_id,
                                                salesforce_id=link.salesforce_id))
            except LinkConflict as exc:
                log.warning("link_not_recorded", event_key=job.event.key, flow=job.flow.name,
                            nue_id=link.nue_id, salesforce_id=link.salesforce_id, reason=str(exc))

    async def _step_one_by_one(self, jobs: list[_Job], first_error: SyncError) -> None:
        log.warning("batched_lookup_failed", jobs=len(jobs), error=first_error.message)
        for job in jobs:
            await self._step([job])

    def _needs(self, job: _Job, found: Found) -> Needs:
        if job.crash:
            return Needs()
        try:
            return job.flow.needs(job.view, found)
        except Exception:
            job.crash = traceback.format_exc(limit=5)
            return Needs()

    async def _settle_unfinished(self, event: Event, jobs: Sequence[_Job]) -> None:
        """A conflict, a crash in a flow, a permanent or a retryable error: in that order of precedence."""
        with bound_contextvars(event_key=event.key, event_type=event.type):
            parked = next((j for j in jobs if j.parked), None)
            if parked is not None and not any(j.conflict or j.crash or j.error for j in jobs):
                # Waits, neither processed nor dead-lettered, until the flow's fields are back.
                due = self._now() + timedelta(seconds=PARKED_RETRY_SECONDS)
                await self._store.retry_event(event.id, error=f"flow {parked.flow.name} parked: {parked.parked}",
                                              next_attempt_at=due, claimed_by=self.name, reset_attempts=True,
                                              epoch=self._epoch)
                if self._metrics is not None:
                    self._metrics.event_failed(event.type, "parked")
                return
            conflict = next((j for j in jobs if j.conflict), None)
            crash = next((j for j in jobs if j.crash), None)
            permanent = next((j for j in jobs if isinstance(j.error, Permanent | Conflict)), None)
            retry = next((j for j in jobs if j.error is not None and permanent is None), None)
            if conflict is not None and conflict.conflict is not None:
                c = conflict.conflict
                await self._store.conflict_event(event.id, claimed_by=self.name, epoch=self._epoch,
                                                 conflict=NewConflict(
                    flow=c.flow, record_ref=c.record_ref, reason=c.reason, nue_values=dict(c.nue_values),
                    salesforce_values=dict(c.salesforce_values), synced_values=dict(c.synced_values)))
                self.stats.conflicts += 1
                log.warning("event_conflict", flow=c.flow, record_ref=c.record_ref, reason=c.reason)
                if self._metrics is not None:
                    self._metrics.event_failed(event.type, "conflict")
                if self._alerter is not None:
                    self._alerter.alert(AlertKind.CONFLICT, c.record_ref, c.reason, flow=c.flow, event_key=event.key)
                self._status_failures.append((c.record_ref, f"conflict: {c.reason}"))
            elif crash is not None and crash.crash is not None:
                await self._dead(event, NewDeadLetter(system="revdaemon", operation=f"plan {crash.flow.name}",
                                                      error=crash.crash.strip().splitlines()[-1],
                                                      request={"traceback": crash.crash}))
            elif permanent is not None and permanent.error is not None:
                await self._dead(event, _letter(permanent.error, permanent.error_ref, permanent.error_sent))
            elif retry is not None and retry.error is not None:
                # no sooner than the slowest write in doubt may be looked up, whichever error is reported
                await self._retry(event, retry.error, retry.error_ref, sent=retry.error_sent,
                                  at_least=max(j.settle_wait for j in jobs))

    async def _retry(self, event: Event, error: SyncError, record_ref: str | None = None, *,
                     at_least: float = 0.0, sent: dict[str, Any] | None = None) -> None:
        self.stats.failed += 1
        # Busy is no fault of the event (another worker is writing the same thing, or an earlier send is
        # settling): it never uses up its attempts.
        if event.attempts >= self._max_attempts and not isinstance(error, Throttled | Busy):
            await self._dead(event, _letter(error, record_ref, sent))
            return
        retry_after = error.retry_after if isinstance(error, Throttled | OutcomeUnknown) else None
        if isinstance(error, RequestLimitExceeded):
            # The client holds all Salesforce work for the pause anyway (in memory); the event itself is looked
            # at again each minute, so a restart or a restored allocation does not leave it waiting 15 minutes.
            retry_after = min(retry_after or LIMIT_RETRY_SECONDS, LIMIT_RETRY_SECONDS)
        delay = self._backoff.delay(event.attempts, retry_after, self._rng)
        if isinstance(error, Settling):
            # an earlier send's outcome is unknown: look again once it has settled, no sooner
            delay = error.retry_after + self._rng.uniform(0.05, BUSY_RETRY_SECONDS)
        elif isinstance(error, Busy):
            delay = self._rng.uniform(0.05, BUSY_RETRY_SECONDS)  # no fault of the event: just not now
        due = self._now() + timedelta(seconds=max(delay, at_least))
        # Settling only waited for an earlier send to settle: it gives back this claim's attempt but keeps the
        # failures before it, so a create that keeps ending unknown still reaches the dead letters.
        await self._store.retry_event(event.id, error=error.message, next_attempt_at=due, claimed_by=self.name,
                                      reset_attempts=isinstance(error, Busy) and not isinstance(error, Settling),
                                      refund_attempt=isinstance(error, Settling), epoch=self._epoch)
        if self._metrics is not None:
            self._metrics.event_failed(event.type, "retry")
        log.info("event_retry_scheduled", attempts=event.attempts, wait_seconds=round(delay, 2), error=error.message)

    async def _dead(self, event: Event, letter: NewDeadLetter) -> None:
        joined = letter.record_ref is not None and await self._store.open_dead_letter(letter.record_ref) is not None
        letter_id = await self._store.dead_letter_event(event.id, letter, claimed_by=self.name, epoch=self._epoch)
        if joined:
            # The record already waits for a person: no second letter, alert or status write (which would move
            # its SystemModstamp and come back as yet another event).
            self.stats.dead += 1
            log.info("event_joined_dead_letter", dead_letter=letter_id, record_ref=letter.record_ref,
                     error=letter.error)
            return
        if letter.record_ref:
            code = f"{letter.error_code}: " if letter.error_code else ""
            self._status_failures.append((letter.record_ref, f"{code}{letter.error}"))
        self.stats.dead += 1
        log.warning("event_dead_lettered", error=letter.error, error_code=letter.error_code, system=letter.system)
        if self._metrics is not None:
            self._metrics.event_failed(event.type, "dead")
        if self._alerter is not None:
            self._alerter.alert(AlertKind.DEAD_LETTER, event.key, letter.error, system=letter.system,
                                operation=letter.operation, error_code=letter.error_code, record_ref=letter.record_ref)


def _settle_wait(error: SyncError | None) -> float:
    if isinstance(error, Settling | OutcomeUnknown):
        return error.retry_after or 0.0
    return 0.0


def _worst(failures: Sequence[WriteOutcome]) -> SyncError:
    errors = [f.error for f in failures if f.error is not None]
    for kind in (Conflict, Permanent):
        for error in errors:
            if isinstance(error, kind):
                return error
    return errors[0]


def _letter(error: SyncError, record_ref: str | None = None, sent: dict[str, Any] | None = None) -> NewDeadLetter:
    """`request` keeps the two apart: what revdaemon sent (the write: its record and fields), and the items of the
    API's error (code, message, fields); `error` is the API's message itself."""
    items = [{"code": i.code, "message": i.message, "fields": list(i.fields)} for i in error.items]
    return NewDeadLetter(system=error.context.system, operation=error.context.operation, error=error.message,
                         error_code=error.context.error_code, status=error.context.status,
                         record_ref=error.context.record_ref or record_ref,
                         request={**({"sent": sent} if sent is not None else {}), "items": items})


def _context(job: _Job, operation: str) -> ErrorContext:
    return ErrorContext(system="revdaemon", operation=f"{operation} {job.flow.name}", record_ref=job.event.key)


JOBS_BETWEEN_CHECKPOINTS = 10


async def _breathe(index: int) -> None:
    """Every JOBS_BETWEEN_CHECKPOINTS jobs, let the event loop run: a claim of a thousand events is planned in one
    go, and the webhook listener, /healthz and the change streams share this loop (their answers wait for it)."""
    if index % JOBS_BETWEEN_CHECKPOINTS == JOBS_BETWEEN_CHECKPOINTS - 1:
        await anyio.lowlevel.checkpoint()
