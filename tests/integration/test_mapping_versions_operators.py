"""Versioned mappings as operators meet them: `dead-letters replay --dry-run --remap` and the console's
replay preview, against the sandbox."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import anyio
import pytest
import yaml

from revdaemon.config import Settings
from revdaemon.engine.lookups import Fetcher
from revdaemon.engine.mappings import FlowVersions
from revdaemon.engine.supervisor import default_flows
from revdaemon.sandbox.runner import Sandbox
from revdaemon.sandbox.salesforce import CustomField
from revdaemon.store import open_store
from revdaemon.store.records import NewDeadLetter
from revdaemon.store.states import EventStatus
from tests.integration.engine_fixtures import engine, webhook
from tests.integration.test_engine_mapping_versions import NEW_FIELD, OLD_FIELD
from tests.integration.test_engine_subscription_status import activate_for
from tests.integration.test_sandbox_cli import sandbox_config


def cli(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([sys.executable, "-m", "revdaemon.cli", *args, "--config", str(config)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    return result


class TestCommandLine:
    def test_replay_dry_run_with_remap_shows_both_and_remap_clears_the_pin(self, sandbox: Sandbox,
                                                                            tmp_path: Path) -> None:
        """`dead-letters replay N --dry-run` plans with the pinned version; with --remap it shows both versions'
        writes (the pinned one for comparison only); `replay N --remap` puts the event back unpinned."""
        from revdaemon.config import load_settings
        from revdaemon.engine.mappings import content_hash, mapping_text

        _customer, _account, subs = activate_for(sandbox, 0, 0)
        for name in (OLD_FIELD, NEW_FIELD):
            sandbox.salesforce.add_field(CustomField(object="Account", name=name, label=name))
        path = sandbox_config(sandbox, tmp_path)
        document = yaml.safe_load(path.read_text())

        def configure(field: str) -> None:
            document["mapping"] = {"flows": {"subscription_status": {field: "path:customer.accountNumber"}}}
            path.write_text(yaml.safe_dump(document))

        configure(OLD_FIELD)
        settings = load_settings(path, environ={})

        async def dead_letter_under_v1() -> tuple[int, int]:
            store = await open_store(settings.database_path)
            try:
                v1 = await store.register_mapping(mapping_text(settings), content_hash(mapping_text(settings)))
                await store.add_events([webhook("subscription.updated", dict(subs[0]), "cli")])
                [event] = await store.claim_events(worker="w", limit=1, lease=timedelta(minutes=1),
                                                   mapping_version=v1.version)
                letter = await store.dead_letter_event(event.id, NewDeadLetter(
                    system="salesforce", operation="update Account", error="boom"), claimed_by="w")
                return letter, event.id
            finally:
                await store.close()

        letter, event_id = anyio.run(dead_letter_under_v1)
        configure(NEW_FIELD)

        pinned = json.loads(cli(path, "dead-letters", "replay", str(letter), "--dry-run", "--json").stdout)
        [shown] = pinned["events"]
        assert shown["mapping"] == "v1 (pinned)" and shown["used"]
        assert {f["field"] for w in shown["writes"] for f in w["fields"]} & {OLD_FIELD, NEW_FIELD} == {OLD_FIELD}

        both = json.loads(cli(path, "dead-letters", "replay", str(letter), "--dry-run", "--remap", "--json").stdout)
        before, after = both["events"]
        assert (before["mapping"], before["used"]) == ("v1 (pinned)", False)
        assert after["used"] and after["mapping"].startswith("current (config.yaml's")  # not stored yet
        assert NEW_FIELD in {f["field"] for w in after["writes"] for f in w["fields"]}
        text = cli(path, "dead-letters", "replay", str(letter), "--dry-run", "--remap").stdout
        assert "for comparison" in text and OLD_FIELD in text and NEW_FIELD in text
        assert [r for r in sandbox.salesforce.log.writes() if r.path.startswith("/services/data")] == []

        cli(path, "dead-letters", "replay", str(letter), "--remap")

        async def replayed() -> tuple[int | None, object]:
            store = await open_store(settings.database_path)
            try:
                event = await store.get_event(event_id)
                [action] = [w for w in await store.list_writes(event_id=event_id) if w.system == "operator"]
                return (event.mapping_version if event else -1), action.detail.get("remap")
            finally:
                await store.close()

        assert anyio.run(replayed) == (None, True)  # planned with the current mapping at its next claim


@pytest.mark.anyio
class TestConsole:
    async def test_the_dead_letter_preview_shows_both_versions_and_replays_remapped(self, sandbox: Sandbox,
                                                                                   tmp_path: Path) -> None:
        """The console's replay preview plans with the pinned version; ticking remap shows both, and the replay
        it confirms clears the pin."""
        import httpx

        from revdaemon.console.app import ConsoleContext, build_console
        from tests.integration.test_console_pages import csrf_of, log_in
        from tests.integration.test_console_pages import settings_for as console_settings

        _customer, _account, subs = activate_for(sandbox, 0, 0)
        for name in (OLD_FIELD, NEW_FIELD):
            sandbox.salesforce.add_field(CustomField(object="Account", name=name, label=name))
        base = console_settings(tmp_path)

        def mapping_of(field: str) -> Settings:
            flows = {"subscription_status": {field: "path:customer.accountNumber"}}
            return base.model_copy(update={"mapping": base.mapping.model_copy(update={"flows": flows})})

        old, new = mapping_of(OLD_FIELD), mapping_of(NEW_FIELD)
        async with engine(sandbox, tmp_path) as e:
            v1 = await FlowVersions.load(e.store, old, default_flows(old), default_flows)
            await e.store.add_events([webhook("subscription.updated", dict(subs[0]), "console")])
            [event] = await e.store.claim_events(worker="w", limit=1, lease=timedelta(minutes=1),
                                                 mapping_version=v1.current_version)
            letter = await e.store.dead_letter_event(event.id, NewDeadLetter(
                system="salesforce", operation="update Account", error="boom"), claimed_by="w")
            current = await FlowVersions.load(e.store, new, default_flows(new), default_flows)  # the daemon's start
            app = build_console(ConsoleContext(store=e.store, settings=new, flows=current.flows,
                                               fetcher=Fetcher(e.salesforce, e.nue, e.store)))
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app, client=("10.0.0.7", 5000)),
                                         base_url="http://console.test") as client:
                await log_in(client)
                listing = await client.get("/dead-letters")
                assert 'name="remap"' in listing.text
                csrf = await csrf_of(client, "/dead-letters")
                pinned = await client.post("/dead-letters/preview", data={"id": str(letter), "csrf": csrf})
                assert pinned.status_code == 200 and "v1 (pinned)" in pinned.text
                assert OLD_FIELD in pinned.text and NEW_FIELD not in pinned.text
                assert 'name="remap"' not in pinned.text
                both = await client.post("/dead-letters/preview", data={"id": str(letter), "csrf": csrf,
                                                                        "remap": "1"})
                assert both.status_code == 200 and "for comparison only" in both.text
                assert "v1 (pinned)" in both.text and "v2 (current)" in both.text
                assert OLD_FIELD in both.text and NEW_FIELD in both.text
                assert 'name="remap" value="1"' in both.text  # the confirmation replays remapped
                done = await client.post("/dead-letters/replay", data={"id": str(letter), "csrf": csrf,
                                                                       "remap": "1"})
                assert done.status_code == 303
            back = await e.store.get_event(event.id)
            assert back is not None and back.status is EventStatus.RECEIVED and back.mapping_version is None
