"""The outage allowance: how much one replica may spend per limit while the store does not answer.

Every answer from the store (a reserve's ``usages``) records, per limit key, the headroom it showed
(``cap - committed - reserved``). While the store is unreachable, a ``fail_open`` replica may hold
at most ``share x headroom`` per key in process: worst cases of calls in flight plus the actual
cost of calls settled during the outage (queued for replay, not yet in the store). A limit this
replica never saw gets no allowance. A later store answer for a key, with nothing of this replica's
outage spend left unreplayed, resets that key's settled spend (the store counts it again).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from costkit_litellm.store import Limit, LimitUsage


@dataclass(slots=True)
class _Hold:
    amount: int
    keys: tuple[str, ...]


@dataclass(slots=True)
class OutageAllowance:
    """Per-key headroom last seen from the store, and what this replica spent against it since."""

    share: float
    headroom: dict[str, int] = field(default_factory=dict)
    spent: dict[str, int] = field(default_factory=dict)
    holds: dict[str, _Hold] = field(default_factory=dict)
    epoch: int = 0
    """Bumped whenever outage spend is added: a store answer read before it must not reset it."""

    def observe(self, limits: Sequence[Limit], usages: Iterable[LimitUsage], *, reset_spent: bool) -> None:
        """Record the headroom the store just showed; ``reset_spent`` when the store holds all outage spend."""
        caps = {limit.key: limit.cap for limit in limits}
        for usage in usages:
            cap = caps.get(usage.key)
            if cap is None:
                continue
            self.headroom[usage.key] = max(0, cap - usage.committed - usage.reserved)
            if reset_spent:
                self.spent.pop(usage.key, None)

    def allowance(self, key: str) -> int | None:
        """What this replica may hold against ``key`` during an outage; None: never seen."""
        headroom = self.headroom.get(key)
        return None if headroom is None else int(headroom * self.share)

    def used(self, key: str) -> int:
        """Outage spend against ``key``: worst cases in flight plus settled costs not yet replayed."""
        held = sum(h.amount for h in self.holds.values() if key in h.keys)
        return held + self.spent.get(key, 0)

    def exhausted(self, amount: int, limits: Sequence[Limit]) -> list[str]:
        """Keys whose allowance cannot take ``amount`` more (never-seen keys included)."""
        out: list[str] = []
        for limit in limits:
            allowance = self.allowance(limit.key)
            if allowance is None or self.used(limit.key) + amount > allowance:
                out.append(limit.key)
        return out

    def hold(self, call_id: str, amount: int, limits: Sequence[Limit]) -> None:
        """Hold ``amount`` in process against every limit (caller checked ``exhausted`` first)."""
        self.holds[call_id] = _Hold(amount, tuple(limit.key for limit in limits))

    def spend(self, amount: int, limits: Sequence[Limit]) -> None:
        """Count ``amount`` settled during the outage against every limit (not yet in the store)."""
        if amount <= 0:
            return
        self.epoch += 1
        for limit in limits:
            self.spent[limit.key] = self.spent.get(limit.key, 0) + amount

    def settle(self, call_id: str, spent: int, *, recorded: bool) -> None:
        """End a hold; the actual cost stays counted until the store has it (``recorded`` False)."""
        hold = self.holds.pop(call_id, None)
        if hold is None or recorded or spent <= 0:
            return
        self.epoch += 1
        for key in hold.keys:
            self.spent[key] = self.spent.get(key, 0) + spent
