"""Property test: random reserve / settle / release / clock sequences agree with a tiny model.

The model is the spec in a few dozen lines. Limits ``a`` and ``b`` count spend forever, ``r`` is
a rolling window (10 s in 5 buckets of 2 s: bucket j = now_ms // 2000 counts while
now_ms < (j + 1) * 2000 + 10000). Checked after every step, on every store kind: results, the
usages a reserve answers and usage equal the model's, reserved never goes below 0, and committed
stays within the cap as long as every settle was for at most the reserved amount, even when it
arrives after its lease expired (an expired hold counts as spent until a late settle corrects it).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from costkit_litellm.store import Limit, MemoryStore, RedisStore, Store

pytestmark = pytest.mark.redis

CAPS = {"a": 5_000, "b": 8_000, "r": 6_000}
ROLLING = {"r": (10_000, 2_000)}
"""Rolling limits: key -> (window_ms, bucket_ms), as ``Limit(window_s=10, buckets=5)`` gives."""
LEASE_S = 30.0
EXAMPLES = {"memory": 200, "redis": 100, "redis-cluster": 60}

call_ids = st.sampled_from(["c0", "c1", "c2", "c3", "c4"])
key_sets = st.sampled_from([("a",), ("b",), ("r",), ("a", "b"), ("b", "a"), ("a", "r"), ("r", "b", "a")])
operations = st.lists(
    st.one_of(
        st.tuples(st.just("reserve"), call_ids, st.integers(0, 3_000), key_sets),
        st.tuples(st.just("settle"), call_ids, st.integers(0, 100)),
        st.tuples(st.just("release"), call_ids),
        st.tuples(st.just("commit"), st.integers(1, 1_500), key_sets),
        st.tuples(
            st.just("advance"),
            st.one_of(st.just(LEASE_S + 1), st.integers(1, 12_000).map(lambda ms: ms / 1000)),
        ),
    ),
    max_size=30,
)


def limit(key: str) -> Limit:
    """The store limit for a model key (rolling for the keys in ``ROLLING``)."""
    if key in ROLLING:
        window_ms, bucket_ms = ROLLING[key]
        return Limit(key, CAPS[key], window_s=window_ms / 1000, buckets=window_ms // bucket_ms)
    return Limit(key, CAPS[key])


class Clock:
    """Manual time for the store under test and the model."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


@dataclass
class Record:
    amount: int
    keys: tuple[str, ...]
    lease_until: float
    lease_until_ms: int


@dataclass
class Model:
    """The Store contract for reservations, without any concurrency or storage concerns."""

    clock: Clock
    spends: dict[str, list[tuple[int, int]]] = field(default_factory=lambda: {k: [] for k in CAPS})
    """key -> (time in ms, amount) of every commit."""
    records: dict[str, Record] = field(default_factory=dict)
    done: set[str] = field(default_factory=set)
    late_settles: bool = False
    """A commit happened (it checks no cap)."""

    def now_ms(self) -> int:
        return int(self.clock.now * 1000)

    def expired(self, key: str) -> list[tuple[int, int]]:
        """(expiry in ms, amount) of unfinished holds whose lease ended: they count as spent."""
        now = self.clock.now
        return [(r.lease_until_ms, r.amount) for r in self.records.values() if key in r.keys and r.lease_until <= now]

    def committed(self, key: str) -> int:
        spends = self.spends[key] + self.expired(key)
        if key not in ROLLING:
            return sum(amount for _, amount in spends)
        window_ms, bucket_ms = ROLLING[key]
        now = self.now_ms()
        return sum(amount for t, amount in spends if (t // bucket_ms + 1) * bucket_ms + window_ms > now)

    def reserved(self, key: str) -> int:
        now = self.clock.now
        return sum(r.amount for r in self.records.values() if key in r.keys and r.lease_until > now)

    def reserve(self, call_id: str, amount: int, keys: tuple[str, ...]) -> bool:
        if call_id in self.done or call_id in self.records:
            return False  # a collision: ids are unique
        if any(self.committed(k) + self.reserved(k) + amount > CAPS[k] for k in keys):
            return False
        until_ms = self.now_ms() + int(LEASE_S * 1000)
        self.records[call_id] = Record(amount, keys, self.clock.now + LEASE_S, until_ms)
        return True

    def commit(self, amount: int, keys: tuple[str, ...]) -> None:
        self.late_settles = True
        for key in keys:
            self.spends[key].append((self.now_ms(), amount))

    def finish(self, call_id: str, actual: int | None) -> bool:
        record = self.records.pop(call_id, None)
        if record is None or call_id in self.done:
            return False
        self.done.add(call_id)
        late = record.lease_until <= self.clock.now
        for key in record.keys:
            if late:  # corrected where the expired hold was counted
                self.spends[key].append((record.lease_until_ms, actual or 0))
            elif actual is not None:
                self.spends[key].append((self.now_ms(), actual))
        return True


async def run(store: Store, clock: Clock, ops: list[tuple]) -> None:
    model = Model(clock)
    await store.start()
    try:
        for step, op in enumerate(ops):
            if op[0] == "reserve":
                _, call_id, amount, keys = op
                limits = [limit(k) for k in keys]
                result = await store.reserve(call_id, amount, limits, LEASE_S)
                assert result.ok == model.reserve(call_id, amount, keys), op
                if not result.ok and result.collision:
                    assert result.denied is None and result.usages == ()
                elif not result.ok:
                    assert result.denied is not None and result.denied_cap == CAPS[result.denied.key]
                    assert result.usages == ()
                else:
                    expected = [(k, model.committed(k), model.reserved(k)) for k in keys]
                    assert [(u.key, u.committed, u.reserved) for u in result.usages] == expected, op
            elif op[0] == "settle":
                record = model.records.get(op[1])
                actual = (record.amount if record else 100) * op[2] // 100
                assert await store.settle(op[1], actual) == model.finish(op[1], actual), op
            elif op[0] == "release":
                assert await store.release(op[1]) == model.finish(op[1], None), op
            elif op[0] == "commit":
                assert await store.commit(f"k{step}", op[1], [limit(k) for k in op[2]]), op
                model.commit(op[1], op[2])
            else:
                clock.now += op[1]
            for usage in await store.usage([limit(k) for k in CAPS]):
                assert usage.reserved >= 0
                assert (usage.committed, usage.reserved) == (
                    model.committed(usage.key),
                    model.reserved(usage.key),
                ), (op, usage)
                if not model.late_settles:
                    assert usage.committed <= CAPS[usage.key]
    finally:
        await store.close()


class TestStoreMatchesModel:
    @pytest.mark.parametrize("kind", list(EXAMPLES))
    def test_random_operation_sequences_match_the_model(self, kind, redis_server, redis_cluster_server):
        """Any reserve/settle/release/clock sequence gives the model's results and usage."""

        @settings(
            max_examples=EXAMPLES[kind],
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
        )
        @given(ops=operations)
        def check(ops: list[tuple]) -> None:
            clock = Clock()
            store: Store
            if kind == "memory":
                store = MemoryStore(clock=clock)
            else:
                server = redis_cluster_server if kind == "redis-cluster" else redis_server
                prefix = f"h{uuid.uuid4().hex[:12]}"
                store = RedisStore(server.url, prefix=prefix, cluster=kind == "redis-cluster", clock=clock)
            asyncio.run(run(store, clock, ops))

        check()
