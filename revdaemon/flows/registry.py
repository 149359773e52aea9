"""Every flow, and what the event types and sources they declare add up to. Pure.

The listener asks this module which types a Nue webhook may carry; nothing here is copied by hand from a
flow. It counts every flow, enabled or not: a type is internal because of the flow that handles it, so a
webhook of a disabled flow's internal type is refused as well (it would be acted on once the flow is on).
"""

from __future__ import annotations

from revdaemon.flows import sources
from revdaemon.flows.amendments import AmendmentsFlow
from revdaemon.flows.base import Flow
from revdaemon.flows.billing_events import BillingEventsFlow
from revdaemon.flows.closed_won_to_order import WON_SINCE, ClosedWonToOrderFlow
from revdaemon.flows.onboarding import OnboardingFlow
from revdaemon.flows.quote_sync import QuoteSyncFlow
from revdaemon.flows.renewals import RenewalFlow
from revdaemon.flows.subscription_status import REPAIR_FLAG, SubscriptionStatusFlow

FLOWS: tuple[type[Flow], ...] = (ClosedWonToOrderFlow, SubscriptionStatusFlow, RenewalFlow, BillingEventsFlow,
                                 AmendmentsFlow, OnboardingFlow, QuoteSyncFlow)


def types_from(source: str) -> frozenset[str]:
    """The event types some flow takes from `source`."""
    return frozenset(t for flow in FLOWS if source in flow.sources for t in flow.event_types)


HANDLED_TYPES = frozenset(t for flow in FLOWS for t in flow.event_types)
WEBHOOK_TYPES = types_from(sources.NUE_WEBHOOK)
# Handled, but never taken from a webhook (renewal.due, opportunity.closed_won): only revdaemon's own sources
# store them.
INTERNAL_TYPES = HANDLED_TYPES - WEBHOOK_TYPES
# Top-level payload keys that change what a flow does, honoured only from the source that sets them.
INTERNAL_FLAGS = frozenset({REPAIR_FLAG, WON_SINCE})
