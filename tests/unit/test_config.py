from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from revdaemon.config import MetricsListen, SalesforceAuth, WebhookAuth, load_settings
from revdaemon.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]

MINIMAL = {
    "salesforce": {"auth": "client_credentials", "client_id": "ck", "client_secret": "cs-secret-1",
                   "login_url": "https://acme.my.salesforce.com"},
    "nue": {"api_key": "nue-key-123", "webhook_secret": "whsec-0123456789abcdef"},
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

    def test_poll_overlaps_default_to_ten_minutes(self, tmp_path: Path) -> None:
        """Both polls re-read 10 minutes back by default, and the shipped config says the same."""
        for path in (write(tmp_path, MINIMAL), ROOT / "config.yaml"):
            schedule = load_settings(path, environ={}).schedule
            assert (schedule.poll_overlap_seconds, schedule.nue_poll_overlap_seconds) == (600.0, 600.0)

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
        document = {"salesforce": MINIMAL["salesforce"], "nue": {"webhook_secret": "whsec-0123456789abcdef"}}
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
        assert {"nue-key-123", "whsec-0123456789abcdef", "cs-secret-1"} <= set(settings.secret_values())


class TestErrors:
    def test_missing_key_names_the_path(self, tmp_path: Path) -> None:
        """JWT auth without a username names salesforce.username and says why."""
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import rsa

        pem = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()
        document = {**MINIMAL, "salesforce": {"auth": "jwt", "client_id": "ck", "private_key": pem}}
        with pytest.raises(ConfigError) as exc:
            load_settings(write(tmp_path, document), environ={})
        assert problems(exc) == {"salesforce.username": "required when salesforce.auth is 'jwt'"}

    def test_wrong_type_names_the_path_and_value(self, tmp_path: Path) -> None:
        """A port that is not a number is reported with the key and the bad value."""
        with pytest.raises(ConfigError) as exc:
            load_settings(write(tmp_path, {**MINIMAL, "listener": {"port": "eighty"}}), environ={})
        reason = problems(exc)["listener.port"]
        assert "valid integer" in reason and "'eighty'" in reason

    def test_nue_record_url_needs_an_id_and_known_placeholders(self, tmp_path: Path) -> None:
        """Nue's app URLs are not documented: the pattern is checked at start, naming the key."""
        good = "https://app.nue.io/{object_lower}s/{id}"
        loaded = load_settings(write(tmp_path, {**MINIMAL, "console": {"nue_record_url": good}}), environ={})
        assert loaded.console.nue_record_url == good
        for bad, reason in (("https://app.nue.io/orders", "must contain {id}"),
                            ("https://app.nue.io/{kind}/{id}", "not ['kind']"),
                            ("app.nue.io/{id}", "valid URL")):
            with pytest.raises(ConfigError) as exc:
                load_settings(write(tmp_path, {**MINIMAL, "console": {"nue_record_url": bad}}), environ={})
            assert reason in problems(exc)["console.nue_record_url"], bad

    def test_bad_url(self, tmp_path: Path) -> None:
        """A login_url that is not an http(s) URL is refused."""
        document = {**MINIMAL, "salesforce": {**MINIMAL["salesforce"], "login_url": "login.salesforce"}}
        with pytest.raises(ConfigError) as exc:
            load_settings(write(tmp_path, document), environ={})
        assert "URL" in problems(exc)["salesforce.login_url"]

    def test_unknown_key(self, tmp_path: Path) -> None:
        """A misspelt key is an error, not silently ignored, and the nearest known key is suggested."""
        with pytest.raises(ConfigError) as exc:
            load_settings(write(tmp_path, {**MINIMAL, "listner": {"port": 1}}), environ={})
        assert problems(exc) == {"listner": "unknown key 'listner' — did you mean 'listener'?"}

    def test_unknown_nested_key_suggests_from_its_own_level(self, tmp_path: Path) -> None:
        """A typo inside a section, or inside a named mapping object, is matched against that level's keys."""
        document = {**MINIMAL, "listener": {"prot": 1},
                    "mapping": {"objects": {"acct": {"salesforce_object": "Account", "nue_object": "Customer",
                                                     "feilds": {}}}},
                    "zzzzzz": 1}
        with pytest.raises(ConfigError) as exc:
            load_settings(write(tmp_path, document), environ={})
        assert problems(exc) == {"listener.prot": "unknown key 'prot' — did you mean 'port'?",
                                 "mapping.objects.acct.feilds": "unknown key 'feilds' — did you mean 'fields'?",
                                 "zzzzzz": "unknown key"}

    def test_bad_cron(self, tmp_path: Path) -> None:
        """A crontab with the wrong number of fields names schedule.reconciliation_cron."""
        with pytest.raises(ConfigError) as exc:
            load_settings(write(tmp_path, {**MINIMAL, "schedule": {"reconciliation_cron": "30 2 *"}}), environ={})
        assert "crontab" in problems(exc)["schedule.reconciliation_cron"]

    def test_settle_delay_must_outlast_the_creates_timeout(self, tmp_path: Path) -> None:
        """A lost create looked up while it may still be in flight could be made twice: refused at start."""
        document = {**MINIMAL, "engine": {"settle_seconds": 60},
                    "nue": {**MINIMAL["nue"], "create_timeout_seconds": 120}}
        with pytest.raises(ConfigError) as exc:
            load_settings(write(tmp_path, document), environ={})
        assert "nue.create_timeout_seconds" in problems(exc)["engine.settle_seconds"]
        settings = load_settings(write(tmp_path, MINIMAL), environ={})
        assert settings.engine.settle_seconds >= settings.salesforce.create_timeout_seconds

    def test_change_data_capture_in_clear_text_only_on_loopback(self, tmp_path: Path) -> None:
        """The session token travels in every Pub/Sub call: tls: false is refused for a remote endpoint, named."""
        remote = {**MINIMAL, "change_data_capture": {"enabled": True, "tls": False}}
        with pytest.raises(ConfigError) as exc:
            load_settings(write(tmp_path, remote), environ={})
        assert "only for a loopback endpoint" in problems(exc)["change_data_capture"]
        local = {**MINIMAL, "change_data_capture": {"enabled": True, "tls": False, "endpoint": "127.0.0.1:8803"}}
        assert not load_settings(write(tmp_path, local), environ={}).change_data_capture.tls

    def test_change_data_capture_keys_are_checked(self, tmp_path: Path) -> None:
        """A topic that is no channel name, an endpoint without a port, more than the 100 events the API allows."""
        document = {**MINIMAL, "change_data_capture": {"topics": ["Opportunity"], "batch_size": 500,
                                                       "endpoint": "api.pubsub.salesforce.com"}}
        with pytest.raises(ConfigError) as exc:
            load_settings(write(tmp_path, document), environ={})
        found = problems(exc)
        assert "change_data_capture.topics.0" in found and "host:port" in found["change_data_capture.endpoint"]
        assert "100" in found["change_data_capture.batch_size"]

    def test_several_problems_reported_together(self, tmp_path: Path) -> None:
        """Every bad key is listed at once, so one edit fixes them all."""
        document = {**MINIMAL, "listener": {"port": 70000}, "limits": {"salesforce_daily_budget_share": 2}}
        with pytest.raises(ConfigError) as exc:
            load_settings(write(tmp_path, document), environ={})
        assert set(problems(exc)) == {"listener.port", "limits.salesforce_daily_budget_share"}

    def test_secret_values_are_not_echoed_in_errors(self, tmp_path: Path) -> None:
        """A badly typed secret is reported without its value."""
        document = {**MINIMAL, "nue": {"api_key": ["leaky-secret-value"], "webhook_secret": "whsec-0123456789abcdef"}}
        with pytest.raises(ConfigError) as exc:
            load_settings(write(tmp_path, document), environ={})
        assert "leaky-secret-value" not in str(exc.value)
        assert "nue.api_key" in problems(exc)

    def test_missing_explicit_file(self, tmp_path: Path) -> None:
        """--config naming a file that does not exist is an error, not the defaults."""
        with pytest.raises(ConfigError) as exc:
            load_settings(tmp_path / "nope.yaml", environ={})
        assert problems(exc)["config"] == f"no config file found at {tmp_path / 'nope.yaml'}"
        assert str(exc.value) == f"no config file found at {tmp_path / 'nope.yaml'}"

    def test_invalid_yaml_says_where(self, tmp_path: Path) -> None:
        """A YAML syntax error gives the line."""
        path = tmp_path / "config.yaml"
        path.write_text("listener:\n  port: [1\n")
        with pytest.raises(ConfigError) as exc:
            load_settings(path, environ={})
        assert "line" in problems(exc)["config"]

    def test_path_token_must_be_long(self, tmp_path: Path) -> None:
        """A short webhook path token is refused: it is the only authentication in that mode."""
        document = {**MINIMAL, "nue": {"api_key": "nue-key-123", "webhook_auth": "path_token",
                                       "webhook_path_token": "short"}}
        with pytest.raises(ConfigError) as exc:
            load_settings(write(tmp_path, document), environ={})
        assert "nue.webhook_path_token" in problems(exc)

    def test_webhook_auth_none_is_allowed_explicitly(self, tmp_path: Path) -> None:
        """Opting out of webhook authentication is possible, but only by saying so."""
        document = {**MINIMAL, "nue": {"api_key": "nue-key-123", "webhook_auth": "none"}}
        assert load_settings(write(tmp_path, document), environ={}).nue.webhook_auth is WebhookAuth.NONE


class TestErrorSources:
    def test_a_bad_environment_value_names_the_variable(self, tmp_path: Path) -> None:
        """A value from REVDAEMON_... is reported with that variable, not as if config.yaml held it."""
        with pytest.raises(ConfigError) as exc:
            load_settings(write(tmp_path, MINIMAL), environ={"REVDAEMON_LISTENER__PORT": "70000"})
        assert exc.value.origins == {"listener.port": "environment variable REVDAEMON_LISTENER__PORT"}
        assert "  listener.port (environment variable REVDAEMON_LISTENER__PORT): " in str(exc.value)

    def test_a_bad_credential_file_names_the_file(self, tmp_path: Path) -> None:
        """A secret from $CREDENTIALS_DIRECTORY is reported with its file; the environment outranks it."""
        credentials = tmp_path / "credentials"
        credentials.mkdir()
        (credentials / "nue__api_key").write_text("short\n")
        document = {**MINIMAL, "nue": {"webhook_secret": "whsec-0123456789abcdef"}}
        with pytest.raises(ConfigError) as exc:
            load_settings(write(tmp_path, document), environ={"CREDENTIALS_DIRECTORY": str(credentials)})
        assert exc.value.origins == {"nue.api_key": f"credential file {credentials / 'nue__api_key'}"}
        assert "too short" in problems(exc)["nue.api_key"] and "short\n" not in str(exc.value)
        with pytest.raises(ConfigError) as exc:
            load_settings(write(tmp_path, document), environ={"CREDENTIALS_DIRECTORY": str(credentials),
                                                              "REVDAEMON_NUE__API_KEY": "abc"})
        assert exc.value.origins == {"nue.api_key": "environment variable REVDAEMON_NUE__API_KEY"}

    def test_a_key_of_the_file_has_no_other_origin(self, tmp_path: Path) -> None:
        """A problem in config.yaml is reported under the file's name alone."""
        with pytest.raises(ConfigError) as exc:
            load_settings(write(tmp_path, {**MINIMAL, "listener": {"port": 70000}}), environ={})
        assert exc.value.origins == {}
        assert str(exc.value).startswith(f"invalid configuration in {tmp_path / 'config.yaml'}:\n  listener.port: ")

    def test_no_file_at_the_default_path_is_said(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """Without --config and with no ./config.yaml, a problem says there was no file rather than naming one."""
        monkeypatch.chdir(tmp_path)
        with pytest.raises(ConfigError) as exc:
            load_settings(environ={})
        assert str(exc.value).startswith("invalid configuration (no config file found at config.yaml):")


class TestCredentials:
    def test_store_only_commands_load_without_the_api_secrets(self, tmp_path: Path) -> None:
        """credentials=False needs no API secret and reads no key file; the daemon's load still refuses."""
        document = {"salesforce": {"auth": "jwt", "private_key_file": str(tmp_path / "absent.pem")}}
        settings = load_settings(write(tmp_path, document), environ={}, credentials=False)
        assert settings.nue.api_key is None and settings.state_dir == tmp_path / "state"
        with pytest.raises(ConfigError) as exc:
            load_settings(write(tmp_path, document), environ={})
        assert {"nue.api_key", "nue.webhook_secret", "salesforce.client_id", "salesforce.username",
                "salesforce.private_key_file"} <= set(problems(exc))

    def test_other_rules_still_apply_without_credentials(self, tmp_path: Path) -> None:
        """Only the credential rules are skipped: a bad value anywhere else is still refused."""
        with pytest.raises(ConfigError) as exc:
            load_settings(write(tmp_path, {"listener": {"port": 70000}}), environ={}, credentials=False)
        assert set(problems(exc)) == {"listener.port"}


class TestSecurityRules:
    def test_short_webhook_secret_is_refused(self, tmp_path: Path) -> None:
        """An empty or short HMAC secret would let anyone sign webhooks."""
        document = {**MINIMAL, "nue": {"api_key": "nue-key-123", "webhook_secret": ""}}
        with pytest.raises(ConfigError) as exc:
            load_settings(write(tmp_path, document), environ={})
        assert "too short" in problems(exc)["nue.webhook_secret"]

    def test_plain_http_is_refused_off_loopback(self, tmp_path: Path) -> None:
        """http:// to a remote host would send the API key in clear text; loopback (the sandbox) is fine."""
        remote = {**MINIMAL, "nue": {**MINIMAL["nue"], "base_url": "http://api.nue.example"}}
        with pytest.raises(ConfigError) as exc:
            load_settings(write(tmp_path, remote), environ={})
        assert "https" in problems(exc)["nue.base_url"]
        local = {**MINIMAL, "nue": {**MINIMAL["nue"], "base_url": "http://127.0.0.1:8802"}}
        assert load_settings(write(tmp_path, local), environ={}).nue.base_url == "http://127.0.0.1:8802"

    def test_client_credentials_needs_my_domain(self, tmp_path: Path) -> None:
        """salesforce-api.md §1.3: the client credentials flow is refused on login.salesforce.com."""
        document = {**MINIMAL, "salesforce": {**MINIMAL["salesforce"], "login_url": "https://login.salesforce.com"}}
        with pytest.raises(ConfigError) as exc:
            load_settings(write(tmp_path, document), environ={})
        assert "My Domain" in problems(exc)["salesforce.login_url"]

    def test_jwt_key_must_be_a_pem_rsa_key(self, tmp_path: Path) -> None:
        """A private key that cannot sign RS256 is caught at start, not at the first login."""
        document = {**MINIMAL, "salesforce": {"auth": "jwt", "client_id": "ck", "username": "u@x",
                                              "private_key": "not a pem"}}
        with pytest.raises(ConfigError) as exc:
            load_settings(write(tmp_path, document), environ={})
        assert "PEM" in problems(exc)["salesforce.private_key"]

    def test_unknown_timezone(self, tmp_path: Path) -> None:
        """A time zone the scheduler cannot use is refused with its key."""
        with pytest.raises(ConfigError) as exc:
            load_settings(write(tmp_path, {**MINIMAL, "schedule": {"timezone": "Mars/Olympus"}}), environ={})
        assert "time zone" in problems(exc)["schedule.timezone"]

    def test_malformed_environment_json_is_a_config_error(self, tmp_path: Path) -> None:
        """A section given as broken JSON in the environment is reported, not a traceback."""
        with pytest.raises(ConfigError) as exc:
            load_settings(write(tmp_path, MINIMAL), environ={"REVDAEMON_LISTENER": "{x"})
        assert problems(exc) == {"listener": "not valid JSON"}
        assert "listener (environment variable REVDAEMON_LISTENER): not valid JSON" in str(exc.value)


class TestMetrics:
    def test_served_on_a_loopback_admin_port_by_default(self, tmp_path: Path) -> None:
        """/metrics is off the webhook port unless asked: its own listener on 127.0.0.1:8789, as config.yaml says."""
        for path in (write(tmp_path, MINIMAL), ROOT / "config.yaml"):
            metrics = load_settings(path, environ={}).metrics
            assert (metrics.listen, metrics.host, metrics.port) == (MetricsListen.ADMIN, "127.0.0.1", 8789)

    def test_a_bad_listen_value_names_the_choices(self, tmp_path: Path) -> None:
        """metrics.listen takes admin, webhook or off."""
        with pytest.raises(ConfigError) as exc:
            load_settings(write(tmp_path, {**MINIMAL, "metrics": {"listen": "public"}}), environ={})
        assert "'admin', 'webhook' or 'off'" in problems(exc)["metrics.listen"]

    def test_the_admin_port_may_not_be_the_listeners_or_the_consoles(self, tmp_path: Path) -> None:
        """Two listeners on one port are refused at start, naming the key and the port it collides with."""
        with pytest.raises(ConfigError) as exc:
            load_settings(write(tmp_path, {**MINIMAL, "metrics": {"port": 8787}}), environ={})
        assert problems(exc) == {"metrics.port": "the same port as listener.port (8787): two listeners cannot "
                                                 "share one"}
        console = {"enabled": True, "admins": {"ana": "a" * 24}}
        with pytest.raises(ConfigError) as exc:
            load_settings(write(tmp_path, {**MINIMAL, "console": console}),
                          environ={"REVDAEMON_METRICS__PORT": "8788"})
        assert list(problems(exc)) == ["metrics.port"] and "console.port (8788)" in problems(exc)["metrics.port"]

    def test_a_shared_port_is_fine_where_no_two_listeners_bind_it(self, tmp_path: Path) -> None:
        """The port is only checked where it is bound: not with listen webhook or off, not for a disabled
        console, not for 0 (any free port), not on two different addresses."""
        for metrics in ({"listen": "webhook", "port": 8787}, {"listen": "off", "port": 8787},
                        {"port": 8788}, {"port": 0}, {"host": "10.0.0.5", "port": 8787}):
            load_settings(write(tmp_path, {**MINIMAL, "listener": {"port": 8787}, "metrics": metrics}), environ={})
        with pytest.raises(ConfigError):
            load_settings(write(tmp_path, {**MINIMAL, "listener": {"host": "0.0.0.0"},
                                           "metrics": {"host": "10.0.0.5", "port": 8787}}), environ={})


class TestFlows:
    def test_flows_can_be_switched_off(self, tmp_path: Path) -> None:
        """A flow Nue's own sync covers is switched off by config, and the daemon builds without it."""
        from revdaemon.engine.supervisor import default_flows

        settings = load_settings(write(tmp_path, {**MINIMAL, "flows": {"closed_won": {"enabled": False}},
                                                  "mapping": {"lookups": {"subscription_status": {
                                                      s: "Active" for s in ("Active", "Ended", "Expired",
                                                                             "Canceled",
                                                                             "Scheduled for cancellation")}}}}),
                                 environ={})
        names = [f.name for f in default_flows(settings)]
        assert "closed_won_to_order" not in names and "subscription_status" in names

    def test_status_table_must_cover_every_nue_status(self, tmp_path: Path) -> None:
        """A lookup table without a value for a Nue status is refused, naming the statuses."""
        document = {**MINIMAL, "mapping": {"lookups": {"subscription_status": {"Active": "Active"}}}}
        with pytest.raises(ConfigError) as exc:
            load_settings(write(tmp_path, document), environ={})
        assert "Scheduled for cancellation" in problems(exc)["mapping.lookups.subscription_status"]


class TestMappedFields:
    def test_a_bad_spec_names_its_key(self, tmp_path: Path) -> None:
        """A malformed extra-field spec is reported under its key path."""
        document = {**MINIMAL, "mapping": {"flows": {"subscription_status": {"City__c": "customer.billingCity"}}}}
        with pytest.raises(ConfigError) as exc:
            load_settings(write(tmp_path, document), environ={})
        assert "mapping.flows.subscription_status.City__c" in problems(exc)

    def test_unknown_flow_and_table(self, tmp_path: Path) -> None:
        """Extra fields for a flow that takes none, or a lookup on a missing table, are refused."""
        document = {**MINIMAL, "mapping": {"flows": {
            "quotes": {"X__c": "const:x"},
            "billing_events": {"Y__c": "lookup:nope:invoice.status"}}}}
        with pytest.raises(ConfigError) as exc:
            load_settings(write(tmp_path, document), environ={})
        found = problems(exc)
        assert "mapping.flows.quotes" in found and "mapping.flows.billing_events.Y__c" in found


def test_every_flow_declares_its_salesforce_fields(tmp_path: Path) -> None:
    """The describe check can only guard the fields a flow names: every enabled flow names some."""
    from revdaemon.engine.schema import flow_fields
    from revdaemon.engine.supervisor import default_flows

    flows = default_flows(load_settings(ROOT / "config.yaml", environ={}))
    assert len(flows) == 7  # flow 8 is a scheduled job, not an event flow
    assert all(flow_fields(flow) for flow in flows), [f.name for f in flows if not flow_fields(f)]
