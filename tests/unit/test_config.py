from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from revdaemon.config import SalesforceAuth, WebhookAuth, load_settings
from revdaemon.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]

MINIMAL = {
    "salesforce": {"auth": "client_credentials", "client_id": "ck", "client_secret": "cs"},
    "nue": {"api_key": "nue-key-123", "webhook_secret": "whsec-123"},
}


def write(tmp_path: Path, document: object) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(document), encoding="utf-8")
    return path


def problems(exc: pytest.ExceptionInfo[ConfigError]) -> dict[str, str]:
    return dict(exc.value.problems)


class TestLoading:
    def test_shipped_config_is_valid(self) -> None:
        """The config.yaml in the repository loads without error."""
        settings = load_settings(ROOT / "config.yaml", environ={})
        assert settings.salesforce.auth is SalesforceAuth.CLIENT_CREDENTIALS
        assert settings.state_dir == ROOT / "state"

    def test_relative_paths_resolve_against_the_config_file(self, tmp_path: Path) -> None:
        """state_dir is read relative to the file, not the working directory."""
        settings = load_settings(write(tmp_path, {**MINIMAL, "state_dir": "var/state"}), environ={})
        assert settings.state_dir == tmp_path / "var" / "state"
        assert settings.database_path == tmp_path / "var" / "state" / "revdaemon.sqlite3"

    def test_path_comes_from_revdaemon_config(self, tmp_path: Path) -> None:
        """Without --config, REVDAEMON_CONFIG names the file."""
        path = write(tmp_path, {**MINIMAL, "listener": {"port": 9999}})
        assert load_settings(None, environ={"REVDAEMON_CONFIG": str(path)}).listener.port == 9999

    def test_env_overrides_file_with_nested_keys(self, tmp_path: Path) -> None:
        """REVDAEMON_SECTION__KEY beats the file."""
        path = write(tmp_path, {**MINIMAL, "listener": {"port": 9000, "host": "127.0.0.1"}})
        settings = load_settings(path, environ={"REVDAEMON_LISTENER__PORT": "9100"})
        assert settings.listener.port == 9100
        assert settings.listener.host == "127.0.0.1"

    def test_secrets_come_from_credentials_directory(self, tmp_path: Path) -> None:
        """A systemd credential file named section__key supplies a secret the file leaves out."""
        creds = tmp_path / "creds"
        creds.mkdir()
        (creds / "nue__api_key").write_text("from-credential-file\n")
        document = {"salesforce": MINIMAL["salesforce"], "nue": {"webhook_secret": "whsec-123"}}
        settings = load_settings(write(tmp_path, document), environ={"CREDENTIALS_DIRECTORY": str(creds)})
        assert settings.nue.api_key is not None
        assert settings.nue.api_key.get_secret_value() == "from-credential-file"  # newline stripped

    def test_env_beats_credential_file(self, tmp_path: Path) -> None:
        """Precedence is env, then credential files, then the YAML document."""
        creds = tmp_path / "creds"
        creds.mkdir()
        (creds / "nue__api_key").write_text("from-file")
        environ = {"CREDENTIALS_DIRECTORY": str(creds), "REVDAEMON_NUE__API_KEY": "from-env"}
        settings = load_settings(write(tmp_path, MINIMAL), environ=environ)
        assert settings.nue.api_key is not None
        assert settings.nue.api_key.get_secret_value() == "from-env"

    def test_secrets_are_never_printed(self, tmp_path: Path) -> None:
        """A SecretStr shows as stars in repr and str, and secret_values lists them for the redactor."""
        settings = load_settings(write(tmp_path, MINIMAL), environ={})
        assert "nue-key-123" not in repr(settings)
        assert "nue-key-123" not in str(settings.nue)
        assert {"nue-key-123", "whsec-123", "cs"} <= set(settings.secret_values())


class TestErrors:
    def test_missing_key_names_the_path(self, tmp_path: Path) -> None:
        """JWT auth without a username names salesforce.username and says why."""
        document = {**MINIMAL, "salesforce": {"auth": "jwt", "client_id": "ck", "private_key": "pem"}}
        with pytest.raises(ConfigError) as exc:
            load_settings(write(tmp_path, document), environ={})
        assert problems(exc) == {"salesforce.username": "required when salesforce.auth is 'jwt'"}

    def test_wrong_type_names_the_path_and_value(self, tmp_path: Path) -> None:
        """A port that is not a number is reported with the key and the bad value."""
        with pytest.raises(ConfigError) as exc:
            load_settings(write(tmp_path, {**MINIMAL, "listener": {"port": "eighty"}}), environ={})
        reason = problems(exc)["listener.port"]
        assert "valid integer" in reason and "'eighty'" in reason

    def test_bad_url(self, tmp_path: Path) -> None:
        """A login_url that is not an http(s) URL is refused."""
        document = {**MINIMAL, "salesforce": {**MINIMAL["salesforce"], "login_url": "login.salesforce"}}
        with pytest.raises(ConfigError) as exc:
            load_settings(write(tmp_path, document), environ={})
        assert "URL" in problems(exc)["salesforce.login_url"]

    def test_unknown_key(self, tmp_path: Path) -> None:
        """A misspelt key is an error, not silently ignored."""
        with pytest.raises(ConfigError) as exc:
            load_settings(write(tmp_path, {**MINIMAL, "listner": {"port": 1}}), environ={})
        assert problems(exc) == {"listner": "unknown key"}

    def test_bad_cron(self, tmp_path: Path) -> None:
        """A crontab with the wrong number of fields names schedule.reconciliation_cron."""
        with pytest.raises(ConfigError) as exc:
            load_settings(write(tmp_path, {**MINIMAL, "schedule": {"reconciliation_cron": "30 2 *"}}), environ={})
        assert "crontab" in problems(exc)["schedule.reconciliation_cron"]

    def test_several_problems_reported_together(self, tmp_path: Path) -> None:
        """Every bad key is listed at once, so one edit fixes them all."""
        document = {**MINIMAL, "listener": {"port": 70000}, "limits": {"salesforce_daily_budget_share": 2}}
        with pytest.raises(ConfigError) as exc:
            load_settings(write(tmp_path, document), environ={})
        assert set(problems(exc)) == {"listener.port", "limits.salesforce_daily_budget_share"}

    def test_secret_values_are_not_echoed_in_errors(self, tmp_path: Path) -> None:
        """A badly typed secret is reported without its value."""
        document = {**MINIMAL, "nue": {"api_key": ["leaky-secret-value"], "webhook_secret": "w"}}
        with pytest.raises(ConfigError) as exc:
            load_settings(write(tmp_path, document), environ={})
        assert "leaky-secret-value" not in str(exc.value)
        assert "nue.api_key" in problems(exc)

    def test_missing_explicit_file(self, tmp_path: Path) -> None:
        """--config naming a file that does not exist is an error, not the defaults."""
        with pytest.raises(ConfigError) as exc:
            load_settings(tmp_path / "nope.yaml", environ={})
        assert problems(exc)["config"].startswith("file not found")

    def test_invalid_yaml_says_where(self, tmp_path: Path) -> None:
        """A YAML syntax error gives the line."""
        path = tmp_path / "config.yaml"
        path.write_text("listener:\n  port: [1\n")
        with pytest.raises(ConfigError) as exc:
            load_settings(path, environ={})
        assert "line" in problems(exc)["config"]

    def test_path_token_must_be_long(self, tmp_path: Path) -> None:
        """A short webhook path token is refused: it is the only authentication in that mode."""
        document = {**MINIMAL, "nue": {"api_key": "k", "webhook_auth": "path_token", "webhook_path_token": "short"}}
        with pytest.raises(ConfigError) as exc:
            load_settings(write(tmp_path, document), environ={})
        assert "nue.webhook_path_token" in problems(exc)

    def test_webhook_auth_none_is_allowed_explicitly(self, tmp_path: Path) -> None:
        """Opting out of webhook authentication is possible, but only by saying so."""
        document = {**MINIMAL, "nue": {"api_key": "k", "webhook_auth": "none"}}
        assert load_settings(write(tmp_path, document), environ={}).nue.webhook_auth is WebhookAuth.NONE
