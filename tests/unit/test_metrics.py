"""Metrics: counters and gauges as a Prometheus scrape shows them, read back through the text parser."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from revdaemon.limits import DailyBudget
from revdaemon.ops.health import PollerHealth
from revdaemon.ops.metrics import MAX_LABEL_VALUES, OTHER, Metrics
from revdaemon.store import Store, open_store
from revdaemon.store.records import NewConflict, NewDeadLetter, NewEvent

pytestmark = pytest.mark.anyio

START = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


class FakeClock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> datetime:
        return self.now


def samples(metrics: Metrics) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of a rendered scrape, by (name, labels)."""
    body, _ = metrics.render()
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(body.decode()) for s in family.samples}


def value(metrics: Metrics, name: str, **labels: str) -> float | None:
    return samples(metrics).get((name, frozenset(labels.items())))


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    opened = await open_store(tmp_path / "db.sqlite3")
    try:
        yield opened
    finally:
        await opened.close()


def event(n: int, type_: str = "subscription") -> NewEvent:
    return NewEvent(source="nue_webhook", key=f"k{n}", type=type_, payload={"id": n})


class TestCounters:
    def test_events_received_by_source_and_type(self) -> None:
        """Received events are counted per (source, type)."""
        metrics = Metrics()
        metrics.event_received("nue_webhook", "subscription")
        metrics.event_received("nue_webhook", "subscription")
        metrics.event_received("salesforce_poll", "opportunity", 5)
        assert value(metrics, "revdaemon_events_received_total", source="nue_webhook", type="subscription") == 2
        assert value(metrics, "revdaemon_events_received_total", source="salesforce_poll", type="opportunity") == 5

    def test_processed_failed_and_api_calls(self) -> None:
        """Processed, failed-by-outcome and API-call counters carry their labels."""
        metrics = Metrics()
        metrics.event_processed("invoice", 3)
        metrics.event_failed("invoice", "dead")
        metrics.event_failed("invoice", "retry")
        metrics.event_failed("invoice", "retry")
        metrics.api_call("salesforce")
        metrics.api_call("nue", 4)
        assert value(metrics, "revdaemon_events_processed_total", type="invoice") == 3
        assert value(metrics, "revdaemon_events_failed_total", type="invoice", outcome="dead") == 1
        assert value(metrics, "revdaemon_events_failed_total", type="invoice", outcome="retry") == 2
        assert value(metrics, "revdaemon_api_calls_total", api="salesforce") == 1
        assert value(metrics, "revdaemon_api_calls_total", api="nue") == 4

    async def test_api_calls_follow_client_totals(self, store: Store) -> None:
        """refresh(api_calls=...) adds what the clients' running totals grew by since the last scrape."""
        metrics = Metrics()
        await metrics.refresh(store, api_calls={"salesforce": 3, "nue": 0})
        await metrics.refresh(store, api_calls={"salesforce": 10, "nue": 2})
        assert value(metrics, "revdaemon_api_calls_total", api="salesforce") == 10
        assert value(metrics, "revdaemon_api_calls_total", api="nue") == 2
        await metrics.refresh(store, api_calls={"salesforce": 4, "nue": 2})  # a new client counts from 0
        assert value(metrics, "revdaemon_api_calls_total", api="salesforce") == 14

    def test_unknown_outcome_is_refused(self) -> None:
        """An outcome outside retry|dead|conflict|parked raises rather than inventing a series."""
        with pytest.raises(ValueError, match="outcome"):
            Metrics().event_failed("invoice", "exploded")

    def test_label_values_are_capped(self) -> None:
        """Past MAX_LABEL_VALUES distinct event types, new ones are counted under "other"."""
        metrics = Metrics()
        for n in range(MAX_LABEL_VALUES + 5):
            metrics.event_processed(f"type{n}")
        metrics.event_processed("type0")
        assert value(metrics, "revdaemon_events_processed_total", type="type0") == 2
        assert value(metrics, "revdaemon_events_processed_total", type=OTHER) == 5

    def test_render_is_prometheus_text(self) -> None:
        """render() answers the text exposition body and its content type."""
        body, content_type = Metrics().render()
        assert content_type.startswith("text/plain; version=")
        assert b"# TYPE revdaemon_queue_depth gauge" in body


class TestRefresh:
    async def test_queue_depths_follow_the_store(self, store: Store) -> None:
        """Queue depth gauges match the inbox by status, 0 for empty statuses."""
        await store.add_events([event(n) for n in range(3)])
        await store.claim_events(worker="w", limit=1, lease=timedelta(minutes=5))
        metrics = Metrics()
        await metrics.refresh(store)
        assert value(metrics, "revdaemon_queue_depth", status="received") == 2
        assert value(metrics, "revdaemon_queue_depth", status="claimed") == 1
        assert value(metrics, "revdaemon_queue_depth", status="done") == 0
        assert value(metrics, "revdaemon_dead_letters") == 0
        assert value(metrics, "revdaemon_open_conflicts") == 0

    async def test_dead_letters_and_conflicts(self, store: Store) -> None:
        """Dead letters and open conflicts are read from the store's summary."""
        await store.add_events([event(n) for n in range(3)])
        first, second, _ = await store.claim_events(worker="w", limit=3, lease=timedelta(minutes=5))
        await store.dead_letter_event(first.id, NewDeadLetter(system="salesforce", operation="upsert", error="bad"),
                                      claimed_by="w")
        await store.conflict_event(second.id, NewConflict(flow="f", record_ref="r", reason="both changed"),
                                   claimed_by="w")
        metrics = Metrics()
        await metrics.refresh(store)
        assert value(metrics, "revdaemon_dead_letters") == 1
        assert value(metrics, "revdaemon_open_conflicts") == 1
        assert value(metrics, "revdaemon_queue_depth", status="dead") == 1
        assert value(metrics, "revdaemon_queue_depth", status="conflict") == 1

    async def test_budget_remaining(self, store: Store) -> None:
        """Remaining budget is total minus used, and absent until Salesforce has reported it."""
        budget = DailyBudget(share=0.5)
        metrics = Metrics()
        await metrics.refresh(store, budget=budget)
        assert value(metrics, "revdaemon_api_budget_remaining", api="salesforce") is None
        budget.observe(used=1200, total=15000)
        await metrics.refresh(store, budget=budget)
        assert value(metrics, "revdaemon_api_budget_remaining", api="salesforce") == 13800

    async def test_poll_lag(self, store: Store) -> None:
        """Lag is now minus the last success, or minus the metrics' start for a poller that never succeeded."""
        clock = FakeClock()
        metrics = Metrics(clock=clock)
        clock.now = START + timedelta(minutes=10)
        pollers = {"salesforce.opportunity": PollerHealth(last_success_at=START + timedelta(minutes=9)),
                   "nue.subscription": PollerHealth()}
        await metrics.refresh(store, pollers_health=pollers)
        assert value(metrics, "revdaemon_poll_lag_seconds", poller="salesforce.opportunity") == 60
        assert value(metrics, "revdaemon_poll_lag_seconds", poller="nue.subscription") == 600

    async def test_oldest_due(self, store: Store) -> None:
        """The most overdue waiting event's age is reported; 0 when nothing waits."""
        clock = FakeClock()
        metrics = Metrics(clock=clock)
        await metrics.refresh(store)
        assert value(metrics, "revdaemon_queue_oldest_due_seconds") == 0
        await store.add_events([event(1)])
        clock.now = datetime.now(UTC) + timedelta(seconds=30)
        await metrics.refresh(store)
        lag = value(metrics, "revdaemon_queue_oldest_due_seconds")
        assert lag is not None and lag >= 29

    async def test_parked_flows(self, store: Store) -> None:
        """A parked flow reports 1, the others 0, and a resumed flow goes back to 0."""
        metrics = Metrics()
        await metrics.refresh(store, parked={"quote_sync": "missing field"}, flows=["quote_sync", "renewals"])
        assert value(metrics, "revdaemon_flow_parked", flow="quote_sync") == 1
        assert value(metrics, "revdaemon_flow_parked", flow="renewals") == 0
        await metrics.refresh(store, parked={})
        assert value(metrics, "revdaemon_flow_parked", flow="quote_sync") == 0


class TestIsolation:
    def test_two_instances_do_not_share_values(self) -> None:
        """Each Metrics has its own registry, so one's counts never show in the other's scrape."""
        one, two = Metrics(), Metrics()
        one.api_call("nue", 7)
        assert value(one, "revdaemon_api_calls_total", api="nue") == 7
        assert value(two, "revdaemon_api_calls_total", api="nue") is None

    def test_global_registry_untouched(self) -> None:
        """Nothing is registered in prometheus_client's process-wide default registry."""
        Metrics().api_call("nue")
        assert REGISTRY.get_sample_value("revdaemon_api_calls_total", {"api": "nue"}) is None
