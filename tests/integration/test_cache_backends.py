"""The cache backends through one contract: in process (numpy) and Redis with vector search (flat and hnsw).

Redis runs for real (valkey with the search module, started for the session); each test writes under
its own key prefix. TTLs are real (1 s), so expiry is Redis's own EXPIRE, not a simulation.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
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
