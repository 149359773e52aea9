from __future__ import annotations

import pytest

from revdaemon.errors import IllegalTransition
from revdaemon.store.states import (
    EVENT_TRANSITIONS,
    INTENT_TRANSITIONS,
    EventStatus,
    IntentStatus,
    check_event_move,
    check_intent_move,
)


class TestEventTransitions:
    @pytest.mark.parametrize("current", list(EventStatus))
    @pytest.mark.parametrize("target", list(EventStatus))
    def test_table_is_the_rule(self, current: EventStatus, target: EventStatus) -> None:
        """check_event_move allows exactly the moves in the table."""
        if target in EVENT_TRANSITIONS[current]:
            check_event_move(current, target)
        else:
            with pytest.raises(IllegalTransition):
                check_event_move(current, target)

    def test_done_is_terminal(self) -> None:
        """Nothing leaves done."""
        assert EVENT_TRANSITIONS[EventStatus.DONE] == frozenset()

    def test_workers_cannot_revive_dead_events(self) -> None:
        """Only received (an operator's replay) leaves dead."""
        assert EVENT_TRANSITIONS[EventStatus.DEAD] == {EventStatus.RECEIVED}


class TestIntentTransitions:
    def test_the_happy_path(self) -> None:
        """recorded, sent, confirmed is allowed step by step."""
        check_intent_move(IntentStatus.RECORDED, IntentStatus.SENT)
        check_intent_move(IntentStatus.SENT, IntentStatus.CONFIRMED)

    def test_confirmed_is_final(self) -> None:
        """A confirmed write can never be re-sent."""
        for target in IntentStatus:
            with pytest.raises(IllegalTransition):
                check_intent_move(IntentStatus.CONFIRMED, target)
        assert INTENT_TRANSITIONS[IntentStatus.CONFIRMED] == frozenset()
