"""`make demo`: the sandbox simulators and the daemon in one process, a short scripted story, and what
each side shows as it happens. Needs no credentials and no network; leaves its state file behind for
`revdaemon status`.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Awaitable, Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import anyio
from pydantic import SecretStr
from rich.console import Console
from rich.table import Table

from revdaemon.config import SalesforceAuth, Settings, WebhookAuth
from revdaemon.engine.renewal_scan import scan_renewals
from revdaemon.engine.supervisor import Daemon, run_daemon
from revdaemon.sandbox.nue import customers as nue_customers
from revdaemon.sandbox.runner import Sandbox, create_sandbox
from revdaemon.store.records import utcnow
from revdaemon.store.states import EventStatus

DRAIN_TIMEOUT = 20.0


def on_sandbox(settings: Settings, info: dict[str, Any]) -> Settings:
    """The settings with both APIs pointed at a running sandbox (`revdaemon sandbox --json`'s info: its URLs,
    keys and webhook secret)."""
    sf, nue = info["salesforce"], info["nue"]
    salesforce = settings.salesforce.model_copy(update={
        "login_url": sf["login_url"], "instance_url": None, "auth": SalesforceAuth.JWT,
        "client_id": sf["consumer_key"], "username": sf["username"], "private_key": None,
        "private_key_file": Path(sf["private_key_file"])})
    nue_settings = settings.nue.model_copy(update={
        "base_url": nue["url"], "webhook_auth": WebhookAuth.SIGNATURE, "api_key": SecretStr(nue["api_key"]),
        "webhook_secret": SecretStr(nue["webhook_secret"])})
    update: dict[str, Any] = {"salesforce": salesforce, "nue": nue_settings}
    if sf.get("pubsub_url"):  # the simulator's Pub/Sub API: plaintext on loopback
        update["change_data_capture"] = settings.change_data_capture.model_copy(
            update={"endpoint": sf["pubsub_url"], "tls": False})
    return settings.model_copy(update=update)


def demo_settings(settings: Settings, box: Sandbox) -> Settings:
    """The configured settings, pointed at the sandbox, on free listener and metrics ports, and their own state."""
    pointed = on_sandbox(settings, box.info())
    return pointed.model_copy(update={"listener": pointed.listener.model_copy(update={"port": 0}),
                                      "metrics": pointed.metrics.model_copy(update={"port": 0}),
                                      "state_dir": demo_state_dir(settings)})


REAL_TIME_WAIT_SECONDS = 15.0  # a change event is worked in about a second; past this the demo polls
SIGN_UP = "Zephyr Analytics"  # the demo's customer made in Nue
SIGN_UP_INDEX = -1


def demo_state_dir(settings: Settings) -> Path:
    # Its own directory, started afresh: the seeded sandbox repeats its ids and event ids on every run,
    # which a kept inbox would rightly treat as duplicates.
    return settings.state_dir / "demo"


async def run_demo(settings: Settings, *, console: Console | None = None, box: Sandbox | None = None
                   ) -> dict[str, Any]:
    """The story on a new seeded sandbox, or on `box` (seed 1, its org already set up: the go-live test's), which
    is left running."""
    console = console or Console()
    state = demo_state_dir(settings)
    if state.exists():
        shutil.rmtree(state)
    own_box = box is None
    box = box or create_sandbox(key_dir=state / "sandbox", seed=1).start_threads()
    summary: dict[str, Any] = {}
    try:
        configured = demo_settings(settings, box)

        async def story(daemon: Daemon) -> None:
            box.nue.webhooks.set_targets([f"http://127.0.0.1:{daemon.listener_port}/webhooks/nue"])
            console.rule("revdaemon demo")
            console.print(f"Salesforce simulator {box.salesforce_url}, Nue simulator {box.nue_url}, "
                          f"daemon listening on 127.0.0.1:{daemon.listener_port}")
            summary.update(await _story(box, daemon, console))
            daemon.health.shutting_down = True

        async with anyio.create_task_group() as tg:
            async def run() -> None:
                await run_daemon(configured, on_ready=lambda d: _then_stop(story, d, tg))

            tg.start_soon(run)
    finally:
        if own_box:
            box.close()
    return summary


async def _then_stop(story: Callable[[Daemon], Awaitable[None]], daemon: Daemon, tg: anyio.abc.TaskGroup) -> None:
    async def go() -> None:
        try:
            await story(daemon)
        finally:
            tg.cancel_scope.cancel()

    tg.start_soon(go)


async def _story(box: Sandbox, daemon: Daemon, console: Console) -> dict[str, Any]:
    scenario = box.nue.scenario
    accounts = box.salesforce.seed_data.accounts
    steps: list[tuple[str, Callable[[], Any]]] = []
    opportunity = box.salesforce.seed_data.opportunities[0]
    customers: dict[int, dict[str, Any]] = {}

    async def deal_closes(opportunity: int) -> None:
        deal = box.salesforce.seed_data.opportunities[opportunity].id
        started = time.monotonic()
        box.salesforce.close_won(deal)
        if daemon.streams and await _written_back(box, deal, seconds=REAL_TIME_WAIT_SECONDS):
            console.print(f"(a change event over the Pub/Sub API: ordered in Nue and written back "
                          f"{time.monotonic() - started:.1f} s after the deal was saved, no poll)")
            return
        # Without Change Data Capture the Salesforce poll finds it (every schedule.salesforce_poll_seconds); the demo
        # does not wait for it.
        await daemon.pollers[0].run_once()

    def new_customer_with_order(index: int, opportunity: int) -> None:
        customers[index] = scenario.create_customer(index)
        scenario.create_and_activate_order(customers[index]["id"], opportunity=opportunity,
                                           generate_invoice=True, activate_invoice=True)

    def self_service_sign_up() -> None:
        # A customer made in Nue, with its contacts and no Salesforce account: flow 6 makes the account.
        made, _ = nue_customers.create_customers(box.nue.store, [{
            "name": SIGN_UP, "recordType": "Business", "website": "https://www.zephyr-analytics.io"}])
        customers[SIGN_UP_INDEX] = made[0]
        _, billing = nue_customers.create_contacts(box.nue.store, made[0]["id"], [
            {"firstName": "Ada", "lastName": "Byron", "email": "ada@zephyr-analytics.io"},
            {"firstName": "Bill", "lastName": "Payne", "email": "billing@zephyr-analytics.io"}])
        scenario.create_and_activate_order(made[0]["id"], opportunity=2, billToContact={"id": billing["id"]})

    def amend(index: int, quantity: int) -> None:
        account_id = accounts[index].id
        customer = next(c for c in box.nue.store.customers.values()
                        if account_id in (c.get("externalId"), c.get("salesAccountId")))
        subscription = next(s for s in box.nue.store.subscriptions.values() if s["customerId"] == customer["id"])
        scenario.change(subscription["name"], "UpdateQuantity", quantity=quantity)

    def customer_of(index: int) -> dict[str, Any]:
        account_id = accounts[index].id
        return next(c for c in box.nue.store.customers.values()
                    if account_id in (c.get("externalId"), c.get("salesAccountId")))

    def invoices_of(index: int) -> list[dict[str, Any]]:
        customer_id = customer_of(index)["id"]
        return [i for i in box.nue.store.invoices.values() if i["customerId"] == customer_id]

    def pay_and_fail() -> None:
        scenario.pay_invoice(invoices_of(0)[0]["id"])
        scenario.fail_collection(invoices_of(3)[0]["id"])

    def quote_and_requote() -> None:
        # Opportunity 1 (Globex) is still open in Salesforce; the requote changes one line's quantity.
        scenario.commit_quote(1)
        scenario.requote(1, {box.salesforce.seed_data.products[1].sku: 8})

    async def renewals_come_up() -> None:
        await scan_renewals(daemon.nue, daemon.store, window_days=400, today=utcnow().date())

    steps.append((f"Salesforce: '{opportunity.name}' is marked Closed Won", lambda: deal_closes(0)))
    steps.append((f"Nue: {accounts[3].name} signs a deal made in Nue", lambda: new_customer_with_order(3, 3)))
    steps.append((f"Nue: {SIGN_UP}, a self-service sign-up with two contacts, activates an order (no Salesforce "
                  "account yet)", self_service_sign_up))
    steps.append((f"Nue: {accounts[0].name} adds 5 units (an upsell)", lambda: amend(0, 5)))
    steps.append((f"Nue: {accounts[0].name} pays an invoice; {accounts[3].name}'s collection fails", pay_and_fail))
    steps.append(("Nue: a quote for Globex is committed, then requoted", quote_and_requote))
    steps.append(("The daily renewal scan finds subscriptions ending within the window", renewals_come_up))

    for title, action in steps:
        console.print(f"\n[bold]> {title}[/bold]")
        outcome = action()
        if outcome is not None:
            await outcome
        # Nue's webhooks for what just happened, then whatever work they and the poll queued.
        for _ in range(3):
            await anyio.to_thread.run_sync(lambda: box.nue.webhooks.wait_idle(10))
            await _drain(daemon)
        _show_opportunity(console, box, opportunity.id)
        _show_accounts(console, box, [accounts[0].id, accounts[3].id, *_made_for(box, customers.get(SIGN_UP_INDEX))])
        _show_activity(console, box)

    depths = await daemon.store.queue_depths()
    writes = await daemon.store.list_writes(limit=1000)
    summary = {
        "events_done": depths[EventStatus.DONE],
        "events_waiting": depths[EventStatus.RECEIVED] + depths[EventStatus.CLAIMED],
        "dead_letters": depths[EventStatus.DEAD],
        "salesforce_writes": sum(1 for w in writes if w.system == "salesforce" and w.outcome == "ok"),
        "salesforce_api_calls": daemon.salesforce.calls,
        "nue_api_calls": daemon.nue.calls,
    }
    console.rule("summary")
    table = Table(show_header=False)
    for key, value in summary.items():
        table.add_row(key.replace("_", " "), str(value))
    console.print(table)
    console.print(f"State kept in {daemon.settings.store_display}; to look at it: "
                  f"REVDAEMON_STATE_DIR={daemon.settings.state_dir} revdaemon status")
    return summary


async def _drain(daemon: Daemon) -> None:
    with anyio.move_on_after(DRAIN_TIMEOUT):
        while True:  # the inbox is the truth: asking it is the faithful "drained" check
            depths = await daemon.store.queue_depths()
            if depths[EventStatus.RECEIVED] == 0 and depths[EventStatus.CLAIMED] == 0:
                return
            await anyio.sleep(0.1)


async def _written_back(box: Sandbox, opportunity_id: str, *, seconds: float) -> bool:
    """Whether the opportunity shows its Nue order within `seconds` (the simulator is another thread's)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if box.salesforce.record("Opportunity", opportunity_id).get("Nue_Order_Id__c"):
            return True
        await anyio.sleep(0.05)
    return False


def _show_opportunity(console: Console, box: Sandbox, opportunity_id: str) -> None:
    record = box.salesforce.record("Opportunity", opportunity_id)
    orders = [o for o in box.nue.store.orders.values() if opportunity_id in str(o.get("description") or "")]
    nue = ", ".join(f"{o['orderNumber']} ({o['status']})" for o in orders) or "none"
    console.print(f"Opportunity {record['Name']}: stage {record['StageName']}, Nue order "
                  f"{record.get('Nue_Order_Number__c') or '-'} in Salesforce; orders for it in Nue: {nue}")


def _made_for(box: Sandbox, customer: dict[str, Any] | None) -> list[str]:
    """The account flow 6 made for a customer made in Nue, once it has (found by its key)."""
    if customer is None:
        return []
    return [a["Id"] for a in box.salesforce.records("Account") if a.get("Nue_Customer_Id__c") == customer["id"]]


def _show_activity(console: Console, box: Sandbox) -> None:
    events = box.salesforce.records("Nue_Billing_Event__c")
    notes = box.salesforce.records("Note")
    tasks = box.salesforce.records("Task")
    renewals = [o for o in box.salesforce.records("Opportunity") if o.get("Nue_Renewal_Key__c")]
    quoted = [o for o in box.salesforce.records("Opportunity") if o.get("Nue_Quote_Version__c")]
    amendments = [o for o in box.salesforce.records("Opportunity") if o.get("Nue_Amendment_Key__c")]
    contacts = [c for c in box.salesforce.records("Contact") if c.get("Nue_Contact_Id__c")]
    parts = [f"{len(events)} billing events ({', '.join(sorted({str(e.get('Payment_Status__c')) for e in events}))})"
             if events else "no billing events", f"{len(notes)} amendment notes", f"{len(tasks)} onboarding tasks",
             f"{len(renewals)} renewal opportunities"]
    parts += [f"amendment opportunity {o['Name']} ({o.get('Type')}, {_money(o.get('Amount'))})" for o in amendments]
    if contacts:
        parts.append("contacts from Nue: " + ", ".join(sorted(f"{c.get('FirstName')} {c.get('LastName')}"
                                                             for c in contacts)))
    parts += [f"{o['Name']} shows quote v{int(o['Nue_Quote_Version__c'])}, total {_money(o.get('Nue_Quote_Total__c'))}"
              for o in quoted]
    console.print("In Salesforce now: " + "; ".join(parts))


def _show_accounts(console: Console, box: Sandbox, account_ids: list[str]) -> None:
    table = Table(title="Salesforce accounts, as revdaemon left them")
    for column in ("Account", "Status", "MRR", "ARR", "Next renewal", "Nue todayCMRR"):
        table.add_column(column)
    cmrr = {c.get("externalId"): c.get("todayCMRR") for c in box.nue.store.customers.values()}
    for account_id in account_ids:
        account = box.salesforce.record("Account", account_id)
        made_in_nue = box.nue.store.customers.get(str(account.get("Nue_Customer_Id__c")))  # flow 6's key
        if made_in_nue is not None:
            cmrr[account_id] = made_in_nue.get("todayCMRR")
        table.add_row(str(account["Name"]), str(account.get("Subscription_Status__c")),
                      _money(account.get("MRR__c")), _money(account.get("ARR__c")),
                      str(account.get("Next_Renewal_Date__c")), _money(cmrr.get(account_id)))
    console.print(table)


def _money(value: Any) -> str:
    return "-" if value is None else f"{Decimal(str(value)):,.2f}"
