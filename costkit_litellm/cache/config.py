"""The ``costkit.cache`` section: what the semantic cache stores, for whom, for how long, and on what."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from costkit_litellm.cache.verify import GUARDS, VerifierSettings
from costkit_litellm.config_base import Section, valid_redis_url
from costkit_litellm.embeddings import LOCAL_MINILM

CACHE_SCOPES = ("global", "team", "api_key", "user", "end_user")


class CacheConfig(Section):
    """The semantic cache: exact lookup, then vector lookup plus verification, within one scope."""

    enabled: bool = False
    """Answer repeated and paraphrased deterministic requests from the cache, at $0."""
    embedding_model: str = LOCAL_MINILM
    """``local/all-MiniLM-L6-v2`` (needs the ``local-embeddings`` extra) or a LiteLLM embedding model
    group, called through the proxy's router so its spend is accounted. The shipped verifier was
    calibrated on MiniLM: with another model, retrain it (``verify.model_path``)."""
    similarity_threshold: Annotated[float, Field(ge=-1.0, le=1.0)] | None = None
    """Minimum cosine similarity of a candidate to the new question (RedisVL's COSINE distance is
    ``1 - similarity``: 0.9 here is ``distance_threshold=0.1`` there). Unset: the value the shipped
    pair classifier was calibrated with (0.9 when ``verify.classifier`` is off). Raising it trades
    hits for safety; lowering it only helps when the classifier stays on."""
    verify: VerifierSettings = Field(default_factory=VerifierSettings)
    """The verification a candidate must pass before it is served (guards and pair classifier)."""
    top_k: Annotated[int, Field(ge=1, le=20)] = 3
    """Candidates fetched per vector lookup and verified, most similar first; the first accepted is served."""
    scope: Literal["global", "team", "api_key", "user", "end_user"] = "api_key"
    """Whose entries a request may be served from. ``api_key`` (default): each virtual key has its
    own cache: always known on the proxy, and never wider than a team (a key belongs to one team).
    ``team`` shares across a team's keys, ``user`` / ``end_user`` narrow a key's cache to one user
    (the key's user or ``metadata.user_id``; OpenAI's ``user`` field): a client names these itself,
    so they never reach past its own key (naming another key's user reads and writes nothing of
    theirs); ``global`` shares with everyone. A request without a value for the scope (e.g. no
    team) is never cached (``skip``)."""
    ttl_s: Annotated[int, Field(ge=1)] = 86_400
    """Lifetime of an entry in seconds, from when it was stored (not refreshed by hits)."""
    max_entries: Annotated[int, Field(ge=1)] = 100_000
    """Most entries kept; storing beyond it evicts the oldest."""
    index: Literal["flat", "hnsw"] = "flat"
    """Vector index of the Redis backend: ``flat`` (exact, fine to ~100k entries) or ``hnsw``
    (approximate, faster on large caches; see bench/cache_latency.py)."""
    model_groups: tuple[str, ...] = ()
    """Cache only requests for these model groups (requested or routed-to); empty: every group."""
    allow_tools: bool = False
    """Also cache requests that declare tools or functions (the tools are part of the scope)."""
    allow_nonzero_temperature: bool = False
    """Also cache requests whose temperature is above 0 or omitted (then part of the scope). Off:
    only ``temperature: 0`` sent explicitly is cached, since an omitted temperature is 1.0 at OpenAI."""
    max_semantic_chars: Annotated[int, Field(ge=1)] = 1000
    """Last user messages longer than this get the exact lookup only: the embedder reads about the
    first 256 tokens, so two long texts sharing a beginning would look identical to it."""
    backend: Literal["auto", "redis", "memory"] = "auto"
    """``auto``: Redis (with the search module) when ``redis_url`` or ``costkit.redis_url`` is set, else in process."""
    redis_url: str | None = None
    """The cache's own Redis (it needs the search module, which does not span a Redis Cluster); unset:
    ``costkit.redis_url``. Set it when budgets run on a cluster (``costkit.redis_cluster``) or to keep
    the cache's memory apart from the budgets'."""
    timeout_s: Annotated[float, Field(gt=0, le=10)] = 0.5
    """Redis socket timeout of cache lookups; a slower cache is skipped, never waited for."""

    @field_validator("redis_url")
    @classmethod
    def _valid_url(cls, value: str | None) -> str | None:
        return valid_redis_url(value)

    @model_validator(mode="after")
    def _one_threshold(self) -> CacheConfig:
        if self.similarity_threshold is not None and self.verify.similarity_threshold is not None:
            raise ValueError("set similarity_threshold once: in cache, not also in cache.verify")
        unknown = self.verify.disabled_guards - set(GUARDS)
        if unknown:
            raise ValueError(
                f"verify.disabled_guards: unknown guards {', '.join(sorted(unknown))} (known: {', '.join(GUARDS)})"
            )
        return self

    def verifier_settings(self) -> VerifierSettings:
        """The verifier's settings with this section's threshold applied."""
        if self.similarity_threshold is None:
            return self.verify
        return self.verify.model_copy(update={"similarity_threshold": self.similarity_threshold})
