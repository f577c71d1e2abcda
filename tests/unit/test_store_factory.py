"""Choosing the store from a URL (no server needed: constructors do no I/O)."""

from __future__ import annotations

import pytest

from costkit_litellm.store import MemoryStore, RedisStore, Store, StoreError, store_from_url


class TestStoreFromUrl:
    @pytest.mark.parametrize("url", [None, ""])
    def test_no_url_gives_the_memory_store(self, url):
        """Without a URL the in-process store is used."""
        assert isinstance(store_from_url(url), MemoryStore)

    @pytest.mark.parametrize(
        "url", ["redis://localhost:6379/0", "rediss://:pw@cache.example:6380", "unix:///tmp/r.sock"]
    )
    def test_redis_schemes_give_the_redis_store(self, url):
        """``redis://``, ``rediss://`` and ``unix://`` URLs give a ``RedisStore``."""
        store = store_from_url(url, prefix="p")
        assert isinstance(store, RedisStore) and isinstance(store, Store)

    def test_unknown_scheme_is_named_in_the_error(self):
        """An unsupported scheme raises ``StoreError`` that names it."""
        with pytest.raises(StoreError, match="'memcached'"):
            store_from_url("memcached://localhost")

    def test_cluster_over_unix_socket_is_refused(self):
        """Redis Cluster cannot be reached over a unix socket."""
        with pytest.raises(StoreError):
            store_from_url("unix:///tmp/r.sock", cluster=True)

    async def test_keyword_options_reach_the_store(self):
        """Extra keywords go to the store's constructor (here: the ledger length bound)."""
        store = store_from_url(None, ledger_max_entries=1)
        await store.ledger_append("a", {})
        await store.ledger_append("b", {})
        assert [e.entry_id for e in await store.ledger_read()] == ["b"]
