"""Won deals read by their close date, not by a cursor: flow 1's daily sweep; and a backfill's flow-1 events.

A poll sees only what changed since its cursor. A deal whose change committed later than the overlap window,
or that was won while the daemon was down longer than the poll's first look back, is found by no cursor. The
daily sweep needs none: every won opportunity closed on or after the go-live cut-off whose Nue order id is
still empty (one SOQL query) goes into the inbox under the very key the poll gives that state of the record,
so a deal the poll already delivered adds nothing, and a deal seen and left alone (no products, a conflict)
is not planned again until it changes. The workers then run flow 1 on it as on any poll event.

Its Nue half (`ActivatedOrderSweep`) reads the activated orders of the last days (never before the cut-off)
and queues each under the Nue poll's own key for that state of the order: an order the poll or a webhook
already delivered adds nothing, and one no cursor saw (committed late, or changed during an outage) goes
through flows 5 and 6, which plan nothing where the account already shows it.

`revdaemon backfill --flow closed_won --since DATE` re-reads the won deals changed since DATE (the poll's
query) as events of the `backfill` source that carry DATE as their own cut-off: the only way a deal won
before the go-live cut-off is ordered (a deal won before DATE itself still is not).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import structlog

from revdaemon.connectors.nue import NueClient
from revdaemon.connectors.salesforce import SalesforceClient
from revdaemon.engine.pollers import NuePoller, SalesforceClosedWonPoller, nue_datetime
from revdaemon.flows import sources
from revdaemon.flows.closed_won_to_order import BACKFILL_SOURCE, WON_SINCE
from revdaemon.limits import Priority
from revdaemon.store import Store
from revdaemon.store.records import NewEvent

log = structlog.get_logger("revdaemon.sweep")

SOURCE = sources.SALESFORCE_SWEEP
BATCH_SIZE = 200  # events per add_events transaction, as the pollers store them


class WonDealSweep:
    """Won opportunities closed on or after a day, optionally only those without a Nue order id."""

    def __init__(self, client: SalesforceClient, store: Store, *, won_since: date | None = None,
                 order_id_field: str = "Nue_Order_Id__c", priority: Priority = Priority.BULK) -> None:
        self.client = client
        self.store = store
        self.won_since = won_since  # flows.closed_won.won_since; None: the store's created_on
        self.order_id_field = order_id_field
        self.priority = priority

    async def cut_off(self) -> date:
        return self.won_since or await self.store.go_live()

    def soql(self, since: date, *, unordered_only: bool) -> str:
        fields = ", ".join(dict.fromkeys((*SalesforceClosedWonPoller.FIELDS, "CloseDate", "Name",
                                          self.order_id_field)))
        unordered = f" AND {self.order_id_field} = null" if unordered_only else ""
        # A date literal is unquoted in SOQL (salesforce-api.md §4); Id order keeps the locator's pages stable.
        return (f"SELECT {fields} FROM Opportunity WHERE IsWon = true AND CloseDate >= {since.isoformat()}"
                f"{unordered} ORDER BY Id")

    async def deals(self, since: date, *, unordered_only: bool) -> AsyncIterator[Mapping[str, Any]]:
        async for row in self.client.query(self.soql(since, unordered_only=unordered_only), priority=self.priority):
            yield row

    async def run_once(self, now: datetime | None = None) -> int:
        """Queue every won deal since the cut-off still without an order; returns how many were new events."""
        since = await self.cut_off()
        read, stored = await _queue(self.store, (sweep_event(r) async for r in self.deals(since, unordered_only=True)))
        log.info("won_deals_swept", since=since.isoformat(), unordered=read, queued=stored)
        return stored


ORDER_LOOKBACK = timedelta(days=7)  # a week of outage or of late commits; older orders are history or a backfill


class ActivatedOrderSweep:
    """Activated Nue orders modified in the last `lookback` (not before the cut-off), queued under the Nue
    poll's key, so only the ones no poll or webhook delivered become new events."""

    def __init__(self, client: NueClient, store: Store, *, won_since: date | None = None,
                 lookback: timedelta = ORDER_LOOKBACK) -> None:
        self.client = client
        self.store = store
        self.won_since = won_since
        self.lookback = lookback
        # the poller's own keys and events, never stored by it here (no cursor moves)
        self._as_polled = NuePoller("Order", client, store)

    async def run_once(self, now: datetime | None = None) -> int:
        now = now or datetime.now(UTC)
        cut_off = datetime.combine(self.won_since or await self.store.go_live(), time.min, UTC)
        since = max(cut_off, now - self.lookback)
        orders = self.client.poll("Order", self._as_polled.fields, since=nue_datetime(since))
        read, stored = await _queue(self.store, (self._as_polled.event_of(o) async for o in orders
                                                 if str(o.get("status", "")).lower() in ("activated", "active")))
        log.info("activated_orders_swept", since=since.isoformat(), activated=read, queued=stored)
        return stored


async def _queue(store: Store, events: AsyncIterator[NewEvent]) -> tuple[int, int]:
    """Store events in transactions of BATCH_SIZE; (how many were read, how many were new)."""
    pending: list[NewEvent] = []
    read = stored = 0
    async for event in events:
        read += 1
        pending.append(event)
        if len(pending) >= BATCH_SIZE:
            stored += sum(await store.add_events(pending))
            pending = []
    if pending:
        stored += sum(await store.add_events(pending))
    return read, stored


def sweep_event(record: Mapping[str, Any]) -> NewEvent:
    """The poll's own key for this state of the record, so the inbox keeps one event for it whoever saw it."""
    return NewEvent(source=SOURCE, key=f"sf:Opportunity:{record['Id']}:{record['SystemModstamp']}",
                    type=SalesforceClosedWonPoller.EVENT_TYPE, payload={"data": dict(record)})


def backfill_event(record: Mapping[str, Any], since: date) -> NewEvent:
    """A backfill's event: its own key (a deal the poll already skipped as too old is planned again), and
    the operator's day as the cut-off, which only this source may carry."""
    return NewEvent(source=BACKFILL_SOURCE,
                    key=f"backfill:closed_won:{record['Id']}:{since.isoformat()}:{record['SystemModstamp']}",
                    type=SalesforceClosedWonPoller.EVENT_TYPE,
                    payload={"data": dict(record), WON_SINCE: since.isoformat()})
