"""The console served by the running daemon on its admin port, over real sockets against the sandbox:
a hand edit becomes a conflict, an admin takes Nue's side in the console, and the account is corrected."""

from __future__ import annotations

import json
import re
from decimal import Decimal
from pathlib import Path

import anyio
import httpx
import pytest

from revdaemon.engine.supervisor import Daemon, run_daemon
from revdaemon.sandbox.runner import create_sandbox
from tests.integration.engine_fixtures import daemon_settings

pytestmark = pytest.mark.anyio
TOKEN = "ana-console-token-0123456789abcdef"


async def wait_for(condition, seconds: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    for _ in range(int(seconds / 0.05)):
        if await condition():
            return
        await anyio.sleep(0.05)
    raise AssertionError(f"not true within {seconds} s")


async def test_resolving_a_conflict_in_the_console_corrects_salesforce(tmp_path: Path) -> None:
    box = create_sandbox(key_dir=tmp_path / "keys", seed=8).start_threads()
    seen: dict[str, object] = {}
    try:
        settings = daemon_settings(box, tmp_path, REVDAEMON_CONSOLE__ENABLED="true", REVDAEMON_CONSOLE__PORT="0",
                                   REVDAEMON_CONSOLE__ADMINS=json.dumps({"ana": TOKEN}))

        async def on_ready(daemon: Daemon) -> None:
            assert daemon.console_port and daemon.console_port != daemon.listener_port
            box.nue.webhooks.set_targets([f"http://127.0.0.1:{daemon.listener_port}/webhooks/nue"])
            customer = box.nue.scenario.create_customer(0)
            box.nue.scenario.create_and_activate_order(customer["id"], opportunity=0)
            account_id = customer["externalId"]

            async def account_mrr() -> Decimal | None:
                value = box.salesforce.record("Account", account_id).get("MRR__c")
                return None if value is None else Decimal(str(value))

            nue_mrr = Decimal(str(box.nue.store.customers[customer["id"]]["todayCMRR"]))
            await wait_for(lambda: _eq(account_mrr, nue_mrr))
            box.salesforce.update("Account", account_id, {"MRR__c": 1.0})  # a rep types over it
            box.nue.scenario.create_and_activate_order(customer["id"], opportunity=1)  # then Nue changes
            await wait_for(lambda: _has_conflict(daemon))

            base = f"http://127.0.0.1:{daemon.console_port}"
            async with httpx.AsyncClient(base_url=base) as client:
                form = await client.get("/login")
                csrf = re.search(r'name="csrf" value="([^"]+)"', form.text)[1]  # type: ignore[index]
                login = await client.post("/login", data={"token": TOKEN, "csrf": csrf, "next": "/"})
                assert login.status_code == 303
                [conflict] = await daemon.store.list_conflicts()
                page = await client.get(f"/conflicts/{conflict.id}")
                assert "MRR__c" in page.text and "differs" in page.text
                csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)[1]  # type: ignore[index]
                done = await client.post(f"/conflicts/{conflict.id}/resolve",
                                         data={"take": "nue", "comment": "Nue is right", "csrf": csrf})
                assert done.status_code == 303
                new_mrr = Decimal(str(box.nue.store.customers[customer["id"]]["todayCMRR"]))
                await wait_for(lambda: _eq(account_mrr, new_mrr))
                seen["timeline"] = (await client.get("/timeline", params={"q": account_id})).text
            seen["mrr"] = (nue_mrr, new_mrr, await account_mrr())

        await run_daemon(settings, on_ready=on_ready, stop_after=0.2, polling=False)
    finally:
        box.close()
    before, after, final = seen["mrr"]  # type: ignore[misc]
    assert after != before and final == after
    timeline = str(seen["timeline"])
    assert "resolve conflict: take nue" in timeline and "by ana" in timeline


async def _eq(read, wanted: Decimal) -> bool:  # type: ignore[no-untyped-def]
    return await read() == wanted


async def _has_conflict(daemon: Daemon) -> bool:
    return bool(await daemon.store.list_conflicts())


async def test_run_now_is_refused_over_budget_then_writes_a_fresh_report(tmp_path: Path) -> None:
    """In the running daemon, "run now" is refused while the Salesforce budget holds back bulk work; with room it
    runs in the daemon's scheduler, and the new report's drift (a hand edit of an account's MRR) shows on the
    reconciliation page and the overview."""
    box = create_sandbox(key_dir=tmp_path / "keys", seed=8).start_threads()
    seen: dict[str, str] = {}
    try:
        settings = daemon_settings(box, tmp_path, REVDAEMON_CONSOLE__ENABLED="true", REVDAEMON_CONSOLE__PORT="0",
                                   REVDAEMON_CONSOLE__ADMINS=json.dumps({"ana": TOKEN}))
        report_path = settings.state_dir / settings.flows.reconciliation.report_file

        async def on_ready(daemon: Daemon) -> None:
            box.nue.webhooks.set_targets([f"http://127.0.0.1:{daemon.listener_port}/webhooks/nue"])
            customer = box.nue.scenario.create_customer(0)
            box.nue.scenario.create_and_activate_order(customer["id"], opportunity=0)
            account_id = customer["externalId"]
            nue_mrr = Decimal(str(box.nue.store.customers[customer["id"]]["todayCMRR"]))

            async def account_mrr() -> Decimal | None:
                value = box.salesforce.record("Account", account_id).get("MRR__c")
                return None if value is None else Decimal(str(value))

            await wait_for(lambda: _eq(account_mrr, nue_mrr))
            box.salesforce.update("Account", account_id, {"MRR__c": str(nue_mrr - 100)})  # a rep types over it
            seen["customer"] = customer["id"]

            base = f"http://127.0.0.1:{daemon.console_port}"
            async with httpx.AsyncClient(base_url=base) as client:
                form = await client.get("/login")
                csrf = re.search(r'name="csrf" value="([^"]+)"', form.text)[1]  # type: ignore[index]
                await client.post("/login", data={"token": TOKEN, "csrf": csrf, "next": "/"})
                page = await client.get("/reconciliation")
                csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)[1]  # type: ignore[index]

                box.salesforce.set_api_usage(6_000)  # share 0.5 of 15,000: bulk work waits
                await daemon.salesforce.limits()
                refused = await client.post("/reconciliation/run", data={"csrf": csrf})
                assert refused.status_code == 303
                seen["refused"] = (await client.get("/reconciliation")).text
                assert not await anyio.Path(report_path).exists()

                box.salesforce.set_api_usage(100)
                await daemon.salesforce.limits()
                started = await client.post("/reconciliation/run", data={"csrf": csrf})
                assert started.status_code == 303
                seen["started"] = (await client.get("/reconciliation")).text
                await wait_for(lambda: _exists(report_path))
                await wait_for(lambda: _not_running(client))
                seen["page"] = (await client.get("/reconciliation")).text
                seen["overview"] = (await client.get("/")).text
            seen["actions"] = " ".join(f"{w.operation} by {w.detail.get('actor')}"
                                       for w in await daemon.store.list_writes(limit=50) if w.system == "operator")

        await run_daemon(settings, on_ready=on_ready, stop_after=0.2)
    finally:
        box.close()
    assert "Reconciliation not started: the Salesforce budget holds back bulk work" in seen["refused"]
    assert "Reconciliation started (about 1 Salesforce call(s))" in seen["started"]
    assert seen["customer"] in seen["page"] and "salesforce_differs" in seen["page"]
    assert "Drift left: 1 customer(s)" in seen["page"] and "-100.00 (Salesforce minus Nue)" in seen["page"]
    overview = seen["overview"]
    assert '<a href="/reconciliation">1 customer(s) drifted</a>' in overview
    assert re.search(r"<td>\w{3}</td><td class=\"num\">-100.00</td>", overview)
    assert seen["actions"].count("run reconciliation now by ana") == 1


async def _exists(path: Path) -> bool:
    return await anyio.Path(path).exists()


async def _not_running(client: httpx.AsyncClient) -> bool:
    return "is running since" not in (await client.get("/reconciliation")).text
