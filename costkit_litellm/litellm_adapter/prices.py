"""LiteLLM's knowledge of prices and tokens, as a ``PriceSource`` and a token counter."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import litellm

from costkit_litellm.pricing import ModelPrice

log = logging.getLogger(__name__)

RouterGetter = Callable[[], Any]


def _price_from_info(info: Mapping[str, Any]) -> ModelPrice | None:
    inp, out = info.get("input_cost_per_token"), info.get("output_cost_per_token")
    if inp is None or out is None:
        return None
    max_out = info.get("max_output_tokens") or info.get("max_tokens")
    return ModelPrice.from_per_token_usd(float(inp), float(out), int(max_out) if max_out else None)


def _model_info(model: str) -> ModelPrice | None:
    try:
        info = litellm.get_model_info(model=model)
    except Exception:  # litellm raises a bare Exception for unmapped models
        return None
    return _price_from_info(info)


class LiteLLMPriceSource:
    """Prices of model groups (via the router's deployments) and of model names (price map).

    A group with several deployments is priced at its most expensive one: the worst case.
    Results are cached per name; the router's deployment list is read at lookup time.
    """

    def __init__(self, router: RouterGetter | None = None) -> None:
        self._router = router or (lambda: None)
        self._cache: dict[str, ModelPrice | None] = {}

    def deployments(self, model: str) -> Sequence[Mapping[str, Any]]:
        """The ``litellm_params`` of the router's deployments for a model group."""
        router = self._router()
        if router is None:
            return []
        try:
            found = router.get_model_list(model_name=model) or []
        except Exception:
            return []
        return [d.get("litellm_params") or {} for d in found if isinstance(d, Mapping)]

    def deployment_model(self, model: str) -> str | None:
        """The provider model behind a group (its first deployment), for token counting."""
        for params in self.deployments(model):
            name = params.get("model")
            if isinstance(name, str):
                return name
        return None

    def price(self, model: str) -> ModelPrice | None:
        """Worst-case price of a group or a model name; None when LiteLLM does not know it."""
        if model in self._cache:
            return self._cache[model]
        prices: list[ModelPrice] = []
        unknown = False
        for params in self.deployments(model):
            price = _price_from_info(params) or _model_info(str(params.get("model", "")))
            if price is None:
                unknown = True
            else:
                prices.append(price)
        if not prices and not unknown:
            direct = _model_info(model)
            prices = [direct] if direct else []
        result = (
            None
            if unknown or not prices
            else max(prices, key=lambda p: (p.output_nano_per_mtok, p.input_nano_per_mtok))
        )
        self._cache[model] = result
        return result


def count_prompt_tokens(model: str | None, messages: Any) -> int:
    """Prompt tokens by LiteLLM's counter; a rough len/4 when it cannot count."""
    if not isinstance(messages, list):
        return 0
    try:
        return int(litellm.token_counter(model=model or "gpt-4o", messages=messages))
    except Exception:
        text = "".join(str(m.get("content", "")) for m in messages if isinstance(m, Mapping))
        return max(1, len(text) // 4)
