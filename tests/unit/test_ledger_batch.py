"""LedgerBatcher: concurrent appends share store calls and keep ledger_append's answers."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence

from costkit_litellm.accounting.batch import LedgerBatcher
from costkit_litellm.store import MemoryStore


class CountingStore(MemoryStore):
    """A MemoryStore that counts batch calls and answers each after a yield, like a network store."""

    def __init__(self) -> None:
        super().__init__()
        self.batches: list[int] = []

    async def ledger_append_many(self, entries: Sequence[tuple[str, Mapping[str, str]]]) -> list[bool]:
        self.batches.append(len(entries))
        await asyncio.sleep(0.01)
        return await super().ledger_append_many(entries)


async def test_concurrent_appends_share_batches_and_answer_like_ledger_append() -> None:
    """100 concurrent appends (10 repeated ids) take far fewer store calls and flag exactly the repeats."""
    store = CountingStore()
    batcher = LedgerBatcher(store)
    ids = [f"e{i}" for i in range(90)] + [f"e{i}" for i in range(10)]
    flags = await asyncio.gather(*(batcher.append(entry_id, {"n": "1"}) for entry_id in ids))
    assert flags == [True] * 90 + [False] * 10
    assert sum(store.batches) == 100 and len(store.batches) <= 3
    assert len(await store.ledger_read()) == 90


async def test_flush_waits_for_appends_in_flight() -> None:
    """flush() returns only after every handed-in entry is in the ledger, even if its caller was cancelled."""
    store = CountingStore()
    batcher = LedgerBatcher(store)
    tasks = [asyncio.create_task(batcher.append(f"e{i}", {})) for i in range(20)]
    await asyncio.sleep(0)
    tasks[0].cancel()
    await batcher.flush()
    assert len(await store.ledger_read()) == 20


async def test_a_store_error_reaches_every_caller_of_the_batch() -> None:
    """When the batch call fails, each waiting append raises that error."""

    class Broken(MemoryStore):
        async def ledger_append_many(self, entries: Sequence[tuple[str, Mapping[str, str]]]) -> list[bool]:
            raise RuntimeError("down")

    batcher = LedgerBatcher(Broken())
    results = await asyncio.gather(*(batcher.append(f"e{i}", {}) for i in range(5)), return_exceptions=True)
    assert all(isinstance(r, RuntimeError) for r in results)
