"""The outbox of ``PipelinedConnection`` under cancellation and connection kills: a reply is
never handed to the wrong caller, and a caller whose command may have run is told so (uncertain)."""

from __future__ import annotations

import asyncio
import random
import uuid

import pytest
import redis
from redis.exceptions import ConnectionError as RedisConnectionError

from costkit_litellm.store.resp import PipelinedConnection, ReplyLost
from costkit_litellm.testing.redis_server import RedisServer

pytestmark = pytest.mark.redis


async def test_replies_match_their_callers_through_cancellations_and_client_kills(redis_server: RedisServer) -> None:
    """Thousands of commands, some callers cancelled before or after the flush and the connection
    killed by the server now and then: every answer a caller gets is its own, and a failed caller
    whose INCR did run was told it may have (ReplyLost), never a plain connection error."""
    conn = PipelinedConnection(redis_server.url, timeout_s=2.0)
    admin = redis.Redis.from_url(redis_server.url)
    rng = random.Random(5)
    tag = uuid.uuid4().hex
    certain_failures: list[str] = []

    async def one(i: int) -> None:
        key = f"rv:{tag}:{i}"
        try:
            got = await conn.execute("EVAL", "redis.call('INCR', KEYS[1]) return ARGV[1]", 1, key, str(i))
            assert got == str(i)
        except ReplyLost:
            pass
        except RedisConnectionError:
            certain_failures.append(key)

    for round_ in range(30):
        tasks = [asyncio.ensure_future(one(round_ * 100 + i)) for i in range(100)]
        await asyncio.sleep(0)
        for t in rng.sample(tasks, 10):
            t.cancel()
        if round_ % 3 == 0:
            await asyncio.to_thread(admin.execute_command, "CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")
        await asyncio.gather(*tasks, return_exceptions=True)
    await conn.close()
    ran = [k for k in certain_failures if admin.get(k) is not None]
    admin.close()
    assert not ran, f"{len(ran)} commands reported as not sent ran anyway"
