"""The cache stage: answer deterministic repeats and verified paraphrases from the cache, at $0.

Before the call: not cacheable -> ``x-costkit-cache: skip`` (reason in the state), decided from
the request alone, before any embedding. Else the exact key (no embedding needed; the same round
trip tells whether the scope holds any entry with a vector), then, in a scope that does, the
``top_k`` most similar entries, each checked by the ``Verifier`` (guards and pair classifier),
most similar first. A hit raises
``RequestAnswered`` with the stored response, ``x-costkit-cache: hit`` and the similarity, and the
cost of the original call as the saving; the adapter answers it at $0 without a provider call.
A miss is marked ``x-costkit-cache: miss``; its keys and vector wait in a small in-process map
(by call id) for the outcome, and a successful answer is stored with what it cost. A miss in an
empty scope (the common miss: a new tenant, conversation or parameter set) answers without
waiting for an embedding: the vector the entry will be stored with is computed meanwhile, in the
embedder's worker thread, while the provider answers.

Fail open: a backend or embedder error is logged, counted (``costkit_store_errors_total
{operation="cache"}``) and the request goes on with ``skip``; after an error the backend is left
alone for ``BACKOFF_S`` so an outage costs no latency. Results are counted for ``costkit cache
stats`` off the request path.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from typing import Any

from costkit_litellm.accounting.metrics import CostKitMetrics
from costkit_litellm.cache.config import CacheConfig
from costkit_litellm.cache.memory import MemoryCache
from costkit_litellm.cache.scope import (
    CacheBackend,
    CacheEntry,
    CacheError,
    CacheKeys,
    CacheStats,
    decide,
    parse_tenant,
)
from costkit_litellm.cache.verify import PairModelError, Verifier
from costkit_litellm.embeddings import Embedder, Vectors
from costkit_litellm.errors import ConfigError, RequestAnswered
from costkit_litellm.pipeline import Admission, Outcome
from costkit_litellm.pricing import Pricing

log = logging.getLogger("costkit.cache")

HEADER_CACHE = "x-costkit-cache"
HEADER_SIMILARITY = "x-costkit-cache-similarity"
HEADER_MATCH = "x-costkit-cache-match"
"""``exact`` or ``semantic`` on a hit."""
STATE_KEY = "cache"
CACHED_ENDPOINTS = frozenset({"chat"})
"""The only endpoint the cache answers (chat completions); every other call type passes, marked ``skip``."""
"""``Admission.state[STATE_KEY]["status"]`` is ``miss`` or ``skip`` (hits are answered before the call)."""
BACKOFF_S = 2.0
PENDING_MAX = 10_000
MAX_BACKGROUND = 1_000
_STORABLE_FINISH = frozenset({"stop", "length", None})


_EMPTY_SCOPE = object()
"""``_lookup``'s answer for a scope with nothing to search (a miss, no embedding needed)."""


@dataclass(frozen=True, slots=True)
class _Pending:
    keys: CacheKeys
    vector: Vectors | None
    expires: float
    embedding: asyncio.Future[Vectors | None] | None = None
    """The vector being computed after an empty-scope miss (None: ``vector`` is all there is)."""


def make_backend(config: CacheConfig, store_url: str | None, prefix: str) -> CacheBackend:
    """The configured backend, not started: Redis for ``redis`` (or ``auto`` with a URL), else in process."""
    if config.backend == "redis" and not store_url:
        raise ConfigError(["costkit.cache.backend: 'redis' needs costkit.redis_url (or use auto / memory)"])
    if config.backend == "memory" or not store_url:
        return MemoryCache(config.ttl_s, config.max_entries)
    from costkit_litellm.cache.redis_backend import RedisCache

    return RedisCache(
        store_url,
        prefix=prefix,
        ttl_s=config.ttl_s,
        max_entries=config.max_entries,
        algorithm=config.index,
        timeout_s=config.timeout_s,
    )


def _storable(response: Mapping[str, Any] | None) -> bool:
    """A complete answer worth serving again: choices with content or tool calls, no content filter."""
    choices = response.get("choices") if response is not None else None
    if not isinstance(choices, list) or not choices:
        return False
    for choice in choices:
        message = choice.get("message") if isinstance(choice, Mapping) else None
        finish = choice.get("finish_reason") if isinstance(choice, Mapping) else None
        if not isinstance(message, Mapping) or not (finish is None or isinstance(finish, str)):
            return False
        if finish not in _STORABLE_FINISH:
            return False
        if not message.get("content") and not message.get("tool_calls"):
            return False
    return True


def _retrieve(task: asyncio.Future[Any]) -> None:
    """Mark a background embedding's error as seen (``on_outcome`` logs it, or nobody needs it)."""
    if not task.cancelled():
        task.exception()


def _content(response: Mapping[str, Any]) -> str:
    try:
        return str(response["choices"][0]["message"].get("content") or "")
    except (KeyError, IndexError, TypeError, AttributeError):
        return ""


class CacheStage:
    """Exact and verified semantic hits within a scope; stores successful misses."""

    name = "cache"

    def __init__(
        self,
        config: CacheConfig,
        *,
        store_url: str | None,
        prefix: str,
        embedder: Callable[[], Embedder],
        metrics: CostKitMetrics | None = None,
        pricing: Callable[[], Pricing] | None = None,
        backend: CacheBackend | None = None,
        verifier: Verifier | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.backend = backend or make_backend(config, store_url, prefix)
        if verifier is None:
            try:  # reads the shipped pair model: a broken install fails at start-up, not per request
                verifier = Verifier(config.verifier_settings())
            except (PairModelError, ValueError) as exc:
                raise ConfigError([f"costkit.cache.verify: {exc}"]) from None
        self.verifier = verifier
        self._embedder = embedder
        self._metrics = metrics
        self._pricing = pricing
        self._clock = clock
        self._pending: OrderedDict[str, _Pending] = OrderedDict()
        self._down_until = float("-inf")
        self._background: set[asyncio.Task[None]] = set()

    @property
    def min_similarity(self) -> float:
        """The cosine similarity a candidate needs before it is even verified."""
        return float(self.verifier.similarity_threshold)

    # --- before the call ----------------------------------------------------------------
    async def on_request(self, admission: Admission) -> None:
        """Skip, answer from the cache (raises ``RequestAnswered``), or mark a miss to store after the call."""
        if admission.context.endpoint not in CACHED_ENDPOINTS:  # other endpoints pass untouched
            self._mark(admission, "skip", "endpoint")
            return
        model = admission.model or admission.context.model
        decision = decide(admission.context, admission.messages, model, self.config, self.config.embedding_model)
        keys = decision.keys
        if keys is None:
            self._mark(admission, "skip", decision.skip)
            return
        if time.monotonic() < self._down_until:
            self._mark(admission, "skip", "unavailable")
            return
        try:
            found = await self._lookup(admission, keys)
        except Exception as exc:  # fail open: the cache never fails a request
            self._failed("lookup", exc)
            self._mark(admission, "skip", "error")
            return
        if isinstance(found, tuple):
            entry, similarity, match = found
            headers = {
                **admission.headers,
                HEADER_CACHE: "hit",
                HEADER_SIMILARITY: f"{similarity:.3f}",
                HEADER_MATCH: match,
            }
            raise RequestAnswered(
                _content(entry.response),
                "cache_hit",
                response=entry.response,
                headers=headers,
                cache_hit=True,
                saved_nano=entry.cost_nano,
            )
        empty = found is _EMPTY_SCOPE
        self._mark(admission, "miss", found if isinstance(found, str) else None)
        call_id = admission.context.call_id
        if call_id is not None:
            vector = admission.vectors.get(self.config.embedding_model)
            embedding = self._embed_later(admission) if empty and vector is None else None
            self._remember(call_id, _Pending(keys, vector, self._clock() + self.config.ttl_s, embedding))

    async def _lookup(
        self, admission: Admission, keys: CacheKeys
    ) -> tuple[CacheEntry, float, str] | str | object | None:
        """The hit (entry, similarity, match kind), the reason of the last refusal (None: no candidate),
        or ``_EMPTY_SCOPE`` when the scope has nothing to search (then nothing was embedded)."""
        entry, searchable = await self.backend.lookup(keys.entry_id, keys.scope)
        if entry is not None and entry.scope == keys.scope and entry.text == keys.text:
            return entry, 1.0, "exact"
        if len(keys.text) > self.config.max_semantic_chars:
            return "too_long"
        if not searchable and self.config.embedding_model not in admission.vectors:
            return _EMPTY_SCOPE
        vector = await admission.last_user_vector(self._embedder())
        if vector is None:
            return None
        refused: str | None = None
        for candidate in await self.backend.search(keys.scope, vector, self.config.top_k, self.min_similarity):
            cached = candidate.entry
            if cached.vector is None or cached.scope != keys.scope:
                continue
            verdict = self.verifier.verify(keys.text, vector, cached.text, cached.vector)
            if verdict.ok:
                return cached, verdict.similarity, "semantic"
            refused = refused or verdict.reason
        return refused

    def _embed_later(self, admission: Admission) -> asyncio.Future[Vectors | None] | None:
        """Start computing the request's vector (for storing its answer) without waiting for it."""
        try:
            embedder = self._embedder()
        except Exception as exc:  # no embedder: the answer is stored for exact lookups only
            self._failed("embed", exc)
            return None
        task = asyncio.ensure_future(admission.last_user_vector(embedder))
        task.add_done_callback(_retrieve)
        return task

    def _mark(self, admission: Admission, status: str, reason: str | None) -> None:
        admission.headers[HEADER_CACHE] = status
        state: dict[str, Any] = {"status": status}
        if reason is not None:
            state["reason"] = reason
        admission.state[STATE_KEY] = state

    def _remember(self, call_id: str, pending: _Pending) -> None:
        now = self._clock()
        while self._pending and (len(self._pending) >= PENDING_MAX or next(iter(self._pending.values())).expires < now):
            self._pending.popitem(last=False)
        self._pending[call_id] = pending

    # --- after the call -----------------------------------------------------------------
    async def on_outcome(self, outcome: Outcome) -> None:
        """Count the result; store a successful miss with what it cost."""
        if outcome.kind == "failure" and not outcome.final:
            return  # a retry or a fallback may still answer: the request's end is counted (and stored)
        if outcome.cache_hit and outcome.saved_source == "cache":
            self._count("hit", int(outcome.saved or 0))
            return
        state = outcome.state.get(STATE_KEY)
        status = state.get("status") if isinstance(state, Mapping) else None
        if status not in ("miss", "skip"):
            return
        self._count(str(status))
        call_id = outcome.context.call_id
        pending = self._pending.pop(call_id, None) if call_id is not None else None
        if pending is None:
            return
        if (
            status != "miss"
            or outcome.kind != "success"
            or outcome.cache_hit
            or not _storable(outcome.response)
            # served by another group than the one its keys name (a budget's downgrade, a fallback):
            # stored under those keys, it would answer requests for a model that never wrote it
            or (outcome.model and outcome.model != pending.keys.model)
        ):
            if pending.embedding is not None:
                pending.embedding.cancel()
            return
        if outcome.response is None:
            return
        vector = pending.vector
        if vector is None and pending.embedding is not None:
            try:
                vector = await pending.embedding
            except Exception as exc:  # stored for exact lookups only
                self._failed("embed", exc)
        keys = pending.keys
        entry = CacheEntry(
            entry_id=keys.entry_id,
            scope=keys.scope,
            tenant=keys.tenant,
            text=keys.text,
            response=dict(outcome.response),
            cost_nano=self._cost(outcome),
            model=keys.model,
            stored_at=self._clock(),
            vector=vector,
        )
        try:
            await self.backend.put(entry)
        except Exception as exc:  # never raise from on_outcome
            self._failed("store", exc)

    def _cost(self, outcome: Outcome) -> int | None:
        if outcome.cost is not None:
            return int(outcome.cost)
        pricing = self._pricing() if self._pricing is not None else None
        price = pricing.price(outcome.model, outcome.deployment_model) if pricing is not None else None
        return int(price.cost(outcome.prompt_tokens, outcome.completion_tokens)) if price is not None else None

    def _count(self, status: str, saved_nano: int = 0) -> None:
        """Count for ``stats`` without holding up the request (the hit's answer waits on nothing)."""
        if len(self._background) >= MAX_BACKGROUND:
            return
        self._spawn(self._count_now(status, saved_nano))

    async def _count_now(self, status: str, saved_nano: int) -> None:
        if time.monotonic() < self._down_until:
            return
        try:
            await self.backend.count(status, saved_nano)
        except Exception as exc:
            self._failed("count", exc)

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _failed(self, operation: str, exc: BaseException) -> None:
        if operation == "lookup":  # a slow store after the answer must not turn lookups off
            self._down_until = time.monotonic() + BACKOFF_S
        if self._metrics is not None:
            self._metrics.store_error("cache")
        if isinstance(exc, CacheError):
            log.warning("costkit: cache %s failed (fail open: requests go on with skip): %s", operation, exc)
        else:
            log.warning("costkit: cache %s failed (fail open: requests go on with skip)", operation, exc_info=exc)

    # --- the CLI ------------------------------------------------------------------------
    async def stats(self) -> CacheStats:
        """Entries, hits, misses, skips and dollars saved (shared across replicas on Redis)."""
        return await self.backend.stats()

    async def clear(self, scope: str | None = None) -> int:
        """Remove every entry, or a tenant's (``global``, ``team:<id>``, ``user:<id>``...); returns the count."""
        return await self.backend.clear(parse_tenant(scope) if scope is not None else None)

    async def close(self) -> None:
        """Let pending counts finish, then release the backend."""
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
        await self.backend.close()
