"""The engine end to end for one flow: webhooks as hints, re-reads, batching, ordering, idempotence."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import anyio
import pytest

from revdaemon.engine.lookups import Fetcher
from revdaemon.engine.worker import Worker
from revdaemon.errors import Busy, ErrorContext
from revdaemon.flows.subscription_status import SubscriptionStatusFlow
from revdaemon.sandbox.runner import Sandbox
from revdaemon.store.states import EventStatus
from tests.integration.engine_fixtures import engine, webhook

pytestmark = pytest.mark.anyio


def activate_for(sandbox: Sandbox, account_index: int, opportunity_index: int) -> tuple[str, str, list[dict]]:
    """A linked customer with an activated order: (customer id, Salesforce account id, its subscriptions)."""
    scenario = sandbox.nue.scenario
    customer = scenario.create_customer(account_index)
    scenario.create_and_activate_order(customer["id"], opportunity=opportunity_index)
    subscriptions = [s for s in sandbox.nue.store.subscriptions.values() if s["customerId"] == customer["id"]]
    return customer["id"], customer["externalId"], subscriptions


class TestSubscriptionStatus:
    async def test_account_shows_nue_state_and_matches_nue_cmrr(self, sandbox: Sandbox, tmp_path: Path) -> None:
        """After an order activates, the account shows Active, the MRR Nue itself reports, ARR and renewal."""
        customer_id, account_id, subscriptions = activate_for(sandbox, 0, 0)
        async with engine(sandbox, tmp_path) as e:
            await e.store.add_events([webhook("subscription.updated", dict(subscriptions[0]), "evt-1")])
            assert await e.worker.run_once() == 1
            assert (await e.store.queue_depths())[EventStatus.DONE] == 1
        account = sandbox.salesforce.record("Account", account_id)
        customer = sandbox.nue.store.customers[customer_id]
        assert account["Subscription_Status__c"] == "Active"
        assert Decimal(str(account["MRR__c"])) == Decimal(str(customer["todayCMRR"]))
        assert Decimal(str(account["ARR__c"])) == Decimal(str(account["MRR__c"])) * 12
        assert account["Next_Renewal_Date__c"] == min(str(s["subscriptionEndDate"])[:10] for s in subscriptions)

    async def test_lying_webhook_writes_the_real_state(self, sandbox: Sandbox, tmp_path: Path) -> None:
        """A correctly delivered notification with a wrong quantity and status cannot write them."""
        customer_id, account_id, subscriptions = activate_for(sandbox, 1, 1)
        lie = {**subscriptions[0], "quantity": 99999, "status": "Canceled"}
        async with engine(sandbox, tmp_path) as e:
            await e.store.add_events([webhook("subscription.updated", lie, "evt-lie")])
            await e.worker.run_once()
        account = sandbox.salesforce.record("Account", account_id)
        assert account["Subscription_Status__c"] == "Active"
        assert Decimal(str(account["MRR__c"])) == Decimal(str(sandbox.nue.store.customers[customer_id]["todayCMRR"]))

    async def test_burst_with_duplicates_and_reordering_costs_one_write(self, sandbox: Sandbox,
                                                                        tmp_path: Path) -> None:
        """Twenty notifications about one customer, duplicated and out of order, end in one account update."""
        _customer_id, account_id, subscriptions = activate_for(sandbox, 2, 2)
        sub = subscriptions[0]
        events = [webhook("subscription.updated", {**sub, "lastModifiedDate": f"2026-01-01T00:00:{i:02d}Z"})
                  for i in reversed(range(20))]
        async with engine(sandbox, tmp_path) as e:
            sandbox.salesforce.log.clear()
            sandbox.nue.log.clear()
            await e.store.add_events(events + events[:5])
            while await e.worker.run_once():
                pass
            assert (await e.store.queue_depths())[EventStatus.DONE] == 20
        writes = [r for r in sandbox.salesforce.log.writes() if "/composite/sobjects" in r.path]
        assert len(writes) == 1
        assert sandbox.nue.log.count() <= 5  # customers, subscriptions and catalog read once for the batch
        assert sandbox.salesforce.record("Account", account_id)["Subscription_Status__c"] == "Active"

    async def test_second_run_writes_nothing(self, sandbox: Sandbox, tmp_path: Path) -> None:
        """When the account already shows the state, a later notification costs reads but no write."""
        _customer_id, _account_id, subscriptions = activate_for(sandbox, 3, 3)
        async with engine(sandbox, tmp_path) as e:
            await e.store.add_events([webhook("subscription.updated", dict(subscriptions[0]), "a")])
            await e.worker.run_once()
            sandbox.salesforce.log.clear()
            await e.store.add_events([webhook("subscription.updated", dict(subscriptions[0]), "b")])
            await e.worker.run_once()
        assert sandbox.salesforce.log.writes() == []

    async def test_amendment_moves_the_mrr(self, sandbox: Sandbox, tmp_path: Path) -> None:
        """A quantity change order raises the account MRR by the subscription's new price."""
        customer_id, account_id, subscriptions = activate_for(sandbox, 4, 0)
        async with engine(sandbox, tmp_path) as e:
            await e.store.add_events([webhook("subscription.updated", dict(subscriptions[0]), "before")])
            await e.worker.run_once()
            before = Decimal(str(sandbox.salesforce.record("Account", account_id)["MRR__c"]))
            sandbox.nue.scenario.change(subscriptions[0]["name"], "UpdateQuantity", quantity=5)
            changed = sandbox.nue.store.subscriptions[subscriptions[0]["id"]]
            await e.store.add_events([webhook("subscription.updated", dict(changed), "after")])
            await e.worker.run_once()
        after = Decimal(str(sandbox.salesforce.record("Account", account_id)["MRR__c"]))
        assert after > before
        assert after == Decimal(str(sandbox.nue.store.customers[customer_id]["todayCMRR"]))

    async def test_a_field_removed_at_run_time_parks_the_flow_not_the_record(self, sandbox: Sandbox,
                                                                             tmp_path: Path) -> None:
        """INVALID_FIELD means the org changed: the event waits (no dead letter), and runs once the field is back."""
        from revdaemon.sandbox.salesforce import DEFAULT_CUSTOM_FIELDS

        _customer_id, account_id, subscriptions = activate_for(sandbox, 5, 1)
        async with engine(sandbox, tmp_path, schema_guard=True) as e:
            assert e.schema is not None and await e.schema.check_all() == {}
            sandbox.salesforce.remove_field("Account", "ARR__c")
            await e.store.add_events([webhook("subscription.updated", dict(subscriptions[0]), "x")])
            await e.worker.run_once()
            assert await e.store.list_dead_letters() == []
            [waiting] = await e.store.list_events(status=EventStatus.RECEIVED)
            assert "parked" in (waiting.last_error or "") and "ARR__c" in (waiting.last_error or "")
            assert waiting.attempts == 0  # a parked wait is not the event's failure: no dead letter later
            assert e.schema.is_parked("subscription_status")
            sandbox.salesforce.add_field(next(f for f in DEFAULT_CUSTOM_FIELDS if f.name == "ARR__c"))
            assert await e.schema.check_all(refresh=True) == {}
            assert not e.schema.is_parked("subscription_status")
        assert sandbox.salesforce.record("Account", account_id)["ARR__c"] is None  # nothing written while parked

    async def test_a_field_missing_at_start_parks_only_its_flow(self, sandbox: Sandbox, tmp_path: Path) -> None:
        """The start-up describe check parks the flow whose field is gone; its events wait in the inbox."""
        _customer_id, _account_id, subscriptions = activate_for(sandbox, 5, 1)
        sandbox.salesforce.remove_field("Account", "MRR__c")
        async with engine(sandbox, tmp_path, schema_guard=True) as e:
            assert e.schema is not None
            assert await e.schema.check_all() == {"subscription_status": {"Account": ["MRR__c"]}}
            sandbox.salesforce.log.clear()
            await e.store.add_events([webhook("subscription.updated", dict(subscriptions[0]), "y")])
            await e.worker.run_once()
            assert (await e.store.queue_depths())[EventStatus.RECEIVED] == 1
        assert sandbox.salesforce.log.writes() == []


class TestIsolation:
    async def test_one_bad_lookup_does_not_fail_the_batch(self, sandbox: Sandbox, tmp_path: Path) -> None:
        """A customer linked to an id Salesforce refuses fails alone; the other event of the claim is done."""
        _good_customer, good_account, good_subs = activate_for(sandbox, 0, 0)
        bad_customer, _bad_account, bad_subs = activate_for(sandbox, 1, 1)
        sandbox.nue.store.customers[bad_customer]["externalId"] = "not-a-salesforce-id"
        async with engine(sandbox, tmp_path) as e:
            await e.store.add_events([webhook("subscription.updated", dict(good_subs[0]), "good"),
                                      webhook("subscription.updated", dict(bad_subs[0]), "bad")])
            await e.worker.run_once()
            done = {ev.key for ev in await e.store.list_events(status=EventStatus.DONE)}
        assert done == {"nue:good"}
        assert sandbox.salesforce.record("Account", good_account)["Subscription_Status__c"] == "Active"


class TestMappedField:
    async def test_a_custom_field_added_by_config_alone(self, sandbox: Sandbox, tmp_path: Path) -> None:
        """A field declared in mapping.flows is written with the flow's own write and checked by describe."""
        from revdaemon.flows.subscription_status import SubscriptionStatusFlow, SubscriptionStatusMapping
        from revdaemon.mapping.fields import parse_spec
        from revdaemon.sandbox.salesforce import CustomField

        sandbox.salesforce.add_field(CustomField(object="Account", name="Nue_Account_Number__c", label="Nue #"))
        _customer_id, account_id, subscriptions = activate_for(sandbox, 2, 0)
        flow = SubscriptionStatusFlow(SubscriptionStatusMapping(
            extra_fields={"Nue_Account_Number__c": parse_spec("path:customer.accountNumber")}))
        async with engine(sandbox, tmp_path, flows=[flow], schema_guard=True) as e:
            assert e.schema is not None and await e.schema.check_all() == {}
            await e.store.add_events([webhook("subscription.updated", dict(subscriptions[0]), "m1")])
            await e.worker.run_once()
        assert sandbox.salesforce.record("Account", account_id)["Nue_Account_Number__c"].startswith("CUST-")


class TestOrdering:
    async def test_an_older_state_is_never_written_after_a_newer_one(self, sandbox: Sandbox, tmp_path: Path) -> None:
        """Two workers with two reads of one entity: the write carrying the older version is skipped as stale."""
        from revdaemon.engine.executor import PendingWrite
        from revdaemon.flows.plan import SfUpdate

        account_id = sandbox.salesforce.seed_data.accounts[0].id
        newer = PendingWrite(write=SfUpdate(sobject="Account", record_id=account_id, fields={"MRR__c": 200},
                                            idem_key="t:new"), event_id=None, entity="nue:customer:c",
                             version="2026-01-02T00:00:00.000000Z")
        older = PendingWrite(write=SfUpdate(sobject="Account", record_id=account_id, fields={"MRR__c": 100},
                                            idem_key="t:old"), event_id=None, entity="nue:customer:c",
                             version="2026-01-01T00:00:00.000000Z")
        async with engine(sandbox, tmp_path) as e:
            assert (await e.executor.execute([newer]))["t:new"].ok
            late = (await e.executor.execute([older]))["t:old"]
            assert late.ok and late.stale
            assert await e.store.get_entity_version("nue:customer:c") == "2026-01-02T00:00:00.000000Z"
        assert sandbox.salesforce.record("Account", account_id)["MRR__c"] == 200


class TestMergedWrites:
    async def test_a_refused_merged_write_fails_only_its_own_part(self, sandbox: Sandbox, tmp_path: Path) -> None:
        """Two plans' writes to one account are merged; when Salesforce refuses the record, each part is sent
        alone, so only the bad one fails."""
        from revdaemon.engine.executor import PendingWrite
        from revdaemon.flows.plan import SfUpdate

        account_id = sandbox.salesforce.seed_data.accounts[1].id
        good = PendingWrite(write=SfUpdate(sobject="Account", record_id=account_id, fields={"MRR__c": 321},
                                           idem_key="m:good"), event_id=None)
        bad = PendingWrite(write=SfUpdate(sobject="Account", record_id=account_id,
                                          fields={"Last_Nue_Order__c": "x" * 300}, idem_key="m:bad"), event_id=None)
        async with engine(sandbox, tmp_path) as e:
            outcomes = await e.executor.execute([good, bad])
        assert outcomes["m:good"].ok
        failed = outcomes["m:bad"]
        assert not failed.ok and failed.error is not None and failed.error.context.error_code == "STRING_TOO_LONG"
        assert sandbox.salesforce.record("Account", account_id)["MRR__c"] == 321


class TestSalesforcePause:
    async def test_workers_claim_nothing_while_salesforce_is_paused(self, sandbox: Sandbox, tmp_path: Path) -> None:
        """After REQUEST_LIMIT_EXCEEDED every flow would wait anyway: no event is claimed and Nue is not read
        until the pause ends; then the event drains."""
        _customer_id, account_id, subscriptions = activate_for(sandbox, 3, 3)
        pause = {"left": 60.0}
        async with engine(sandbox, tmp_path) as e:
            worker = Worker(e.store, Fetcher(e.salesforce, e.nue, e.store), e.executor, [SubscriptionStatusFlow()],
                            idle_seconds=0.05, hold=lambda: pause["left"])
            await e.store.add_events([webhook("subscription.updated", dict(subscriptions[0]), "evt-held")])
            sandbox.nue.log.clear()
            async with anyio.create_task_group() as tg:
                await tg.start(worker.run)
                await anyio.sleep(0.3)
                assert (await e.store.queue_depths())[EventStatus.RECEIVED] == 1
                assert sandbox.nue.log.count() == 0
                pause["left"] = 0.0
                for _ in range(200):  # the worker looks again within its idle time (0.05 s)
                    if (await e.store.queue_depths())[EventStatus.DONE] == 1:
                        break
                    await anyio.sleep(0.05)
                worker.stop()
        assert sandbox.salesforce.record("Account", account_id)["Subscription_Status__c"] == "Active"



class TestBusyNeverDeadLetters:
    async def test_a_write_another_worker_holds_waits_without_using_up_attempts(self, sandbox: Sandbox,
                                                                                tmp_path: Path) -> None:
        """Another worker of this process is writing the same record: the event waits for it however many times it
        is claimed, and does not become a dead letter after max_attempts."""
        _customer_id, _account_id, subscriptions = activate_for(sandbox, 4, 4)
        async with engine(sandbox, tmp_path) as e:
            worker = Worker(e.store, Fetcher(e.salesforce, e.nue, e.store), e.executor, [SubscriptionStatusFlow()],
                            max_attempts=1)
            await e.store.add_events([webhook("subscription.updated", dict(subscriptions[0]), "evt-held-2")])
            [event] = await e.store.claim_events(worker=worker.name, limit=1, lease=timedelta(minutes=5))
            assert event.attempts >= 1
            await worker._retry(event, Busy("another worker is writing this record", ErrorContext(
                system="salesforce", operation="SfUpdate")))
            stored = await e.store.get_event(event.id)
            assert stored is not None and stored.status is EventStatus.RECEIVED and stored.attempts == 0
            assert (await e.store.queue_depths())[EventStatus.DEAD] == 0


class TestOriginatingOpportunity:
    async def test_the_opportunity_of_the_order_shows_its_subscriptions_state(self, sandbox: Sandbox,
                                                                              tmp_path: Path) -> None:
        """Through real sockets: the opportunity flow 1's order was made for shows the status, MRR and next
        renewal of that order's subscriptions, as the account does for the customer's whole book."""
        from revdaemon.connectors.nue_wire import ASSUMED_ORDER_MARKER_PREFIX

        scenario = sandbox.nue.scenario
        customer = scenario.create_customer(2)
        account_id = customer["externalId"]
        opportunity_id = next(o["Id"] for o in sandbox.salesforce.records("Opportunity")
                              if o["AccountId"] == account_id)
        # The order as flow 1 makes it for a won deal: marked with its opportunity.
        marker = f"From Salesforce ({ASSUMED_ORDER_MARKER_PREFIX}{opportunity_id})"
        scenario.create_and_activate_order(customer["id"], opportunity=2, description=marker)
        subscriptions = [s for s in sandbox.nue.store.subscriptions.values() if s["customerId"] == customer["id"]]
        async with engine(sandbox, tmp_path) as e:
            await e.store.add_events([webhook("subscription.updated", dict(subscriptions[0]), "evt-opp")])
            assert await e.worker.run_once() == 1
        account = sandbox.salesforce.record("Account", account_id)
        opportunity = sandbox.salesforce.record("Opportunity", opportunity_id)
        assert opportunity["Subscription_Status__c"] == "Active"
        assert Decimal(str(opportunity["MRR__c"])) == Decimal(str(account["MRR__c"]))  # its one order: all of it
        assert opportunity["Next_Renewal_Date__c"] == account["Next_Renewal_Date__c"]
