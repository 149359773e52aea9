"""Change Data Capture end to end over real sockets: the simulator's Pub/Sub API, revdaemon's subscription, the
inbox and the workers. No poll runs unless a test says so (the request log shows it)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest

from revdaemon.connectors.pubsub import PubSubClient
from revdaemon.engine.change_stream import ChangeStream, cursor_name
from revdaemon.engine.supervisor import Daemon, run_daemon
from revdaemon.flows.closed_won_to_order import ClosedWonToOrderFlow
from revdaemon.flows.sources import SALESFORCE_CDC
from revdaemon.ops.health import Health, StreamState
from revdaemon.sandbox.runner import Sandbox
from revdaemon.store.states import EventStatus
from tests.integration.engine_fixtures import daemon_settings, engine

pytestmark = pytest.mark.anyio

TOPIC = "/data/OpportunityChangeEvent"
CLOSED_WON_POLL = "IsWon = true AND SystemModstamp"


def polls(box: Sandbox) -> int:
    """Closed Won polls the Salesforce simulator answered (SalesforceClosedWonPoller's SOQL)."""
    return sum(1 for r in box.salesforce.log.entries() if r.path.endswith("/query") and "IsWon" in r.query)


def ordered(box: Sandbox, opportunity_id: str) -> list[dict[str, Any]]:
    """Nue orders made for the opportunity (revdaemon marks its own with the opportunity id)."""
    return [o for o in box.nue.store.orders.values() if opportunity_id in str(o.get("description") or "")]


def written_back(box: Sandbox, opportunity_id: str) -> bool:
    return bool(box.salesforce.record("Opportunity", opportunity_id).get("Nue_Order_Id__c"))


async def wait_for(condition: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    with anyio.fail_after(timeout):
        while not condition():
            await anyio.sleep(0.05)


async def streaming(daemon: Daemon) -> None:
    await wait_for(lambda: daemon.health.stream(TOPIC).state is StreamState.STREAMING, "the subscription")


def cdc_settings(box: Sandbox, tmp_path: Path, **environ: str) -> Any:
    return daemon_settings(box, tmp_path, REVDAEMON_CHANGE_DATA_CAPTURE__ENABLED="true", **environ)


async def test_a_deal_won_becomes_an_activated_order_with_no_poll(sandbox: Sandbox, tmp_path: Path) -> None:
    """Closed Won in Salesforce -> change event -> order made, activated and written back; no poll ran."""
    opportunity = sandbox.salesforce.seed_data.opportunities[0]
    seen: dict[str, Any] = {}

    async def on_ready(daemon: Daemon) -> None:
        await streaming(daemon)
        sandbox.salesforce.close_won(opportunity.id)
        await wait_for(lambda: written_back(sandbox, opportunity.id), "the write-back")
        # the write-back's own change event arrives too (and wakes nothing)
        await wait_for(lambda: daemon.health.stream(TOPIC).events >= 2, "the write-back's change event")
        seen["health"] = daemon.health.stream(TOPIC).as_dict()
        seen["events"] = await daemon.store.list_events(limit=50)
        seen["cursor"] = await daemon.store.get_cursor(cursor_name(TOPIC))

    await run_daemon(cdc_settings(sandbox, tmp_path), on_ready=on_ready, stop_after=0.1, polling=False)
    [order] = ordered(sandbox, opportunity.id)
    assert order["status"] == "Activated"
    assert sandbox.salesforce.record("Opportunity", opportunity.id)["Nue_Order_Id__c"] == order["id"]
    assert polls(sandbox) == 0
    hints = [e for e in seen["events"] if e.source == SALESFORCE_CDC]
    # One hint: the stage change. The write-back's own change event (the order id) woke nothing.
    assert [e.type for e in hints] == ["opportunity.closed_won"]
    assert hints[0].payload["data"]["Id"] == opportunity.id
    assert seen["health"]["events"] >= 2 and seen["health"]["hints"] == 1
    assert seen["cursor"] is not None and seen["cursor"].value == seen["health"]["replay_id"]


async def test_a_stream_reset_mid_burst_loses_and_duplicates_nothing(sandbox: Sandbox, tmp_path: Path) -> None:
    """The server cuts the stream after 3 events of a burst of 8 deals: the subscription resumes from its stored
    replay id; every deal gets one order."""
    deals = [o.id for o in sandbox.salesforce.seed_data.opportunities[:8]]

    async def on_ready(daemon: Daemon) -> None:
        await streaming(daemon)
        sandbox.salesforce.reset_pubsub_streams(after_events=3)
        for deal in deals:
            sandbox.salesforce.close_won(deal)
        await wait_for(lambda: all(written_back(sandbox, d) for d in deals), "every write-back", timeout=40)

    await run_daemon(cdc_settings(sandbox, tmp_path), on_ready=on_ready, stop_after=0.1, polling=False)
    assert {d: len(ordered(sandbox, d)) for d in deals} == dict.fromkeys(deals, 1)
    subscribes = [r for r in sandbox.salesforce.pubsub_log.entries() if r.method == "Subscribe"]
    assert len(subscribes) >= 2 and subscribes[0].status == "UNAVAILABLE"
    assert polls(sandbox) == 0


async def test_a_refused_replay_id_falls_back_to_latest_and_the_poll_reads_the_gap(sandbox: Sandbox,
                                                                                    tmp_path: Path) -> None:
    """A deal won while the daemon was down for longer than the retention: the stored replay id is refused, the
    stream starts from the newest event, and the poll (run at once, from its own cursor) finds the deal."""
    first, second = (o.id for o in sandbox.salesforce.seed_data.opportunities[:2])
    settings = cdc_settings(sandbox, tmp_path)

    async def first_run(daemon: Daemon) -> None:
        await streaming(daemon)
        await daemon.pollers[0].run_once()  # the poll's cursor, as a daemon that ran for a while has one
        sandbox.salesforce.close_won(first)
        await wait_for(lambda: written_back(sandbox, first), "the first deal")

    await run_daemon(settings, on_ready=first_run, stop_after=0.1, polling=False)
    sandbox.salesforce.close_won(second)  # while nothing runs
    sandbox.salesforce.expire_replay_ids()  # ... for longer than the event bus keeps events
    seen: dict[str, Any] = {}

    async def second_run(daemon: Daemon) -> None:
        await wait_for(lambda: written_back(sandbox, second), "the second deal")
        seen["health"] = daemon.health.stream(TOPIC).as_dict()

    await run_daemon(settings, on_ready=second_run, stop_after=0.1, polling=False)
    assert len(ordered(sandbox, first)) == 1 and len(ordered(sandbox, second)) == 1
    assert seen["health"]["fell_back_at"] is not None
    assert "replayid" in seen["health"]["last_error"]


async def test_gap_and_overflow_events_are_re_read(sandbox: Sandbox, tmp_path: Path) -> None:
    """A gap event names records without fields: each is re-read. An overflow names none: the object is polled."""
    gap_deal, overflow_deal = (o.id for o in sandbox.salesforce.seed_data.opportunities[:2])
    seen: dict[str, int] = {}

    async def on_ready(daemon: Daemon) -> None:
        await streaming(daemon)
        await daemon.pollers[0].run_once()
        sandbox.salesforce.select_for_cdc("Opportunity", False)  # its changes publish no event meanwhile
        sandbox.salesforce.close_won(gap_deal)
        sandbox.salesforce.close_won(overflow_deal)
        sandbox.salesforce.select_for_cdc("Opportunity", True)
        seen["polls_before"] = polls(sandbox)
        sandbox.salesforce.publish_gap_event("Opportunity", [gap_deal])
        await wait_for(lambda: written_back(sandbox, gap_deal), "the gap's deal")
        assert not written_back(sandbox, overflow_deal)
        sandbox.salesforce.publish_gap_overflow("Opportunity")
        await wait_for(lambda: written_back(sandbox, overflow_deal), "the overflow's deal")
        seen["polls_after"] = polls(sandbox)

    await run_daemon(cdc_settings(sandbox, tmp_path), on_ready=on_ready, stop_after=0.1, polling=False)
    assert seen["polls_after"] == seen["polls_before"] + 1
    assert len(ordered(sandbox, gap_deal)) == 1 and len(ordered(sandbox, overflow_deal)) == 1


async def test_a_full_inbox_makes_the_server_hold_the_events(sandbox: Sandbox, tmp_path: Path) -> None:
    """With no worker draining the inbox, the subscription asks for no more than it has room for: the rest stay
    with Salesforce, and come once the inbox has room again."""
    deals = [o.id for o in sandbox.salesforce.seed_data.opportunities[:6]]
    async with engine(sandbox, tmp_path, flows=[ClosedWonToOrderFlow()]) as e:
        client = PubSubClient(sandbox.info()["salesforce"]["pubsub_url"], e.salesforce.auth, tls=False)
        health = Health()

        async def no_poll(entity: str) -> None:
            raise AssertionError(f"nothing here asks for a poll of {entity}")

        stream = ChangeStream(client, e.store, TOPIC, health=health, catch_up=no_poll, batch_size=2, max_waiting=2)
        async with anyio.create_task_group() as tg:
            tg.start_soon(stream.run)
            await wait_for(lambda: health.stream(TOPIC).state is StreamState.STREAMING, "the subscription")
            for deal in deals:
                sandbox.salesforce.close_won(deal)
            await wait_for(lambda: health.stream(TOPIC).hints >= 3, "the first events")
            await anyio.sleep(1.5)  # time enough to ask for more, were it asking
            held = health.stream(TOPIC).hints
            waiting = (await e.store.queue_depths())[EventStatus.RECEIVED]
            await e.worker.run_once()  # the inbox drains ...
            await wait_for(lambda: health.stream(TOPIC).hints == len(deals), "the rest", timeout=10)
            tg.cancel_scope.cancel()
        await client.close()
        assert 3 <= held <= 4 and waiting == held  # room for 2 waiting, then one more batch of 2 asked for
        await e.worker.run_once()
    assert {d: len(ordered(sandbox, d)) for d in deals} == dict.fromkeys(deals, 1)


async def test_an_expired_session_is_renewed_and_the_stream_resubscribes(sandbox: Sandbox, tmp_path: Path) -> None:
    """Salesforce ends the session: the next subscription is refused as unauthenticated, revdaemon logs in again
    once and subscribes; a deal won afterwards is ordered."""
    deal = sandbox.salesforce.seed_data.opportunities[0].id

    async def on_ready(daemon: Daemon) -> None:
        await streaming(daemon)
        sandbox.salesforce.expire_sessions()
        sandbox.salesforce.reset_pubsub_streams()
        await wait_for(lambda: daemon.health.stream(TOPIC).state is StreamState.DOWN, "the stream's end")
        await streaming(daemon)
        sandbox.salesforce.close_won(deal)
        await wait_for(lambda: written_back(sandbox, deal), "the deal")

    await run_daemon(cdc_settings(sandbox, tmp_path), on_ready=on_ready, stop_after=0.1, polling=False)
    statuses = [r.status for r in sandbox.salesforce.pubsub_log.entries() if r.method == "Subscribe"]
    assert "UNAUTHENTICATED" in statuses and len(ordered(sandbox, deal)) == 1
