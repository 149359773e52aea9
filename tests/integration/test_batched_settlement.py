"""One API call's answers are kept in one store transaction (Store.settle_writes, issue 30). Killed after Nue
applied a batch but before that transaction committed, no intent of the batch is settled: the restarted daemon
looks the creates up and finds them, so a won deal still gets exactly one customer and one order."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from revdaemon.flows.closed_won_to_order import ClosedWonToOrderFlow
from revdaemon.sandbox.runner import Sandbox
from revdaemon.store import Store
from revdaemon.store.states import EventStatus, IntentStatus
from tests.faulty_store import Crash, Fault, FaultKind, FaultyStore
from tests.integration.engine_fixtures import engine, fake_engine_time
from tests.integration.test_engine_closed_won import orders_for, won

pytestmark = pytest.mark.anyio


async def test_a_kill_before_the_settlement_commits_leaves_the_whole_batch_to_be_looked_up(
        sandbox: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    clock = fake_engine_time(monkeypatch)
    events = [won(sandbox, index) for index in (0, 1)]
    faulty: list[FaultyStore] = []

    def wrap(store: Store) -> Store:
        faulty.append(FaultyStore(store))
        return faulty[-1].store

    flows = [ClosedWonToOrderFlow()]
    async with engine(sandbox, tmp_path, clock=clock, wrap_store=wrap, flows=flows) as e:
        await e.store.add_events([event for _opportunity, event in events])
        create_customers = e.nue.create_customers

        async def applied_then_killed(customers: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
            made = await create_customers(customers)
            faulty[-1].arm(Fault(FaultKind.CRASH_BEFORE), in_calls=1)  # the settlement's transaction never runs
            return made

        e.nue.create_customers = applied_then_killed  # type: ignore[method-assign]
        with pytest.raises(Crash):
            await e.worker.run_once()
        assert "settle_writes" in faulty[-1].fired[-1]
    customers_made = len(sandbox.nue.store.customers)
    clock.advance(timedelta(minutes=30).total_seconds())  # past the claim's lease and the settle delay
    async with engine(sandbox, tmp_path, clock=clock, flows=flows) as e:  # the restarted daemon
        unsettled = [await e.store.get_intent(f"closed_won_to_order:customer:"
                                              f"{sandbox.salesforce.record('Opportunity', o)['AccountId']}")
                     for o, _event in events]
        assert [i.status if i else None for i in unsettled] == [IntentStatus.SENT] * 2  # neither settled alone
        while await e.worker.run_once():
            pass
        assert (await e.store.queue_depths())[EventStatus.DONE] == 2
    assert len(sandbox.nue.store.customers) == customers_made  # found by the lookup, not created again
    for opportunity_id, _event in events:
        [order] = orders_for(sandbox, opportunity_id)
        assert order["status"] == "Activated"
