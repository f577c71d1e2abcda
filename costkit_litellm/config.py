"""The ``costkit:`` section of proxy_config.yaml, parsed into typed, immutable objects.

LiteLLM ignores unknown top-level keys, so one file configures the gateway and the pack. Every
problem (unknown key, wrong type, impossible value, missing environment variable) is reported with
the file and the full key path, e.g. ``proxy_config.yaml: costkit.metrics.max_label_values: must
be at least 1``. Strings of the form ``os.environ/NAME`` are read from the environment (a missing
variable is an error); ``os.environ/NAME:-DEFAULT`` falls back to ``DEFAULT`` (an empty default
means "not set").
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, get_args, get_origin

import yaml
from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator

from costkit_litellm.accounting.config import LedgerConfig, RevenueConfig
from costkit_litellm.budgets.config import BreakerConfig, BudgetConfig, BudgetSettings
from costkit_litellm.cache.config import CacheConfig
from costkit_litellm.config_base import NonNegativeUsd, Section, valid_redis_url
from costkit_litellm.errors import ConfigError
from costkit_litellm.routing.config import RoutingConfig

SECTION = "costkit"
_ENV_REF = re.compile(r"^os\.environ/(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::-(?P<default>.*))?$", re.S)
_LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
_RESERVED_LABELS = frozenset({"model", "tier", "le", "quantile", "outcome", "source", "direction", "endpoint"})
_IDENTITY_NOT_LABELS = frozenset(
    {"user", "user_id", "end_user", "api_key", "api_key_hash", "api_key_alias", "key", "session", "session_id"}
)


class ModelPricing(Section):
    """Price of one model, overriding LiteLLM's price map (e.g. a self-hosted or negotiated model)."""

    input_usd_per_million_tokens: NonNegativeUsd | None = None
    """Dollars per million prompt tokens (cached ones included), for the hold and the actual cost;
    unset keeps LiteLLM's price."""
    output_usd_per_million_tokens: NonNegativeUsd | None = None
    """Dollars per million completion tokens (reasoning and audio ones included), for the hold and
    the actual cost; unset keeps LiteLLM's price."""
    max_output_tokens: Annotated[int, Field(ge=1)] | None = None
    """The model's longest possible answer in tokens; used for worst-case estimates."""


class PricingConfig(Section):
    """How costs are estimated before a call and read after it."""

    output_bound: Literal["model_max", "inject_default"] = "model_max"
    """A request with no output cap in a field its route honours (``max_tokens`` or
    ``max_completion_tokens`` on chat, ``max_tokens`` on text completions and /v1/messages,
    ``max_output_tokens`` on /v1/responses):
    ``model_max`` holds the model's own maximum output (16,384 tokens for gpt-4o-mini), leaving the
    request as it is; ``inject_default`` writes ``default_max_output_tokens`` into the request (the
    provider then stops there) and holds that. A model whose maximum is unknown is always injected."""
    default_max_output_tokens: Annotated[int, Field(ge=1)] = 4096
    """The output cap written into a request that sets none, under ``output_bound: inject_default``
    (or for a model whose maximum output LiteLLM does not know)."""
    transcription_bytes_per_second: Annotated[int, Field(ge=1)] = 1000
    """Audio transcription is billed per second of audio, unknown before the call: the worst case
    assumes the upload holds at least this many bytes per second (1,000 = 8 kbit/s, below any
    speech codec in use), so a 1 MB file holds for about 1,000 seconds."""
    image_input_tokens: Annotated[int, Field(ge=1)] | None = None
    """Input tokens held per image part of a request (``image_url``, ``input_image``, ``image``),
    whatever its size or detail. Unset: LiteLLM's upper bound for a high-detail image (85 + 8 tiles
    x 170 = 1,445 tokens, OpenAI's rule for gpt-4o). Models that bill images at a multiple of that
    (gpt-4o-mini counts about 33x the tokens at a lower price) need a larger value here."""
    models: dict[str, ModelPricing] = Field(default_factory=dict)
    """Per-model overrides, keyed by model group name (as clients request it) or by the
    deployment's model (``openai/gpt-4o-mini``)."""


class RequestConfig(Section):
    """Limits on what clients may attach to a request (tags, metadata attributes)."""

    max_tags: Annotated[int, Field(ge=0)] = 64
    """Most tags one request may carry; more is a 400 that says so."""
    max_value_length: Annotated[int, Field(ge=1)] = 256
    """Longest tag, attribute value or session id in characters; longer is a 400."""
    max_attributes: Annotated[int, Field(ge=0)] = 32
    """Most plain metadata keys read as attributes; further keys are ignored with a log line."""
    session_header: str = "x-costkit-session"
    """Request header that carries an agent session id (besides LiteLLM's own session fields)."""
    on_internal_error: Literal["fail_closed", "fail_open"] = "fail_closed"
    """An unexpected error inside the pack's pre-call hook (a bug, never a policy): ``fail_closed``
    refuses the request with a 422 naming the stage and the error; ``fail_open`` sends it on without
    the pack (no budget hold, cache or routing). Both log it and count
    ``costkit_internal_errors_total``; neither is ever a 500."""


class MetricsConfig(Section):
    """Prometheus metrics (prefix ``costkit_``)."""

    enabled: bool = True
    """Count spend in Prometheus."""
    tag_labels: tuple[str, ...] = ()
    """Keys that become labels (e.g. ``feature``, ``team``). ``team`` is the authenticated key's
    team (never ``metadata.team``); any other key is a request attribute (``feature:x`` tag or
    metadata key). Only these: raw API keys, users and free-form tags never become labels."""
    max_label_values: Annotated[int, Field(ge=1)] = 50
    """Distinct values kept per tag label in one process, first come; later values are counted as
    ``other``, so totals stay exact and cardinality bounded. Not used for a label in ``tag_values``."""
    max_label_values_per_tenant: Annotated[int, Field(ge=1)] = 10
    """Of those, how many one tenant (the key's team, else the key) may introduce, so a client
    flooding invented values takes at most this many slots from the others."""
    tag_values: dict[str, tuple[str, ...]] = Field(default_factory=dict)
    """Declared values per tag label (``{feature: [email_writer, summarizer]}``): only these are
    label values, everything else is ``other`` (no first-come slots a client could take)."""
    port: Annotated[int, Field(ge=1, le=65535)] | None = None
    """Serve metrics on this port from the pack itself. Unset: metrics live in the default
    registry, which LiteLLM serves at ``/metrics`` when its ``prometheus`` callback is on."""

    @field_validator("tag_labels")
    @classmethod
    def _valid_labels(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for name in value:
            if not _LABEL_NAME.match(name):
                raise ValueError(f"{name!r} is not a valid Prometheus label name")
            if name in _RESERVED_LABELS:
                raise ValueError(f"{name!r} is a label the pack already uses")
            if name in _IDENTITY_NOT_LABELS:
                raise ValueError(
                    f"{name!r} cannot be a label (one series per {name}; a client could assert any value): "
                    "use team (the key's team), or costkit report --by user"
                )
        if len(set(value)) != len(value):
            raise ValueError("lists a label twice")
        return value

    @model_validator(mode="after")
    def _declared_values(self) -> MetricsConfig:
        for name in self.tag_values:
            if name not in self.tag_labels:
                raise ValueError(f"tag_values.{name}: {name!r} is not in tag_labels")
            if name == "team":
                raise ValueError("tag_values.team: team comes from the authenticated key; it takes no declared values")
        return self


class HeadersConfig(Section):
    """The ``x-costkit-*`` response headers."""

    enabled: bool = True
    """Add ``x-costkit-*`` headers to proxy responses."""


class ShutdownConfig(Section):
    """What happens on SIGTERM (rolling restart, scale-down): nothing recorded in this process is lost."""

    flush_timeout_s: Annotated[float, Field(gt=0, le=600)] = 20.0
    """After LiteLLM has drained in-flight requests: how long to wait for their logging callbacks,
    the outage replay queue and the webhook batches before closing the store (keep it, plus
    LiteLLM's ``GRACEFUL_SHUTDOWN_TIMEOUT``, under Kubernetes' ``terminationGracePeriodSeconds``)."""
    spool_dir: str = ".costkit/spool"
    """Where the post-call budget operations that could not reach the store by shutdown are written
    (one JSON-lines file per process) and read back, and replayed, at the next start. Relative to the
    proxy's working directory; share it between restarts (a volume) so a restart during a Redis
    outage loses no spend."""


class PerformanceConfig(Section):
    """Process-wide tuning the pack can apply (off by default: it affects LiteLLM too)."""

    gc_freeze_after_s: Annotated[float, Field(ge=0, le=86_400)] | None = None
    """Seconds after the pack starts to collect once and then ``gc.freeze()`` the process's heap:
    the proxy's ~790,000 start-up objects leave the garbage collector's full collections, which
    then take milliseconds instead of hundreds (about 0.7 ms of CPU per request on the bench
    machine). Objects alive at that moment are never collected afterwards. Unset: never."""


class CostKitConfig(Section):
    """The whole ``costkit:`` section."""

    enabled: bool = True
    """Turn the whole pack off without removing it from ``litellm_settings.callbacks``."""
    redis_url: str | None = None
    """``redis://``, ``rediss://`` (TLS) or ``unix://`` URL of the shared store. Unset: state is
    kept in process (one replica only; fine for development)."""
    redis_cluster: bool = False
    """The URL points at a Redis Cluster."""
    key_prefix: Annotated[str, Field(min_length=1, pattern=r"^[A-Za-z0-9_.:-]+$")] = "costkit"
    """Prefix of every key the pack writes (several deployments can share one Redis)."""
    pricing: PricingConfig = Field(default_factory=PricingConfig)
    """Cost estimation."""
    request: RequestConfig = Field(default_factory=RequestConfig)
    """Request metadata limits."""
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)
    """Prometheus metrics."""
    headers: HeadersConfig = Field(default_factory=HeadersConfig)
    """Response headers."""
    budgets: tuple[BudgetConfig, ...] = ()
    """Dollar budgets, each a hard cap per scope value and window (see the README's budgets section)."""
    budget_settings: BudgetSettings = Field(default_factory=BudgetSettings)
    """How budgets are enforced."""
    breaker: BreakerConfig = Field(default_factory=BreakerConfig)
    """The agent circuit breaker."""
    cache: CacheConfig = Field(default_factory=CacheConfig)
    """The semantic cache (see the README's cache section)."""
    routing: RoutingConfig = Field(default_factory=RoutingConfig)
    """Tiered routing behind a virtual model, with cascades."""
    ledger: LedgerConfig = Field(default_factory=LedgerConfig)
    """The usage ledger."""
    revenue: RevenueConfig = Field(default_factory=RevenueConfig)
    """Revenue per feature, for margins in ``costkit report``."""
    shutdown: ShutdownConfig = Field(default_factory=ShutdownConfig)
    """Graceful shutdown: flush, then spool what the store did not take."""
    performance: PerformanceConfig = Field(default_factory=PerformanceConfig)
    """Process-wide tuning (``gc_freeze_after_s``)."""

    @field_validator("budgets")
    @classmethod
    def _unique_names(cls, value: tuple[BudgetConfig, ...]) -> tuple[BudgetConfig, ...]:
        seen: set[str] = set()
        for budget in value:
            if budget.name in seen:
                raise ValueError(f"budget name {budget.name!r} is used twice; names must be unique")
            seen.add(budget.name)
        return value

    @field_validator("redis_url")
    @classmethod
    def _valid_url(cls, value: str | None) -> str | None:
        return valid_redis_url(value)

    @model_validator(mode="after")
    def _cache_off_the_cluster(self) -> CostKitConfig:
        cache = self.cache
        if self.redis_cluster and cache.enabled and cache.backend != "memory" and not cache.redis_url:
            raise ValueError(
                "cache.redis_url: needed with redis_cluster: true, since the semantic cache's search module "
                "does not span a cluster: point it at a separate non-cluster Redis with the search module, "
                "or set cache.backend: memory"
            )
        return self

    def cache_url(self) -> str | None:
        """The Redis the semantic cache uses: ``cache.redis_url``, else ``redis_url``."""
        return self.cache.redis_url or self.redis_url

    def model_names(self) -> frozenset[str]:
        """The model names this section itself names (the virtual model, tiers, downgrade targets,
        price overrides): always allowed as ``model`` label values."""
        names = set(self.pricing.models)
        if self.routing.enabled:
            names.add(self.routing.virtual_model)
            names.update(tier.model for tier in self.routing.tiers)
        names.update(b.downgrade_to for b in self.budgets if b.downgrade_to)
        return frozenset(names)


def _path(loc: tuple[Any, ...], raw: Any = None) -> str:
    out = SECTION
    node = raw
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}"
        node = _child(node, part)
        name = node.get("name") if isinstance(node, Mapping) and isinstance(part, int) else None
        if isinstance(name, str):
            out += f" ({name})"
    return out


def _child(node: Any, part: Any) -> Any:
    if isinstance(part, int) and isinstance(node, list) and 0 <= part < len(node):
        return node[part]
    if isinstance(node, Mapping):
        return node.get(part)
    return None


def _resolve_env(value: Any, loc: tuple[Any, ...], problems: list[str], env: Mapping[str, str]) -> Any:
    """Replace ``os.environ/NAME`` strings anywhere in the raw section."""
    if isinstance(value, str):
        match = _ENV_REF.match(value)
        if not match:
            return value
        name, default = match.group("name"), match.group("default")
        if name in env:
            return env[name]
        if default is not None:
            return default if default != "" else None
        problems.append(
            f"{_path(loc)}: environment variable {name} is not set (referenced as {value}; "
            f"write os.environ/{name}:- to make it optional)"
        )
        return None
    if isinstance(value, Mapping):
        return {k: _resolve_env(v, (*loc, k), problems, env) for k, v in value.items()}
    if isinstance(value, list):
        return [_resolve_env(v, (*loc, i), problems, env) for i, v in enumerate(value)]
    return value


def _section_model(loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The config section class at a key path (list indexes and map keys stepped over), or None."""
    model: type[BaseModel] | None = CostKitConfig
    in_map = False
    for part in loc:
        if isinstance(part, int):
            continue
        if in_map:  # a map key (pricing.models.<name>, revenue.plans.<name>)
            in_map = False
            continue
        field = model.model_fields.get(str(part)) if model is not None else None
        if field is None:
            return None
        model, in_map = _model_in(field.annotation)
    return model


def _model_in(annotation: Any) -> tuple[type[BaseModel] | None, bool]:
    """The section class inside an annotation (``X | None``, ``tuple[X, ...]``, ``dict[str, X]``), and
    whether it sits under a map."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation, False
    origin = get_origin(annotation)
    args = get_args(annotation)
    if origin is dict and len(args) == 2:
        model, _ = _model_in(args[1])
        return model, model is not None
    for arg in args:
        model, in_map = _model_in(arg)
        if model is not None:
            return model, in_map
    return None, False


def unknown_key_hint(loc: tuple[Any, ...]) -> str:
    """``is not a known key``, with the closest known key (``did you mean loop_threshold?``) or the
    keys known there."""
    model = _section_model(loc[:-1])
    if model is None or not loc:
        return "is not a known key"
    known = sorted(model.model_fields)
    close = difflib.get_close_matches(str(loc[-1]), known, n=1, cutoff=0.6)
    if close:
        return f"is not a known key; did you mean {close[0]}?"
    return f"is not a known key (known here: {', '.join(known)})"


def _describe(error: Mapping[str, Any]) -> str:
    kind = error["type"]
    message = str(error["msg"])
    if kind == "extra_forbidden":
        return unknown_key_hint(tuple(error["loc"]))
    if message.startswith("Value error, "):
        message = message[len("Value error, ") :]
    last = str(error["loc"][-1]) if error["loc"] else ""
    secret = any(word in last for word in ("url", "password", "secret", "key"))
    shown = not isinstance(error.get("input"), (dict, list)) and repr(error.get("input")) not in message
    if "input" in error and kind != "missing" and not secret and shown:
        return f"{error['input']!r}: {message}"
    return message


def parse_config(
    raw: Mapping[str, Any] | None,
    source: str | None = None,
    env: Mapping[str, str] | None = None,
) -> CostKitConfig:
    """Validate the raw ``costkit:`` mapping; raise ``ConfigError`` listing every problem."""
    if raw is None:
        return CostKitConfig()
    if not isinstance(raw, Mapping):
        raise ConfigError([f"{SECTION}: must be a mapping, got {type(raw).__name__}"], source)
    problems: list[str] = []
    resolved = _resolve_env(raw, (), problems, os.environ if env is None else env)
    if problems:
        raise ConfigError(problems, source)
    try:
        return CostKitConfig.model_validate(resolved)
    except ValidationError as exc:
        found = [f"{_path(tuple(e['loc']), resolved)}: {_describe(e)}" for e in exc.errors()]
        raise ConfigError(found, source) from None


def load_config(path: str | os.PathLike[str], env: Mapping[str, str] | None = None) -> CostKitConfig:
    """Read the ``costkit:`` section of a proxy config file (a missing section gives defaults)."""
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"cannot read the config file: {exc.strerror or exc}"], source) from None
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError([f"not valid YAML: {exc}"], source) from None
    if document is None:
        document = {}
    if not isinstance(document, Mapping):
        raise ConfigError(["the file must hold a mapping at the top level"], source)
    return parse_config(document.get(SECTION), source, env)
