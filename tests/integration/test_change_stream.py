"""Change Data Capture end to end over real sockets: the simulator's Pub/Sub API, revdaemon's subscription, the
inbox and the workers. No poll runs unless a test says so (the request log shows it)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote_plus

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
    return sum(1 for r in box.salesforce.log.entries() if CLOSED_WON_POLL in unquote_plus(r.query))


def ordered(box: Sandbox, opportunity_id: str) -> list[dict[str, Any]]:
    """Nue orders made for the opportunity (revdaemon marks its own with the opportunity id)."""
    return [o for o in box.nue.store.orders.values() if opportunity_id in str(o.get("description") or "")]


def win(box: Sandbox, opportunity_id: str) -> None:
    """A rep marks the deal Closed Won today (after the go-live cut-off, whatever its seeded close date)."""
    box.salesforce.close_won(opportunity_id, close_date=datetime.now(UTC).date())


def open_deals(box: Sandbox, count: int) -> list[str]:
    """`count` new open opportunities with two line items each, on the seeded accounts and price book."""
    seed = box.salesforce.seed_data
    deals = []
    for n in range(count):
        deal = box.salesforce.create("Opportunity", {
            "Name": f"Burst deal {n}", "AccountId": seed.accounts[n % len(seed.accounts)].id,
            "StageName": "Negotiation/Review", "CloseDate": datetime.now(UTC).date().isoformat(),
            "Pricebook2Id": seed.pricebook_id})
        for product in seed.products[:2]:
            box.salesforce.create("OpportunityLineItem", {"OpportunityId": deal, "Quantity": 2,
                                                          "PricebookEntryId": product.pricebook_entry_id})
        deals.append(deal)
    return deals


def written_back(box: Sandbox, opportunity_id: str) -> bool:
    return bool(box.salesforce.record("Opportunity", opportunity_id).get("Nue_Order_Id__c"))


async def wait_for(condition: Callable[[], bool], what: str, seconds: float = 20.0) -> None:
    """Look at the simulators (another thread's state, nothing to await) until `condition` holds."""
    deadline = anyio.current_time() + seconds
    while not condition():
        if anyio.current_time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await anyio.sleep(0.05)


async def streaming(daemon: Daemon, box: Sandbox) -> None:
    """The daemon has subscribed and the server has placed its stream: a LATEST subscription misses what is
    published before that moment (as Salesforce's would), and the poll is what catches it; not here."""
    await wait_for(lambda: daemon.health.stream(TOPIC).state is StreamState.STREAMING
                   and box.salesforce.cdc.streams.count > 0, "the subscription")


def cdc_settings(box: Sandbox, tmp_path: Path, **environ: str) -> Any:
    return daemon_settings(box, tmp_path, REVDAEMON_CHANGE_DATA_CAPTURE__ENABLED="true", **environ)


async def test_a_deal_won_becomes_an_activated_order_with_no_poll(sandbox: Sandbox, tmp_path: Path) -> None:
    """Closed Won in Salesforce -> change event -> order made, activated and written back; no poll ran."""
    opportunity = sandbox.salesforce.seed_data.opportunities[0]
    seen: dict[str, Any] = {}

    async def on_ready(daemon: Daemon) -> None:
        await streaming(daemon, sandbox)
        win(sandbox, opportunity.id)
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
    # the replay id is stored with the events (the cursor may have moved on with later ones meanwhile)
    assert seen["cursor"] is not None and int(seen["cursor"].value, 16) >= int(seen["health"]["replay_id"], 16) > 0


async def test_revdaemons_own_create_wakes_nothing_and_a_reps_does(sandbox: Sandbox, tmp_path: Path) -> None:
    """flow 5's amendment opportunity, created Closed Won by revdaemon's integration user with its key, comes back
    as a change event and is no hint (flow 1 would read it whole to find it ordered already); the same create by a
    rep is a hint."""
    seed = sandbox.salesforce.seed_data
    fields = {"AccountId": seed.accounts[0].id, "StageName": "Closed Won",
              "CloseDate": datetime.now(UTC).date().isoformat()}
    seen: dict[str, Any] = {}

    async def on_ready(daemon: Daemon) -> None:
        await streaming(daemon, sandbox)
        await wait_for(lambda: daemon.salesforce.integration_user_id is not None, "the integration user")
        seen["own"] = sandbox.salesforce.create("Opportunity", {**fields, "Name": "Amendment O-1",
                                                                "Nue_Amendment_Key__c": "o-own"},
                                                user_id=sandbox.salesforce.integration_user_id)
        seen["rep"] = sandbox.salesforce.create("Opportunity", {**fields, "Name": "Rep's deal",
                                                                "Nue_Amendment_Key__c": "o-rep"})
        await wait_for(lambda: daemon.health.stream(TOPIC).events >= 2, "both change events")
        seen["events"] = await daemon.store.list_events(limit=50)

    await run_daemon(cdc_settings(sandbox, tmp_path), on_ready=on_ready, stop_after=0.1, polling=False)
    hinted = [e.payload["data"]["Id"] for e in seen["events"] if e.source == SALESFORCE_CDC]
    assert hinted == [seen["rep"]]


async def test_a_deal_committed_minutes_after_its_timestamp_arrives_at_its_commit(sandbox: Sandbox,
                                                                                  tmp_path: Path) -> None:
    """A win whose transaction began 5 minutes before it committed: its SystemModstamp lies behind a poll cursor
    that has already passed it (the poll finds it only through its overlap), but its change event comes at the
    commit, and the deal is ordered at once."""
    [deal] = open_deals(sandbox, 1)

    async def on_ready(daemon: Daemon) -> None:
        await streaming(daemon, sandbox)
        await daemon.pollers[0].run_once()  # the poll's cursor moves past the moment the win will be stamped
        sandbox.salesforce.commit_late("Opportunity", deal, {"StageName": "Closed Won",
                                                             "CloseDate": datetime.now(UTC).date().isoformat()},
                                       minutes_ago=5)
        await wait_for(lambda: written_back(sandbox, deal), "the late-committed deal", seconds=10)

    await run_daemon(cdc_settings(sandbox, tmp_path), on_ready=on_ready, stop_after=0.1, polling=False)
    assert len(ordered(sandbox, deal)) == 1
    assert polls(sandbox) == 1  # the one run above, before the win: the change event brought it


async def test_a_stream_reset_mid_burst_loses_and_duplicates_nothing(sandbox: Sandbox, tmp_path: Path) -> None:
    """The server cuts the stream after 3 events of a burst of 5 deals: the subscription resumes from its stored
    replay id; every deal gets one order."""
    deals = open_deals(sandbox, 5)

    async def on_ready(daemon: Daemon) -> None:
        await streaming(daemon, sandbox)
        sandbox.salesforce.reset_pubsub_streams(after_events=3)
        for deal in deals:
            win(sandbox, deal)
        await wait_for(lambda: all(written_back(sandbox, d) for d in deals), "every write-back", seconds=40)

    await run_daemon(cdc_settings(sandbox, tmp_path), on_ready=on_ready, stop_after=0.1, polling=False)
    assert {d: len(ordered(sandbox, d)) for d in deals} == dict.fromkeys(deals, 1)
    subscribes = [r for r in sandbox.salesforce.pubsub_log.entries() if r.method == "Subscribe"]
    assert len(subscribes) >= 2 and subscribes[0].status == "UNAVAILABLE"
    assert polls(sandbox) == 0


async def test_a_refused_replay_id_falls_back_to_latest_and_the_poll_reads_the_gap(sandbox: Sandbox,
                                                                                    tmp_path: Path) -> None:
    """A deal won while the daemon was down for longer than the retention: the stored replay id is refused, the
    stream starts from the newest event, and the poll (run at once, from its own cursor) finds the deal."""
    first, second = open_deals(sandbox, 2)
    settings = cdc_settings(sandbox, tmp_path)

    async def first_run(daemon: Daemon) -> None:
        await streaming(daemon, sandbox)
        await daemon.pollers[0].run_once()  # the poll's cursor, as a daemon that ran for a while has one
        win(sandbox, first)
        await wait_for(lambda: written_back(sandbox, first), "the first deal")

    await run_daemon(settings, on_ready=first_run, stop_after=0.1, polling=False)
    win(sandbox, second)  # while nothing runs
    sandbox.salesforce.expire_replay_ids()  # ... for longer than the event bus keeps events
    seen: dict[str, Any] = {}

    async def second_run(daemon: Daemon) -> None:
        await wait_for(lambda: written_back(sandbox, second), "the second deal")
        seen["health"] = daemon.health.stream(TOPIC).as_dict()

    await run_daemon(settings, on_ready=second_run, stop_after=0.1, polling=False)
    assert len(ordered(sandbox, first)) == 1 and len(ordered(sandbox, second)) == 1
    assert seen["health"]["fell_back_at"] is not None
    assert seen["health"]["last_error"].startswith("ReplayIdRejected: INVALID_ARGUMENT")


async def test_gap_and_overflow_events_are_re_read(sandbox: Sandbox, tmp_path: Path) -> None:
    """A gap event names records without fields: each is re-read. An overflow names none: the object is polled."""
    gap_deal, overflow_deal = open_deals(sandbox, 2)
    seen: dict[str, int] = {}

    async def on_ready(daemon: Daemon) -> None:
        await streaming(daemon, sandbox)
        await daemon.pollers[0].run_once()
        sandbox.salesforce.select_for_cdc("Opportunity", False)  # its changes publish no event meanwhile
        win(sandbox, gap_deal)
        win(sandbox, overflow_deal)
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
    deals = open_deals(sandbox, 6)
    async with engine(sandbox, tmp_path, flows=[ClosedWonToOrderFlow()]) as e:
        client = PubSubClient(sandbox.info()["salesforce"]["pubsub_url"], e.salesforce.auth, tls=False)
        health = Health()

        async def no_poll(entity: str) -> None:
            raise AssertionError(f"nothing here asks for a poll of {entity}")

        stream = ChangeStream(client, e.store, TOPIC, health=health, catch_up=no_poll, batch_size=2, max_waiting=2)
        async with anyio.create_task_group() as tg:
            tg.start_soon(stream.run)
            await wait_for(lambda: health.stream(TOPIC).state is StreamState.STREAMING
                           and sandbox.salesforce.cdc.streams.count > 0, "the subscription")
            for deal in deals:
                win(sandbox, deal)
            await wait_for(lambda: health.stream(TOPIC).hints >= 3, "the first events")
            await anyio.sleep(1.5)  # time enough to ask for more, were it asking
            held = health.stream(TOPIC).hints
            waiting = (await e.store.queue_depths())[EventStatus.RECEIVED]
            await e.worker.run_once()  # the inbox drains ...
            await wait_for(lambda: health.stream(TOPIC).hints == len(deals), "the rest", seconds=10)
            tg.cancel_scope.cancel()
        await client.close()
        assert 3 <= held <= 4 and waiting == held  # room for 2 waiting, then one more batch of 2 asked for
        await e.worker.run_once()
    assert {d: len(ordered(sandbox, d)) for d in deals} == dict.fromkeys(deals, 1)


async def test_an_expired_session_is_renewed_and_the_stream_resubscribes(sandbox: Sandbox, tmp_path: Path) -> None:
    """Salesforce ends the session: the next subscription is refused as unauthenticated, revdaemon logs in again
    once and subscribes; a deal won afterwards is ordered."""
    [deal] = open_deals(sandbox, 1)

    async def on_ready(daemon: Daemon) -> None:
        await streaming(daemon, sandbox)
        sandbox.salesforce.expire_sessions()
        sandbox.salesforce.reset_pubsub_streams()
        await wait_for(lambda: daemon.health.stream(TOPIC).state is StreamState.DOWN, "the stream's end")
        await streaming(daemon, sandbox)
        win(sandbox, deal)
        await wait_for(lambda: written_back(sandbox, deal), "the deal")

    await run_daemon(cdc_settings(sandbox, tmp_path), on_ready=on_ready, stop_after=0.1, polling=False)
    statuses = [r.status for r in sandbox.salesforce.pubsub_log.entries() if r.method == "Subscribe"]
    assert "UNAUTHENTICATED" in statuses and len(ordered(sandbox, deal)) == 1
