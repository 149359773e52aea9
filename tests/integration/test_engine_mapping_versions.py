"""Versioned mappings against the sandbox: a replay writes what the mapping it first ran with wrote, unless the
operator remaps it; the dry run shows both."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from revdaemon import service
from revdaemon.config import MappingSettings, Settings
from revdaemon.engine.lookups import Fetcher
from revdaemon.engine.mappings import FlowVersions
from revdaemon.engine.supervisor import default_flows
from revdaemon.engine.worker import Worker
from revdaemon.limits import RetryPolicy
from revdaemon.sandbox.runner import Sandbox
from revdaemon.sandbox.salesforce import CustomField
from revdaemon.store.states import EventStatus
from tests.integration.engine_fixtures import Engine, engine, webhook
from tests.integration.test_engine_subscription_status import activate_for

OLD_FIELD, NEW_FIELD = "Nue_Account_Number__c", "Nue_Customer_Number__c"


def mapped(field: str) -> Settings:
    """config.yaml's mapping with one extra field written by flow 2."""
    return Settings(mapping=MappingSettings(flows={"subscription_status": {field: "path:customer.accountNumber"}}))


def worker_for(e: Engine, versions: FlowVersions) -> Worker:
    """A worker as the daemon builds one at start with this mapping."""
    return Worker(e.store, Fetcher(e.salesforce, e.nue, e.store), e.executor, versions.flows, versions=versions,
                  backoff=RetryPolicy(base_delay=0.0, max_delay=0.0))


@pytest.mark.anyio
class TestPinnedReplay:
    async def test_a_replay_pinned_to_an_old_mapping_writes_the_old_field(self, sandbox: Sandbox,
                                                                         tmp_path: Path) -> None:
        """Two events run under v1 (an extra field Salesforce lacks at the time) and are dead-lettered. The
        mapping changes to the new field (v2). A plain replay writes the old field, as v1 did; a replay with
        remap writes the new one; the dry run with remap shows both; each write records its version."""
        customer_1, account_1, subs_1 = activate_for(sandbox, 0, 0)
        customer_2, account_2, subs_2 = activate_for(sandbox, 1, 1)
        old, new = mapped(OLD_FIELD), mapped(NEW_FIELD)
        async with engine(sandbox, tmp_path) as e:
            v1 = await FlowVersions.load(e.store, old, default_flows(old), default_flows)
            await e.store.add_events([webhook("subscription.updated", dict(subs_1[0]), "pinned"),
                                      webhook("subscription.updated", dict(subs_2[0]), "remapped")])
            await worker_for(e, v1).run_once()
            letters = {(await e.store.get_event(d.event_id)).key: d  # type: ignore[arg-type, union-attr]
                       for d in await e.store.list_dead_letters()}
            assert set(letters) == {"nue:pinned", "nue:remapped"}
            assert all(OLD_FIELD in d.error for d in letters.values())

            # The operator adds the fields in Salesforce and moves the mapping to the new one; the daemon restarts.
            for name in (OLD_FIELD, NEW_FIELD):
                sandbox.salesforce.add_field(CustomField(object="Account", name=name, label=name))
            v2 = await FlowVersions.load(e.store, new, default_flows(new), default_flows)
            assert (v1.current_version, v2.current_version) == (1, 2)
            fetcher = Fetcher(e.salesforce, e.nue, e.store)

            pinned_preview = await service.preview_replay(e.store, [letters["nue:pinned"].id], v2.flows, fetcher,
                                                          versions=v2)
            [shown] = pinned_preview.events
            assert shown.mapping == "v1 (pinned)" and shown.used
            assert {f.field for w in shown.writes for f in w.fields} >= {OLD_FIELD}
            assert NEW_FIELD not in {f.field for w in shown.writes for f in w.fields}

            both = await service.preview_replay(e.store, [letters["nue:remapped"].id], v2.flows, fetcher,
                                                versions=v2, remap=True)
            before, after = both.events
            assert (before.mapping, before.used, after.mapping, after.used) == ("v1 (pinned)", False,
                                                                                 "v2 (current)", True)
            assert OLD_FIELD in {f.field for w in before.writes for f in w.fields}
            assert NEW_FIELD in {f.field for w in after.writes for f in w.fields}
            assert both.writes == len(after.writes)  # only what the replay makes is counted

            await service.replay_dead_letters(e.store, [letters["nue:pinned"].id], actor="test")
            await service.replay_dead_letters(e.store, [letters["nue:remapped"].id], actor="test", remap=True)
            await worker_for(e, v2).run_once()
            assert (await e.store.queue_depths())[EventStatus.DONE] == 2
            for key, version in (("nue:pinned", 1), ("nue:remapped", 2)):
                event_id = letters[key].event_id
                assert event_id is not None
                event = await e.store.get_event(event_id)
                assert event is not None and event.mapping_version == version
                writes = [w for w in await e.store.list_writes(event_id=event_id)
                          if w.system == "salesforce" and w.outcome == "ok"]
                assert writes and {w.mapping_version for w in writes} == {version}  # the audit says which
        pinned = sandbox.salesforce.record("Account", account_1)
        remapped = sandbox.salesforce.record("Account", account_2)  # a field never set is left out
        number_1 = sandbox.nue.store.customers[customer_1]["accountNumber"]
        number_2 = sandbox.nue.store.customers[customer_2]["accountNumber"]
        assert pinned[OLD_FIELD] == number_1 and pinned.get(NEW_FIELD) is None
        assert remapped[NEW_FIELD] == number_2 and remapped.get(OLD_FIELD) is None
        assert pinned["Subscription_Status__c"] == remapped["Subscription_Status__c"] == "Active"

    async def test_new_events_run_with_the_current_mapping(self, sandbox: Sandbox, tmp_path: Path) -> None:
        """An event first claimed after the change is pinned to the new version and writes the new field."""
        _customer, account, subs = activate_for(sandbox, 2, 2)
        for name in (OLD_FIELD, NEW_FIELD):
            sandbox.salesforce.add_field(CustomField(object="Account", name=name, label=name))
        old, new = mapped(OLD_FIELD), mapped(NEW_FIELD)
        async with engine(sandbox, tmp_path) as e:
            await FlowVersions.load(e.store, old, default_flows(old), default_flows)
            v2 = await FlowVersions.load(e.store, new, default_flows(new), default_flows)
            await e.store.add_events([webhook("subscription.updated", dict(subs[0]), "fresh")])
            await worker_for(e, v2).run_once()
            [event] = await e.store.list_events(status=EventStatus.DONE)
            assert event.mapping_version == 2
            assert {w.mapping_version for w in await e.store.list_writes(event_id=event.id)} == {2}
        record = sandbox.salesforce.record("Account", account)
        assert record[NEW_FIELD] and record.get(OLD_FIELD) is None

    async def test_a_pinned_version_that_no_longer_loads_is_a_dead_letter(self, sandbox: Sandbox,
                                                                          tmp_path: Path) -> None:
        """A stored text a newer revdaemon cannot read any more: the event is dead-lettered, saying to remap."""
        _customer, _account, subs = activate_for(sandbox, 3, 3)
        async with engine(sandbox, tmp_path) as e:
            broken = await e.store.register_mapping("mapping: {flows: {x: {A__c: 'nonsense'}}}\n", "0" * 64)
            await e.store.add_events([webhook("subscription.updated", dict(subs[0]), "unloadable")])
            await e.store.claim_events(worker="old", limit=1, lease=timedelta(minutes=1),
                                       mapping_version=broken.version)
            await e.store.release_claims("old")
            now = mapped(NEW_FIELD)
            await worker_for(e, await FlowVersions.load(e.store, now, default_flows(now), default_flows)).run_once()
            [letter] = await e.store.list_dead_letters()
        assert letter.operation == "load mapping version 1"
        assert "no longer loads" in letter.error and "--remap" in letter.error
