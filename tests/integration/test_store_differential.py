"""Property test: random sequences of every reservation operation give the same answers on Redis as on
the in-process store (the reference semantics).

Where ``test_store_properties.py`` checks reserve / settle / release against a small model, this one
also runs what the hot path and its edges use: ``reserve`` with counters (some trip), ``renew`` to a
longer or a shorter lease, ``commit_and_release`` with the reservation's limits or others, ``count``,
a fixed window that ends, a window end that moves with every request (the breaker's session cap) and
a rolling window. Time moves in whole seconds, so both stores see the same instants. After every
step the two stores' answers, every limit's usage and every counter must be equal.
"""

from __future__ import annotations

import asyncio
import uuid

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from costkit_litellm.store import Counter, Limit, MemoryStore, RedisStore, Store

pytestmark = pytest.mark.redis

START = 1_800_000_000.0
CAPS = {"p": 5_000, "d": 6_000, "s": 4_000, "r": 5_000}
EXAMPLES = {"redis": 120, "redis-cluster": 40}

call_ids = st.sampled_from(["c0", "c1", "c2"])
key_sets = st.sampled_from([("p",), ("d",), ("s",), ("r",), ("p", "d", "s"), ("s", "p"), ("r", "d"), ("d", "r", "s")])
counter_sets = st.sampled_from([(), ("steps",), ("steps", "once")])
seconds = st.integers(1, 45).map(float)
operations = st.lists(
    st.one_of(
        st.tuples(st.just("reserve"), call_ids, st.integers(0, 2_500), key_sets, seconds, counter_sets),
        st.tuples(st.just("renew"), call_ids, seconds),
        st.tuples(st.just("settle"), call_ids, st.integers(0, 2_500)),
        st.tuples(st.just("release"), call_ids),
        st.tuples(
            st.just("commit_and_release"),
            call_ids,
            st.one_of(st.none(), st.integers(0, 2_500)),
            st.one_of(st.just(None), key_sets),  # None: the limits the call reserved (the usual case)
        ),
        st.tuples(st.just("commit"), call_ids, st.integers(0, 1_500), key_sets),
        st.tuples(st.just("count"), counter_sets),
        st.tuples(st.just("advance"), st.integers(1, 20).map(float)),
    ),
    min_size=4,
    max_size=40,
)
EXAMPLES_BY_HAND = [
    # a lease renewed shorter expires at its new end (counted as spent), then is corrected by a late settle
    [("reserve", "c0", 100, ("p", "s"), 45.0, ()), ("renew", "c0", 1.0), ("advance", 5.0), ("settle", "c0", 40)],
    # commit and release on the limits reserved, also after the lease expired
    [
        ("reserve", "c0", 100, ("p", "d"), 30.0, ()),
        ("reserve", "c1", 200, ("d", "p"), 5.0, ()),
        ("advance", 6.0),
        ("commit_and_release", "c0", 50, None),
        ("commit_and_release", "c1", 70, None),
    ],
    # the breaker's session cap moves its window end between reserve and commit_and_release
    [
        ("reserve", "c0", 100, ("p", "d", "s"), 30.0, ("steps", "once")),
        ("advance", 2.0),
        ("commit_and_release", "c0", 50, ("p", "d", "s")),
    ],
    # leases on a limit whose leases all ended, then a new one; a fixed window that ends under a lease
    [
        ("reserve", "c0", 100, ("r", "d"), 5.0, ()),
        ("advance", 6.0),
        ("reserve", "c1", 100, ("r", "d"), 45.0, ()),
        ("advance", 55.0),
        ("commit_and_release", "c1", 30, ("r", "d")),
        ("release", "c0"),
    ],
]


class Clock:
    """Manual time in whole seconds, shared by both stores."""

    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> float:
        return self.now


def limit(key: str, now: float) -> Limit:
    """p: no window; d: fixed windows of 60 s (the one now is in, as a day budget's: a reservation can
    outlive its window); s: a window end 20 s after now (it moves, as the breaker's session cap); r:
    rolling, 10 s in 5 buckets. (A reserve against a window that has already ended is left out: there
    the stores differ in the usage they answer, before and after the scripts' call cuts alike.)"""
    if key == "d":
        return Limit(key, CAPS[key], expires_at=START + 60 * ((now - START) // 60 + 1))
    if key == "s":
        return Limit(key, CAPS[key], expires_at=now + 20)
    if key == "r":
        return Limit(key, CAPS[key], window_s=10, buckets=5)
    return Limit(key, CAPS[key])


def counters(names: tuple[str, ...]) -> list[Counter]:
    """steps: an inactivity timeout of 15 s that trips above 6; once: 15 s from its first increment."""
    table = {
        "steps": Counter("steps", ttl_s=15, extend=True, trip_above=6),
        "once": Counter("once", ttl_s=15, trip_above=None),
    }
    return [table[name] for name in names]


async def step(store: Store, now: float, op: tuple, reserved: dict[str, tuple[str, ...]]) -> object:
    """Run one operation on one store; its answer. reserved: the keys of each call id's last reserve."""
    kind = op[0]
    if kind == "reserve":
        _, call_id, amount, keys, lease_s, names = op
        return await store.reserve(call_id, amount, [limit(k, now) for k in keys], lease_s, counters(names))
    if kind == "renew":
        return await store.renew(op[1], op[2])
    if kind == "settle":
        return await store.settle(op[1], op[2])
    if kind == "release":
        return await store.release(op[1])
    if kind == "commit_and_release":
        keys = reserved.get(op[1], ("p",)) if op[3] is None else op[3]
        return await store.commit_and_release(op[1], op[2], [limit(k, now) for k in keys])
    if kind == "commit":
        return await store.commit(op[1], op[2], [limit(k, now) for k in op[3]])
    if kind == "count":
        return await store.count(counters(op[1]))
    raise AssertionError(op)


async def run(redis_store: Store, clock: Clock, ops: list[tuple]) -> None:
    reference = MemoryStore(clock=clock)
    reserved: dict[str, tuple[str, ...]] = {}
    await redis_store.start()
    try:
        for op in ops:
            if op[0] == "advance":
                clock.now += op[1]
            else:
                expected = await step(reference, clock.now, op, reserved)
                assert await step(redis_store, clock.now, op, reserved) == expected, op
                if op[0] == "reserve":
                    reserved[op[1]] = op[3]
            every = [limit(k, clock.now) for k in CAPS]
            assert await redis_store.usage(every) == await reference.usage(every), op
            for name in ("steps", "once"):
                assert await redis_store.get(name) == await reference.get(name), (op, name)
    finally:
        await redis_store.close()


class TestRedisMatchesMemory:
    @pytest.mark.parametrize("kind", list(EXAMPLES))
    def test_random_sequences_answer_as_the_memory_store(self, kind, redis_server, redis_cluster_server):
        """Any sequence of reserve (with counters), renew, settle, release, commit_and_release, commit, count
        and clock steps answers on Redis exactly as on the in-process store, with the same usage and counters."""

        @settings(max_examples=EXAMPLES[kind], deadline=None, suppress_health_check=[HealthCheck.too_slow])
        @given(ops=operations)
        @example(ops=EXAMPLES_BY_HAND[0])
        @example(ops=EXAMPLES_BY_HAND[1])
        @example(ops=EXAMPLES_BY_HAND[2])
        @example(ops=EXAMPLES_BY_HAND[3])
        def check(ops: list[tuple]) -> None:
            clock = Clock()
            server = redis_cluster_server if kind == "redis-cluster" else redis_server
            store = RedisStore(
                server.url, prefix=f"d{uuid.uuid4().hex[:12]}", cluster=kind == "redis-cluster", clock=clock
            )
            asyncio.run(run(store, clock, ops))

        check()
