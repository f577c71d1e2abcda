"""The agent circuit breaker: per session, a step limit, a spend cap and loop detection.

- Steps: a counter per session, kept alive while the session is active (``inactivity_s``).
- Spend: a limit per session, held in the same all-or-nothing reservation as the budgets.
- Loops: the same tool call (name + normalised arguments) appearing ``loop_threshold`` times in
  the conversation the agent sends (the "search Python, get snake, search Python again" loop),
  or the same normalised request sent ``loop_threshold`` times in a session.

A trip is a 429 whose ``type`` is ``agent_step_limit``, ``agent_budget_exceeded`` or
``agent_loop_detected``, or (``on_trip: final_message``) a final assistant message at $0.

The breaker never talks to the store: the loop in the conversation needs none, and the two session
counters (steps; this request's fingerprint) go to the admission as ``CounterChecks`` with their
thresholds, which the budgets stage increments in the same script as its reservation (one round
trip before the call). They are counted first and whatever happens next; the step limit is checked
before the repeated request, and a trip holds nothing. If the store does not answer, fail_closed
refuses with the breaker's 503 and fail_open skips the counters and the session's spend cap.

Every key is scoped by the caller as well as the session id (``session_key``): the id is the
client's choice, so two tenants sending the same id must never share a counter, a fingerprint or a
spend cap. The caller is the authenticated API key's hash; without one (the Router in application
code, a custom auth without keys) the key's team and user, else the client's declared user, else
``anonymous``.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from costkit_litellm.accounting.metrics import CostKitMetrics
from costkit_litellm.budgets.config import BreakerConfig
from costkit_litellm.budgets.policy import escaped_key_part
from costkit_litellm.context import RequestContext
from costkit_litellm.errors import RequestAnswered, RequestRejected
from costkit_litellm.money import format_usd_short, usd_to_nano
from costkit_litellm.pipeline import Admission, CounterChecks, Outcome
from costkit_litellm.store import Counter as StoreCounter
from costkit_litellm.store import Limit, LimitUsage

_SPACES = re.compile(r"\s+")
HEADER_STOPPED = "x-costkit-stopped"


def _normal_text(value: Any) -> str:
    if isinstance(value, list):  # content parts
        value = " ".join(str(p.get("text", "")) for p in value if isinstance(p, Mapping))
    return _SPACES.sub(" ", str(value or "")).strip().lower()


def _normal_arguments(arguments: Any) -> str:
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments)
        except (ValueError, RecursionError):  # not JSON (or nested too deep to read): compare as text
            return _normal_text(arguments)
    if isinstance(arguments, str):
        return _normal_text(arguments)
    return _dumps(arguments)


def _dumps(value: Any) -> str:
    try:
        return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str).lower()
    except (TypeError, ValueError, RecursionError):  # nested too deep to write: one opaque value
        return "<unreadable>"


def tool_calls(messages: Sequence[Any]) -> list[tuple[str, str]]:
    """Every (tool name, normalised arguments) the assistant called in the conversation."""
    calls = []
    for message in messages:
        if not isinstance(message, Mapping) or message.get("role") != "assistant":
            continue
        made = message.get("tool_calls")
        for call in made if isinstance(made, (list, tuple)) else ():  # a malformed value is no tool call
            function = call.get("function") if isinstance(call, Mapping) else None
            if isinstance(function, Mapping):
                calls.append((str(function.get("name", "")), _normal_arguments(function.get("arguments"))))
        legacy = message.get("function_call")
        if isinstance(legacy, Mapping):
            calls.append((str(legacy.get("name", "")), _normal_arguments(legacy.get("arguments"))))
    return calls


def most_repeated_tool_call(messages: Sequence[Any]) -> tuple[tuple[str, str] | None, int]:
    """The tool call repeated most often in the conversation, and how often."""
    counts = Counter(tool_calls(messages))
    if not counts:
        return None, 0
    call, count = counts.most_common(1)[0]
    return call, count


def request_fingerprint(model: str, messages: Sequence[Any]) -> str:
    """A short hash of the model and the normalised last message: equal for a resent request."""
    last = messages[-1] if messages else {}
    role = last.get("role", "") if isinstance(last, Mapping) else ""
    role = role if isinstance(role, str) else _dumps(role)
    content = _normal_text(last.get("content")) if isinstance(last, Mapping) else ""
    calls = tool_calls([last]) if isinstance(last, Mapping) else []
    raw = json.dumps([model, role, content, calls], separators=(",", ":"))
    return hashlib.sha256(raw.encode()).hexdigest()[:16]


JWT_KEY_PREFIX = "hashed-jwt-"
"""How LiteLLM's JWT auth reports a token as the key hash (one per token, so new at each refresh)."""


def caller_scope(context: RequestContext) -> str:
    """Who owns the request's session counters: the API key hash when there is one.

    With a JWT that names its user (LiteLLM hashes each token, so a refreshed token would start the
    session's counters again): that user alone (``jwt_user=``; not the team, which a caller in
    several teams picks per request, and two users of one team must not share). Without a key: the
    key's team and user (authenticated), else the user the
    client declared (``metadata.user_id``: only where nothing authenticates, as with a Router in
    application code), else ``anonymous``. Every form is distinct (values are escaped, so a
    ``key=...`` never equals a ``team=...``) and stable for one caller.
    """
    jwt = context.api_key_hash is not None and context.api_key_hash.startswith(JWT_KEY_PREFIX)
    if jwt and context.key_user_id:  # the token's subject: stable across refreshes and across its teams
        return f"jwt_user={escaped_key_part(context.key_user_id)}"
    if context.api_key_hash:
        return f"key={escaped_key_part(context.api_key_hash)}"
    named = (("team", context.team_id), ("user", context.key_user_id))
    authenticated = [f"{name}={escaped_key_part(value)}" for name, value in named if value]
    if authenticated:
        return ",".join(authenticated)
    if context.user_id:
        return f"client_user={escaped_key_part(context.user_id)}"
    return "anonymous"


def session_key(context: RequestContext, session: str) -> str:
    """The prefix of every breaker key of this caller's session: ``session:<caller>:<session id>``."""
    return f"session:{caller_scope(context)}:{escaped_key_part(session)}"


def _unavailable() -> RequestRejected:
    """fail_closed: a request with a session is refused while the store cannot count it."""
    return RequestRejected(
        "The agent circuit breaker cannot reach its store; requests with a session are refused "
        "until it answers (budget_settings.on_store_error: fail_closed).",
        status=503,
        error_type="budget_store_unavailable",
        headers={"Retry-After": "5"},
    )


class BreakerStage:
    """Stops agent sessions that loop, take too many steps or spend too much."""

    name = "breaker"

    def __init__(
        self,
        config: BreakerConfig,
        metrics: CostKitMetrics | None = None,
        fail_closed: bool = False,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self._metrics = metrics
        self._fail_closed = fail_closed
        self._clock = clock
        self._spend_cap = usd_to_nano(config.max_spend_usd) if config.max_spend_usd is not None else None

    async def on_request(self, admission: Admission) -> None:
        """Look for loops, and add the session's counters and spend cap to the reservation."""
        session = admission.context.session_id
        if not self.config.enabled or not session:
            return
        base = session_key(admission.context, session)
        call, repeats = most_repeated_tool_call(admission.messages)
        if call is not None and repeats >= self.config.loop_threshold:
            name, arguments = call
            raise self._trip(
                "agent_loop_detected",
                session,
                f"the tool call {name}({arguments[:120]}) was made {repeats} times "
                f"(limit {self.config.loop_threshold - 1})",
                "the same tool call kept repeating",
            )
        ttl = self.config.inactivity_s
        fingerprint = request_fingerprint(admission.context.model, admission.messages)
        counters = (
            StoreCounter(f"{base}:steps", ttl_s=ttl, extend=True, trip_above=self.config.max_steps),
            StoreCounter(
                f"{base}:req:{fingerprint}", ttl_s=ttl, extend=True, trip_above=self.config.loop_threshold - 1
            ),
        )
        limit_keys: tuple[str, ...] = ()
        if self._spend_cap is not None:
            limit = Limit(key=f"{base}:spend", cap=self._spend_cap, expires_at=self._clock() + ttl)
            admission.extra_limits.append((limit, lambda usage: self._spend_refusal(session, usage)))
            limit_keys = (limit.key,)
        admission.counters.append(
            CounterChecks(
                counters,
                lambda index, value: self._counter_trip(session, index, value),
                _unavailable if self._fail_closed else None,
                limit_keys,
            )
        )

    def _counter_trip(self, session: str, index: int, value: int) -> RequestRejected | RequestAnswered:
        """The trip of counter ``index`` (0: steps, 1: this request's repeats) at ``value``."""
        if index == 0:
            return self._trip(
                "agent_step_limit",
                session,
                f"it made {value} calls (limit {self.config.max_steps})",
                "it took too many steps",
            )
        return self._trip(
            "agent_loop_detected",
            session,
            f"the same request was sent {value} times (limit {self.config.loop_threshold - 1})",
            "the same request kept repeating",
        )

    def _spend_refusal(self, session: str, usage: LimitUsage) -> RequestRejected | RequestAnswered:
        cap = self._spend_cap or 0
        detail = f"it spent {format_usd_short(usage.committed)} of its {format_usd_short(cap)} limit"
        return self._trip("agent_budget_exceeded", session, detail, "it reached its spending limit")

    def _trip(self, reason: str, session: str, detail: str, words: str) -> RequestRejected | RequestAnswered:
        """The error (or final answer) of a trip, counted."""
        if self._metrics is not None:
            self._metrics.tripped(reason)
        if self.config.on_trip == "final_message":
            return RequestAnswered(
                self.config.final_message.format(reason=words), reason, headers={HEADER_STOPPED: reason}
            )
        return RequestRejected(
            f"Agent session {session!r} stopped by the costkit circuit breaker: {detail}. "
            "Start a new session to continue.",
            status=429,
            error_type=reason,
        )

    async def on_outcome(self, outcome: Outcome) -> None:
        """Nothing after the call: the session's spend is settled with the budgets' reservation."""
