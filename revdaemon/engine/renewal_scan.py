"""The daily renewal scan (flow 3): one `renewal.due` inbox event per subscription term ending soon.

Reads every subscription over the GraphQL poll read (no `since`: the client has no read filtered on
status and end date, see below) and keeps the Active ones whose subscriptionEndDate falls within
[today, today + window_days]. Each becomes an event keyed renewal:<subscription id>:<end date>, which the
store stores once, so repeated scans, a second daemon, or a scan that overlaps the last one add nothing;
a renewed subscription has a new end date and so a new term, scanned again when its time comes.

The event only names the term; the worker re-reads the subscription before planning
(flows/renewals.py), so an event stored for a term that was renewed or cancelled meanwhile is skipped there.

The read pages by offset, which can miss a row that moves mid-read; the next day's scan finds it (the
window is weeks wide). A filtered read (`where: {status: {_eq: "Active"}, subscriptionEndDate: {_lte: ...}}`)
would read only the rows wanted; it needs a `NueClient` method that takes a `where` (nue_wire builds only
`_in` and `lastModifiedDate` reads today).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, timedelta
from typing import Any

import structlog

from revdaemon.connectors.nue import NueClient
from revdaemon.flows import sources
from revdaemon.store import Store
from revdaemon.store.records import NewEvent

log = structlog.get_logger("revdaemon.renewal_scan")

EVENT_TYPE = "renewal.due"
SOURCE = sources.SCHEDULE
SCAN_FIELDS = ("id", "name", "customerId", "status", "subscriptionEndDate", "lastModifiedDate")
STORE_CHUNK = 500  # events per store transaction


def due_event(subscription: Mapping[str, Any]) -> NewEvent:
    end = str(subscription["subscriptionEndDate"])[:10]
    data = {"id": str(subscription["id"]), "customerId": str(subscription["customerId"]), "subscriptionEndDate": end}
    return NewEvent(source=SOURCE, key=f"renewal:{subscription['id']}:{end}", type=EVENT_TYPE, payload={"data": data})


def is_due(subscription: Mapping[str, Any], *, today: date, window_days: int) -> bool:
    """Active, with an end date from today to today + window_days (inclusive)."""
    if subscription.get("status") != "Active" or not subscription.get("customerId"):
        return False
    try:
        end = date.fromisoformat(str(subscription.get("subscriptionEndDate") or "")[:10])
    except ValueError:
        return False  # evergreen (no end date) or unreadable: nothing to renew
    return today <= end <= today + timedelta(days=window_days)


async def scan_renewals(nue: NueClient, store: Store, *, window_days: int, today: date) -> int:
    """Store one `renewal.due` event per subscription term ending within the window; how many were new."""
    if window_days < 0:
        raise ValueError("window_days must not be negative")
    due: dict[str, NewEvent] = {}
    seen = 0
    async for subscription in nue.poll("Subscription", SCAN_FIELDS, since=None):
        seen += 1
        if is_due(subscription, today=today, window_days=window_days):
            event = due_event(subscription)
            due[event.key] = event
    events = list(due.values())
    new = 0
    for start in range(0, len(events), STORE_CHUNK):
        new += sum(await store.add_events(events[start:start + STORE_CHUNK]))
    log.info("renewal_scan_done", subscriptions=seen, due=len(events), new=new, window_days=window_days,
             today=today.isoformat())
    return new
