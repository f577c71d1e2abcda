"""A clean shutdown writes every usage event handed in to the Redis ledger, batched, exactly once."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client import CollectorRegistry

from costkit_litellm.config import parse_config
from costkit_litellm.context import RequestContext
from costkit_litellm.kit import CostKit
from costkit_litellm.money import Nano
from costkit_litellm.pipeline import Outcome
from costkit_litellm.store import RedisStore
from costkit_litellm.testing.redis_server import RedisServer

pytestmark = pytest.mark.redis

EVENTS = 3000  # several batches of LedgerBatcher's MAX_BATCH


def outcome(i: int) -> Outcome:
    context = RequestContext(call_id=f"call-{i}", model="m", user_id=f"u{i % 7}")
    return Outcome(kind="success", context=context, model="m", deployment_model=None, cost=Nano(1000 + i))


async def ledger_ids(url: str, prefix: str) -> list[str]:
    store = RedisStore(url, prefix=prefix, socket_timeout_s=10)
    await store.start()
    try:
        return [entry.entry_id for entry in await store.ledger_read()]
    finally:
        await store.close()


async def test_close_writes_every_event_handed_in_even_of_cancelled_callers(
    redis_server: RedisServer, key_prefix: str
) -> None:
    """3,000 callbacks waiting on the ledger batcher (a third of them then cancelled, as a drain timeout
    would) are all in the Redis ledger exactly once after ``CostKit.close()``, with their costs."""
    config = parse_config({"redis_url": redis_server.url, "key_prefix": key_prefix})
    kit = CostKit(config, registry=CollectorRegistry())
    await kit.start()
    tasks = [asyncio.create_task(kit.record(outcome(i))) for i in range(EVENTS)]
    for _ in range(3):  # every callback runs up to its ledger append and waits there
        await asyncio.sleep(0)
    assert not any(task.done() for task in tasks)
    for task in tasks[::3]:
        task.cancel()
    await kit.close()
    await asyncio.gather(*tasks, return_exceptions=True)
    ids = await ledger_ids(redis_server.url, key_prefix)
    assert len(ids) == EVENTS
    assert set(ids) == {f"call-{i}:success" for i in range(EVENTS)}


async def test_events_after_a_restart_of_the_kit_are_not_appended_twice(
    redis_server: RedisServer, key_prefix: str
) -> None:
    """The same outcomes recorded again by a new kit (a replayed callback after a restart) leave the
    ledger unchanged: the idempotency markers outlive the process."""
    config = parse_config({"redis_url": redis_server.url, "key_prefix": key_prefix})
    for _ in range(2):
        kit = CostKit(config, registry=CollectorRegistry())
        await kit.start()
        await asyncio.gather(*(kit.record(outcome(i)) for i in range(600)))
        await kit.close()
    assert len(await ledger_ids(redis_server.url, key_prefix)) == 600
