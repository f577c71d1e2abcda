"""The ``Store`` protocol: the shared state every capability needs, and its result types.

Two implementations pass one contract suite (``tests/integration/test_store_contract.py``): ``MemoryStore`` (in-process,
the embedded default) and ``RedisStore`` (production, Lua scripts, any number of replicas).

Vocabulary:

- A *limit* is a key with a cap in nano-dollars (or any integer unit) and an optional time at
  which its window ends (the key then expires). Its state is ``committed`` (settled spend) plus
  ``reserved`` (live leases).
- ``reserve`` holds ``amount`` against several limits at once, all or nothing: it succeeds only if
  for every limit ``committed + reserved + amount <= cap``. The hold is a *lease*: if neither
  ``settle`` nor ``release`` arrives within ``lease_s`` seconds, it stops counting by itself (a
  crashed replica gives its holds back).
- ``settle`` turns a reservation into committed spend of the *actual* amount (which may differ
  from the reserved worst case) on every limit it held; ``release`` drops it. Both are idempotent
  by call id: the second call for the same id changes nothing and returns ``False``. A settle
  after the lease expired still commits (the money was spent), without double-freeing the hold.
- ``commit`` charges an amount with no prior reservation (accounting-only paths), idempotent too.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable


class StoreError(Exception):
    """The store could not be reached or answered in a way we cannot use.

    Callers apply their configured fail-open / fail-closed policy on this error; it never
    means a budget was changed partially.
    """


@dataclass(frozen=True, slots=True)
class Limit:
    """One cap to reserve against."""

    key: str
    """Store key of the limit, without the store's prefix (e.g. ``budget:daily:user=123:20261129``)."""
    cap: int
    """The most that ``committed + reserved`` may reach, in nano-dollars (or counts)."""
    expires_at: float | None = None
    """Unix time at which the window ends and the limit's state may be dropped; None keeps it."""


@dataclass(frozen=True, slots=True)
class LimitUsage:
    """What a limit holds right now."""

    key: str
    committed: int
    reserved: int


@dataclass(frozen=True, slots=True)
class ReserveResult:
    """The answer to ``reserve``: admitted, or the first limit that would be exceeded."""

    ok: bool
    denied: LimitUsage | None = None
    """On refusal: the usage of the limit that refused (before this request)."""
    denied_cap: int | None = None
    """On refusal: that limit's cap."""


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    """One append-only ledger record."""

    entry_id: str
    """Caller's idempotency id (e.g. the LiteLLM call id + outcome)."""
    timestamp_ms: int
    fields: Mapping[str, str] = field(default_factory=dict)


@runtime_checkable
class Store(Protocol):
    """Shared state for budgets, breakers, caches and accounting."""

    async def start(self) -> None:
        """Connect and load scripts; raises ``StoreError`` naming the URL if unreachable."""

    async def close(self) -> None:
        """Release connections; safe to call twice."""

    async def ping(self) -> bool:
        """True when the store answers."""

    # --- counters -----------------------------------------------------------------------
    async def incr(self, key: str, amount: int = 1, ttl_s: float | None = None) -> int:
        """Add ``amount`` to a counter and return the new value; ``ttl_s`` sets its expiry
        when the counter is created (it is not extended by later increments)."""

    async def get(self, key: str) -> int:
        """A counter's value, 0 when absent or expired."""

    # --- reservations -------------------------------------------------------------------
    async def reserve(self, call_id: str, amount: int, limits: Sequence[Limit], lease_s: float) -> ReserveResult:
        """Hold ``amount`` against every limit, all or nothing. Reserving an id that already
        holds a live reservation returns ok without holding twice."""

    async def settle(self, call_id: str, actual: int) -> bool:
        """Commit ``actual`` on the limits the reservation held; False if unknown or done."""

    async def release(self, call_id: str) -> bool:
        """Drop the reservation; False if unknown or already settled/released."""

    async def commit(self, call_id: str, amount: int, limits: Sequence[Limit]) -> bool:
        """Charge ``amount`` with no reservation, idempotent by ``call_id``; caps not checked."""

    async def usage(self, keys: Sequence[str]) -> list[LimitUsage]:
        """Committed and live-reserved amounts of each key (expired leases excluded)."""

    async def reset(self, key: str) -> None:
        """Forget a limit's committed spend and leases (operator's ``budgets reset``)."""

    # --- idempotency --------------------------------------------------------------------
    async def claim(self, token: str, ttl_s: float) -> bool:
        """True the first time ``token`` is claimed within ``ttl_s``; False after."""

    # --- ledger -------------------------------------------------------------------------
    async def ledger_append(self, entry_id: str, fields: Mapping[str, str]) -> bool:
        """Append once per ``entry_id`` (a repeat is ignored and returns False)."""

    async def ledger_read(
        self, since_ms: int | None = None, until_ms: int | None = None, limit: int | None = None
    ) -> list[LedgerEntry]:
        """Entries in append order, optionally bounded by time and count."""
