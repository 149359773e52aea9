from __future__ import annotations

import json
from pathlib import Path

import yaml
from click.testing import CliRunner

from revdaemon import __version__
from revdaemon.cli import EXIT_CONFIG, EXIT_STORE, main

ROOT = Path(__file__).resolve().parents[2]


def config_in(tmp_path: Path, **overrides: object) -> Path:
    document = yaml.safe_load((ROOT / "config.yaml").read_text())
    document["state_dir"] = str(tmp_path / "state")
    document["listener"] = {**document["listener"], "port": 0}  # never the fixed port a running demo holds
    document["metrics"] = {**document["metrics"], "port": 0}  # nor a running daemon's metrics port
    document.update(overrides)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


class TestCli:
    def test_version(self) -> None:
        """`revdaemon version` prints the package version."""
        result = CliRunner().invoke(main, ["version"])
        assert result.exit_code == 0 and __version__ in result.output

    def test_check_ok(self, tmp_path: Path) -> None:
        """`check` on a good config reports ok and the schema version, and prints no secret."""
        path = config_in(tmp_path)
        assert CliRunner().invoke(main, ["run", "--config", str(path), "--stop-after", "0"]).exit_code == 0
        result = CliRunner().invoke(main, ["check", "--config", str(path), "--json"])
        assert result.exit_code == 0, result.output
        report = json.loads(result.output)
        assert report["config"] == "ok" and report["schema_version"] >= 1
        assert report["metrics"] == "127.0.0.1:0"  # where Prometheus scrapes: the admin listener (here any port)

    def test_check_bad_config_exits_non_zero_with_the_key(self, tmp_path: Path) -> None:
        """A bad value stops `check` with exit 2 and names the key."""
        path = config_in(tmp_path, listener={"port": "http"})
        result = CliRunner().invoke(main, ["check", "--config", str(path)])
        assert result.exit_code == EXIT_CONFIG
        assert "listener.port" in result.output

    def test_check_and_status_create_nothing(self, tmp_path: Path) -> None:
        """Before the first start, `check` and `status` say so and leave the state directory untouched."""
        path = config_in(tmp_path)
        checked = CliRunner().invoke(main, ["check", "--config", str(path), "--json"])
        assert checked.exit_code == 0 and json.loads(checked.output)["schema_version"] is None
        status = CliRunner().invoke(main, ["status", "--config", str(path)])
        assert status.exit_code == 0 and "first start" in status.output
        assert not (tmp_path / "state").exists()

    def test_status_json(self, tmp_path: Path) -> None:
        """`status --json` reports queue depths, cursors, conflicts and dead letters."""
        path = config_in(tmp_path)
        assert CliRunner().invoke(main, ["run", "--config", str(path), "--stop-after", "0"]).exit_code == 0
        result = CliRunner().invoke(main, ["status", "--config", str(path), "--json"])
        assert result.exit_code == 0, result.output
        status = json.loads(result.output)
        assert status["queue_depths"]["received"] == 0
        assert status["cursors"] == [] and status["open_conflicts"] == 0 and status["dead_letters"] == 0

    def test_status_names_the_active_replica_its_epoch_and_since_when(self, tmp_path: Path) -> None:
        """After a run, status shows which replica led (the one box), with its leadership epoch and since when;
        each start takes a new epoch. Stopped, it is no longer heard from."""
        path = config_in(tmp_path)
        for _ in range(2):
            assert CliRunner().invoke(main, ["run", "--config", str(path), "--stop-after", "0"]).exit_code == 0
        status = json.loads(CliRunner().invoke(main, ["status", "--config", str(path), "--json"]).output)
        active = status["active_replica"]
        assert active["id"] == status["replicas"][0]["id"] and active["epoch"] == 2 and active["since"]
        text = CliRunner().invoke(main, ["status", "--config", str(path)]).output
        assert f"active replica: {active['id']} since {active['since'][:10]}" in text
        assert "leadership epoch 2" in text

    def test_newer_database_exits_with_store_code(self, tmp_path: Path) -> None:
        """A state database from a newer version stops the command with exit 3."""
        import sqlite3

        path = config_in(tmp_path)
        (tmp_path / "state").mkdir()
        with sqlite3.connect(tmp_path / "state" / "revdaemon.sqlite3") as conn:
            conn.execute("PRAGMA user_version = 999")
        result = CliRunner().invoke(main, ["status", "--config", str(path)])
        assert result.exit_code == EXIT_STORE
        assert "newer" in result.output

    def test_run_starts_and_stops(self, tmp_path: Path) -> None:
        """`run` opens the store, logs that it started, and stops cleanly."""
        result = CliRunner().invoke(main, ["run", "--config", str(config_in(tmp_path)), "--stop-after", "0.1"])
        assert result.exit_code == 0, result.output
        assert "daemon_started" in result.output and "daemon_stopped" in result.output
        assert (tmp_path / "state" / "revdaemon.sqlite3").exists()
