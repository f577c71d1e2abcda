"""Prices and cost estimates in nano-dollars, from LiteLLM's price map plus config overrides.

The adapter supplies what LiteLLM knows (``PriceSource``, a token counter); this module turns it
into integers. Prices are kept as nano-dollars per *million* tokens, so per-token prices below a
nano-dollar ($0.025 per million tokens = 0.025 n$ per token) stay exact integers.

Worst-case cost before a call (what a budget must be able to absorb)::

    prompt_tokens x input_price + max_output_tokens x output_price x n

where ``max_output_tokens`` is the request's ``max_tokens``, else the model's maximum output,
capped by ``pricing.default_max_output_tokens``. A model without a known price is reported as
unknown, never as $0.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import ROUND_CEILING, Decimal
from typing import Protocol

from costkit_litellm.config import ModelPricing, PricingConfig
from costkit_litellm.money import NANO_PER_USD, Nano

_PER_MILLION = 1_000_000


@dataclass(frozen=True, slots=True)
class ModelPrice:
    """What one model costs."""

    input_nano_per_mtok: int
    """Nano-dollars per million prompt tokens."""
    output_nano_per_mtok: int
    """Nano-dollars per million completion tokens."""
    max_output_tokens: int | None = None
    source: str = "litellm"
    """Where the price came from: ``litellm`` (its price map or deployment params) or ``config``."""

    @classmethod
    def from_per_token_usd(
        cls,
        input_usd: float,
        output_usd: float,
        max_output_tokens: int | None = None,
        source: str = "litellm",
    ) -> ModelPrice:
        """From LiteLLM's ``input_cost_per_token`` / ``output_cost_per_token`` floats."""
        return cls(
            input_nano_per_mtok=_per_mtok(Decimal(repr(float(input_usd)))),
            output_nano_per_mtok=_per_mtok(Decimal(repr(float(output_usd)))),
            max_output_tokens=max_output_tokens,
            source=source,
        )

    def cost(self, prompt_tokens: int, completion_tokens: int) -> Nano:
        """Cost of a call, rounded up to the next nano-dollar."""
        total = prompt_tokens * self.input_nano_per_mtok + completion_tokens * self.output_nano_per_mtok
        return Nano(-(-total // _PER_MILLION))


def _per_mtok(usd_per_token: Decimal) -> int:
    return int((usd_per_token * NANO_PER_USD * _PER_MILLION).to_integral_value(rounding=ROUND_CEILING))


def _usd_per_million_to_nano(usd: Decimal) -> int:
    return int((usd * NANO_PER_USD).to_integral_value(rounding=ROUND_CEILING))


class PriceSource(Protocol):
    """What the gateway knows about a model's price (LiteLLM's price map, deployment params)."""

    def price(self, model: str) -> ModelPrice | None:
        """The price of a model group or model name, None when unknown."""


@dataclass(frozen=True, slots=True)
class CostEstimate:
    """A worst-case estimate; ``amount`` is None when the model has no known price."""

    amount: Nano | None
    prompt_tokens: int
    max_output_tokens: int
    price: ModelPrice | None

    @property
    def known(self) -> bool:
        """True when the model's price is known."""
        return self.amount is not None


class Pricing:
    """Applies config overrides on top of a ``PriceSource`` and estimates worst-case costs."""

    def __init__(self, config: PricingConfig, source: PriceSource | None = None) -> None:
        self._config = config
        self._source = source
        self._overrides: Mapping[str, ModelPricing] = dict(config.models)

    def price(self, model: str, deployment_model: str | None = None) -> ModelPrice | None:
        """The effective price of ``model`` (a group name) or its deployment's model."""
        base = self._source.price(model) if self._source else None
        if base is None and deployment_model and self._source:
            base = self._source.price(deployment_model)
        override = self._overrides.get(model) or (self._overrides.get(deployment_model) if deployment_model else None)
        if override is None:
            return base
        return _apply(override, base)

    def worst_case(
        self,
        model: str,
        prompt_tokens: int,
        max_tokens: int | None,
        n: int = 1,
        deployment_model: str | None = None,
    ) -> CostEstimate:
        """Worst-case cost of a request before it is sent."""
        price = self.price(model, deployment_model)
        cap = self._config.default_max_output_tokens
        if max_tokens is not None and max_tokens > 0:
            max_out = max_tokens
        elif price is not None and price.max_output_tokens:
            max_out = min(price.max_output_tokens, cap)
        else:
            max_out = cap
        if price is None:
            return CostEstimate(None, prompt_tokens, max_out, None)
        one = prompt_tokens * price.input_nano_per_mtok + max_out * price.output_nano_per_mtok * max(1, n)
        return CostEstimate(Nano(-(-one // _PER_MILLION)), prompt_tokens, max_out, price)


def _apply(override: ModelPricing, base: ModelPrice | None) -> ModelPrice | None:
    inp = override.input_usd_per_million_tokens
    out = override.output_usd_per_million_tokens
    if base is None and (inp is None or out is None):
        return None  # half a price is not a price
    return ModelPrice(
        input_nano_per_mtok=_usd_per_million_to_nano(inp) if inp is not None else base.input_nano_per_mtok,  # type: ignore[union-attr]
        output_nano_per_mtok=_usd_per_million_to_nano(out) if out is not None else base.output_nano_per_mtok,  # type: ignore[union-attr]
        max_output_tokens=override.max_output_tokens or (base.max_output_tokens if base else None),
        source="config",
    )
