"""``PipelinedConnection`` against a real Valkey: replies matched in order, failures contained."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator

import pytest
import redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from costkit_litellm.store.base import StoreError
from costkit_litellm.store.redis import RedisStore
from costkit_litellm.store.resp import FLUSH_AT, PipelinedConnection, ReplyLost, pack, supported
from costkit_litellm.testing.redis_server import RedisServer

pytestmark = pytest.mark.redis


@pytest.fixture
async def conn(redis_server: RedisServer) -> AsyncIterator[PipelinedConnection]:
    connection = PipelinedConnection(redis_server.url, timeout_s=2.0)
    yield connection
    await connection.close()


def test_pack_writes_resp_bulk_strings() -> None:
    """Commands are encoded as RESP arrays of bulk strings (ints and bytes included)."""
    assert pack(("SET", "k", 5, b"\x00v")) == b"*4\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\n5\r\n$2\r\n\x00v\r\n"


def test_only_plain_redis_urls_are_supported() -> None:
    """TLS and unix-socket URLs stay on redis-py."""
    assert supported("redis://h:1/0")
    assert not supported("rediss://h:1/0")
    assert not supported("unix:///tmp/redis.sock")
    assert not supported("redis://h:1?db=2")  # query options are redis-py's to read


async def test_concurrent_commands_each_get_their_own_reply(conn: PipelinedConnection) -> None:
    """Hundreds of commands in flight at once: every caller gets the reply to its own command."""
    key = f"t:{uuid.uuid4().hex}"

    async def one(i: int) -> None:
        assert await conn.execute("HSET", key, f"f{i}", str(i)) == 1
        assert await conn.execute("HGET", key, f"f{i}") == str(i)
        assert await conn.execute("EVAL", "return {ARGV[1], tonumber(ARGV[1])}", 0, str(i)) == [str(i), i]

    await asyncio.gather(*(one(i) for i in range(300)))
    assert await conn.execute("HLEN", key) == 300


async def test_an_error_reply_fails_only_its_own_command(conn: PipelinedConnection) -> None:
    """A server error (wrong type, unknown script) fails that command; the ones around it succeed."""
    key = f"t:{uuid.uuid4().hex}"
    await conn.execute("SET", key, "text")
    results = await asyncio.gather(
        conn.execute("GET", key),
        conn.execute("HGET", key, "f"),  # WRONGTYPE
        conn.execute("EVALSHA", "0" * 40, 0),  # NOSCRIPT
        conn.execute("GET", key),
        return_exceptions=True,
    )
    assert results[0] == "text" and results[3] == "text"
    assert isinstance(results[1], ResponseError) and "WRONGTYPE" in str(results[1])
    assert isinstance(results[2], NoScriptError)


async def test_a_cancelled_caller_does_not_shift_the_replies(conn: PipelinedConnection) -> None:
    """A caller cancelled while waiting loses its reply; the next caller still gets its own."""
    key = f"t:{uuid.uuid4().hex}"
    await conn.execute("SET", key, "mine")
    slow = asyncio.ensure_future(conn.execute("EVAL", "return 'cancelled'", 0))
    await asyncio.sleep(0)
    slow.cancel()
    assert await conn.execute("GET", key) == "mine"


async def test_a_server_restart_fails_the_waiting_commands_then_reconnects(redis_server: RedisServer) -> None:
    """Commands waiting when the server dies get ConnectionError; the next command connects again."""
    server = RedisServer(search=False).start()
    try:
        connection = PipelinedConnection(server.url, timeout_s=2.0)
        assert await connection.execute("PING") == "PONG"
        waiting = asyncio.ensure_future(connection.execute("BLPOP", "never", 10))
        await asyncio.sleep(0.1)
        server.restart()
        with pytest.raises(RedisConnectionError):
            await waiting
        assert await connection.execute("PING") == "PONG"
        await connection.close()
    finally:
        server.stop()


async def test_a_server_that_stops_answering_times_out_every_waiting_command(redis_server: RedisServer) -> None:
    """With the server paused past the timeout, every waiting command fails with TimeoutError, and
    the connection is usable again once the server answers."""
    connection = PipelinedConnection(redis_server.url, timeout_s=0.4)
    pauser = redis.Redis.from_url(redis_server.url)
    try:
        assert await connection.execute("PING") == "PONG"
        pauser.execute_command("CLIENT", "PAUSE", 2000, "ALL")
        started = time.monotonic()
        results = await asyncio.gather(
            *(connection.execute("EVAL", "return 1", 0) for _ in range(5)), return_exceptions=True
        )
        assert all(isinstance(r, RedisTimeoutError) and isinstance(r, ReplyLost) for r in results), results
        assert time.monotonic() - started < 1.8  # the 0.4 s timeout, not the 2 s pause (slack for a busy machine)
        await asyncio.sleep(max(0.0, 2.2 - (time.monotonic() - started)))
        assert await connection.execute("PING") == "PONG"
    finally:
        pauser.execute_command("CLIENT", "UNPAUSE")
        pauser.close()
        await connection.close()


async def test_a_busy_event_loop_is_not_mistaken_for_a_lost_reply(redis_server: RedisServer) -> None:
    """A reply that arrived while the event loop was blocked past the timeout is still delivered."""
    connection = PipelinedConnection(redis_server.url, timeout_s=0.3)
    try:
        await connection.execute("PING")
        pending = asyncio.ensure_future(connection.execute("EVAL", "return 'late but here'", 0))
        await asyncio.sleep(0)  # the command is written
        time.sleep(0.6)  # the loop is blocked (CPU-bound work elsewhere) past the timeout
        assert await pending == "late but here"
    finally:
        await connection.close()


async def test_a_reply_written_back_while_the_loop_is_blocked_is_delivered(redis_server: RedisServer) -> None:
    """Commands leave at the end of their loop turn; a reply that came back while the loop was then
    blocked past the timeout is still delivered."""
    connection = PipelinedConnection(redis_server.url, timeout_s=0.3)
    try:
        await connection.execute("PING")
        pending = asyncio.ensure_future(connection.execute("EVAL", "return 'late but here'", 0))
        for _ in range(3):
            await asyncio.sleep(0)  # the command is queued, then written at the end of its turn
        assert not connection._outbox
        time.sleep(0.6)
        assert await pending == "late but here"
    finally:
        await connection.close()


async def test_commands_of_one_loop_turn_leave_in_one_write(conn: PipelinedConnection) -> None:
    """Concurrent commands leave together (one write per loop turn, or per FLUSH_AT), each with its own reply."""
    assert await conn.execute("PING") == "PONG"
    assert conn._writer is not None
    writes: list[bytes] = []
    real = conn._writer.write
    conn._writer.write = lambda data: (writes.append(data), real(data))[1]  # type: ignore[method-assign]
    replies = await asyncio.gather(*(conn.execute("ECHO", str(i)) for i in range(FLUSH_AT - 1)))
    assert replies == [str(i) for i in range(FLUSH_AT - 1)] and len(writes) == 1
    writes.clear()
    many = 3 * FLUSH_AT + 1
    replies = await asyncio.gather(*(conn.execute("ECHO", str(i)) for i in range(many)))
    assert replies == [str(i) for i in range(many)] and len(writes) == 4  # every FLUSH_AT, then the rest


async def test_user_password_and_database_from_the_url(redis_server: RedisServer) -> None:
    """``redis://user:password@host:port/db`` authenticates as that user and selects that database."""
    admin = redis.Redis.from_url(redis_server.url, decode_responses=True)
    user, password = f"u{uuid.uuid4().hex[:8]}", "p@ss word"
    admin.execute_command("ACL", "SETUSER", user, "on", f">{password}", "~*", "+@all")
    url = redis_server.url.replace("redis://", f"redis://{user}:p%40ss%20word@") + "/3"
    connection = PipelinedConnection(url, timeout_s=2.0)
    try:
        assert await connection.execute("ACL", "WHOAMI") == user
        key = f"t:{uuid.uuid4().hex}"
        await connection.execute("SET", key, "in db 3")
        assert redis.Redis.from_url(redis_server.url + "/3", decode_responses=True).get(key) == "in db 3"
        assert admin.get(key) is None
        wrong = PipelinedConnection(url.replace("p%40ss", "nope"), timeout_s=2.0)
        with pytest.raises(RedisConnectionError, match="AUTH failed"):
            await wrong.execute("PING")
    finally:
        await connection.close()
        admin.execute_command("ACL", "DELUSER", user)
        admin.close()


async def test_redis_store_uses_the_pipelined_connection_for_plain_urls(redis_server: RedisServer) -> None:
    """A standalone ``redis://`` store runs its scripts on the pipelined connection; a unix URL does not."""
    prefix = f"t{uuid.uuid4().hex[:6]}"
    plain = RedisStore(redis_server.url, prefix=prefix)
    unix = RedisStore(redis_server.unix_url, prefix=prefix)
    await plain.start()
    await unix.start()
    try:
        assert plain._fast is not None and unix._fast is None
        assert await plain.incr("c", 2) == 2
        assert await unix.incr("c", 3) == 5
    finally:
        await plain.close()
        await unix.close()


async def test_a_transport_closed_under_the_connection_fails_cleanly_then_reconnects(conn: PipelinedConnection) -> None:
    """A command on a transport that closed before the reader noticed gets ConnectionError (never a
    RuntimeError from the event loop), and the next command connects again."""
    assert await conn.execute("PING") == "PONG"
    assert conn._writer is not None
    conn._writer.transport.abort()  # as a server that went away between two reads
    with pytest.raises(RedisConnectionError):
        await conn.execute("PING")
    assert await conn.execute("PING") == "PONG"


async def test_an_argument_that_cannot_be_packed_does_not_shift_later_replies(conn: PipelinedConnection) -> None:
    """A command whose argument cannot be encoded fails alone, before it takes a place in the reply order."""
    with pytest.raises(UnicodeEncodeError):
        await conn.execute("ECHO", "\ud800")
    assert await asyncio.gather(conn.execute("ECHO", "a"), conn.execute("ECHO", "b")) == ["a", "b"]


async def test_a_lost_reply_is_an_uncertain_store_error_a_refused_connection_is_not(redis_server: RedisServer) -> None:
    """RedisStore marks a script whose reply was lost (the server paused past the timeout) as
    ``uncertain`` (it may have run), and a server that refuses the connection as certain."""
    store = RedisStore(redis_server.url, prefix=f"t{uuid.uuid4().hex[:6]}", socket_timeout_s=0.3)
    await store.start()
    pauser = redis.Redis.from_url(redis_server.url)
    try:
        pauser.execute_command("CLIENT", "PAUSE", 900, "WRITE")
        with pytest.raises(StoreError) as lost:
            await store.incr("c")
        assert lost.value.uncertain
    finally:
        pauser.execute_command("CLIENT", "UNPAUSE")
        pauser.close()
        await store.close()
    gone = RedisServer(search=False).start()
    url = gone.url
    store = RedisStore(url, prefix="t", socket_timeout_s=0.3)
    await store.start()
    gone.stop()
    try:
        with pytest.raises(StoreError) as refused:
            await store.incr("c")
        with pytest.raises(StoreError) as refused:
            await store.incr("c")  # the first saw the connection close; this one cannot connect
        assert not refused.value.uncertain
    finally:
        await store.close()
