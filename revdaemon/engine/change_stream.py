"""A change event subscription: Salesforce's Change Data Capture into the inbox, the replay id with the events.

Theory of operation (salesforce-api.md §4.3; the poll's rules in engine/pollers.py, applied to a stream):

- One `ChangeStream` per configured topic, run by the leader only (engine/replicas.py): a standby subscribes to
  nothing, so two boxes never both feed the inbox from one stream (their keys would dedupe it, but the calls
  and the replay id would be spent twice).
- Each delivered batch becomes inbox hints (domain/change_events.py decides which) stored in ONE
  `Store.add_events` call together with the replay id of the batch's last event as the stream's cursor. A crash
  replays from the last committed batch: nothing lost, and what is delivered twice is keyed the same and stored
  once. A keepalive's latest replay id is never committed: events the server still holds back for want of
  credit would fall behind it.
- Flow control: `batch_size` events are asked for; more only once those are stored, and none while the inbox
  holds more than `max_waiting` events not yet worked. A slow store or a backlog makes the server hold events,
  never this process.
- The stream ends (the server closed it, a network drop): resubscribe from the committed replay id after a
  back-off (1 s doubling to 60 s, again from 1 s once a batch arrives). A replay id the server refuses (older
  than the 72 h retention): subscribe from LATEST, then poll the object from the poll's own cursor at once, so
  what changed while the stream was away is read by the poll; the log and `status` say so. Credentials refused
  twice in a row (after one re-login): the stream stops until a restart, and the poll carries on.
- GAP_OVERFLOW (no ids): the object is polled at once, as after a refused replay id.
- While every stream is subscribed, the Salesforce poll runs at `poll_seconds_while_streaming` (the net for what
  change events do not carry, such as a change of a field not tracked); while one is down, at its usual interval.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

import anyio
import structlog

from revdaemon.connectors.pubsub import PubSubClient, Received, ReplayIdRejected, Subscription
from revdaemon.domain.change_events import ChangeEvent, OwnCreates, UnreadableEvent, react, read_change_event
from revdaemon.errors import AuthFailed, SyncError
from revdaemon.flows import sources
from revdaemon.ops.alerts import Alerter, AlertKind
from revdaemon.ops.health import Health, StreamHealth, StreamState
from revdaemon.ops.metrics import Metrics
from revdaemon.store import Store
from revdaemon.store.records import CursorUpdate, NewEvent, utcnow
from revdaemon.store.states import EventStatus

log = structlog.get_logger("revdaemon.change_stream")

CURSOR_PREFIX = "salesforce:cdc:"
FIRST_BACKOFF_SECONDS = 1.0
MAX_BACKOFF_SECONDS = 60.0
FULL_INBOX_WAIT_SECONDS = 1.0  # how often a full inbox is looked at again before asking for more


def cursor_name(topic: str) -> str:
    return CURSOR_PREFIX + topic


class ChangeStream:
    def __init__(self, client: PubSubClient, store: Store, topic: str, *, health: Health,
                 catch_up: Callable[[str], Awaitable[Any]], batch_size: int = 100, max_waiting: int = 10_000,
                 metrics: Metrics | None = None, alerter: Alerter | None = None,
                 on_change: Callable[[], None] | None = None, clock: Callable[[], datetime] = utcnow,
                 own_user: Callable[[], str | None] = lambda: None, own_markers: frozenset[str] = frozenset()
                 ) -> None:
        self.client = client
        self.store = store
        self.topic = topic
        self.name = cursor_name(topic)
        self.health: StreamHealth = health.stream(topic)
        self._catch_up = catch_up  # polls an object now (its name): after a refused replay id, or an overflow
        self.batch_size = batch_size
        self.max_waiting = max_waiting
        self.metrics = metrics
        self.alerter = alerter
        self._on_change = on_change  # a hint was stored: wake the workers
        self._clock = clock
        self._backoff = FIRST_BACKOFF_SECONDS
        self._own_user = own_user  # the Salesforce user revdaemon writes as (None until known: every create wakes)
        self._own_markers = own_markers  # fields only revdaemon sets on the records it creates

    # --- the loop ---------------------------------------------------------------------------------------

    async def run(self) -> None:
        """Subscribe, and again whenever the stream ends, until cancelled (the term ends, the daemon stops)."""
        relogin = False
        try:
            while True:
                self._enter(StreamState.CONNECTING)
                try:
                    await self._subscribe_once(relogin=relogin)
                except ReplayIdRejected as exc:
                    await self._fall_back(exc)
                    continue
                except AuthFailed as exc:
                    if relogin:
                        self._stop(exc)
                        return
                    relogin = True  # once: the session may just have expired
                    self._enter(StreamState.DOWN, f"{type(exc).__name__}: {exc}")
                    continue
                except Exception as exc:  # anything else is "subscribe again after a while", as a poll's failure
                    self._down(exc)
                relogin = False
                await anyio.sleep(self._backoff)
                self._backoff = min(self._backoff * 2, MAX_BACKOFF_SECONDS)
        finally:
            if self.health.state is not StreamState.STOPPED:
                self._enter(StreamState.STANDBY)

    async def _subscribe_once(self, *, relogin: bool) -> None:
        replay_id = await self._replay_id()
        if relogin:
            await self.client.relogin()
        async with self.client.subscribe(self.topic, replay_id=replay_id, num_requested=self.batch_size) as stream:
            if self._enter(StreamState.STREAMING):
                log.info("change_stream_subscribed", topic=self.topic,
                         replay_id=replay_id.hex() if replay_id else "LATEST")
            owed = self.batch_size
            async for delivered in stream:
                if delivered:
                    await self._store(delivered)
                    self._backoff = FIRST_BACKOFF_SECONDS
                    owed = max(0, owed - len(delivered))
                if stream.token is not self.client.current_token():
                    # the REST client logged in again: this stream's session may end any moment; start afresh
                    log.info("change_stream_reconnecting", topic=self.topic, reason="the session was renewed")
                    return
                if owed < self.batch_size // 2 or owed == 0:
                    owed += await self._ask_for_more(stream, self.batch_size - owed)

    async def _ask_for_more(self, stream: Subscription, wanted: int) -> int:
        """Credit for `wanted` more events, once the inbox has room for them."""
        waited = 0
        while not await self._inbox_has_room():  # the workers drain the inbox; nothing signals room: look again
            waited += 1
            await anyio.sleep(FULL_INBOX_WAIT_SECONDS)
        if waited:
            log.info("change_stream_resumed", topic=self.topic, held_seconds=waited * FULL_INBOX_WAIT_SECONDS)
        await stream.request(wanted)
        return wanted

    async def _inbox_has_room(self) -> bool:
        depths = await self.store.queue_depths()
        return depths.get(EventStatus.RECEIVED, 0) + depths.get(EventStatus.CLAIMED, 0) <= self.max_waiting

    # --- one batch ----------------------------------------------------------------------------------------

    async def _store(self, delivered: tuple[Received, ...]) -> None:
        hints: list[NewEvent] = []
        polls: set[str] = set()
        for received in delivered:
            try:
                event = read_change_event(received.record, received.schema, received.replay_id)
            except UnreadableEvent as exc:
                # Not a change event (a platform event on a custom channel?): its replay id still moves on.
                log.warning("change_event_unreadable", topic=self.topic, error=str(exc),
                            replay_id=received.replay_id.hex())
                continue
            user = self._own_user()
            reaction = react(event, OwnCreates(user=user, markers=self._own_markers) if user else None)
            if reaction.poll:
                polls.add(reaction.poll)
            hints += [NewEvent(source=sources.SALESFORCE_CDC, key=h.key, type=h.event_type, payload=h.payload)
                      for h in reaction.hints]
            self._received(event)
        replay_id = delivered[-1].replay_id
        flags = await self.store.add_events(hints, cursor=CursorUpdate(name=self.name, value=replay_id.hex()))
        self.health.replay_id = replay_id.hex()
        new = sum(flags)
        self.health.hints += new
        if self.metrics is not None:
            for hint, stored in zip(hints, flags, strict=True):
                if stored:
                    self.metrics.event_received(hint.source, hint.type)
        if new and self._on_change is not None:
            self._on_change()
        for entity in sorted(polls):
            log.warning("change_stream_overflow", topic=self.topic, entity=entity,
                        reason="a transaction changed too many records for an event each: polling the object")
            await self._catch_up(entity)

    def _received(self, event: ChangeEvent) -> None:
        now = self._clock()
        self.health.events += 1
        self.health.last_event_at = now
        self.health.lag_seconds = max(0.0, (now - event.committed_at).total_seconds())
        if self.metrics is not None:
            self.metrics.change_event_received(self.topic, self.health.lag_seconds)

    # --- where to start, and what went wrong ------------------------------------------------------------

    async def _replay_id(self) -> bytes | None:
        stored = await self.store.get_cursor(self.name)
        if stored is None or not stored.value:
            return None
        try:
            return bytes.fromhex(stored.value)
        except ValueError:
            log.warning("change_stream_cursor_unreadable", topic=self.topic, value=stored.value)
            return None

    async def _fall_back(self, exc: ReplayIdRejected) -> None:
        """The stored replay id cannot be resumed from: start at the tip, and let the poll read the gap."""
        self.health.fell_back_at = self._clock()
        self._enter(StreamState.DOWN, f"{type(exc).__name__}: {exc}")
        log.warning("change_stream_replay_id_refused", topic=self.topic, error=str(exc),
                    action="subscribing from LATEST and polling from the poll's cursor now")
        await self.store.add_events([], cursor=CursorUpdate(name=self.name, value=""))
        # The poll reads up to a moment before its start and its cursor stops there, so what changes between it
        # and the subscription from LATEST is read by the next poll: late, never lost.
        await self._catch_up(_entity_of(self.topic))

    def _down(self, exc: BaseException) -> None:
        described = f"{type(exc).__name__}: {exc}"
        if self._enter(StreamState.DOWN, described):
            log.warning("change_stream_down", topic=self.topic, error=described, retry_in=self._backoff,
                        poll="back at its usual interval until the stream is back",
                        exc_info=not isinstance(exc, SyncError))
            if self.alerter is not None:
                self.alerter.alert(AlertKind.POLLER_FAILING, self.name, described)
        else:
            log.debug("change_stream_down", topic=self.topic, error=described, retry_in=self._backoff)

    def _stop(self, exc: SyncError) -> None:
        self._enter(StreamState.STOPPED, f"{type(exc).__name__}: {exc}")
        log.error("change_stream_stopped", topic=self.topic, error=str(exc),
                  reason="the Pub/Sub API refused the credentials; the poll goes on; fix them and restart")
        if self.alerter is not None:
            self.alerter.alert(AlertKind.POLLER_FAILING, f"{self.name}:stopped", str(exc),
                               fix="check the integration user's permissions for Change Data Capture; restart")

    def _enter(self, state: StreamState, error: str | None = None) -> bool:
        changed = self.health.enter(state, error)
        if changed and self.metrics is not None:
            self.metrics.change_stream_state(self.topic, state.value)
        return changed


def _entity_of(topic: str) -> str:
    """/data/OpportunityChangeEvent -> Opportunity; /data/Foo__ChangeEvent -> Foo__c; a channel of all (or a
    custom channel): Opportunity, the one object a Salesforce poll reads."""
    name = topic.rsplit("/", 1)[-1]
    if name.endswith("__ChangeEvent"):
        return name[: -len("__ChangeEvent")] + "__c"
    if name.endswith("ChangeEvent") and name != "ChangeEvent" and not name.endswith("ChangeEvents"):
        return name[: -len("ChangeEvent")]
    return "Opportunity"
