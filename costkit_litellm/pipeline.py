"""The request pipeline: the stages every request passes, in order, and what they exchange.

Before the provider call (hot path), ``CostKit.admit`` builds an ``Admission`` (context and
worst-case estimate) and gives it to each stage's ``on_request`` in order; a stage may add response
headers, rewrite the model, or refuse by raising ``RequestRejected``. After the call, each stage's
``on_outcome`` sees one ``Outcome`` (success or failure, actual cost). Later capabilities plug in
here, in the order DESIGN.md gives: breaker, route, cache, budgets (before); settle, cache store,
accounting (after).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from costkit_litellm.context import RequestContext, from_json
from costkit_litellm.money import Nano
from costkit_litellm.pricing import CostEstimate

OutcomeKind = Literal["success", "failure"]


@dataclass(slots=True)
class Admission:
    """A request on its way to the provider; stages read and amend it."""

    context: RequestContext
    estimate: CostEstimate
    deployment_model: str | None = None
    model: str | None = None
    """Set by a stage that rewrites the request's model (e.g. routing); None keeps it."""
    headers: dict[str, str] = field(default_factory=dict)
    """``x-costkit-*`` headers for the response."""

    def stash(self) -> dict[str, Any]:
        """JSON-safe state carried in the request's metadata to the post-call callbacks."""
        return {
            "context": self.context.to_json(),
            "estimate_nano": self.estimate.amount,
            "headers": dict(self.headers),
        }


@dataclass(frozen=True, slots=True)
class Stash:
    """What ``Admission.stash`` left in the request metadata, read back after the call."""

    context: RequestContext
    estimate_nano: int | None
    headers: Mapping[str, str]

    @classmethod
    def read(cls, raw: object) -> Stash | None:
        """Parse a stash dict; None when absent or not ours."""
        if not isinstance(raw, Mapping) or not isinstance(raw.get("context"), Mapping):
            return None
        estimate = raw.get("estimate_nano")
        headers = raw.get("headers")
        return cls(
            context=from_json(raw["context"]),
            estimate_nano=estimate if isinstance(estimate, int) else None,
            headers=dict(headers) if isinstance(headers, Mapping) else {},
        )


@dataclass(frozen=True, slots=True)
class Outcome:
    """What happened to a request after the provider call."""

    kind: OutcomeKind
    context: RequestContext
    model: str
    """The model group that served (or failed) the request."""
    deployment_model: str | None
    cost: Nano | None
    """Actual cost from LiteLLM's ``response_cost``; None when it could not be computed."""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    estimate: Nano | None = None
    cache_hit: bool = False
    error: str | None = None
    latency_s: float | None = None
    timestamp: float = 0.0


class Stage(Protocol):
    """A capability plugged into the pipeline."""

    name: str

    async def on_request(self, admission: Admission) -> None:
        """Inspect or amend a request before the provider call; raise ``RequestRejected`` to refuse."""

    async def on_outcome(self, outcome: Outcome) -> None:
        """Record what happened after the call; must not raise."""
