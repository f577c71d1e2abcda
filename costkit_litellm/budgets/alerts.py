"""Alert budgets: each share of the cap (50%, 80%, 100%) reported once per window."""

from __future__ import annotations

import asyncio
import json
import logging
import urllib.request
from collections.abc import Sequence
from decimal import Decimal

from costkit_litellm.accounting.metrics import CostKitMetrics
from costkit_litellm.budgets.policy import AppliedBudget, BudgetPolicy
from costkit_litellm.money import format_usd_short
from costkit_litellm.store import LimitUsage, Store

log = logging.getLogger("costkit.budgets")


def crossed(applied: AppliedBudget, usage: LimitUsage) -> list[Decimal]:
    """The alert shares that the committed spend has reached."""
    return [share for share in applied.budget.alert_at if usage.committed >= applied.limit * share]


class Alerter:
    """Reports crossed thresholds: a metric, a log line and the budget's webhook, once per window."""

    def __init__(self, store: Store, policy: BudgetPolicy, metrics: CostKitMetrics | None) -> None:
        self._store = store
        self._policy = policy
        self._metrics = metrics
        self._tasks: set[asyncio.Task[None]] = set()

    async def check(self, applied: Sequence[AppliedBudget]) -> None:
        """Read the alert budgets' spend and report each newly crossed threshold."""
        watched = [a for a in applied if a.budget.action == "alert"]
        if not watched:
            return
        usages = await self._store.usage([a.to_limit() for a in watched])
        for budget, usage in zip(watched, usages, strict=True):
            for share in crossed(budget, usage):
                ttl = (budget.slot.expires_at - self._policy.now()) if budget.slot.expires_at else 86400 * 400
                if await self._store.claim(f"alert:{budget.key}:{share}", max(ttl, 1.0)):
                    self._report(budget, usage, share)

    def _report(self, applied: AppliedBudget, usage: LimitUsage, share: Decimal) -> None:
        percent = f"{share * 100:.0f}%"
        message = (
            f"budget {applied.budget.name!r} for {applied.who()} reached {percent}: spent "
            f"{format_usd_short(usage.committed)} of {format_usd_short(applied.limit)}"
        )
        log.warning("costkit alert: %s", message)
        if self._metrics is not None:
            self._metrics.alerted(applied.budget.name, percent)
        url = applied.budget.alert_webhook
        if url:
            payload = {
                "budget": applied.budget.name,
                "scope": applied.budget.scope,
                "value": applied.value,
                "threshold": float(share),
                "spent_usd": usage.committed / 1e9,
                "limit_usd": applied.limit / 1e9,
                "window": applied.budget.window,
                "message": message,
            }
            task = asyncio.create_task(_post(url, payload))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)


async def _post(url: str, payload: dict[str, object], attempts: int = 3) -> None:
    """POST JSON with retries, in a thread; never raises (a lost alert is logged)."""
    body = json.dumps(payload).encode()

    def send() -> None:
        request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=5) as response:
            response.read()

    for attempt in range(attempts):
        try:
            await asyncio.to_thread(send)
            return
        except Exception as exc:
            if attempt == attempts - 1:
                log.error("costkit alert webhook failed after %d attempts: %s", attempts, exc)
                return
            await asyncio.sleep(0.5 * 2**attempt)
