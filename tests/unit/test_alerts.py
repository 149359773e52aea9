"""Alerts: always logged; posted as Slack JSON, de-duplicated per (kind, key), rate-limited, never raising."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable

import anyio
import httpx
import pytest
from pydantic import SecretStr
from structlog.testing import capture_logs

from revdaemon.limits import DailyBudget
from revdaemon.ops.alerts import Alerter, AlertKind
from revdaemon.ops.logging import REDACTED, RedactSecrets

pytestmark = pytest.mark.anyio

URL = "https://hooks.example.test/services/T000/B000/webhooksecrettoken"


async def eventually(condition: Callable[[], bool], *, seconds: float = 5.0) -> None:
    """Wait (polling, bounded) until `condition()` holds; fail the test if it never does."""
    for _ in range(int(seconds / 0.01)):
        if condition():
            return
        await anyio.sleep(0.01)
    raise AssertionError("condition never held")


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Receiver:
    """A webhook endpoint for httpx.MockTransport that keeps each posted JSON body."""

    def __init__(self) -> None:
        self.posts: list[dict[str, object]] = []
        self.status = 200
        self.refuse = False

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if self.refuse:
            raise httpx.ConnectError("[Errno 111] Connection refused", request=request)
        self.posts.append(json.loads(request.content))
        return httpx.Response(self.status, text="ok" if self.status < 300 else "invalid_payload")

    def texts(self) -> list[str]:
        return [str(post["text"]) for post in self.posts]


@pytest.fixture
def receiver() -> Receiver:
    return Receiver()


@pytest.fixture
async def http(receiver: Receiver) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.MockTransport(receiver)) as client:
        yield client


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def alerter(http: httpx.AsyncClient, clock: FakeClock) -> Alerter:
    return Alerter(URL, http, clock=clock, instance="box-1")


class TestPosting:
    async def test_send_posts_slack_json(self, alerter: Alerter, receiver: Receiver) -> None:
        """send() posts {"text": ...} naming the instance, the kind's title, the key, the text and context."""
        assert await alerter.send(AlertKind.DEAD_LETTER, "nue:invoice:INV-1", "INVALID_FIELD: bad <field>",
                                  flow="billing_events")
        assert len(receiver.posts) == 1
        post = receiver.posts[0]
        assert set(post) == {"text"}
        text = str(post["text"])
        assert "[box-1] Dead letter" in text
        assert "`nue:invoice:INV-1`" in text
        assert "bad &lt;field&gt;" in text  # Slack control characters escaped
        assert "flow: billing_events" in text

    async def test_blocks_when_asked(self, http: httpx.AsyncClient, receiver: Receiver, clock: FakeClock) -> None:
        """With blocks=True the same text also travels as one mrkdwn section block."""
        alerter = Alerter(URL, http, clock=clock, blocks=True)
        await alerter.send(AlertKind.CONFLICT, "opp-1", "both sides changed Amount")
        post = receiver.posts[0]
        assert post["blocks"] == [{"type": "section", "text": {"type": "mrkdwn", "text": post["text"]}}]

    async def test_alert_queues_and_flush_posts(self, alerter: Alerter, receiver: Receiver) -> None:
        """alert() only queues; flush() posts what is queued."""
        assert alerter.alert(AlertKind.FLOW_PARKED, "quote_sync", "missing Opportunity.Nue_Quote__c")
        assert receiver.posts == []
        await alerter.flush()
        assert len(receiver.posts) == 1

    async def test_run_posts_queued_alerts(self, alerter: Alerter, receiver: Receiver) -> None:
        """The run() task posts an alert queued after it started."""
        async with anyio.create_task_group() as tg:
            await tg.start(alerter.run)
            alerter.alert(AlertKind.POLLER_FAILING, "nue.subscription", "timed out")
            await eventually(lambda: bool(receiver.posts))
            tg.cancel_scope.cancel()
        assert "Poller failing" in receiver.texts()[0]

    def test_url_without_client_is_refused(self) -> None:
        """A webhook URL with no HTTP client to post with is a wiring mistake, caught at construction."""
        with pytest.raises(ValueError, match="AsyncClient"):
            Alerter(URL)


class TestDeduplication:
    async def test_same_kind_and_key_within_window_posts_once(self, alerter: Alerter, receiver: Receiver,
                                                              clock: FakeClock) -> None:
        """A repeat of (kind, key) inside the window is logged but not posted."""
        await alerter.send(AlertKind.DEAD_LETTER, "k1", "first")
        clock.advance(600)
        with capture_logs() as logs:
            assert not await alerter.send(AlertKind.DEAD_LETTER, "k1", "again")
        assert len(receiver.posts) == 1
        assert [entry["delivery"] for entry in logs if entry["event"] == "alert"] == ["deduplicated"]

    async def test_other_key_or_kind_is_not_a_duplicate(self, alerter: Alerter, receiver: Receiver) -> None:
        """Deduplication is per (kind, key): another key or another kind posts."""
        await alerter.send(AlertKind.DEAD_LETTER, "k1", "x")
        await alerter.send(AlertKind.DEAD_LETTER, "k2", "x")
        await alerter.send(AlertKind.CONFLICT, "k1", "x")
        assert len(receiver.posts) == 3

    async def test_posts_again_after_the_window(self, alerter: Alerter, receiver: Receiver,
                                                clock: FakeClock) -> None:
        """Once the window has passed, the same (kind, key) posts again."""
        await alerter.send(AlertKind.FLOW_PARKED, "quote_sync", "missing field")
        clock.advance(15 * 60)
        await alerter.send(AlertKind.FLOW_PARKED, "quote_sync", "still missing")
        assert len(receiver.posts) == 2

    async def test_failed_post_does_not_swallow_the_repeat(self, alerter: Alerter, receiver: Receiver) -> None:
        """After a post that failed, a repeat of the alert is tried again rather than deduplicated."""
        receiver.status = 500
        assert not await alerter.send(AlertKind.CONFLICT, "opp-1", "x")
        receiver.status = 200
        assert await alerter.send(AlertKind.CONFLICT, "opp-1", "x")


class TestRateLimit:
    async def test_excess_is_summarised_in_the_next_post(self, http: httpx.AsyncClient, receiver: Receiver,
                                                         clock: FakeClock) -> None:
        """Past max_per_minute alerts are held back and counted in the next post as "and N more"."""
        alerter = Alerter(URL, http, clock=clock, max_per_minute=2)
        for n in range(5):
            await alerter.send(AlertKind.DEAD_LETTER, f"k{n}", "x")
        await alerter.send(AlertKind.CONFLICT, "c1", "x")
        assert len(receiver.posts) == 2
        assert alerter.suppressed == 4
        clock.advance(60)
        await alerter.send(AlertKind.POLLER_FAILING, "nue.invoice", "x")
        assert len(receiver.posts) == 3
        assert "and 4 more alerts held back by the rate limit (conflict: 1, dead_letter: 3)" in receiver.texts()[2]
        assert alerter.suppressed == 0

    async def test_summary_alone_when_nothing_follows(self, http: httpx.AsyncClient, receiver: Receiver,
                                                      clock: FakeClock) -> None:
        """flush() posts the held-back count on its own once the minute frees up."""
        alerter = Alerter(URL, http, clock=clock, max_per_minute=1)
        await alerter.send(AlertKind.DEAD_LETTER, "k1", "x")
        await alerter.send(AlertKind.DEAD_LETTER, "k2", "x")
        await alerter.flush()
        assert len(receiver.posts) == 1  # the minute is still full
        clock.advance(61)
        await alerter.flush()
        assert len(receiver.posts) == 2
        assert "and 1 more alert held back" in receiver.texts()[1]

    async def test_full_queue_counts_as_held_back(self, http: httpx.AsyncClient, receiver: Receiver,
                                                  clock: FakeClock) -> None:
        """Alerts beyond the queue's size are not queued but counted for the summary."""
        alerter = Alerter(URL, http, clock=clock, queue_size=2)
        queued = [alerter.alert(AlertKind.DEAD_LETTER, f"k{n}", "x") for n in range(4)]
        assert queued == [True, True, False, False]
        assert alerter.suppressed == 2


class TestFailures:
    async def test_webhook_error_status_does_not_raise(self, alerter: Alerter, receiver: Receiver) -> None:
        """A 500 from the webhook is logged, without the URL, and send() returns False."""
        receiver.status = 500
        with capture_logs() as logs:
            assert await alerter.send(AlertKind.DEAD_LETTER, "k1", "x") is False
        failed = [entry for entry in logs if entry["event"] == "alert_post_failed"]
        assert failed and failed[0]["status"] == 500
        assert URL not in repr(logs)
        assert alerter.failed_posts == 1

    async def test_refused_connection_does_not_raise(self, alerter: Alerter, receiver: Receiver) -> None:
        """A transport error is logged as alert_post_failed and swallowed."""
        receiver.refuse = True
        with capture_logs() as logs:
            alerter.alert(AlertKind.CONFLICT, "k1", "x")
            await alerter.flush()
        assert [entry["error_type"] for entry in logs if entry["event"] == "alert_post_failed"] == ["ConnectError"]

    async def test_bad_kind_does_not_raise(self, alerter: Alerter, receiver: Receiver) -> None:
        """Even a caller's mistake (an unknown kind) is logged, not raised."""
        with capture_logs() as logs:
            assert alerter.alert("no_such_kind", "k", "x") is False  # type: ignore[arg-type]
        assert [entry["event"] for entry in logs] == ["alert_failed"]


class TestLogging:
    async def test_without_url_only_logs(self) -> None:
        """With no webhook URL nothing is posted, and the alert line is still written."""
        alerter = Alerter(None)
        assert not alerter.enabled
        with capture_logs() as logs:
            assert alerter.alert(AlertKind.DEAD_LETTER, "nue:invoice:INV-9", "REQUIRED_FIELD_MISSING",
                                 flow="billing_events") is False
            assert await alerter.send(AlertKind.DEAD_LETTER, "nue:invoice:INV-9", "again") is False
        assert logs[0] == {"event": "alert", "log_level": "warning", "kind": "dead_letter",
                           "key": "nue:invoice:INV-9", "text": "REQUIRED_FIELD_MISSING", "delivery": "log_only",
                           "flow": "billing_events"}
        assert len(logs) == 2

    async def test_every_alert_is_logged_even_when_posted(self, alerter: Alerter) -> None:
        """A posted alert logs one line with delivery "queued"; a flow_parked one at error level."""
        with capture_logs() as logs:
            await alerter.send(AlertKind.FLOW_PARKED, "quote_sync", "x")
        assert [(e["event"], e["log_level"], e["delivery"]) for e in logs] == [("alert", "error", "queued")]

    async def test_empty_string_url_means_log_only(self) -> None:
        """An empty URL (an unset env var) is the same as none."""
        assert not Alerter(SecretStr("")).enabled


class TestSecrets:
    async def test_known_secrets_and_bearer_tokens_are_scrubbed(self, http: httpx.AsyncClient,
                                                                receiver: Receiver, clock: FakeClock) -> None:
        """The posted text passes the redactor: registered secrets, Bearer tokens and SecretStr values go."""
        redactor = RedactSecrets(["sk-live-abcdef"])
        alerter = Alerter(URL, http, clock=clock, redactor=redactor)
        await alerter.send(AlertKind.DEAD_LETTER, "k1", "401 with key sk-live-abcdef and Bearer 00Dxx!tok",
                           api_key=SecretStr("zzz-secret"), note="plain")
        text = receiver.texts()[0]
        assert "sk-live-abcdef" not in text and "00Dxx!tok" not in text and "zzz-secret" not in text
        assert text.count(REDACTED) == 3
        assert "note: plain" in text


class TestBudget:
    async def test_budget_alert_past_threshold(self, alerter: Alerter, receiver: Receiver) -> None:
        """budget_alert fires only at or past the threshold share, naming used and total."""
        budget = DailyBudget(share=0.5)
        assert not alerter.budget_alert("salesforce", budget, threshold=0.8)  # nothing reported yet
        budget.observe(used=7000, total=10000)
        assert not alerter.budget_alert("salesforce", budget, threshold=0.8)
        budget.observe(used=8500, total=10000)
        assert alerter.budget_alert("salesforce", budget, threshold=0.8)
        await alerter.flush()
        assert "used 8500 of its 10000 daily API requests (85%" in receiver.texts()[0]
