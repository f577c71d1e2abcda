"""The ``Store`` protocol: the shared state every capability needs, and its result types.

Two implementations pass one contract suite (``tests/integration/test_store_contract.py``): ``MemoryStore`` (in-process,
the embedded default) and ``RedisStore`` (production, Lua scripts, any number of replicas).

Vocabulary:

- A *limit* is a key with a cap in nano-dollars (or any integer unit). Its state is ``committed``
  (settled spend) plus ``reserved`` (live leases). Its spend is counted in one of three ways:

  - *total* (neither ``expires_at`` nor ``window_s``): committed spend counts forever (until
    ``reset``);
  - *fixed window* (``expires_at``): everything counts until that time, then the limit's state is
    dropped at once (calendar day, month: the caller puts the period in the key);
  - *rolling window* (``window_s``, ``buckets``): ``committed`` is the spend committed within the
    last ``window_s`` seconds, counted in ``buckets`` epoch-aligned buckets of ``bucket_ms``
    (``Limit.rolling_ms``). Spend committed at ``t`` counts while ``now < t + window_s`` and stops
    counting at most one bucket later, never earlier, so a rolling cap can never overshoot.
    Reserved amounts (leases) are not bucketed: they count until settled, released or expired.
    The store remembers a limit's rolling window, so a plain key (``usage``, ``list_limits``)
    reads it as rolling too, and a rolling limit with nothing committed or held is dropped.

  Setting both ``expires_at`` and ``window_s`` is a ``ValueError`` at the call.
- ``reserve`` holds ``amount`` against several limits at once, all or nothing: it succeeds only if
  for every limit ``committed + reserved + amount <= cap``. Amounts are never negative
  (``ValueError`` in ``reserve``, ``settle`` and ``commit``). A call id names one request: a
  reserve for an id the store already knows (held, expired or finished within the grace period)
  is refused with ``collision`` and holds nothing. The hold is a *lease*: if neither ``settle``
  nor ``release`` arrives within ``lease_s`` seconds (``renew`` pushes it back), it expires and
  its amount *counts as spent* (moved to ``committed``; rolling limits: in the bucket of the
  expiry), because the provider may have billed a call whose replica crashed: a crash can only
  make a limit stricter, never looser. On success it answers the usage of every limit *after*
  the hold (``ReserveResult.usages``), so the caller knows the tightest remaining room without
  another round trip.
- ``settle`` turns a reservation into committed spend of the *actual* amount (which may differ
  from the reserved worst case) on every limit it held (for a rolling limit: in the bucket of the
  settle time); ``release`` drops it. Both are idempotent by call id: the second call for the same
  id changes nothing and returns ``False``. A settle or release after the lease expired corrects
  the amount counted at expiry to the actual one (0 for a release), in the bucket where it was
  counted while that bucket is in the window (never below zero).
- ``commit`` charges an amount with no reservation (accounting-only paths), idempotent too.
- ``usage`` reads limits (by ``Limit`` or plain key); ``list_limits`` finds every live limit
  under a key prefix (operators' ``costkit budgets show``; not for the hot path).
- A *counter* (``incr``/``get``) is a plain integer with an optional expiry, fixed at creation or
  (``extend=True``) pushed back by every increment: an inactivity timeout. ``reserve`` also takes
  ``counters`` (``Counter``) to increment in the same round trip, *before* anything is reserved:
  each is incremented whatever happens next, and one whose new value is above its ``trip_above``
  *trips*: the reservation is refused (``ReserveResult.tripped``) and nothing is held. ``count``
  increments counters alone (a request with counters and no limit).
- ``commit_and_release`` is the after-call step in one round trip: ``commit`` (idempotent by the
  call id's commit marker) then ``release`` (idempotent by its finished marker), atomic on a
  standalone server.
- A *settings map* (``map_set``/``map_get_all``/``map_delete``) is a small named string map for
  runtime configuration that every replica reads (e.g. budget overrides set by the CLI).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from costkit_litellm.errors import CostKitError


class StoreError(CostKitError):
    """The store could not be reached or answered in a way we cannot use.

    Callers apply their configured fail-open / fail-closed policy on this error; it never
    means a budget was changed partially. ``uncertain`` is True when the command reached the
    server but its reply did not come back (a timeout, a connection lost while waiting): the
    command may still have run, whole, and a caller should undo what it would have done.
    """

    def __init__(self, message: str, *, uncertain: bool = False) -> None:
        super().__init__(message)
        self.uncertain = uncertain


MAX_BUCKETS = 10_000
"""The most buckets a rolling limit may have (each is a field in the limit's state)."""


@dataclass(frozen=True, slots=True)
class Limit:
    """One cap to reserve against (or one limit to read: the cap does not matter then)."""

    key: str
    """Store key of the limit, without the store's prefix (e.g. ``budget:daily:user=123:20261129``)."""
    cap: int
    """The most that ``committed + reserved`` may reach, in nano-dollars (or counts)."""
    expires_at: float | None = None
    """Unix time at which the window ends and the limit's state may be dropped; None keeps it."""
    window_s: float | None = None
    """Length of a rolling window in seconds: only spend committed within it counts. None: not rolling."""
    buckets: int = 60
    """How many time buckets a rolling window is counted in (its granularity)."""

    def rolling_ms(self) -> tuple[int, int]:
        """``(window_ms, bucket_ms)`` of a rolling limit, ``(0, 0)`` for any other.

        ``window_ms`` is ``window_s`` rounded up to a millisecond and ``bucket_ms`` is
        ``window_ms / buckets`` rounded up (at least 1): both round towards counting longer.
        """
        if self.window_s is None:
            return 0, 0
        window_ms = max(1, math.ceil(self.window_s * 1000))
        return window_ms, max(1, -(-window_ms // self.buckets))


def check_limits(limits: Sequence[Limit]) -> None:
    """Raise ``ValueError`` for a limit that is both rolling and fixed-window, or ill-formed."""
    for limit in limits:
        if limit.window_s is None:
            continue
        if limit.expires_at is not None:
            raise ValueError(f"limit {limit.key!r}: set either window_s (rolling) or expires_at (fixed), not both")
        if not (math.isfinite(limit.window_s) and limit.window_s > 0):
            raise ValueError(f"limit {limit.key!r}: window_s must be > 0, got {limit.window_s}")
        if not 1 <= limit.buckets <= MAX_BUCKETS:
            raise ValueError(f"limit {limit.key!r}: buckets must be in 1..{MAX_BUCKETS}, got {limit.buckets}")


def as_limits(limits: Sequence[Limit | str]) -> list[Limit]:
    """``usage``'s argument as limits (a plain key is a limit without a window of its own), checked."""
    result = [Limit(item, 0) if isinstance(item, str) else item for item in limits]
    check_limits(result)
    return result


@dataclass(frozen=True, slots=True)
class LimitUsage:
    """What a limit holds right now."""

    key: str
    committed: int
    reserved: int


@dataclass(frozen=True, slots=True)
class Counter:
    """A counter to increment with a reservation (``reserve(counters=...)``) or alone (``count``)."""

    key: str
    """Store key of the counter, without the store's prefix (the key ``incr`` and ``get`` take)."""
    ttl_s: float | None = None
    """Expiry set when the increment creates the counter (or, with ``extend``, by every increment)."""
    extend: bool = False
    """Push the expiry to ``ttl_s`` after every increment (an inactivity timeout), as ``incr`` does."""
    amount: int = 1
    """What to add."""
    trip_above: int | None = None
    """The counter *trips* when its new value is above this (``reserve`` then holds nothing); None: never."""


def first_tripped(counters: Sequence[Counter], values: Sequence[int]) -> int | None:
    """The index of the first counter whose new value is above its ``trip_above``, None when none is."""
    for index, (counter, value) in enumerate(zip(counters, values, strict=True)):
        if counter.trip_above is not None and value > counter.trip_above:
            return index
    return None


@dataclass(frozen=True, slots=True)
class ReserveResult:
    """The answer to ``reserve``: admitted, or the first limit that would be exceeded."""

    ok: bool
    denied: LimitUsage | None = None
    """On refusal: the usage of the limit that refused (before this request)."""
    denied_cap: int | None = None
    """On refusal: that limit's cap."""
    collision: bool = False
    """On refusal: the call id is already known to the store (held, expired or finished within the
    grace period). Nothing is held; ids must be unique per request."""
    usages: tuple[LimitUsage, ...] = ()
    """On success: the usage of every limit, in the order given, *after* this hold (its amount is
    in ``reserved``). Empty on refusal. On Redis Cluster each entry is read when that limit was
    held (limits live in different slots), so concurrent calls may have moved the earlier ones."""
    counts: tuple[int, ...] = ()
    """The value of every counter given to ``reserve`` after its increment, in order (also on a refusal,
    a collision or a trip: counters are incremented first, whatever happens next)."""
    tripped: int | None = None
    """On refusal: the index of the first counter above its ``trip_above``; no limit was checked and
    nothing is held."""


@dataclass(frozen=True, slots=True)
class FinishResult:
    """The answer to ``commit_and_release``."""

    committed: bool
    """The amount was charged now (False: no amount given, or this call id was already committed)."""
    released: bool
    """A hold was released now (False: unknown call id, or already settled or released)."""


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
    async def incr(self, key: str, amount: int = 1, ttl_s: float | None = None, extend: bool = False) -> int:
        """Add ``amount`` to a counter and return the new value.

        ``ttl_s`` sets its expiry when the counter is created; later increments keep that expiry
        unless ``extend=True``, which pushes it to ``ttl_s`` after *this* increment (the counter
        lives while it is used and ends after ``ttl_s`` of inactivity, e.g. an agent session).
        An expired counter starts again from ``amount``."""

    async def get(self, key: str) -> int:
        """A counter's value, 0 when absent or expired."""

    # --- reservations -------------------------------------------------------------------
    async def reserve(
        self, call_id: str, amount: int, limits: Sequence[Limit], lease_s: float, counters: Sequence[Counter] = ()
    ) -> ReserveResult:
        """Hold ``amount`` against every limit, all or nothing, for ``lease_s`` seconds.

        ``counters`` are incremented first, in the same round trip and whatever happens next
        (``counts``); the first one above its ``trip_above`` refuses with ``tripped`` before any
        limit or the call id is checked, and nothing is held. Admitted: ``ok`` with ``usages``
        (every limit after the hold). Refused: ``denied`` and ``denied_cap`` name the first limit
        in the given order that would pass its cap, and nothing is held anywhere. An id the store
        already knows (live, expired or finished) is refused with ``collision`` and nothing is held.
        On Redis Cluster the counters are incremented one by one before the limits are held."""

    async def count(self, counters: Sequence[Counter]) -> list[int]:
        """Increment every counter (as ``incr`` does) in one round trip where the store can; their
        new values in order. Trips are the caller's to judge (``first_tripped``)."""

    async def renew(self, call_id: str, lease_s: float) -> bool:
        """Push a live lease's expiry to ``lease_s`` from now (a long stream); False when the id is
        unknown, finished or its lease already expired (it then counts as spent)."""

    async def settle(self, call_id: str, actual: int) -> bool:
        """Commit ``actual`` on the limits the reservation held (rolling limits: in the bucket of
        now; an expired lease: corrected where it was counted); False if unknown or done."""

    async def release(self, call_id: str) -> bool:
        """Drop the reservation; False if unknown or already settled/released."""

    async def commit(self, call_id: str, amount: int, limits: Sequence[Limit]) -> bool:
        """Charge ``amount`` with no reservation, idempotent by ``call_id``; caps not checked."""

    async def commit_and_release(self, call_id: str, amount: int | None, limits: Sequence[Limit]) -> FinishResult:
        """``commit(call_id, amount, limits)`` (skipped when ``amount`` is None), then ``release(call_id)``:
        one round trip, atomic on a standalone server (on a cluster: the two calls in turn).

        ``limits`` are the limits the call was reserved against (the caller knows them), so the
        store need not read the reservation first; if the reservation holds other limits, the
        release still drops the hold on the limits it really holds."""

    async def usage(self, limits: Sequence[Limit | str]) -> list[LimitUsage]:
        """Committed and live-reserved amounts of each limit, in order (zeros when unknown).

        Expired leases are excluded; a rolling limit's ``committed`` is its rolling sum. A plain
        key reads the limit as the store knows it (rolling if it was written as rolling); a
        ``Limit``'s ``window_s`` is used when given, its cap is ignored."""

    async def list_limits(self, key_prefix: str) -> list[LimitUsage]:
        """The usage of every live limit whose key starts with ``key_prefix``, sorted by key.

        *Live* means it has state: a fixed window that ended, a limit that was ``reset`` and a
        rolling limit with nothing committed in its window nor held are not listed. Scans the
        whole store (every primary of a cluster): for operators, not for the hot path."""

    async def reset(self, key: str) -> None:
        """Forget a limit's committed spend and leases (operator's ``budgets reset``)."""

    # --- settings maps ------------------------------------------------------------------
    async def map_set(self, name: str, field: str, value: str, max_fields: int | None = None) -> bool:
        """Set ``field`` of the map ``name`` to ``value`` (creating the map); True when written.
        With ``max_fields``, a new field is refused (False, nothing written) once the map holds
        that many; an existing field is always overwritten. Atomic across replicas."""

    async def map_delete(self, name: str, field: str) -> bool:
        """Remove ``field`` from the map ``name``; False when it was not there."""

    async def map_get_all(self, name: str) -> dict[str, str]:
        """Every field of the map ``name`` (empty when it does not exist)."""

    # --- idempotency --------------------------------------------------------------------
    async def claim(self, token: str, ttl_s: float) -> bool:
        """True the first time ``token`` is claimed within ``ttl_s``; False after."""

    # --- ledger -------------------------------------------------------------------------
    async def ledger_append(self, entry_id: str, fields: Mapping[str, str]) -> bool:
        """Append once per ``entry_id`` (a repeat is ignored and returns False)."""

    async def ledger_append_many(self, entries: Sequence[tuple[str, Mapping[str, str]]]) -> list[bool]:
        """``ledger_append`` for each ``(entry_id, fields)`` in order, in one round trip where the
        store can; answers one flag per entry (False: a repeat, also of an earlier entry in ``entries``).
        Trimming by count and age applies once the batch is appended (the result is the same as after
        the single appends: at most ``max_entries`` remain, none older than the age limit)."""

    async def ledger_read(
        self, since_ms: int | None = None, until_ms: int | None = None, limit: int | None = None
    ) -> list[LedgerEntry]:
        """Entries in append order, optionally bounded by time and count."""
