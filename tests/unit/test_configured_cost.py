"""A price set under ``costkit.pricing.models`` prices the commit, the ledger and the cost header, not only the hold."""

from __future__ import annotations

import math
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from litellm import ModelResponse
from prometheus_client import CollectorRegistry

from costkit_litellm.config import ModelPricing, PricingConfig, parse_config
from costkit_litellm.kit import HEADER_COST, CostKit
from costkit_litellm.litellm_adapter.callback import CostKitCallback
from costkit_litellm.pricing import ModelPrice, Pricing
from costkit_litellm.store import MemoryStore

MINI = ModelPrice.from_per_token_usd(1.5e-07, 6e-07, max_output_tokens=16384)  # $0.15 / $0.60 per million
OVERRIDE_IN, OVERRIDE_OUT = 2_000, 8_000  # n$ per token: $2 / $8 per million


class FixedPrices:
    """A price source that knows a fixed table."""

    def __init__(self, table: dict[str, ModelPrice]) -> None:
        self.table = table

    def price(self, model: str) -> ModelPrice | None:
        return self.table.get(model)


def pricing(models: Mapping[str, ModelPricing]) -> Pricing:
    return Pricing(PricingConfig(models=dict(models)), FixedPrices({"mini": MINI, "openai/gpt-4o-mini": MINI}))


TWO_EIGHT = ModelPricing(input_usd_per_million_tokens=Decimal(2), output_usd_per_million_tokens=Decimal(8))


class TestActualCost:
    def test_a_group_override_prices_the_usage(self) -> None:
        """An override of the group prices the call's own tokens: 10 x $2/M + 20 x $8/M = 180,000 n$."""
        assert pricing({"mine": TWO_EIGHT}).actual_cost("mine", "hosted_vllm/mine", 10, 20) == 180_000

    def test_a_deployment_model_override_prices_the_usage(self) -> None:
        """An override keyed by the provider model applies to the group it serves (the lookup of the hold)."""
        assert pricing({"hosted_vllm/mine": TWO_EIGHT}).actual_cost("mine", "hosted_vllm/mine", 10, 20) == 180_000

    def test_the_group_override_wins_over_the_deployment_one(self) -> None:
        """Both keyed: the group's price is used, as for the hold."""
        cheap = ModelPricing(input_usd_per_million_tokens=Decimal(0), output_usd_per_million_tokens=Decimal(0))
        prices = pricing({"mine": TWO_EIGHT, "hosted_vllm/mine": cheap})
        assert prices.actual_cost("mine", "hosted_vllm/mine", 10, 20) == 180_000

    def test_an_upward_override_of_a_known_model_commits_at_the_override(self) -> None:
        """gpt-4o-mini overridden to $100/M is charged $100/M, not LiteLLM's $0.15 / $0.60."""
        hundred = ModelPricing(input_usd_per_million_tokens=Decimal(100), output_usd_per_million_tokens=Decimal(100))
        assert pricing({"mini": hundred}).actual_cost("mini", "openai/gpt-4o-mini", 10, 20) == 30 * 100_000

    def test_a_downward_override_is_the_price_too(self) -> None:
        """The override is the price both ways: a negotiated price below LiteLLM's is committed as it is."""
        low = ModelPricing(input_usd_per_million_tokens=Decimal("0.01"), output_usd_per_million_tokens=Decimal("0.02"))
        assert pricing({"mini": low}).actual_cost("mini", None, 1_000, 1_000) == 30_000

    def test_a_half_override_keeps_the_other_price_of_litellm(self) -> None:
        """Only the input price set: completion tokens are charged at LiteLLM's output price."""
        half = ModelPricing(input_usd_per_million_tokens=Decimal(2))
        assert pricing({"mini": half}).actual_cost("mini", None, 10, 20) == 10 * 2_000 + 20 * 600

    def test_no_token_price_in_the_config_leaves_litellms_cost(self) -> None:
        """No override, or one of max_output_tokens alone: None (LiteLLM's response_cost stands)."""
        assert pricing({}).actual_cost("mini", None, 10, 20) is None
        assert pricing({"mini": ModelPricing(max_output_tokens=100)}).actual_cost("mini", None, 10, 20) is None

    def test_half_a_price_of_an_unknown_model_is_no_price(self) -> None:
        """An unknown model with only its input price set has no price for the commit either (nor for the hold)."""
        half = ModelPricing(input_usd_per_million_tokens=Decimal(2))
        assert pricing({"mine": half}).actual_cost("mine", None, 10, 20) is None

    def test_missing_usage_costs_the_hold(self) -> None:
        """A call that reports no tokens costs its hold (counted as spent), never $0."""
        assert pricing({"mine": TWO_EIGHT}).actual_cost("mine", None, 0, 0, hold=987_654) == 987_654

    @given(
        prompt=st.integers(1, 200_000),  # 0 tokens in all: usage missing (the hold)
        cap=st.integers(1, 100_000),
        used=st.floats(0, 1),
        in_usd=st.decimals(0, 100, places=6),
        out_usd=st.decimals(0, 100, places=6),
    )
    def test_the_commit_never_exceeds_the_hold_within_the_estimate(
        self, prompt: int, cap: int, used: float, in_usd: Decimal, out_usd: Decimal
    ) -> None:
        """At the same configured price, a call within its estimated tokens commits at most its hold,
        exactly ceil((prompt x input + completion x output) / 1e6) nano-dollars."""
        override = ModelPricing(input_usd_per_million_tokens=in_usd, output_usd_per_million_tokens=out_usd)
        prices = pricing({"mine": override})
        estimate = prices.worst_case("mine", prompt, cap)
        completion = int(cap * used)
        cost = prices.actual_cost("mine", None, prompt, completion, hold=estimate.amount)
        assert estimate.amount is not None and cost is not None
        assert cost <= estimate.amount
        exact = (prompt * in_usd + completion * out_usd) * 1000
        assert cost == math.ceil(exact)


class Router:
    """The two calls of LiteLLM's router the pack makes here: a group's deployments, a deployment by id."""

    def __init__(self, deployments: Mapping[str, tuple[str, str]]) -> None:
        self.deployments = deployments  # id -> (group, provider model)

    def get_model_list(self, model_name: str) -> list[dict[str, Any]]:
        return [{"litellm_params": {"model": m}} for g, m in self.deployments.values() if g == model_name]

    def get_deployment(self, model_id: str) -> Any:
        found = self.deployments.get(model_id)
        if found is None:
            return None
        return type("Deployment", (), {"model_name": found[0], "litellm_params": type("P", (), {"model": found[1]})})


def callback(models: Mapping[str, Any]) -> CostKitCallback:
    config = parse_config({"pricing": {"models": dict(models)}})
    router = Router({"id-mine": ("mine", "hosted_vllm/mine"), "id-mini": ("mini", "openai/gpt-4o-mini")})
    return CostKitCallback(CostKit(config, store=MemoryStore(), registry=CollectorRegistry()), lambda: router)


TWO_EIGHT_YAML = {"input_usd_per_million_tokens": 2, "output_usd_per_million_tokens": 8}


async def admitted(cb: CostKitCallback, model: str) -> dict[str, Any]:
    data: dict[str, Any] = {"model": model, "max_tokens": 40, "messages": [{"role": "user", "content": "hello"}]}
    await cb.admit(data)
    return data


def success_kwargs(data: Mapping[str, Any], model_id: str, prompt: int, completion: int, **slo: Any) -> dict[str, Any]:
    payload = {
        "call_type": "acompletion",
        "model": "mine",
        "model_group": data["model"],
        "model_id": model_id,
        "response_cost": 0.0,
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        **slo,
    }
    return {"standard_logging_object": payload, "litellm_params": {"metadata": data["metadata"]}}


class TestCallback:
    async def test_the_outcome_of_an_override_priced_call_costs_its_usage(self) -> None:
        """LiteLLM reports $0 for a model it does not know; the outcome costs the usage at the override."""
        cb = callback({"mine": TWO_EIGHT_YAML})
        data = await admitted(cb, "mine")
        outcome = cb.outcome("success", success_kwargs(data, "id-mine", 10, 20), None, None)
        assert outcome is not None and outcome.cost == 180_000

    async def test_the_served_deployment_prices_the_outcome(self) -> None:
        """An override keyed by a provider model applies to the deployment the router reports (model_id)."""
        hundred = {"input_usd_per_million_tokens": 100, "output_usd_per_million_tokens": 100}
        cb = callback({"openai/gpt-4o-mini": hundred})
        data = await admitted(cb, "mini")
        outcome = cb.outcome("success", success_kwargs(data, "id-mini", 10, 20, response_cost=1.35e-05), None, None)
        assert outcome is not None and outcome.cost == 30 * 100_000

    async def test_missing_usage_commits_the_hold(self) -> None:
        """No usage in the payload: the outcome costs the request's hold, not LiteLLM's $0."""
        cb = callback({"mine": TWO_EIGHT_YAML})
        data = await admitted(cb, "mine")
        hold = cb.inflight.live(data["metadata"]["costkit"]["id"])
        assert hold is not None and hold.admission.estimate.amount
        outcome = cb.outcome("success", success_kwargs(data, "id-mine", 0, 0), None, None)
        assert outcome is not None and outcome.cost == hold.admission.estimate.amount

    async def test_a_litellm_cache_hit_and_a_failure_keep_litellms_cost(self) -> None:
        """A hit of LiteLLM's own cache and a failed attempt that produced nothing are not re-priced (both
        cost what LiteLLM says); a failed attempt that produced output (a stream broken off) costs its hold."""
        cb = callback({"mine": TWO_EIGHT_YAML})
        data = await admitted(cb, "mine")
        failed = cb.outcome("failure", success_kwargs(data, "id-mine", 10, 0), None, None)
        assert failed is not None and failed.cost == 0
        hold = cb.inflight.live(data["metadata"]["costkit"]["id"])
        assert hold is not None and hold.admission.estimate.amount
        broken = cb.outcome("failure", success_kwargs(data, "id-mine", 10, 20), None, None)
        assert broken is not None and broken.cost == hold.admission.estimate.amount
        hit = cb.outcome("success", success_kwargs(data, "id-mine", 10, 20, cache_hit=True), None, None)
        assert hit is not None and hit.cost == 0

    async def test_without_an_override_litellms_cost_stands(self) -> None:
        """A model the config does not price is committed at LiteLLM's response_cost, as before."""
        cb = callback({"other": TWO_EIGHT_YAML})
        data = await admitted(cb, "mini")
        outcome = cb.outcome("success", success_kwargs(data, "id-mini", 10, 20, response_cost=1.35e-05), None, None)
        assert outcome is not None and outcome.cost == 13_500

    async def test_the_cost_header_uses_the_override(self) -> None:
        """x-costkit-cost-usd of a non-streaming answer is its usage at the override price."""
        cb = callback({"mine": TWO_EIGHT_YAML})
        data = await admitted(cb, "mine")
        response = ModelResponse(model="mine", usage={"prompt_tokens": 10, "completion_tokens": 20, "total_tokens": 30})
        response._hidden_params.update({"model_id": "id-mine", "response_cost": 0.0})
        assert cb.headers_for(data, response)[HEADER_COST] == "0.000180000"
