"""Prices and cost estimates in nano-dollars, from LiteLLM's price map plus config overrides.

The adapter supplies what LiteLLM knows (``PriceSource``, a token counter); this module turns it
into integers. Prices are kept as nano-dollars per *million* tokens, so per-token prices below a
nano-dollar ($0.025 per million tokens = 0.025 n$ per token) stay exact integers.

Worst-case cost before a call (what a budget must be able to absorb), for each model the request
can reach (its group's deployments and every router fallback), at the requested service tier::

    prompt_tokens x input_price + max_output_tokens x output_price x n  (+ a fixed part)

where ``prompt_tokens`` counts every billable input field, ``max_output_tokens`` is the request's
cap, else (``pricing.output_bound: model_max``) the model's own maximum output, or
(``inject_default``) ``pricing.default_max_output_tokens``, which the adapter then writes into the
request so the provider honours it. Reasoning tokens are output tokens (priced at the dearer of
the output and reasoning prices). The fixed part is what is not priced per token (images, audio
characters, rerank searches), computed by the adapter with LiteLLM's own cost functions. A model
without a known price is reported as unknown, never as $0.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
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
    tiers: tuple[tuple[str, int, int], ...] = ()
    """(service tier, input, output) in nano-dollars per million tokens: tiers priced apart (``priority``)."""

    def at_tier(self, tier: str | None) -> ModelPrice:
        """This price at a service tier: the tier's own price, or the dearest tier for ``auto``
        (the project's default tier decides), or the standard price."""
        if not tier or not self.tiers:
            return self
        if tier == "auto":
            dearest = max(self.tiers, key=lambda t: (t[2], t[1]))
            if (dearest[2], dearest[1]) <= (self.output_nano_per_mtok, self.input_nano_per_mtok):
                return self
            return replace(self, input_nano_per_mtok=dearest[1], output_nano_per_mtok=dearest[2], tiers=())
        for name, inp, out in self.tiers:
            if name == tier:
                return replace(self, input_nano_per_mtok=inp, output_nano_per_mtok=out, tiers=())
        return self

    @classmethod
    def from_per_token_usd(
        cls,
        input_usd: float,
        output_usd: float,
        max_output_tokens: int | None = None,
        source: str = "litellm",
        tiers: Mapping[str, tuple[float, float]] | None = None,
    ) -> ModelPrice:
        """From LiteLLM's ``input_cost_per_token`` / ``output_cost_per_token`` floats (and per-tier ones)."""
        return cls(
            input_nano_per_mtok=usd_per_token_to_nano_per_mtok(input_usd),
            output_nano_per_mtok=usd_per_token_to_nano_per_mtok(output_usd),
            max_output_tokens=max_output_tokens,
            source=source,
            tiers=tuple(
                (name, usd_per_token_to_nano_per_mtok(i), usd_per_token_to_nano_per_mtok(o))
                for name, (i, o) in sorted((tiers or {}).items())
            ),
        )

    def cost(self, prompt_tokens: int, completion_tokens: int) -> Nano:
        """Cost of a call, rounded up to the next nano-dollar."""
        total = prompt_tokens * self.input_nano_per_mtok + completion_tokens * self.output_nano_per_mtok
        return Nano(-(-total // _PER_MILLION))


def _per_mtok(usd_per_token: Decimal) -> int:
    return int((usd_per_token * NANO_PER_USD * _PER_MILLION).to_integral_value(rounding=ROUND_CEILING))


def usd_per_token_to_nano_per_mtok(usd: float) -> int:
    """A LiteLLM per-token (or per-unit) dollar float as nano-dollars per million, rounded up."""
    return _per_mtok(Decimal(repr(float(usd))))


def usd_to_nano_ceil(usd: float) -> Nano:
    """A LiteLLM dollar amount as nano-dollars, rounded up (an estimate never under-counts)."""
    return Nano(int((Decimal(repr(float(usd))) * NANO_PER_USD).to_integral_value(rounding=ROUND_CEILING)))


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
    inject_max_tokens: int | None = None
    """Set when the bound holds only if the request carries this output cap (``output_bound:
    inject_default``, or a model whose maximum output is unknown): the adapter writes it in."""
    unbounded: str | None = None
    """The endpoint, when its cost cannot be bounded before the call (batches, pass-through,
    realtime, an unknown call type): ``budget_settings.unbounded_calls`` decides."""

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
        override = self._override(model, deployment_model)
        if override is None:
            return base
        return _apply(override, base)

    def _override(self, model: str, deployment_model: str | None) -> ModelPricing | None:
        """The config override of a group, else of its deployment's model (the group's wins)."""
        return self._overrides.get(model) or (self._overrides.get(deployment_model) if deployment_model else None)

    def configured_price(self, model: str, deployment_model: str | None = None) -> ModelPrice | None:
        """The price of a call when ``pricing.models`` sets a token price for ``model`` (a group) or
        ``deployment_model`` (the same lookup as ``price``, so the hold and the commit agree); None
        when no override sets one (an override of ``max_output_tokens`` alone), or when the
        override sets half a price of a model LiteLLM does not know: LiteLLM's cost stands."""
        override = self._override(model, deployment_model)
        if override is None or (
            override.input_usd_per_million_tokens is None and override.output_usd_per_million_tokens is None
        ):
            return None
        return self.price(model, deployment_model)

    def actual_cost(
        self,
        model: str,
        deployment_model: str | None,
        prompt_tokens: int,
        completion_tokens: int,
        *,
        hold: Nano | None = None,
    ) -> Nano | None:
        """What a finished call cost at its configured price (``configured_price``); None when the
        config does not price it (LiteLLM's ``response_cost`` stands).

        Every prompt token (cached ones and cache writes included) is charged at the input price and
        every completion token (reasoning and audio ones included) at the output price: the override
        knows no other price, and it is the price both ways (a negotiated price below LiteLLM's is
        committed as it is). A call that reports no tokens at all (its usage is missing) costs
        ``hold``, its worst case, counted as spent; never $0."""
        price = self.configured_price(model, deployment_model)
        if price is None:
            return None
        prompt, completion = max(0, prompt_tokens), max(0, completion_tokens)
        if prompt + completion == 0:
            return hold
        return price.cost(prompt, completion)

    def worst_case(
        self,
        model: str,
        prompt_tokens: int,
        max_tokens: int | None,
        n: int = 1,
        deployment_model: str | None = None,
        *,
        fallbacks: Sequence[str] = (),
        service_tier: str | None = None,
        output: bool = True,
        fixed: int = 0,
    ) -> CostEstimate:
        """Worst-case cost of a request before it is sent: the dearest of ``model`` and its
        ``fallbacks`` at ``service_tier``; ``output=False`` for calls that write no tokens
        (embeddings); ``fixed`` adds what is not priced per token (nano-dollars)."""
        candidates = [self.price(model, deployment_model), *(self.price(f) for f in fallbacks if f != model)]
        cap = self._config.default_max_output_tokens
        requested = max_tokens if max_tokens is not None and max_tokens > 0 else None
        inject: int | None = None
        if not output:
            outs = [0 for _ in candidates]
        elif requested is not None:
            outs = [requested for _ in candidates]
        elif self._config.output_bound == "model_max" and all(p is None or p.max_output_tokens for p in candidates):
            outs = [p.max_output_tokens or 0 for p in candidates if p is not None]
        else:
            outs, inject = [cap for _ in candidates], cap
        max_out = max(outs) if outs else 0
        if any(p is None for p in candidates):
            return CostEstimate(None, prompt_tokens, max_out, None)  # no bound to keep: nothing to inject
        best: tuple[int, ModelPrice] | None = None
        for price, out in zip(candidates, outs, strict=True):
            assert price is not None
            tiered = price.at_tier(service_tier)
            one = prompt_tokens * tiered.input_nano_per_mtok + out * tiered.output_nano_per_mtok * max(1, n)
            if best is None or one > best[0]:
                best = (one, tiered)
        assert best is not None
        amount = Nano(-(-best[0] // _PER_MILLION) + max(0, fixed))
        return CostEstimate(amount, prompt_tokens, max_out, best[1], inject)

    @property
    def configures_prices(self) -> bool:
        """True when ``pricing.models`` overrides any model (a finished call may then be priced here)."""
        return bool(self._overrides)

    @property
    def transcription_bytes_per_second(self) -> int:
        """Bytes of uploaded audio assumed per second of it (bounds a transcription's billed seconds)."""
        return self._config.transcription_bytes_per_second

    @property
    def image_input_tokens(self) -> int | None:
        """Input tokens held per image part (None: LiteLLM's high-detail upper bound)."""
        return self._config.image_input_tokens

    @property
    def default_max_output_tokens(self) -> int:
        """The output cap assumed (and injected) when a request sets none and the bound needs one."""
        return self._config.default_max_output_tokens


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
        tiers=base.tiers if base is not None and inp is None and out is None else (),
    )
