"""Alerts: something a person should look at (a dead letter, a conflict, a parked flow, the Salesforce budget,
a failing poller), always logged and, when a webhook URL is configured, posted there as Slack-compatible JSON.

Theory of operation: `alert()` is synchronous and cheap, so a worker settling an event or the schema guard
parking a flow calls it in line and never waits on the webhook. It logs one `alert` line (always, whatever
happens to the post), drops a repeat of the same (kind, key) within `window_seconds`, and queues the rest.
`run()`, a task in the supervisor's group, posts the queue. `send()` does the same as `alert()` but posts
at once, for callers that are async anyway and want to know whether it went out.

Posts are rate-limited over a sliding minute. An alert over the rate is not posted; it is counted, and the
next post carries "and N more (dead_letter: 3, ...)". If nothing follows, `run()` posts that summary on its
own once the minute frees up. A webhook that fails (an HTTP error, a refused connection, a timeout) is
logged as `alert_post_failed` and forgotten: alerts never raise to their caller and are never retried, so
a broken Slack cannot slow the sync. The `alert` log line is the record; the webhook is a convenience.

Secrets: the webhook URL is a secret (Slack puts its token in the path); it is never logged, and is
scrubbed from error text. The alert text is what the caller passes: callers pass record keys and API error
messages, the same text they log. The redactor scrubs logs in the logging pipeline; the webhook does not
pass through that pipeline, so the text and context are scrubbed here with the `RedactSecrets` given (the
running pipeline's, so configured and learned secrets are removed) before anything is posted. Never pass
a request body or header set as context.
"""

from __future__ import annotations

import socket
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import anyio
import httpx
import structlog
from anyio.abc import TaskStatus
from pydantic import SecretStr

from revdaemon.limits import DailyBudget
from revdaemon.ops.logging import REDACTED, RedactSecrets

log = structlog.get_logger("revdaemon.alerts")

DEFAULT_WINDOW_SECONDS = 15 * 60.0  # a repeat of the same (kind, key) within it is not posted again
DEFAULT_MAX_PER_MINUTE = 10
RATE_PERIOD_SECONDS = 60.0
DEFAULT_TIMEOUT_SECONDS = 10.0
DEFAULT_QUEUE_SIZE = 200  # alerts waiting for `run`; past it they count as rate-limited
MAX_TEXT_CHARS = 3000  # Slack's limit for a section block's text; the plain text is capped the same


class AlertKind(StrEnum):
    DEAD_LETTER = "dead_letter"
    CONFLICT = "conflict"
    FLOW_PARKED = "flow_parked"
    BUDGET_THRESHOLD = "budget_threshold"
    POLLER_FAILING = "poller_failing"


TITLES = {
    AlertKind.DEAD_LETTER: "Dead letter",
    AlertKind.CONFLICT: "Conflict needs a decision",
    AlertKind.FLOW_PARKED: "Flow parked (Salesforce schema changed)",
    AlertKind.BUDGET_THRESHOLD: "Salesforce API budget threshold reached",
    AlertKind.POLLER_FAILING: "Poller failing",
}
LOG_LEVELS = {
    AlertKind.DEAD_LETTER: "warning",
    AlertKind.CONFLICT: "warning",
    AlertKind.FLOW_PARKED: "error",
    AlertKind.BUDGET_THRESHOLD: "warning",
    AlertKind.POLLER_FAILING: "error",
}
_RESERVED = frozenset({"event", "kind", "key", "text", "delivery"})


@dataclass(frozen=True, kw_only=True)
class Alert:
    kind: AlertKind
    key: str
    text: str
    context: dict[str, Any]


class Alerter:
    """Logs every alert; posts them to a Slack-compatible webhook, de-duplicated and rate-limited."""

    def __init__(
        self,
        webhook_url: str | SecretStr | None,
        http: httpx.AsyncClient | None = None,
        *,
        window_seconds: float = DEFAULT_WINDOW_SECONDS,
        max_per_minute: int = DEFAULT_MAX_PER_MINUTE,
        timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS,
        instance: str | None = None,
        blocks: bool = False,
        redactor: RedactSecrets | None = None,
        queue_size: int = DEFAULT_QUEUE_SIZE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        url = webhook_url.get_secret_value() if isinstance(webhook_url, SecretStr) else webhook_url
        if url and http is None:
            raise ValueError("an Alerter with a webhook URL needs the httpx.AsyncClient to post with")
        if max_per_minute < 1:
            raise ValueError("max_per_minute must be at least 1")
        self._url = url or None
        self._http = http
        self._window = window_seconds
        self._max_per_minute = max_per_minute
        self._timeout = timeout_seconds
        self._instance = instance if instance is not None else socket.gethostname()
        self._blocks = blocks
        # Without the pipeline's redactor, a fresh one still blanks secret-named keys and Bearer tokens.
        self._redactor = redactor or RedactSecrets()
        self._queue: deque[Alert] = deque()
        self._queue_size = queue_size
        self._clock = clock
        self._last_posted: dict[tuple[AlertKind, str], float] = {}
        self._posted_at: deque[float] = deque()
        self._suppressed: Counter[str] = Counter()
        self._wake = anyio.Event()
        self.posted = 0  # posts attempted (for status and tests)
        self.failed_posts = 0

    @property
    def enabled(self) -> bool:
        """True when alerts are posted somewhere, not only logged."""
        return self._url is not None

    @property
    def suppressed(self) -> int:
        """Alerts held back by the rate limit, not yet summarised in a post."""
        return sum(self._suppressed.values())

    # --- raising an alert ---------------------------------------------------------------------------

    def alert(self, kind: AlertKind, key: str, text: str, **context: Any) -> bool:
        """Log the alert and queue it for `run` to post; True when queued. Never raises."""
        try:
            item = self._accept(kind, key, text, context)
            if item is None:
                return False
            if len(self._queue) >= self._queue_size:
                self._suppressed[item.kind.value] += 1
                return False
            self._queue.append(item)
            self._wake.set()
            return True
        except Exception:
            log.exception("alert_failed", kind=str(kind), key=key)
            return False

    async def send(self, kind: AlertKind, key: str, text: str, **context: Any) -> bool:
        """Log the alert and post it now (not through the queue); True when the webhook accepted it.
        Never raises, except on cancellation."""
        try:
            item = self._accept(kind, key, text, context)
        except Exception:
            log.exception("alert_failed", kind=str(kind), key=key)
            return False
        return item is not None and await self._deliver(item)

    def budget_alert(self, api: str, budget: DailyBudget, *, threshold: float) -> bool:
        """Alert (queued) when `budget` reports `threshold` or more of the allocation used; True if queued."""
        share = budget.used_share
        if share is None or share < threshold:
            return False
        return self.alert(AlertKind.BUDGET_THRESHOLD, api,
                          f"{api} has used {budget.used} of its {budget.total} daily API requests "
                          f"({share:.0%}, threshold {threshold:.0%}); background work is held back.",
                          api=api, used=budget.used, total=budget.total)

    # --- posting ------------------------------------------------------------------------------------

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Post queued alerts until cancelled; a rate-limited backlog is summarised once the minute frees."""
        task_status.started()
        while True:
            wait = self._seconds_until_slot() if self._suppressed and not self._queue else None
            if not self._queue:
                with anyio.move_on_after(wait):
                    await self._wake.wait()
            self._wake = anyio.Event()
            await self.flush()

    async def flush(self) -> None:
        """Post everything queued now, then the rate-limited summary if the rate allows one."""
        while self._queue:
            await self._deliver(self._queue.popleft())
        if self._suppressed and self._take_slot():
            await self._post(self._summary_only())

    # --- internals ----------------------------------------------------------------------------------

    def _accept(self, kind: AlertKind, key: str, text: str, context: dict[str, Any]) -> Alert | None:
        """Log the alert; decide whether it is to be posted (configured, not a repeat within the window)."""
        kind = AlertKind(kind)
        clean = self._redactor(None, "alert", {"text": text, **{k: v for k, v in context.items()
                                                                 if k not in _RESERVED}})
        clean_text = str(clean.pop("text"))
        now = self._clock()
        for seen_key, at in list(self._last_posted.items()):
            if now - at >= self._window:
                del self._last_posted[seen_key]
        if self._url is None:
            delivery = "log_only"
        elif (kind, key) in self._last_posted:
            delivery = "deduplicated"
        else:
            delivery = "queued"
            self._last_posted[(kind, key)] = now
        getattr(log, LOG_LEVELS[kind])("alert", kind=kind.value, key=key, text=text, delivery=delivery,
                                       **{k: v for k, v in context.items() if k not in _RESERVED})
        if delivery != "queued":
            return None
        return Alert(kind=kind, key=key, text=clean_text, context=dict(clean))

    async def _deliver(self, item: Alert) -> bool:
        if not self._take_slot():
            self._suppressed[item.kind.value] += 1
            log.info("alert_rate_limited", kind=item.kind.value, key=item.key,
                     max_per_minute=self._max_per_minute)
            return False
        ok = await self._post(self._message(item))
        if not ok:
            # Let a repeat try again rather than be swallowed as a duplicate of a post that never arrived.
            self._last_posted.pop((item.kind, item.key), None)
        return ok

    def _take_slot(self) -> bool:
        now = self._clock()
        while self._posted_at and now - self._posted_at[0] >= RATE_PERIOD_SECONDS:
            self._posted_at.popleft()
        if len(self._posted_at) >= self._max_per_minute:
            return False
        self._posted_at.append(now)
        return True

    def _seconds_until_slot(self) -> float:
        if len(self._posted_at) < self._max_per_minute:
            return 0.0
        return max(0.0, self._posted_at[0] + RATE_PERIOD_SECONDS - self._clock())

    def _message(self, item: Alert) -> dict[str, Any]:
        lines = [f"*[{_escape(self._instance)}] {TITLES[item.kind]}*: `{_escape(item.key)}`", _escape(item.text)]
        lines += [f"• {_escape(str(name))}: {_escape(str(value))}" for name, value in item.context.items()
                  if value is not None]
        tail = self._take_summary()
        if tail:
            lines.append(f"_{tail}_")
        return self._payload("\n".join(lines))

    def _summary_only(self) -> dict[str, Any]:
        return self._payload(f"*[{_escape(self._instance)}]* _{self._take_summary()}_")

    def _take_summary(self) -> str:
        if not self._suppressed:
            return ""
        total = sum(self._suppressed.values())
        by_kind = ", ".join(f"{kind}: {n}" for kind, n in sorted(self._suppressed.items()))
        self._suppressed.clear()
        plural = "s" if total != 1 else ""
        return f"and {total} more alert{plural} held back by the rate limit ({by_kind}); see the logs"

    def _payload(self, text: str) -> dict[str, Any]:
        text = text if len(text) <= MAX_TEXT_CHARS else text[: MAX_TEXT_CHARS - 1] + "…"
        payload: dict[str, Any] = {"text": text}
        if self._blocks:
            payload["blocks"] = [{"type": "section", "text": {"type": "mrkdwn", "text": text}}]
        return payload

    async def _post(self, payload: dict[str, Any]) -> bool:
        assert self._url is not None and self._http is not None
        self.posted += 1
        try:
            response = await self._http.post(self._url, json=payload, timeout=self._timeout)
        except Exception as exc:  # a broken webhook must never reach the caller (cancellation still does)
            self.failed_posts += 1
            log.warning("alert_post_failed", error_type=type(exc).__name__, error=self._hide_url(str(exc)))
            return False
        if response.status_code >= 300:
            self.failed_posts += 1
            log.warning("alert_post_failed", status=response.status_code,
                        error=self._hide_url(response.text[:200]))
            return False
        return True

    def _hide_url(self, text: str) -> str:
        return text.replace(self._url, REDACTED) if self._url else text


def _escape(text: str) -> str:
    """Slack mrkdwn control characters (api.slack.com/reference/surfaces/formatting#escaping)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
