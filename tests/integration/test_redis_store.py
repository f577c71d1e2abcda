"""What only the Redis store has: connections, URLs, outages, script reloads, cluster keys."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from costkit_litellm.redact import mask_url
from costkit_litellm.store import FinishResult, Limit, RedisStore, StoreError
from costkit_litellm.testing.ports import free_port
from costkit_litellm.testing.redis_server import RedisServer, _Resp

pytestmark = pytest.mark.redis


def raw(server: RedisServer, *command: str) -> Any:
    """One command on a plain connection, bulk strings decoded."""
    client = _Resp(server.port)
    try:
        reply = client.call(*command)
    finally:
        client.close()
    if isinstance(reply, list):
        return [v.decode() if isinstance(v, bytes) else v for v in reply]
    return reply.decode() if isinstance(reply, bytes) else reply


@pytest.fixture
def own_server() -> Iterator[RedisServer]:
    """A private server this test may stop and restart."""
    with RedisServer(search=False) as server:
        yield server


class TestUrls:
    def test_mask_url_hides_only_the_password(self):
        """The password becomes ``***``; user, host, port and path stay readable."""
        assert mask_url("redis://user:s3cret@host:6380/2") == "redis://user:***@host:6380/2"
        assert mask_url("rediss://:s3cret@host") == "rediss://:***@host"
        assert mask_url("redis://host:6379") == "redis://host:6379"
        assert mask_url("redis://:pw@[::1]:6379") == "redis://:***@[::1]:6379"

    async def test_unreachable_url_fails_at_start_with_masked_password(self):
        """``start()`` raises ``StoreError`` naming the URL, never the password."""
        url = f"redis://:hunter2@127.0.0.1:{free_port()}/0"
        store = RedisStore(url, socket_timeout_s=0.5)
        with pytest.raises(StoreError) as info:
            await store.start()
        assert f"redis://:***@127.0.0.1:{url.split(':')[-1]}" in str(info.value)
        assert "hunter2" not in str(info.value)
        assert not await store.ping()

    def test_constructor_does_no_io(self):
        """Building a store for an unreachable server succeeds: connecting waits for start()."""
        RedisStore(f"redis://127.0.0.1:{free_port()}")

    def test_prefix_with_braces_is_rejected(self):
        """Braces in the prefix would break the hash tags, so they are refused."""
        with pytest.raises(ValueError):
            RedisStore("redis://localhost", prefix="a{b}")

    async def test_unix_socket_url_works(self, own_server, key_prefix):
        """A ``unix://`` URL reaches the same server as its TCP URL."""
        over_unix = RedisStore(own_server.unix_url, prefix=key_prefix)
        over_tcp = RedisStore(own_server.url, prefix=key_prefix)
        await over_unix.start()
        await over_tcp.start()
        try:
            await over_unix.incr("n", 5)
            assert await over_tcp.get("n") == 5
        finally:
            await over_unix.close()
            await over_tcp.close()

    async def test_calls_before_start_raise_store_error(self):
        """Using a store that was never started is a ``StoreError``, not an AttributeError."""
        with pytest.raises(StoreError):
            await RedisStore("redis://localhost").get("n")


class TestOutage:
    async def test_outage_raises_store_error_then_recovers(self, own_server, key_prefix):
        """While Redis is down every call raises ``StoreError``; after a restart calls work again
        (the scripts are reloaded on NOSCRIPT)."""
        store = RedisStore(own_server.url, prefix=key_prefix, socket_timeout_s=0.5)
        await store.start()
        try:
            assert await store.incr("n") == 1
            own_server.stop_server()
            with pytest.raises(StoreError):
                await store.incr("n")
            with pytest.raises(StoreError):
                await store.reserve("a", 1, [Limit("x", 10)], 30)
            assert not await store.ping()
            own_server.restart()
            assert await store.incr("n") == 1  # the restarted server starts empty
            assert (await store.reserve("a", 1, [Limit("x", 10)], 30)).ok
            assert await store.ping()
        finally:
            await store.close()


class TestKeys:
    async def test_windowed_limit_keys_get_a_ttl(self, make_redis_store, redis_server, key_prefix):
        """A limit with ``expires_at`` gets a Redis TTL, so old windows clean themselves up."""
        store = await make_redis_store()
        await store.commit("a", 5, [Limit("day", 100, expires_at=time.time() + 3600)])
        await store.commit("b", 5, [Limit("forever", 100)])
        client = _Resp(redis_server.port)
        try:
            day_ttl = client.call("PTTL", f"{key_prefix}:{{lim:day}}:s")
            forever_ttl = client.call("PTTL", f"{key_prefix}:{{lim:forever}}:s")
        finally:
            client.close()
        assert 3_500_000 < day_ttl <= 3_600_000
        assert forever_ttl == -1

    @pytest.mark.parametrize("cluster", [False, True])
    async def test_a_refused_or_read_limit_never_written_leaves_no_key(
        self, make_redis_store, request, key_prefix, cluster
    ):
        """A reserve refused by one limit, a collision and a ``usage`` read name limits never written: none
        of them leaves a key (each used to leave a hash holding ``m`` alone, without a TTL, per limit, so a
        client inventing user ids on a spent budget grew Redis without bound)."""
        store = await make_redis_store(cluster=cluster)
        day = time.time() + 3600
        for i in range(5):
            limits = [Limit("spent", 10, expires_at=day), Limit(f"user:u{i}", 1000, expires_at=day)]
            assert not (await store.reserve(f"c{i}", 100, limits, 30)).ok
        assert (await store.reserve("dup", 5, [Limit("held", 100)], 30)).ok
        assert (await store.reserve("dup", 5, [Limit("held", 100), Limit("fresh", 100)], 30)).collision
        assert [(u.committed, u.reserved) for u in await store.usage(["never", Limit("roll", 9, window_s=60)])] == [
            (0, 0),
            (0, 0),
        ]
        server = request.getfixturevalue("redis_cluster_server" if cluster else "redis_server")
        held = {f"{key_prefix}:{{lim:held}}:{suffix}" for suffix in ("s", "l", "a")}
        assert set(raw(server, "KEYS", f"{key_prefix}:{{lim:*")) == held

    async def test_a_hash_left_holding_m_alone_is_deleted_when_read(self, make_redis_store, redis_server, key_prefix):
        """Such a hash, left by an earlier version, is deleted by the next script that reads it."""
        store = await make_redis_store()
        key = f"{key_prefix}:{{lim:old}}:s"
        raw(redis_server, "HSET", key, "m", "-1")
        assert [(u.committed, u.reserved) for u in await store.usage(["old"])] == [(0, 0)]
        assert raw(redis_server, "EXISTS", key) == 0
        assert (await store.reserve("a", 5, [Limit("old", 10, expires_at=time.time() + 60)], 30)).ok
        assert 55_000 < raw(redis_server, "PTTL", key) <= 60_000

    async def test_cluster_store_reserves_across_slots(self, make_redis_store):
        """In cluster mode limits in different slots are held and rolled back correctly."""
        store = await make_redis_store(cluster=True)
        limits = [Limit(f"k{i}", 100) for i in range(8)]
        assert (await store.reserve("a", 60, limits, 30)).ok
        refused = await store.reserve("b", 60, [Limit("free", 1000), *limits], 30)
        assert not refused.ok and refused.denied is not None and refused.denied.key == "k0"
        assert [u.reserved for u in await store.usage(["free", "k0", "k7"])] == [0, 60, 60]

    async def test_rolling_limit_keys_live_twice_the_window_or_the_lease(
        self, make_redis_store, redis_server, key_prefix
    ):
        """Rolling limits get a TTL of 2 x window on every write, and a lease plus 2 x window on a hold
        (an expired hold counts in the bucket of its expiry for a window)."""
        store = await make_redis_store()
        await store.commit("a", 5, [Limit("roll", 100, window_s=60)])
        base = f"{key_prefix}:{{lim:roll}}"
        assert 119_000 < raw(redis_server, "PTTL", f"{base}:s") <= 120_000
        await store.reserve("b", 5, [Limit("roll", 100, window_s=60)], lease_s=600)
        for suffix in ("s", "l", "a"):
            assert 719_000 < raw(redis_server, "PTTL", f"{base}:{suffix}") <= 720_000
        await store.commit("c", 5, [Limit("roll", 100, window_s=60)])  # a later write never shortens it
        assert raw(redis_server, "PTTL", f"{base}:s") > 599_000

    async def test_old_buckets_are_dropped_from_the_hash(self, make_redis_store, redis_server, key_prefix):
        """Buckets that left the window are deleted from the limit's hash, not only ignored."""
        now = [1_800_000_000.0]
        store = await make_redis_store(clock=lambda: now[0])
        limit = Limit("roll", 10_000, window_s=60, buckets=6)
        for i in range(12):  # two windows' worth of buckets
            await store.commit(f"c{i}", 10, [limit])
            now[0] += 10
        [usage] = await store.usage([limit])
        fields = raw(redis_server, "HKEYS", f"{key_prefix}:{{lim:roll}}:s")
        buckets = [f for f in fields if f.startswith("b:")]
        assert len(buckets) <= 7
        assert usage.committed == 10 * len(buckets)
        assert {"w", "bl", "lo"} <= set(fields)

    async def test_reservation_recorded_before_rolling_windows_still_settles(
        self, make_redis_store, redis_server, key_prefix
    ):
        """A reservation record with the old ``[key, window_end]`` spec settles normally."""
        store = await make_redis_store()
        await store.reserve("a", 50, [Limit("x", 100)], 30)
        raw(redis_server, "HSET", f"{key_prefix}:{{call:a}}:r", "limits", '[["x", "0"]]')
        assert await store.settle("a", 40)
        assert (await store.usage(["x"]))[0] == (await store.usage([Limit("x", 0)]))[0]
        assert (await store.usage(["x"]))[0].committed == 40

    async def test_reservation_recorded_before_rolling_windows_commits_and_releases(
        self, make_redis_store, redis_server, key_prefix
    ):
        """``commit_and_release`` of a record with the old ``[key, window_end]`` spec (it differs from the
        caller's) reads the record and releases the real hold, once."""
        store = await make_redis_store()
        await store.reserve("a", 50, [Limit("x", 100)], 30)
        raw(redis_server, "HSET", f"{key_prefix}:{{call:a}}:r", "limits", '[["x", "0"]]')
        assert await store.commit_and_release("a", 40, [Limit("x", 100)]) == FinishResult(True, True)
        assert await store.commit_and_release("a", 40, [Limit("x", 100)]) == FinishResult(False, False)
        assert (await store.usage(["x"]))[0].committed == 40 and (await store.usage(["x"]))[0].reserved == 0

    async def test_commands_packed_by_hiredis_carry_any_text(self, make_redis_store):
        """With hiredis installed, commands are packed by it and text round-trips exactly (UTF-8, spaces)."""
        store = await make_redis_store()
        import redis.utils

        pool_class = store._conn().connection_pool.connection_class
        assert pool_class.__name__.startswith("HiredisPacking") == redis.utils.HIREDIS_AVAILABLE
        await store.map_set("m", "clé d'été", "värde 値 with spaces")
        assert await store.map_get_all("m") == {"clé d'été": "värde 値 with spaces"}

    async def test_settings_map_is_one_hash_under_the_prefix(self, make_redis_store, redis_server, key_prefix):
        """``map_set`` writes a plain hash ``<prefix>:map:<name>`` other tools can read."""
        store = await make_redis_store()
        await store.map_set("budget_overrides", "team=a", "12.5")
        assert raw(redis_server, "HGETALL", f"{key_prefix}:map:budget_overrides") == ["team=a", "12.5"]

    async def test_cluster_list_limits_finds_keys_in_every_slot(self, make_redis_store):
        """On a cluster, ``list_limits`` scans the nodes and finds limits spread over many slots."""
        store = await make_redis_store(cluster=True)
        keys = [f"budget:user:{i}" for i in range(40)]
        for key in keys:
            await store.commit(f"c-{key}", 7, [Limit(key, 100)])
        await store.commit("other", 7, [Limit("budgetx", 100)])
        listed = await store.list_limits("budget:user:")
        assert sorted(u.key for u in listed) == sorted(keys)
        assert {(u.committed, u.reserved) for u in listed} == {(7, 0)}


class TestLedgerPaging:
    async def test_large_ledger_reads_in_pages_in_order(self, make_redis_store):
        """2,500 entries read back completely, in order, across pages, also with a limit spanning pages."""
        store = await make_redis_store(socket_timeout_s=5.0)
        for i in range(2500):
            await store.ledger_append(f"e{i}", {"i": str(i)})
        entries = await store.ledger_read()
        assert [e.fields["i"] for e in entries] == [str(i) for i in range(2500)]
        limited = await store.ledger_read(limit=1500)
        assert [e.entry_id for e in limited] == [f"e{i}" for i in range(1500)]


def evalsha_calls(server: RedisServer) -> int:
    """How many EVALSHA commands the server has run (INFO commandstats)."""
    for line in raw(server, "INFO", "commandstats").splitlines():
        if line.startswith("cmdstat_evalsha:"):
            return int(line.split("calls=")[1].split(",")[0])
    return 0


class TestLedgerBatchScript:
    @pytest.mark.parametrize("cluster", [False, True], ids=["standalone", "cluster"])
    async def test_a_batch_is_one_script_call_also_on_a_cluster(self, make_redis_store, request, cluster):
        """300 entries take one EVALSHA (standalone and cluster alike: the stream and its markers share
        the ``{ledger}`` slot) and come back once each."""
        server: RedisServer = request.getfixturevalue("redis_cluster_server" if cluster else "redis_server")
        store = await make_redis_store(cluster=cluster)
        before = evalsha_calls(server)
        assert await store.ledger_append_many([(f"e{i}", {"i": str(i)}) for i in range(300)]) == [True] * 300
        assert evalsha_calls(server) - before == 1
        assert [e.entry_id for e in await store.ledger_read()] == [f"e{i}" for i in range(300)]

    async def test_markers_and_stream_share_the_ledger_slot(self, make_redis_store, redis_server, key_prefix):
        """Every marker key is ``P:{ledger}:id:<entry>`` with a TTL, beside the stream ``P:{ledger}``."""
        store = await make_redis_store(ledger_dedupe_s=3600)
        await store.ledger_append_many([("a:success", {}), ("b:failure", {})])
        assert raw(redis_server, "XLEN", f"{key_prefix}:{{ledger}}") == 2
        for entry_id in ("a:success", "b:failure"):
            assert 3_500_000 < raw(redis_server, "PTTL", f"{key_prefix}:{{ledger}}:id:{entry_id}") <= 3_600_000

    async def test_script_flush_and_restart_reload_the_batch_script(self, own_server, key_prefix):
        """After SCRIPT FLUSH (NOSCRIPT) the batch script is loaded again and idempotency still holds;
        after a server restart (empty) batches work again."""
        store = RedisStore(own_server.url, prefix=key_prefix, socket_timeout_s=0.5)
        await store.start()
        try:
            batch = [(f"e{i}", {"i": str(i)}) for i in range(10)]
            assert await store.ledger_append_many(batch) == [True] * 10
            raw(own_server, "SCRIPT", "FLUSH")
            assert await store.ledger_append_many([*batch, ("new", {})]) == [False] * 10 + [True]
            own_server.stop_server()
            with pytest.raises(StoreError):
                await store.ledger_append_many(batch)
            own_server.restart()
            assert await store.ledger_append_many(batch) == [True] * 10  # the restarted server starts empty
            assert [e.entry_id for e in await store.ledger_read()] == [f"e{i}" for i in range(10)]
        finally:
            await store.close()

    async def test_a_lone_surrogate_does_not_fail_its_batch(self, make_redis_store):
        """A field holding a lone surrogate (valid in JSON metadata, not in UTF-8) is stored with '?' in
        its place, and the rest of its batch is appended."""
        store = await make_redis_store()
        flags = await store.ledger_append_many([("bad", {"user.id": "a\ud800b"}), ("good", {"user.id": "c"})])
        assert flags == [True, True]
        assert {e.entry_id: e.fields["user.id"] for e in await store.ledger_read()} == {"bad": "a?b", "good": "c"}


class TestScriptShortcuts:
    """The scripts skip work the state proves needless (``S.m``, a lease already held, ``ZADD NX``): the
    answers stay those of the full work."""

    async def test_a_lease_left_without_its_record_is_still_a_collision_and_nothing_is_held(
        self, make_redis_store, redis_server, key_prefix
    ):
        """With the record gone but a lease of the id left on a limit, a reserve of that id is a collision
        and holds nothing on the other limits, before or after that one."""
        store = await make_redis_store()
        assert (await store.reserve("a", 10, [Limit("x", 100)], 30)).ok
        raw(redis_server, "DEL", f"{key_prefix}:{{call:a}}:r")
        result = await store.reserve("a", 10, [Limit("y", 100), Limit("x", 100), Limit("z", 100)], 30)
        assert result.collision and not result.ok
        assert [(u.committed, u.reserved) for u in await store.usage(["x", "y", "z"])] == [(0, 10), (0, 0), (0, 0)]
        assert raw(redis_server, "EXISTS", f"{key_prefix}:{{lim:y}}:l", f"{key_prefix}:{{lim:z}}:l") == 0

    async def test_a_collision_answers_before_a_refusal_of_a_later_limit_only(
        self, make_redis_store, redis_server, key_prefix
    ):
        """Limit by limit as before: a lease of the id on a limit before the refusing one is a collision; a
        refusal on an earlier limit answers first."""
        store = await make_redis_store()
        assert (await store.reserve("a", 10, [Limit("x", 100)], 30)).ok
        raw(redis_server, "DEL", f"{key_prefix}:{{call:a}}:r")
        assert (await store.reserve("a", 10, [Limit("x", 100), Limit("tiny", 5)], 30)).collision
        refused = await store.reserve("a", 10, [Limit("tiny", 5), Limit("x", 100)], 30)
        assert not refused.collision and refused.denied is not None and refused.denied.key == "tiny"

    async def test_a_limit_written_without_its_lease_bound_still_expires_its_leases(
        self, make_redis_store, redis_server, key_prefix
    ):
        """A limit whose hash has no ``m`` (written by older scripts) is searched for expired leases, which
        count as spent as always."""
        now = [1_800_000_000.0]
        store = await make_redis_store(clock=lambda: now[0])
        assert (await store.reserve("a", 40, [Limit("x", 100)], 30)).ok
        raw(redis_server, "HDEL", f"{key_prefix}:{{lim:x}}:s", "m")
        now[0] += 31
        assert [(u.committed, u.reserved) for u in await store.usage(["x"])] == [(40, 0)]
        assert await store.settle("a", 25)
        assert [(u.committed, u.reserved) for u in await store.usage(["x"])] == [(25, 0)]

    async def test_a_lease_renewed_shorter_expires_at_its_new_end(self, make_redis_store):
        """Renewing to a shorter lease than the limit's earliest one still counts it as spent at its new end."""
        now = [1_800_000_000.0]
        store = await make_redis_store(clock=lambda: now[0])
        assert (await store.reserve("long", 10, [Limit("x", 100)], 600)).ok
        assert (await store.reserve("a", 40, [Limit("x", 100)], 300)).ok
        assert await store.renew("a", 5)
        now[0] += 6
        assert [(u.committed, u.reserved) for u in await store.usage(["x"])] == [(40, 10)]

    async def test_the_three_keys_of_a_windowed_limit_keep_its_ttl(self, make_redis_store, redis_server, key_prefix):
        """Leases added while others are held, and after the last was released, leave the lease and amount
        keys with the window's TTL, as its state hash."""
        store = await make_redis_store()
        limit = Limit("day", 10_000, expires_at=time.time() + 3600)
        assert (await store.reserve("a", 10, [limit], 600)).ok
        assert (await store.reserve("b", 10, [limit], 600)).ok  # L and A already held a lease
        for call_id in ("a", "b"):
            assert await store.commit_and_release(call_id, 5, [limit]) == FinishResult(True, True)
        assert raw(redis_server, "EXISTS", f"{key_prefix}:{{lim:day}}:l") == 0  # the last release emptied it
        assert (await store.reserve("c", 10, [limit], 600)).ok
        assert (await store.reserve("d", 10, [limit], 600)).ok
        for suffix in ("s", "l", "a"):
            assert 3_500_000 < raw(redis_server, "PTTL", f"{key_prefix}:{{lim:day}}:{suffix}") <= 3_600_000
