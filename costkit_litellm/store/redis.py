"""``RedisStore``: the production ``Store`` on Redis / Valkey (standalone or Cluster), Lua-scripted.

This module and its connection (``resp.py``) are the only ones that import ``redis``; every redis
error leaves it as ``StoreError``. On a standalone ``redis://`` server the scripts and plain commands
travel on one auto-pipelined connection (``resp.PipelinedConnection``), the rest on redis-py.

Layout (``P`` = prefix; braces are hash tags, so each group lives in one cluster slot)::

    P:{lim:K}:s  hash   c = committed, r = reserved, x = window end (ms)    one limit K
                        m = a lower bound on its lease expiries (-1: none held)
                        rolling: w, bl = window and bucket (ms), b:J = spend in bucket J,
                        lo = lowest J present (c = sum of the buckets)
    P:{lim:K}:l  zset   call_id -> lease expiry (ms)                         its live leases
    P:{lim:K}:a  hash   call_id -> reserved amount
    P:{lim:K}:a  hash   also e:call_id -> "amount:bucket" of an expired lease (counted as spent)
    P:{call:I}:r hash   amount, lease_until, limits (JSON)                   reservation record
    P:{call:I}:d string finished marker (settled / released), TTL = grace
    P:{commit:I} string commit marker, TTL = grace
    P:{ledger}   stream the ledger; P:{ledger}:id:E  its idempotency markers
    P:n:K        hash   counter (v = value, x = end in ms);  P:claim:T  claim token
    P:map:N      hash   settings map N (plain HSET / HDEL / HGETALL)

Standalone: reserve (with its counters), settle, release, count and commit_and_release are each
one script over every key involved (all or nothing): a budgeted request is one round trip before
the call and one after. ``commit_and_release`` takes the limits the caller reserved and only reads
the reservation record when its spec differs (a record written by an older version). Cluster: a
limit's keys share a slot but a call's limits do not, so ``reserve`` increments its counters one
by one, then holds limit by limit and rolls back the earlier holds when a later one refuses; spend
still can never pass a cap (contention can only cause spurious refusals); ``commit_and_release``
is ``commit`` then ``release``.

The scripts read each limit's state once (``refresh``) and skip rewriting a window end it already
holds; commands are packed with hiredis when it is installed (``_hiredis_packing``). Each
``redis.call`` inside a script costs the server about a microsecond beyond the command, so the
scripts skip the ones the state already answers: the lease list is searched for expired leases only
when ``m`` is not later than now, a lease's key TTLs are set only when its keys may be new, a
collision is found by the hold's ``ZADD NX``, and ``commit_and_release`` reads the record once and
writes committed and reserved together (``bench/redis_commands.py`` counts them, old scripts vs new).

Rolling limits keep their buckets in their own hash; buckets that left the window are dropped
lazily by the scripts, and every write keeps the three keys alive for max(2 x window, lease).
``list_limits`` SCANs ``P:{lim:<prefix>*}:s`` (on a cluster redis-py scans every primary).

Time: scripts read the server's ``TIME`` unless a ``clock`` was injected (then ``now`` travels
as an argument, for deterministic tests). Expiry is checked against that ``now`` inside the
scripts; Redis TTLs only clean up afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from importlib import resources
from itertools import chain
from typing import Any, Final, cast

import redis.asyncio as aioredis
import redis.utils
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import NoScriptError, RedisClusterException, RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from costkit_litellm.redact import mask_url
from costkit_litellm.store import resp
from costkit_litellm.store.base import (
    Counter,
    FinishResult,
    LedgerEntry,
    Limit,
    LimitUsage,
    ReserveResult,
    StoreError,
    as_limits,
    check_limits,
    first_tripped,
)
from costkit_litellm.store.memory import DEFAULT_LEDGER_DEDUPE_S, DEFAULT_RESERVATION_GRACE_S

_SCRIPTS: Final = (
    "reserve",
    "finish",
    "commit_release",
    "count",
    "close_record",
    "record_state",
    "renew",
    "unhold",
    "commit",
    "usage",
    "claim",
    "incr",
    "get",
    "ledger_append_many",
    "ledger_read",
    "map_set_capped",
)
_ERRORS: Final = (RedisError, RedisClusterException, OSError)
LEDGER_PAGE: Final = 1000
LEDGER_BATCH: Final = 512
"""Most ledger entries per ``ledger_append_many`` script call (a few ms of server time)."""
_USAGE_BATCH: Final = 256
"""Limits per ``usage`` script call when reading many (``list_limits``)."""


def _ms(seconds: float) -> str:
    return str(max(round(seconds * 1000), 1))  # round: int() cut 8.107 s to 8106 ms


class RedisStore:
    """``Store`` on Redis or Valkey; any number of replicas may share one server or cluster."""

    def __init__(
        self,
        url: str,
        prefix: str = "costkit",
        cluster: bool = False,
        clock: Callable[[], float] | None = None,
        ledger_max_entries: int | None = 1_000_000,
        ledger_max_age_s: float | None = None,
        socket_timeout_s: float = 1.0,
        *,
        max_connections: int = 64,
        reservation_grace_s: float = DEFAULT_RESERVATION_GRACE_S,
        ledger_dedupe_s: float = DEFAULT_LEDGER_DEDUPE_S,
    ) -> None:
        if "{" in prefix or "}" in prefix:
            raise ValueError("prefix must not contain braces (they are hash tags)")
        self._url = url
        self._prefix = prefix
        self._cluster = cluster
        self._clock = clock
        self._ledger_max_len = "" if ledger_max_entries is None else str(ledger_max_entries)
        self._ledger_max_age = "" if ledger_max_age_s is None else _ms(ledger_max_age_s)
        self._timeout = socket_timeout_s
        self._max_connections = max_connections
        # redis-py's async pools raise when exhausted; queue excess commands here instead.
        self._in_flight = asyncio.Semaphore(max_connections)
        self._grace_ms = int(reservation_grace_s * 1000)
        self._dedupe_ms = _ms(ledger_dedupe_s)
        self._client: Any = None
        self._fast: resp.PipelinedConnection | None = None
        """The auto-pipelined connection that carries the scripts and plain commands (standalone
        ``redis://``); redis-py's pool keeps the rest (loading scripts, SCAN, pipelines)."""
        self._shas: dict[str, str] = {}
        self._sources: dict[str, str] = {}

    @staticmethod
    def _source(name: str) -> str:
        lua = resources.files("costkit_litellm.store").joinpath("lua")
        common = lua.joinpath("common.lua").read_text(encoding="utf-8")
        return common + "\n" + lua.joinpath(f"{name}.lua").read_text(encoding="utf-8")

    # --- lifecycle ----------------------------------------------------------------------
    async def start(self) -> None:
        """Connect, check the server answers, and load the scripts."""
        if self._client is not None:
            return
        options: dict[str, Any] = {
            "decode_responses": True,
            "socket_timeout": self._timeout,
            "socket_connect_timeout": self._timeout,
            "max_connections": self._max_connections,
        }
        if not self._sources:
            self._sources = {name: self._source(name) for name in _SCRIPTS}
        try:
            if self._cluster:
                self._client = RedisCluster.from_url(self._url, **options)
                await self._client.initialize()
            else:
                self._client = aioredis.from_url(self._url, **options)
                pool = self._client.connection_pool
                pool.connection_class = _hiredis_packing(pool.connection_class)
            await self._client.ping()
            if not self._cluster and resp.supported(self._url):
                self._fast = resp.PipelinedConnection(self._url, self._timeout)
                await self._fast.execute("PING")
            for name in _SCRIPTS:
                await self._load(name)
        except (*_ERRORS, ValueError) as exc:
            await self.close()
            raise StoreError(f"cannot use Redis at {mask_url(self._url)}: {exc}") from exc

    async def close(self) -> None:
        """Close the connection pool; safe to call twice."""
        client, self._client = self._client, None
        fast, self._fast = self._fast, None
        if fast is not None:
            await fast.close()
        if client is not None:
            with contextlib.suppress(*_ERRORS):  # a pool whose server is gone still closes
                await client.aclose()

    async def ping(self) -> bool:
        """True when the server answers."""
        try:
            return bool(await self._conn().ping())
        except (*_ERRORS, StoreError):
            return False

    # --- counters -----------------------------------------------------------------------
    async def incr(self, key: str, amount: int = 1, ttl_s: float | None = None, extend: bool = False) -> int:
        """Add to a counter; ``ttl_s`` applies when this call creates it, or always with ``extend``."""
        ttl = "" if ttl_s is None else _ms(ttl_s)
        args = [self._now(), str(amount), ttl, "1" if extend else "0"]
        return int(await self._eval("incr", [self._key("n", key)], args))

    async def get(self, key: str) -> int:
        """A counter's value, 0 when absent or expired."""
        return int(await self._eval("get", [self._key("n", key)], [self._now()]))

    async def count(self, counters: Sequence[Counter]) -> list[int]:
        """Increment every counter: one script on a standalone server, one ``incr`` each on a cluster
        (counters live in different slots)."""
        if not counters:
            return []
        if self._cluster:
            return [await self.incr(c.key, c.amount, c.ttl_s, c.extend) for c in counters]
        keys = [self._key("n", c.key) for c in counters]
        args = [self._now()]
        for c in counters:
            args += [str(c.amount), "" if c.ttl_s is None else _ms(c.ttl_s), "1" if c.extend else "0"]
        return [int(v) for v in await self._eval("count", keys, args)]

    # --- reservations -------------------------------------------------------------------
    async def reserve(
        self, call_id: str, amount: int, limits: Sequence[Limit], lease_s: float, counters: Sequence[Counter] = ()
    ) -> ReserveResult:
        """Increment the counters, then hold ``amount`` on every limit or on none (none when a counter
        trips); an id already known is refused (``collision``). Standalone: one script."""
        _check_amount(amount)
        check_limits(limits)
        windows = [_window_args(limit) for limit in limits]
        spec = _spec(limits, windows)
        record = self._record_keys(call_id)
        head = [call_id, str(amount), _ms(lease_s), self._record_ttl(lease_s), spec]
        if not self._cluster:
            keys = record + [self._key("n", c.key) for c in counters]
            keys += [k for limit in limits for k in self._limit_keys(limit.key)]
            args = [self._now(), "1", *head, str(len(counters))]
            for c in counters:
                args += _counter_args(c)
            for limit, window in zip(limits, windows, strict=True):
                args += _cap_args(limit, window)
            reply = await self._eval("reserve", keys, args)
            return _reserve_result(reply, limits, len(counters))
        # Cluster: counters one by one (other slots), then claim the id with its record (one slot),
        # then hold limit by limit.
        counts = tuple(await self.count(counters))
        tripped = first_tripped(counters, counts)
        if tripped is not None:
            return ReserveResult(ok=False, counts=counts, tripped=tripped)
        result = await self._reserve_on_cluster(call_id, amount, limits, lease_s, record, head, spec)
        return replace(result, counts=counts)

    async def _reserve_on_cluster(
        self,
        call_id: str,
        amount: int,
        limits: Sequence[Limit],
        lease_s: float,
        record: list[str],
        head: list[str],
        spec: str,
    ) -> ReserveResult:
        claim_args = [self._now(), str(amount), _ms(lease_s), self._record_ttl(lease_s), spec]
        if int(await self._eval("record_state", record, claim_args)) == 3:
            return ReserveResult(ok=False, collision=True)
        held: list[Limit] = []
        usages: list[LimitUsage] = []
        for limit in limits:
            args = [self._now(), "0", *head, "0", *_cap_args(limit)]
            reply = await self._eval("reserve", self._limit_keys(limit.key), args)
            if int(reply[0]) != 1:
                for earlier in held:
                    keys = self._limit_keys(earlier.key)
                    await self._eval("unhold", keys, [self._now(), call_id])
                await self._call("DEL", record[0])
                return _reserve_result(reply, [limit], 0)
            held.append(limit)
            usages.append(LimitUsage(limit.key, int(reply[1]), int(reply[2])))
        return ReserveResult(ok=True, usages=tuple(usages))

    async def renew(self, call_id: str, lease_s: float) -> bool:
        """Push a live lease's expiry to ``lease_s`` from now; False if unknown, done or expired."""
        record = self._record_keys(call_id)
        head = [call_id, _ms(lease_s), self._record_ttl(lease_s)]
        for _ in range(3):  # the record can only change under us if the call is re-reserved
            spec = await self._call("HGET", record[0], "limits")
            if spec is None:
                return False
            limits = _parse_spec(spec)
            rolling = [v for _, _, window_ms, bucket_ms in limits for v in (window_ms, bucket_ms)]
            if self._cluster:
                if int(await self._eval("renew", record, [self._now(), "1", *head, spec])) != 1:
                    return False
                for key, _, window_ms, bucket_ms in limits:
                    args = [self._now(), "0", *head, "", window_ms, bucket_ms]
                    await self._eval("renew", self._limit_keys(key), args)
                return True
            keys = record + [k for key, *_ in limits for k in self._limit_keys(key)]
            status = int(await self._eval("renew", keys, [self._now(), "1", *head, spec, *rolling]))
            if status >= 0:
                return status == 1
        raise StoreError(f"reservation {call_id!r} kept changing during renew")

    async def settle(self, call_id: str, actual: int) -> bool:
        """Commit ``actual`` on the reservation's limits, once."""
        _check_amount(actual)
        return await self._finish(call_id, "settle", actual)

    async def release(self, call_id: str) -> bool:
        """Drop the reservation, once."""
        return await self._finish(call_id, "release", 0)

    async def commit(self, call_id: str, amount: int, limits: Sequence[Limit]) -> bool:
        """Charge without a reservation, once per ``call_id`` (within the grace period)."""
        _check_amount(amount)
        check_limits(limits)
        marker = [f"{self._prefix}:{{commit:{call_id}}}"]
        ttl = str(self._grace_ms)
        if not self._cluster:
            keys = marker + [k for limit in limits for k in self._limit_keys(limit.key)]
            args = [self._now(), "1", str(amount), ttl] + [v for limit in limits for v in _window_args(limit)]
            return int(await self._eval("commit", keys, args)) == 1
        if int(await self._eval("claim", marker, [self._now(), ttl])) == 0:
            return False
        for limit in limits:
            args = [self._now(), "0", str(amount), ttl, *_window_args(limit)]
            await self._eval("commit", self._limit_keys(limit.key), args)
        return True

    async def commit_and_release(self, call_id: str, amount: int | None, limits: Sequence[Limit]) -> FinishResult:
        """``commit`` (unless ``amount`` is None) and ``release`` in one script on a standalone server.

        ``limits`` are taken to be the reservation's: the script compares their spec with the
        record's and only when they differ (a record written by another version, or for other
        limits) is the record read and the script run again with the limits it holds. A cluster
        runs ``commit`` then ``release`` (the marker, the record and the limits are in other slots)."""
        if amount is not None:
            _check_amount(amount)
        check_limits(limits)
        if self._cluster:
            committed = False if amount is None else await self.commit(call_id, amount, limits)
            return FinishResult(committed=committed, released=await self.release(call_id))
        keys = [*self._record_keys(call_id), f"{self._prefix}:{{commit:{call_id}}}"]
        head = [self._now(), call_id, "" if amount is None else str(amount), str(self._grace_ms)]
        both = [k for limit in limits for k in self._limit_keys(limit.key)]
        windows = [_window_args(limit) for limit in limits]
        reply = await self._eval(
            "commit_release", keys + both, [*head, _spec(limits, windows), *_role_args("b", windows)]
        )
        for _ in range(3):  # the record holds other limits: release those, commit on the given ones
            if int(reply[0]) >= 0:
                return FinishResult(committed=int(reply[0]) == 1, released=int(reply[1]) == 1)
            spec = await self._call("HGET", keys[0], "limits")
            held = [(key, held_window) for key, *held_window in _parse_spec(spec or "")]
            args = [*head, spec or "", *_role_args("c", windows), *_role_args("r", [w for _, w in held])]
            redis_keys = keys + both + [k for key, _ in held for k in self._limit_keys(key)]
            reply = await self._eval("commit_release", redis_keys, args)
        if int(reply[0]) >= 0:
            return FinishResult(committed=int(reply[0]) == 1, released=int(reply[1]) == 1)
        raise StoreError(f"reservation {call_id!r} kept changing during commit_and_release")

    async def usage(self, limits: Sequence[Limit | str]) -> list[LimitUsage]:
        """Committed and live-reserved amount of each limit (a plain key: as stored)."""
        return [usage for usage, _ in await self._usages(as_limits(limits), len(limits) or 1)]

    async def list_limits(self, key_prefix: str) -> list[LimitUsage]:
        """Usage of every live limit whose key starts with ``key_prefix``, sorted by key.

        SCANs ``P:{lim:<prefix>*}:s`` (every primary of a cluster), then reads the found limits
        with the usage script, which drops ended windows and empty rolling limits first."""
        head, tail = f"{self._prefix}:{{lim:", "}:s"
        pattern = _glob_escape(head + key_prefix) + "*" + tail
        found: set[str] = set()
        try:
            async with self._in_flight:
                async for name in self._conn().scan_iter(match=pattern, count=1000):
                    if name.startswith(head) and name.endswith(tail):
                        found.add(name[len(head) : -len(tail)])
        except _ERRORS as exc:
            raise StoreError(f"Redis SCAN failed: {exc}") from exc
        keys = sorted(key for key in found if key.startswith(key_prefix))
        usages = await self._usages([Limit(key, 0) for key in keys], _USAGE_BATCH)
        return [usage for usage, live in usages if live]

    async def reset(self, key: str) -> None:
        """Forget a limit's committed spend and leases."""
        await self._call("DEL", *self._limit_keys(key))

    # --- settings maps ------------------------------------------------------------------
    async def map_set(self, name: str, field: str, value: str, max_fields: int | None = None) -> bool:
        """Set one field of a map (``HSET P:map:<name>``); with ``max_fields``, through
        ``map_set_capped.lua`` (a new field only while ``HLEN`` is below the cap)."""
        if max_fields is None:
            await self._call("HSET", self._key("map", name), field, value)
            return True
        return int(await self._eval("map_set_capped", [self._key("map", name)], [field, value, str(max_fields)])) == 1

    async def map_delete(self, name: str, field: str) -> bool:
        """Remove one field; False when it was not there."""
        return int(await self._call("HDEL", self._key("map", name), field)) == 1

    async def map_get_all(self, name: str) -> dict[str, str]:
        """The whole map (empty when absent)."""
        reply = await self._call("HGETALL", self._key("map", name))
        if isinstance(reply, dict):
            return {str(k): str(v) for k, v in reply.items()}
        return {str(k): str(v) for k, v in zip(reply[::2], reply[1::2], strict=True)}

    # --- idempotency --------------------------------------------------------------------
    async def claim(self, token: str, ttl_s: float) -> bool:
        """True the first time within ``ttl_s``."""
        keys = [self._key("claim", token)]
        return int(await self._eval("claim", keys, [self._now(), _ms(ttl_s)])) == 1

    # --- ledger -------------------------------------------------------------------------
    async def ledger_append(self, entry_id: str, fields: Mapping[str, str]) -> bool:
        """Append once per ``entry_id`` to the ledger stream (trimmed by count and age)."""
        return (await self.ledger_append_many([(entry_id, fields)]))[0]

    async def ledger_append_many(self, entries: Sequence[tuple[str, Mapping[str, str]]]) -> list[bool]:
        """``ledger_append`` for each entry, in order: one script call (``ledger_append_many.lua``) per
        ``LEDGER_BATCH`` entries, atomic and idempotent per entry id (a repeated id, also within
        the batch, answers False), then one exact trim by count and age.

        The entries travel as one JSON argument (decoded by the server's ``cjson``), so the
        client packs one string instead of two arguments per field. The stream and its markers
        share the ``{ledger}`` hash tag: on a cluster the whole call goes to that one slot. A
        call that fails after an earlier chunk succeeded has appended that chunk, which a retry
        with the same ids does not append twice.
        """
        stream = f"{self._prefix}:{{ledger}}"
        head = [self._now(), self._dedupe_ms, self._ledger_max_len, self._ledger_max_age]
        flags: list[bool] = []
        for start in range(0, len(entries), LEDGER_BATCH):
            chunk = entries[start : start + LEDGER_BATCH]
            markers = [f"{stream}:id:{entry_id}" for entry_id, _ in chunk]
            rows = json.dumps(
                [[entry_id, *chain.from_iterable(fields.items())] for entry_id, fields in chunk],
                ensure_ascii=False,
                separators=(",", ":"),
            ).encode("utf-8", "replace")  # a lone surrogate (valid in JSON input) becomes '?', not an error
            reply = await self._eval("ledger_append_many", [stream, *markers], [*head, rows])
            flags += [int(flag) == 1 for flag in reply]
        return flags

    async def ledger_read(
        self, since_ms: int | None = None, until_ms: int | None = None, limit: int | None = None
    ) -> list[LedgerEntry]:
        """Entries with ``since_ms <= timestamp_ms <= until_ms``, oldest first, at most ``limit``.

        Read in pages of ``LEDGER_PAGE`` entries (each page one short script call), so a ledger of
        a million events never holds Redis, or the socket timeout, for long.
        """
        low = "-" if since_ms is None else str(since_ms)
        high = "+" if until_ms is None else str(until_ms)
        entries: list[LedgerEntry] = []
        while limit is None or len(entries) < limit:
            page = LEDGER_PAGE if limit is None else min(LEDGER_PAGE, limit - len(entries))
            rows = await self._eval("ledger_read", [f"{self._prefix}:{{ledger}}"], [low, high, str(page)])
            for stream_id, items in rows:
                fields = dict(zip(items[2::2], items[3::2], strict=True))
                entries.append(LedgerEntry(items[1], int(stream_id.split("-")[0]), fields))
            if len(rows) < page:
                break
            low = "(" + rows[-1][0]  # exclusive: the next page starts after the last id read
        return entries

    # --- internals ----------------------------------------------------------------------
    def _conn(self) -> Any:
        if self._client is None:
            raise StoreError("RedisStore is not started (call start() first)")
        return self._client

    def _now(self) -> str:
        return "" if self._clock is None else str(int(self._clock() * 1000))

    def _key(self, kind: str, name: str) -> str:
        return f"{self._prefix}:{kind}:{name}"

    def _limit_keys(self, key: str) -> list[str]:
        base = f"{self._prefix}:{{lim:{key}}}"
        return [f"{base}:s", f"{base}:l", f"{base}:a"]

    def _record_keys(self, call_id: str) -> list[str]:
        base = f"{self._prefix}:{{call:{call_id}}}"
        return [f"{base}:r", f"{base}:d"]

    async def _usages(self, limits: Sequence[Limit], batch: int) -> list[tuple[LimitUsage, bool]]:
        """(usage, the limit has state) of each limit: in batches of ``batch`` limits per script
        call on a standalone server, one by one on a cluster (the limits live in other slots)."""
        size = 1 if self._cluster else batch
        result: list[tuple[LimitUsage, bool]] = []
        for start in range(0, len(limits), size):
            group = limits[start : start + size]
            redis_keys = [k for limit in group for k in self._limit_keys(limit.key)]
            args = [self._now()] + [str(v) for limit in group for v in limit.rolling_ms()]
            reply = await self._eval("usage", redis_keys, args)
            for i, limit in enumerate(group):
                usage = LimitUsage(limit.key, int(reply[3 * i]), int(reply[3 * i + 1]))
                result.append((usage, int(reply[3 * i + 2]) == 1))
        return result

    def _record_ttl(self, lease_s: float) -> str:
        return str(int(lease_s * 1000) + self._grace_ms)

    async def _finish(self, call_id: str, mode: str, actual: int) -> bool:
        record = self._record_keys(call_id)
        done_ttl = str(self._grace_ms)
        if self._cluster:
            spec, lease_until = await self._eval("close_record", record, [mode, done_ttl])
            for key, *windows in _parse_spec(spec):
                args = [self._now(), "0", call_id, mode, str(actual), done_ttl, str(lease_until), *windows]
                await self._eval("finish", self._limit_keys(key), args)
            return bool(spec)
        for _ in range(3):  # the record can only change under us if the call is re-reserved
            spec = await self._call("HGET", record[0], "limits")
            if spec is None:
                return False
            limits = _parse_spec(spec)
            keys = record + [k for key, *_ in limits for k in self._limit_keys(key)]
            args = [self._now(), "1", call_id, mode, str(actual), done_ttl, spec]
            args += [w for _, *windows in limits for w in windows]
            status = int(await self._eval("finish", keys, args))
            if status >= 0:
                return status == 1
        raise StoreError(f"reservation {call_id!r} kept changing during {mode}")

    async def _load(self, name: str) -> None:
        if self._fast is not None:  # the connection that runs the scripts (redis-py's may be stale after a restart)
            self._shas[name] = await self._fast.execute("SCRIPT", "LOAD", self._sources[name])
        else:
            self._shas[name] = await self._conn().script_load(self._sources[name])

    async def _eval(self, name: str, keys: Sequence[str], args: Sequence[str | bytes]) -> Any:
        """Run a script by SHA; after a server restart (NOSCRIPT) load it again, once."""
        self._conn()  # not started: StoreError, before the SHA is looked up
        try:
            try:
                return await self._send("EVALSHA", self._shas[name], len(keys), *keys, *args)
            except NoScriptError:
                await self._load(name)
                return await self._send("EVALSHA", self._shas[name], len(keys), *keys, *args)
        except _ERRORS as exc:
            raise StoreError(f"Redis script {name} failed: {exc}", uncertain=_uncertain(exc)) from exc

    async def _call(self, *command: str) -> Any:
        try:
            return await self._send(*command)
        except _ERRORS as exc:
            raise StoreError(f"Redis {command[0]} failed: {exc}", uncertain=_uncertain(exc)) from exc

    async def _send(self, *command: str | bytes | int) -> Any:
        """One command on the pipelined connection, else through redis-py's pool (bounded by
        ``max_connections``); redis errors pass through."""
        client = self._conn()
        if self._fast is not None:
            return await self._fast.execute(*command)
        async with self._in_flight:
            return await client.execute_command(*command)


def _hiredis_packing(connection_class: Any) -> Any:
    """``connection_class`` packing commands with hiredis (C) when it is installed, as redis-py's sync
    client does: its asyncio client packs in Python, a sizeable share of a script call's client CPU
    (the scripts take some thirty arguments)."""
    if not redis.utils.HIREDIS_AVAILABLE:
        return connection_class
    import hiredis

    class HiredisPacking(connection_class):  # type: ignore[misc]
        def pack_command(self, *args: Any) -> list[bytes]:
            if isinstance(args[0], str) and " " in args[0]:  # a command name of two words: as redis-py
                args = tuple(args[0].split()) + args[1:]
            try:
                return [hiredis.pack_command(args)]
            except TypeError:  # an argument hiredis does not take: redis-py's own packing
                return cast(list[bytes], super().pack_command(*args))

    HiredisPacking.__name__ = HiredisPacking.__qualname__ = f"HiredisPacking{connection_class.__name__}"
    return HiredisPacking


def _uncertain(exc: BaseException) -> bool:
    """True when the command may have run although no reply came (``StoreError.uncertain``)."""
    return isinstance(exc, (resp.ReplyLost, RedisTimeoutError, asyncio.TimeoutError))


def _check_amount(amount: int) -> None:
    if amount < 0:
        raise ValueError(f"amount must be >= 0, got {amount}")


def _window_ms(expires_at: float | None) -> str:
    return "0" if expires_at is None else str(int(expires_at * 1000))


def _window_args(limit: Limit) -> list[str]:
    """``[window_end_ms, rolling_window_ms, bucket_ms]`` of a limit, as the scripts take them."""
    window_ms, bucket_ms = limit.rolling_ms()
    return [_window_ms(limit.expires_at), str(window_ms), str(bucket_ms)]


def _cap_args(limit: Limit, window: Sequence[str] | None = None) -> list[str]:
    """``[cap, window_end_ms, rolling_window_ms, bucket_ms]`` (``window``: its ``_window_args``, when known)."""
    return [str(limit.cap), *(_window_args(limit) if window is None else window)]


def _role_args(role: str, windows: Sequence[Sequence[str]]) -> list[str]:
    """``commit_release``'s per-limit arguments: ``[role, window_end_ms, rolling_window_ms, bucket_ms]`` each
    (``windows``: the limits' ``_window_args``)."""
    return [v for window in windows for v in (role, *window)]


def _counter_args(counter: Counter) -> list[str]:
    """``[amount, ttl_ms|'', extend, trip_above|'']`` of a counter, as ``reserve`` takes them."""
    ttl = "" if counter.ttl_s is None else _ms(counter.ttl_s)
    above = "" if counter.trip_above is None else str(counter.trip_above)
    return [str(counter.amount), ttl, "1" if counter.extend else "0", above]


def _spec(limits: Sequence[Limit], windows: Sequence[list[str]] | None = None) -> str:
    """The limits a reservation holds, as stored in its record:
    ``[[key, window_end_ms, rolling_window_ms, bucket_ms], ...]`` (``windows``: the limits'
    ``_window_args``, when the caller has them already)."""
    if windows is None:
        windows = [_window_args(limit) for limit in limits]
    return json.dumps([[limit.key, *window] for limit, window in zip(limits, windows, strict=True)])


def _parse_spec(spec: str) -> list[tuple[str, str, str, str]]:
    """A record's limits; a two-field entry (written before rolling windows existed) is not rolling."""
    result = []
    for item in json.loads(spec) if spec else []:
        key, window, *rolling = (str(v) for v in item)
        window_ms, bucket_ms = rolling if rolling else ("0", "0")
        result.append((key, window, window_ms, bucket_ms))
    return result


def _glob_escape(text: str) -> str:
    """``text`` as a literal inside a Redis MATCH pattern."""
    return "".join("\\" + ch if ch in "\\*?[]" else ch for ch in text)


def _reserve_result(reply: list[Any], limits: Sequence[Limit], counters: int) -> ReserveResult:
    """``reserve.lua``'s reply (the last ``counters`` entries are the counters' values)."""
    counts = tuple(map(int, reply[len(reply) - counters :]))
    status = int(reply[0])
    if status == 4:
        return ReserveResult(ok=False, counts=counts, tripped=int(reply[1]) - 1)
    if status == 3:
        return ReserveResult(ok=False, collision=True, counts=counts)
    if status != 0:
        usages = tuple(
            LimitUsage(limit.key, int(reply[1 + 2 * i]), int(reply[2 + 2 * i])) for i, limit in enumerate(limits)
        )
        return ReserveResult(ok=True, usages=usages, counts=counts)
    limit = limits[int(reply[1]) - 1]
    usage = LimitUsage(limit.key, int(reply[2]), int(reply[3]))
    return ReserveResult(ok=False, denied=usage, denied_cap=limit.cap, counts=counts)
