"""The cache backends through one contract: in process (numpy) and Redis with vector search (flat and hnsw).

Redis runs for real (valkey with the search module, started for the session); each test writes under
its own key prefix. TTLs are real (1 s), so expiry is Redis's own EXPIRE, not a simulation.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis.asyncio as aioredis
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redisvl.index import AsyncSearchIndex

from costkit_litellm.cache.cli import add_cache_parser, run_cache
from costkit_litellm.cache.memory import MemoryCache
from costkit_litellm.cache.redis_backend import RedisCache
from costkit_litellm.cache.scope import CacheBackend, CacheEntry, CacheError, tenant_tag
from costkit_litellm.embeddings import Vectors, normalise
from costkit_litellm.testing.ports import free_port
from costkit_litellm.testing.redis_server import RedisServer

DIMS = 16
KINDS = ("memory", "redis-flat", "redis-hnsw")
Factory = Callable[..., Awaitable[CacheBackend]]

pytestmark = pytest.mark.redis


def unit(seed: int) -> Vectors:
    """A random unit vector."""
    vector: Vectors = normalise(np.random.default_rng(seed).normal(size=DIMS))[0]
    return vector


def near(base: Vectors, similarity: float, seed: int = 99) -> Vectors:
    """A unit vector at exactly ``similarity`` cosine from ``base``."""
    other = np.random.default_rng(seed).normal(size=DIMS).astype(np.float32)
    other -= (other @ base) * base
    other /= np.linalg.norm(other)
    result: Vectors = (similarity * base + np.sqrt(1 - similarity**2) * other).astype(np.float32)
    return result


def entry(
    entry_id: str, vector: Vectors | None, *, scope: str = "s1", tenant: str = "t1", cost: int = 1000
) -> CacheEntry:
    response: dict[str, Any] = {
        "id": f"chatcmpl-{entry_id}",
        "object": "chat.completion",
        "model": "gpt-4o-mini",
        "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": entry_id}}],
    }
    return CacheEntry(entry_id, scope, tenant, f"question {entry_id}", response, cost, "mini", time.time(), vector)


@pytest.fixture(params=KINDS)
async def make_backend(request: pytest.FixtureRequest, key_prefix: str) -> AsyncIterator[Factory]:
    """Factory of started backends of one kind (``ttl_s``, ``max_entries``); Redis ones share this test's prefix."""
    kind: str = request.param
    made: list[CacheBackend] = []

    async def factory(*, ttl_s: int = 60, max_entries: int = 1000, prefix: str = key_prefix) -> CacheBackend:
        backend: CacheBackend
        if kind == "memory":
            backend = MemoryCache(ttl_s, max_entries)
        else:
            server: RedisServer = request.getfixturevalue("redis_server")
            algorithm = kind.split("-")[1]
            backend = RedisCache(server.url, prefix=prefix, ttl_s=ttl_s, max_entries=max_entries, algorithm=algorithm)
        await backend.start()
        made.append(backend)
        return backend

    yield factory
    for backend in made:
        await backend.close()


@pytest.fixture
async def raw_redis(redis_server: RedisServer) -> AsyncIterator[Any]:
    """A plain client of the session's server, to read keys the way an operator would."""
    client = aioredis.Redis.from_url(redis_server.url)
    yield client
    await client.aclose()


@pytest.fixture
async def redis_cache(redis_server: RedisServer, key_prefix: str) -> AsyncIterator[Callable[..., RedisCache]]:
    """Factory of ``RedisCache`` s on the session's server under this test's prefix (``ttl_s`` 60 unless
    given); all are closed at teardown."""
    caches: list[RedisCache] = []

    def factory(**kwargs: Any) -> RedisCache:
        caches.append(RedisCache(redis_server.url, prefix=key_prefix, **{"ttl_s": 60, **kwargs}))
        return caches[-1]

    yield factory
    for cache in caches:
        await cache.close()


async def markers(client: Any, prefix: str) -> dict[str, tuple[int, int]]:
    """Every scope marker under ``prefix`` (found by SCAN): scope -> (value, TTL in seconds)."""
    root = f"{prefix}:cache:v1:s:"
    found = {}
    async for key in client.scan_iter(match=f"{root}*", count=500):
        value, ttl = await client.get(key), await client.ttl(key)
        found[key.decode()[len(root) :]] = (int(value), int(ttl))
    return found


class TestContract:
    async def test_exact_lookup_returns_what_was_stored(self, make_backend: Factory) -> None:
        """An entry comes back by its id with its response, cost, text, scope, tenant and vector."""
        cache = await make_backend()
        vector = unit(1)
        await cache.put(entry("a", vector, cost=12_750))
        found = await cache.get("a")
        assert found is not None
        assert found.response["choices"][0]["message"]["content"] == "a"
        assert (found.cost_nano, found.text, found.scope, found.tenant, found.model) == (
            12_750,
            "question a",
            "s1",
            "t1",
            "mini",
        )
        assert found.vector is not None and np.allclose(found.vector, vector)
        assert await cache.get("missing") is None

    async def test_search_ranks_by_similarity_within_the_threshold_and_k(self, make_backend: Factory) -> None:
        """Candidates come most similar first, only at or above the threshold, at most k."""
        cache = await make_backend()
        query = unit(2)
        for name, similarity in [("far", 0.5), ("close", 0.95), ("closer", 0.99), ("mid", 0.9)]:
            await cache.put(entry(name, near(query, similarity, seed=len(name))))
        found = await cache.search("s1", query, k=2, min_similarity=0.85)
        assert [c.entry.entry_id for c in found] == ["closer", "close"]
        assert found[0].similarity == pytest.approx(0.99, abs=1e-3)
        assert found[0].entry.vector is not None and float(found[0].entry.vector @ query) == pytest.approx(
            0.99, abs=1e-3
        )
        everything = await cache.search("s1", query, k=10, min_similarity=0.85)
        assert [c.entry.entry_id for c in everything] == ["closer", "close", "mid"]

    async def test_scopes_are_isolated(self, make_backend: Factory) -> None:
        """A search in one scope never returns another scope's entry, however similar."""
        cache = await make_backend()
        vector = unit(3)
        await cache.put(entry("mine", vector, scope="s1"))
        await cache.put(entry("theirs", vector, scope="s2"))
        assert [c.entry.entry_id for c in await cache.search("s1", vector, 5, 0.0)] == ["mine"]
        assert [c.entry.entry_id for c in await cache.search("s2", vector, 5, 0.0)] == ["theirs"]
        assert await cache.search("s3", vector, 5, 0.0) == []

    async def test_entries_expire_after_the_ttl_and_hits_do_not_refresh_it(self, make_backend: Factory) -> None:
        """With ttl_s 2, an entry read at 0.6 s is still gone by 2.2 s, from both lookups and the count."""
        cache = await make_backend(ttl_s=2)
        vector = unit(4)
        await cache.put(entry("short", vector))
        await asyncio.sleep(0.6)
        assert await cache.get("short") is not None
        assert len(await cache.search("s1", vector, 5, 0.0)) == 1
        await asyncio.sleep(1.6)  # a refresh at 0.6 s would keep it until 2.6 s
        assert await cache.get("short") is None
        assert await cache.search("s1", vector, 5, 0.0) == []
        assert (await cache.stats()).entries == 0

    async def test_the_oldest_entries_are_evicted_at_the_cap(self, make_backend: Factory) -> None:
        """With max_entries 3, storing 5 keeps the newest 3, in both lookups."""
        cache = await make_backend(max_entries=3)
        vector = unit(5)
        for i in range(5):
            await cache.put(entry(f"e{i}", near(vector, 0.9 + i / 100, seed=i)))
        assert [await cache.get(f"e{i}") is not None for i in range(5)] == [False, False, True, True, True]
        found = await cache.search("s1", vector, 10, 0.0)
        assert sorted(c.entry.entry_id for c in found) == ["e2", "e3", "e4"]
        assert (await cache.stats()).entries == 3

    async def test_storing_the_same_id_replaces_it(self, make_backend: Factory) -> None:
        """A second store under one id replaces the entry (one entry, the new answer and vector)."""
        cache = await make_backend()
        await cache.put(entry("same", unit(6), cost=1))
        await cache.put(entry("same", unit(7), cost=2))
        found = await cache.get("same")
        assert found is not None and found.cost_nano == 2
        assert [c.entry.entry_id for c in await cache.search("s1", unit(7), 5, 0.99)] == ["same"]
        assert await cache.search("s1", unit(6), 5, 0.99) == []
        assert (await cache.stats()).entries == 1

    async def test_an_entry_without_vector_is_found_only_exactly(self, make_backend: Factory) -> None:
        """An exact-only entry (no vector: a long question) answers get() and never a search."""
        cache = await make_backend()
        await cache.put(entry("long", None))
        assert await cache.get("long") is not None
        await cache.put(entry("short", unit(8)))
        assert [c.entry.entry_id for c in await cache.search("s1", unit(8), 5, 0.0)] == ["short"]

    async def test_clear_removes_one_tenant_or_everything(self, make_backend: Factory) -> None:
        """clear(tenant) removes that tenant's entries only; clear() removes the rest."""
        cache = await make_backend()
        await cache.put(entry("a1", unit(9), tenant="A"))
        await cache.put(entry("a2", unit(10), tenant="A"))
        await cache.put(entry("b1", unit(11), tenant="B"))
        assert await cache.clear("A") == 2
        assert await cache.get("a1") is None and await cache.get("b1") is not None
        assert (await cache.stats()).entries == 1
        assert await cache.clear() == 1
        assert (await cache.stats()).entries == 0

    async def test_results_and_savings_are_counted(self, make_backend: Factory) -> None:
        """count() feeds stats(): hits, misses, skips, dollars saved and the hit rate."""
        cache = await make_backend()
        for status, saved in [("hit", 500), ("hit", 700), ("miss", 0), ("skip", 0)]:
            await cache.count(status, saved)
        stats = await cache.stats()
        assert (stats.hits, stats.misses, stats.skips, stats.saved_nano) == (2, 1, 1, 1200)
        assert stats.hit_rate == pytest.approx(2 / 3)


class TestScopeMarker:
    async def test_a_scope_is_searchable_only_while_it_holds_an_entry_with_a_vector(
        self, make_backend: Factory
    ) -> None:
        """lookup() answers the exact entry and whether the scope has anything to search: not before a store,
        not for an exact-only entry, yes after one with a vector, and no again once it expired."""
        backend = await make_backend(ttl_s=1)
        assert await backend.lookup("a", "s1") == (None, False)
        await backend.put(entry("exact-only", None))
        assert (await backend.lookup("exact-only", "s1"))[1] is False
        await backend.put(entry("a", unit(1)))
        found, searchable = await backend.lookup("a", "s1")
        assert found is not None and found.entry_id == "a" and searchable
        assert (await backend.lookup("a", "s2"))[1] is False
        await asyncio.sleep(1.3)
        assert await backend.lookup("a", "s1") == (None, False)

    async def test_another_replicas_store_makes_the_scope_searchable_at_once(
        self, redis_server: RedisServer, key_prefix: str
    ) -> None:
        """Two Redis backends on one prefix (two replicas): a store by one is seen by the other's next lookup."""
        one = RedisCache(redis_server.url, prefix=key_prefix, ttl_s=60, max_entries=100)
        two = RedisCache(redis_server.url, prefix=key_prefix, ttl_s=60, max_entries=100)
        try:
            assert (await two.lookup("a", "s1"))[1] is False
            await one.put(entry("a", unit(1)))
            assert (await two.lookup("b", "s1"))[1] is True
            assert [c.entry.entry_id for c in await two.search("s1", unit(1), 3, 0.9)] == ["a"]
            await one.clear()
            assert (await two.lookup("b", "s1"))[1] is False
        finally:
            await one.close()
            await two.close()

    async def test_a_scope_whose_entries_were_all_evicted_is_unmarked(self, make_backend: Factory) -> None:
        """With max_entries 10, 200 stores in 200 scopes leave only the newest 10 scopes searchable."""
        backend = await make_backend(max_entries=10)
        for i in range(200):
            await backend.put(entry(f"e{i}", unit(i), scope=f"s{i}"))
        marked = [i for i in range(200) if (await backend.lookup("none", f"s{i}"))[1]]
        assert marked == list(range(190, 200))

    async def test_a_scope_stays_marked_until_its_last_entry_is_evicted(self, make_backend: Factory) -> None:
        """Evicting one of a scope's two entries keeps it searchable (the other is found); evicting both unmarks it."""
        backend = await make_backend(max_entries=2)
        await backend.put(entry("a1", unit(1), scope="a"))
        await backend.put(entry("a2", unit(2), scope="a"))
        await backend.put(entry("b1", unit(3), scope="b"))  # evicts a1
        assert await backend.get("a1") is None
        assert (await backend.lookup("none", "a"))[1] is True
        assert [c.entry.entry_id for c in await backend.search("a", unit(2), 3, 0.9)] == ["a2"]
        await backend.put(entry("b2", unit(4), scope="b"))  # evicts a2
        assert (await backend.lookup("none", "a"))[1] is False
        assert (await backend.lookup("none", "b"))[1] is True

    async def test_a_replaced_entry_counts_once(self, make_backend: Factory) -> None:
        """An id stored twice counts once (evicted, its scope is unmarked); moved or made exact-only, it leaves it."""
        backend = await make_backend(max_entries=1)
        await backend.put(entry("same", unit(1), scope="a"))
        await backend.put(entry("same", unit(2), scope="a"))
        await backend.put(entry("other", unit(3), scope="b"))  # evicts "same"
        assert (await backend.lookup("none", "a"))[1] is False
        await backend.put(entry("other", unit(3), scope="c"))
        assert [(await backend.lookup("none", s))[1] for s in "bc"] == [False, True]
        await backend.put(entry("other", None, scope="c"))
        assert (await backend.lookup("other", "c"))[1] is False

    async def test_evicting_an_exact_only_entry_leaves_the_scope_marked(self, make_backend: Factory) -> None:
        """An exact-only entry never counted in its scope's marker, so its eviction leaves the scope searchable."""
        backend = await make_backend(max_entries=2)
        await backend.put(entry("long", None, scope="a"))
        await backend.put(entry("short", unit(1), scope="a"))
        await backend.put(entry("other", None, scope="b"))  # evicts "long"
        assert await backend.get("long") is None
        assert (await backend.lookup("none", "a"))[1] is True

    async def test_clearing_a_tenant_unmarks_the_scopes_it_emptied(self, make_backend: Factory) -> None:
        """clear(tenant) unmarks a scope it emptied of vector entries and keeps one still holding another's."""
        backend = await make_backend()
        await backend.put(entry("a1", unit(1), scope="only-a", tenant="A"))
        await backend.put(entry("a2", unit(2), scope="shared", tenant="A"))
        await backend.put(entry("b1", unit(3), scope="shared", tenant="B"))
        assert await backend.clear("A") == 2
        assert [(await backend.lookup("none", s))[1] for s in ("only-a", "shared")] == [False, True]


class TestScopeMarkerKeys:
    """The markers as Redis keys: one per scope holding an entry with a vector, holding their count, with a TTL."""

    async def test_markers_are_bounded_by_the_entry_cap(
        self, redis_cache: Callable[..., RedisCache], raw_redis: Any, key_prefix: str
    ) -> None:
        """With max_entries 10, 200 stores in 200 new scopes leave 10 entries and exactly 10 marker keys."""
        cache = redis_cache(max_entries=10)
        for i in range(200):
            await cache.put(entry(f"e{i}", unit(i), scope=f"s{i}"))
        assert (await cache.stats()).entries == 10
        found = await markers(raw_redis, key_prefix)
        assert len(found) == 10
        assert sorted(found) == sorted(f"s{i}" for i in range(190, 200))
        assert {value for value, _ in found.values()} == {1}

    async def test_an_exact_only_entry_never_creates_a_marker(
        self, redis_cache: Callable[..., RedisCache], raw_redis: Any, key_prefix: str
    ) -> None:
        """Storing, replacing and evicting exact-only entries (no vector) writes no marker key at all."""
        cache = redis_cache(max_entries=3)
        for i in range(8):
            await cache.put(entry(f"e{i % 5}", None, scope=f"s{i % 4}"))
        assert (await cache.stats()).entries == 3
        assert await markers(raw_redis, key_prefix) == {}

    async def test_every_marker_has_a_ttl(
        self, redis_cache: Callable[..., RedisCache], raw_redis: Any, key_prefix: str
    ) -> None:
        """Every marker has a TTL of at most ttl_s (none is -1), also after evicting entries whose marker was lost."""
        cache = redis_cache(ttl_s=30, max_entries=4)
        for i in range(40):
            await cache.put(entry(f"e{i % 7}", unit(i) if i % 3 else None, scope=f"s{i % 5}"))
        found = await markers(raw_redis, key_prefix)
        assert found and all(0 < ttl <= 30 for _, ttl in found.values()), found
        await raw_redis.delete(*(f"{key_prefix}:cache:v1:s:{scope}" for scope in found))  # lost (a racing clear)
        for i in range(4):  # evict the 4 entries above: no DECR of their missing markers (a -1 without TTL)
            await cache.put(entry(f"n{i}", unit(100 + i), scope=f"n{i}"))
        assert await markers(raw_redis, key_prefix) == {f"n{i}": (1, 30) for i in range(4)}

    async def test_a_marker_written_by_older_code_is_a_count_of_one(
        self, redis_cache: Callable[..., RedisCache], raw_redis: Any, key_prefix: str
    ) -> None:
        """A marker "1" written by older code counts its entry: a second one makes it 2, evicting both deletes it."""
        cache = redis_cache(max_entries=2)
        marker = f"{key_prefix}:cache:v1:s:old"
        await cache.put(entry("o1", unit(1), scope="old"))
        await raw_redis.set(marker, b"1", ex=60)
        await cache.put(entry("o2", unit(2), scope="old"))
        assert int(await raw_redis.get(marker)) == 2
        await cache.put(entry("n1", unit(3), scope="new"))
        await cache.put(entry("n2", unit(4), scope="new"))
        assert await raw_redis.exists(marker) == 0
        assert await markers(raw_redis, key_prefix) == {"new": (2, 60)}

    def test_markers_count_the_live_entries_with_a_vector(self, redis_server: RedisServer) -> None:
        """After any stores and tenant clears, the markers are the scopes with a vector entry, with their counts."""

        async def run(steps: list[tuple[Any, ...]]) -> None:
            prefix = f"p{uuid.uuid4().hex[:12]}"
            cache = RedisCache(redis_server.url, prefix=prefix, ttl_s=60, max_entries=3)
            client = aioredis.Redis.from_url(redis_server.url)
            try:
                for number, step in enumerate(steps):
                    if step[0] == "clear":
                        await cache.clear(step[1])
                    else:
                        _, entry_id, scope, with_vector, tenant = step
                        vector = unit(number) if with_vector else None
                        await cache.put(entry(f"e{entry_id}", vector, scope=f"s{scope}", tenant=tenant))
                    live: Counter[str] = Counter()
                    stored = 0
                    async for key in client.scan_iter(match=f"{prefix}:cache:v1:e:*", count=500):
                        stored += 1
                        if await client.hexists(key, "vector"):
                            live[(await client.hget(key, "scope")).decode()] += 1
                    found = await markers(client, prefix)
                    assert stored <= 3
                    assert {s: value for s, (value, _) in found.items()} == dict(live), steps[: number + 1]
                    assert all(0 < ttl <= 60 for _, ttl in found.values()), found
            finally:
                await cache.close()
                await client.aclose()

        tenants = st.sampled_from(["A", "B"])
        puts = st.tuples(st.just("put"), st.integers(0, 5), st.integers(0, 2), st.booleans(), tenants)
        clears = st.tuples(st.just("clear"), tenants)

        @settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
        @given(steps=st.lists(st.one_of(puts, puts, puts, clears), max_size=25))
        def check(steps: list[tuple[Any, ...]]) -> None:
            asyncio.run(run(steps))

        check()


class TestRedisIndex:
    async def test_flat_and_hnsw_share_entries_under_one_prefix(
        self, redis_server: RedisServer, key_prefix: str
    ) -> None:
        """An hnsw replica finds what a flat replica stored (two indexes over the same entries)."""
        flat = RedisCache(redis_server.url, prefix=key_prefix, ttl_s=60, max_entries=100, algorithm="flat")
        hnsw = RedisCache(redis_server.url, prefix=key_prefix, ttl_s=60, max_entries=100, algorithm="hnsw")
        try:
            await flat.put(entry("x", unit(12)))
            await hnsw.search("s1", unit(12), 1, 0.0)  # creates the hnsw index, which indexes existing entries
            found: list[Any] = []
            for _ in range(50):  # FT.CREATE indexes existing keys in the background
                found = await hnsw.search("s1", unit(12), 1, 0.0)
                if found:
                    break
                await asyncio.sleep(0.05)
            assert [c.entry.entry_id for c in found] == ["x"]
        finally:
            await flat.close()
            await hnsw.close()

    async def test_an_incompatible_index_under_our_name_is_replaced(
        self, redis_server: RedisServer, key_prefix: str
    ) -> None:
        """An index with our name but another layout (older code) is dropped and created again; lookups work."""
        cache = RedisCache(redis_server.url, prefix=key_prefix, ttl_s=60, max_entries=100)
        name = cache.index_name(DIMS)
        entry_prefix = f"{key_prefix}:cache:v1:e:"
        client = await cache._redis()
        await client.execute_command(
            "FT.CREATE", name, "ON", "HASH", "PREFIX", 1, entry_prefix, "SCHEMA",
            "prompt", "TEXT", "vector", "VECTOR", "FLAT", 6, "TYPE", "FLOAT32", "DIM", DIMS, "DISTANCE_METRIC", "L2",
        )  # fmt: skip
        await client.hset(f"{entry_prefix}stale", mapping={"prompt": "old layout", "vector": unit(1).tobytes()})
        try:
            await cache.put(entry("fresh", unit(13)))
            found = await cache.search("s1", unit(13), 3, 0.0)
            assert [c.entry.entry_id for c in found] == ["fresh"]
            assert found[0].similarity == pytest.approx(1.0, abs=1e-4)  # COSINE now, not L2
            assert await client.exists(f"{entry_prefix}stale") == 0  # dropped with the old index
            rebuilt = await AsyncSearchIndex.from_existing(name, redis_client=client)
            assert set(rebuilt.schema.field_names) == {"scope", "tenant", "vector"}
        finally:
            await cache.close()

    async def test_a_second_process_reuses_a_compatible_index(self, redis_server: RedisServer, key_prefix: str) -> None:
        """A replica starting later finds the index compatible and keeps it (and its entries)."""
        first = RedisCache(redis_server.url, prefix=key_prefix, ttl_s=60, max_entries=100)
        second = RedisCache(redis_server.url, prefix=key_prefix, ttl_s=60, max_entries=100)
        try:
            await first.put(entry("kept", unit(14)))
            assert [c.entry.entry_id for c in await second.search("s1", unit(14), 1, 0.0)] == ["kept"]
        finally:
            await first.close()
            await second.close()

    async def test_an_unreachable_redis_raises_cache_error(self, key_prefix: str) -> None:
        """Every operation against a closed port raises CacheError naming the (masked) URL."""
        cache = RedisCache(f"redis://127.0.0.1:{free_port()}", prefix=key_prefix, ttl_s=60, max_entries=10)
        try:
            with pytest.raises(CacheError, match=r"127\.0\.0\.1"):
                await cache.get("x")
            with pytest.raises(CacheError):
                await cache.search("s1", unit(1), 1, 0.0)
            with pytest.raises(CacheError):
                await cache.put(entry("x", unit(1)))
        finally:
            await cache.close()


class TestCli:
    def run(self, capsys: pytest.CaptureFixture[str], path: Path, *argv: str) -> tuple[int, str, str]:
        parser = argparse.ArgumentParser(prog="costkit")
        add_cache_parser(parser.add_subparsers(dest="command", required=True))
        code = run_cache(parser.parse_args(["cache", *argv, "--config", str(path)]))
        out, err = capsys.readouterr()
        return code, out, err

    async def test_stats_and_clear_read_the_shared_cache(
        self, redis_server: RedisServer, key_prefix: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """``costkit cache stats`` prints entries, hit rate and savings; ``clear --scope`` removes one tenant's."""
        path = tmp_path / "proxy.yaml"
        path.write_text(
            yaml.safe_dump({"costkit": {"redis_url": redis_server.url, "key_prefix": key_prefix, "cache": {}}})
        )
        cache = RedisCache(redis_server.url, prefix=key_prefix, ttl_s=60, max_entries=100)
        await cache.put(entry("a", unit(1), tenant=tenant_tag("team", "t1")))
        await cache.put(entry("b", unit(2), tenant=tenant_tag("team", "t2")))
        await cache.count("hit", 2_500_000)
        await cache.count("miss")
        await cache.close()

        code, out, _ = await asyncio.to_thread(self.run, capsys, path, "stats")
        assert code == 0
        assert "entries   2" in out and "hit rate  50.0%" in out and "saved     $0.0025" in out
        code, out, _ = await asyncio.to_thread(self.run, capsys, path, "clear", "--scope", "team:t1")
        assert (code, out.strip()) == (0, "removed 1 cache entries of team:t1")
        code, out, _ = await asyncio.to_thread(self.run, capsys, path, "stats", "--format", "json")
        assert json.loads(out)["entries"] == 1
        code, _, err = await asyncio.to_thread(self.run, capsys, path, "clear", "--scope", "teams:t1")
        assert code == 1 and "not a cache scope" in err

    def test_without_redis_there_is_nothing_to_read(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """With no redis_url the cache lives in each proxy process: the CLI says so and exits 1."""
        path = tmp_path / "proxy.yaml"
        path.write_text(yaml.safe_dump({"costkit": {"cache": {"enabled": True}}}))
        code, _, err = self.run(capsys, path, "stats")
        assert code == 1 and "inside each proxy process" in err
