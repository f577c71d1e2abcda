"""The request pipeline: the stages every request passes, in order, and what they exchange.

Before the provider call (hot path), ``CostKit.admit`` builds an ``Admission`` (context and
worst-case estimate) and gives it to each stage's ``on_request`` in order; a stage may add response
headers, rewrite the model, or refuse by raising ``RequestRejected``. After the call, each stage's
``on_outcome`` sees one ``Outcome`` (success or failure, actual cost). Later capabilities plug in
here, in the order DESIGN.md gives: breaker, route, cache, budgets (before); settle, cache store,
accounting (after).

A stage that needs counters in the store before the call (the breaker's session counters) does
not count them itself: it adds ``CounterChecks`` to the admission, and the budgets stage sends them
with its reservation, so a request costs one store round trip before the call.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from costkit_litellm.context import RequestContext
from costkit_litellm.embeddings import Embedder, Vectors
from costkit_litellm.errors import RequestAnswered, RequestRejected
from costkit_litellm.money import Nano
from costkit_litellm.pricing import CostEstimate
from costkit_litellm.store import Counter, Limit, LimitUsage

OutcomeKind = Literal["success", "failure", "rejected", "answered", "escalated"]
RefusalFor = Callable[[LimitUsage], RequestRejected | RequestAnswered]
"""Builds the refusal when a limit a stage contributed is the one that denies the reservation."""


@dataclass(slots=True)
class CounterChecks:
    """Counters a stage wants incremented in the store before the call, and what their values mean.

    The budgets stage increments them with its reservation, in one round trip; when a later stage
    refuses or answers first, ``CostKit.admit`` counts them alone (``budgets/counters.py``). Either
    way they are counted once, before the request goes anywhere, and a trip wins."""

    counters: tuple[Counter, ...]
    """What to increment, in the order their trips are checked."""
    trip: Callable[[int, int], RequestRejected | RequestAnswered]
    """``(index in counters, its new value)`` -> the refusal, for the first counter above its ``trip_above``."""
    unavailable: Callable[[], RequestRejected] | None = None
    """The refusal when the store does not answer (fail_closed); None: the counters are skipped then,
    and so are this stage's ``limit_keys``."""
    limit_keys: tuple[str, ...] = ()
    """Keys of the ``Admission.extra_limits`` this stage added that apply only when its counters were
    counted (dropped with them when the store does not answer)."""
    pending: bool = True
    """Not yet counted (nor skipped)."""


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
    messages: Sequence[Any] = ()
    """The request's messages (read-only), for stages that look at the conversation."""
    extra_limits: list[tuple[Limit, RefusalFor]] = field(default_factory=list)
    """Limits other stages want held with the budgets in the one all-or-nothing reservation."""
    counters: list[CounterChecks] = field(default_factory=list)
    """Counters other stages want incremented before the call, sent with the reservation."""
    state: dict[str, Any] = field(default_factory=dict)
    """Per-stage state carried to ``on_outcome`` (keyed by stage name), kept server-side."""
    vectors: dict[str, Vectors] = field(default_factory=dict)
    """Embeddings computed for this request, by embedder name (one per request, shared by stages)."""

    def last_user_text(self) -> str | None:
        """The text of the last user message (content parts joined), None when there is none."""
        return last_user_text(self.messages)

    async def last_user_vector(self, embedder: Embedder) -> Vectors | None:
        """The last user message's embedding, computed once per request and embedder."""
        if embedder.name not in self.vectors:
            text = self.last_user_text()
            if text is None:
                return None
            self.vectors[embedder.name] = (await embedder.embed([text]))[0]
        return self.vectors[embedder.name]


@dataclass(frozen=True, slots=True)
class Outcome:
    """What happened to a request after the provider call."""

    kind: OutcomeKind
    context: RequestContext
    model: str
    """The model group that served (or failed) the request."""
    deployment_model: str | None
    cost: Nano | None
    """Actual cost: the usage at the ``pricing.models`` price when the config prices the model (its
    hold when the usage is missing), else LiteLLM's ``response_cost``; None when it could not be computed."""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    reasoning_tokens: int = 0
    estimate: Nano | None = None
    cache_hit: bool = False
    cache_status: str | None = None
    """``hit``, ``miss`` or ``skip`` when the semantic cache looked at the request."""
    tier: str | None = None
    saved: Nano | None = None
    saved_source: str | None = None
    """``cache`` or ``routing``."""
    reason: str | None = None
    """For ``rejected`` / ``answered``: the refusal's type (``budget_exceeded``, ``agent_step_limit``...)."""
    error: str | None = None
    latency_s: float | None = None
    timestamp: float = 0.0
    state: Mapping[str, Any] = field(default_factory=dict)
    """What the stages put in ``Admission.state`` before the call."""
    response: Mapping[str, Any] | None = None
    """The provider's answer as an OpenAI chat completion dict (successful non-streaming calls)."""
    final: bool = True
    """False for a failed attempt LiteLLM may still follow with a retry or a fallback (its logging
    callback fires per attempt): the request's holds stay until its final outcome."""
    settle_only: bool = False
    """True for a request's final failure after its attempts were recorded: only what it holds is
    settled (the budgets release it); nothing is accounted again."""


def message_text(content: Any) -> str:
    """Text of a message's content: a string, or the text parts of a list of parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(str(p.get("text", "")) for p in content if isinstance(p, Mapping) and p.get("type") == "text")
    return ""


def last_user_text(messages: Sequence[Any]) -> str | None:
    """The text of the last user message, None when the conversation has none."""
    for message in reversed(messages):
        if isinstance(message, Mapping) and message.get("role") == "user":
            return message_text(message.get("content"))
    return None


class Stage(Protocol):
    """A capability plugged into the pipeline."""

    name: str

    async def on_request(self, admission: Admission) -> None:
        """Inspect or amend a request before the provider call; raise ``RequestRejected`` to refuse."""

    async def on_outcome(self, outcome: Outcome) -> None:
        """Record what happened after the call; must not raise."""
