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
    P:cache:vV:s:<scope>      string  "1" while the scope may hold an entry with a vector: set with
                                      every such entry, in the same transaction, for the same TTL
    P:cache:vV:stats          hash    hit, miss, skip, saved_nano
    P:cache:vV:<algo>:<dims>  index   over P:cache:vV:e:  (scope and tenant TAGs, COSINE vector)

The exact lookup is a plain ``HGETALL`` (no index involved, no embedding needed), pipelined with
an ``EXISTS`` of the scope's marker: a scope without one has no entry to search, so the stage skips
the embedding and the vector query of that miss. The marker's TTL is renewed by every store in the
scope, so it outlives each of the scope's entries: a missing marker is never wrong, across any
number of replicas; a marker whose entries were evicted or cleared only costs one needless search.
Entries written by code older than the marker are served by exact lookups, and by vector lookups
again once their scope gets a new entry. The index is
created on the first vector lookup or store, once per dimension count (taken from the embedder's
vectors); its name carries the schema version, the algorithm and the dimensions, so a flat and an
hnsw index, or two embedders, coexist during a rolling change instead of dropping each other. An
index found under our name with another layout (written by older code) is dropped with its
documents and created again: logged, never a crash. Entries expire with ``EXPIRE`` (fixed, set
once); the order zset is trimmed of expired ids and popped oldest-first beyond ``max_entries``.
Not for Redis Cluster (vector search there needs the coordinator).
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
        """Write the hash with its fixed TTL and index it; then evict the oldest beyond the cap."""
        mapping: dict[str, Any] = {
            "scope": entry.scope,
            "tenant": entry.tenant,
            "text": entry.text,
            "response": json.dumps(entry.response, separators=(",", ":"), default=str),
            "cost": "" if entry.cost_nano is None else str(entry.cost_nano),
            "model": entry.model,
            "stored_at": repr(entry.stored_at),
        }
        if entry.vector is not None:
            vector = np.asarray(entry.vector, dtype=np.float32).reshape(-1)
            mapping["vector"] = vector.tobytes()
        key = self._key(entry.entry_id)
        try:
            if entry.vector is not None:
                await self._index(len(mapping["vector"]) // 4)
            client = await self._redis()
            async with self._in_flight, client.pipeline(transaction=True) as pipe:
                pipe.delete(key)  # a replaced entry must not keep the old vector
                pipe.hset(key, mapping=mapping)
                pipe.expire(key, self._ttl)
                pipe.zadd(self._order, {entry.entry_id: entry.stored_at})
                if entry.vector is not None:  # the scope has something to search, for as long as this entry
                    pipe.set(self._marker_prefix + entry.scope, b"1", ex=self._ttl)
                pipe.zremrangebyscore(self._order, "-inf", self._clock() - self._ttl)
                pipe.zcard(self._order)
                *_, size = await pipe.execute()
            if size > self._max:
                async with self._in_flight:
                    evicted = await client.zpopmin(self._order, size - self._max)
                    if evicted:
                        await client.unlink(*(self._key(_text(member)) for member, _ in evicted))
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
        """Delete every entry (SCAN over the entry keys), or those of one tenant."""
        removed = 0
        try:
            client = await self._redis()
            async for key in client.scan_iter(match=f"{self._entry_prefix}*", count=500):
                if tenant is not None and _text(await client.hget(key, "tenant") or b"") != tenant:
                    continue
                removed += await client.unlink(key)
                await client.zrem(self._order, _text(key)[len(self._entry_prefix) :])
            if tenant is None:
                await client.delete(self._order)
                async for key in client.scan_iter(match=f"{self._marker_prefix}*", count=500):
                    await client.unlink(key)
        except _ERRORS as exc:
            raise self._fail("clear", exc) from exc
        return removed
