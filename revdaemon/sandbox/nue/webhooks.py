"""Outgoing webhooks: at-least-once delivery from one background thread, with retries and optional
duplicates, delays and reordering (deterministic for the seed), signed or path-token addressed.

A dedicated thread with a sync httpx client, because events are published both from the server's loop
and from test threads calling the scenario driver; publishing only takes a lock and pushes onto a heap.
"""

from __future__ import annotations

import heapq
import itertools
import random
import threading
import time
from dataclasses import dataclass
from typing import Any

import httpx

from revdaemon.sandbox.nue import wire
from revdaemon.sandbox.nue.settings import NueSimSettings


@dataclass(frozen=True, kw_only=True)
class DeliveryAttempt:
    event_id: str
    event_type: str
    target: str
    url: str
    attempt: int
    status: int | None  # None: connection error
    error: str | None
    at: float
    duplicate: bool
    delayed: bool
    reordered: bool
    final: bool  # the last attempt for this delivery (succeeded or gave up)

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300

    def as_dict(self) -> dict[str, Any]:
        return {"eventId": self.event_id, "type": self.event_type, "target": self.target, "url": self.url,
                "attempt": self.attempt, "status": self.status, "error": self.error, "at": self.at,
                "duplicate": self.duplicate, "delayed": self.delayed, "reordered": self.reordered,
                "final": self.final, "ok": self.ok}


@dataclass(kw_only=True)
class _Job:
    event: dict[str, Any]
    body: bytes
    target: str
    attempt: int = 1
    duplicate: bool = False
    delayed: bool = False
    reordered: bool = False


class WebhookDispatcher:
    def __init__(self, settings: NueSimSettings, client: httpx.Client | None = None) -> None:
        self.settings = settings
        self._rng = random.Random(f"nue-webhooks-{settings.seed}")
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, _Job]] = []
        self._seq = itertools.count()
        self._in_flight = 0
        self._log: list[DeliveryAttempt] = []
        self._published: list[dict[str, Any]] = []
        self._targets = list(settings.webhook_targets)
        self._stopping = False
        self._client = client or httpx.Client(timeout=settings.webhook_timeout_seconds)
        self._thread = threading.Thread(target=self._run, name="nue-webhooks", daemon=True)
        self._thread.start()

    # --- configuration -----------------------------------------------------------------------------------
    @property
    def targets(self) -> list[str]:
        with self._cond:
            return list(self._targets)

    def set_targets(self, targets: list[str]) -> None:
        with self._cond:
            self._targets = list(targets)

    # --- publishing --------------------------------------------------------------------------------------
    def publish(self, event: dict[str, Any]) -> None:
        s = self.settings
        body = wire.dumps(event)
        with self._cond:
            self._published.append(event)
            now = time.monotonic()
            for target in self._targets:
                # One draw of each kind per event and target, in publish order: same seed, same faults.
                duplicate = self._rng.random() < s.webhook_duplicate_rate
                delayed = self._rng.random() < s.webhook_delay_rate
                reordered = self._rng.random() < s.webhook_reorder_rate
                due = now
                if delayed:
                    due += s.webhook_delay_seconds
                if reordered:
                    due += s.webhook_reorder_hold_seconds  # later events overtake it
                self._push(due, _Job(event=event, body=body, target=target, delayed=delayed, reordered=reordered))
                if duplicate:
                    self._push(due, _Job(event=event, body=body, target=target, duplicate=True))
            self._cond.notify_all()

    def _push(self, due: float, job: _Job) -> None:
        heapq.heappush(self._heap, (due, next(self._seq), job))

    # --- waiting -----------------------------------------------------------------------------------------
    def wait_idle(self, timeout: float = 10.0) -> bool:
        """True once nothing is queued, held or in flight (retries included)."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._heap and not self._in_flight, timeout=timeout)

    def flush(self, timeout: float = 10.0) -> bool:
        """Makes delayed, held and backing-off deliveries due now (keeping their relative order), then waits."""
        with self._cond:
            now = time.monotonic()
            pending = sorted(self._heap)
            self._heap = [(now, next(self._seq), job) for _, _, job in pending]
            heapq.heapify(self._heap)
            self._cond.notify_all()
        return self.wait_idle(timeout)

    def clear(self) -> None:
        with self._cond:
            self._heap.clear()
            self._log.clear()
            self._published.clear()
            self._cond.notify_all()

    # --- reading -----------------------------------------------------------------------------------------
    def deliveries(self) -> list[DeliveryAttempt]:
        with self._cond:
            return list(self._log)

    def published(self) -> list[dict[str, Any]]:
        with self._cond:
            return list(self._published)

    # --- the delivery thread -----------------------------------------------------------------------------
    def _next_job(self) -> _Job | None:
        with self._cond:
            while True:
                if self._stopping:
                    return None
                if self._heap:
                    wait = self._heap[0][0] - time.monotonic()
                    if wait <= 0:
                        self._in_flight += 1
                        return heapq.heappop(self._heap)[2]
                    self._cond.wait(timeout=wait)
                else:
                    self._cond.wait()

    def _request(self, job: _Job) -> tuple[str, dict[str, str]]:
        s = self.settings
        headers = {"Content-Type": "application/json", "User-Agent": "nue-sandbox-webhooks"}
        url = job.target
        if s.webhook_auth == "signature":
            headers[wire.SIGNATURE_HEADER] = wire.sign(s.webhook_secret, int(time.time()), job.body)
        elif s.webhook_auth == "path_token":
            url = wire.path_token_url(job.target, s.webhook_path_token)
        return url, headers

    def _run(self) -> None:
        while True:
            job = self._next_job()
            if job is None:
                return
            url, headers = self._request(job)
            status: int | None = None
            error: str | None = None
            try:
                status = self._client.post(url, content=job.body, headers=headers).status_code
            except httpx.HTTPError as exc:
                error = f"{type(exc).__name__}: {exc}"
            ok = status is not None and 200 <= status < 300
            retry = not ok and job.attempt < self.settings.webhook_max_attempts
            with self._cond:
                self._log.append(DeliveryAttempt(
                    event_id=job.event["id"], event_type=job.event["type"], target=job.target, url=url,
                    attempt=job.attempt, status=status, error=error, at=time.time(), duplicate=job.duplicate,
                    delayed=job.delayed, reordered=job.reordered, final=not retry))
                if retry:
                    backoff = self.settings.webhook_retry_backoff_seconds * 2 ** (job.attempt - 1)
                    job.attempt += 1
                    self._push(time.monotonic() + backoff, job)
                self._in_flight -= 1
                self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        self._thread.join(timeout=10)
        self._client.close()
