"""Billing webhook: every ledger event forwarded in batches, retried, dead-lettered, never blocking."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry

from costkit_litellm.accounting.webhook import DEAD_LETTER
from costkit_litellm.config import parse_config
from costkit_litellm.context import RequestContext
from costkit_litellm.kit import CostKit
from costkit_litellm.money import Nano
from costkit_litellm.pipeline import Outcome
from costkit_litellm.store import MemoryStore
from costkit_litellm.testing.ports import free_port


class Receiver:
    """A billing endpoint that records batches and can fail on purpose."""

    def __init__(self) -> None:
        self.batches: list[list[dict[str, Any]]] = []
        self.fail_next = 0
        self.always_fail = False
        self.hang = False

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.json()
        if self.hang:
            await asyncio.sleep(6)  # longer than close() drains (5 s)
        if self.always_fail or self.fail_next > 0:
            self.fail_next -= 1
            return web.Response(status=503)
        self.batches.append(body["events"])
        return web.json_response({"ok": True})


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[Receiver, str]]:
    target = Receiver()
    app = web.Application()
    app.router.add_post("/billing", target.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield target, f"http://127.0.0.1:{port}/billing"
    await runner.cleanup()


def make_kit(url: str, **webhook: Any) -> CostKit:
    config = parse_config({"ledger": {"webhook": {"url": url, "batch_size": 10, **webhook}}})
    return CostKit(config, store=MemoryStore(), registry=CollectorRegistry())


def outcome(i: int) -> Outcome:
    ctx = RequestContext(call_id=f"call-{i}", model="m", attributes={"feature": "email_writer"})
    return Outcome(
        kind="success", context=ctx, model="m", deployment_model=None, cost=Nano(1000 + i), timestamp=float(i)
    )


class TestWebhook:
    async def test_every_event_arrives_once_in_batches(self, receiver: tuple[Receiver, str]) -> None:
        """25 events arrive as batches of at most 10, each once, with the ledger fields; a duplicate is not sent."""
        target, url = receiver
        kit = make_kit(url)
        for i in range(25):
            await kit.record(outcome(i))
        await kit.record(outcome(3))  # a duplicated callback
        await kit.close()
        events = [e for batch in target.batches for e in batch]
        assert sorted(e["call_id"] for e in events) == sorted(f"call-{i}" for i in range(25))
        assert max(len(b) for b in target.batches) <= 10
        assert events[0]["fields"]["costkit.attr.feature"] == "email_writer"

    async def test_transient_failures_are_retried(self, receiver: tuple[Receiver, str]) -> None:
        """A receiver that fails twice still gets the batch."""
        target, url = receiver
        target.fail_next = 2
        kit = make_kit(url, max_attempts=5)
        await kit.record(outcome(1))
        await kit.close()
        assert [e["call_id"] for b in target.batches for e in b] == ["call-1"]

    async def test_gives_up_into_the_dead_letter_record(self, receiver: tuple[Receiver, str]) -> None:
        """After max_attempts the events are kept in the dead-letter map with the error, not lost."""
        target, url = receiver
        target.always_fail = True
        kit = make_kit(url, max_attempts=2)
        await kit.record(outcome(7))
        await kit.close()
        dead = await kit.store.map_get_all(DEAD_LETTER)
        assert list(dead) == ["call-7:success"]
        assert json.loads(dead["call-7:success"])["error"] == "HTTP 503"

    async def test_recording_never_waits_for_the_receiver(self) -> None:
        """With an unreachable receiver, recording returns at once (the queue absorbs it)."""
        kit = make_kit(f"http://127.0.0.1:{free_port()}/nothing", max_attempts=1)
        await asyncio.wait_for(kit.record(outcome(1)), timeout=1.0)
        await kit.close()

    async def test_shutdown_dead_letters_what_it_could_not_send(self, receiver: tuple[Receiver, str]) -> None:
        """Closing while the receiver hangs keeps every unsent event (in flight or queued) in the dead-letter record."""
        target, url = receiver
        target.hang = True
        kit = make_kit(url, timeout_s=0.2, max_attempts=20)
        for i in range(15):
            await kit.record(outcome(i))
        await kit.close()
        dead = await kit.store.map_get_all(DEAD_LETTER)
        assert sorted(dead) == sorted(f"call-{i}:success" for i in range(15))
        assert {json.loads(v)["error"] for v in dead.values()} == {"not sent before shutdown"}

    async def test_the_dead_letter_record_keeps_at_most_its_cap(self, receiver: tuple[Receiver, str]) -> None:
        """With dead_letter_max_events 5, 12 events given up on keep 5 in the record; the other 7 are counted
        as dropped (attribute and metric) and every one of the 12 is still in the ledger."""
        target, url = receiver
        target.always_fail = True
        registry = CollectorRegistry()
        config = parse_config({"ledger": {"webhook": {"url": url, "max_attempts": 1, "dead_letter_max_events": 5}}})
        kit = CostKit(config, store=MemoryStore(), registry=registry)
        for i in range(12):
            await kit.record(outcome(i))
        await kit.close()
        assert len(await kit.store.map_get_all(DEAD_LETTER)) == 5
        assert kit.webhook is not None
        assert (kit.webhook.dead, kit.webhook.dropped) == (5, 7)
        assert registry.get_sample_value("costkit_webhook_events_total", {"result": "dead_lettered"}) == 5
        assert registry.get_sample_value("costkit_webhook_events_total", {"result": "dropped"}) == 7
        ledger = await kit.store.ledger_read()
        assert len(ledger) == 12 and all(any(f"call-{i}" in e.entry_id for e in ledger) for i in range(12))

    async def test_replicas_sharing_redis_keep_the_cap_together(
        self, receiver: tuple[Receiver, str], make_redis_store: Any
    ) -> None:
        """Two replicas on one Redis giving up on 20 events each at once keep exactly dead_letter_max_events
        (7) fields in the shared record: the cap is decided by one script, not by each process."""
        target, url = receiver
        target.always_fail = True
        config = parse_config({"ledger": {"webhook": {"url": url, "max_attempts": 1, "dead_letter_max_events": 7}}})
        kits = [
            CostKit(config, store=await make_redis_store(), registry=CollectorRegistry()),
            CostKit(config, store=await make_redis_store(), registry=CollectorRegistry()),
        ]
        await asyncio.gather(*(kit.record(outcome(100 * n + i)) for n, kit in enumerate(kits) for i in range(20)))
        await asyncio.gather(*(kit.close() for kit in kits))
        reader = await make_redis_store()
        assert len(await reader.map_get_all(DEAD_LETTER)) == 7
        assert sum(kit.webhook.dead for kit in kits if kit.webhook) == 7
        assert sum(kit.webhook.dropped for kit in kits if kit.webhook) == 33
