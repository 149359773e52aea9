"""Where an inbox event comes from: every source named once. Pure.

The source is set by whoever stores the event, never read from its body, so it is the one thing about an
event a Nue webhook cannot choose. Each flow lists the sources it takes its event types from (`sources` on
the flow); the worker ignores an event from any other (flows.base.takes). Only the listener stores events
of the webhook source; every other source is revdaemon's own reading of an API, or its own schedule.
"""

from __future__ import annotations

NUE_WEBHOOK = "nue_webhook"  # listener/envelope.py: a signed (or path-token) notification from Nue
NUE_POLL = "nue_poll"  # engine/pollers.py NuePoller, the sweep's Nue half, a backfill of a Nue flow
SALESFORCE_POLL = "salesforce_poll"  # engine/pollers.py SalesforceClosedWonPoller, a backfill of its stream
SALESFORCE_CDC = "salesforce_cdc"  # engine/change_stream.py: a Change Data Capture event's hint (Pub/Sub API)
SALESFORCE_SWEEP = "salesforce_sweep"  # engine/sweep.py: won deals with no order, by close date
BACKFILL = "backfill"  # only `revdaemon backfill --flow closed_won` (engine/sweep.py backfill_event)
# The daily renewal scan (engine/renewal_scan.py), and reconciliation repairs (engine/reconcile.py): the
# nightly job, `revdaemon reconcile --repair` and the console's repair button all queue them.
SCHEDULE = "schedule"

FROM_NUE = frozenset({NUE_WEBHOOK, NUE_POLL})
FROM_SALESFORCE = frozenset({SALESFORCE_POLL, SALESFORCE_CDC, SALESFORCE_SWEEP, BACKFILL})
