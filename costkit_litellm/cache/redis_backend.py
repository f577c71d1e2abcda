"""``RedisCache``: the production cache backend, Redis (or Valkey) with the search module, through RedisVL.

The only cache module that imports ``redis`` or ``redisvl``; their errors leave it as ``CacheError``.
RedisVL's index API (``AsyncSearchIndex``, ``VectorQuery``, ``Tag`` filters) does the vector
search. Its ``SemanticCache`` is not used: it connects and creates its index in the constructor
(synchronously), embeds prompts itself (ours are embedded once per request and shared), refreshes
the TTL on every hit, has no entry cap, and keys on the prompt alone.

Layout (``P`` = prefix, ``V`` = ``SCHEMA_VERSION``)::

    P:cache:vV:e:<entry id>   hash    scope, tenant, text, response (JSON), cost, model,
                                      stored_at, vector (float32 bytes; absent: exact-only entry)
    P:cache:vV:order          zset    entry id -> stored_at  (expiry trim and oldest-first eviction)
    P:cache:vV:s:<scope>      string  number of live entries with a vector in the scope (absent: none),
                                      TTL renewed to the cache's with each of them
    P:cache:vV:stats          hash    hit, miss, skip, saved_nano
    P:cache:vV:<algo>:<dims>  index   over P:cache:vV:e:  (scope and tenant TAGs, COSINE vector)

The exact lookup is a plain ``HGETALL`` (no index involved, no embedding needed), pipelined with
an ``EXISTS`` of the scope's marker: a scope without one has no entry to search, so the stage skips
the embedding and the vector query of that miss. One script (``_PUT``) stores an entry and keeps
the count: it uncounts the entry it replaces, counts the new one if it has a vector (renewing the
marker's TTL, so the marker outlives each of the scope's entries), and uncounts each entry it
evicts beyond ``max_entries``; a marker reaching 0 is deleted. ``clear(tenant)`` uncounts each
entry it deletes (``_DROP``, one script per entry, which also checks the tenant); ``clear()``
deletes every marker. So the markers number at most the scopes holding a live entry with a
vector (at most ``max_entries``), plus markers left counting entries that expired by TTL (an
expired hash no longer names its scope, so nothing uncounts it): such a marker costs needless
searches until it expires, ``ttl_s`` after its scope's last store. The markers are shared by
every replica, and one is missing while its scope holds an entry with a vector only for entries
older than the count: a marker holding "1" (code older than the count set it for every entry) is
a count of one, so such a scope may lose it before its last entry is evicted, and entries older
than the marker never had one. They are still served by exact lookups, and by vector lookups
again once their scope gets a new entry: a missing marker misses semantic hits, never answers
wrong. The index is
created on the first vector lookup or store, once per dimension count (taken from the embedder's
vectors); its name carries the schema version, the algorithm and the dimensions, so a flat and an
hnsw index, or two embedders, coexist during a rolling change instead of dropping each other. An
index found under our name with another layout (written by older code) is dropped with its
documents and created again: logged, never a crash. Entries expire with ``EXPIRE`` (fixed, set
once); the order zset is trimmed of expired ids and popped oldest-first beyond ``max_entries``.
Not for Redis Cluster (vector search there needs the coordinator; the scripts also touch keys
they are not passed: a marker and the entries they evict).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any, Final

import numpy as np
import redis.asyncio as aioredis
from redis.exceptions import RedisError
from redisvl.exceptions import RedisVLError
from redisvl.index import AsyncSearchIndex
from redisvl.query import VectorQuery
from redisvl.query.filter import Tag
from redisvl.schema import IndexSchema

from costkit_litellm.cache.scope import CacheEntry, CacheError, CacheStats, Candidate
from costkit_litellm.embeddings import Vectors
from costkit_litellm.redact import mask_url

log = logging.getLogger("costkit.cache")

SCHEMA_VERSION: Final = 1
_ERRORS: Final = (RedisError, RedisVLError, OSError)
_MAX_CONNECTIONS: Final = 64
_RETURN: Final = ["scope", "tenant", "text", "response", "cost", "model", "stored_at", "vector"]

_RELEASE: Final = """
-- the entry at key stops counting in its scope's marker if it has a vector; the marker goes at 0.
-- EXISTS first: a missing marker (lost to clear(), or expired early under a shorter ttl_s) is not
-- written at all (a DECR would make it -1, deleted at once).
local function release(key, marker_prefix)
  if redis.call('HEXISTS', key, 'vector') == 0 then return end
  local scope = redis.call('HGET', key, 'scope')
  if not scope then return end
  local marker = marker_prefix .. scope
  if redis.call('EXISTS', marker) == 1 and redis.call('DECR', marker) <= 0 then
    redis.call('DEL', marker)
  end
end
"""
_PUT: Final = (
    _RELEASE
    + """
-- KEYS: entry, order zset, the entry's scope marker. ARGV: entry prefix, marker prefix, ttl_s,
-- expiry cutoff, max_entries, entry id, stored_at, "1" if the entry has a vector, field, value...
-- Returns how many entries were evicted.
local entry, order, marker = KEYS[1], KEYS[2], KEYS[3]
local entry_prefix, marker_prefix, ttl = ARGV[1], ARGV[2], ARGV[3]
release(entry, marker_prefix)  -- a replaced entry stops counting (and must not keep its old vector)
redis.call('DEL', entry)
redis.call('HSET', entry, unpack(ARGV, 9))
redis.call('EXPIRE', entry, ttl)
redis.call('ZADD', order, ARGV[7], ARGV[6])
if ARGV[8] == '1' then  -- renewed: the marker outlives each of the scope's entries
  redis.call('INCR', marker)
  redis.call('EXPIRE', marker, ttl)
end
redis.call('ZREMRANGEBYSCORE', order, '-inf', ARGV[4])
local excess = redis.call('ZCARD', order) - tonumber(ARGV[5])
local evicted = 0
if excess > 0 then
  local popped = redis.call('ZPOPMIN', order, excess)
  for i = 1, #popped, 2 do
    local key = entry_prefix .. popped[i]
    release(key, marker_prefix)
    evicted = evicted + redis.call('UNLINK', key)
  end
end
return evicted
"""
)
_DROP: Final = (
    _RELEASE
    + """
-- KEYS: entry, order zset. ARGV: marker prefix, entry id, tenant. Deletes the entry if it is the
-- tenant's, uncounting it from its scope's marker; returns 1 if it did.
if (redis.call('HGET', KEYS[1], 'tenant') or '') ~= ARGV[3] then return 0 end
release(KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[2])
return redis.call('UNLINK', KEYS[1])
"""
)


def _text(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


class RedisCache:
    """Cache entries in Redis with vector search; any number of replicas share them."""

    name = "redis"

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "costkit",
        ttl_s: int,
        max_entries: int,
        algorithm: str = "flat",
        timeout_s: float = 0.5,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if algorithm not in ("flat", "hnsw"):
            raise ValueError(f"unknown index algorithm {algorithm!r}; use flat or hnsw")
        self._url = url
        self._root = f"{prefix}:cache:v{SCHEMA_VERSION}"
        self._entry_prefix = f"{self._root}:e:"
        self._order = f"{self._root}:order"
        self._stats = f"{self._root}:stats"
        self._marker_prefix = f"{self._root}:s:"
        self._ttl = int(ttl_s)
        self._max = max_entries
        self._algorithm = algorithm
        self._timeout = timeout_s
        self._clock = clock
        self._client: Any = None
        self._put_script: Any = None
        self._drop_script: Any = None
        # redis-py's async pool raises when exhausted; queue excess commands here instead.
        self._in_flight = asyncio.Semaphore(_MAX_CONNECTIONS)
        self._indexes: dict[int, AsyncSearchIndex] = {}
        self._index_lock = asyncio.Lock()

    def index_name(self, dims: int) -> str:
        """The index for vectors of ``dims`` dimensions under this backend's algorithm."""
        return f"{self._root}:{self._algorithm}:{dims}"

    def _key(self, entry_id: str) -> str:
        return self._entry_prefix + entry_id

    def _fail(self, operation: str, exc: BaseException) -> CacheError:
        return CacheError(f"cache {operation} on {mask_url(self._url)} failed: {exc}")

    # --- lifecycle ----------------------------------------------------------------------
    async def start(self) -> None:
        """Create the client (connections open on first command)."""
        if self._client is None:
            self._client = aioredis.Redis.from_url(
                self._url,
                decode_responses=False,  # vectors come back as raw float32 bytes
                socket_timeout=self._timeout,
                socket_connect_timeout=self._timeout,
                max_connections=_MAX_CONNECTIONS,
            )
            # AsyncScript: EVALSHA, loading the script again after NOSCRIPT (a restarted server)
            self._put_script = self._client.register_script(_PUT)
            self._drop_script = self._client.register_script(_DROP)

    async def close(self) -> None:
        """Close the client; the indexes share it and are forgotten."""
        client, self._client = self._client, None
        self._indexes.clear()
        if client is not None:
            with contextlib.suppress(*_ERRORS):
                await client.aclose()

    async def check_search(self) -> None:
        """Connect and check the server has the search module (``FT._LIST``); raise ``CacheError`` saying which."""
        client = await self._redis()
        try:
            await client.ping()
        except _ERRORS as exc:
            raise CacheError(f"cannot connect to {mask_url(self._url)} ({exc})") from None
        try:
            await client.execute_command("FT._LIST")
        except _ERRORS as exc:
            raise CacheError(
                f"{mask_url(self._url)} has no search module (FT._LIST: {exc}); the semantic cache needs "
                "Redis Stack, Redis 8, or valkey with valkey-search / RediSearch"
            ) from None

    async def _redis(self) -> Any:
        if self._client is None:
            await self.start()
        return self._client

    # --- the index ----------------------------------------------------------------------
    def schema(self, dims: int) -> IndexSchema:
        """The versioned index schema for ``dims``-dimensional vectors."""
        vector: dict[str, Any] = {"dims": dims, "algorithm": self._algorithm, "distance_metric": "cosine"}
        vector["datatype"] = "float32"
        return IndexSchema.from_dict(
            {
                "index": {"name": self.index_name(dims), "prefix": self._entry_prefix, "storage_type": "hash"},
                "fields": [
                    {"name": "scope", "type": "tag"},
                    {"name": "tenant", "type": "tag"},
                    {"name": "vector", "type": "vector", "attrs": vector},
                ],
            }
        )

    @staticmethod
    def _layout(schema: IndexSchema) -> dict[str, Any]:
        """What must match for an existing index to be ours: prefix, storage, fields, vector attributes."""
        raw = schema.to_dict()
        fields: dict[str, Any] = {}
        for item in raw["fields"]:
            attrs = item.get("attrs") or {}
            if item["type"] == "vector":
                keep = ("dims", "algorithm", "distance_metric", "datatype")
                fields[item["name"]] = ("vector", tuple(str(attrs.get(k)).lower() for k in keep))
            else:
                fields[item["name"]] = (item["type"], ())
        prefix = raw["index"].get("prefix")
        prefixes = tuple(prefix) if isinstance(prefix, list) else (prefix,)
        return {"prefixes": prefixes, "storage": str(raw["index"].get("storage_type")).lower(), "fields": fields}

    async def _index(self, dims: int) -> AsyncSearchIndex:
        index = self._indexes.get(dims)
        if index is not None:
            return index
        async with self._index_lock:
            if dims not in self._indexes:
                self._indexes[dims] = await self._ensure_index(dims)
        return self._indexes[dims]

    async def _ensure_index(self, dims: int) -> AsyncSearchIndex:
        client = await self._redis()
        wanted = self.schema(dims)
        index = AsyncSearchIndex(wanted, redis_client=client, owns_client=False)
        if await index.exists():
            try:
                existing = await AsyncSearchIndex.from_existing(wanted.index.name, redis_client=client)
                found: dict[str, Any] | None = self._layout(existing.schema)
            except (RedisVLError, ValueError, KeyError, TypeError) as exc:  # unreadable: treat as foreign
                log.debug("costkit: cannot read cache index %s: %s", wanted.index.name, exc)
                found = None
            if found == self._layout(wanted):
                return index
            log.warning(
                "costkit: cache index %s has another layout (%s); dropping it with its entries and creating it again",
                wanted.index.name,
                found,
            )
            await index.delete(drop=True)
        await index.create(overwrite=False)
        return index

    # --- entries ------------------------------------------------------------------------
    def _entry(self, entry_id: str, raw: Mapping[Any, Any]) -> CacheEntry | None:
        fields = {_text(k): v for k, v in raw.items()}
        if "response" not in fields or "scope" not in fields:
            return None  # expired or half-written
        vector_bytes = fields.get("vector")
        vector = np.frombuffer(vector_bytes, dtype=np.float32).copy() if isinstance(vector_bytes, bytes) else None
        cost = fields.get("cost")
        return CacheEntry(
            entry_id=entry_id,
            scope=_text(fields["scope"]),
            tenant=_text(fields.get("tenant", "")),
            text=_text(fields.get("text", "")),
            response=json.loads(_text(fields["response"])),
            cost_nano=int(_text(cost)) if cost not in (None, b"", "") else None,
            model=_text(fields.get("model", "")),
            stored_at=float(_text(fields.get("stored_at", "0"))),
            vector=vector,
        )

    async def get(self, entry_id: str) -> CacheEntry | None:
        """``HGETALL`` of the entry's key (expired entries are gone: Redis expired them)."""
        try:
            async with self._in_flight:
                raw = await (await self._redis()).hgetall(self._key(entry_id))
        except _ERRORS as exc:
            raise self._fail("get", exc) from exc
        return self._entry(entry_id, raw) if raw else None

    async def lookup(self, entry_id: str, scope: str) -> tuple[CacheEntry | None, bool]:
        """``HGETALL`` of the entry and ``EXISTS`` of the scope's marker, pipelined (one round trip)."""
        try:
            client = await self._redis()
            async with self._in_flight, client.pipeline(transaction=False) as pipe:
                pipe.hgetall(self._key(entry_id))
                pipe.exists(self._marker_prefix + scope)
                raw, marked = await pipe.execute()
        except _ERRORS as exc:
            raise self._fail("get", exc) from exc
        return (self._entry(entry_id, raw) if raw else None), bool(marked)

    async def search(self, scope: str, vector: Vectors, k: int, min_similarity: float) -> list[Candidate]:
        """KNN within the scope (a TAG filter), keeping candidates at or above ``min_similarity``."""
        query_vector = np.asarray(vector, dtype=np.float32).reshape(-1)
        try:
            index = await self._index(int(query_vector.shape[0]))
            query = VectorQuery(
                vector=query_vector.tobytes(),
                vector_field_name="vector",
                filter_expression=Tag("scope") == scope,
                num_results=k,
                dtype="float32",
                return_score=True,
            )
            query.return_fields(*_RETURN, "vector_distance", skip_decode=["vector"])
            async with self._in_flight:
                rows = await index.query(query)
        except _ERRORS as exc:
            self._indexes.clear()  # a restarted (empty) Redis needs the index again
            raise self._fail("search", exc) from exc
        found = []
        for row in rows:
            similarity = 1.0 - float(row["vector_distance"])
            entry_id = _text(row["id"])[len(self._entry_prefix) :]
            entry = self._entry(entry_id, row)
            if entry is not None and entry.scope == scope and similarity >= min_similarity:
                found.append(Candidate(entry, similarity))
        found.sort(key=lambda c: -c.similarity)
        return found

    async def put(self, entry: CacheEntry) -> None:
        """Write the hash with its fixed TTL, count it in its scope's marker and evict the oldest beyond
        the cap: one script (``_PUT``), after creating the index for a vector."""
        fields: list[Any] = [
            "scope", entry.scope,
            "tenant", entry.tenant,
            "text", entry.text,
            "response", json.dumps(entry.response, separators=(",", ":"), default=str),
            "cost", "" if entry.cost_nano is None else str(entry.cost_nano),
            "model", entry.model,
            "stored_at", repr(entry.stored_at),
        ]  # fmt: skip
        if entry.vector is not None:
            fields += ["vector", np.asarray(entry.vector, dtype=np.float32).reshape(-1).tobytes()]
        try:
            if entry.vector is not None:
                await self._index(len(fields[-1]) // 4)
            client = await self._redis()
            keys = [self._key(entry.entry_id), self._order, self._marker_prefix + entry.scope]
            args = [
                self._entry_prefix,
                self._marker_prefix,
                str(self._ttl),
                repr(self._clock() - self._ttl),
                str(self._max),
                entry.entry_id,
                repr(entry.stored_at),
                "0" if entry.vector is None else "1",
                *fields,
            ]
            async with self._in_flight:
                await self._put_script(keys=keys, args=args, client=client)
        except _ERRORS as exc:
            self._indexes.clear()
            raise self._fail("put", exc) from exc

    # --- stats and admin ----------------------------------------------------------------
    async def count(self, status: str, saved_nano: int = 0) -> None:
        """``HINCRBY`` the result (and the dollars saved) in the shared stats hash."""
        try:
            client = await self._redis()
            async with self._in_flight, client.pipeline(transaction=False) as pipe:
                pipe.hincrby(self._stats, status, 1)
                if saved_nano:
                    pipe.hincrby(self._stats, "saved_nano", saved_nano)
                await pipe.execute()
        except _ERRORS as exc:
            raise self._fail("count", exc) from exc

    async def stats(self) -> CacheStats:
        """Live entries (the order zset, trimmed of expired ids) and the shared counters."""
        try:
            client = await self._redis()
            await client.zremrangebyscore(self._order, "-inf", self._clock() - self._ttl)
            entries = await client.zcard(self._order)
            raw = await client.hgetall(self._stats)
        except _ERRORS as exc:
            raise self._fail("stats", exc) from exc
        counts = {_text(k): int(v) for k, v in raw.items()}
        return CacheStats(
            backend=self.name,
            entries=int(entries),
            hits=counts.get("hit", 0),
            misses=counts.get("miss", 0),
            skips=counts.get("skip", 0),
            saved_nano=counts.get("saved_nano", 0),
        )

    async def clear(self, tenant: str | None = None) -> int:
        """Delete every entry (SCAN over the entry keys) and every marker, or one tenant's entries, each
        uncounted from its scope's marker by one script (``_DROP``) that checks the tenant first."""
        removed = 0
        try:
            client = await self._redis()
            async for key in client.scan_iter(match=f"{self._entry_prefix}*", count=500):
                entry_id = _text(key)[len(self._entry_prefix) :]
                if tenant is not None:
                    args = [self._marker_prefix, entry_id, tenant]
                    removed += int(await self._drop_script(keys=[key, self._order], args=args, client=client))
                    continue
                removed += await client.unlink(key)
                await client.zrem(self._order, entry_id)
            if tenant is None:
                await client.delete(self._order)
                async for key in client.scan_iter(match=f"{self._marker_prefix}*", count=500):
                    await client.unlink(key)
        except _ERRORS as exc:
            raise self._fail("clear", exc) from exc
        return removed
