"""The daemon's supervisor: one task group that owns every long-running part, and a clean stop.

Start order: store (migrated) -> API clients -> group committer -> scheduler (paused) -> replica role ->
listener -> metrics listener -> console; each part reports ready through `tg.start`. The replica role runs the
leader's work, the workers and the scheduler's jobs, only while this replica leads (at once on one box; see
engine/replicas.py); every replica serves webhooks. Stop (SIGTERM, SIGINT, or `stop_after`): the listener
answers 503 at once, the scheduler stops, workers finish the batch in hand within the grace period, then
everything is cancelled; claims still held are given back (while this replica still leads) so the next leader
takes them at once; the store closes last, which gives up the leadership.
"""

from __future__ import annotations

import dataclasses
import os
import signal
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal
from functools import partial
from pathlib import Path

import anyio
import httpx
import structlog
from anyio.abc import TaskGroup, TaskStatus
from pydantic import BaseModel

from revdaemon.config import MetricsListen, Mode, Settings, load_settings
from revdaemon.connectors.nue import NueClient
from revdaemon.connectors.pubsub import PubSubClient
from revdaemon.connectors.salesforce import SalesforceClient
from revdaemon.console.app import ConsoleContext, build_console
from revdaemon.console.server import ConsoleServer
from revdaemon.domain.reconciliation import Report
from revdaemon.engine.change_stream import ChangeStream
from revdaemon.engine.clients import build_clients
from revdaemon.engine.executor import Executor
from revdaemon.engine.fencing import REQUEST_HOOKS
from revdaemon.engine.lookups import Fetcher
from revdaemon.engine.mappings import FlowVersions
from revdaemon.engine.pacing import CoalescingDoorbell
from revdaemon.engine.pollers import NUE_FIELDS, NuePoller, Poller, SalesforceClosedWonPoller
from revdaemon.engine.prune import nightly_prune
from revdaemon.engine.reconcile import ReconciliationJob, reconcile
from revdaemon.engine.renewal_scan import scan_renewals
from revdaemon.engine.replicas import ReplicaRole, default_replica_id
from revdaemon.engine.scheduler import Scheduler
from revdaemon.engine.schema import Checked, SchemaGuard
from revdaemon.engine.shadow import Shadow
from revdaemon.engine.sweep import ActivatedOrderSweep, WonDealSweep
from revdaemon.engine.sync_status import NAME as SYNC_STATUS
from revdaemon.engine.sync_status import StatusFields, SyncStatus
from revdaemon.engine.worker import Worker, WorkerStats
from revdaemon.errors import ConfigError, RevdaemonError, StoreError, SyncError
from revdaemon.flows.amendments import AmendmentMapping, AmendmentsFlow
from revdaemon.flows.base import Flow
from revdaemon.flows.billing_events import BillingEventMapping, BillingEventsFlow
from revdaemon.flows.closed_won_to_order import ClosedWonMapping, ClosedWonToOrderFlow
from revdaemon.flows.customer_records import CustomerRecords
from revdaemon.flows.onboarding import OnboardingFlow, OnboardingMapping
from revdaemon.flows.quote_sync import QuoteSyncFlow, QuoteSyncMapping
from revdaemon.flows.renewals import RenewalFlow, RenewalMapping
from revdaemon.flows.subscription_status import SubscriptionStatusFlow, SubscriptionStatusMapping
from revdaemon.limits import ApiLimiter, Priority, RetryPolicy
from revdaemon.listener.app import ListenerApp
from revdaemon.listener.group_commit import GroupCommitter
from revdaemon.listener.http import HttpServer
from revdaemon.mapping.fields import FieldSpec, parse_spec
from revdaemon.ops.admin import AdminApp, metrics_server
from revdaemon.ops.alerts import Alerter
from revdaemon.ops.health import Health, daemon_tag
from revdaemon.ops.heap import freeze_startup_heap
from revdaemon.ops.logging import active_redactor, configure_logging, register_secret
from revdaemon.ops.metrics import Metrics
from revdaemon.ops.sdnotify import Notifier, run_watchdog
from revdaemon.store import Store, open_store
from revdaemon.store.records import StoreSummary, utcnow
from revdaemon.store.states import EventStatus

log = structlog.get_logger("revdaemon.supervisor")

RECONCILIATION_JOB = "schedule.reconciliation"


@dataclass
class Daemon:
    """The running parts, for the demo, the tests and (later) the status endpoints."""

    settings: Settings
    store: Store
    salesforce: SalesforceClient
    nue: NueClient
    health: Health
    committer: GroupCommitter
    workers: list[Worker]
    listener: HttpServer
    schema: SchemaGuard
    metrics: Metrics
    alerter: Alerter
    scheduler: Scheduler
    pollers: list[Poller]
    stats: WorkerStats = field(default_factory=WorkerStats)
    notifier: Notifier = field(default_factory=lambda: Notifier(None))
    listener_port: int | None = None
    metrics_listener: HttpServer | None = None  # /metrics on a port of its own (metrics.listen: admin)
    metrics_port: int | None = None
    console: ConsoleServer | None = None  # the admin listener, when console.enabled
    console_port: int | None = None
    versions: FlowVersions | None = None  # the mapping versions: the current one registered at start
    streams: list[ChangeStream] = field(default_factory=list)  # Change Data Capture, one per topic (leader only)
    replica: ReplicaRole | None = None  # heartbeat, leadership, and the leader's work (workers, scheduler)


def replica_id_of(settings: Settings) -> str:
    return settings.store.replica_id or default_replica_id()


def worker_names(settings: Settings) -> list[str]:
    """On a shared store a claim's worker name says which box made it (status, the logs); on one box the plain
    names."""
    prefix = f"{replica_id_of(settings)}/" if settings.shared_store else ""
    return [f"{prefix}worker-{i + 1}" for i in range(settings.engine.workers)]


def default_flows(settings: Settings) -> list[Flow]:
    """The enabled flows, configured from `flows:` and `mapping:`."""
    chosen = settings.flows
    flows: list[Flow] = []
    # Flow 6 makes the account of a customer made in Nue: flows that need it wait for it within a claim.
    onboarding_makes_accounts = chosen.onboarding.enabled and chosen.onboarding.create_accounts
    if chosen.closed_won.enabled:
        flows.append(ClosedWonToOrderFlow(ClosedWonMapping(
            activate=chosen.closed_won.activate, term_months=chosen.closed_won.term_months,
            marker_field=chosen.closed_won.order_marker_field, won_since=chosen.closed_won.won_since,
            connected_to_salesforce=settings.nue.connected_to_salesforce)))
    if chosen.renewals.enabled:
        flows.append(RenewalFlow(RenewalMapping(connected_to_salesforce=settings.nue.connected_to_salesforce,
                                                extra_fields=_specs(settings, "renewals"),
                                                lookups=settings.mapping.lookups)))
    if chosen.quotes.enabled:
        # Skips deals flow 1 ordered: it knows them by flow 1's order id field.
        flows.append(QuoteSyncFlow(QuoteSyncMapping(order_id_field=ClosedWonMapping().order_id_field)))
    if chosen.billing_events.enabled:
        flows.append(BillingEventsFlow(BillingEventMapping(
            target=chosen.billing_events.target, extra_fields=_specs(settings, "billing_events"),
            lookups=settings.mapping.lookups, wait_for_onboarding=onboarding_makes_accounts)))
    if chosen.amendments.enabled:
        amendments = chosen.amendments
        types = settings.mapping.lookups.get(amendments.type_lookup)
        # the account MRR itself is subscription_status's to write
        mapping = AmendmentMapping(opportunity=amendments.opportunity, contract=amendments.contract,
                                   amount_basis=amendments.amount_basis)
        flows.append(AmendmentsFlow(dataclasses.replace(mapping, types=dict(types)) if types is not None else mapping))
    if chosen.onboarding.enabled:
        flows.append(OnboardingFlow(OnboardingMapping(
            tasks=tuple((t.subject, t.due_days) for t in chosen.onboarding.tasks),
            extra_fields=_specs(settings, "onboarding"), lookups=settings.mapping.lookups,
            records=_customer_records(settings))))
    if chosen.subscription_status.enabled:
        flows.append(SubscriptionStatusFlow(dataclasses.replace(_status_mapping(settings),
                                                                wait_for_onboarding=onboarding_makes_accounts)))
    return flows


def schema_checked(settings: Settings) -> list[Checked]:
    """What must find its fields in Salesforce: the enabled flows, and the sync status fields where configured."""
    sync_status = build_sync_status(settings)
    return [*default_flows(settings), *([sync_status] if sync_status else [])]


def build_sync_status(settings: Settings) -> SyncStatus:
    """The sync status fields configured per Salesforce object (`mapping.sync_status`); empty: off."""
    return SyncStatus({sobject: StatusFields(**fields.model_dump()) for sobject, fields
                       in settings.mapping.sync_status.items()})


def _customer_records(settings: Settings) -> CustomerRecords:
    """Flow 6's account and contact rules: flows.onboarding, and mapping.objects.account / contact when set."""
    chosen = settings.flows.onboarding
    records = CustomerRecords(create_accounts=chosen.create_accounts, contacts=chosen.contacts)
    account, contact = settings.mapping.objects.get("account"), settings.mapping.objects.get("contact")
    if account is not None:
        records = dataclasses.replace(records, account_object=account.salesforce_object,
                                      account_key=account.external_id_field or records.account_key,
                                      account_fields=dict(account.fields) or records.account_fields)
    if contact is not None:
        records = dataclasses.replace(records, contact_key=contact.external_id_field or records.contact_key,
                                      contact_fields=dict(contact.fields) or records.contact_fields)
    return records


def _specs(settings: Settings, flow: str) -> dict[str, FieldSpec]:
    return {name: parse_spec(text) for name, text in settings.mapping.flows.get(flow, {}).items()}


def _status_mapping(settings: Settings) -> SubscriptionStatusMapping:
    statuses = settings.mapping.lookups.get(settings.flows.subscription_status.status_lookup)
    chosen = settings.flows.subscription_status
    mapping = SubscriptionStatusMapping(extra_fields=_specs(settings, "subscription_status"),
                                        lookups=settings.mapping.lookups, on_hand_edit=chosen.on_hand_edit)
    if not chosen.on_opportunity:
        mapping = dataclasses.replace(mapping, opportunity_status_field=None, opportunity_mrr_field=None,
                                      opportunity_renewal_field=None)
    return dataclasses.replace(mapping, status_values=dict(statuses)) if statuses else mapping


async def run_daemon(
    settings: Settings,
    *,
    stop_after: float | None = None,
    dry_run: bool = False,
    flows: list[Flow] | None = None,
    on_ready: Callable[[Daemon], Awaitable[None]] | None = None,
    polling: bool = True,
    config_path: Path | None = None,
    notifier: Notifier | None = None,
) -> None:
    notifier = Notifier.from_env() if notifier is None else notifier
    store = await open_store(settings.store_target)
    daemon: Daemon | None = None
    try:
        # The request hook checks the leadership epoch again right before a write leaves, if time has passed since
        # the executor's fenced step (engine/fencing.py).
        async with httpx.AsyncClient(limits=httpx.Limits(max_connections=50, max_keepalive_connections=20),
                                     event_hooks=REQUEST_HOOKS) as http:
            chosen = flows or default_flows(settings)
            # The configured mapping is stored as a version (a dry run only looks it up: it writes nothing).
            versions = await FlowVersions.load(store, settings, chosen, default_flows, register=not dry_run)
            daemon = _build(settings, store, http, dry_run=dry_run, flows=chosen, versions=versions)
            daemon.notifier = notifier
            # A dry run sends and settles nothing, and must not take leadership from the daemon that does: its
            # workers plan the waiting events outside the replicas' terms.
            daemon.replica = ReplicaRole(store, daemon.scheduler if polling else None,
                                         replica_id=replica_id_of(settings), leads=not dry_run,
                                         workers=daemon.workers if not dry_run else (),
                                         streams=daemon.streams if not dry_run else ())
            await daemon.replica.check_unique()  # before anything starts: refused with the reason
            frozen = freeze_startup_heap()  # built: what start-up made stays for good (ops/heap.py)
            log.debug("startup_heap_frozen", objects=frozen)
            async with anyio.create_task_group() as tg:
                tg.start_soon(_schema_check, daemon)
                await tg.start(daemon.committer.run)
                await tg.start(daemon.alerter.run)
                if dry_run:
                    for worker in daemon.workers:
                        await tg.start(worker.run)
                # The scheduler starts paused; the replica role runs the workers and resumes the scheduler while
                # this replica leads (on one box, at once).
                if polling:
                    await tg.start(partial(daemon.scheduler.run, paused=True))
                await tg.start(daemon.replica.run)
                daemon.listener_port = await tg.start(daemon.listener.serve)
                if daemon.metrics_listener is not None:
                    daemon.metrics_port = await tg.start(daemon.metrics_listener.serve)
                if daemon.console is not None:
                    daemon.console_port = await tg.start(daemon.console.serve)
                summary = await store.summary()
                log.info("daemon_started", store=settings.store_display, listener_port=daemon.listener_port,
                         metrics_port=daemon.metrics_port, workers=len(daemon.workers),
                         replica=daemon.replica.replica_id, leading=daemon.replica.leading,
                         pollers=[p.name for p in daemon.pollers] if polling else [], queued=summary.queue_depths,
                         dry_run=dry_run)
                if settings.nue.webhook_auth.value == "none":
                    log.warning("webhooks_unauthenticated", reason="nue.webhook_auth is 'none': anyone who can "
                                "reach the listener can enqueue work")
                tg.start_soon(_stop_on_signal, tg, daemon)
                await tg.start(_reload_on_signal, daemon, config_path)  # SIGHUP handled before READY=1
                notifier.ready(_status_line(daemon, summary))
                # The watchdog starts after READY: systemd arms it only once start-up is complete.
                await tg.start(run_watchdog, notifier)
                tg.start_soon(_report_status, daemon)
                if on_ready is not None:
                    await on_ready(daemon)
                if stop_after is not None:
                    await anyio.sleep(stop_after)
                    await _stop(tg, daemon, reason="stop_after elapsed")
    except ExceptionGroup as group:
        # A part's failure ends the daemon: the caller sees that error (the store's: exit 3 from the CLI), not a
        # group of them.
        reason = _first_reason(group)
        if reason is None:
            raise
        raise reason from group
    finally:
        role = daemon.replica if daemon is not None else None
        with anyio.CancelScope(shield=True):
            for client in {stream.client for stream in daemon.streams} if daemon is not None else ():
                await client.close()
            await _close_store(store, worker_names(settings),
                               epoch=role.term.epoch if role is not None and role.term is not None else None)
        log.info("daemon_stopped")


async def _close_store(store: Store, workers: list[str], *, epoch: int | None) -> None:
    """Release this box's claims (only while it still leads: `epoch`), then close. Each step runs even when the one
    before failed: a broken store that is never closed keeps its connection thread, and with it the process, alive
    after the daemon stopped. Claims left behind are taken over by the next leader at once (an older epoch's)."""
    for worker_name in workers if epoch is not None else []:
        try:
            released = await store.release_claims(worker_name, epoch=epoch)
        except StoreError as exc:
            log.error("claims_not_released", worker=worker_name, error=str(exc))
            break  # the same store fails the same way for the next worker
        if released:
            log.info("claims_released", worker=worker_name, events=released)
    try:
        await store.close()
    except Exception as exc:  # nothing more can be done with it; the caller's error is the one to report
        log.error("store_close_failed", error=str(exc))


def _first_reason(group: BaseExceptionGroup[BaseException]) -> RevdaemonError | None:
    """The first of revdaemon's own errors in a task group's failure; a store error before any other."""
    for kind in (StoreError, RevdaemonError):
        matched, _ = group.split(kind)
        while matched is not None:
            first = matched.exceptions[0]
            if isinstance(first, RevdaemonError):
                return first
            matched = first if isinstance(first, BaseExceptionGroup) else None
    return None


def _build(settings: Settings, store: Store, http: httpx.AsyncClient, *, dry_run: bool,
           flows: list[Flow], versions: FlowVersions | None = None) -> Daemon:
    retry = RetryPolicy(max_attempts=settings.limits.max_attempts, max_delay=settings.limits.max_backoff_seconds,
                        max_total=settings.limits.max_backoff_seconds * 2)
    salesforce, nue = build_clients(settings, http, retry)
    health = Health(daemon=daemon_tag(replica_id_of(settings), os.getpid()))
    # The budget planner paces the work: a ring opens a coalescing window while it stretches, polls run
    # at `multiplier` times their interval, and bulk jobs wait (see domain/budget.py).
    doorbell = CoalescingDoorbell(
        window=lambda: settings.engine.idle_seconds * (salesforce.budget.plan().multiplier - 1),
        stopping=lambda: health.shutting_down)
    committer = GroupCommitter(store, on_commit=doorbell.ring)
    sync_status = build_sync_status(settings)
    fetcher = Fetcher(salesforce, nue, store)
    metrics = Metrics()
    a = settings.alerts
    alerter = Alerter(a.webhook_url, http, window_seconds=a.window_seconds, max_per_minute=a.max_per_minute,
                      timeout_seconds=a.timeout_seconds, blocks=a.blocks, redactor=active_redactor())
    # The status fields are checked like a flow's: missing ones park the status writes, not the flows.
    schema = SchemaGuard(salesforce, [*flows, *([sync_status] if sync_status else [])], alerter=alerter)
    shadow = Shadow(store, fetcher, flows, versions=versions, sync_status=sync_status,
                    own_user=lambda: salesforce.integration_user_id,
                    edited_within=timedelta(days=settings.shadow.edited_within_days)) \
        if settings.mode is Mode.SHADOW else None
    executor = Executor(store, salesforce, nue, dry_run=dry_run,
                        mapping_version=versions.current_version if versions is not None else None,
                        sync_status=sync_status, sync_status_parked=lambda: schema.is_parked(SYNC_STATUS),
                        settle=timedelta(seconds=settings.engine.settle_seconds))
    stats = WorkerStats()
    engine = settings.engine
    workers = [
        Worker(store, fetcher, executor, flows, name=name, batch_size=engine.batch_size,
               lease=timedelta(seconds=engine.lease_seconds), max_attempts=settings.limits.max_attempts,
               backoff=RetryPolicy(base_delay=2.0, max_delay=settings.limits.max_backoff_seconds),
               idle_seconds=engine.idle_seconds, doorbell=doorbell, stats=stats, schema=schema, metrics=metrics,
               alerter=alerter, versions=versions, hold=salesforce.budget.pause_left,
               own_user=lambda: salesforce.integration_user_id, shadow=shadow)
        for name in worker_names(settings)
    ]
    async def scrape() -> tuple[bytes, str]:
        await metrics.refresh(store, budget=salesforce.budget, pollers_health=health.pollers, parked=schema.parked,
                              flows=[f.name for f in flows],
                              api_calls={"salesforce": salesforce.calls, "nue": nue.calls})
        return metrics.render()

    # /metrics shows event counts per type and API usage: on the webhook port, which faces Nue, only if asked.
    listen = settings.metrics.listen
    listener = HttpServer(settings.listener, ListenerApp(settings.nue, committer, store, health, metrics=metrics,
                                                         scrape=scrape if listen is MetricsListen.WEBHOOK else None))
    metrics_listener = metrics_server(settings.metrics, AdminApp(store, health, scrape)) \
        if listen is MetricsListen.ADMIN else None
    schedule = settings.schedule
    pollers: list[Poller] = [SalesforceClosedWonPoller(
        salesforce, store, health=health, overlap=timedelta(seconds=schedule.poll_overlap_seconds),
        metrics=metrics, alerter=alerter)]
    nue_overlap = timedelta(seconds=schedule.nue_poll_overlap_seconds)
    pollers += [NuePoller(type_name, nue, store, health=health, overlap=nue_overlap, metrics=metrics, alerter=alerter)
                for type_name in NUE_FIELDS]
    scheduler = Scheduler.from_settings(schedule)
    def stretch() -> float:  # Nue polls too: the events they find are worked through Salesforce
        return salesforce.budget.plan().poll_stretch

    streams = _change_streams(settings, salesforce, store, pollers[0], health=health, metrics=metrics,
                              alerter=alerter, wake=doorbell.ring, flows=flows)
    cdc = settings.change_data_capture

    def salesforce_stretch() -> float:
        # While every change stream is subscribed, the poll is only the net under it: it runs less often.
        streaming = cdc.poll_seconds_while_streaming / schedule.salesforce_poll_seconds if health.streaming() else 1
        return stretch() * max(1.0, streaming)

    scheduler.add_interval(pollers[0], schedule.salesforce_poll_seconds, stretch=salesforce_stretch)
    for poller in pollers[1:]:
        scheduler.add_interval(poller, schedule.nue_poll_seconds, stretch=stretch)
    # Batch jobs only enqueue an event (keyed by the day, so a missed or repeated run is one job);
    # the workers do the work like any other event, with its retries and dead letters.
    reconciliation: ReconciliationJob | None = None
    if settings.flows.reconciliation.enabled:
        async def nightly_reconciliation() -> Report:
            report = await run_reconciliation(settings, nue, salesforce, store=store,
                                              repair=settings.flows.reconciliation.repair)
            if report.repairs:
                doorbell.ring()
            return report

        # The console's "run now" asks the scheduler to run this same job at once (one run at a time).
        reconciliation = ReconciliationJob(
            nightly_reconciliation, budget=salesforce.budget,
            trigger=lambda: scheduler.run_now(RECONCILIATION_JOB),
            report_path=settings.state_dir / settings.flows.reconciliation.report_file)
        scheduler.add_cron(RECONCILIATION_JOB, schedule.reconciliation_cron, reconciliation.run)
    if settings.flows.renewals.enabled:
        async def renewal_scan() -> None:
            # One inbox event per subscription term coming up for renewal; the workers do the rest.
            if await scan_renewals(nue, store, window_days=schedule.renewal_window_days, today=utcnow().date()):
                doorbell.ring()

        scheduler.add_cron("schedule.renewal_scan", schedule.renewal_scan_cron, renewal_scan)
    if settings.flows.closed_won.enabled:
        sweep = WonDealSweep(salesforce, store, won_since=settings.flows.closed_won.won_since)

        async def won_deal_sweep() -> None:
            # Won deals no cursor found (a late commit, a long outage) still get their order.
            if not salesforce.budget.allows(Priority.BULK):
                log.warning("sweep_deferred", reason="the Salesforce budget holds back bulk work")
                return
            if await sweep.run_once():
                doorbell.ring()

        scheduler.add_cron("schedule.sweep", schedule.sweep_cron, won_deal_sweep)
    if settings.flows.onboarding.enabled or settings.flows.amendments.enabled:
        order_sweep = ActivatedOrderSweep(nue, store, won_since=settings.flows.closed_won.won_since)

        async def activated_order_sweep() -> None:
            # Activated orders no poll or webhook delivered (a late commit, an outage) still reach the account.
            if await order_sweep.run_once():
                doorbell.ring()

        scheduler.add_cron("schedule.order_sweep", schedule.sweep_cron, activated_order_sweep)
    if settings.store.retention_days and not dry_run:
        # The scheduler runs only while this replica leads; a run stops between batches once it no longer does.
        # A dry run forgets nothing: it is for looking.
        scheduler.add_cron("schedule.prune", schedule.prune_cron,
                           nightly_prune(store, settings.store.retention_days, leading=lambda: not scheduler.paused))
    async def budget_check() -> None:
        alerter.budget_alert("salesforce", salesforce.budget, threshold=a.budget_threshold)

    scheduler.add_cron("ops.budget_check", "* * * * *", budget_check)
    console = None
    if settings.console.enabled:
        context = ConsoleContext(
            store=store, settings=settings, health=health, flows=flows, fetcher=fetcher, sync_status=sync_status,
            salesforce_budget=salesforce.budget, api_calls=lambda: {"salesforce": salesforce.calls, "nue": nue.calls},
            parked=lambda: dict(schema.parked), wake_workers=doorbell.ring,
            report_path=settings.state_dir / settings.flows.reconciliation.report_file,
            salesforce_url=lambda: token.instance_url if (token := salesforce.auth.current_token) else None,
            run_reconciliation=reconciliation.request if reconciliation else None,
            reconciliation_running=(lambda: reconciliation.running_since) if reconciliation else lambda: None)
        console = ConsoleServer(build_console(context), settings.console.host, settings.console.port)
    return Daemon(settings=settings, store=store, salesforce=salesforce, nue=nue, health=health, metrics=metrics,
                  alerter=alerter, committer=committer, workers=workers, listener=listener, schema=schema,
                  scheduler=scheduler, pollers=pollers, stats=stats, metrics_listener=metrics_listener,
                  console=console, versions=versions, streams=streams)


def _change_streams(settings: Settings, salesforce: SalesforceClient, store: Store, poller: Poller, *,
                    health: Health, metrics: Metrics, alerter: Alerter, wake: Callable[[], None],
                    flows: Sequence[Flow]) -> list[ChangeStream]:
    """One subscription per configured topic, when Change Data Capture is on (the leader runs them)."""
    cdc = settings.change_data_capture
    if not cdc.enabled or not settings.flows.closed_won.enabled:
        return []
    client = PubSubClient(cdc.endpoint, salesforce.auth, tls=cdc.tls, instance_url=settings.salesforce.instance_url)

    async def catch_up(entity: str) -> None:
        # The one Salesforce object polled is the opportunity; other objects' changes are not watched (yet).
        if entity == "Opportunity":
            await poller.run_once()

    # The fields only revdaemon sets on what it creates: a CREATE by its user carrying one is its own echo.
    markers = frozenset(field for flow in flows for field in getattr(flow, "own_create_markers", ()))
    return [ChangeStream(client, store, topic, health=health, catch_up=catch_up, batch_size=cdc.batch_size,
                         max_waiting=cdc.max_waiting, metrics=metrics, alerter=alerter, on_change=wake,
                         own_user=lambda: salesforce.integration_user_id, own_markers=markers)
            for topic in cdc.topics]


async def _schema_check(daemon: Daemon) -> None:
    """Describe vs the flows' fields, in the background: an unreachable Salesforce must not hold the start
    (webhooks are still stored); the first schema error at run time parks what it must anyway."""
    try:
        missing = await daemon.schema.check_all()
    except SyncError as exc:
        log.warning("schema_check_skipped", error=exc.message)
        return
    if missing:
        log.error("schema_check_failed", parked=missing)
    else:
        log.info("schema_check_passed", flows=[f.name for f in daemon.schema.flows])


async def run_reconciliation(settings: Settings, nue: NueClient, salesforce: SalesforceClient, *,
                             store: Store | None, repair: bool) -> Report:
    """Flow 8: compare Nue with Salesforce, write the report to the state directory, and (with `repair`)
    queue flow 2 for each account whose figures drifted, through the normal executor."""
    report = await reconcile(nue, salesforce, store=store, repair=repair, mapping=_status_mapping(settings),
                             tolerance=Decimal(str(settings.flows.reconciliation.tolerance)),
                             report_path=settings.state_dir / settings.flows.reconciliation.report_file)
    log.info("reconciliation_done", drifted=len(report.drifted), repairs=len(report.repairs), repair=repair)
    return report


async def _stop(tg: TaskGroup, daemon: Daemon, *, reason: str) -> None:
    log.info("daemon_stopping", reason=reason, grace_seconds=daemon.settings.engine.shutdown_grace_seconds)
    daemon.notifier.stopping(f"stopping: {reason}")
    daemon.health.shutting_down = True
    if daemon.scheduler.running:
        daemon.scheduler.shutdown()
    if daemon.replica is not None:
        daemon.replica.retire()
    for worker in daemon.workers:
        worker.stop()
    with anyio.move_on_after(daemon.settings.engine.shutdown_grace_seconds):
        for worker in daemon.workers:
            if worker.running:
                await worker.stopped.wait()
    tg.cancel_scope.cancel()


async def _stop_on_signal(tg: TaskGroup, daemon: Daemon) -> None:
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for signum in signals:
            await _stop(tg, daemon, reason=signal.Signals(signum).name)
            return


STATUS_EVERY_SECONDS = 30.0  # how fresh `systemctl status` is; one store.summary() read each time


def _status_line(daemon: Daemon, summary: StoreSummary) -> str:
    """One line for `systemctl status`: this replica's role, what waits, what is held, what needs an operator."""
    depths = summary.queue_depths
    term = daemon.replica.term if daemon.replica is not None else None
    role = f"active (leadership epoch {term.epoch})" if term is not None else "standby"
    return (f"{role}; listening on :{daemon.listener_port}; queued={depths.get(EventStatus.RECEIVED, 0)} "
            f"claimed={depths.get(EventStatus.CLAIMED, 0)} dead_letters={summary.dead_letters} "
            f"conflicts={summary.open_conflicts}")


async def _report_status(daemon: Daemon) -> None:
    while True:
        await anyio.sleep(STATUS_EVERY_SECONDS)
        try:
            summary = await daemon.store.summary()
        except StoreError as exc:
            log.warning("status_unavailable", error=str(exc))
            continue
        daemon.notifier.status(_status_line(daemon, summary))


# What a SIGHUP can apply to the running daemon; a change anywhere else is logged as needing a restart.
RELOADABLE = ("log", "limits.salesforce", "limits.nue", "limits.salesforce_daily_budget_share")


async def _reload_on_signal(daemon: Daemon, config_path: Path | None, *,
                            task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
    with anyio.open_signal_receiver(signal.SIGHUP) as signals:
        task_status.started()
        async for _ in signals:
            daemon.notifier.reloading()
            try:
                await reload_settings(daemon, config_path)
            finally:
                summary = await daemon.store.summary()
                daemon.notifier.ready(_status_line(daemon, summary))


async def reload_settings(daemon: Daemon, config_path: Path | None) -> list[str]:
    """Re-read the configuration (file, environment, credentials) and apply what can change while running.

    A configuration that does not load is logged and the running settings are kept. Returns the keys applied.
    """
    try:
        new = await anyio.to_thread.run_sync(load_settings, config_path)
    except ConfigError as exc:
        log.error("reload_rejected", reason=str(exc), kept="running settings")
        return []
    old = daemon.settings
    changed = _changed_keys(old, new)
    if not changed:
        log.info("reload_unchanged")
        return []
    for value in new.secret_values():
        register_secret(value)  # a rotated secret is scrubbed from logs even before the restart that uses it
    applied = [key for key in changed if key.startswith(RELOADABLE)]
    if any(key.startswith("log.") for key in applied):
        configure_logging(level=new.log.level, fmt=new.log.format, secret_values=new.secret_values())
    if new.limits.salesforce != old.limits.salesforce:
        daemon.salesforce.set_limiter(ApiLimiter(new.limits.salesforce))
    if new.limits.nue != old.limits.nue:
        daemon.nue.set_limiter(ApiLimiter(new.limits.nue))
    daemon.salesforce.budget.share = new.limits.salesforce_daily_budget_share
    limits = old.limits.model_copy(update={"salesforce": new.limits.salesforce, "nue": new.limits.nue,
                                           "salesforce_daily_budget_share": new.limits.salesforce_daily_budget_share})
    daemon.settings = old.model_copy(update={"log": new.log, "limits": limits})
    pending = [key for key in changed if key not in applied]
    log.info("reload_applied", applied=applied, needs_restart=pending)
    return applied


def _changed_keys(old: BaseModel, new: BaseModel, prefix: str = "") -> list[str]:
    """Dotted names of the settings that differ (names only: a changed secret is never logged)."""
    keys: list[str] = []
    for name in type(old).model_fields:
        before, after = getattr(old, name), getattr(new, name)
        if before == after:
            continue
        if isinstance(before, BaseModel) and type(before) is type(after):
            keys += _changed_keys(before, after, f"{prefix}{name}.")
        else:
            keys.append(f"{prefix}{name}")
    return keys
