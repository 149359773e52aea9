"""systemd/revdaemon.service as systemd itself reads it: `systemd-analyze verify` and `security --offline`."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

UNIT = Path(__file__).resolve().parents[2] / "systemd" / "revdaemon.service"
INSTALLED_BINARY = "/opt/revdaemon/bin/revdaemon"
MAX_EXPOSURE = 2.0  # the bar; systemd-analyze prints 0.0 (locked down) .. 10.0 (exposed)

SYSTEMD_ANALYZE = shutil.which("systemd-analyze")
needs_systemd_analyze = pytest.mark.skipif(
    SYSTEMD_ANALYZE is None, reason="systemd-analyze is not installed (apt-get install systemd)"
)


def unit_settings(text: str) -> dict[str, list[str]]:
    """Every `Key=value` of the unit, values in file order (keys like LoadCredential repeat)."""
    settings: dict[str, list[str]] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if line and not line.startswith(("#", ";", "[")) and "=" in line:
            key, _, value = line.partition("=")
            settings.setdefault(key.strip(), []).append(value.strip())
    return settings


def analyze(*args: str) -> subprocess.CompletedProcess[str]:
    assert SYSTEMD_ANALYZE is not None
    return subprocess.run([SYSTEMD_ANALYZE, *args], capture_output=True, text=True, timeout=120, check=False)


def runnable_command() -> str:
    """A command that exists on this machine, standing in for the installed binary."""
    script = Path(sys.executable).parent / "revdaemon"
    return str(script) if script.exists() else f"{sys.executable} -m revdaemon.cli"


class TestUnitFile:
    def test_notify_contract(self) -> None:
        """The unit waits for READY=1 from the main process, runs a watchdog and reloads by SIGHUP."""
        settings = unit_settings(UNIT.read_text(encoding="utf-8"))
        assert settings["Type"] == ["notify"]
        assert settings["NotifyAccess"] == ["main"]
        assert settings["WatchdogSec"] == ["30s"]
        assert settings["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
        assert settings["Restart"] == ["on-failure"]
        assert settings["DynamicUser"] == ["yes"]
        assert {"StateDirectory", "ConfigurationDirectory", "LoadCredential"} <= settings.keys()

    def test_secrets_come_only_as_credentials(self) -> None:
        """No secret is passed in the environment; each arrives through LoadCredential=."""
        settings = unit_settings(UNIT.read_text(encoding="utf-8"))
        environment = " ".join(settings.get("Environment", [])).lower()
        assert not any(word in environment for word in ("key", "secret", "token", "password"))
        names = {value.partition(":")[0] for value in settings["LoadCredential"]}
        assert names == {"nue__api_key", "nue__webhook_secret", "salesforce__private_key"}


@needs_systemd_analyze
class TestSystemdAnalyze:
    def test_verify_is_clean(self, tmp_path: Path) -> None:
        """`systemd-analyze verify` reports nothing once ExecStart names a program that exists here."""
        text = UNIT.read_text(encoding="utf-8")
        assert INSTALLED_BINARY in text
        copy = tmp_path / UNIT.name
        copy.write_text(text.replace(INSTALLED_BINARY, runnable_command()), encoding="utf-8")
        result = analyze("verify", str(copy))
        output = (result.stdout + result.stderr).strip()
        assert result.returncode == 0, output
        assert output == ""

    def test_verify_of_the_shipped_unit_only_misses_the_binary(self) -> None:
        """The shipped file itself has no complaint but the not-yet-installed /opt/revdaemon binary."""
        result = analyze("verify", str(UNIT))
        lines = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
        others = [line for line in lines if f"{INSTALLED_BINARY} is not executable" not in line]
        assert others == []

    def test_exposure_level_at_most_two(self) -> None:
        """`systemd-analyze security --offline=true` rates the unit 2.0 or lower."""
        result = analyze("security", "--offline=true", "--no-pager", str(UNIT))
        output = result.stdout + result.stderr
        match = re.search(r"Overall exposure level for \S+: (\d+(?:\.\d+)?)", output)
        assert match is not None, output
        assert float(match.group(1)) <= MAX_EXPOSURE, output
