"""The README's systemd recipe, as far as a test can go without systemd: revdaemon installed into a prefix as the
recipe installs it (a real wheel, not this checkout), the config and the credential store laid out as the unit
reads them, and the installed command run with the service's credentials (`$CREDENTIALS_DIRECTORY`, what
`LoadCredential=` gives it) and without them, against the simulators."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
import yaml

from revdaemon.sandbox.runner import create_sandbox
from tests.integration.test_systemd_unit import UNIT, unit_settings

ROOT = Path(__file__).resolve().parents[2]
RECIPE_INSTALL = "python3 -m venv /opt/revdaemon && /opt/revdaemon/bin/pip install ."


def install_into(prefix: Path) -> Path:
    """`python3 -m venv PREFIX && PREFIX/bin/pip install .`, the dependencies taken from this test's environment
    (a .pth file) instead of downloaded again; revdaemon itself is built into a wheel and installed."""
    subprocess.run([sys.executable, "-m", "venv", str(prefix)], check=True, timeout=120)
    purelib = Path(subprocess.run([str(prefix / "bin" / "python"), "-c",
                                   "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                  capture_output=True, text=True, check=True).stdout.strip())
    (purelib / "test_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([str(prefix / "bin" / "pip"), "install", "--quiet", "--no-deps", "--disable-pip-version-check",
                    str(ROOT)], check=True, timeout=600)
    return prefix / "bin" / "revdaemon"


def test_the_recipe_installs_a_command_that_runs_with_the_services_credentials_and_reads_without(
        tmp_path: Path) -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert RECIPE_INSTALL in readme  # the install this test performs is the one the README shows
    credentials = {value.partition(":")[0] for value in unit_settings(UNIT.read_text())["LoadCredential"]}

    binary = install_into(tmp_path / "opt" / "revdaemon")
    installed = subprocess.run([str(binary), "--version"], capture_output=True, text=True, timeout=60)
    assert installed.returncode == 0 and "0.1.0" in installed.stdout
    origin = subprocess.run([str(binary.parent / "python"), "-c", "import revdaemon; print(revdaemon.__file__)"],
                            capture_output=True, text=True, check=True, cwd=tmp_path).stdout
    assert str(ROOT) not in origin  # the installed package, not this checkout

    box = create_sandbox(key_dir=tmp_path / "keys", seed=5).start_threads()
    try:
        info = box.info()
        etc = tmp_path / "etc" / "revdaemon"
        credstore = tmp_path / "etc" / "credstore" / "revdaemon"
        etc.mkdir(parents=True)
        credstore.mkdir(parents=True)
        config = etc / "config.yaml"
        config.write_text(yaml.safe_dump({
            "salesforce": {"login_url": info["salesforce"]["login_url"], "auth": "jwt",
                           "client_id": info["salesforce"]["consumer_key"],
                           "username": info["salesforce"]["username"]},
            "nue": {"base_url": info["nue"]["url"]},
            "listener": {"port": 0}, "metrics": {"listen": "off"},
        }))
        secrets = {"nue__api_key": info["nue"]["api_key"], "nue__webhook_secret": info["nue"]["webhook_secret"],
                   "salesforce__private_key": Path(info["salesforce"]["private_key_file"]).read_text()}
        assert set(secrets) == credentials  # every credential the unit loads, and no other
        for name, value in secrets.items():
            path = credstore / name
            path.write_text(value)
            path.chmod(0o600)
        environment = {key: value for key, value in os.environ.items() if not key.startswith("REVDAEMON_")}
        environment |= {"REVDAEMON_STATE_DIR": str(tmp_path / "var" / "lib" / "revdaemon"),
                        "REVDAEMON_LOG__FORMAT": "json"}  # the unit's Environment=
        service = environment | {"CREDENTIALS_DIRECTORY": str(credstore)}

        def revdaemon(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
            return subprocess.run([str(binary), *args, "--config", str(config)], capture_output=True, text=True,
                                  env=env, timeout=120, cwd=tmp_path)

        checked = revdaemon("check", "--online", env=service)
        assert checked.returncode == 0, checked.stdout + checked.stderr
        started = revdaemon("run", "--stop-after", "1", env=service)
        assert started.returncode == 0, started.stderr[-2000:]
        status = revdaemon("status", env=environment)  # an operator without the credential directory
        assert status.returncode == 0, status.stdout + status.stderr
        assert "Traceback" not in status.stdout + status.stderr
        refused = revdaemon("run", "--stop-after", "1", env=environment)
        assert refused.returncode == 2  # the daemon itself still needs every secret, and names the missing ones
        assert "nue.api_key" in refused.stderr and "Traceback" not in refused.stderr
    finally:
        box.close()


@pytest.fixture(autouse=True)
def _no_config_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("REVDAEMON_CONFIG", raising=False)
