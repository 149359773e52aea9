"""Shadow mode end to end (issue 29): the daemon runs against the brownfield sandbox for a scripted "week" of
changes writing nothing, its report is compared with what the same week then writes in live mode, and promotion
switches the running daemon to live.

Two sandboxes from the same seed (a tenant with years of won deals, most already ordered in Nue) each get the same
week: every day a rep wins a deal in Salesforce (a change event), Nue invoices a customer and a customer's details
change in Nue (webhooks). One daemon runs it in shadow mode, the other live; both start with the startup poll that
finds the tenant's history. The Nue notifications about records the live daemon itself made are not delivered
(webhook targets are off while the daemons work): they are consequences of its own writes, which a run that
writes nothing cannot have. What is compared is what the week's changes and the history cause.

Real parts: both simulators over loopback sockets, the daemon in this test's event loop (`run_daemon`), its
listener, pollers and Change Data Capture subscription.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import pytest

from revdaemon import service
from revdaemon.config import load_settings
from revdaemon.demo import demo_settings
from revdaemon.engine.supervisor import Daemon, run_daemon
from revdaemon.sandbox.runner import Sandbox, create_sandbox
from tests.integration.daemon_waits import settled as settled_daemon

pytestmark = pytest.mark.anyio
ROOT = Path(__file__).resolve().parents[2]
SEED = 11
BROWNFIELD = 24
DAYS = 3
WAIT_SECONDS = 30.0
NUE_OBJECTS = {"NueCreateCustomer": "Customer", "NueCreateOrder": "Order", "NueActivateOrder": "Order"}


async def settled(box: Sandbox, daemon: Daemon) -> None:
    await settled_daemon(box, daemon, seconds=WAIT_SECONDS, grace=0.5)  # a change event or a webhook on its way


def writes(box: Sandbox) -> dict[str, list[Any]]:
    """Requests that could change either system: Salesforce REST writes (a login is not one) and Nue requests
    other than GET and the GraphQL reads."""
    return {"salesforce": [r for r in box.salesforce.log.writes() if r.path.startswith("/services/data/")],
            "nue": [r for r in box.nue.log.writes() if r.path != "/async/graphql"]}


def open_deals(box: Sandbox) -> list[str]:
    """The seed's open opportunities: a rep wins one each day, and one more after promotion."""
    return [o.id for o in box.salesforce.seed_data.opportunities if not o.stage.startswith("Closed")]


async def week(box: Sandbox, daemon: Daemon) -> None:
    """The scripted week, the same in both runs."""
    listener = [f"http://127.0.0.1:{daemon.listener_port}/webhooks/nue"]
    await settled(box, daemon)  # the startup poll's history
    customers = sorted(box.nue.store.customers)
    opportunities = open_deals(box)
    scenario = box.nue.scenario
    for day in range(DAYS):
        box.nue.webhooks.set_targets(listener)
        scenario.post_invoice(customers[day], activate=True)
        scenario.update_customer(customers[-1 - day], phone=f"+1 415 555 01{day:02d}")
        assert await anyio.to_thread.run_sync(lambda: box.nue.webhooks.wait_idle(WAIT_SECONDS))
        box.nue.webhooks.set_targets([])  # what the daemon's own writes make Nue announce is not the week's
        box.salesforce.close_won(opportunities[day])
        await settled(box, daemon)


async def run(box: Sandbox, tmp_path: Path, mode: str, after: Callable[[Daemon], Awaitable[None]]) -> None:
    environ = {"REVDAEMON_STATE_DIR": str(tmp_path / mode), "REVDAEMON_MODE": mode,
               "REVDAEMON_FLOWS__CLOSED_WON__WON_SINCE": box.info()["brownfield_won_since"]}
    settings = demo_settings(load_settings(ROOT / "config.yaml", environ=environ), box)
    failure: list[BaseException] = []

    async def on_ready(daemon: Daemon) -> None:
        try:
            await week(box, daemon)
            await after(daemon)
        except BaseException as exc:  # raised after the daemon's clean stop
            failure.append(exc)

    with anyio.fail_after(180):
        await run_daemon(settings, on_ready=on_ready, stop_after=0.0)
    if failure:
        raise failure[0]


def live_counts(entries: list[Any]) -> Counter[tuple[str, str, str]]:
    """(flow, system, object) of every write the live run made, from its audit log."""
    counted: Counter[tuple[str, str, str]] = Counter()
    for entry in entries:
        if entry.system == "operator" or entry.outcome != "ok":
            continue
        flow = str(entry.idem_key).split(":", 1)[0]
        sobject = NUE_OBJECTS.get(entry.operation) or str(entry.detail["request"]["target"]).split(":")[1]
        counted[(flow, entry.system, sobject)] += 1
    return counted


def shadow_counts(report: dict[str, Any]) -> Counter[tuple[str, str, str]]:
    return Counter({(row["flow"], row["system"], row["object"]): sum(row[a] for a in ("create", "update",
                                                                                      "activate", "delete"))
                    for row in report["counts"]})


async def test_a_shadow_week_writes_nothing_and_its_report_matches_the_live_week(tmp_path: Path) -> None:
    seen: dict[str, Any] = {}

    shadow_box = create_sandbox(key_dir=tmp_path / "keys-a", seed=SEED, brownfield=BROWNFIELD).start_threads()
    try:
        async def after_shadow(daemon: Daemon) -> None:
            seen["shadow_writes"] = writes(shadow_box)
            seen["report"] = await service.shadow_report(daemon.store)
            # Promoted while it runs: its next claim writes. A deal won now is ordered for real.
            await service.promote_shadow(daemon.store, actor="ana")
            opportunity = open_deals(shadow_box)[DAYS]
            shadow_box.salesforce.close_won(opportunity)
            await settled(shadow_box, daemon)
            seen["after_promotion"] = shadow_box.salesforce.record("Opportunity", opportunity)
            seen["report_after"] = await service.shadow_report(daemon.store)

        await run(shadow_box, tmp_path, "shadow", after_shadow)
    finally:
        shadow_box.close()

    live_box = create_sandbox(key_dir=tmp_path / "keys-b", seed=SEED, brownfield=BROWNFIELD).start_threads()
    try:
        async def after_live(daemon: Daemon) -> None:
            seen["live"] = await daemon.store.list_writes(limit=10_000)

        await run(live_box, tmp_path, "live", after_live)
    finally:
        live_box.close()

    assert seen["shadow_writes"] == {"salesforce": [], "nue": []}, "shadow mode sent a write"
    report = seen["report"]
    planned, written = shadow_counts(report), live_counts(seen["live"])
    assert written, "the live week wrote nothing: the comparison would prove nothing"
    assert planned == written, json.dumps({"shadow": sorted(planned.items()), "live": sorted(written.items())},
                                          default=str)
    flows = {flow for flow, _system, _object in planned}
    assert {"closed_won_to_order", "billing_events"} <= flows, flows  # the week's changes, not only history
    assert report["promoted"] is None and report["left_alone"], report["left_alone"]  # history already served
    # After promotion the same daemon writes: the deal won then is ordered and written back, and the report keeps
    # what shadow mode planned (nothing more is recorded as shadow).
    assert seen["after_promotion"].get("Nue_Order_Id__c"), seen["after_promotion"]
    assert seen["report_after"]["promoted"]["actor"] == "ana"
    assert seen["report_after"]["counts"] == report["counts"]
