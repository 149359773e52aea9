"""Lifecycles of the things the store keeps, as transition tables.

Rule 1: every change of an inbox event's or a write intent's state goes through `check_move`; the store
never writes a status this table does not allow, and an illegal move raises `IllegalTransition` before any
row is touched.
Rule 2: terminal states leave only by an operator's action (replay, resolve), never by a worker.

Inbox events:
    received ──claim──> claimed ──> done
                           │ ├────> received   (retryable failure, with next_attempt_at)
                           │ ├────> dead       (permanent failure: a dead letter row is written with it)
                           │ └────> conflict   (a conflict row is written with it)
    dead ──replay──> received            conflict ──resolve──> received | done
    claimed ──lease expired──> claimed   (another worker takes over a crashed worker's claim)

Write intents (one per idempotency key, recorded before the call is sent):
    recorded ──> sent ──> confirmed
       │          ├─────> failed
       │          └─────> sent        (sent again: left sent by a crash or a fenced leader, then looked up
       │                               and not found, or idempotent)
       ├────────────────> confirmed   (after a crash, the lookup found the write already made)
       └────────────────> failed
    failed ──replay──> recorded
"""

from __future__ import annotations

from enum import StrEnum

from revdaemon.errors import IllegalTransition


class EventStatus(StrEnum):
    RECEIVED = "received"
    CLAIMED = "claimed"
    DONE = "done"
    DEAD = "dead"
    CONFLICT = "conflict"


class IntentStatus(StrEnum):
    RECORDED = "recorded"
    SENT = "sent"
    CONFIRMED = "confirmed"
    FAILED = "failed"


EVENT_TRANSITIONS: dict[EventStatus, frozenset[EventStatus]] = {
    EventStatus.RECEIVED: frozenset({EventStatus.CLAIMED}),
    EventStatus.CLAIMED: frozenset(
        {EventStatus.CLAIMED, EventStatus.DONE, EventStatus.RECEIVED, EventStatus.DEAD, EventStatus.CONFLICT}
    ),
    EventStatus.DONE: frozenset(),
    EventStatus.DEAD: frozenset({EventStatus.RECEIVED}),
    EventStatus.CONFLICT: frozenset({EventStatus.RECEIVED, EventStatus.DONE}),
}

INTENT_TRANSITIONS: dict[IntentStatus, frozenset[IntentStatus]] = {
    IntentStatus.RECORDED: frozenset({IntentStatus.SENT, IntentStatus.CONFIRMED, IntentStatus.FAILED}),
    IntentStatus.SENT: frozenset({IntentStatus.SENT, IntentStatus.CONFIRMED, IntentStatus.FAILED}),
    IntentStatus.CONFIRMED: frozenset(),
    IntentStatus.FAILED: frozenset({IntentStatus.RECORDED}),
}


def check_event_move(current: EventStatus, target: EventStatus) -> None:
    if target not in EVENT_TRANSITIONS[current]:
        raise IllegalTransition(f"inbox event cannot move from {current.value} to {target.value}")


def check_intent_move(current: IntentStatus, target: IntentStatus) -> None:
    if target not in INTENT_TRANSITIONS[current]:
        raise IllegalTransition(f"write intent cannot move from {current.value} to {target.value}")
