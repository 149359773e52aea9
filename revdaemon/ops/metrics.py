"""Prometheus metrics: what the daemon counts as it goes, and the gauges read from its state on each scrape.

Counters are bumped where things happen (the listener and pollers on receipt, the worker when it settles
an event, the connectors per API call). Gauges are not pushed: `refresh` reads them from the store, the
budget, the pollers' health and the schema guard just before `render`, so a scrape always sees the
current state and nothing has to remember to keep a gauge in step.

Each `Metrics` owns its own `CollectorRegistry`, never prometheus_client's global one, so two daemons in
one process (tests, the demo) do not add into each other's numbers.

Label values that come from outside (event types, sources, API and flow names) are capped per metric at
`MAX_LABEL_VALUES` distinct values; later new ones are counted under "other", so a stream of odd event
types cannot grow the scrape without bound.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from datetime import datetime

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from revdaemon.domain.budget import Priority
from revdaemon.limits import DailyBudget
from revdaemon.ops.health import PollerHealth
from revdaemon.store import Store
from revdaemon.store.records import utcnow
from revdaemon.store.states import EventStatus

NAMESPACE = "revdaemon"
CONTENT_TYPE = CONTENT_TYPE_LATEST  # the text format generate_latest writes (text/plain; version=...)
FAILURE_OUTCOMES = frozenset({"retry", "dead", "conflict", "parked"})
MAX_LABEL_VALUES = 100  # distinct values per label, per metric; beyond it: OTHER
OTHER = "other"


class Metrics:
    """The daemon's metrics, in a registry of their own."""

    def __init__(self, *, clock: Callable[[], datetime] = utcnow) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._clock = clock
        self.started_at = clock()
        self._seen: dict[str, set[str]] = {}
        self._known_flows: set[str] = set()
        self._known_apis: set[str] = set()
        self._api_totals: dict[str, int] = {}
        self._exhausting: set[str] = set()  # APIs with an exhaustion sample
        r = self.registry

        # --- counters (bumped where things happen) ---
        self.events_received = Counter("events_received", "Events accepted into the inbox path, by source and type "
                                       "(duplicates included).", ["source", "type"], namespace=NAMESPACE, registry=r)
        self.events_processed = Counter("events_processed", "Events a worker finished (done).", ["type"],
                                        namespace=NAMESPACE, registry=r)
        self.events_failed = Counter("events_failed", "Events a worker could not finish, by what happened next "
                                     "(retry, dead, conflict, parked).", ["type", "outcome"],
                                     namespace=NAMESPACE, registry=r)
        self.api_calls = Counter("api_calls", "HTTP requests sent to an external API.", ["api"],
                                 namespace=NAMESPACE, registry=r)

        # --- gauges (set by `refresh`) ---
        self.queue_depth = Gauge("queue_depth", "Inbox events by status.", ["status"], namespace=NAMESPACE,
                                 registry=r)
        self.queue_oldest_due = Gauge("queue_oldest_due_seconds", "How long the most overdue waiting event has "
                                      "been due (0 when none is).", namespace=NAMESPACE, registry=r)
        self.dead_letters = Gauge("dead_letters", "Dead letters not yet replayed.", namespace=NAMESPACE, registry=r)
        self.open_conflicts = Gauge("open_conflicts", "Conflicts waiting for a person.", namespace=NAMESPACE,
                                    registry=r)
        self.api_budget_remaining = Gauge("api_budget_remaining", "Requests left of the API's daily allocation, "
                                          "as its last response reported (absent until one has).", ["api"],
                                          namespace=NAMESPACE, registry=r)
        self.api_budget_exhaustion = Gauge("api_budget_exhaustion_seconds", "Seconds until the API's daily "
                                           "allocation is spent at the recent rate (absent when that rate "
                                           "would not spend it).", ["api"], namespace=NAMESPACE, registry=r)
        self.api_usage_rate = Gauge("api_usage_per_minute", "Calls per minute lately against the API's daily "
                                    "allocation, every client of the org included.", ["api"], namespace=NAMESPACE,
                                    registry=r)
        self.poll_interval_multiplier = Gauge("poll_interval_multiplier", "The budget planner's stretch of poll "
                                              "intervals and coalescing windows (1 with plenty left).",
                                              namespace=NAMESPACE, registry=r)
        self.work_deferred = Gauge("work_deferred", "1 while the budget planner holds back this kind of work "
                                   "(bulk: backfill and reconciliation; poll; realtime), else 0.", ["kind"],
                                   namespace=NAMESPACE, registry=r)
        self.poll_lag = Gauge("poll_lag_seconds", "Seconds since the poller last succeeded (since the daemon "
                              "started, if it never has).", ["poller"], namespace=NAMESPACE, registry=r)
        self.flow_parked = Gauge("flow_parked", "1 while a flow is parked by a schema change, else 0.", ["flow"],
                                 namespace=NAMESPACE, registry=r)
        self.change_events = Counter("change_events", "Salesforce change events delivered, by topic.", ["topic"],
                                     namespace=NAMESPACE, registry=r)
        self.change_event_lag = Gauge("change_event_lag_seconds", "From the newest change event's commit in "
                                      "Salesforce to its hint in the inbox.", ["topic"], namespace=NAMESPACE,
                                      registry=r)
        self.change_stream_up = Gauge("change_stream_up", "1 while the change event subscription is streaming, "
                                      "else 0.", ["topic"], namespace=NAMESPACE, registry=r)
        for status in EventStatus:
            self.queue_depth.labels(status=status.value).set(0)
        self.poll_interval_multiplier.set(1)
        for priority in Priority:
            self.work_deferred.labels(kind=priority.value).set(0)

    # --- counting ---------------------------------------------------------------------------------------

    def event_received(self, source: str, event_type: str, count: int = 1) -> None:
        self.events_received.labels(source=self._label("received.source", source),
                                    type=self._label("received.type", event_type)).inc(count)

    def event_processed(self, event_type: str, count: int = 1) -> None:
        self.events_processed.labels(type=self._label("processed.type", event_type)).inc(count)

    def event_failed(self, event_type: str, outcome: str) -> None:
        """`outcome` is what the worker did with the event: retry, dead, conflict or parked."""
        if outcome not in FAILURE_OUTCOMES:
            raise ValueError(f"outcome must be one of {sorted(FAILURE_OUTCOMES)}, not {outcome!r}")
        self.events_failed.labels(type=self._label("failed.type", event_type), outcome=outcome).inc()

    def change_event_received(self, topic: str, lag_seconds: float) -> None:
        label = self._label("change.topic", topic)
        self.change_events.labels(topic=label).inc()
        self.change_event_lag.labels(topic=label).set(lag_seconds)

    def change_stream_state(self, topic: str, state: str) -> None:
        self.change_stream_up.labels(topic=self._label("change.topic", topic)).set(1 if state == "streaming" else 0)

    def api_call(self, api: str, count: int = 1) -> None:
        self.api_calls.labels(api=self._label("api", api)).inc(count)

    def sync_api_calls(self, totals: Mapping[str, int]) -> None:
        """Catch the API-call counters up with running totals kept elsewhere (the clients' `calls`), so the
        connectors need not know about metrics. A total that went down (a new client) starts a new baseline."""
        for api, total in totals.items():
            before = self._api_totals.get(api, 0)
            if total > before:
                self.api_call(api, total - before)
            elif total < before:
                self.api_call(api, total)
            self._api_totals[api] = total

    # --- gauges -----------------------------------------------------------------------------------------

    async def refresh(
        self,
        store: Store,
        *,
        budget: DailyBudget | Mapping[str, DailyBudget] | None = None,
        pollers_health: Mapping[str, PollerHealth] | None = None,
        parked: Mapping[str, object] | None = None,
        flows: Iterable[str] = (),
        api_calls: Mapping[str, int] | None = None,
    ) -> None:
        """Set every gauge from the current state: call it just before `render`.

        `budget` is Salesforce's `DailyBudget` (or API name -> budget); `pollers_health` is `Health.pollers`;
        `parked` is `SchemaGuard.parked` (flow -> why); `flows` names every flow so that the ones not parked
        report 0 (a flow once seen parked keeps reporting, 0 after it resumes); `api_calls` is API name ->
        the client's running `calls` total (see `sync_api_calls`).
        """
        summary = await store.summary()
        now = self._clock()
        for status in EventStatus:
            self.queue_depth.labels(status=status.value).set(summary.queue_depths.get(status, 0))
        oldest = summary.oldest_due_at
        self.queue_oldest_due.set(max(0.0, (now - oldest).total_seconds()) if oldest is not None else 0.0)
        self.dead_letters.set(summary.dead_letters)
        self.open_conflicts.set(summary.open_conflicts)
        self.set_budget(budget)
        for name, health in (pollers_health or {}).items():
            since = health.last_success_at or self.started_at
            self.poll_lag.labels(poller=self._label("poller", name)).set(max(0.0, (now - since).total_seconds()))
        self.set_parked(parked or {}, flows)
        if api_calls is not None:
            self.sync_api_calls(api_calls)

    def set_budget(self, budget: DailyBudget | Mapping[str, DailyBudget] | None) -> None:
        budgets = {"salesforce": budget} if isinstance(budget, DailyBudget) else dict(budget or {})
        multiplier, deferred = 1, set[Priority]()
        for api, daily in budgets.items():
            label = self._label("budget.api", api)
            plan = daily.plan()
            multiplier, deferred = max(multiplier, plan.multiplier), deferred | plan.deferred
            self.api_usage_rate.labels(api=label).set(plan.per_minute)
            if plan.exhaustion_seconds is None:
                if label in self._exhausting:  # no projection at this rate: no sample
                    self.api_budget_exhaustion.remove(label)
                    self._exhausting.discard(label)
            else:
                self.api_budget_exhaustion.labels(api=label).set(plan.exhaustion_seconds)
                self._exhausting.add(label)
            if daily.used is None or daily.total is None:
                if api in self._known_apis:  # not reported (yet): no sample rather than a made-up one
                    self.api_budget_remaining.remove(label)
                    self._known_apis.discard(api)
                continue
            self.api_budget_remaining.labels(api=label).set(max(0, daily.total - daily.used))
            self._known_apis.add(api)
        self.poll_interval_multiplier.set(multiplier)
        for priority in Priority:
            self.work_deferred.labels(kind=priority.value).set(1 if priority in deferred else 0)

    def set_parked(self, parked: Mapping[str, object], flows: Iterable[str] = ()) -> None:
        self._known_flows.update(flows)
        self._known_flows.update(parked)
        for flow in self._known_flows:
            self.flow_parked.labels(flow=self._label("flow", flow)).set(1 if flow in parked else 0)

    # --- exposition -------------------------------------------------------------------------------------

    def render(self) -> tuple[bytes, str]:
        """The registry in the Prometheus text format, and the Content-Type to serve it with."""
        return generate_latest(self.registry), CONTENT_TYPE

    def _label(self, family: str, value: str) -> str:
        seen = self._seen.setdefault(family, set())
        if value in seen:
            return value
        if len(seen) >= MAX_LABEL_VALUES:
            return OTHER
        seen.add(value)
        return value
