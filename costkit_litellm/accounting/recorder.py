"""The accounting stage: each outcome once into the ledger, then into the metrics."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

from costkit_litellm.accounting.batch import LedgerBatcher
from costkit_litellm.accounting.events import UsageEvent
from costkit_litellm.accounting.metrics import CostKitMetrics
from costkit_litellm.money import Nano
from costkit_litellm.pipeline import Admission, Outcome
from costkit_litellm.pricing import Pricing
from costkit_litellm.store import MemoryStore, Store, StoreError

log = logging.getLogger(__name__)


class AccountingStage:
    """Writes each outcome's usage event to the ledger once (by call id) and counts it in the metrics.

    The ledger append is the idempotency point: a duplicated callback for the same call id and
    outcome is dropped there and never reaches the metrics. With the ledger off (or the store
    down), the metrics still count it.
    """

    name = "accounting"

    def __init__(
        self,
        store: Store,
        metrics: CostKitMetrics | None,
        ledger: bool = True,
        pricing: Callable[[], Pricing] | None = None,
    ) -> None:
        self._store = store
        self._metrics = metrics
        self._ledger = ledger
        # An in-process ledger answers at once: batching would only defer the metrics behind it.
        self._batcher = None if isinstance(store, MemoryStore) else LedgerBatcher(store)
        self._append = store.ledger_append if self._batcher is None else self._batcher.append
        self._pricing = pricing
        self.listeners: list[Callable[[UsageEvent], None]] = []
        """Told of every new event (e.g. the billing webhook forwarder); must return at once."""

    async def on_request(self, admission: Admission) -> None:
        """Nothing to do before the call."""

    def enrich(self, outcome: Outcome) -> Outcome:
        """Add what other stages left in the state: the tier, routing savings, the cache status."""
        changes: dict[str, Any] = {}
        routing = outcome.state.get("routing")
        if isinstance(routing, Mapping) and outcome.kind == "success" and outcome.tier is None:
            changes["tier"] = routing.get("tier")
            premium = routing.get("premium_model")
            if premium and premium != outcome.model and outcome.cost is not None and self._pricing is not None:
                price = self._pricing().price(str(premium))
                if price is not None:
                    would = price.cost(outcome.prompt_tokens, outcome.completion_tokens)
                    changes.update(saved=Nano(max(0, would - outcome.cost)), saved_source="routing")
        cache = outcome.state.get("cache")
        if isinstance(cache, Mapping) and outcome.cache_status is None and isinstance(cache.get("status"), str):
            changes["cache_status"] = cache["status"]
        return replace(outcome, **changes) if changes else outcome

    async def flush(self) -> None:
        """Wait until every ledger append handed in so far is written (``CostKit.close`` awaits it)."""
        if self._batcher is not None:
            await self._batcher.flush()

    async def close(self) -> None:
        """Flush the ledger appends in flight."""
        await self.flush()

    async def on_outcome(self, outcome: Outcome) -> None:
        """Append to the ledger; count in metrics if this is the first time."""
        if outcome.settle_only:  # its attempts were accounted when they failed
            return
        event = UsageEvent.from_outcome(self.enrich(outcome))
        first = True
        if event.call_id and self._ledger:
            try:
                first = await self._append(f"{event.call_id}:{event.outcome}", event.to_fields())
            except StoreError as exc:
                log.warning("costkit: ledger unavailable, counting %s in metrics only: %s", event.call_id, exc)
        if not first:
            return
        if self._metrics is not None:
            self._metrics.record(event)
        for listener in self.listeners:
            listener(event)
