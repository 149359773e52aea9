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
