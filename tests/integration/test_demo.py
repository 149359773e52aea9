"""The demo is the whole path: simulated Nue webhooks -> listener -> inbox -> workers -> Salesforce, then the hard
part (a conflict, a dead letter, a drift), each decided through the service layer; or, with the console, left for a
person who logs in with the token the demo prints."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from rich.console import Console
from structlog.testing import capture_logs

from revdaemon import service
from revdaemon.config import Settings, load_settings
from revdaemon.demo import (
    BILLING_EVENT,
    BROWNFIELD_DEALS,
    DRIFTED_MRR,
    GO_LIVE_STATE,
    HAND_EDITED_MRR,
    STORY_ACTOR,
    ChangeMarks,
    ConsoleAccess,
    demo_state_dir,
    orders_for,
    run_demo,
    won_deals,
    write_requests,
)
from revdaemon.sandbox.runner import Sandbox, create_sandbox
from revdaemon.store import open_store
from revdaemon.store.records import ConflictRecord, ConflictStatus, DeadLetter, Resolution

ROOT = Path(__file__).resolve().parents[2]
CONSOLE_RUN_SECONDS = 90  # the whole console-mode run, login included; the story itself takes about 12 s


@dataclass(frozen=True)
class Run:
    summary: dict[str, Any]
    text: str  # what the demo printed, whitespace collapsed
    box: Sandbox
    conflicts: list[ConflictRecord]
    letters: list[DeadLetter]
    brownfield: Sandbox  # the go-live chapter's
    shadow_report: dict[str, Any]  # as the go-live chapter's store keeps it after the demo


def _settings(state_dir: Path, **environ: str) -> Settings:
    return load_settings(ROOT / "config.yaml", environ={"REVDAEMON_STATE_DIR": str(state_dir), **environ})


async def _decisions(settings: Settings) -> tuple[list[ConflictRecord], list[DeadLetter]]:
    """The conflicts and dead letters the demo left in its state store, decided or not."""
    store = await open_store(demo_state_dir(settings) / "revdaemon.sqlite3", read_only=True)
    try:
        return (await store.list_conflicts(status=None),
                await store.list_dead_letters(include_replayed=True))
    finally:
        await store.close()


async def _shadow_report(settings: Settings) -> dict[str, Any]:
    store = await open_store(demo_state_dir(settings) / GO_LIVE_STATE / "revdaemon.sqlite3", read_only=True)
    try:
        return await service.shadow_report(store)
    finally:
        await store.close()


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    """One run of `make demo` (about 20 s), on sandboxes kept open so their state can be read."""
    tmp = tmp_path_factory.mktemp("demo")
    settings = _settings(tmp)
    box = create_sandbox(key_dir=tmp / "keys", seed=1).start_threads()
    brownfield = create_sandbox(key_dir=tmp / "brownfield-keys", seed=1, brownfield=BROWNFIELD_DEALS).start_threads()
    try:
        console = Console(record=True, width=120)
        summary = anyio.run(lambda: run_demo(settings, console=console, box=box, brownfield_box=brownfield))
        conflicts, letters = anyio.run(_decisions, settings)
        yield Run(summary, " ".join(console.export_text().split()), box, conflicts, letters, brownfield,
                  anyio.run(_shadow_report, settings))
    finally:
        box.close()
        brownfield.close()


def _mrr(box: Sandbox, account_id: str) -> Decimal:
    return Decimal(str(box.salesforce.record("Account", account_id)["MRR__c"]))


def _nue_mrr(box: Sandbox, customer_id: str) -> Decimal:
    return Decimal(str(box.nue.store.customers[customer_id]["todayCMRR"]))


class TestVisibleSync:
    def test_every_account_synced(self, run: Run) -> None:
        """Every webhook of the story is processed, nothing is left or dead, and Salesforce got the writes."""
        summary, text = run.summary, run.text
        assert summary["events_done"] >= 15
        assert summary["events_waiting"] == 0 and summary["dead_letters"] == 0 and summary["conflicts_open"] == 0
        assert summary["salesforce_writes"] >= 3
        assert "Acme Corp" in text and "3,900.00" in text  # the amendment's new MRR reached Salesforce
        assert "Paid" in text and "TransferError" in text  # the payment and the failed collection were logged
        assert "shows quote v2" in text and "1 amendment notes" in text
        assert "0 renewal opportunities" in text and "6 renewal opportunities" in text  # the sign-up's too
        # A customer made in Nue arrives as an account with its contacts and its state; an upsell as an amendment
        # opportunity in the pipeline.
        assert "new │ Zephyr Analytics │ Active │ 1,920.00" in text
        assert "contacts from Nue: Ada Byron, Bill Payne" in text
        assert "amendment opportunity Acme Corp - Upsell" in text and "(Upsell, 30,000.00)" in text


class TestConflict:
    def test_hand_edit_held_then_nue_taken(self, run: Run) -> None:
        """The hand edit opened a conflict with three different values; taking Nue wrote Nue's value."""
        ids = run.summary["hard_part"]["conflict"]
        [conflict] = run.conflicts
        nue = _nue_mrr(run.box, ids["customer_id"])
        assert conflict.id == ids["id"] and conflict.record_ref == f"salesforce:Account:{ids['account_id']}"
        assert Decimal(str(conflict.salesforce_values["MRR__c"])) == HAND_EDITED_MRR
        assert Decimal(str(conflict.nue_values["MRR__c"])) == nue
        assert Decimal(str(conflict.synced_values["MRR__c"])) not in (nue, HAND_EDITED_MRR)
        assert (conflict.status, conflict.resolution, conflict.resolved_by) == (
            ConflictStatus.RESOLVED, Resolution.TAKE_NUE, STORY_ACTOR)
        assert _mrr(run.box, ids["account_id"]) == nue


class TestDeadLetter:
    def test_refused_then_replayed_after_the_admin_fix(self, run: Run) -> None:
        """The picklist refused 'Overdue'; after the admin added it the replay wrote the billing event."""
        ids = run.summary["hard_part"]["dead_letter"]
        [letter] = run.letters
        assert letter.id == ids["id"] and letter.error_code == "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST"
        assert letter.replayed_at is not None
        written = {r["Nue_Event_Key__c"]: r for r in run.box.salesforce.records(BILLING_EVENT)}
        assert written[ids["event_key"]]["Status__c"] == "Overdue"


class TestDrift:
    def test_reported_then_repaired(self, run: Run) -> None:
        """The reconciliation reported the edited account alone; after the repair it shows Nue's MRR, no drift."""
        ids = run.summary["hard_part"]["drift"]
        assert ids["reported"] == [ids["customer_id"]] and ids["after_repair"] == []
        assert _mrr(run.box, ids["account_id"]) == _nue_mrr(run.box, ids["customer_id"]) != DRIFTED_MRR

    def test_tables_mark_each_step(self, run: Run) -> None:
        """The printed tables mark the conflict as new, its decision as changed and the repaired drift as gone."""
        assert "new │ #1 Acme Corp │ MRR__c │ 7,400.00 │ 3,500.00 │ 3,900.00 │ open" in run.text
        assert "changed │ #1 Acme Corp │ MRR__c │ 7,400.00 │ 3,500.00 │ 3,900.00 │ took nue (demo)" in run.text
        assert "gone │ Zephyr Analytics │ 1,920.00 │ 1,000.00 │ salesforce differs" in run.text


class TestGoLiveInShadowFirst:
    """The go-live chapter: a tenant with history read in shadow mode, its report, then promotion and a live run."""

    def test_shadow_mode_sent_nothing_and_the_live_run_did(self, run: Run) -> None:
        """The request logs showed no write while shadowing (taken then); after promotion they show writes."""
        assert run.summary["go_live"]["shadow_writes"] == {"salesforce": 0, "nue": 0}
        after = write_requests(run.brownfield)
        assert after["salesforce"] and after["nue"]

    def test_the_report_plans_orders_for_the_new_deals_and_write_backs_for_the_ordered_ones(self, run: Run) -> None:
        """Per flow 1 object: an order and a customer for each deal won since the cut-off and never ordered, a
        write-back for each deal Nue ordered without the opportunity showing it; one flag: the look-alike."""
        deals = won_deals(run.brownfield)
        to_order = len(deals["new"]) + len(deals["rep"]) + len(deals["seed"])
        ordered_unshown = len(deals["from_quote"]) + len(deals["by_hand"])
        report = run.summary["go_live"]["report"]
        counts = {(r["system"], r["object"]): r for r in report["counts"] if r["flow"] == "closed_won_to_order"}
        assert (counts["nue", "Order"]["create"], counts["nue", "Order"]["activate"]) == (to_order, to_order)
        assert counts["nue", "Customer"]["create"] == to_order
        assert counts["salesforce", "Opportunity"]["update"] == to_order + ordered_unshown
        look_alike = run.brownfield.nue.store.customers[run.summary["go_live"]["look_alike"]]
        [flag] = report["flags"]
        assert f"named {look_alike['name']!r} exists already" in flag["flag"]
        # The store keeps what shadow mode planned after promotion, with who promoted.
        assert run.shadow_report["counts"] == report["counts"] and report["promoted"] is None
        assert run.shadow_report["promoted"]["actor"] == STORY_ACTOR

    def test_after_promotion_each_deal_has_one_order_and_the_history_no_second(self, run: Run) -> None:
        box, deals = run.brownfield, won_deals(run.brownfield)
        look_alike = run.summary["go_live"]["look_alike"]
        [order] = orders_for(box, run.summary["go_live"]["rep_deal"])
        assert order["customerId"] == look_alike  # the flagged customer, linked, not a second one made
        assert sum(1 for c in box.nue.store.customers.values()
                   if c["name"] == box.nue.store.customers[look_alike]["name"]) == 1
        for kind in ("from_quote", "by_hand", "order_id_on_opportunity", "new", "rep", "seed"):
            for deal in deals[kind]:
                [order] = orders_for(box, deal)
                assert box.salesforce.record("Opportunity", deal)["Nue_Order_Id__c"] == order["id"], (kind, deal)
        for deal in deals["before_go_live"]:
            assert orders_for(box, deal) == [] and not box.salesforce.record("Opportunity", deal)["Nue_Order_Id__c"]
        # Flow 1's orders: as many written live as shadow mode planned.
        planned, written = run.summary["go_live"]["planned"], run.summary["go_live"]["written"]
        assert written[("closed_won_to_order", "nue", "Order")] == planned[("closed_won_to_order", "nue", "Order")]


class TestChangeMarks:
    @staticmethod
    def marks_of(marks: ChangeMarks, rows: list[tuple[str, list[str]]]) -> list[tuple[str, ...]]:
        table = marks.table("t", ("name", "mrr"), rows)
        cells = [[str(c) for c in column.cells] for column in table.columns]
        return list(zip(*cells, strict=True))

    def test_new_changed_gone_and_unchanged(self) -> None:
        """A row first shown is new; shown again it is unmarked, changed when a value differs, gone when absent."""
        marks = ChangeMarks()
        assert self.marks_of(marks, [("a", ["Acme", "1"]), ("b", ["Bolt", "2"])]) == [
            ("new", "Acme", "1"), ("new", "Bolt", "2")]
        assert self.marks_of(marks, [("a", ["Acme", "1"]), ("c", ["Cog", "3"])]) == [
            ("", "Acme", "1"), ("new", "Cog", "3"), ("gone", "Bolt", "2")]
        assert self.marks_of(marks, [("a", ["Acme", "5"]), ("c", ["Cog", "3"])]) == [
            ("changed", "Acme", "5"), ("", "Cog", "3")]


@pytest.mark.anyio
async def test_console_mode_prints_a_url_and_token_that_log_in(tmp_path: Path) -> None:
    """With the console the demo prints its URL and a fresh token, the console lets that token in and shows the
    conflict left open for the person; the token is never logged."""
    settings = _settings(tmp_path, REVDAEMON_CONSOLE__PORT="0")
    box = create_sandbox(key_dir=tmp_path / "keys", seed=1).start_threads()
    console = Console(record=True, width=400)
    seen: dict[str, Any] = {}

    async def person(access: ConsoleAccess) -> None:
        printed = console.export_text(clear=False)
        url, token = re.search(r"Web console: (http://\S+/) +log in with the token (\S+) ", printed).groups()  # type: ignore[union-attr]
        async with httpx.AsyncClient(base_url=url, timeout=10) as client:
            form = await client.get("/login")
            csrf = re.search(r'name="csrf" value="([^"]+)"', form.text)[1]  # type: ignore[index]
            wrong = await client.post("/login", data={"token": token[::-1], "csrf": csrf, "next": "/"})
            login = await client.post("/login", data={"token": token, "csrf": csrf, "next": "/conflicts"})
            page = await client.get("/conflicts")
        seen.update(url=url, token=token, access=access, wrong=wrong.status_code, login=login.status_code,
                    page=page.text, page_status=page.status_code)

    try:
        with capture_logs() as logs, anyio.fail_after(CONSOLE_RUN_SECONDS):
            summary = await run_demo(settings, console=console, box=box, with_console=True, serve=person)
    finally:
        box.close()
    conflicts, letters = await _decisions(settings)
    assert seen["url"] == seen["access"].url and seen["token"] == seen["access"].token and len(seen["token"]) >= 24
    assert (seen["wrong"], seen["login"]) == (401, 303)
    # Left for the person: the conflict open (and on the console's page), the dead letter not replayed.
    assert [c.status for c in conflicts] == [ConflictStatus.OPEN] and summary["conflicts_open"] == 1
    assert seen["page_status"] == 200 and conflicts[0].record_ref in seen["page"]
    assert [letter.replayed_at for letter in letters] == [None]
    assert seen["token"] not in json.dumps(logs, default=str)
