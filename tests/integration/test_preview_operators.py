"""Dry runs as operators meet them, against the sandbox: `reconcile --repair --dry-run`, `conflicts resolve
--dry-run` and a 1,000-record `backfill --dry-run` print what would be written, field by field, and send,
queue and store nothing."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections import Counter
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import unquote_plus

import anyio
import pytest
import yaml

from revdaemon import service
from revdaemon.config import load_settings
from revdaemon.engine.lookups import Fetcher
from revdaemon.engine.preview import comparable
from revdaemon.sandbox.nue.customers import link_synced_customer
from revdaemon.sandbox.runner import Sandbox
from revdaemon.sandbox.server import LoggedRequest
from revdaemon.store import open_store
from tests.integration.engine_fixtures import engine
from tests.integration.test_hand_edits import synced_then_edited
from tests.integration.test_reconcile import activate, set_accounts_from_nue
from tests.integration.test_sandbox_cli import sandbox_config
from tests.integration.test_sync_status import FIELDS, STATUS

STATUS_CONFIG = {"status_field": FIELDS.status_field, "synced_at_field": FIELDS.synced_at_field,
                 "error_field": FIELDS.error_field}


def cli(config: Path, *args: str, code: int = 0) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([sys.executable, "-m", "revdaemon.cli", *args, "--config", str(config)],
                            capture_output=True, text=True)
    assert result.returncode == code, result.stderr[-2000:]
    return result


def config_with_sync_status(sandbox: Sandbox, tmp_path: Path) -> Path:
    """The sandbox's config, with the sync status fields on the account and the opportunity."""
    path = sandbox_config(sandbox, tmp_path)
    document = yaml.safe_load(path.read_text())
    document["mapping"] = {"sync_status": {"Account": STATUS_CONFIG, "Opportunity": STATUS_CONFIG}}
    path.write_text(yaml.safe_dump(document))
    return path


def writes_sent(sandbox: Sandbox) -> list[LoggedRequest]:
    """Requests that change data: Salesforce's non-GETs but the login, Nue's non-GETs but GraphQL reads."""
    salesforce = [r for r in sandbox.salesforce.log.writes() if not r.path.startswith("/services/oauth2")]
    return salesforce + [r for r in sandbox.nue.log.writes() if r.path != "/async/graphql"]


def data_reads(sandbox: Sandbox) -> int:
    """Salesforce API calls (the login's token request is not one)."""
    return sandbox.salesforce.log.count(path_prefix="/services/data")


async def store_state(database: Path) -> dict[str, Any]:
    """Everything a dry run must leave as it was: events and their states, conflicts, writes, synced values."""
    store = await open_store(database, read_only=True)
    try:
        conflicts = await store.list_conflicts(status=None, limit=1000)
        return {"events": [(e.id, e.key, e.status, e.attempts) for e in await store.list_events(limit=1000)],
                "conflicts": [(c.id, c.status, c.resolution) for c in conflicts],
                "writes": [w.id for w in await store.list_writes(limit=1000)],
                "synced": await store.get_synced([c.record_ref for c in conflicts])}
    finally:
        await store.close()


class TestReconcileRepairDryRun:
    def test_prints_each_repair_field_by_field_and_queues_nothing(self, sandbox: Sandbox, tmp_path: Path) -> None:
        """The stale account's repair is shown (Salesforce's value -> Nue's, the status fields too), the other
        accounts need none; no event is queued and nothing is sent."""
        linked = activate(sandbox, 3)
        set_accounts_from_nue(sandbox, linked)
        stale_customer, stale_account = linked[1]
        sandbox.salesforce.update("Account", stale_account, {"MRR__c": 1.0, "Subscription_Status__c": "Churned"})
        path = config_with_sync_status(sandbox, tmp_path)
        database = load_settings(path, environ={}).database_path
        database.parent.mkdir(parents=True)
        anyio.run(_create_store, database)
        before = anyio.run(store_state, database)
        sandbox.salesforce.log.clear()
        sandbox.nue.log.clear()

        shown = json.loads(cli(path, "reconcile", "--repair", "--dry-run", "--json", code=5).stdout)
        text = cli(path, "reconcile", "--repair", "--dry-run", code=5).stdout

        assert writes_sent(sandbox) == []
        assert anyio.run(store_state, database) == before  # nothing queued
        assert shown["repairs"] == []
        preview = shown["dry_run"]
        [event] = preview["events"]
        assert event["event_key"].startswith(f"reconcile:{stale_customer}:")
        [write] = event["writes"]
        assert (write["system"], write["action"], write["target"]) == ("salesforce", "update",
                                                                      f"Account {stale_account}")
        fields = {f["field"]: f for f in write["fields"]}
        nue_mrr = sandbox.nue.store.customers[stale_customer]["todayCMRR"]
        assert fields["MRR__c"]["current"] == 1.0 and Decimal(fields["MRR__c"]["planned"]) == nue_mrr
        assert (fields["Subscription_Status__c"]["current"], fields["Subscription_Status__c"]["planned"]) == (
            "Churned", "Active")
        assert fields["Nue_Sync_Status__c"]["planned"] == "Synced"
        assert preview["writes"] == 1 and preview["fields_changed"] >= 3
        assert "Churned" in text and "MRR__c" in text and "nothing was sent" in text

    def test_dry_run_needs_repair(self, sandbox: Sandbox, tmp_path: Path) -> None:
        result = cli(sandbox_config(sandbox, tmp_path), "reconcile", "--dry-run", code=2)
        assert "--repair" in result.stderr


async def _create_store(database: Path) -> None:
    """A state store as a running daemon leaves it (empty here), to show the dry run adds nothing to it."""
    store = await open_store(database)
    await store.close()


class TestConflictResolveDryRun:
    def test_take_nue_shows_nues_values_over_the_edit_and_changes_nothing(self, sandbox: Sandbox,
                                                                          tmp_path: Path) -> None:
        """`conflicts resolve N --take nue --dry-run` prints the account write (the hand-edited value -> Nue's,
        with the status fields); the conflict stays open and nothing is sent. Resolving it for real then
        writes exactly those values."""
        path = config_with_sync_status(sandbox, tmp_path)
        database = load_settings(path, environ={}).database_path
        database.parent.mkdir(parents=True)

        async def make_conflict() -> tuple[str, str, int]:
            async with engine(sandbox, tmp_path) as e:
                customer_id, account_id, _subs = await synced_then_edited(sandbox, e, 0)
                [conflict] = await e.store.list_conflicts()
                await e.store.backup(database)  # the daemon's state store, as the command line opens it
            return customer_id, account_id, conflict.id

        customer_id, account_id, conflict_id = anyio.run(make_conflict)
        before = anyio.run(store_state, database)
        sandbox.salesforce.log.clear()
        sandbox.nue.log.clear()

        shown = json.loads(cli(path, "conflicts", "resolve", str(conflict_id), "--take", "nue", "--dry-run",
                               "--json").stdout)
        text = cli(path, "conflicts", "resolve", str(conflict_id), "--take", "nue", "--dry-run").stdout

        assert writes_sent(sandbox) == []
        assert anyio.run(store_state, database) == before  # still open, its event still waiting
        [event] = shown["events"]
        assert event["outcome"] == "writes", event
        [write] = event["writes"]
        assert write["target"] == f"Account {account_id}"
        fields = {f["field"]: f for f in write["fields"]}
        nue_mrr = sandbox.nue.store.customers[customer_id]["todayCMRR"]
        assert fields["MRR__c"]["current"] == 1.0 and Decimal(fields["MRR__c"]["planned"]) == nue_mrr
        assert fields["Nue_Sync_Status__c"]["planned"] == "Synced"
        assert "MRR__c" in text and "nothing was sent" in text

        async def resolve_for_real() -> None:
            async with engine(sandbox, tmp_path, sync_status=STATUS) as e:  # the same store the conflict is in
                await service.resolve_conflict(e.store, conflict_id, take="nue", actor="test")
                assert await e.worker.run_once() == 1

        anyio.run(resolve_for_real)
        account = sandbox.salesforce.record("Account", account_id)
        for name, change in fields.items():
            if name != FIELDS.synced_at_field:
                assert comparable(account[name]) == comparable(change["planned"]), name

    @pytest.mark.anyio
    async def test_take_salesforce_or_skip_writes_nothing_and_says_so(self, sandbox: Sandbox,
                                                                      tmp_path: Path) -> None:
        async with engine(sandbox, tmp_path) as e:
            await synced_then_edited(sandbox, e, 1)
            [conflict] = await e.store.list_conflicts()
            database = tmp_path / "engine.sqlite3"
            fetcher = Fetcher(e.salesforce, e.nue, e.store)
            before = await store_state(database)
            sandbox.salesforce.log.clear()
            sandbox.nue.log.clear()
            previews = {take: await service.preview_resolution(e.store, conflict.id, take, e.worker._flows, fetcher)
                        for take in ("salesforce", "skip")}
            assert await store_state(database) == before
        assert sandbox.salesforce.log.entries() == [] and sandbox.nue.log.entries() == []  # not even a read
        for take, preview in previews.items():
            [event] = preview.events
            assert (event.outcome, event.writes, preview.writes) == ("nothing", (), 0), take
            assert event.note and "nothing is written" in event.note

    @pytest.mark.anyio
    async def test_a_resolved_conflict_is_refused(self, sandbox: Sandbox, tmp_path: Path) -> None:
        from revdaemon.errors import StoreError

        async with engine(sandbox, tmp_path) as e:
            await synced_then_edited(sandbox, e, 2)
            [conflict] = await e.store.list_conflicts()
            await service.resolve_conflict(e.store, conflict.id, take="skip", actor="test")
            fetcher = Fetcher(e.salesforce, e.nue, e.store)
            with pytest.raises(StoreError, match="already resolved"):
                await service.preview_resolution(e.store, conflict.id, "nue", e.worker._flows, fetcher)


    def test_all_open_dry_run_prints_one_preview_and_changes_nothing(self, sandbox: Sandbox, tmp_path: Path) -> None:
        """`conflicts resolve --all-open --take nue --dry-run` plans both open conflicts' account writes in one
        preview; both stay open, their events waiting, and nothing is sent."""
        path = config_with_sync_status(sandbox, tmp_path)
        database = load_settings(path, environ={}).database_path
        database.parent.mkdir(parents=True)

        async def make_conflicts() -> list[str]:
            async with engine(sandbox, tmp_path) as e:
                accounts = [(await synced_then_edited(sandbox, e, index))[1] for index in (3, 4)]
                await e.store.backup(database)
            return accounts

        accounts = anyio.run(make_conflicts)
        before = anyio.run(store_state, database)
        sandbox.salesforce.log.clear()
        sandbox.nue.log.clear()
        shown = json.loads(cli(path, "conflicts", "resolve", "--all-open", "--take", "nue", "--dry-run",
                               "--json").stdout)
        assert writes_sent(sandbox) == []
        assert anyio.run(store_state, database) == before
        assert sorted(w["target"] for e in shown["events"] for w in e["writes"]) == sorted(
            f"Account {account}" for account in accounts)
        assert shown["writes"] == 2

    @pytest.mark.anyio
    async def test_many_at_once_are_one_preview_that_stores_and_sends_nothing(self, sandbox: Sandbox,
                                                                             tmp_path: Path) -> None:
        """Three conflicts previewed together taking Nue: one preview, each open one's account write (the typed
        value -> Nue's), the one another admin decided meanwhile shown as skipped; the store is as it was and
        neither simulator received a write. Resolving the three then decides the two and names the third."""
        async with engine(sandbox, tmp_path) as e:
            accounts = [(await synced_then_edited(sandbox, e, index))[1] for index in range(3)]
            ids = sorted(c.id for c in await e.store.list_conflicts())
            await service.resolve_conflict(e.store, ids[2], take="skip", actor="bo")
            database = tmp_path / "engine.sqlite3"
            before = await store_state(database)
            sandbox.salesforce.log.clear()
            sandbox.nue.log.clear()
            preview = await service.preview_resolutions(e.store, ids, "nue", e.worker._flows,
                                                        Fetcher(e.salesforce, e.nue, e.store))
            assert await store_state(database) == before
            assert writes_sent(sandbox) == []
            done = await service.resolve_conflicts(e.store, ids, take="nue", actor="ana", comment="Nue is right")
            actions = [w for w in await e.store.list_writes(limit=100) if w.system == "operator"]

        by_outcome = Counter(shown.outcome for shown in preview.events)
        assert by_outcome == {"writes": 2, "skipped": 1} and preview.writes == 2
        targets = [w.target for shown in preview.events for w in shown.writes]
        assert targets == [f"Account {account}" for account in accounts[:2]]
        for write in (w for shown in preview.events for w in shown.writes):
            [mrr] = [f for f in write.fields if f.field == "MRR__c"]
            assert mrr.current == 1.0 and mrr.changes
        [skipped] = [shown for shown in preview.events if shown.outcome == "skipped"]
        assert skipped.note == f"conflict {ids[2]} is already resolved (skip by bo): it is skipped"
        assert [row["id"] for row in done["resolved"]] == ids[:2]
        assert done["skipped"] == [{"id": ids[2], "record_ref": f"salesforce:Account:{accounts[2]}",
                                    "flow": "subscription_status",
                                    "reason": "already resolved (skip by bo)"}]
        assert Counter((a.operation, a.detail["actor"]) for a in actions) == {
            ("resolve conflict: take nue", "ana"): 2, ("resolve conflict: take skip", "bo"): 1}


def seed_linked_customers(sandbox: Sandbox, count: int) -> list[tuple[str, str]]:
    """`count` Salesforce accounts, each with a linked Nue customer and an activated order: made in-process
    through the simulators' own Python APIs, so not one HTTP call (and the request logs hold only what the
    dry run does)."""
    linked = []
    for index in range(count):
        name = f"Bulk Customer {index:04d}"
        account_id = sandbox.salesforce.create("Account", {"Name": name})
        customer = link_synced_customer(sandbox.nue.store, account_id=account_id,
                                        fields={"name": name, "recordType": "Business"})
        sandbox.nue.scenario.create_and_activate_order(customer["id"], opportunity=index % 6)
        linked.append((str(customer["id"]), account_id))
    return linked


def queries_per_object(sandbox: Sandbox) -> Counter[str]:
    """Salesforce SOQL reads, by the object each selects FROM."""
    selects = (re.search(r"\bFROM (\w+)", unquote_plus(r.query)) for r in sandbox.salesforce.log.entries()
               if r.path.endswith("/query"))
    return Counter(match[1] for match in selects if match)


class TestBackfillDryRun:
    def test_1000_customers_send_no_write_and_read_in_long_lists(self, sandbox: Sandbox, tmp_path: Path) -> None:
        """A backfill of 1,000 customers (with the 2,000+ subscriptions and 1,000 orders that made them) planned
        together: each Salesforce object is read in SOQL IN lists as long as a query's URL may be (about 500 ids),
        once, the status fields included. The customers' and subscriptions' flow takes 2 reads in all; with every
        flow (the orders' onboarding Tasks too) 5: the poll, 2 for the accounts, 2 for their Tasks."""
        linked = seed_linked_customers(sandbox, 1000)
        path = config_with_sync_status(sandbox, tmp_path)
        since = (datetime.now(UTC) - timedelta(days=1)).date().isoformat()
        counts: dict[str, tuple[int, int, Counter[str]]] = {}
        shown: dict[str, Any] = {}
        for flow in ("subscription_status", "all"):
            sandbox.salesforce.log.clear()
            sandbox.nue.log.clear()
            chosen = ("--flow", flow) if flow != "all" else ()
            shown[flow] = json.loads(cli(path, "backfill", "--since", since, *chosen, "--dry-run", "--json").stdout)
            assert writes_sent(sandbox) == []
            counts[flow] = (data_reads(sandbox), sandbox.nue.log.count(), queries_per_object(sandbox))
            print(f"1,000-customer backfill dry run ({flow}): {counts[flow][0]} Salesforce reads "
                  f"{dict(counts[flow][2])}, {counts[flow][1]} Nue reads")

        salesforce_reads, nue_reads, by_object = counts["subscription_status"]
        assert salesforce_reads <= 10 and by_object == {"Account": 2}
        assert nue_reads <= 50  # polls and lookups in pages and batches, not one call per record
        preview = shown["subscription_status"]
        targets = {w["target"] for e in preview["events"] for w in e["writes"]}
        assert targets == {f"Account {account_id}" for _customer, account_id in linked}
        assert preview["writes"] == 1000  # each account's write once, however many changes plan it
        assert all(FIELDS.status_field in {f["field"] for f in w["fields"]} for e in preview["events"]
                   for w in e["writes"])

        salesforce_reads, nue_reads, by_object = counts["all"]
        assert by_object == {"Opportunity": 1, "Account": 2, "Task": 2}  # 1,000 ids each, about 500 per IN list
        assert nue_reads <= 60
        assert {w["target"].split()[0] for e in shown["all"]["events"] for w in e["writes"]} == {"Account", "Task"}
        assert not load_settings(path, environ={}).database_path.exists()  # no state store made either


class TestReplayPreviewWarnsOfTheSameError:
    @pytest.mark.anyio
    async def test_a_restricted_picklist_still_lacking_the_value_is_warned_of_until_it_is_added(
            self, sandbox: Sandbox, tmp_path: Path) -> None:
        """A billing event refused for "Overdue" missing from the restricted picklist: the letter says how to fix
        it, the replay's preview warns while describe still lacks the value, and no longer once it is added."""
        import httpx

        from revdaemon.flows.billing_events import BillingEventsFlow
        from tests.integration.test_flow_billing import billed_customer, deliver, new_webhooks

        def status_values(values: list[str]) -> None:  # the admin editing the field in Setup
            response = httpx.post(f"{sandbox.salesforce_url}/__sandbox/schema", json={"add": [{
                "object": "Nue_Billing_Event__c", "name": "Status__c", "type": "picklist", "label": "Status",
                "restricted": True, "picklist": values}]})
            assert response.status_code == 200, response.text

        status_values(["Posted", "Paid", "Void"])
        customer_id, _account_id = billed_customer(sandbox, 0)
        flows = [BillingEventsFlow()]
        seen: list[Any] = []
        async with engine(sandbox, tmp_path, flows=flows) as e:
            invoice = sandbox.nue.scenario.post_invoice(customer_id, activate=True)
            await deliver(e, new_webhooks(sandbox, seen))
            sandbox.nue.scenario.fail_collection(invoice["id"])
            await deliver(e, new_webhooks(sandbox, seen))
            [letter] = await e.store.list_dead_letters()
            assert letter.error_code == "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST"
            shown = await service.show_dead_letter(e.store, letter.id)
            assert shown["fix"].startswith("Add the value 'Overdue' to the restricted picklist "
                                           "Nue_Billing_Event__c.Status__c")
            fetcher = Fetcher(e.salesforce, e.nue, e.store)

            before = await service.preview_replay(e.store, [letter.id], flows, fetcher)
            [write] = [w for ev in before.events for w in ev.writes]
            assert write.target.startswith("Nue_Billing_Event__c ") and before.warnings == 1
            [warning] = write.warnings
            assert warning.startswith("INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST: ") and "'Overdue'" in warning

            status_values(["Posted", "Paid", "Overdue", "Void"])
            after = await service.preview_replay(e.store, [letter.id], flows, fetcher)
            assert after.warnings == 0 and [w.warnings for ev in after.events for w in ev.writes] == [()]
