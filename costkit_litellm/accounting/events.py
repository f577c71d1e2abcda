"""``UsageEvent``: one record per request outcome, the unit of FinOps accounting.

Built once (from the pipeline's ``Outcome``) and then written to the ledger and counted in the
metrics; other stages add their facts (tier, cache status, savings) to the ``Outcome`` rather than
inventing their own records. Field names follow OpenTelemetry's GenAI semantic conventions where
one exists (``gen_ai.request.model``, ``gen_ai.usage.input_tokens``, ...); the rest are
``costkit.*``. Money is integer nano-dollars.

Outcomes: ``success``, ``failure`` (the provider call failed), ``cache_hit``, ``budget_rejected``,
``circuit_tripped``, ``escalated`` (a cascade tier that was not good enough), ``rejected`` (other
policy refusals, e.g. malformed metadata).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from operator import attrgetter
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from costkit_litellm.pipeline import Outcome

OUTCOMES = ("success", "failure", "cache_hit", "budget_rejected", "circuit_tripped", "escalated", "rejected")
_EMPTY: Mapping[str, str] = MappingProxyType({})

# Event attribute -> ledger field name.
_FIELDS = {
    "outcome": "costkit.outcome",
    "timestamp": "costkit.timestamp",
    "request_model": "gen_ai.request.model",
    "response_model": "gen_ai.response.model",
    "model": "costkit.model_group",
    "endpoint": "costkit.endpoint",
    "tier": "costkit.tier",
    "input_tokens": "gen_ai.usage.input_tokens",
    "output_tokens": "gen_ai.usage.output_tokens",
    "cached_tokens": "gen_ai.usage.cached_input_tokens",
    "reasoning_tokens": "gen_ai.usage.reasoning_tokens",
    "cost_nano": "costkit.cost_nano",
    "estimate_nano": "costkit.estimate_nano",
    "saved_nano": "costkit.saved_nano",
    "saved_source": "costkit.saved_source",
    "cache_status": "costkit.cache",
    "user": "user.id",
    "team": "costkit.team",
    "api_key_hash": "costkit.api_key_hash",
    "end_user": "costkit.end_user",
    "session": "session.id",
    "client_call_id": "litellm.call_id",
    "latency_s": "costkit.latency_s",
    "reason": "costkit.reason",
    "error": "error.type",
}
_FIELD_KEYS = tuple(_FIELDS.values())
_FIELD_VALUES = attrgetter(*_FIELDS)
"""The event's values in ``_FIELDS`` order, read in one call."""
_INTS = {"input_tokens", "output_tokens", "cached_tokens", "reasoning_tokens"}
_OPTIONAL_INTS = {"cost_nano", "estimate_nano", "saved_nano"}
ATTRIBUTE_PREFIX = "costkit.attr."
MAX_NAME_LENGTH = 256
"""Longest model name or client call id the ledger keeps (a client may send any string; the rest is cut)."""


def _clip(value: str | None) -> str | None:
    return value[:MAX_NAME_LENGTH] if value is not None and len(value) > MAX_NAME_LENGTH else value


@dataclass(frozen=True, slots=True)
class UsageEvent:
    """What one request outcome cost, for whom, and why."""

    call_id: str
    """The pack's own request id (the ledger entry id)."""
    outcome: str
    timestamp: float
    request_model: str
    response_model: str | None = None
    model: str = ""
    """The model group that answered (after routing or downgrade)."""
    endpoint: str = "chat"
    """The call type (``chat``, ``responses``, ``messages``, ``embeddings``, ``speech``...: a bounded set)."""
    tier: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    reasoning_tokens: int = 0
    cost_nano: int | None = None
    estimate_nano: int | None = None
    saved_nano: int | None = None
    saved_source: str | None = None
    cache_status: str | None = None
    user: str | None = None
    team: str | None = None
    api_key_hash: str | None = None
    end_user: str | None = None
    session: str | None = None
    client_call_id: str | None = None
    """The client's ``x-litellm-call-id`` / ``litellm_call_id``: a label, never an identity."""
    attributes: Mapping[str, str] = field(default_factory=lambda: _EMPTY)
    """Feature and other tag keys (``feature`` -> ``email_writer``)."""
    latency_s: float | None = None
    reason: str | None = None
    """Why a request was refused or stopped (``budget_exceeded``, ``agent_loop_detected``...)."""
    error: str | None = None

    @classmethod
    def from_outcome(cls, outcome: Outcome) -> UsageEvent:
        """The event of a pipeline outcome."""
        ctx = outcome.context
        return cls(
            call_id=ctx.call_id or "",
            outcome=event_outcome(outcome),
            timestamp=outcome.timestamp,
            request_model=_clip(ctx.model) or "",
            response_model=_clip(outcome.deployment_model),
            model=_clip(outcome.model) or "",
            endpoint=ctx.endpoint,
            tier=outcome.tier,
            input_tokens=outcome.prompt_tokens,
            output_tokens=outcome.completion_tokens,
            cached_tokens=outcome.cached_tokens,
            reasoning_tokens=outcome.reasoning_tokens,
            cost_nano=outcome.cost,
            estimate_nano=outcome.estimate,
            saved_nano=outcome.saved,
            saved_source=outcome.saved_source,
            cache_status=outcome.cache_status,
            user=ctx.user_id,
            team=ctx.team_id,
            api_key_hash=ctx.api_key_hash,
            end_user=ctx.end_user,
            session=ctx.session_id,
            client_call_id=_clip(ctx.client_call_id),
            attributes=ctx.attributes,
            latency_s=outcome.latency_s,
            reason=outcome.reason,
            error=outcome.error[:500] if outcome.error else None,
        )

    def to_fields(self) -> dict[str, str]:
        """Flat string fields for the ledger (empty values left out)."""
        out: dict[str, str] = {}
        for key, value in zip(_FIELD_KEYS, _FIELD_VALUES(self), strict=True):
            if type(value) is str:  # most fields: no conversion
                if value:
                    out[key] = value
            elif value is not None and value != "":
                out[key] = repr(value) if isinstance(value, float) else str(value)
        for key, value in self.attributes.items():
            out[ATTRIBUTE_PREFIX + key] = value
        return out

    @classmethod
    def from_fields(cls, call_id: str, fields: Mapping[str, str]) -> UsageEvent:
        """Read an event back from its ledger fields."""
        values: dict[str, Any] = {}
        for name, key in _FIELDS.items():
            raw = fields.get(key)
            if raw is None:
                continue
            if name in _INTS or name in _OPTIONAL_INTS:
                values[name] = int(raw)
            elif name in ("timestamp", "latency_s"):
                values[name] = float(raw)
            else:
                values[name] = raw
        attributes = {k[len(ATTRIBUTE_PREFIX) :]: v for k, v in fields.items() if k.startswith(ATTRIBUTE_PREFIX)}
        values.setdefault("outcome", "success")
        values.setdefault("timestamp", 0.0)
        values.setdefault("request_model", "")
        return cls(call_id=call_id, attributes=MappingProxyType(attributes), **values)


def event_outcome(outcome: Outcome) -> str:
    """The event outcome of a pipeline outcome."""
    if outcome.kind == "success":
        return "cache_hit" if outcome.cache_hit else "success"
    if outcome.kind in ("rejected", "answered"):
        reason = outcome.reason or ""
        if reason.startswith("agent_"):
            return "circuit_tripped"
        if reason.startswith("budget_"):
            return "budget_rejected"
        return "rejected"
    if outcome.kind == "escalated":
        return "escalated"
    return "failure"
