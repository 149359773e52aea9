"""Issue 22 §2: a create whose answer was lost. The simulators apply the request, then lose its answer (the
connection dropped, a 503/504, an answer slower than the client's timeout); the executor treats the outcome as
unknown, waits for it to settle, looks it up, and never makes a second record."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import anyio
import pytest

from revdaemon.engine.executor import PendingWrite
from revdaemon.errors import OutcomeUnknown, Settling
from revdaemon.flows.closed_won_to_order import ClosedWonToOrderFlow
from revdaemon.flows.plan import NueCreateCustomer, SfCreate
from revdaemon.sandbox.runner import Sandbox
from revdaemon.store.states import EventStatus
from tests.integration.engine_fixtures import Engine, engine
from tests.integration.test_engine_closed_won import orders_for, won

pytestmark = pytest.mark.anyio

SETTLE = timedelta(seconds=1)


async def drain(e: Engine, events: int, *, within: float = 20.0) -> None:
    """Run the worker until `events` events are done (retries of unknown outcomes wait out the settle delay)."""
    with anyio.fail_after(within):
        while (await e.store.queue_depths())[EventStatus.DONE] < events:
            if not await e.worker.run_once():
                await anyio.sleep(0.1)


class TestNueLostAnswers:
    @pytest.mark.parametrize("fault", ["drop", "503", "504"])
    async def test_an_order_create_whose_answer_was_lost_makes_one_order(
            self, sandbox: Sandbox, tmp_path: Path, fault: str) -> None:
        """The order is made but its answer lost: the deal is retried only after the settle delay, the lookup
        finds the order, and the deal ends with one activated order, written back."""
        opportunity_id, event = won(sandbox, 0)
        sandbox.nue.faults.settings.applied_paths = ["POST /orders"]
        sandbox.nue.faults.script_applied([fault])
        async with engine(sandbox, tmp_path, flows=[ClosedWonToOrderFlow()], settle=SETTLE) as e:
            await e.store.add_events([event])
            await e.worker.run_once()
            [waiting] = await e.store.list_events(status=EventStatus.RECEIVED)
            assert "may have been applied" in (waiting.last_error or "")
            assert waiting.next_attempt_at is not None  # not before the settle delay
            await drain(e, 1)
        assert sandbox.nue.faults.fired.as_dict()[f"applied_{fault}"] == 1
        [order] = orders_for(sandbox, opportunity_id)
        assert order["status"] == "Activated"
        assert sandbox.salesforce.record("Opportunity", opportunity_id)["Nue_Order_Id__c"] == order["id"]

    async def test_an_activation_whose_answer_was_lost_is_read_not_repeated(
            self, sandbox: Sandbox, tmp_path: Path) -> None:
        """Activating is not repeatable (a second one is refused): after a lost answer the order's status is
        read, and the deal carries on to the write-back."""
        opportunity_id, event = won(sandbox, 0)
        sandbox.nue.faults.settings.applied_paths = ["POST /orders/*"]
        sandbox.nue.faults.script_applied(["drop"])
        async with engine(sandbox, tmp_path, flows=[ClosedWonToOrderFlow()], settle=SETTLE) as e:
            await e.store.add_events([event])
            await drain(e, 1)
            [dead] = [*await e.store.list_dead_letters()] or [None]
            assert dead is None
        [order] = orders_for(sandbox, opportunity_id)
        assert order["status"] == "Activated"
        activations = [r for r in sandbox.nue.log.writes() if r.path == f"/orders/{order['id']}"]
        assert len(activations) == 1

    async def test_a_slow_customer_create_is_not_made_twice(self, sandbox: Sandbox, tmp_path: Path) -> None:
        """The answer comes after the client gave up: the customer exists. The next attempt waits for the
        settle delay (Settling, no attempt used up), then finds it."""
        account_id = sandbox.salesforce.seed_data.opportunities[0].account_id
        sandbox.nue.faults.settings.applied_paths = ["POST /customers"]
        sandbox.nue.faults.settings.applied_slow_seconds = 1.5
        sandbox.nue.faults.script_applied(["slow"])
        write = NueCreateCustomer(salesforce_account_id=account_id, payload={"name": "Slow Co",
                                                                              "recordType": "Business"},
                                  idem_key="lost:customer")
        async with engine(sandbox, tmp_path, settle=SETTLE, create_timeout_seconds=0.5) as e:
            first = await e.executor.execute([PendingWrite(write=write, event_id=None)])
            assert isinstance(first[write.idem_key].error, OutcomeUnknown)
            again = await e.executor.execute([PendingWrite(write=write, event_id=None)])
            assert isinstance(again[write.idem_key].error, Settling)  # too soon to look
            await anyio.sleep(SETTLE.total_seconds() + 0.7)  # the slow answer is out; the delay has passed
            settled = await e.executor.execute([PendingWrite(write=write, event_id=None)])
            assert settled[write.idem_key].ok and settled[write.idem_key].result["created"] is False  # type: ignore[index]
        made = [c for c in sandbox.nue.store.customers.values() if c.get("salesAccountId") == account_id]
        assert len(made) == 1


class TestSalesforceLostAnswers:
    @pytest.mark.parametrize("fault", ["applied_drop_next", "applied_503_next", "applied_504_next"])
    async def test_a_collections_create_whose_answer_was_lost_makes_each_task_once(
            self, sandbox: Sandbox, tmp_path: Path, fault: str) -> None:
        """Tasks created in one Collections call, the answer lost: after the settle delay one SOQL lookup
        finds them all and nothing is created again, even though the flow had seen them absent."""
        account_id = sandbox.salesforce.seed_data.opportunities[0].account_id
        writes = [SfCreate(sobject="Task", fields={"WhatId": account_id, "Subject": f"Lost {n}"},
                           match={"WhatId": account_id, "Subject": f"Lost {n}"}, idem_key=f"lost:task:{n}",
                           seen_absent=True) for n in range(5)]
        sandbox.salesforce.set_faults(**{fault: 1}, applied_paths=["POST /composite/sobjects"])
        pending = [PendingWrite(write=w, event_id=None) for w in writes]
        async with engine(sandbox, tmp_path, settle=SETTLE) as e:
            first = await e.executor.execute(pending)
            assert all(isinstance(o.error, OutcomeUnknown) for o in first.values())
            await anyio.sleep(SETTLE.total_seconds())
            settled = await e.executor.execute(pending)
            assert all(o.ok and o.result and o.result["created"] is False for o in settled.values())
        assert sandbox.salesforce.faults_fired()[fault.removesuffix("_next")] == 1
        subjects = [t["Subject"] for t in sandbox.salesforce.records("Task") if t.get("WhatId") == account_id]
        assert sorted(s for s in subjects if s.startswith("Lost")) == [f"Lost {n}" for n in range(5)]

    async def test_a_503_before_handling_is_settled_then_made_once(self, sandbox: Sandbox, tmp_path: Path) -> None:
        """A create's 503 may come from a proxy after the org applied it, so it is an unknown outcome too; when
        nothing was made, the lookup after the settle delay finds nothing and the Task is created, once."""
        account_id = sandbox.salesforce.seed_data.opportunities[0].account_id
        write = SfCreate(sobject="Task", fields={"WhatId": account_id, "Subject": "Refused"},
                         match={"WhatId": account_id, "Subject": "Refused"}, idem_key="lost:refused",
                         seen_absent=True)
        sandbox.salesforce.set_faults(unavailable_next=1)
        async with engine(sandbox, tmp_path, settle=SETTLE) as e:
            first = await e.executor.execute([PendingWrite(write=write, event_id=None)])
            assert isinstance(first[write.idem_key].error, OutcomeUnknown)
            await anyio.sleep(SETTLE.total_seconds())
            settled = await e.executor.execute([PendingWrite(write=write, event_id=None)])
            assert settled[write.idem_key].ok and settled[write.idem_key].result["created"] is True  # type: ignore[index]
        made = [t for t in sandbox.salesforce.records("Task") if t.get("Subject") == "Refused"]
        assert len(made) == 1
