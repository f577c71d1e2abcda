"""Property test: random reserve / settle / release / clock sequences agree with a tiny model.

The model is the spec in a dozen lines. Checked after every step, on every store kind: results
and usage equal the model's, reserved never goes below 0, and committed stays within the cap
as long as every settle was for at most the reserved amount and arrived while its lease lived
(a settle after expiry charges money the cap could no longer hold back, by design).
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

CAPS = {"a": 5_000, "b": 8_000}
LEASE_S = 30.0
EXAMPLES = {"memory": 200, "redis": 50, "redis-cluster": 30}

call_ids = st.sampled_from(["c0", "c1", "c2", "c3", "c4"])
operations = st.lists(
    st.one_of(
        st.tuples(
            st.just("reserve"),
            call_ids,
            st.integers(0, 3_000),
            st.sampled_from([("a",), ("b",), ("a", "b"), ("b", "a")]),
        ),
        st.tuples(st.just("settle"), call_ids, st.integers(0, 100)),
        st.tuples(st.just("release"), call_ids),
        st.tuples(st.just("advance"), st.sampled_from([0.5, 5.0, LEASE_S + 1])),
    ),
    max_size=30,
)


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


@dataclass
class Model:
    """The Store contract for reservations, without any concurrency or storage concerns."""

    clock: Clock
    committed: dict[str, int] = field(default_factory=lambda: dict.fromkeys(CAPS, 0))
    records: dict[str, Record] = field(default_factory=dict)
    done: set[str] = field(default_factory=set)
    late_settles: bool = False

    def reserved(self, key: str) -> int:
        now = self.clock.now
        return sum(r.amount for r in self.records.values() if key in r.keys and r.lease_until > now)

    def reserve(self, call_id: str, amount: int, keys: tuple[str, ...]) -> bool:
        record = self.records.get(call_id)
        if call_id in self.done or (record is not None and record.lease_until > self.clock.now):
            return True
        if any(self.committed[k] + self.reserved(k) + amount > CAPS[k] for k in keys):
            return False
        self.records[call_id] = Record(amount, keys, self.clock.now + LEASE_S)
        return True

    def finish(self, call_id: str, actual: int | None) -> bool:
        record = self.records.pop(call_id, None)
        if record is None or call_id in self.done:
            return False
        self.done.add(call_id)
        if actual is not None:
            self.late_settles |= record.lease_until <= self.clock.now
            for key in record.keys:
                self.committed[key] += actual
        return True


async def run(store: Store, clock: Clock, ops: list[tuple]) -> None:
    model = Model(clock)
    await store.start()
    try:
        for op in ops:
            if op[0] == "reserve":
                _, call_id, amount, keys = op
                limits = [Limit(k, CAPS[k]) for k in keys]
                result = await store.reserve(call_id, amount, limits, LEASE_S)
                assert result.ok == model.reserve(call_id, amount, keys), op
                if not result.ok:
                    assert result.denied is not None and result.denied_cap == CAPS[result.denied.key]
            elif op[0] == "settle":
                record = model.records.get(op[1])
                actual = (record.amount if record else 100) * op[2] // 100
                assert await store.settle(op[1], actual) == model.finish(op[1], actual), op
            elif op[0] == "release":
                assert await store.release(op[1]) == model.finish(op[1], None), op
            else:
                clock.now += op[1]
            for usage in await store.usage(list(CAPS)):
                assert usage.reserved >= 0
                assert (usage.committed, usage.reserved) == (
                    model.committed[usage.key],
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
