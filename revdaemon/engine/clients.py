"""The two API clients, built from the settings the same way for the daemon and for every command."""

from __future__ import annotations

import httpx

from revdaemon.config import Settings
from revdaemon.connectors.nue import NueClient
from revdaemon.connectors.salesforce import SalesforceClient
from revdaemon.limits import ApiLimiter, DailyBudget, RetryPolicy


def build_clients(settings: Settings, http: httpx.AsyncClient, retry: RetryPolicy, *,
                  budget_share: float | None = None) -> tuple[SalesforceClient, NueClient]:
    """`budget_share` overrides the configured share of the daily allocation (1.0 for a one-off check)."""
    share = settings.limits.salesforce_daily_budget_share if budget_share is None else budget_share
    salesforce = SalesforceClient(settings.salesforce, http, limiter=ApiLimiter(settings.limits.salesforce),
                                  budget=DailyBudget(share=share), retry=retry)
    nue = NueClient(settings.nue, http, limiter=ApiLimiter(settings.limits.nue), retry=retry)
    return salesforce, nue
