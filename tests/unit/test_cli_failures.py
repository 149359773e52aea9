"""Operators' commands under failure: store-only commands without the API secrets, one line per failure with its
exit code (the traceback only with --debug), and --version."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from revdaemon import __version__
from revdaemon.cli import EXIT_CONFIG, EXIT_RUNTIME, EXIT_STORE, main
from tests.unit.test_cli_operator import store_with_rows

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The commands read os.environ: no REVDAEMON_* variable or credential directory of the machine may count."""
    for name in list(os.environ):
        if name.startswith("REVDAEMON_") or name == "CREDENTIALS_DIRECTORY":
            monkeypatch.delenv(name)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def no_secrets(tmp_path: Path) -> Path:
    """config.yaml without any API secret (the systemd recipe's `status` run without the credential directory),
    over a store holding a done event, one dead letter and one open conflict."""
    document = yaml.safe_load((ROOT / "config.yaml").read_text())
    document["state_dir"] = str(tmp_path / "state")
    document["listener"] = {**document["listener"], "port": closed_port()}
    document["metrics"] = {**document["metrics"], "port": 0}
    document["salesforce"] = {"auth": "jwt", "private_key_file": "/nonexistent/salesforce.pem"}
    document["nue"] = {"base_url": document["nue"]["base_url"]}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(document))

    store_with_rows(tmp_path / "state")
    return path


def invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.output


class TestStoreOnlyCommands:
    READERS = (("status",), ("status", "--json"), ("events", "list"), ("events", "show", "1"),
               ("dead-letters", "list"), ("dead-letters", "show", "1"), ("conflicts", "list"),
               ("conflicts", "show", "1"), ("mappings", "list"), ("mappings", "show", "current"),
               ("mappings", "diff", "current", "current"), ("prune", "--dry-run"))

    @pytest.mark.parametrize("command", READERS, ids=[" ".join(c) for c in READERS])
    def test_reads_the_store_without_the_api_secrets(self, no_secrets: Path, command: tuple[str, ...]) -> None:
        """A command that calls no API works with no Salesforce or Nue credential configured."""
        code, out = invoke(*command, "--config", str(no_secrets))
        assert code == 0, out
        assert "invalid configuration" not in out

    def test_run_and_check_still_refuse_missing_credentials_by_key(self, no_secrets: Path) -> None:
        """The daemon's start-up validation is unchanged: each missing credential is named, exit 2."""
        for command in (("run", "--stop-after", "0"), ("check",)):
            code, out = invoke(*command, "--config", str(no_secrets))
            assert code == EXIT_CONFIG, out
            assert "  nue.api_key: required" in out and "  salesforce.client_id: required" in out

    def test_a_dry_run_needs_the_credentials_and_a_replay_does_not(self, no_secrets: Path) -> None:
        """A replay only puts the event back in the inbox; its dry run reads the APIs, so it asks for their keys."""
        code, out = invoke("dead-letters", "replay", "1", "--dry-run", "--config", str(no_secrets))
        assert code == EXIT_CONFIG and "nue.api_key" in out
        code, out = invoke("dead-letters", "replay", "1", "--json", "--config", str(no_secrets))
        assert code == 0, out
        assert [row["status"] for row in json.loads(out)] == ["received"]


class TestOneLineFailures:
    def test_an_unreachable_api_is_one_line_with_its_url(self, tmp_path: Path) -> None:
        """`reconcile` against an API nobody listens on: one line naming the API, its URL and why; exit 1."""
        port = closed_port()
        document = yaml.safe_load((ROOT / "config.yaml").read_text())
        document["state_dir"] = str(tmp_path / "state")
        document["salesforce"]["login_url"] = f"http://127.0.0.1:{port}"
        document["nue"]["base_url"] = f"http://127.0.0.1:{port}"
        path = tmp_path / "config.yaml"
        path.write_text(yaml.safe_dump(document))
        result = CliRunner().invoke(main, ["reconcile", "--config", str(path)])
        assert result.exit_code == EXIT_RUNTIME, result.output
        assert isinstance(result.exception, SystemExit)
        [line] = [line for line in result.output.splitlines() if line.startswith("revdaemon: ")]
        assert f"at http://127.0.0.1:{port} cannot be reached: " in line
        assert line.startswith(("revdaemon: Nue ", "revdaemon: Salesforce "))
        assert "Traceback" not in result.output

    def test_an_unexpected_error_is_one_line_and_debug_shows_the_traceback(
            self, no_secrets: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """A bug in any command prints one line and exits 1; with --debug the exception itself comes out."""
        from revdaemon import service

        async def broken(*args: object, **kwargs: object) -> None:
            raise RuntimeError("something nobody foresaw")

        monkeypatch.setattr(service, "list_events", broken)
        result = CliRunner().invoke(main, ["events", "list", "--config", str(no_secrets)])
        assert result.exit_code == EXIT_RUNTIME and isinstance(result.exception, SystemExit)
        assert result.output.strip() == ("revdaemon: unexpected error: RuntimeError: something nobody foresaw "
                                         "(run with --debug for the traceback)")
        debugged = CliRunner().invoke(main, ["--debug", "events", "list", "--config", str(no_secrets)])
        assert isinstance(debugged.exception, RuntimeError)

    def test_a_store_error_escaping_a_command_keeps_exit_3(self, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
        """An error of the store's family that a command does not catch itself still gets the store's exit code."""
        from revdaemon import cli
        from revdaemon.errors import StoreUnavailable

        async def broken(*args: object) -> None:
            raise StoreUnavailable("disk I/O error")

        monkeypatch.setattr(cli, "_backfill", broken)
        code, out = invoke("backfill", "--since", "2024-01-01", "--config", str(ROOT / "config.yaml"))
        assert code == EXIT_STORE and out.strip() == "revdaemon: state store: disk I/O error"


class TestVersion:
    def test_version_flag(self) -> None:
        """`revdaemon --version` prints the installed package's version and exits 0."""
        from importlib.metadata import version

        code, out = invoke("--version")
        assert code == 0 and out.strip() == f"revdaemon {version('revdaemon')}" == f"revdaemon {__version__}"

    def test_python_dash_m_runs_the_same_command(self) -> None:
        """`python -m revdaemon` is the installed script's command (a checkout without the script installed)."""
        import subprocess
        import sys

        done = subprocess.run([sys.executable, "-m", "revdaemon", "--version"], capture_output=True, text=True,
                              cwd=ROOT, timeout=60)
        assert done.returncode == 0 and done.stdout.strip() == f"revdaemon {__version__}"
