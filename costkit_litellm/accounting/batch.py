"""Ledger appends batched across concurrent callbacks: one store round trip for many events."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

from costkit_litellm.store import Store

MAX_BATCH = 512
"""The most entries in one ``ledger_append_many`` call."""


class LedgerBatcher:
    """Collects the appends of concurrent callers and writes them with ``Store.ledger_append_many``.

    ``append`` answers as ``Store.ledger_append`` would (True the first time per entry id) once
    its batch is written, so callers keep their semantics; while one batch is in flight the next
    one gathers, so under load many events share a round trip and at low load nothing waits for
    a timer. A store error reaches every caller of that batch.
    """

    def __init__(self, store: Store, max_batch: int = MAX_BATCH) -> None:
        self._store = store
        self._max_batch = max_batch
        self._pending: list[tuple[str, Mapping[str, str], asyncio.Future[bool]]] = []
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def append(self, entry_id: str, fields: Mapping[str, str]) -> bool:
        """Append once per ``entry_id`` in the next batch; True if it was new."""
        loop = asyncio.get_running_loop()
        if self._loop is not loop:  # a new event loop (tests): the old one's work died with it
            self._loop, self._pending, self._task = loop, [], None
        future: asyncio.Future[bool] = loop.create_future()
        self._pending.append((entry_id, fields, future))
        if self._task is None or self._task.done():
            self._task = loop.create_task(self._run())
        # No shield needed: cancelling a caller cancels only its own future, and ``_run`` writes
        # the entry anyway (it holds the batch), so a cancelled caller still gets it written.
        return await future

    async def _run(self) -> None:
        while self._pending:
            batch, self._pending = self._pending[: self._max_batch], self._pending[self._max_batch :]
            try:
                flags = await self._store.ledger_append_many([(entry_id, fields) for entry_id, fields, _ in batch])
            except Exception as exc:  # handed to every waiting caller
                for _, _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for (_, _, future), flag in zip(batch, flags, strict=True):
                if not future.done():
                    future.set_result(flag)

    async def flush(self) -> None:
        """Wait until every entry handed in so far is written (or failed)."""
        while self._task is not None and not self._task.done() and self._loop is asyncio.get_running_loop():
            await asyncio.shield(self._task)
