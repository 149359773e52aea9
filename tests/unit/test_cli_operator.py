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
from revdaemon.store.records import NewAuditEntry, NewConflict, NewDeadLetter, NewEvent

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
            await store.dead_letter_event(b.id, NewDeadLetter(system="salesforce", operation="upsert Account",
                                                              error="Required fields are missing: [Name]",
                                                              error_code="REQUIRED_FIELD_MISSING", status=400))
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

    def test_a_piped_table_is_not_cut_at_80_columns(self, config: Path) -> None:
        """Piped (not a terminal), a row keeps its whole error on one line: `| grep` and `| less` see it all."""
        code, out = run(config, "dead-letters", "list")
        [row] = [line for line in out.splitlines() if "REQUIRED_FIELD_MISSING" in line]
        assert code == 0 and "Required fields are missing: [Name]" in row and len(row) > 80

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
                lambda: service.preview_replay(store, [bad], [], NO_FETCHER)]
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
