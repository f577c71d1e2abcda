"""The cascade: call the cheap tier first, serve its answer if it passes the checks, else escalate.

Runs inside the pre-call step (proxy hook or the application-code wrapper), after the routing
stage planned it. The cheap call goes through the router with the request's own parameters; our
logging callbacks skip it (it is accounted here, once). If its answer passes the checks it becomes
the request's ``mock_response`` on the cheap tier's model group, so LiteLLM serves it and prices
it exactly as the cheap call (its real usage) without calling anyone again. If it fails (or the
cheap call errors), an ``escalated`` outcome with its cost is recorded and the request goes on to
the routed tier; the budgets then commit both costs.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from litellm import ModelResponse

from costkit_litellm.kit import CostKit
from costkit_litellm.litellm_adapter.costs import response_cost
from costkit_litellm.money import Nano
from costkit_litellm.pipeline import Admission, Outcome
from costkit_litellm.routing.stage import HEADER_TIER, STATE_KEY
from costkit_litellm.routing.validate import AnswerValidator

log = logging.getLogger(__name__)

# What the cheap call takes from the request: OpenAI chat parameters, nothing of the proxy's.
CALL_PARAMS = frozenset(
    {
        "messages", "temperature", "top_p", "n", "stop", "max_tokens", "max_completion_tokens",
        "presence_penalty", "frequency_penalty", "logit_bias", "user", "response_format", "seed",
        "tools", "tool_choice", "parallel_tool_calls", "logprobs", "top_logprobs", "functions",
        "function_call", "reasoning_effort",
    }
)  # fmt: skip


class Cascade:
    """Executes a planned cascade for one request."""

    def __init__(
        self,
        kit: CostKit,
        call: Callable[..., Awaitable[Any]],
        marker: dict[str, Any],
        cost: Callable[[str, Any, Nano | None], Nano | None] | None = None,
    ) -> None:
        self._kit = kit
        self._call = call
        self._marker = marker
        self._cost = cost or (lambda group, response, hold: response_cost(response))
        """What the cheap answer cost: (group, response, the request's hold) -> nano-dollars (a
        ``pricing.models`` price where one applies, else LiteLLM's)."""
        self._validator = AnswerValidator(kit.config.routing.validators)

    async def run(self, data: dict[str, Any], admission: Admission) -> None:
        """Try the cheap tier; on success make its answer the request's; else escalate."""
        plan = admission.state[STATE_KEY]
        cheap, cheap_tier = plan["cascade_from"], plan["cascade_tier"]
        request = {k: v for k, v in data.items() if k in CALL_PARAMS}
        started = time.time()
        try:
            response = await self._call(model=cheap, metadata={"costkit": self._marker}, **request)
        except Exception as exc:  # any provider error escalates
            await self._escalate(admission, plan, f"{cheap_tier} failed: {type(exc).__name__}", None, None, started)
            return
        check = self._validator.check(response.model_dump(), data.get("response_format"))
        if check.ok:
            data["model"] = cheap
            data["mock_response"] = response
            plan.update(tier=cheap_tier, model=cheap, cascade="served")
            admission.headers[HEADER_TIER] = f"{cheap_tier} (cascade: the answer passed the checks)"
            return
        cost = self._cost(cheap, response, admission.estimate.amount)
        await self._escalate(admission, plan, check.reason, response, cost, started)

    async def _escalate(
        self,
        admission: Admission,
        plan: dict[str, Any],
        reason: str,
        response: ModelResponse | None,
        cost: Nano | None,
        started: float,
    ) -> None:
        usage = getattr(response, "usage", None)
        plan.update(cascade="escalated", escalated_cost=cost or 0)
        admission.headers[HEADER_TIER] = f"{plan['tier']} (escalated: {reason})"
        await self._kit.record(
            Outcome(
                kind="escalated",
                context=admission.context,
                model=plan["cascade_from"],
                deployment_model=getattr(response, "model", None),
                cost=cost if cost is not None else Nano(0),
                prompt_tokens=int(getattr(usage, "prompt_tokens", 0) or 0),
                completion_tokens=int(getattr(usage, "completion_tokens", 0) or 0),
                tier=plan["cascade_tier"],
                reason=reason,
                latency_s=time.time() - started,
                timestamp=time.time(),
            )
        )
