"""What may be cached, and under which keys: pure rules, plus the types every cache backend shares.

A request is cacheable only when its answer is a function of the request: ``temperature: 0``
sent explicitly (an omitted temperature is 1.0 at OpenAI), one choice, no tools (unless allowed),
not streamed (a hit is never replayed as a stream: streaming requests are skipped), no client
opt-out, text-only last user message, and a value for the tenant scope. Otherwise the decision is
a ``skip`` with a short reason (a bounded set, fit for logs and tests).

Keys (hex SHA-256, never raw text)::

    tenant   = H(scope name, scope value)                          e.g. team "t-42"
    scope    = H(tenant, model group, embedder, every request      every entry lives in one scope;
               parameter but UNKEYED_PARAMS, the conversation       lookups never leave it
               without its last user message)
    entry id = H(scope, last user message)                         the exact key

The conversation context (system prompt, earlier turns, anything after the last user message)
is part of the scope, so "and in French?" after two different questions never shares an answer.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from costkit_litellm.cache.config import CacheConfig
from costkit_litellm.context import RequestContext
from costkit_litellm.embeddings import Vectors
from costkit_litellm.errors import CostKitError

KEY_VERSION = "3"
"""Bumped when the key derivation changes: old entries then simply stop matching."""

UNKEYED_PARAMS = frozenset(
    {
        "user", "metadata", "litellm_metadata", "tags", "stream", "stream_options", "timeout",
        "request_timeout", "extra_headers", "num_retries", "max_retries", "store", "session_id",
        "litellm_session_id", "litellm_trace_id", "cache", "ttl",
    }
)  # fmt: skip
"""Request parameters known not to change the answer, left out of the cache scope: who asked
(``user``, ``metadata``, ``tags``, session and trace ids), how it is delivered (``stream``: a stream
is never cached; ``stream_options``), how long and how often to try (``timeout``, ``request_timeout``,
``num_retries``, ``max_retries``), ``extra_headers``, OpenAI's ``store`` (keep the completion for
distillation) and LiteLLM's own cache controls (``cache``, ``ttl``). Every other parameter, known or
not, is part of the scope (``logit_bias``, penalties, ``reasoning_effort``, ``logprobs``,
``service_tier``, ``prediction``, ``fallbacks``...). ``messages`` and ``model`` are keyed apart."""
PROXY_FIELDS = frozenset(
    {
        "messages", "model", "proxy_server_request", "secret_fields", "litellm_call_id",
        "litellm_logging_obj", "client_side_timeout",
    }
)  # fmt: skip
"""What LiteLLM's proxy adds to a request (plumbing, not parameters), and what the scope keys apart."""

SKIP_REASONS = (
    "disabled_by_client",
    "unreadable_params",
    "stream",
    "n",
    "temperature",
    "tools",
    "model_group",
    "no_user_message",
    "non_text_content",
    "no_scope_value",
)
_LAST_USER = "\x00costkit:last-user\x00"


class CacheError(CostKitError):
    """The cache backend failed (the stage logs it and answers ``skip``: a cache error never fails a request)."""


# --------------------------------------------------------------------------- decisions


@dataclass(frozen=True, slots=True)
class CacheKeys:
    """Where a cacheable request is looked up and stored."""

    scope: str
    tenant: str
    entry_id: str
    text: str
    """The last user message (stripped): what is embedded and verified."""
    model: str


@dataclass(frozen=True, slots=True)
class Decision:
    """Either the keys of a cacheable request or the reason it is skipped."""

    keys: CacheKeys | None = None
    skip: str | None = None


def _digest(*parts: str) -> str:
    hasher = hashlib.sha256()
    for part in parts:
        hasher.update(part.encode("utf-8", "surrogatepass"))
        hasher.update(b"\x1f")
    return hasher.hexdigest()


_CLIENT_NAMED = frozenset({"user", "end_user"})
"""Cache scopes whose value a client may assert (metadata.user_id, OpenAI's ``user``)."""


def tenant_tag(scope: str, value: str) -> str:
    """The tenant of an entry: ``scope`` (``team``...) and its value, hashed (``costkit cache clear --scope``)."""
    return _digest("tenant", scope, value)[:32]


def parse_tenant(spec: str) -> str:
    """``global`` or ``<scope>:<value>`` (``team:t-42``, ``user:alice``) as a tenant tag; ValueError if malformed."""
    if spec == "global":
        return tenant_tag("global", "*")
    scope, sep, value = spec.partition(":")
    if not sep or not value or scope not in ("team", "api_key", "user", "end_user"):
        raise ValueError(f"{spec!r} is not a cache scope: use global or team:, api_key:, user:, end_user:<value>")
    return tenant_tag(scope, value)


def _clean(value: Any) -> Any:
    """A message without empty fields, so ``{"name": None}`` and no ``name`` hash alike."""
    if isinstance(value, Mapping):
        return {str(k): _clean(v) for k, v in value.items() if v not in (None, "", [], {})}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def _numbers(value: Any) -> Any:
    """Integral floats as ints (``temperature: 0.0`` and ``0`` are one value), inside lists and objects too."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, Mapping):
        return {k: _numbers(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_numbers(v) for v in value]
    return value


def keyed_params(params: Mapping[str, Any]) -> str:
    """Every request parameter but the allow-list, canonical (empty values dropped); raises ``ValueError``
    when they cannot be written (nested too deep)."""
    keyed = {k: v for k, v in params.items() if k not in UNKEYED_PARAMS and k not in PROXY_FIELDS}
    try:
        return _canonical(_numbers(_clean(keyed)))
    except RecursionError:
        raise ValueError("request parameters nested too deep to key") from None


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def _last_user(messages: Sequence[Any]) -> tuple[int, str | None]:
    """Index and text of the last user message; text None when it has non-text parts."""
    for index in range(len(messages) - 1, -1, -1):
        message = messages[index]
        if isinstance(message, Mapping) and message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, str):
                return index, content
            if isinstance(content, list) and all(
                isinstance(p, Mapping) and p.get("type") == "text" and isinstance(p.get("text"), str) for p in content
            ):
                return index, "\n".join(str(p["text"]) for p in content)
            return index, None
    return -1, None


def context_hash(messages: Sequence[Any], last_user: int) -> str:
    """The conversation with its last user message's content replaced by a marker, hashed.

    Every other field of that message (``name``, ...) stays in the context: the model sees it."""
    shown = [_clean(m) for m in messages]
    if 0 <= last_user < len(shown) and isinstance(shown[last_user], Mapping):
        shown[last_user] = {**shown[last_user], "content": _LAST_USER}
    return _digest("context", _canonical(shown))


def skip_reason(context: RequestContext, model: str, config: CacheConfig) -> str | None:
    """Why a request may not use the cache (None: it may), from its context alone."""
    params = context.params
    if context.no_cache:
        return "disabled_by_client"
    if params.stream:
        return "stream"
    if params.n != 1:
        return "n"
    if params.temperature != 0 and not config.allow_nonzero_temperature:
        return "temperature"
    if params.tools is not None and not config.allow_tools:
        return "tools"
    if config.model_groups and model not in config.model_groups and context.model not in config.model_groups:
        return "model_group"
    return None


def decide(
    context: RequestContext, messages: Sequence[Any], model: str, config: CacheConfig, embedder: str
) -> Decision:
    """The cache keys of a request, or why it is skipped. ``model`` is the group it will go to."""
    reason = skip_reason(context, model, config)
    if reason is not None:
        return Decision(skip=reason)
    index, text = _last_user(messages)
    if index < 0:
        return Decision(skip="no_user_message")
    if text is None:
        return Decision(skip="non_text_content")
    value = context.scope_value(config.scope)
    if value is None:
        return Decision(skip="no_scope_value")
    try:
        raw = keyed_params(context.request_params)
    except ValueError:
        return Decision(skip="unreadable_params")
    tenant = tenant_tag(config.scope, value)
    params = context.params
    sampling = {
        "temperature": params.temperature if config.allow_nonzero_temperature else 0,
        "top_p": params.top_p,
        "max_tokens": params.max_tokens,
        "stop": list(params.stop),
        "n": params.n,
        "seed": params.seed,
        "response_format": params.response_format,
        "tools": params.tools,
        "tool_choice": params.tool_choice if params.tools is not None else None,
        "params": raw,
    }
    # user and end_user are the client's word: their entries stay within the key that wrote them
    owner = (context.api_key_hash or "",) if config.scope in _CLIENT_NAMED else ()
    scope = _digest(
        "scope", KEY_VERSION, tenant, *owner, model, embedder, _canonical(sampling), context_hash(messages, index)
    )
    text = text.strip()
    return Decision(
        keys=CacheKeys(scope=scope, tenant=tenant, entry_id=_digest("entry", scope, text), text=text, model=model)
    )


# --------------------------------------------------------------------------- what backends store


@dataclass(frozen=True, slots=True)
class CacheEntry:
    """One stored answer."""

    entry_id: str
    scope: str
    tenant: str
    text: str
    response: Mapping[str, Any]
    """The provider's answer as an OpenAI chat completion dict."""
    cost_nano: int | None
    """What the original call cost: each hit saves this much."""
    model: str
    stored_at: float
    vector: Vectors | None = field(default=None, compare=False)
    """The last user message's embedding; None for entries kept for exact lookups only."""


@dataclass(frozen=True, slots=True)
class Candidate:
    """A vector-lookup result within a scope."""

    entry: CacheEntry
    similarity: float


@dataclass(frozen=True, slots=True)
class CacheStats:
    """What ``costkit cache stats`` prints."""

    backend: str
    entries: int
    hits: int
    misses: int
    skips: int
    saved_nano: int

    @property
    def hit_rate(self) -> float:
        """Hits over cacheable lookups (hits + misses); skips are not lookups."""
        looked_up = self.hits + self.misses
        return self.hits / looked_up if looked_up else 0.0


class CacheBackend(Protocol):
    """Where entries live: in process (``MemoryCache``) or in Redis with vector search (``RedisCache``).

    Both pass one contract suite. Entries expire ``ttl_s`` after they were stored (hits do not
    refresh them); beyond ``max_entries`` the oldest are evicted. Errors leave as ``CacheError``.
    """

    name: str

    async def start(self) -> None:
        """Connect (no-op in process); lookups also start lazily."""

    async def close(self) -> None:
        """Release connections."""

    async def get(self, entry_id: str) -> CacheEntry | None:
        """The live entry with this exact key."""

    async def lookup(self, entry_id: str, scope: str) -> tuple[CacheEntry | None, bool]:
        """``get(entry_id)``, and whether ``scope`` may hold an entry with a vector, in one round trip.

        ``False`` is a promise that ``search`` in the scope would find nothing now (so the caller
        need not embed the question); ``True`` may be stale (the entries expired).
        An entry stored by any replica makes its scope ``True`` at once, until its TTL ends."""

    async def search(self, scope: str, vector: Vectors, k: int, min_similarity: float) -> list[Candidate]:
        """Up to ``k`` live entries of ``scope`` with cosine similarity >= ``min_similarity``, most similar first."""

    async def put(self, entry: CacheEntry) -> None:
        """Store (or replace) an entry, then evict the oldest beyond the cap."""

    async def count(self, status: str, saved_nano: int = 0) -> None:
        """Count a request's cache result (``hit``, ``miss``, ``skip``) for ``stats``."""

    async def stats(self) -> CacheStats:
        """Entries, results counted so far and dollars saved."""

    async def clear(self, tenant: str | None = None) -> int:
        """Remove every entry (or a tenant's); returns how many were removed."""
