"""``PipelinedConnection``: one TCP connection to a standalone Redis, auto-pipelined.

The hot path (one reservation script before each call, one settle script after) pays redis-py's
per-command overhead (pool checkout, retry wrapper, response callbacks): about 135 us of CPU per
EVALSHA here, against about 30 us for writing the command and matching its reply in order on
one connection. The commands issued in one event-loop turn leave together in one write at the
end of the turn (``call_soon``), and the replies, which Redis sends in order, are parsed
by hiredis and handed to the callers first in, first out.

Failure rules (what keeps the replies matched to their callers):

- a server error reply (``-ERR ...``) fails only its own command (``ResponseError``, or
  ``NoScriptError`` for ``NOSCRIPT``), exactly as with redis-py;
- a connection error, an end of stream, or a command that has waited ``timeout_s`` while
  nothing at all was read from the server (judged one loop turn late, so a busy event loop
  reads what arrived before it is judged) closes the connection and fails *every* command
  waiting on it (``ConnectionError`` / ``TimeoutError``): after a lost reply the stream can
  no longer be matched, so none of them is trusted. The next command connects again.

Plain ``redis://`` URLs only (host, port, user, password, database); ``RedisStore`` keeps
redis-py for TLS, unix sockets and clusters, and for the commands off the hot path.
"""

from __future__ import annotations

import asyncio
import collections
from typing import Any, cast
from urllib.parse import unquote, urlsplit

import hiredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

FLUSH_AT = 16
"""A loop turn that queues this many commands writes them at once, without waiting for the turn's
end, so that the server starts on them while the loop packs more."""


class ReplyLost(RedisConnectionError):
    """The command was written but its reply will not come (connection lost while waiting): it
    may still have run on the server."""


class ReplyTimedOut(ReplyLost, RedisTimeoutError):
    """The command was written and nothing came back within the timeout: it may still run."""


def supported(url: str) -> bool:
    """True when ``url`` is a plain ``redis://`` URL this connection can serve (host, port, user,
    password, database in the path; options in a query string, such as ``?db=``, stay with redis-py)."""
    parts = urlsplit(url)
    return parts.scheme == "redis" and not parts.query


def pack(args: tuple[str | bytes | int, ...]) -> bytes:
    """One command in the RESP wire format (hiredis's C packer)."""
    return bytes(hiredis.pack_command(cast(Any, args)))  # its stub types a 1-tuple


def _error(reply: hiredis.ReplyError) -> ResponseError:
    message = str(reply)
    if message.startswith("NOSCRIPT"):
        return NoScriptError(message)
    return ResponseError(message)


class PipelinedConnection:
    """Commands written as they come on one connection; replies matched in order."""

    def __init__(self, url: str, timeout_s: float = 1.0) -> None:
        parts = urlsplit(url)
        if not supported(url):
            raise ValueError("PipelinedConnection serves plain redis:// URLs (no query string)")
        self._host = parts.hostname or "localhost"
        self._port = parts.port or 6379
        self._username = unquote(parts.username) if parts.username else None
        self._password = unquote(parts.password) if parts.password else None
        path = parts.path.strip("/")
        self._db = int(path) if path else 0
        self._timeout = timeout_s
        self._writer: asyncio.StreamWriter | None = None
        self._reader_task: asyncio.Task[None] | None = None
        self._outbox: list[bytes] = []
        """Commands packed in this loop turn, not yet written (``_flush`` writes them together)."""
        self._waiting: collections.deque[tuple[asyncio.Future[Any], float]] = collections.deque()
        """The commands waiting for their replies, oldest first, with the loop time they were written
        (queued, until ``_flush`` writes them)."""
        self._last_read = 0.0
        self._watchdog: asyncio.Handle | None = None
        self._connecting: asyncio.Lock | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def execute(self, *args: str | bytes | int) -> Any:
        """Send one command and wait for its reply (decoded as UTF-8 strings, ints and lists)."""
        loop = asyncio.get_running_loop()
        if self._writer is None or self._loop is not loop:
            await self._connect(loop)
        writer = self._writer
        if writer is None:  # closed by a failure while we waited for the connection
            raise RedisConnectionError(f"connection to {self._host}:{self._port} lost")
        if writer.is_closing():  # the server went away; the reader has not seen it yet
            self._fail(ReplyLost(f"connection to {self._host}:{self._port} lost"))
            raise RedisConnectionError(f"connection to {self._host}:{self._port} lost")
        data = pack(args)  # before queueing: a command that cannot be packed must not take a reply
        future: asyncio.Future[Any] = loop.create_future()
        self._waiting.append((future, loop.time()))
        self._outbox.append(data)
        if len(self._outbox) == 1:  # the first command of this loop turn: one write for all of them
            loop.call_soon(self._flush)
        elif len(self._outbox) >= FLUSH_AT:  # the server starts on these while the loop packs more
            self._flush()
        if self._watchdog is None:
            self._watchdog = loop.call_later(self._timeout, self._watch)
        return await future

    def _flush(self) -> None:
        """Write every command queued in this loop turn in one ``write`` (one system call, and one
        read for the server, instead of one per command)."""
        outbox, self._outbox = self._outbox, []
        writer = self._writer
        if not outbox or writer is None or self._loop is None:  # failed meanwhile: their callers have the error
            return
        now, waiting = self._loop.time(), self._waiting
        for i in range(1, len(outbox) + 1):  # the newest waiting commands are these: timed from now on
            waiting[-i] = (waiting[-i][0], now)
        try:
            writer.write(outbox[0] if len(outbox) == 1 else b"".join(outbox))
        except (RuntimeError, OSError) as exc:  # uvloop raises RuntimeError on a closed transport
            self._fail(ReplyLost(f"connection to {self._host}:{self._port} lost: {exc}"))

    async def close(self) -> None:
        """Close the connection; commands still waiting fail with ``ReplyLost``."""
        self._fail(ReplyLost("connection closed"))

    # --- internals ----------------------------------------------------------------------
    async def _connect(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._loop is not loop:  # a new event loop (tests): the old connection died with it
            self._writer, self._reader_task, self._waiting = None, None, collections.deque()
            self._outbox = []
            self._watchdog = None
            self._connecting, self._loop = asyncio.Lock(), loop
        assert self._connecting is not None
        async with self._connecting:
            if self._writer is not None:
                return
            try:
                reader, writer = await asyncio.wait_for(asyncio.open_connection(self._host, self._port), self._timeout)
            except asyncio.TimeoutError:
                raise RedisTimeoutError(f"connecting to {self._host}:{self._port} timed out") from None
            except OSError as exc:
                raise RedisConnectionError(f"Error connecting to {self._host}:{self._port}: {exc}") from exc
            parser = hiredis.Reader(encoding="utf-8")
            try:
                await self._handshake(reader, writer, parser)
            except BaseException:
                writer.close()
                raise
            self._writer = writer
            self._reader_task = loop.create_task(self._read(reader, parser, writer))

    async def _handshake(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, parser: Any) -> None:
        """AUTH and SELECT before the connection is shared."""
        commands: list[tuple[str | bytes | int, ...]] = []
        if self._password is not None:
            commands.append(("AUTH", self._username, self._password) if self._username else ("AUTH", self._password))
        if self._db:
            commands.append(("SELECT", self._db))
        for command in commands:
            writer.write(pack(command))
            reply = await asyncio.wait_for(self._one_reply(reader, parser), self._timeout)
            if isinstance(reply, hiredis.ReplyError):
                raise RedisConnectionError(f"{command[0]!s} failed: {reply}")

    @staticmethod
    async def _one_reply(reader: asyncio.StreamReader, parser: Any) -> Any:
        while True:
            reply = parser.gets()
            if reply is not False:
                return reply
            data = await reader.read(65536)
            if not data:
                raise RedisConnectionError("connection closed during the handshake")
            parser.feed(data)

    async def _read(self, reader: asyncio.StreamReader, parser: Any, writer: asyncio.StreamWriter) -> None:
        """Hand each reply to the oldest waiting command; on any failure fail them all."""
        waiting = self._waiting
        loop = asyncio.get_running_loop()
        try:
            while True:
                data = await reader.read(262144)
                if not data:
                    raise RedisConnectionError(f"{self._host}:{self._port} closed the connection")
                self._last_read = loop.time()
                parser.feed(data)
                while (reply := parser.gets()) is not False:
                    future, _ = waiting.popleft()
                    if future.done():  # its caller was cancelled: the reply is dropped, the order kept
                        continue
                    if isinstance(reply, hiredis.ReplyError):
                        future.set_exception(_error(reply))
                    else:
                        future.set_result(reply)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if self._writer is writer:
                self._fail(ReplyLost(str(exc)))

    def _watch(self) -> None:
        """The timeout watchdog (one timer per connection, not per command). It judges one loop turn
        later, so that replies which arrived while the event loop was busy are read first."""
        self._watchdog = None
        if self._waiting and self._loop is not None:
            self._watchdog = self._loop.call_soon(self._judge)

    def _judge(self) -> None:
        """Fail the connection when its oldest command has waited ``timeout_s`` with nothing read
        meanwhile; else look again when that could first be true."""
        self._watchdog = None
        if not self._waiting or self._loop is None:
            return
        now = self._loop.time()
        quiet = now - max(self._last_read, self._waiting[0][1])
        if quiet >= self._timeout:
            self._fail(ReplyTimedOut(f"no reply from {self._host}:{self._port} within {self._timeout:g}s"))
        else:
            self._watchdog = self._loop.call_later(self._timeout - quiet, self._watch)

    def _fail(self, exc: Exception) -> None:
        """Close the connection and fail every waiting command with ``exc``."""
        writer, self._writer = self._writer, None
        task, self._reader_task = self._reader_task, None
        waiting, self._waiting = self._waiting, collections.deque()
        self._outbox = []
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        if task is not None and task is not asyncio.current_task():
            task.cancel()
        if writer is not None:
            writer.close()
        for future, _ in waiting:
            if not future.done():
                future.set_exception(exc)
