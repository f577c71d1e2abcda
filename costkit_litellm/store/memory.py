"""``MemoryStore``: the in-process ``Store``, the embedded default when no Redis is configured.

Every method is a coroutine that never awaits, so on one event loop each call runs to completion
without interleaving: that is the whole concurrency story (no locks needed). Time comes from an
injectable ``clock``; expired leases, keys, claims and markers are dropped lazily when touched,
plus an amortised sweep so abandoned entries cannot grow without bound. No I/O.

The combined operations (``reserve`` with counters, ``count``, ``commit_and_release``) are built
from the public single operations (``incr``, ``commit``, ``release``): none of them suspends, so
the combination is as atomic as one Redis script, and a subclass that overrides a single operation
(a test's outage switch) sees it used by the combined one too.

The semantics mirror ``RedisStore`` exactly; ``tests/integration/test_store_contract.py`` runs
one suite over both.
"""

from __future__ import annotations

import heapq
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace

from costkit_litellm.store.base import (
    Counter,
    FinishResult,
    LedgerEntry,
    Limit,
    LimitUsage,
    ReserveResult,
    as_limits,
    check_limits,
    first_tripped,
)

DEFAULT_RESERVATION_GRACE_S = 86_400.0
"""How long a reservation record and a done-marker outlive the lease (late settles still count)."""
DEFAULT_LEDGER_DEDUPE_S = 86_400.0
"""How long a ledger ``entry_id`` is remembered for idempotent appends."""
_SWEEP_EVERY = 1024


@dataclass(slots=True)
class _LimitState:
    committed: int = 0
    """Total (or fixed-window) spend; for a rolling limit the sum of ``buckets``."""
    reserved: int = 0
    expires_at: float | None = None
    window_ms: int = 0
    """Rolling window length in ms, 0 when not rolling."""
    bucket_ms: int = 0
    buckets: dict[int, int] = field(default_factory=dict)
    """Rolling limit: bucket index (``now_ms // bucket_ms``) -> spend committed in it."""
    leases: dict[str, tuple[int, float]] = field(default_factory=dict)
    """call_id -> (amount, lease expiry)."""
    heap: list[tuple[float, str]] = field(default_factory=list)
    """(lease expiry, call_id), possibly stale; lets the purge stop at the first live lease."""
    expired: dict[str, tuple[int, int]] = field(default_factory=dict)
    """call_id -> (amount, bucket index or -1) of leases that expired and were counted as spent."""


@dataclass(frozen=True, slots=True)
class _Reservation:
    amount: int
    limits: tuple[Limit, ...]
    lease_until: float
    record_until: float


class MemoryStore:
    """In-process implementation of the ``Store`` protocol (one process, one event loop)."""

    def __init__(
        self,
        clock: Callable[[], float] = time.time,
        ledger_max_entries: int | None = 100_000,
        ledger_max_age_s: float | None = None,
        *,
        reservation_grace_s: float = DEFAULT_RESERVATION_GRACE_S,
        ledger_dedupe_s: float = DEFAULT_LEDGER_DEDUPE_S,
    ) -> None:
        self._clock = clock
        self._ledger_max_entries = ledger_max_entries
        self._ledger_max_age_ms = None if ledger_max_age_s is None else int(ledger_max_age_s * 1000)
        self._grace_s = reservation_grace_s
        self._dedupe_s = ledger_dedupe_s
        self._counters: dict[str, tuple[int, float | None]] = {}
        self._limits: dict[str, _LimitState] = {}
        self._reservations: dict[str, _Reservation] = {}
        self._done: dict[str, float] = {}
        self._committed_ids: dict[str, float] = {}
        self._claims: dict[str, float] = {}
        self._ledger: deque[LedgerEntry] = deque()
        self._ledger_ids: dict[str, float] = {}
        self._maps: dict[str, dict[str, str]] = {}
        self._ops = 0

    async def start(self) -> None:
        """Nothing to connect."""

    async def close(self) -> None:
        """Nothing to release; state stays readable."""

    async def ping(self) -> bool:
        """Always answers."""
        return True

    # --- counters -----------------------------------------------------------------------
    async def incr(self, key: str, amount: int = 1, ttl_s: float | None = None, extend: bool = False) -> int:
        """Add to a counter; ``ttl_s`` applies when this call creates it, or always with ``extend``."""
        now = self._tick()
        current = self._counter(key, now)
        if current is None:
            value, expires_at = amount, (None if ttl_s is None else now + ttl_s)
        else:
            value, expires_at = current[0] + amount, current[1]
            if extend and ttl_s is not None:
                expires_at = now + ttl_s
        self._counters[key] = (value, expires_at)
        return value

    async def get(self, key: str) -> int:
        """A counter's value, 0 when absent or expired."""
        current = self._counter(key, self._clock())
        return 0 if current is None else current[0]

    # --- reservations -------------------------------------------------------------------
    async def reserve(
        self, call_id: str, amount: int, limits: Sequence[Limit], lease_s: float, counters: Sequence[Counter] = ()
    ) -> ReserveResult:
        """Increment the counters, then hold ``amount`` on every limit or on none (none when a counter
        trips); an id already known is refused (``collision``)."""
        _check_amount(amount)
        check_limits(limits)
        counts = tuple(await self.count(counters))
        tripped = first_tripped(counters, counts)
        if tripped is not None:
            return ReserveResult(ok=False, counts=counts, tripped=tripped)
        now = self._tick()
        if self._is_done(call_id, now) or self._reservation(call_id, now) is not None:
            return ReserveResult(ok=False, collision=True, counts=counts)
        states = [self._limit(limit.key, now, limit) for limit in limits]
        for limit, state in zip(limits, states, strict=True):
            committed, reserved = (0, 0) if state is None else (state.committed, state.reserved)
            if committed + reserved + amount > limit.cap:
                usage = LimitUsage(limit.key, committed, reserved)
                return ReserveResult(ok=False, denied=usage, denied_cap=limit.cap, counts=counts)
        lease_until = now + lease_s
        for limit in limits:
            state = self._limit_for_write(limit, now)
            state.leases[call_id] = (amount, lease_until)
            heapq.heappush(state.heap, (lease_until, call_id))
            state.reserved += amount
        self._reservations[call_id] = _Reservation(
            amount=amount,
            limits=tuple(Limit(limit.key, 0, limit.expires_at, limit.window_s, limit.buckets) for limit in limits),
            lease_until=lease_until,
            record_until=lease_until + self._grace_s,
        )
        return ReserveResult(ok=True, usages=self._usages(limits, now), counts=counts)

    async def count(self, counters: Sequence[Counter]) -> list[int]:
        """``incr`` every counter, in order; their new values."""
        return [await self.incr(c.key, c.amount, ttl_s=c.ttl_s, extend=c.extend) for c in counters]

    async def settle(self, call_id: str, actual: int) -> bool:
        """Commit ``actual`` on the reservation's limits, once."""
        _check_amount(actual)
        return self._finish(call_id, actual)

    async def release(self, call_id: str) -> bool:
        """Drop the reservation, once."""
        return self._finish(call_id, None)

    async def renew(self, call_id: str, lease_s: float) -> bool:
        """Push a live reservation's lease to ``lease_s`` from now; False if unknown, done or expired."""
        now = self._tick()
        record = None if self._is_done(call_id, now) else self._reservation(call_id, now)
        if record is None or record.lease_until <= now:
            return False
        lease_until = now + lease_s
        for limit in record.limits:
            state = self._limit(limit.key, now, limit)
            lease = None if state is None else state.leases.get(call_id)
            if state is not None and lease is not None:
                state.leases[call_id] = (lease[0], lease_until)
                heapq.heappush(state.heap, (lease_until, call_id))
        self._reservations[call_id] = replace(
            record, lease_until=lease_until, record_until=max(record.record_until, lease_until + self._grace_s)
        )
        return True

    async def commit(self, call_id: str, amount: int, limits: Sequence[Limit]) -> bool:
        """Charge without a reservation, once per ``call_id`` (within the grace period)."""
        _check_amount(amount)
        check_limits(limits)
        now = self._tick()
        until = self._committed_ids.get(call_id)
        if until is not None and until > now:
            return False
        self._committed_ids[call_id] = now + self._grace_s
        for limit in limits:
            self._add_committed(limit, amount, now)
        return True

    async def commit_and_release(self, call_id: str, amount: int | None, limits: Sequence[Limit]) -> FinishResult:
        """``commit`` (unless ``amount`` is None) then ``release``, with no suspension in between."""
        committed = False if amount is None else await self.commit(call_id, amount, limits)
        return FinishResult(committed=committed, released=await self.release(call_id))

    async def usage(self, limits: Sequence[Limit | str]) -> list[LimitUsage]:
        """Committed and live-reserved amount of each limit (a plain key: as stored)."""
        return list(self._usages(as_limits(limits), self._clock()))

    async def list_limits(self, key_prefix: str) -> list[LimitUsage]:
        """Usage of every live limit whose key starts with ``key_prefix``, sorted by key."""
        now = self._clock()
        result = []
        for key in sorted(k for k in self._limits if k.startswith(key_prefix)):
            state = self._limit(key, now)
            if state is not None:
                result.append(LimitUsage(key, state.committed, state.reserved))
        return result

    async def reset(self, key: str) -> None:
        """Forget a limit's committed spend and leases."""
        self._limits.pop(key, None)

    # --- settings maps ------------------------------------------------------------------
    async def map_set(self, name: str, field: str, value: str, max_fields: int | None = None) -> bool:
        """Set one field of a map, unless it is new and the map already holds ``max_fields``."""
        fields = self._maps.get(name, {})
        if max_fields is not None and field not in fields and len(fields) >= max_fields:
            return False
        self._maps.setdefault(name, fields)[field] = value
        return True

    async def map_delete(self, name: str, field: str) -> bool:
        """Remove one field; False when it was not there."""
        fields = self._maps.get(name)
        if fields is None or field not in fields:
            return False
        del fields[field]
        if not fields:
            del self._maps[name]
        return True

    async def map_get_all(self, name: str) -> dict[str, str]:
        """A copy of the whole map (empty when absent)."""
        return dict(self._maps.get(name, {}))

    # --- idempotency --------------------------------------------------------------------
    async def claim(self, token: str, ttl_s: float) -> bool:
        """True the first time within ``ttl_s``."""
        now = self._tick()
        until = self._claims.get(token)
        if until is not None and until > now:
            return False
        self._claims[token] = now + ttl_s
        return True

    # --- ledger -------------------------------------------------------------------------
    async def ledger_append(self, entry_id: str, fields: Mapping[str, str]) -> bool:
        """Append once per ``entry_id``; trims by count and age like the Redis stream."""
        now = self._tick()
        until = self._ledger_ids.get(entry_id)
        if until is not None and until > now:
            return False
        self._ledger_ids[entry_id] = now + self._dedupe_s
        now_ms = int(now * 1000)
        if self._ledger:  # stream ids never go backwards, even if the clock does
            now_ms = max(now_ms, self._ledger[-1].timestamp_ms)
        self._ledger.append(LedgerEntry(entry_id, now_ms, dict(fields)))
        if self._ledger_max_entries is not None:
            while len(self._ledger) > self._ledger_max_entries:
                self._ledger.popleft()
        if self._ledger_max_age_ms is not None:
            oldest_kept = int(now * 1000) - self._ledger_max_age_ms
            while self._ledger and self._ledger[0].timestamp_ms < oldest_kept:
                self._ledger.popleft()
        return True

    async def ledger_append_many(self, entries: Sequence[tuple[str, Mapping[str, str]]]) -> list[bool]:
        """``ledger_append`` for each entry, in order."""
        return [await self.ledger_append(entry_id, fields) for entry_id, fields in entries]

    async def ledger_read(
        self, since_ms: int | None = None, until_ms: int | None = None, limit: int | None = None
    ) -> list[LedgerEntry]:
        """Entries with ``since_ms <= timestamp_ms <= until_ms``, oldest first, at most ``limit``."""
        result: list[LedgerEntry] = []
        for entry in self._ledger:
            if limit is not None and len(result) >= limit:
                break
            if since_ms is not None and entry.timestamp_ms < since_ms:
                continue
            if until_ms is not None and entry.timestamp_ms > until_ms:
                break
            result.append(entry)
        return result

    # --- internals ----------------------------------------------------------------------
    def _tick(self) -> float:
        """The time now; every ``_SWEEP_EVERY`` writes, drop everything that has expired."""
        now = self._clock()
        self._ops += 1
        if self._ops % _SWEEP_EVERY == 0:
            self._sweep(now)
        return now

    def _sweep(self, now: float) -> None:
        for table in (self._done, self._committed_ids, self._claims, self._ledger_ids):
            for key in [k for k, until in table.items() if until <= now]:
                del table[key]
        for key in [k for k, (_, exp) in self._counters.items() if exp is not None and exp <= now]:
            del self._counters[key]
        for key in [k for k, r in self._reservations.items() if r.record_until <= now]:
            del self._reservations[key]
        for key in list(self._limits):
            self._limit(key, now)

    def _counter(self, key: str, now: float) -> tuple[int, float | None] | None:
        current = self._counters.get(key)
        if current is not None and current[1] is not None and current[1] <= now:
            del self._counters[key]
            return None
        return current

    def _is_done(self, call_id: str, now: float) -> bool:
        until = self._done.get(call_id)
        return until is not None and until > now

    def _reservation(self, call_id: str, now: float) -> _Reservation | None:
        record = self._reservations.get(call_id)
        if record is not None and record.record_until <= now:
            del self._reservations[call_id]
            return None
        return record

    def _usages(self, limits: Sequence[Limit], now: float) -> tuple[LimitUsage, ...]:
        result = []
        for limit in limits:
            state = self._limit(limit.key, now, limit)
            committed, reserved = (0, 0) if state is None else (state.committed, state.reserved)
            result.append(LimitUsage(limit.key, committed, reserved))
        return tuple(result)

    def _limit(self, key: str, now: float, limit: Limit | None = None) -> _LimitState | None:
        """The live state of a limit: window ended -> dropped; expired leases purged; rolling:
        buckets that left the window dropped, and the whole limit once nothing counts.

        A rolling ``limit`` given by the caller decides the window; else the stored one does."""
        state = self._limits.get(key)
        if state is None:
            return None
        if state.expires_at is not None and state.expires_at <= now:
            del self._limits[key]
            return None
        window_ms, bucket_ms = (0, 0) if limit is None else limit.rolling_ms()
        if window_ms == 0:
            window_ms, bucket_ms = state.window_ms, state.bucket_ms
        keep = (_ms(now) - window_ms) // bucket_ms if window_ms > 0 else 0
        # bucket j counts while now < (j+1)*bucket + window
        while state.heap and state.heap[0][0] <= now:
            until, call_id = heapq.heappop(state.heap)
            lease = state.leases.get(call_id)
            if lease is not None and lease[1] == until:
                # The provider may have billed: an expired hold counts as spent, in the bucket of
                # its expiry, until a late settle or release corrects it (``_correct``).
                del state.leases[call_id]
                state.reserved -= lease[0]
                index = _ms(until) // bucket_ms if window_ms > 0 else -1
                state.expired[call_id] = (lease[0], index)
                if window_ms == 0:
                    state.committed += lease[0]
                elif index >= keep:
                    state.buckets[index] = state.buckets.get(index, 0) + lease[0]
                    state.committed += lease[0]
        if window_ms > 0:
            for index in [j for j in state.buckets if j < keep]:
                state.committed -= state.buckets.pop(index)
            if state.committed == 0 and state.reserved == 0 and not state.leases:
                del self._limits[key]
                return None
        return state

    def _limit_for_write(self, limit: Limit, now: float) -> _LimitState:
        state = self._limit(limit.key, now, limit)
        if state is None:
            state = self._limits[limit.key] = _LimitState()
        if limit.expires_at is not None:
            state.expires_at = limit.expires_at
        if limit.window_s is not None:
            state.window_ms, state.bucket_ms = limit.rolling_ms()
        return state

    def _add_committed(self, limit: Limit, amount: int, now: float) -> None:
        if limit.expires_at is not None and limit.expires_at <= now:
            return  # the window is over; its state is gone
        state = self._limit_for_write(limit, now)
        state.committed += amount
        if state.window_ms > 0:
            index = _ms(now) // state.bucket_ms
            state.buckets[index] = state.buckets.get(index, 0) + amount

    def _finish(self, call_id: str, actual: int | None) -> bool:
        """Settle (``actual`` given) or release a reservation, at most once."""
        now = self._tick()
        if self._is_done(call_id, now):
            return False
        record = self._reservation(call_id, now)
        if record is None:
            return False
        del self._reservations[call_id]
        self._done[call_id] = now + self._grace_s
        for limit in record.limits:
            state = self._limit(limit.key, now, limit)
            lease = None if state is None else state.leases.pop(call_id, None)
            expired = None if state is None else state.expired.pop(call_id, None)
            if state is not None and lease is not None:
                state.reserved -= lease[0]
            if state is not None and expired is not None:
                self._correct(state, (actual or 0) - expired[0], expired[1], now)
            elif actual is not None and lease is not None:
                self._add_committed(limit, actual, now)
            elif actual is not None and record.lease_until > now:
                self._add_committed(limit, actual, now)  # the limit was reset under a live lease
        return True

    @staticmethod
    def _correct(state: _LimitState, delta: int, index: int, now: float) -> None:
        """Correct an expired hold (counted as spent) to the real amount, where it was counted.

        A rolling limit corrects the bucket of the expiry while that bucket is still in the window
        (after that the amount counts nowhere, and neither should the correction)."""
        if state.window_ms == 0:
            state.committed = max(0, state.committed + delta)
            return
        if index < (_ms(now) - state.window_ms) // state.bucket_ms:
            return
        before = state.buckets.get(index, 0)
        after = max(0, before + delta)
        state.buckets[index] = after
        state.committed += after - before


def _ms(now: float) -> int:
    """Unix time in whole ms, as ``RedisStore`` sends its clock to the scripts (bucket maths)."""
    return int(now * 1000)


def _check_amount(amount: int) -> None:
    if amount < 0:
        raise ValueError(f"amount must be >= 0, got {amount}")
