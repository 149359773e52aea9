"""The operators' commands against a store with known content."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path

import anyio
import pytest
import yaml
from click.testing import CliRunner

from revdaemon import service
from revdaemon.cli import main
from revdaemon.engine.lookups import Fetcher
from revdaemon.errors import RecordNotFound
from revdaemon.store import open_store
from revdaemon.store.records import NewAuditEntry, NewConflict, NewDeadLetter, NewEvent, NewShadowEntry

ROOT = Path(__file__).resolve().parents[2]
NO_FETCHER: Fetcher = None  # type: ignore[assignment]  # an id refused before any read needs no fetcher


def store_with_rows(state_dir: Path) -> None:
    """A store in `state_dir` holding one done event, one dead letter (id 1) and one open conflict (id 1)."""

    async def fill() -> None:
        store = await open_store(state_dir / "revdaemon.sqlite3")
        try:
            await store.add_events([NewEvent(source="nue_webhook", key=f"k{i}", type="order.activated",
                                             payload={"data": {"id": f"o{i}"}}) for i in range(3)])
            a, b, c = await store.claim_events(worker="w", limit=3, lease=timedelta(minutes=5))
            await store.record_write(NewAuditEntry(system="salesforce", operation="SfUpdate", target="Account",
                                                   outcome="ok", event_id=a.id, record_ref="salesforce:Account:001"))
            await store.complete_event(a.id)
            await store.dead_letter_event(b.id, NewDeadLetter(
                system="salesforce", operation="upsert Account", error="Required fields are missing: [Name]",
                error_code="REQUIRED_FIELD_MISSING", status=400, record_ref="salesforce:Account:Nue_Id__c=c1",
                request={"sent": {"kind": "SfUpsert", "target": "salesforce:Account:Nue_Id__c=c1",
                                  "fields": {"Name": None, "MRR__c": 1400}},
                         "items": [{"code": "REQUIRED_FIELD_MISSING", "message": "Required fields are missing: [Name]",
                                    "fields": ["Name"]}]}))
            await store.conflict_event(c.id, NewConflict(flow="closed_won_to_order", record_ref="sf:006",
                                                         reason="edited after the order",
                                                         nue_values={"qty": "2"}, salesforce_values={"qty": "3"}))
        finally:
            await store.close()

    anyio.run(fill)


@pytest.fixture
def config(tmp_path: Path) -> Path:
    """A config whose store holds one done event, one dead letter and one open conflict."""
    document = yaml.safe_load((ROOT / "config.yaml").read_text())
    document["state_dir"] = str(tmp_path / "state")
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(document))
    store_with_rows(tmp_path / "state")
    return path


def run(config: Path, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, [*args, "--config", str(config)])
    return result.exit_code, result.output


class TestEvents:
    def test_list_and_show(self, config: Path) -> None:
        """Events list by status; show carries the payload and the writes the event caused."""
        code, out = run(config, "events", "list", "--json")
        assert code == 0 and {e["status"] for e in json.loads(out)} == {"done", "dead", "conflict"}
        code, out = run(config, "events", "list", "--status", "done", "--json")
        [done] = json.loads(out)
        code, out = run(config, "events", "show", str(done["id"]), "--json")
        shown = json.loads(out)
        assert shown["payload"] == {"data": {"id": "o0"}}
        assert shown["writes"][0]["record_ref"] == "salesforce:Account:001"

    def test_show_reads_as_a_summary_and_json_on_request(self, config: Path) -> None:
        """Without --json: the event in words, its payload on a line, the writes it caused as a table."""
        [done] = json.loads(run(config, "events", "list", "--status", "done", "--json")[1])
        code, out = run(config, "events", "show", str(done["id"]))
        assert code == 0
        assert out.startswith(f"event {done['id']}: order.activated from nue_webhook, done after 1 attempt(s)")
        assert 'payload: {"data": {"id": "o0"}}' in out
        [write] = [line for line in out.splitlines() if "salesforce:Account:001" in line]
        assert "SfUpdate" in write and "ok" in write and "{" not in out.split("payload:")[0]

    def test_unknown_event(self, config: Path) -> None:
        """Showing an event that does not exist says so and exits non-zero."""
        code, out = run(config, "events", "show", "999")
        assert code != 0 and "no event 999" in out


class TestDeadLetters:
    def test_list_show_replay(self, config: Path) -> None:
        """A dead letter shows the API's error; replay puts its event back and it leaves the open list."""
        code, out = run(config, "dead-letters", "list", "--json")
        [letter] = json.loads(out)
        assert letter["error_code"] == "REQUIRED_FIELD_MISSING"
        code, out = run(config, "dead-letters", "show", str(letter["id"]))
        assert code == 0 and "Required fields are missing" in out
        code, out = run(config, "dead-letters", "replay", "--all", "--json")
        assert code == 0 and json.loads(out)[0]["status"] == "received"
        assert json.loads(run(config, "dead-letters", "list", "--json")[1]) == []

    def test_show_reads_as_a_summary_with_the_fix_and_the_sent_record(self, config: Path) -> None:
        """Without --json: who and what, the error with its code and status, the fix, the sent fields, the replay."""
        code, out = run(config, "dead-letters", "show", "1")
        assert code == 0 and out.startswith("dead letter 1 (open): salesforce refused upsert Account, record "
                                            "salesforce:Account:Nue_Id__c=c1")
        assert "error: REQUIRED_FIELD_MISSING (HTTP 400): Required fields are missing: [Name]" in out
        assert "fix: Account requires Name and revdaemon sent it empty" in out
        assert "what was sent: SfUpsert of salesforce:Account:Nue_Id__c=c1" in out
        [mrr] = [line for line in out.splitlines() if "MRR__c" in line]
        assert "1400" in mrr
        assert "revdaemon dead-letters replay 1 --dry-run" in out
        shown = json.loads(run(config, "dead-letters", "show", "1", "--json")[1])
        assert shown["request"]["sent"]["fields"] == {"Name": None, "MRR__c": 1400}
        assert shown["fix"].startswith("Account requires Name")

    def test_show_an_old_letter_without_the_sent_record(self, tmp_path: Path, config: Path) -> None:
        """A letter written before revdaemon kept what it sent still prints, and says the record was not kept."""

        async def add() -> None:
            store = await open_store(tmp_path / "state" / "revdaemon.sqlite3")
            try:
                await store.add_events([NewEvent(source="nue_webhook", key="old", type="order.activated",
                                                 payload={})])
                [event] = await store.claim_events(worker="w", limit=1, lease=timedelta(minutes=5))
                await store.dead_letter_event(event.id, NewDeadLetter(system="nue", operation="create order",
                                                                      error="quantity must be positive"))
            finally:
                await store.close()

        anyio.run(add)
        [old] = [d for d in json.loads(run(config, "dead-letters", "list", "--json")[1]) if d["system"] == "nue"]
        code, out = run(config, "dead-letters", "show", str(old["id"]))
        assert code == 0 and "error: quantity must be positive" in out
        assert "what was sent: not recorded" in out and "fix:" not in out

    def test_a_piped_table_is_not_cut_at_80_columns(self, config: Path) -> None:
        """Piped (not a terminal), a row keeps its whole error on one line: `| grep` and `| less` see it all."""
        code, out = run(config, "dead-letters", "list")
        [row] = [line for line in out.splitlines() if "REQUIRED_FIELD_MISSING" in line]
        assert code == 0 and "Required fields are missing: [Name]" in row and len(row) > 80

    def test_list_and_replay_by_error_code(self, config: Path) -> None:
        """--code lists only the letters of one error code, and replays all of them; a code none has is refused."""
        assert json.loads(run(config, "dead-letters", "list", "--code", "STRING_TOO_LONG", "--json")[1]) == []
        [letter] = json.loads(run(config, "dead-letters", "list", "--code", "REQUIRED_FIELD_MISSING", "--json")[1])
        code, out = run(config, "dead-letters", "replay", "--code", "STRING_TOO_LONG")
        assert code == 2 and "no open dead letter has the error code STRING_TOO_LONG" in out
        code, _ = run(config, "dead-letters", "replay", "1", "--code", "REQUIRED_FIELD_MISSING")
        assert code == 2  # ids or a code, not both
        code, out = run(config, "dead-letters", "replay", "--code", "REQUIRED_FIELD_MISSING", "--json")
        assert code == 0 and [row["id"] for row in json.loads(out)] == [letter["event_id"]]
        assert json.loads(run(config, "dead-letters", "list", "--json")[1]) == []

    def test_a_dry_run_prints_each_warning_describe_gives(self, capsys: pytest.CaptureFixture[str]) -> None:
        """replay --dry-run's printout names, under the write, why Salesforce would refuse it again."""
        from revdaemon.cli import _print_preview
        from revdaemon.engine.preview import EventPreview, FieldChange, PlannedWrite, Preview

        write = PlannedWrite(system="salesforce", action="create", target="Nue_Billing_Event__c Key__c=k",
                             fields=(FieldChange(field="Status__c", current=None, planned="Overdue"),),
                             warnings=("INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST: the restricted picklist "
                                       "Nue_Billing_Event__c.Status__c has no value 'Overdue'",))
        _print_preview(Preview(events=(EventPreview(event_id=1, event_key="k", flow="billing_events",
                                                    writes=(write,)),)), False)
        out = capsys.readouterr().out
        assert "warning: Salesforce would refuse this again: INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST" in out
        assert out.rstrip().endswith("1 write(s) would be refused as describe stands")

    def test_replay_needs_ids_or_all(self, config: Path) -> None:
        """replay without ids and without --all is a usage error."""
        code, _ = run(config, "dead-letters", "replay")
        assert code == 2


class TestConflicts:
    def test_show_reads_as_a_summary_with_the_fields_side_by_side(self, config: Path) -> None:
        """Without --json: who, what and why in words, then field | Nue | Salesforce, the differing ones starred."""
        code, out = run(config, "conflicts", "show", "1")
        assert code == 0 and out.startswith("conflict 1 (open): flow closed_won_to_order, record sf:006")
        assert "why: edited after the order" in out
        [qty] = [line for line in out.splitlines() if " qty " in line]
        assert qty.split()[:4] == ["│", "*", "│", "qty"] and "2" in qty and "3" in qty
        assert "revdaemon conflicts resolve 1 --take nue|salesforce|skip" in out

    def test_show_marks_differences_and_resolve_records_who(self, config: Path) -> None:
        """The detail sets the two sides beside each other; resolving records the actor and the choice."""
        [conflict] = json.loads(run(config, "conflicts", "list", "--json")[1])
        shown = json.loads(run(config, "conflicts", "show", str(conflict["id"]), "--json")[1])
        assert shown["fields"] == [{"field": "qty", "nue": "2", "salesforce": "3", "synced": None, "differs": True}]
        code, out = run(config, "conflicts", "resolve", str(conflict["id"]), "--take", "skip", "--actor", "ops@x",
                        "--comment", "duplicate deal", "--json")
        assert code == 0 and json.loads(out)["resolved_by"] == "ops@x"
        assert json.loads(run(config, "conflicts", "list", "--json")[1]) == []


def more_conflicts(state_dir: Path) -> None:
    """Beside the fixture's conflict 1: conflict 2 (closed_won_to_order), decided by bo already, and 3 and 4
    (subscription_status), open."""

    async def fill() -> None:
        store = await open_store(state_dir / "revdaemon.sqlite3")
        try:
            await store.add_events([NewEvent(source="nue_webhook", key=f"more{i}", type="subscription.updated",
                                             payload={"data": {"id": f"s{i}"}}) for i in range(3)])
            events = await store.claim_events(worker="w", limit=3, lease=timedelta(minutes=5))
            for event, (flow, ref) in zip(events, [("closed_won_to_order", "sf:007"),
                                                   ("subscription_status", "sf:001A"),
                                                   ("subscription_status", "sf:001B")], strict=True):
                await store.conflict_event(event.id, NewConflict(flow=flow, record_ref=ref, reason="edited"))
            await service.resolve_conflict(store, 2, take="skip", actor="bo")
        finally:
            await store.close()

    anyio.run(fill)


class TestResolveMany:
    def test_several_ids_resolve_and_the_one_decided_meanwhile_is_skipped(self, config: Path) -> None:
        """`resolve 1 2 3`: 1 and 3 are decided by the actor; 2, decided by bo already, is skipped with why,
        in the JSON and in the table."""
        more_conflicts(config.parent / "state")
        code, out = run(config, "conflicts", "resolve", "1", "2", "3", "--take", "salesforce", "--actor", "ops@x",
                        "--comment", "reps are right", "--json")
        done = json.loads(out)
        assert code == 0 and [(r["id"], r["resolved_by"]) for r in done["resolved"]] == [(1, "ops@x"), (3, "ops@x")]
        assert done["skipped"] == [{"id": 2, "record_ref": "sf:007", "flow": "closed_won_to_order",
                                    "reason": "already resolved (skip by bo)"}]
        assert [c["id"] for c in json.loads(run(config, "conflicts", "list", "--json")[1])] == [4]
        code, out = run(config, "conflicts", "resolve", "3", "4", "--take", "skip")
        assert code == 0 and "1 resolved, 1 skipped" in out
        [three] = [line for line in out.splitlines() if "sf:001A" in line]
        assert "skipped" in three and "already resolved (take salesforce by ops@x)" in " ".join(out.split())

    def test_flow_and_all_open_pick_the_open_conflicts(self, config: Path) -> None:
        """--flow takes only that flow's open conflicts; --all-open takes the rest; a flow with none says so."""
        more_conflicts(config.parent / "state")
        code, out = run(config, "conflicts", "resolve", "--flow", "subscription_status", "--take", "skip", "--json")
        assert code == 0 and [r["id"] for r in json.loads(out)["resolved"]] == [3, 4]
        code, out = run(config, "conflicts", "resolve", "--flow", "renewals", "--take", "skip", "--json")
        assert code == 0 and json.loads(out.splitlines()[-1]) == {"take": "skip", "resolved": [], "skipped": []}
        assert "no open conflicts of flow 'renewals' (open ones are of: closed_won_to_order)" in out
        code, out = run(config, "conflicts", "resolve", "--all-open", "--take", "nue", "--json")
        assert code == 0 and [r["id"] for r in json.loads(out)["resolved"]] == [1]
        assert json.loads(run(config, "conflicts", "list", "--json")[1]) == []

    def test_ids_or_a_selector_not_both_nor_neither(self, config: Path) -> None:
        """Ids with --flow or --all-open, or none of the three, is bad usage and decides nothing."""
        for args in (("1", "--flow", "closed_won_to_order"), ("1", "--all-open"), ()):
            code, out = run(config, "conflicts", "resolve", *args, "--take", "skip")
            assert code == 2 and "give conflict ids, or --flow NAME, or --all-open" in out, args
        assert len(json.loads(run(config, "conflicts", "list", "--json")[1])) == 1

class TestBackup:
    def test_backup_is_a_usable_copy(self, config: Path, tmp_path: Path) -> None:
        """The backup opens as a database holding the same events."""
        code, out = run(config, "backup", str(tmp_path / "copy.sqlite3"), "--json")
        assert code == 0 and json.loads(out)["bytes"] > 0
        with sqlite3.connect(tmp_path / "copy.sqlite3") as conn:
            assert conn.execute("SELECT count(*) FROM inbox_events").fetchone()[0] == 3


# Ids no stored row can have: past the store's signed 64-bit ids (the driver would raise OverflowError), not
# positive, not a number, and a 300-digit number.
IMPOSSIBLE_IDS = [str(2**63), str(2**64 + 1), "-1", "0", "abc", "1e3", "9" * 300]
ID_COMMANDS = [("events", "show"), ("dead-letters", "show"), ("dead-letters", "replay"), ("conflicts", "show"),
               ("conflicts", "resolve", "--take", "nue"), ("conflicts", "resolve", "--take", "nue", "--dry-run")]


class TestImpossibleIds:
    @pytest.mark.parametrize("bad", IMPOSSIBLE_IDS)
    @pytest.mark.parametrize("command", ID_COMMANDS, ids=" ".join)
    def test_refused_as_no_such_record(self, config: Path, command: tuple[str, ...], bad: str) -> None:
        """Every command that takes an id says there is no such record, as bad usage (exit 2), without a trace."""
        result = CliRunner().invoke(main, [*command, "--config", str(config), "--", bad])
        kind = {"events": "event", "dead-letters": "dead letter", "conflicts": "conflict"}[command[0]]
        assert result.exit_code == 2 and f"no such {kind}" in result.output, result.output
        assert isinstance(result.exception, SystemExit) and "Traceback" not in result.output

    def test_replay_changes_nothing_when_one_id_is_impossible(self, config: Path) -> None:
        """A replay naming a real dead letter and an impossible one replays neither."""
        [letter] = json.loads(run(config, "dead-letters", "list", "--json")[1])
        result = CliRunner().invoke(main, ["dead-letters", "replay", "--config", str(config), "--",
                                           str(letter["id"]), str(2**63)])
        assert result.exit_code == 2
        assert len(json.loads(run(config, "dead-letters", "list", "--json")[1])) == 1

    def test_a_mapping_version_past_the_column_is_not_found(self, config: Path) -> None:
        """`mappings show` with a version past the store's integer columns says there is none, exit 1."""
        for version in (str(2**31), str(2**63), "9" * 300):
            code, out = run(config, "mappings", "show", version)
            assert code == 1 and "no mapping version" in out and "Traceback" not in out

    def test_a_list_limit_past_the_store_is_bad_usage(self, config: Path) -> None:
        """`events list --limit` takes 1 to 2^63 - 1 rows: a larger one or 0 is bad usage, not a trace."""
        for limit in (str(2**63), "0"):
            code, out = run(config, "events", "list", "--limit", limit)
            assert code == 2 and "Traceback" not in out


class TestServiceIds:
    @pytest.mark.parametrize("bad", [2**63, 2**64 + 1, -1, 0, 10**300])
    def test_an_impossible_id_is_not_found(self, config: Path, bad: int) -> None:
        """The service functions the CLI and the console share answer RecordNotFound, never OverflowError."""
        async def each() -> list[str]:
            store = await open_store(config.parent / "state" / "revdaemon.sqlite3")
            calls: list[Callable[[], Awaitable[object]]] = [
                lambda: service.show_event(store, bad), lambda: service.show_dead_letter(store, bad),
                lambda: service.replay_dead_letters(store, [bad]), lambda: service.show_conflict(store, bad),
                lambda: service.resolve_conflict(store, bad, take="skip", actor="ops"),
                lambda: service.preview_resolution(store, bad, "skip", [], NO_FETCHER),
                lambda: service.preview_replay(store, [bad], [], NO_FETCHER),
                # With a real id first: the impossible one refuses the selection before the first is decided.
                lambda: service.resolve_conflicts(store, [1, bad], take="skip", actor="ops"),
                lambda: service.preview_resolutions(store, [1, bad], "skip", [], NO_FETCHER)]
            refused = []
            try:
                for call in calls:
                    with pytest.raises(RecordNotFound) as caught:
                        await call()
                    refused.append(str(caught.value))
            finally:
                await store.close()
            return refused

        assert all(message.startswith("no such ") for message in anyio.run(each))
        assert [c["id"] for c in json.loads(run(config, "conflicts", "list", "--json")[1])] == [1]  # still open


class TestStatusDrift:
    def test_status_shows_the_latest_reports_drift(self, config: Path) -> None:
        """`status` says how many customers drifted in the latest report and the MRR difference per currency;
        before any report it says there is none."""
        code, out = run(config, "status")
        assert code == 0 and "reconciliation: no report yet" in out
        report = {"generated_at": "2026-03-01T02:30:00+00:00", "rows": [
            {"customer_id": "c1", "drift": "salesforce_differs", "currency": "USD", "nue_cmrr": "100.00",
             "salesforce_mrr": "90.00"},
            {"customer_id": "c2", "drift": "in_sync", "currency": "USD", "nue_cmrr": "5.00", "salesforce_mrr": "5.00"}]}
        (config.parent / "state" / "reconciliation.json").write_text(json.dumps(report))
        code, out = run(config, "status")
        assert code == 0
        assert ("reconciliation of 2026-03-01T02:30:00+00:00: 1 customer(s) drifted; MRR difference (Salesforce "
                "minus Nue): USD -10.00") in out.replace("\n", " ")
        code, out = run(config, "status", "--json")
        assert json.loads(out)["drift"]["difference"] == {"USD": "-10.00"}


def with_shadow(config: Path, *, mode: str | None, entries: int) -> str | None:
    """`config` with `mode` set (None: as it was) and `entries` planned account updates in its store, plus an event
    left alone; the first planned time as status prints it (None without entries)."""
    if mode is not None:
        document = yaml.safe_load(config.read_text())
        config.write_text(yaml.safe_dump({**document, "mode": mode}))

    async def fill() -> str | None:
        store = await open_store(config.parent / "state" / "revdaemon.sqlite3")
        try:
            await store.record_shadow([NewShadowEntry(
                event_id=None, event_key=f"nue:s{i}", flow="subscription_status", outcome="write",
                system="salesforce", action="update", target=f"Account 00100000000000{i}AAA", idem_key=f"k{i}")
                for i in range(entries)] + [NewShadowEntry(event_id=None, event_key="nue:quiet", flow="invoice_sync",
                                                           outcome="nothing")] * bool(entries))
            kept = await store.list_shadow(limit=1)
            return kept[0].at.isoformat(timespec="seconds") if kept else None
        finally:
            await store.close()

    return anyio.run(fill)


class TestStatusMode:
    def test_live_without_shadow(self, config: Path) -> None:
        code, out = run(config, "status")
        assert code == 0 and "mode: live\n" in out and "shadow" not in out
        assert json.loads(run(config, "status", "--json")[1])["mode"] == "live"

    def test_shadow_says_since_when_and_how_many_writes(self, config: Path) -> None:
        """In shadow mode, status says when it first planned and how many writes (not the event left alone)."""
        first = with_shadow(config, mode="shadow", entries=2)
        code, out = run(config, "status")
        assert code == 0
        assert f"mode: shadow since {first} (2 writes planned; revdaemon shadow report)" in out.replace("\n", " ")
        status = json.loads(run(config, "status", "--json")[1])
        assert status["mode"] == "shadow" and status["shadow"]["writes"] == 2 and status["shadow"]["promoted"] is None

    def test_shadow_before_anything_is_planned(self, config: Path) -> None:
        with_shadow(config, mode="shadow", entries=0)
        assert "mode: shadow (nothing planned yet" in run(config, "status")[1]

    def test_promoted_is_live_whatever_the_config_says(self, config: Path) -> None:
        """After `shadow promote` the workers write even with mode: shadow still in config.yaml: status says live,
        promoted by whom and when."""
        with_shadow(config, mode="shadow", entries=1)
        assert run(config, "shadow", "promote", "--go-live", "2026-01-05", "--actor", "bo")[0] == 0
        code, out = run(config, "status")
        line = next(line for line in out.replace("\n", " ").split("mode: ")[1:] if line.startswith("live"))
        assert code == 0 and line.startswith("live (promoted from shadow on ")
        assert "by bo; go-live cut-off 2026-01-05)" in line
        assert json.loads(run(config, "status", "--json")[1])["mode"] == "live"

    def test_live_config_with_unpromoted_shadow_writes_says_so(self, config: Path) -> None:
        """Config says live, but a `run --shadow` planned writes and nobody promoted them: a daemon started so may
        still be writing nothing, and status says it."""
        with_shadow(config, mode=None, entries=1)
        out = run(config, "status")[1].replace("\n", " ")
        assert "mode: live as configured, but shadow mode (run --shadow) planned 1 writes since" in out
