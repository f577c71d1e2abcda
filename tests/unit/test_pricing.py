"""Prices in nano-dollars per million tokens, worst-case estimates, and config overrides."""

from __future__ import annotations

from decimal import Decimal

from costkit_litellm.config import ModelPricing, PricingConfig
from costkit_litellm.pricing import ModelPrice, Pricing

GPT_4O_MINI = ModelPrice.from_per_token_usd(1.5e-07, 6e-07, max_output_tokens=16384)


class FixedPrices:
    """A price source that knows a fixed table."""

    def __init__(self, table: dict[str, ModelPrice]) -> None:
        self.table = table

    def price(self, model: str) -> ModelPrice | None:
        return self.table.get(model)


class TestModelPrice:
    def test_cost_matches_litellm_to_the_nano_dollar(self) -> None:
        """10 prompt + 20 completion tokens of gpt-4o-mini cost 13,500 n$, as LiteLLM's 1.35e-05."""
        assert GPT_4O_MINI.cost(10, 20) == 13_500

    def test_sub_nano_per_token_prices_stay_exact(self) -> None:
        """$0.025 per million tokens (0.025 n$ a token) is exact: a million tokens cost 25,000,000 n$."""
        price = ModelPrice.from_per_token_usd(2.5e-08, 3e-07)
        assert price.input_nano_per_mtok == 25_000_000
        assert price.cost(1_000_000, 0) == 25_000_000

    def test_cost_rounds_up(self) -> None:
        """A fraction of a nano-dollar rounds up: estimates never under-count."""
        price = ModelPrice.from_per_token_usd(2.5e-11, 3e-07)
        assert price.cost(1, 0) == 1
        assert price.cost(1_000_000, 0) == 25_000


class TestWorstCase:
    def setup_method(self) -> None:
        self.pricing = Pricing(PricingConfig(default_max_output_tokens=4096), FixedPrices({"mini": GPT_4O_MINI}))

    def test_uses_requested_max_tokens(self) -> None:
        """With max_tokens set, the worst case is prompt x input + max_tokens x output."""
        estimate = self.pricing.worst_case("mini", prompt_tokens=10, max_tokens=50)
        assert estimate.amount == 10 * 150 + 50 * 600
        assert estimate.max_output_tokens == 50

    def test_without_max_tokens_holds_the_model_maximum(self) -> None:
        """No output cap (output_bound: model_max): the model's own maximum (16,384), nothing injected."""
        estimate = self.pricing.worst_case("mini", prompt_tokens=10, max_tokens=None)
        assert estimate.max_output_tokens == 16_384
        assert estimate.amount == 10 * 150 + 16_384 * 600
        assert estimate.inject_max_tokens is None

    def test_inject_default_holds_and_injects_the_default(self) -> None:
        """output_bound: inject_default holds default_max_output_tokens and asks the adapter to write it in."""
        config = PricingConfig(output_bound="inject_default", default_max_output_tokens=512)
        estimate = Pricing(config, FixedPrices({"mini": GPT_4O_MINI})).worst_case("mini", 10, None)
        assert (estimate.max_output_tokens, estimate.inject_max_tokens) == (512, 512)
        assert estimate.amount == 10 * 150 + 512 * 600

    def test_unknown_model_maximum_is_injected(self) -> None:
        """A model whose maximum output is unknown cannot be bounded without a cap: the default is injected."""
        bare = ModelPrice.from_per_token_usd(1.5e-07, 6e-07)
        estimate = Pricing(PricingConfig(), FixedPrices({"bare": bare})).worst_case("bare", 0, None)
        assert estimate.inject_max_tokens == 4096

    def test_fallbacks_price_at_the_dearest(self) -> None:
        """A request that can fall back to a dearer model is held at the dearer model's price."""
        big = ModelPrice.from_per_token_usd(2.5e-06, 1e-05, max_output_tokens=16384)
        pricing = Pricing(PricingConfig(), FixedPrices({"mini": GPT_4O_MINI, "big": big}))
        estimate = pricing.worst_case("mini", 100, 50, fallbacks=["big"])
        assert estimate.amount == 100 * 2_500 + 50 * 10_000

    def test_service_tier_prices_at_the_tier(self) -> None:
        """service_tier priority is held at the priority price; auto at the dearest tier."""
        tiered = ModelPrice.from_per_token_usd(1.5e-07, 6e-07, 16384, tiers={"priority": (2.5e-07, 1e-06)})
        pricing = Pricing(PricingConfig(), FixedPrices({"mini": tiered}))
        assert pricing.worst_case("mini", 10, 50, service_tier="priority").amount == 10 * 250 + 50 * 1_000
        assert pricing.worst_case("mini", 10, 50, service_tier="auto").amount == 10 * 250 + 50 * 1_000
        assert pricing.worst_case("mini", 10, 50, service_tier="default").amount == 10 * 150 + 50 * 600

    def test_embeddings_have_no_output(self) -> None:
        """output=False (embeddings) holds the input only."""
        assert self.pricing.worst_case("mini", 10, None, output=False).amount == 10 * 150

    def test_model_max_below_cap_wins(self) -> None:
        """A model whose maximum output is below the cap is estimated at its maximum."""
        small = ModelPrice.from_per_token_usd(1e-06, 2e-06, max_output_tokens=1000)
        pricing = Pricing(PricingConfig(), FixedPrices({"small": small}))
        assert pricing.worst_case("small", 0, None).max_output_tokens == 1000

    def test_n_multiplies_the_output(self) -> None:
        """n choices multiply the output part, not the prompt."""
        one = self.pricing.worst_case("mini", 10, 50, n=1).amount
        three = self.pricing.worst_case("mini", 10, 50, n=3).amount
        assert one is not None and three is not None
        assert three - one == 2 * 50 * 600

    def test_unknown_model_is_unknown_not_free(self) -> None:
        """A model without a price is reported unknown, never $0."""
        estimate = self.pricing.worst_case("mystery", 10, 50)
        assert estimate.amount is None and not estimate.known


class TestOverrides:
    def test_override_by_group_name(self) -> None:
        """A config price for a model group replaces LiteLLM's."""
        config = PricingConfig(
            models={
                "mini": ModelPricing(input_usd_per_million_tokens=Decimal(1), output_usd_per_million_tokens=Decimal(2))
            }
        )
        price = Pricing(config, FixedPrices({"mini": GPT_4O_MINI})).price("mini")
        assert price is not None
        assert (price.input_nano_per_mtok, price.output_nano_per_mtok, price.source) == (
            10**9,
            2 * 10**9,
            "config",
        )
        assert price.max_output_tokens == 16384  # kept from LiteLLM

    def test_override_by_deployment_model_prices_an_unknown_group(self) -> None:
        """A self-hosted deployment model priced in config gives its group a price."""
        config = PricingConfig(
            models={
                "ollama/llama3": ModelPricing(
                    input_usd_per_million_tokens=Decimal("0.1"), output_usd_per_million_tokens=Decimal("0.2")
                )
            }
        )
        estimate = Pricing(config, FixedPrices({})).worst_case("local", 1_000_000, 1, deployment_model="ollama/llama3")
        assert estimate.amount == 100_000_000 + 200

    def test_half_a_price_for_an_unknown_model_is_unknown(self) -> None:
        """Overriding only the input price of a model LiteLLM does not know leaves it unknown."""
        config = PricingConfig(models={"x": ModelPricing(input_usd_per_million_tokens=Decimal(1))})
        assert Pricing(config, FixedPrices({})).price("x") is None

    def test_partial_override_keeps_the_other_price(self) -> None:
        """Overriding only the output price keeps LiteLLM's input price."""
        config = PricingConfig(models={"mini": ModelPricing(output_usd_per_million_tokens=Decimal(1))})
        price = Pricing(config, FixedPrices({"mini": GPT_4O_MINI})).price("mini")
        assert price is not None and price.input_nano_per_mtok == 150_000_000
        assert price.output_nano_per_mtok == 10**9
