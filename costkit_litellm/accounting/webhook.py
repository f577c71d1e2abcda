"""Forward ledger events to a billing system: batched, retried, dead-lettered, never blocking requests.

``submit`` only puts the event on a bounded in-memory queue; a background task sends batches as
``POST {"events": [...]}`` with exponential backoff. A batch that still fails after
``max_attempts`` (or an event that finds the queue full) is written to the store's dead-letter
map ``ledger_dead_letter`` (field: ``<call id>:<outcome>``, value: the event as JSON), where an
operator can find and replay it. Events are at-least-once: the receiver de-duplicates by
``call_id`` + ``outcome``.

The record holds at most ``dead_letter_max_events`` fields, across every replica (one atomic
script decides): a refused request costs its sender nothing and is still an event, so without a
cap a webhook that stays down would let any client grow Redis per request. Beyond the cap the
events given up on are dropped from the record only: logged (at most once a minute), counted in
``costkit_webhook_events{result="dropped"}``, and still in the ledger stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from typing import Any

import httpx

from costkit_litellm.accounting.config import WebhookConfig
from costkit_litellm.accounting.events import UsageEvent
from costkit_litellm.accounting.metrics import CostKitMetrics
from costkit_litellm.store import Store, StoreError

log = logging.getLogger(__name__)
DEAD_LETTER = "ledger_dead_letter"
_DROP_LOG_EVERY_S = 60.0


def event_json(event: UsageEvent) -> dict[str, Any]:
    """The event as the webhook receives it: id, outcome and the ledger fields."""
    return {"call_id": event.call_id, "outcome": event.outcome, "fields": event.to_fields()}


class WebhookForwarder:
    """A bounded queue and one sender task per process."""

    def __init__(
        self,
        config: WebhookConfig,
        store: Store,
        client: httpx.AsyncClient | None = None,
        *,
        metrics: CostKitMetrics | None = None,
    ) -> None:
        self._config = config
        self._store = store
        self._client = client
        self._metrics = metrics
        self._queue: asyncio.Queue[UsageEvent] | None = None
        self._task: asyncio.Task[None] | None = None
        self._sending: list[UsageEvent] = []
        self._overflow: set[asyncio.Task[None]] = set()
        self._dropped_logged_at = -_DROP_LOG_EVERY_S
        self.sent = 0
        self.dead = 0
        """Events written to the dead-letter record."""
        self.dropped = 0
        """Events given up on that found the dead-letter record full (they stay in the ledger)."""

    def _count(self, result: str, n: int) -> None:
        if self._metrics is not None and n:
            self._metrics.webhook_events.labels(result).inc(n)

    def submit(self, event: UsageEvent) -> None:
        """Queue an event (called on the accounting path: never waits)."""
        if self._queue is None:
            self._queue = asyncio.Queue(self._config.queue_size)
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())
        try:
            self._queue.put_nowait(event)
        except asyncio.QueueFull:
            task = asyncio.get_running_loop().create_task(self._dead_letter([event], "queue full"))
            self._overflow.add(task)  # held until done: the loop keeps only weak references to tasks
            task.add_done_callback(self._overflow.discard)

    async def _run(self) -> None:
        assert self._queue is not None
        client = self._client or httpx.AsyncClient(timeout=self._config.timeout_s)
        try:
            while True:
                batch = [await self._queue.get()]
                while len(batch) < self._config.batch_size and not self._queue.empty():
                    batch.append(self._queue.get_nowait())
                self._sending = batch
                await self._send(client, batch)
                self._sending = []
                for _ in batch:
                    self._queue.task_done()
        finally:
            if self._client is None:
                await client.aclose()

    async def _send(self, client: httpx.AsyncClient, batch: list[UsageEvent]) -> None:
        body = {"events": [event_json(e) for e in batch]}
        error = ""
        for attempt in range(self._config.max_attempts):
            try:
                response = await client.post(self._config.url, json=body)
                if response.status_code < 300:
                    self.sent += len(batch)
                    self._count("sent", len(batch))
                    return
                error = f"HTTP {response.status_code}"
            except httpx.HTTPError as exc:
                error = f"{type(exc).__name__}: {exc}"
            if attempt < self._config.max_attempts - 1:
                await asyncio.sleep(min(30.0, 0.2 * 2**attempt))
        await self._dead_letter(batch, error)

    async def _dead_letter(self, batch: list[UsageEvent], error: str) -> None:
        kept = dropped = 0
        for event in batch:
            try:
                written = await self._store.map_set(
                    DEAD_LETTER,
                    f"{event.call_id}:{event.outcome}",
                    json.dumps({**event_json(event), "error": error}),
                    max_fields=self._config.dead_letter_max_events,
                )
            except StoreError as exc:
                log.error("costkit: dead-letter record lost for %s: %s", event.call_id, exc)
                written = False
            if written:
                kept += 1
            else:
                dropped += 1
        self.dead += kept
        self.dropped += dropped
        self._count("dead_lettered", kept)
        self._count("dropped", dropped)
        if kept:
            log.error("costkit: billing webhook gave up on %d events (%s); kept in %s", kept, error, DEAD_LETTER)
        now = time.monotonic()
        if dropped and now - self._dropped_logged_at >= _DROP_LOG_EVERY_S:
            self._dropped_logged_at = now
            log.error(
                "costkit: billing webhook gave up on events the dead-letter record %s had no room for "
                "(dead_letter_max_events = %s; %d dropped by this process so far); they stay in the ledger",
                DEAD_LETTER,
                self._config.dead_letter_max_events,
                self.dropped,
            )

    async def drain(self, timeout_s: float = 5.0) -> None:
        """Wait until the queue is empty (or the timeout passes)."""
        if self._queue is not None:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._queue.join(), timeout_s)

    async def close(self, timeout_s: float = 5.0) -> None:
        """Send what is queued (up to ``timeout_s``), stop the sender, and put what is still
        queued in the dead-letter record (shutdown loses no event while the record has room;
        beyond ``dead_letter_max_events`` they are dropped from it and stay in the ledger)."""
        await self.drain(timeout_s)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        left, self._sending = self._sending, []  # the batch cancelled mid-send
        while self._queue is not None and not self._queue.empty():
            left.append(self._queue.get_nowait())
            self._queue.task_done()
        if left:
            await self._dead_letter(left, "not sent before shutdown")
        if self._overflow:
            await asyncio.gather(*self._overflow)
