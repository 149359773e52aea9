"""`make demo`: the sandbox simulators and the daemon in one process, a short scripted story, and what
each side shows as it happens. Needs no credentials and no network; leaves its state file behind for
`revdaemon status`.

First a go-live on a tenant with history (issue 29), on simulators and a daemon of its own: the brownfield deals,
a rep's new deal and a look-alike Nue customer, all read and planned in shadow mode; the shadow report as tables
and the simulators' request logs showing no write; then promotion, a backfill of flow 1, and what the live run wrote
beside what the report planned.

Then the story in two parts: a visible sync (deals, orders, amendments, billing, quotes, renewals), then the hard part,
what needs a person: a conflict (a hand edit revdaemon will not overwrite), a dead letter (a restricted picklist
lacking a value, fixed by the admin, then replayed) and a drift (found by the reconciliation, repaired). Each is
decided through `revdaemon.service`, as the CLI and the console decide them; every table marks what changed since
it was last shown. With the console (`demo --console`) the story leaves the three decisions to the person who logs
in with the token printed for the run, and everything keeps running until Ctrl-C.
"""

from __future__ import annotations

import secrets
import shutil
import signal
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from datetime import time as dt_time
from decimal import Decimal
from pathlib import Path
from typing import Any

import anyio
from pydantic import SecretStr
from rich.console import Console
from rich.table import Table
from rich.text import Text

from revdaemon import service
from revdaemon.config import Mode, SalesforceAuth, Settings, WebhookAuth
from revdaemon.connectors import nue_wire
from revdaemon.domain.reconciliation import Report
from revdaemon.domain.shadow_report import ACTIONS as SHADOW_ACTIONS
from revdaemon.engine.preview import comparable
from revdaemon.engine.renewal_scan import scan_renewals
from revdaemon.engine.supervisor import Daemon, run_daemon, run_reconciliation
from revdaemon.engine.sweep import WonDealSweep
from revdaemon.flows.billing_events import FAILED_COLLECTION
from revdaemon.sandbox.nue import customers as nue_customers
from revdaemon.sandbox.runner import Sandbox, create_sandbox
from revdaemon.sandbox.salesforce.settings import CustomField
from revdaemon.store import Store
from revdaemon.store.records import ConflictStatus, utcnow
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


def demo_settings(settings: Settings, box: Sandbox, *, console_token: str | None = None) -> Settings:
    """The configured settings, pointed at the sandbox, on free listener and metrics ports, and their own state.
    With `console_token`: the console on (at console.host and console.port), its one admin logging in with it."""
    pointed = on_sandbox(settings, box.info())
    update: dict[str, Any] = {"listener": pointed.listener.model_copy(update={"port": 0}),
                              "metrics": pointed.metrics.model_copy(update={"port": 0}),
                              "state_dir": demo_state_dir(settings)}
    if console_token is not None:
        update["console"] = pointed.console.model_copy(update={
            "enabled": True, "admins": {CONSOLE_ADMIN: SecretStr(console_token)}})
    return pointed.model_copy(update=update)


REAL_TIME_WAIT_SECONDS = 15.0  # a change event is worked in about a second; past this the demo polls
SIGN_UP = "Zephyr Analytics"  # the demo's customer made in Nue
SIGN_UP_INDEX = -1
CONSOLE_ADMIN = "operator"  # the demo console's one admin: the actor its decisions are audited under
CONSOLE_TOKEN_BYTES = 24  # secrets.token_urlsafe: 32 characters, past console.admins' 24-character minimum
HAND_EDITED_MRR = Decimal("3500")  # what the sales rep types over Acme's MRR
CONFLICT_QUANTITY = 7  # Acme's quantity after its second change in Nue
DRIFTED_MRR = Decimal("1000")  # Zephyr's MRR after the import
BILLING_EVENT = "Nue_Billing_Event__c"
BILLING_STATUSES = ("Posted", "Paid", "Overdue", "Void")  # flows/billing_events.py: the Status__c picklist
STORY_ACTOR = "demo"  # the actor of the decisions the story takes itself (audit log)
# The object a Nue write's operation names (a Salesforce write's target names its own).
NUE_WRITE_OBJECTS = {"NueCreateCustomer": "Customer", "NueCreateOrder": "Order", "NueActivateOrder": "Order"}


def demo_state_dir(settings: Settings) -> Path:
    # Its own directory, started afresh: the seeded sandbox repeats its ids and event ids on every run,
    # which a kept inbox would rightly treat as duplicates.
    return settings.state_dir / "demo"


@dataclass(frozen=True)
class ConsoleAccess:
    """How a person reaches the demo's console: its address and the login token made for this run."""

    url: str
    name: str
    token: str


Serve = Callable[[ConsoleAccess], Awaitable[None]]


async def run_demo(settings: Settings, *, console: Console | None = None, box: Sandbox | None = None,
                   brownfield_box: Sandbox | None = None, with_console: bool = False,
                   serve: Serve | None = None) -> dict[str, Any]:
    """The go-live chapter on a new brownfield sandbox, or on `brownfield_box` (seed 1, BROWNFIELD_DEALS), then the
    story on a new seeded sandbox, or on `box` (seed 1, its org already set up: the go-live test's); a sandbox
    given is left running.

    `with_console`: the web console runs too, its URL and a login token made for this run are printed, the story
    leaves the conflict, the dead letter and the drift for the person at the console, and everything keeps running
    until `serve` returns (by default: until Ctrl-C or SIGTERM)."""
    console = console or Console()
    state = demo_state_dir(settings)
    if state.exists():
        shutil.rmtree(state)
    # The go-live chapter first, on a sandbox and a daemon of its own: a tenant with history is another tenant.
    own_brownfield = brownfield_box is None
    brownfield_box = brownfield_box or create_sandbox(key_dir=state / "go-live-sandbox", seed=1,
                                                      brownfield=BROWNFIELD_DEALS).start_threads()
    try:
        going_live = await _go_live_chapter(settings, brownfield_box, console)
    finally:
        if own_brownfield:
            brownfield_box.close()
    own_box = box is None
    box = box or create_sandbox(key_dir=state / "sandbox", seed=1).start_threads()
    # Made per run and printed once: never in config.yaml, the log or the state directory.
    token = secrets.token_urlsafe(CONSOLE_TOKEN_BYTES) if with_console else None
    summary: dict[str, Any] = {}
    try:
        configured = demo_settings(settings, box, console_token=token)

        async def story(daemon: Daemon) -> None:
            box.nue.webhooks.set_targets([f"http://127.0.0.1:{daemon.listener_port}/webhooks/nue"])
            console.rule("revdaemon demo")
            console.print(f"Salesforce simulator {box.salesforce_url}, Nue simulator {box.nue_url}, "
                          f"daemon listening on 127.0.0.1:{daemon.listener_port}")
            access = None
            if token is not None:
                access = ConsoleAccess(url=f"http://{configured.console.host}:{daemon.console_port}/",
                                       name=CONSOLE_ADMIN, token=token)
                _show_console_access(console, access)
            summary.update(await _story(box, daemon, console, access))
            if access is not None:
                console.rule("the console is yours")
                _show_console_access(console, access)
                console.print("Everything keeps running (simulators, daemon, console) until Ctrl-C.")
                await (serve or _until_signalled)(access)
            daemon.health.shutting_down = True

        async with anyio.create_task_group() as tg:
            async def run() -> None:
                await run_daemon(configured, on_ready=lambda d: _then_stop(story, d, tg))

            tg.start_soon(run)
    finally:
        if own_box:
            box.close()
    return {**summary, "go_live": going_live}


async def _until_signalled(access: ConsoleAccess) -> None:
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for _ in signals:
            return


def _show_console_access(console: Console, access: ConsoleAccess) -> None:
    console.print(f"Web console: [bold]{access.url}[/bold]  log in with the token [bold]{access.token}[/bold] "
                  f"(made for this run, as admin '{access.name}')", soft_wrap=True)


async def _then_stop(story: Callable[[Daemon], Awaitable[None]], daemon: Daemon, tg: anyio.abc.TaskGroup) -> None:
    async def go() -> None:
        try:
            await story(daemon)
        finally:
            tg.cancel_scope.cancel()

    tg.start_soon(go)


async def _story(box: Sandbox, daemon: Daemon, console: Console, access: ConsoleAccess | None) -> dict[str, Any]:
    scenario = box.nue.scenario
    marks = ChangeMarks()
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
        await _settle(box, daemon)
        _show_opportunity(console, box, opportunity.id)
        _show_accounts(console, box, [accounts[0].id, accounts[3].id, *_made_for(box, customers.get(SIGN_UP_INDEX))],
                       marks)
        _show_activity(console, box)

    hard = await _hard_part(box, daemon, console, marks, access, customer_of=customer_of, amend=amend,
                            sign_up=customers[SIGN_UP_INDEX])

    depths = await daemon.store.queue_depths()
    writes = await daemon.store.list_writes(limit=1000)
    summary: dict[str, Any] = {
        "events_done": depths[EventStatus.DONE],
        "events_waiting": depths[EventStatus.RECEIVED] + depths[EventStatus.CLAIMED],
        "dead_letters": depths[EventStatus.DEAD],
        "salesforce_writes": sum(1 for w in writes if w.system == "salesforce" and w.outcome == "ok"),
        "salesforce_api_calls": daemon.salesforce.calls,
        "nue_api_calls": daemon.nue.calls,
        "conflicts_open": len(await daemon.store.list_conflicts()),
    }
    console.rule("summary")
    table = Table(show_header=False)
    for key, value in summary.items():
        table.add_row(key.replace("_", " "), str(value))
    console.print(table)
    console.print(f"State kept in {daemon.settings.store_display}; to look at it: "
                  f"REVDAEMON_STATE_DIR={daemon.settings.state_dir} revdaemon status")
    return {**summary, "hard_part": hard}


async def _settle(box: Sandbox, daemon: Daemon) -> None:
    """Nue's webhooks for what just happened, then whatever work they and the poll queued."""
    for _ in range(3):
        await anyio.to_thread.run_sync(lambda: box.nue.webhooks.wait_idle(10))
        await _drain(daemon)


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


def _show_accounts(console: Console, box: Sandbox, account_ids: list[str], marks: ChangeMarks) -> None:
    rows: list[tuple[str, list[str]]] = []
    cmrr = {c.get("externalId"): c.get("todayCMRR") for c in box.nue.store.customers.values()}
    for account_id in account_ids:
        account = box.salesforce.record("Account", account_id)
        made_in_nue = box.nue.store.customers.get(str(account.get("Nue_Customer_Id__c")))  # flow 6's key
        if made_in_nue is not None:
            cmrr[account_id] = made_in_nue.get("todayCMRR")
        rows.append((account_id, [str(account["Name"]), str(account.get("Subscription_Status__c")),
                                  _money(account.get("MRR__c")), _money(account.get("ARR__c")),
                                  str(account.get("Next_Renewal_Date__c")), _money(cmrr.get(account_id))]))
    console.print(marks.table("Salesforce accounts, as revdaemon left them",
                              ("Account", "Status", "MRR", "ARR", "Next renewal", "Nue todayCMRR"), rows))


def _money(value: Any) -> str:
    return "-" if value is None else f"{Decimal(str(value)):,.2f}"


class ChangeMarks:
    """Each table's rows as it was last shown, so that showing it again marks what the steps in between did:
    a new row, a changed row (its changed values highlighted) and a row that is gone."""

    def __init__(self) -> None:
        self._shown: dict[str, dict[str, tuple[str, ...]]] = {}

    def table(self, title: str, columns: Sequence[str], rows: Sequence[tuple[str, Sequence[str]]]) -> Table:
        """`rows`: (a key that names the row across steps, its cells)."""
        before = self._shown.get(title, {})
        now = {key: tuple(cells) for key, cells in rows}
        self._shown[title] = now
        table = Table(title=title, caption="since the last step: [green]new[/] rows, [yellow]changed[/] values, "
                                           "[dim]gone[/] rows")
        table.add_column("")
        for column in columns:
            table.add_column(column)
        for key, cells in now.items():
            old = before.get(key)
            if old is None:
                table.add_row(Text("new", style="green"), *cells)
            elif old != cells:
                table.add_row(Text("changed", style="yellow"),
                              *(Text(c, style="bold yellow") if c != o else c for c, o in zip(cells, old, strict=True)))
            else:
                table.add_row("", *cells)
        for key, cells in before.items():
            if key not in now:
                table.add_row(Text("gone", style="dim"), *cells, style="dim strike")
        if not now and not before:
            table.add_row("", *(["none"] + [""] * (len(columns) - 1)), style="dim")
        return table


async def _hard_part(box: Sandbox, daemon: Daemon, console: Console, marks: ChangeMarks,
                     access: ConsoleAccess | None, *, customer_of: Callable[[int], dict[str, Any]],
                     amend: Callable[[int, int], None], sign_up: dict[str, Any]) -> dict[str, Any]:
    """What a person is needed for: a conflict, a dead letter and a drift, each shown, then decided by the story
    through the service layer (as the CLI and the console decide them), or left for the person at the console."""
    store = daemon.store
    accounts = box.salesforce.seed_data.accounts
    conflicted, refused, drifting = accounts[0], accounts[3], sign_up
    drifting_account = _made_for(box, drifting)[0]
    shown = [conflicted.id, refused.id, drifting_account]
    outcome: dict[str, Any] = {}
    console.rule("the hard part: what needs a person")

    async def step(title: str) -> None:
        await _settle(box, daemon)
        console.print(f"\n[bold]> {title}[/bold]")

    # 1. A conflict: a hand edit revdaemon must not overwrite when Nue changes the customer next.
    await step(f"Salesforce: a person types {_money(HAND_EDITED_MRR)} over {conflicted.name}'s MRR that "
               "revdaemon wrote")
    box.salesforce.update("Account", conflicted.id, {"MRR__c": float(HAND_EDITED_MRR)})  # as the sales rep
    _show_accounts(console, box, shown, marks)
    await step(f"Nue: {conflicted.name} changes its quantity again; revdaemon opens a conflict instead of "
               "overwriting the hand edit")
    amend(0, CONFLICT_QUANTITY)
    await _settle(box, daemon)
    [conflict] = await store.list_conflicts()
    outcome["conflict"] = {"id": conflict.id, "account_id": conflicted.id, "customer_id": customer_of(0)["id"]}
    await _show_conflicts(console, box, store, marks)
    _show_accounts(console, box, shown, marks)
    if access is None:
        await step(f"The operator takes Nue's value (service.resolve_conflict, take nue, actor '{STORY_ACTOR}')")
        await service.resolve_conflict(store, conflict.id, take="nue", actor=STORY_ACTOR,
                                       comment="Nue bills the customer: its MRR is the right one.")
        await _settle(box, daemon)
        await _show_conflicts(console, box, store, marks)
        _show_accounts(console, box, shown, marks)
    else:
        console.print(f"Open {access.url}conflicts/{conflict.id} and resolve it yourself.")

    # 2. A dead letter: Salesforce refuses a value its restricted picklist lacks; an admin adds it; a replay.
    await step(f"Salesforce: {BILLING_EVENT}.Status__c is a restricted picklist without 'Overdue' (created that "
               "way by an admin)")
    _set_billing_status_values(box, [v for v in BILLING_STATUSES if v != "Overdue"])
    await step(f"Nue: {refused.name} is invoiced again and the collection fails: Salesforce refuses the billing "
               "event and revdaemon dead-letters it")
    invoice = box.nue.scenario.post_invoice(customer_of(3)["id"], activate=True)
    await _settle(box, daemon)
    box.nue.scenario.fail_collection(invoice["id"])
    await _settle(box, daemon)
    [letter] = await store.list_dead_letters()
    outcome["dead_letter"] = {"id": letter.id, "event_key": f"{invoice['id']}:{FAILED_COLLECTION}"}
    await _show_dead_letters(console, store, marks)
    _show_billing_events(console, box, marks)
    await step("The Salesforce admin adds 'Overdue' to the picklist")
    _set_billing_status_values(box, list(BILLING_STATUSES))
    if access is None:
        await step(f"The operator replays the dead letter (service.replay_dead_letters, actor '{STORY_ACTOR}')")
        await service.replay_dead_letters(store, [letter.id], actor=STORY_ACTOR)
        await _settle(box, daemon)
        await _show_dead_letters(console, store, marks)
        _show_billing_events(console, box, marks)
    else:
        console.print(f"Open {access.url}dead-letters/{letter.id} and replay it yourself.")

    # 3. Drift: an edit no Nue event will ever bring to revdaemon's attention; the reconciliation finds it.
    await step(f"Salesforce: {drifting['name']}'s MRR is changed by an import, behind revdaemon's back")
    box.salesforce.update("Account", drifting_account, {"MRR__c": float(DRIFTED_MRR)})
    _show_accounts(console, box, shown, marks)
    await step("The reconciliation (flow 8) compares every Nue customer with its account")
    report = await run_reconciliation(daemon.settings, daemon.nue, daemon.salesforce, store=store, repair=False)
    _show_drift(console, report, marks)
    outcome["drift"] = {"customer_id": drifting["id"], "account_id": drifting_account,
                        "reported": [row.customer_id for row in report.repairable]}
    if access is None:
        await step(f"The operator queues the repair (service.queue_repairs, actor '{STORY_ACTOR}'); flow 2 rewrites "
                   "the account, and the reconciliation runs again")
        await service.queue_repairs(store, [drifting["id"]], actor=STORY_ACTOR)
        await _settle(box, daemon)
        report = await run_reconciliation(daemon.settings, daemon.nue, daemon.salesforce, store=store, repair=False)
        _show_accounts(console, box, shown, marks)
        _show_drift(console, report, marks)
        outcome["drift"]["after_repair"] = [row.customer_id for row in report.drifted]
    else:
        console.print(f"Open {access.url}reconciliation and repair it yourself.")
    return outcome


async def _show_conflicts(console: Console, box: Sandbox, store: Store, marks: ChangeMarks) -> None:
    rows: list[tuple[str, list[str]]] = []
    for conflict in await store.list_conflicts(status=None):
        shown = await service.show_conflict(store, conflict.id)
        decided = "open" if conflict.status is ConflictStatus.OPEN else \
            f"took {conflict.resolution.value if conflict.resolution else '?'} ({conflict.resolved_by})"
        for field in shown["fields"]:
            if field["differs"] or comparable(field["salesforce"]) != comparable(field["synced"]):
                rows.append((f"{conflict.id}:{field['field']}", [
                    f"#{conflict.id} {_name_of(box, conflict.record_ref)}", field["field"], _value(field["nue"]),
                    _value(field["salesforce"]), _value(field["synced"]), decided]))
    console.print(marks.table("Conflicts: revdaemon wrote nothing over the hand edit",
                              ("Conflict", "Field", "Nue", "Salesforce", "Last synced", "Decision"), rows))


async def _show_dead_letters(console: Console, store: Store, marks: ChangeMarks) -> None:
    rows = [(str(letter["id"]), [f"#{letter['id']}", str(letter["operation"]), str(letter["error"]),
                                 "replayed" if letter["replayed_at"] else "open"])
            for letter in await service.list_dead_letters(store, include_replayed=True)]
    console.print(marks.table("Dead letters: writes Salesforce refused, kept for a person",
                              ("Letter", "Write", "Salesforce's error", "State"), rows))


def _show_billing_events(console: Console, box: Sandbox, marks: ChangeMarks) -> None:
    rows = [(str(r["Nue_Event_Key__c"]), [_name_of(box, f"salesforce:Account:{r.get('Account__c')}"),
                                          str(r.get("Invoice_Number__c")), _money(r.get("Amount__c")),
                                          str(r.get("Payment_Status__c")), str(r.get("Status__c"))])
            for r in box.salesforce.records(BILLING_EVENT)]
    console.print(marks.table(f"Billing events in Salesforce ({BILLING_EVENT})",
                              ("Account", "Invoice", "Amount", "Payment", "Status__c"), rows))


def _show_drift(console: Console, report: Report, marks: ChangeMarks) -> None:
    rows = [(row.customer_id, [str(row.customer_name), _money(row.computed_mrr), _money(row.salesforce_mrr),
                               row.drift.value.replace("_", " ")])
            for row in report.drifted]
    console.print(marks.table("Reconciliation: customers whose account differs from Nue",
                              ("Customer", "MRR in Nue", "MRR in Salesforce", "Drift"), rows))


def _set_billing_status_values(box: Sandbox, values: list[str]) -> None:
    """What a Salesforce admin does in Setup: the field's value set, restricted to exactly these values."""
    box.salesforce.add_field(CustomField(object=BILLING_EVENT, name="Status__c", type="picklist", label="Status",
                                         picklist=tuple(values), restricted=True))


def _name_of(box: Sandbox, record_ref: str) -> str:
    """The account's name for a `salesforce:Account:<id>` reference (the reference itself otherwise)."""
    system, _, rest = record_ref.partition(":")
    sobject, _, record_id = rest.partition(":")
    if system != "salesforce" or not record_id:
        return record_ref
    try:
        return str(box.salesforce.record(sobject, record_id).get("Name") or record_ref)
    except KeyError:
        return record_ref


def _value(value: Any) -> str:
    try:
        return _money(value)
    except (ArithmeticError, ValueError):
        return str(value)


# --- the go-live chapter: a tenant with history, shadow mode first ------------------------------------------------

BROWNFIELD_DEALS = 20  # every share of seed.BROWNFIELD_KINDS once: 12 from quotes, 2 by hand, 2 by a tool, 3 old, 1 new
GO_LIVE_STATE = "go-live"  # the chapter's own store, under the demo's state directory
REP_WINS = 0  # the seed's opportunity a rep wins during the shadow run (Acme Corp - Platform)
KIND_LABELS = {"from_quote": "ordered by Nue's quote-to-order", "by_hand": "ordered by hand in Nue",
               "order_id_on_opportunity": "ordered by an earlier tool", "before_go_live": "won before the cut-off",
               "new": "won since, not ordered", "rep": "won by a rep in shadow", "seed": "won since (the seed's)"}
# Why the live run after promotion writes other than shadow mode planned, where it does (flow, system, object).
WHY_LIVE_DIFFERS = {
    ("closed_won_to_order", "nue", "Customer"): "the flagged look-alike was linked: no customer made for it",
    ("closed_won_to_order", "salesforce", "Opportunity"): "the backfill also reads deals showing an order id (the "
                                                          "sweep skips them) and fills in the order number",
}
NOT_REPLAYED = "history Nue's startup poll read: not replayed after promotion"


def write_requests(box: Sandbox) -> dict[str, list[Any]]:
    """Requests that could change either simulator: Salesforce REST writes (a login is not one) and Nue requests
    other than GET and the GraphQL reads (POST /async/graphql)."""
    return {"salesforce": [r for r in box.salesforce.log.writes() if r.path.startswith("/services/data/")],
            "nue": [r for r in box.nue.log.writes() if r.path != "/async/graphql"]}


def orders_for(box: Sandbox, opportunity_id: str) -> list[dict[str, Any]]:
    """The Nue orders tied to the opportunity by any route flow 1 itself recognises (its marker, the order id the
    opportunity shows, the opportunity on the order, a quote of it named on the order)."""
    shown = box.salesforce.record("Opportunity", opportunity_id).get("Nue_Order_Id__c")
    quotes = nue_wire.quote_ids_of(list(box.nue.store.quotes.values()), opportunity_id)
    return [dict(order) for order, _link in nue_wire.linked_orders(
        list(box.nue.store.orders.values()), opportunity_id, marker_field=None, quote_ids=quotes,
        order_id=str(shown) if shown else None)]


def won_deals(box: Sandbox) -> dict[str, list[str]]:
    """The sandbox's won opportunities by how they stood before the go-live (KIND_LABELS' keys)."""
    seed = box.salesforce.seed_data
    deals: dict[str, list[str]] = {}
    for deal in seed.brownfield:
        deals.setdefault(deal.kind, []).append(deal.opportunity_id)
    history = {deal.opportunity_id for deal in seed.brownfield}
    deals["rep"] = [seed.opportunities[REP_WINS].id]
    deals["seed"] = [o.id for o in seed.opportunities if o.stage == "Closed Won" and o.id not in history]
    return deals


async def _go_live_chapter(settings: Settings, box: Sandbox, console: Console) -> dict[str, Any]:
    """A daemon of its own on the brownfield sandbox, started in shadow mode with the scenario's go-live cut-off;
    the chapter promotes it while it runs."""
    cut_off = box.salesforce.seed_data.go_live
    if cut_off is None:
        raise ValueError("the go-live chapter needs a brownfield sandbox (create_sandbox(brownfield=...))")
    pointed = demo_settings(settings, box)
    closed_won = pointed.flows.closed_won.model_copy(update={"won_since": cut_off})
    configured = pointed.model_copy(update={
        "mode": Mode.SHADOW, "state_dir": demo_state_dir(settings) / GO_LIVE_STATE,
        "flows": pointed.flows.model_copy(update={"closed_won": closed_won})})
    outcome: dict[str, Any] = {}

    async def story(daemon: Daemon) -> None:
        outcome.update(await _go_live(box, daemon, console, cut_off))
        daemon.health.shutting_down = True

    async with anyio.create_task_group() as tg:
        async def run() -> None:
            await run_daemon(configured, on_ready=lambda d: _then_stop(story, d, tg))

        tg.start_soon(run)
    return outcome


async def _go_live(box: Sandbox, daemon: Daemon, console: Console, cut_off: date) -> dict[str, Any]:
    store = daemon.store
    seed = box.salesforce.seed_data
    marks = ChangeMarks()
    deal = seed.opportunities[REP_WINS]
    account = next(a for a in seed.accounts if a.id == deal.account_id)
    console.rule("going live on a tenant with history: shadow mode first")
    console.print(f"Another pair of simulators holds a tenant with history: {len(seed.brownfield)} won deals, most "
                  f"already ordered in Nue (by Nue's quote-to-order flow, by hand, by an earlier tool), some won "
                  f"before the go-live cut-off ({cut_off}), one new. A daemon of its own (state in "
                  f"{daemon.settings.state_dir}) starts with mode: shadow: it reads and plans everything and sends "
                  "nothing. Nue's webhooks are not delivered in this chapter: its story is flow 1's.")
    _show_won_deals(console, box, marks)

    console.print(f"\n[bold]> Nue: someone made a customer '{account.name}' by hand, never linked to the account; "
                  f"Salesforce: a rep marks '{deal.name}' Closed Won[/bold]")
    [look_alike], _ = nue_customers.create_customers(box.nue.store, [{"name": account.name,
                                                                       "recordType": "Business"}])
    box.salesforce.close_won(deal.id)
    await anyio.sleep(0.5)  # the change event on its way; the poll below finds the deal either way
    await daemon.pollers[0].run_once()
    await _drain(daemon)
    console.print(f"\n[bold]> The daily sweep (schedule.sweep_cron) finds the won deals since {cut_off} that show no "
                  "Nue order id[/bold]")
    await WonDealSweep(daemon.salesforce, store, won_since=cut_off).run_once()
    await _drain(daemon)

    report = await service.shadow_report(store)
    sent = write_requests(box)
    _show_shadow_report(console, report)
    console.print(marks.table("Requests the simulators received during shadow mode (their request logs)",
                              ("System", "Requests", "Of them writes", "A write is"),
                              [("salesforce", ["Salesforce", str(box.salesforce.log.count()),
                                               str(len(sent["salesforce"])), "any but GET under /services/data/"]),
                               ("nue", ["Nue", str(box.nue.log.count()), str(len(sent["nue"])),
                                        "any but GET and POST /async/graphql"])]))
    _show_won_deals(console, box, marks)

    console.print(f"\n[bold]> A person looks at the flag: the look-alike is {account.name}'s customer, made before "
                  "Nue's Salesforce sync was on; they link it to the account in Nue[/bold]")
    with box.nue.store.lock:  # as Nue's own sync links a customer to its account
        box.nue.store.customers[look_alike["id"]].update(externalId=account.id, salesAccountId=account.id)
    console.print(f"\n[bold]> The operator promotes (service.promote_shadow, actor '{STORY_ACTOR}', the go-live "
                  f"cut-off kept at {cut_off}); shadowed events are not replayed, so the operator backfills flow 1 "
                  "(service.backfill --flow closed_won since the cut-off) and the daemon, now live, writes[/bold]")
    promoted = await service.promote_shadow(store, actor=STORY_ACTOR, go_live=cut_off)
    await service.backfill(store, daemon.pollers, datetime.combine(cut_off, dt_time.min, UTC), flow="closed_won")
    await _drain(daemon)
    _show_won_deals(console, box, marks)
    written = await _live_counts(store)
    planned = {(r["flow"], r["system"], r["object"]): sum(r[a] for a in SHADOW_ACTIONS) for r in report["counts"]}
    rows: list[tuple[str, list[str]]] = []
    for key in sorted({*planned, *written}):
        flow, system, sobject = key
        same = planned.get(key, 0) == written.get(key, 0)
        why = "" if same else WHY_LIVE_DIFFERS.get(key, NOT_REPLAYED if not written.get(key) else "?")
        rows.append((":".join(key), [flow, f"{system} {sobject}", str(planned.get(key, 0)),
                                     str(written.get(key, 0)), why]))
    console.print(marks.table("What shadow mode planned, and what the live run wrote after promotion",
                              ("Flow", "Writes to", "Planned", "Written", "Why they differ"), rows))
    return {"cut_off": cut_off.isoformat(), "rep_deal": deal.id, "look_alike": look_alike["id"],
            "shadow_writes": {system: len(requests) for system, requests in sent.items()}, "report": report,
            "promoted": promoted, "planned": planned, "written": written}


async def _live_counts(store: Store) -> dict[tuple[str, str, str], int]:
    """(flow, system, object) of every write sent, from the audit log (shadow mode sends none)."""
    counted: dict[tuple[str, str, str], int] = {}
    for entry in await store.list_writes(limit=10_000):
        if entry.system == "operator" or entry.outcome != "ok":
            continue
        flow = str(entry.idem_key).split(":", 1)[0]
        sobject = NUE_WRITE_OBJECTS.get(entry.operation) or str(entry.detail["request"]["target"]).split(":")[1]
        counted[(flow, entry.system, sobject)] = counted.get((flow, entry.system, sobject), 0) + 1
    return counted


def _show_won_deals(console: Console, box: Sandbox, marks: ChangeMarks) -> None:
    rows: list[tuple[str, list[str]]] = []
    for kind, deals in won_deals(box).items():
        orders = [len(orders_for(box, d)) for d in deals]
        shown = sum(1 for d in deals if box.salesforce.record("Opportunity", d).get("Nue_Order_Id__c"))
        won = sum(1 for d in deals if box.salesforce.record("Opportunity", d).get("IsWon"))
        rows.append((kind, [KIND_LABELS[kind], str(len(deals)), str(won), str(sum(orders)),
                            str(sum(1 for n in orders if n > 1)), str(shown)]))
    console.print(marks.table("Won deals of the tenant with history, by how they stood before the go-live",
                              ("Deals", "Count", "Won", "Nue orders", "With two orders", "Order id in Salesforce"),
                              rows))


def _show_shadow_report(console: Console, report: dict[str, Any]) -> None:
    console.print(f"\nShadow report (service.shadow_report, as `revdaemon shadow report`): {report['events']} events "
                  f"planned, {report['writes']} writes that were not sent")
    counts = Table(title="Would write, per flow and object")
    for column in ("Flow", "System", "Object", *(a.capitalize() for a in SHADOW_ACTIONS)):
        counts.add_column(column)
    for row in report["counts"]:
        counts.add_row(row["flow"], row["system"], row["object"], *(str(row[a]) for a in SHADOW_ACTIONS))
    console.print(counts)
    alone = Table(title="Would leave alone: nothing to write (Nue ordered it already, the account shows it)")
    alone.add_column("Flow")
    alone.add_column("Events")
    for flow, n in report["left_alone"].items():
        alone.add_row(flow, str(n))
    console.print(alone)
    flags = Table(title=f"Look at these before going live ({len(report['flags'])} flags; "
                        f"{len(report['conflicts'])} conflicts, {len(report['dead_letters'])} dead letters it would "
                        "open)")
    for column in ("Flow", "Target", "Flag"):
        flags.add_column(column)
    for flag in report["flags"]:
        flags.add_row(flag["flow"], str(flag["target"]), flag["flag"])
    console.print(flags)
