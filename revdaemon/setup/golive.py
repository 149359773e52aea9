"""`revdaemon check --online`'s go-live lines beyond the two logins: is this box ready? Each line is ok or a
problem with how to fix it.

- Salesforce's fields: the setup plan (plan.py), as the integration user sees the org.
- The integration user: who revdaemon writes as, and whether revdaemon's permission set is assigned to it.
- Change Data Capture, when on: that the integration user may subscribe to each topic (GetTopic over the Pub/Sub
  API: the object selected in Setup, the user's permissions, this box's way out to the endpoint).
- The webhook: the URL and the events to register in Nue; with a public URL, that a notification signed (or
  path-token addressed) as Nue's would be reaches this box's daemon through it: the listener answers a
  `revdaemon.ping` with its daemon's tag, the one its local /healthz shows, and stores nothing.
- The clock: this box's against Salesforce's `Date` header. JWT assertions and signed webhooks carry times; a
  skew of minutes makes logins and webhooks fail [doc: salesforce-api.md §1.2, the assertion's exp].
- The state store: writable by this user.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

import httpx

from revdaemon.config import Settings, WebhookAuth
from revdaemon.connectors.pubsub import PubSubClient
from revdaemon.connectors.salesforce import SalesforceClient
from revdaemon.connectors.salesforce_wire import soql_literal
from revdaemon.errors import AuthFailed, SyncError
from revdaemon.flows import sources
from revdaemon.flows.base import Flow
from revdaemon.listener.app import PING_TYPE, WEBHOOK_PATH
from revdaemon.listener.signature import sign
from revdaemon.setup.metadata import PERMISSION_SET
from revdaemon.setup.plan import PlanRow

CLOCK_SKEW_LIMIT_SECONDS = 60.0
PROBE_TIMEOUT_SECONDS = 10.0


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def fields_check(rows: Sequence[PlanRow]) -> Check:
    problems = [row for row in rows if not row.ok]
    if not problems:
        return Check("salesforce fields", True, f"all {len(rows)} objects and fields ready")
    names = ", ".join(f"{row.requirement.name} ({row.status.value})" for row in problems[:6])
    more = f" and {len(problems) - 6} more" if len(problems) > 6 else ""
    return Check("salesforce fields", False, f"{len(problems)} of {len(rows)} not ready: {names}{more}",
                 "revdaemon setup salesforce shows each; --apply --assign fixes those revdaemon owns")


async def integration_user_check(salesforce: SalesforceClient, fields_ready: bool) -> Check:
    user = salesforce.integration_user_id
    if user is None:
        return Check("integration user", False, "the login did not say who the user is",
                     "check the Connected App's user (JWT: salesforce.username)")
    try:
        assigned = [record async for record in salesforce.query(
            "SELECT Id FROM PermissionSetAssignment WHERE AssigneeId = "
            f"{soql_literal(user)} AND PermissionSet.Name = {soql_literal(PERMISSION_SET)}")]
    except SyncError as exc:
        # Reading assignments needs "View Setup"; not needed to sync when the fields are visible anyway.
        return Check("integration user", fields_ready, f"{user}; its permission sets cannot be read: {exc.message}",
                     "" if fields_ready else "assign the permission set revdaemon_integration to it")
    if assigned:
        return Check("integration user", True, f"{user}, permission set {PERMISSION_SET} assigned")
    return Check("integration user", fields_ready,
                 f"{user}, permission set {PERMISSION_SET} not assigned"
                 + (" (the fields are visible through its profile)" if fields_ready else ""),
                 "" if fields_ready else "revdaemon setup salesforce --apply --assign")


async def change_data_capture_check(settings: Settings, salesforce: SalesforceClient) -> Check:
    """Whether the integration user may subscribe to each configured topic (GetTopic over the Pub/Sub API)."""
    cdc = settings.change_data_capture
    if not cdc.enabled:
        return Check("change data capture", True, f"off: a won deal reaches Nue at the next Salesforce poll (every "
                     f"{settings.schedule.salesforce_poll_seconds:g} s)")
    client = PubSubClient(cdc.endpoint, salesforce.auth, tls=cdc.tls, instance_url=settings.salesforce.instance_url)
    problems: list[str] = []
    try:
        for topic in cdc.topics:
            try:
                info = await client.topic(topic)
            except AuthFailed as exc:
                return Check("change data capture", False, f"{cdc.endpoint} refused the session: {exc.message}",
                             "the integration user needs API Enabled, and View All on Opportunity (or View All Data)")
            except SyncError as exc:
                problems.append(f"{topic}: {exc.message}")
                continue
            if not info.can_subscribe:
                problems.append(f"{topic}: the integration user may not subscribe")
    finally:
        await client.close()
    if problems:
        return Check("change data capture", False, "; ".join(problems),
                     "Setup > Integrations > Change Data Capture: select Opportunity; the integration user needs "
                     f"View All on it; and this box must reach {cdc.endpoint} (outbound gRPC over TLS)")
    return Check("change data capture", True, f"may subscribe to {', '.join(cdc.topics)} at {cdc.endpoint}")


def webhook_events(flows: Sequence[Flow]) -> list[str]:
    """The Nue events to subscribe the webhook to: what the enabled flows take from webhooks."""
    return sorted({t for flow in flows if sources.NUE_WEBHOOK in flow.sources for t in flow.event_types})


def webhook_path(settings: Settings) -> str:
    if settings.nue.webhook_auth is WebhookAuth.PATH_TOKEN:
        return f"{WEBHOOK_PATH}/<nue.webhook_path_token>"
    return WEBHOOK_PATH


async def webhook_check(settings: Settings, flows: Sequence[Flow], public_url: str | None,
                        http: httpx.AsyncClient) -> Check:
    events = ", ".join(webhook_events(flows))
    register = (f"register {public_url.rstrip('/') if public_url else 'https://<public host>'}"
                f"{webhook_path(settings)} in Nue for: {events}")
    if settings.nue.webhook_auth is WebhookAuth.SIGNATURE:
        register += " (with the secret nue.webhook_secret)"
    if public_url is None:
        return Check("webhook", True, register + "; its reach from outside was not tried",
                     "add --public-url https://<host> to try it")
    local = f"http://{settings.listener.host}:{settings.listener.port}/healthz"
    try:
        here = (await http.get(local, timeout=PROBE_TIMEOUT_SECONDS)).json().get("daemon")
    except (httpx.HTTPError, ValueError) as exc:
        return Check("webhook", False, f"{register}; the daemon does not answer at {local}: {exc}",
                     "start the daemon on this box, then check again")
    outside = public_url.rstrip("/") + WEBHOOK_PATH + _token_suffix(settings)
    body, headers = ping(settings, now=time.time())
    try:
        answer = await http.post(outside, content=body, headers=headers, timeout=PROBE_TIMEOUT_SECONDS)
        there = answer.json().get("daemon") if answer.status_code == 200 else None
    except (httpx.HTTPError, ValueError) as exc:
        return Check("webhook", False, f"{register}; {public_url} cannot be reached: {exc}",
                     "point the public name and the reverse proxy at this box's listener (README: Going live)")
    if answer.status_code == 401:
        return Check("webhook", False, f"{register}; a signed test notification through {public_url} was refused: "
                                       "the proxy or the daemon answering it does not use this config's secret",
                     "the daemon behind the public name must run with this nue.webhook_secret (or path token)")
    if there is None or there != here:
        return Check("webhook", False, f"{register}; {public_url} answers a test notification with "
                                       f"{answer.status_code}, not from this box's daemon",
                     "the reverse proxy must forward /webhooks/nue to listener.host:port here")
    return Check("webhook", True, register + f"; a signed test notification through {public_url} reached this "
                                             "daemon")


def ping(settings: Settings, *, now: float) -> tuple[bytes, dict[str, str]]:
    """A `revdaemon.ping` notification as Nue would send it to this config's listener: the body and headers."""
    body = json.dumps({"id": f"revdaemon-ping-{int(now)}", "type": PING_TYPE, "data": {"id": "ping"}}).encode()
    headers = {"Content-Type": "application/json"}
    if settings.nue.webhook_auth is WebhookAuth.SIGNATURE and settings.nue.webhook_secret is not None:
        headers["Nue-Signature"] = sign(body, settings.nue.webhook_secret.get_secret_value(), int(now))
    return body, headers


def _token_suffix(settings: Settings) -> str:
    token = settings.nue.webhook_path_token
    if settings.nue.webhook_auth is WebhookAuth.PATH_TOKEN and token is not None:
        return "/" + token.get_secret_value()
    return ""


async def clock_check(settings: Settings, http: httpx.AsyncClient, now: Callable[[], float] = time.time) -> Check:
    try:
        answer = await http.get(settings.salesforce.login_url, timeout=PROBE_TIMEOUT_SECONDS)
        date = answer.headers.get("date")
        theirs = parsedate_to_datetime(date).timestamp() if date else None
    except (httpx.HTTPError, TypeError, ValueError) as exc:
        return Check("clock", True, f"not compared: {settings.salesforce.login_url} did not answer ({exc})")
    if theirs is None:
        return Check("clock", True, f"not compared: {settings.salesforce.login_url} sent no Date header")
    skew = now() - theirs
    detail = f"{abs(skew):.0f} s {'ahead of' if skew > 0 else 'behind'} Salesforce"
    if abs(skew) > CLOCK_SKEW_LIMIT_SECONDS:
        return Check("clock", False, detail, "synchronise this box's clock (systemd-timesyncd or chrony)")
    return Check("clock", True, detail)


def store_check(settings: Settings) -> Check:
    """Writable by this user: the SQLite file and its directory (WAL needs both); PostgreSQL is not judged here
    (`revdaemon status` reads it, and the daemon's readiness says whether writes succeed)."""
    target = settings.store_target
    if not isinstance(target, Path):
        return Check("state store", True, f"{settings.store_display}: writes are checked by the daemon's /healthz")
    directory = target.parent
    while not directory.exists() and directory != directory.parent:
        directory = directory.parent  # the daemon creates what is missing below the nearest existing one
    writable = os.access(directory, os.W_OK | os.X_OK) and (not target.exists() or os.access(target, os.W_OK))
    if writable:
        return Check("state store", True, f"{target} writable")
    return Check("state store", False, f"{target} (or {directory}) is not writable by this user",
                 "run as the daemon's user, or give it the state directory")
