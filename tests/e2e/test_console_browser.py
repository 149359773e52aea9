"""The operator console in a real browser: headless Chromium (Debian's `chromium` package) driven by Playwright,
against the daemon and both simulators running here.

A scripted scenario makes the two things an operator comes to the console for:

- a conflict: revdaemon writes an account's MRR, a rep types over it in Salesforce, then Nue notifies a change
  of that customer; the console shows the three values, the operator takes Nue's, and the account changes;
- a dead letter whose cause a person fixes: the org's `Nue_Billing_Event__c.Status__c` is a restricted picklist
  created without "Overdue", so a failed collection's billing event is refused
  (INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST); the Salesforce admin adds the value, the operator previews the
  replay (a dry run: nothing is sent) and replays it, and the record is written;
- a drift: an import lowers the account's MRR; the operator runs the reconciliation now, sees the drift (on
  the overview too), previews and queues the repair, and the row then shows as repaired.

On the way it checks what an operator needs to decide: the records' names and numbers beside their ids, the
link from a Salesforce id into the org, the timeline found by a name, the fix hint beside Salesforce's error,
the record that was sent, and the replay preview's warning that the write would fail again before the fix.

Playwright's own browser download is never used: the browser is the system's Chromium (/usr/bin/chromium, else
`chromium` on PATH, or REVDAEMON_CHROMIUM). Without it (or without the playwright package) the module is skipped
and says why; `.ci/run` installs it where it can. The daemon runs in this test's event loop (`run_daemon` with
`on_ready`), its console on port 0, the simulators in background threads; the run takes about 10 s.

Screenshots of the pages go to tmp_path, or to docs/screenshots/ (shown in the README)
with REVDAEMON_SCREENSHOTS=1.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from decimal import Decimal
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from revdaemon.config import load_settings
from revdaemon.demo import demo_settings
from revdaemon.engine.supervisor import Daemon, run_daemon
from revdaemon.sandbox.runner import Sandbox, create_sandbox
from tests.integration.daemon_waits import settled, until

ROOT = Path(__file__).resolve().parents[2]


def _chromium() -> str | None:
    """Debian's chromium (its /usr/bin/chromium wrapper sets the flags Debian needs), or one on PATH."""
    chosen = os.environ.get("REVDAEMON_CHROMIUM")
    if chosen:
        return chosen if os.access(chosen, os.X_OK) else None
    if os.access("/usr/bin/chromium", os.X_OK):
        return "/usr/bin/chromium"
    return shutil.which("chromium") or shutil.which("chromium-browser")


CHROMIUM = _chromium()
if CHROMIUM is None:
    pytest.skip("no Chromium (looked for REVDAEMON_CHROMIUM, /usr/bin/chromium, `chromium` on PATH): install "
                "Debian's `chromium` package (.ci/run does, as root or with sudo) to run the console's browser test",
                allow_module_level=True)
playwright_api = pytest.importorskip(
    "playwright.async_api", reason="playwright is not installed: `pip install -e '.[test]'` installs it")

pytestmark = pytest.mark.anyio

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-dev-shm-usage"]
TOKEN = "ana-browser-token-0123456789abcdef"
EVENT_OBJECT = "Nue_Billing_Event__c"
STATUS_FIELD = {"object": EVENT_OBJECT, "name": "Status__c", "type": "picklist", "label": "Status",
                "restricted": True}
SHOTS = ("console-overview.png", "console-conflicts.png", "console-conflict.png", "console-dead-letter.png",
         "console-replay-warning.png", "console-reconciliation.png")


def screenshot_dir(tmp_path: Path) -> Path:
    chosen = ROOT / "docs" / "screenshots" if os.environ.get("REVDAEMON_SCREENSHOTS") == "1" else tmp_path / "shots"
    chosen.mkdir(parents=True, exist_ok=True)
    return chosen


async def set_status_picklist(box: Sandbox, values: list[str]) -> None:
    """What the Salesforce admin does in Setup: the field's value set (through the simulator's schema endpoint)."""
    async with httpx.AsyncClient(timeout=10) as client:
        response = await client.post(f"{box.salesforce_url}/__sandbox/schema",
                                     json={"add": [{**STATUS_FIELD, "picklist": values}]})
    assert response.status_code == 200, response.text


def api_writes(box: Sandbox) -> list[Any]:
    """Requests to the Salesforce REST API that could change a record (logins excluded)."""
    return [e for e in box.salesforce.log.writes() if e.path.startswith("/services/data/")]


def mrr(box: Sandbox, account_id: str) -> Decimal | None:
    value = box.salesforce.record("Account", account_id).get("MRR__c")
    return None if value is None else Decimal(str(value))


def nue_mrr(box: Sandbox, customer_id: str) -> Decimal:
    return Decimal(str(box.nue.store.customers[customer_id]["todayCMRR"]))


def billing_events(box: Sandbox) -> dict[str, dict[str, Any]]:
    return {r["Nue_Event_Key__c"]: r for r in box.salesforce.records(EVENT_OBJECT)}


async def make_conflict(box: Sandbox, daemon: Daemon) -> tuple[str, str]:
    """An account revdaemon wrote, whose MRR a rep then typed over, and a Nue notification after that."""
    scenario = box.nue.scenario
    customer = scenario.create_customer(0)
    customer_id, account_id = customer["id"], customer["externalId"]
    scenario.create_and_activate_order(customer_id, opportunity=0)
    await settled(box, daemon)
    assert mrr(box, account_id) == nue_mrr(box, customer_id) > 0
    box.salesforce.update("Account", account_id, {"MRR__c": 1.0})  # the rep's hand edit
    scenario.update_customer(customer_id, phone="+1 415 555 0100")  # customer.updated: flow 2 reads it again
    await settled(box, daemon)
    [conflict] = await daemon.store.list_conflicts()
    assert conflict.record_ref == f"salesforce:Account:{account_id}"
    return customer_id, account_id


async def make_dead_letter(box: Sandbox, daemon: Daemon) -> str:
    """A failed collection whose billing event Salesforce refuses: the picklist has no "Overdue" yet."""
    scenario = box.nue.scenario
    customer = scenario.create_customer(1)
    scenario.create_and_activate_order(customer["id"], opportunity=1)
    invoice = scenario.post_invoice(customer["id"], activate=True)
    await settled(box, daemon)
    assert billing_events(box)[f"{invoice['id']}:NotTransferred"]["Status__c"] == "Posted"
    scenario.fail_collection(invoice["id"])
    await settled(box, daemon)
    [letter] = await daemon.store.list_dead_letters()
    assert letter.error_code == "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST", letter
    assert f"{invoice['id']}:TransferError" not in billing_events(box)
    return str(invoice["id"])


async def operate(box: Sandbox, daemon: Daemon, shots: Path) -> None:
    """The scripted scenario, then an operator at the console in Chromium."""
    expect = playwright_api.expect
    box.nue.webhooks.set_targets([f"http://127.0.0.1:{daemon.listener_port}/webhooks/nue"])
    await set_status_picklist(box, ["Posted", "Paid", "Void"])  # the org's restricted value set, "Overdue" forgotten
    customer_id, account_id = await make_conflict(box, daemon)
    invoice_id = await make_dead_letter(box, daemon)
    [letter] = await daemon.store.list_dead_letters()
    account_name = box.salesforce.record("Account", account_id)["Name"]
    invoice_number = box.nue.store.invoices[invoice_id]["name"]
    console = f"http://127.0.0.1:{daemon.console_port}"

    async with playwright_api.async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = await (await browser.new_context(viewport={"width": 1280, "height": 900})).new_page()
            page.set_default_timeout(15_000)

            # Log in: any page sends a visitor to /login first.
            await page.goto(f"{console}/conflicts")
            await expect(page).to_have_url(re.compile(r"/login\?next=(/|%2F)conflicts$"))
            await page.get_by_label("Console token").fill(TOKEN)
            await page.get_by_role("button", name="Log in").click()
            await expect(page).to_have_url(f"{console}/conflicts")
            await expect(page.locator("header .who")).to_have_text("ana")

            # The overview counts what needs a person.
            await page.locator("header nav").get_by_role("link", name="Overview").click()
            await expect(page.locator("a.tile", has_text="Open conflicts").locator(".value")).to_have_text("1")
            await expect(page.locator("a.tile", has_text="Dead letters").locator(".value")).to_have_text("1")
            await expect(page.locator(".chart-box svg")).to_be_visible()
            await page.screenshot(path=str(shots / "console-overview.png"), full_page=True)

            # The conflict list names the account, and its id opens the record in the org (a link out).
            await page.locator("a.tile", has_text="Open conflicts").click()
            listed = page.locator("tbody tr").filter(has_text=account_id)
            out = listed.get_by_role("link", name=f"salesforce:Account:{account_id}")
            await expect(out).to_have_attribute("href", f"{daemon.salesforce.auth.current_token.instance_url}"
                                                        f"/lightning/r/Account/{account_id}/view")
            await expect(out).to_have_attribute("target", "_blank")
            await page.screenshot(path=str(shots / "console-conflicts.png"), full_page=True)

            # The conflict: three values per field, the one that differs marked.
            await listed.get_by_role("link", name=account_name).click()
            await expect(page.get_by_role("heading", level=1)).to_contain_text("open")
            await expect(page.locator("dl.facts")).to_contain_text("edited in Salesforce")
            await expect(page.locator("dl.facts .name")).to_have_text(account_name)
            row = page.locator("table.diff tbody tr").filter(has_text="MRR__c")
            await expect(row).to_have_class("differs")
            await expect(row.locator(".pill")).to_have_text("differs")
            cells = [c.strip() for c in await row.locator("td").all_inner_texts()]
            assert Decimal(cells[1]) == nue_mrr(box, customer_id)  # Nue
            assert Decimal(cells[2]) == Decimal("1.0")  # Salesforce: the hand edit
            assert Decimal(cells[3]) == nue_mrr(box, customer_id)  # what revdaemon last wrote
            await page.screenshot(path=str(shots / "console-conflict.png"), full_page=True)

            # Take Nue, with a comment; the account changes in Salesforce.
            await page.get_by_role("radio", name=re.compile(r"Take Nue")).check()
            await page.get_by_label("Comment").fill("Nue is the billing master; the rep's figure was a typo.")
            await page.get_by_role("button", name="Record decision").click()
            await expect(page.locator("p.flash")).to_contain_text("Nue's value will be written")
            await expect(page.locator("dl.facts")).to_contain_text("by ana")
            await expect(page.get_by_role("button", name="Record decision")).to_have_count(0)
            await until(lambda: mrr(box, account_id) == nue_mrr(box, customer_id),
                        "the account's MRR to be Nue's again")
            [resolved] = await daemon.store.list_conflicts(status=None)
            assert resolved.resolved_by == "ana" and "typo" in (resolved.comment or "")
            await settled(box, daemon)

            # The timeline finds the account by its name as a person types it, with the decision on it.
            await page.locator("header nav").get_by_role("link", name="Timeline").click()
            await page.get_by_label(re.compile("^Name, number")).fill(account_name.lower())
            await page.get_by_role("button", name="Search").click()
            await expect(page.locator("main")).to_contain_text("Records called so")
            await expect(page.locator("tbody")).to_contain_text("resolve conflict: take nue")

            # The dead letter: named by its invoice's number, with a fix hint beside Salesforce's own error.
            await page.locator("header nav").get_by_role("link", name="Dead letters").click()
            listed = page.locator("tbody tr").filter(has_text="INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST")
            await expect(listed).to_contain_text("bad value for restricted picklist field: Overdue")
            await expect(listed).to_contain_text(invoice_number)
            await expect(listed.locator(".fix")).to_contain_text("Add the value 'Overdue'")
            # The letter's page: what was sent, field by field, apart from the API's error; in a phone-narrow window,
            # long ids, keys and errors wrap where they stand instead of widening the page.
            await page.set_viewport_size({"width": 400, "height": 900})
            await page.goto(f"{console}/dead-letters/{letter.id}")
            await expect(page.locator("p.fix")).to_contain_text(f"{EVENT_OBJECT}.Status__c")
            await expect(page.locator("dl.facts")).to_contain_text(invoice_number)
            sent = page.locator("h2:text-is('What was sent') + p + table")
            status_sent = sent.locator("tr").filter(has=page.locator("td:first-child",
                                                                     has_text=re.compile(r"^Status__c$")))
            await expect(status_sent.locator("td").nth(1)).to_have_text("Overdue")
            assert await page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
            await page.set_viewport_size({"width": 1280, "height": 900})
            await page.screenshot(path=str(shots / "console-dead-letter.png"), full_page=True)

            # Replayed before the fix, it would fail again: the preview says so, from describe.
            writes_before = len(api_writes(box))
            await page.goto(f"{console}/dead-letters")
            await page.get_by_label(f"select dead letter {letter.id}").check()
            await page.get_by_role("button", name="Preview replay of the selected").click()
            await expect(page.get_by_role("alert")).to_contain_text("Salesforce would refuse this again")
            await expect(page.get_by_role("alert")).to_contain_text("Overdue")
            await page.screenshot(path=str(shots / "console-replay-warning.png"), full_page=True)

            # The Salesforce admin adds the missing picklist value; the operator previews again, then replays.
            await set_status_picklist(box, ["Posted", "Paid", "Overdue", "Void"])
            await page.goto(f"{console}/dead-letters")
            await page.get_by_label(f"select dead letter {letter.id}").check()
            await page.get_by_role("button", name="Preview replay of the selected").click()
            await expect(page.get_by_role("heading", level=1)).to_contain_text("what would be written")
            await expect(page.locator("main")).to_contain_text("Dry run: nothing has been sent.")
            await expect(page.get_by_role("alert")).to_have_count(0)
            rows = page.locator("table.diff tbody tr")
            status_row = rows.filter(has=page.locator("td:first-child", has_text=re.compile(r"^Status__c$")))
            await expect(status_row).to_have_class("differs")
            await expect(status_row.locator("td").nth(2)).to_have_text("Overdue")
            assert len(api_writes(box)) == writes_before, "a preview sent a write"
            assert f"{invoice_id}:TransferError" not in billing_events(box)

            await page.get_by_role("button", name="Replay these now").click()
            await expect(page.locator("p.flash")).to_contain_text("1 dead letter(s) back in the inbox")
            await until(lambda: f"{invoice_id}:TransferError" in billing_events(box),
                        "the replayed billing event to be written")
            written = billing_events(box)[f"{invoice_id}:TransferError"]
            assert written["Status__c"] == "Overdue" and "TransferError" in (written["Failure_Detail__c"] or "")
            await settled(box, daemon)
            await page.reload()
            await expect(page.locator("main")).to_contain_text("No dead letters.")
            assert await daemon.store.list_dead_letters() == []

            # Drift: an import lowers the account's MRR behind revdaemon's back. The operator runs the
            # reconciliation now, sees the drift (on the overview too), previews the repair and repairs it.
            box.salesforce.update("Account", account_id, {"MRR__c": 2.0})
            await page.locator("header nav").get_by_role("link", name="Reconciliation").click()
            await page.get_by_role("button", name="Run the reconciliation now").click()
            await expect(page.locator("p.flash")).to_contain_text("Reconciliation started")

            async def drift_reported() -> bool:
                await page.reload()
                return "Drift left: 1 customer(s)" in await page.locator("main").inner_text()

            await until(drift_reported, "the reconciliation's report with the drift")
            drifted = page.locator("tbody tr").filter(has_text=customer_id)
            await expect(drifted).to_have_class("differs")
            await expect(drifted).to_contain_text(account_name)
            await page.locator("header nav").get_by_role("link", name="Overview").click()
            await expect(page.locator("main")).to_contain_text("1 customer(s) drifted")
            await page.locator("header nav").get_by_role("link", name="Reconciliation").click()
            await page.get_by_label(re.compile(r"^select ")).first.check()
            await page.get_by_role("button", name="Preview repair of the selected").click()
            await expect(page.locator("main")).to_contain_text("Dry run: nothing has been sent.")
            await page.get_by_role("button", name="Repair these now").click()
            await expect(page.locator("p.flash")).to_contain_text("1 repair(s) queued")
            await until(lambda: mrr(box, account_id) == nue_mrr(box, customer_id), "the repair to be written")
            await settled(box, daemon)
            await page.reload()
            repaired = page.locator("tbody tr").filter(has_text=customer_id)
            await expect(repaired).to_contain_text("repaired (at")
            await expect(page.locator("#drift-left")).to_contain_text("Drift left: 0 customer(s)")
            await page.screenshot(path=str(shots / "console-reconciliation.png"), full_page=True)
        finally:
            await browser.close()


async def test_operator_works_a_conflict_a_dead_letter_and_a_drift(tmp_path: Path) -> None:
    box = create_sandbox(key_dir=tmp_path / "keys", seed=5).start_threads()
    environ = {"REVDAEMON_STATE_DIR": str(tmp_path / "state"), "REVDAEMON_CONSOLE__ENABLED": "true",
               "REVDAEMON_CONSOLE__PORT": "0", "REVDAEMON_CONSOLE__ADMINS": json.dumps({"ana": TOKEN})}
    shots = screenshot_dir(tmp_path)
    failure: list[Exception] = []

    async def on_ready(daemon: Daemon) -> None:
        # A failure is kept and raised after the daemon's clean stop, not through the daemon's task group.
        try:
            await operate(box, daemon, shots)
        except Exception as exc:
            failure.append(exc)

    try:
        settings = demo_settings(load_settings(ROOT / "config.yaml", environ=environ), box)
        with anyio.fail_after(120):
            await run_daemon(settings, on_ready=on_ready, stop_after=0.0)
    finally:
        box.close()
    if failure:
        raise failure[0]
    for shot in SHOTS:
        assert (shots / shot).stat().st_size > 0, shot
