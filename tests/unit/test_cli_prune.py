"""`revdaemon prune` and the store's size in `revdaemon status`."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import anyio
import pytest
import yaml
from click.testing import CliRunner

from revdaemon.cli import EXIT_STORE, main
from revdaemon.store import open_store
from revdaemon.store.records import NewAuditEntry, NewEvent, ReplicaBeat
from revdaemon.store.retention import TOMBSTONE

ROOT = Path(__file__).resolve().parents[2]
LONG_AGO = datetime(2020, 1, 1, tzinfo=UTC)  # far older than any retention


@pytest.fixture
def config(tmp_path: Path) -> Path:
    """A config whose store holds 30 done events and an audit entry from long ago, and one done event of today."""
    document = yaml.safe_load((ROOT / "config.yaml").read_text())
    document["state_dir"] = str(tmp_path / "state")
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(document))

    async def fill() -> None:
        for when, keys in ((LONG_AGO, [f"old{i}" for i in range(30)]), (datetime.now(UTC), ["new"])):
            store = await open_store(tmp_path / "state" / "revdaemon.sqlite3", clock=lambda when=when: when)
            try:
                await store.add_events([NewEvent(source="nue_webhook", key=k, type="order.activated",
                                                 payload={"data": {"id": k}}) for k in keys])
                claimed = await store.claim_events(worker="w", limit=100, lease=timedelta(minutes=5))
                await store.complete_events([e.id for e in claimed], claimed_by="w")
                await store.record_write(NewAuditEntry(system="salesforce", operation="SfUpdate", target="Account",
                                                       outcome="ok"))
            finally:
                await store.close()

    anyio.run(fill)
    return path


def run(config: Path, *args: str) -> tuple[int, str]:
    """The exit code and what was printed on stdout (the log goes to stderr)."""
    result = CliRunner().invoke(main, [*args, "--config", str(config)])
    return result.exit_code, result.stdout


def payload_of(config: Path, key: str) -> object:
    async def read() -> object:
        store = await open_store(config.parent / "state" / "revdaemon.sqlite3", read_only=True)
        try:
            found = await store.find_event(key)
            assert found is not None
            return found.payload
        finally:
            await store.close()

    return anyio.run(read)


class TestPrune:
    def test_a_dry_run_counts_and_changes_nothing(self, config: Path) -> None:
        """--dry-run says what would go (30 old payloads, one old audit entry) and prunes none of it."""
        code, out = run(config, "prune", "--dry-run", "--json")
        assert code == 0, out
        result = json.loads(out)
        assert result["dry_run"] and result["retention_days"] == 90
        assert (result["event_payloads"], result["write_intents"], result["audit_entries"]) == (30, 0, 1)
        assert payload_of(config, "old0") == {"data": {"id": "old0"}}

    def test_prune_forgets_old_payloads_keeps_keys_and_records_who_asked(self, config: Path) -> None:
        """A prune drops the old payloads (their keys stay), keeps today's, and the audit log says who pruned."""
        code, out = run(config, "prune", "--actor", "alice")
        assert code == 0, out
        assert "30 done events' payloads (their keys stay), 0 write intents, 1 audit entries" in out
        assert payload_of(config, "old0") == TOMBSTONE and payload_of(config, "new") == {"data": {"id": "new"}}
        code, out = run(config, "prune", "--json")
        assert json.loads(out)["event_payloads"] == 0
        code, out = run(config, "events", "show", "1", "--json")
        assert json.loads(out)["payload"] == TOMBSTONE

    def test_vacuum_gives_the_space_back(self, config: Path) -> None:
        """--vacuum rewrites the SQLite file after the prune; the sizes before and after are printed."""
        code, out = run(config, "prune", "--vacuum", "--json")
        assert code == 0, out
        result = json.loads(out)
        assert result["vacuum"] and result["size_bytes_after"] > 0

    def test_vacuum_is_refused_while_a_daemon_runs_on_the_sqlite_file(self, config: Path) -> None:
        """A daemon heard from lately would have its writes wait on the VACUUM, then fail: refused, nothing pruned."""
        async def beat() -> None:
            store = await open_store(config.parent / "state" / "revdaemon.sqlite3")
            try:
                await store.heartbeat(ReplicaBeat(replica_id="box-1", host="box-1", pid=4242,
                                                  started_at=datetime.now(UTC), is_leader=True))
            finally:
                await store.close()

        anyio.run(beat)
        result = CliRunner().invoke(main, ["prune", "--vacuum", "--config", str(config)])
        assert result.exit_code == EXIT_STORE and "stop it before --vacuum" in result.stderr
        assert payload_of(config, "old0") == {"data": {"id": "old0"}}
        code, _ = run(config, "prune")  # without --vacuum, batches interleave with the daemon's writes
        assert code == 0 and payload_of(config, "old0") == TOMBSTONE

    def test_zero_days_prunes_nothing(self, config: Path) -> None:
        """store.retention_days 0 keeps everything, and the command says so."""
        document = yaml.safe_load(config.read_text())
        config.write_text(yaml.safe_dump({**document, "store": {"retention_days": 0}}))
        code, out = run(config, "prune")
        assert code == 0 and "everything is kept" in out
        assert payload_of(config, "old0") == {"data": {"id": "old0"}}

    def test_dry_run_and_vacuum_exclude_each_other(self, config: Path) -> None:
        """A dry run changes nothing, so it cannot vacuum: bad usage."""
        result = CliRunner().invoke(main, ["prune", "--dry-run", "--vacuum", "--config", str(config)])
        assert result.exit_code == 2 and "cannot --vacuum" in result.stderr


class TestStatus:
    def test_status_shows_the_size_oldest_rows_and_retention(self, config: Path) -> None:
        """status --json has the store's size, the first event kept and the retention; the text says them too."""
        code, out = run(config, "status", "--json")
        assert code == 0, out
        store = json.loads(out)["store"]
        assert store["size_bytes"] > 0 and store["retention_days"] == 90
        assert store["oldest_event_at"] == "2020-01-01T00:00:00+00:00"
        assert store["payloads_pruned_before"] is None
        run(config, "prune")
        code, out = run(config, "status")
        assert code == 0, out
        assert "retention 90 days" in out and "oldest event kept: 2020-01-01" in out
        assert "payloads pruned before: none" not in out
