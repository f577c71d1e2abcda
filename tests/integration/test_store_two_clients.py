"""The differential test of ``test_store_differential.py`` pushed further: two stores
(two proxies) on one prefix taking turns, time in milliseconds, leases of any length, amounts and
caps near 2**53 (where Lua's doubles stop being exact), and limits given twice."""

from __future__ import annotations

import asyncio
import os
import uuid

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from costkit_litellm.store import Counter, Limit, MemoryStore, RedisStore, Store

pytestmark = pytest.mark.redis

START = 1_800_000_000.0
BIG = 2**53
SMALL_CAPS = {"p": 5_000, "d": 6_000, "s": 4_000, "r": 5_000}
# Large but exact: every sum of a sequence stays below 2**53 (above it Redis answers in doubles,
# before and after this session alike: README, "Lua numbers are doubles, exact up to 2^53").
BIG_CAPS = {"p": 2**48 - 3, "d": 2**48 + 10, "s": 2**47 + 7, "r": 2**48 - 1}

call_ids = st.sampled_from(["c0", "c1", "c2", "c3"])
key_sets = st.sampled_from(
    [("p",), ("d",), ("s",), ("r",), ("p", "d", "s"), ("s", "p"), ("r", "d"), ("d", "r", "s"), ("r", "s", "p", "d")]
)
counter_sets = st.sampled_from([(), ("steps",), ("steps", "once")])
# leases end on odd milliseconds, the clock stops on even ones: never exactly at a lease end
# (where float seconds and integer milliseconds may round apart, before and after this session alike)
lease = st.integers(0, 22_499).map(lambda k: (2 * k + 1) / 1000)
side = st.integers(0, 1)


def amounts(big: bool) -> st.SearchStrategy[int]:
    if big:
        return st.one_of(st.integers(0, 2_500), st.integers(2**45 - 5, 2**46 + 5), st.integers(2**47 - 5, 2**47 + 5))
    return st.integers(0, 2_500)


def operations(big: bool) -> st.SearchStrategy[list[tuple]]:
    amount = amounts(big)
    return st.lists(
        st.one_of(
            st.tuples(st.just("reserve"), side, call_ids, amount, key_sets, lease, counter_sets),
            st.tuples(st.just("renew"), side, call_ids, lease),
            st.tuples(st.just("settle"), side, call_ids, amount),
            st.tuples(st.just("release"), side, call_ids),
            st.tuples(
                st.just("commit_and_release"),
                side,
                call_ids,
                st.one_of(st.none(), amount),
                st.one_of(st.just(None), key_sets),
            ),
            st.tuples(st.just("commit"), side, call_ids, amount, key_sets),
            st.tuples(st.just("count"), side, counter_sets),
            st.tuples(st.just("advance"), st.integers(1, 10_000).map(lambda k: 2 * k / 1000)),
        ),
        min_size=4,
        max_size=40,
    )


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> float:
        return self.now


def make_limit(caps: dict[str, int], key: str, now: float) -> Limit:
    if key == "d":
        return Limit(key, caps[key], expires_at=START + 60 * ((now - START) // 60 + 1))
    if key == "s":
        return Limit(key, caps[key], expires_at=round(now + 20, 3))
    if key == "r":
        return Limit(key, caps[key], window_s=10, buckets=5)
    return Limit(key, caps[key])


def counters(names: tuple[str, ...]) -> list[Counter]:
    table = {
        "steps": Counter("steps", ttl_s=15, extend=True, trip_above=6),
        "once": Counter("once", ttl_s=15, trip_above=None),
    }
    return [table[name] for name in names]


async def step(
    store: Store, caps: dict[str, int], now: float, op: tuple, reserved: dict[str, tuple[str, ...]]
) -> object:
    kind = op[0]
    lim = lambda keys: [make_limit(caps, k, now) for k in keys]  # noqa: E731
    if kind == "reserve":
        _, _, call_id, amount, keys, lease_s, names = op
        return await store.reserve(call_id, amount, lim(keys), lease_s, counters(names))
    if kind == "renew":
        return await store.renew(op[2], op[3])
    if kind == "settle":
        return await store.settle(op[2], op[3])
    if kind == "release":
        return await store.release(op[2])
    if kind == "commit_and_release":
        keys = reserved.get(op[2], ("p",)) if op[4] is None else op[4]
        return await store.commit_and_release(op[2], op[3], lim(keys))
    if kind == "commit":
        return await store.commit(op[2], op[3], lim(op[4]))
    if kind == "count":
        return await store.count(counters(op[2]))
    raise AssertionError(op)


async def run(stores: list[RedisStore], clock: Clock, caps: dict[str, int], ops: list[tuple]) -> None:
    reference = MemoryStore(clock=clock)
    reserved: dict[str, tuple[str, ...]] = {}
    for s in stores:
        await s.start()
    try:
        for op in ops:
            if op[0] == "advance":
                clock.now = round(clock.now + op[1], 3)
                continue
            expected = await step(reference, caps, clock.now, op, reserved)
            got = await step(stores[op[1]], caps, clock.now, op, reserved)
            assert got == expected, op
            if op[0] == "reserve":
                reserved[op[2]] = op[4]
            every = [make_limit(caps, k, clock.now) for k in caps]
            assert await stores[1 - op[1]].usage(every) == await reference.usage(every), op
            for name in ("steps", "once"):
                assert await stores[1 - op[1]].get(name) == await reference.get(name), (op, name)
    finally:
        for s in stores:
            await s.close()


@pytest.mark.parametrize("big", [False, True])
def test_two_stores_ms_time_and_big_amounts_answer_as_memory(big, redis_server):
    """Two RedisStores on one prefix taking turns, with millisecond time and (big) amounts near
    2**53, answer exactly as one in-process store."""
    caps = BIG_CAPS if big else SMALL_CAPS

    @settings(
        max_examples=int(os.environ.get("REVIEW_EXAMPLES", "60")),
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow],
    )
    @given(ops=operations(big))
    def check(ops: list[tuple]) -> None:
        clock = Clock()
        prefix = f"v{uuid.uuid4().hex[:12]}"
        stores = [RedisStore(redis_server.url, prefix=prefix, clock=clock) for _ in range(2)]
        asyncio.run(run(stores, clock, caps, ops))

    check()


def test_a_lease_of_whole_milliseconds_is_not_cut_by_one(redis_server):
    """A lease of 8.107 s is 8107 ms on Redis, as in memory (int(8.107 * 1000) is 8106: the lease
    ended 1 ms early and a renew 8.106 s later found it expired)."""

    async def main() -> None:
        clock = Clock()
        store = RedisStore(redis_server.url, prefix=f"v{uuid.uuid4().hex[:12]}", clock=clock)
        reference = MemoryStore(clock=clock)
        await store.start()
        try:
            for s in (store, reference):
                assert (await s.reserve("c1", 1, [Limit("p", 10)], 8.107)).ok
            clock.now = round(clock.now + 8.106, 3)
            assert await reference.renew("c1", 1.0)
            assert await store.renew("c1", 1.0)
        finally:
            await store.close()

    asyncio.run(main())
