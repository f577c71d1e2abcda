"""Hard caps under contention: many tasks, and for Redis many processes, race for one budget."""

from __future__ import annotations

import asyncio
import multiprocessing
import random
import uuid

import pytest

from costkit_litellm.store import Limit, RedisStore, Store

pytestmark = pytest.mark.redis

AMOUNT = 1_000
CAP = 50 * AMOUNT
"""Room for exactly 50 reservations of ``AMOUNT``."""
ATTEMPTS = 500
LEASE_S = 60.0
WORKERS = 4


async def reserve_and_settle(store: Store, call_id: str, limits: list[Limit]) -> bool:
    """One request: reserve the worst case, yield to the others, settle for the full amount."""
    result = await store.reserve(call_id, AMOUNT, limits, LEASE_S)
    if not result.ok:
        assert result.denied is not None and result.denied.key == "team"
        return False
    await asyncio.sleep(0)
    assert await store.settle(call_id, AMOUNT)
    return True


def race_limits() -> list[Limit]:
    """A roomy global limit first (so refusals by the team limit roll it back), then the team."""
    return [Limit("global", 10**12), Limit("team", CAP)]


class TestConcurrentTasks:
    async def test_500_concurrent_reserves_admit_exactly_the_cap(self, make_store):
        """500 racing tasks: exactly 50 fit, committed equals the cap, nothing stays reserved."""
        store = await make_store()
        limits = race_limits()
        outcomes = await asyncio.gather(*(reserve_and_settle(store, f"call-{i}", limits) for i in range(ATTEMPTS)))
        assert sum(outcomes) == CAP // AMOUNT
        usage = await store.usage(["team", "global"])
        assert [(u.committed, u.reserved) for u in usage] == [(CAP, 0), (CAP, 0)]

    async def test_rolling_cap_admits_exactly_the_cap(self, make_store):
        """A rolling-window cap raced by 500 tasks admits exactly the cap, like a fixed one."""
        store = await make_store()
        limits = [Limit("global", 10**12), Limit("team", CAP, window_s=3600)]
        outcomes = await asyncio.gather(*(reserve_and_settle(store, f"call-{i}", limits) for i in range(ATTEMPTS)))
        assert sum(outcomes) == CAP // AMOUNT
        usage = await store.usage(limits[::-1])
        assert [(u.committed, u.reserved) for u in usage] == [(CAP, 0), (CAP, 0)]

    async def test_settling_for_less_never_lets_spend_pass_the_cap(self, make_store):
        """Racing waves settled below the reserve fill the cap until no reserve fits, never past it."""
        store = await make_store()
        limits = race_limits()
        rng = random.Random(7)

        async def one(call_id: str) -> bool:
            if not (await store.reserve(call_id, AMOUNT, limits, LEASE_S)).ok:
                return False
            await asyncio.sleep(0)
            assert await store.settle(call_id, rng.randint(1, AMOUNT))
            return True

        for wave in range(200):
            if not any(await asyncio.gather(*(one(f"w{wave}-{i}") for i in range(100)))):
                break
        [team] = await store.usage(["team"])
        assert team.reserved == 0
        assert CAP - AMOUNT < team.committed <= CAP  # full: the next reserve no longer fits


def _worker(url: str, prefix: str, cluster: bool, worker: int, start: object, out: object) -> None:
    """One replica: its own event loop and connection, racing the others for the same limit."""

    async def run() -> int:
        store = RedisStore(url, prefix=prefix, cluster=cluster)
        await store.start()
        try:
            start.wait()  # type: ignore[attr-defined]
            calls = [reserve_and_settle(store, f"p{worker}-{i}", race_limits()) for i in range(ATTEMPTS // WORKERS)]
            return sum(await asyncio.gather(*calls))
        finally:
            await store.close()

    try:
        out.put(asyncio.run(run()))  # type: ignore[attr-defined]
    except BaseException as exc:  # report instead of leaving the parent waiting
        out.put(repr(exc))  # type: ignore[attr-defined]
        raise


class TestConcurrentProcesses:
    @pytest.mark.parametrize("cluster", [False, True], ids=["redis", "redis-cluster"])
    async def test_four_processes_share_one_cap(self, request, cluster, make_redis_store):
        """Four OS processes with their own connections together admit exactly the cap."""
        server = request.getfixturevalue("redis_cluster_server" if cluster else "redis_server")
        prefix = f"mp{uuid.uuid4().hex[:10]}"
        ctx = multiprocessing.get_context("spawn")
        start, out = ctx.Barrier(WORKERS), ctx.Queue()
        procs = [ctx.Process(target=_worker, args=(server.url, prefix, cluster, n, start, out)) for n in range(WORKERS)]
        for proc in procs:
            proc.start()
        try:
            admitted = [await asyncio.to_thread(out.get, True, 120) for _ in procs]
        finally:
            for proc in procs:
                proc.join(timeout=30)
                if proc.is_alive():
                    proc.kill()
                    proc.join()
        assert all(proc.exitcode == 0 for proc in procs)
        assert sum(admitted) == CAP // AMOUNT
        reader = RedisStore(server.url, prefix=prefix, cluster=cluster)
        await reader.start()
        try:
            usage = await reader.usage(["team", "global"])
        finally:
            await reader.close()
        assert [(u.committed, u.reserved) for u in usage] == [(CAP, 0), (CAP, 0)]
