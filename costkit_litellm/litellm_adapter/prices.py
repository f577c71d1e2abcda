"""LiteLLM's knowledge of prices and tokens, as a ``PriceSource`` and a token counter."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import litellm
from litellm.litellm_core_utils.llm_cost_calc.utils import get_service_tier_cost_key

from costkit_litellm.pricing import ModelPrice

log = logging.getLogger(__name__)

RouterGetter = Callable[[], Any]
SERVICE_TIERS = ("flex", "priority")
"""OpenAI's service tiers priced apart in LiteLLM's price map (``auto`` is priced at the dearest)."""
FALLBACK_KINDS = ("fallbacks", "context_window_fallbacks", "content_policy_fallbacks")
"""The router's fallback settings, and the request fields of the same names that replace them per call."""


_PRICE_KEYS = ("input_cost_per_token", "output_cost_per_token", "input_cost_per_character", "input_cost_per_second")


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _price_from_info(info: Mapping[str, Any]) -> ModelPrice | None:
    """A per-token price from LiteLLM's model info (or a deployment's params), with its service
    tiers (``input_cost_per_token_priority``...); reasoning tokens are output, at the dearer price."""
    inp, out = _number(info.get("input_cost_per_token")), _number(info.get("output_cost_per_token"))
    if inp is None and out is None:
        return None
    inp, out = inp or 0.0, out or 0.0
    # Reasoning and audio output tokens are output too, billed at their own (dearer) prices: the
    # worst case prices every output token at the dearest of them.
    for kind in ("output_cost_per_reasoning_token", "output_cost_per_audio_token"):
        out = max(out, _number(info.get(kind)) or 0.0)
    tiers: dict[str, tuple[float, float]] = {}
    for tier in SERVICE_TIERS:
        tier_in = _number(info.get(get_service_tier_cost_key("input_cost_per_token", tier)))
        tier_out = _number(info.get(get_service_tier_cost_key("output_cost_per_token", tier)))
        if tier_in is not None or tier_out is not None:
            tiers[tier] = (tier_in if tier_in is not None else inp, max(tier_out if tier_out is not None else out, 0))
    max_out = info.get("max_output_tokens") or info.get("max_tokens")
    return ModelPrice.from_per_token_usd(inp, out, int(max_out) if max_out else None, tiers=tiers)


def _priced_name(model: str) -> str:
    """The price map's name of a provider model: an ``openai/responses/gpt-4o`` deployment (chat
    bridged to the Responses API) is priced as ``openai/gpt-4o``."""
    provider, sep, rest = model.partition("/responses/")
    if sep and provider and "/" not in provider:
        return f"{provider}/{rest}"
    return model.removeprefix("responses/")


def _model_info(model: str) -> ModelPrice | None:
    name = _priced_name(model)
    try:
        info = litellm.get_model_info(model=name)
    except Exception:  # litellm raises a bare Exception for unmapped models
        return None
    # A Router registers each deployment's model, with no prices when the map has none (an empty
    # entry that get_model_info reports at $0): unknown, not free.
    registered = litellm.model_cost.get(info.get("key") or name)
    if isinstance(registered, Mapping) and not any(k in registered for k in _PRICE_KEYS):
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

    def fallbacks(self, model: str, requested: Any = None) -> list[str]:
        """Every model group a request for ``model`` can end up on: the router's fallbacks (all
        kinds, followed transitively, plus its default fallbacks) and the request's own (``requested``:
        names, ``{"model": name}`` dicts, or the router's ``{group: [targets]}`` form, of any kind)."""
        router = self._router()
        graph: dict[str, list[str]] = {}
        defaults: list[str] = []
        for setting in FALLBACK_KINDS:
            for entry in (getattr(router, setting, None) or []) if router is not None else []:
                if isinstance(entry, Mapping):
                    for group, targets in entry.items():
                        graph.setdefault(str(group), []).extend(_names(targets))
        if router is not None:
            defaults = _names(getattr(router, "default_fallbacks", None) or [])
        for entry in requested if isinstance(requested, (list, tuple)) else []:
            if isinstance(entry, Mapping) and not isinstance(entry.get("model"), str):
                for group, targets in entry.items():  # the router's form, {group: [targets]}
                    graph.setdefault(str(group), []).extend(_names(targets))
        found: dict[str, None] = {}
        pending = [*_names(requested), *graph.get(model, []), *graph.get("*", []), *defaults]
        while pending:
            name = pending.pop()
            if name == model or name in found:
                continue
            found[name] = None
            pending.extend(graph.get(name, []))
        return list(found)

    def deployment_model(self, model: str) -> str | None:
        """The provider model behind a group (its first deployment), for token counting."""
        for params in self.deployments(model):
            name = params.get("model")
            if isinstance(name, str):
                return name
        return None

    def _deployment(self, model_id: object) -> Any:
        """The router's deployment of ``model_id`` (LiteLLM's ``model_id`` in the logging payload or
        the response's hidden params); None when there is no router or it does not know the id."""
        router = self._router()
        if router is None or not isinstance(model_id, str) or not model_id:
            return None
        try:
            return router.get_deployment(model_id=model_id)
        except Exception:
            return None

    def served_by(self, group: str, model_id: object = None) -> tuple[str, str | None]:
        """The model group and provider model that served a call: the router's deployment
        ``model_id`` when it knows it, else ``group`` and its first deployment's model (what the
        estimate priced)."""
        deployment = self._deployment(model_id)
        name = getattr(deployment, "model_name", None)
        model = getattr(getattr(deployment, "litellm_params", None), "model", None)
        if isinstance(name, str) and name and isinstance(model, str) and model:
            return name, model
        return group, self.deployment_model(group)

    def served_price(self, group: str, model_id: object = None) -> ModelPrice | None:
        """The price of the deployment that served a call of ``group``: its own ``litellm_params`` prices,
        else LiteLLM's for its model; the group's worst case when the router does not know ``model_id``."""
        params: Any = getattr(self._deployment(model_id), "litellm_params", None)
        info = params.model_dump() if hasattr(params, "model_dump") else params
        if isinstance(info, Mapping):
            return _price_from_info(info) or _model_info(str(info.get("model", "")))
        return self.price(group)

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


def _names(value: Any) -> list[str]:
    """Model group names from a fallbacks value (a list of names, or of ``{"model": ...}`` dicts)."""
    if isinstance(value, str):
        return [value]
    names: list[str] = []
    for item in value if isinstance(value, (list, tuple)) else []:
        if isinstance(item, str):
            names.append(item)
        elif isinstance(item, Mapping) and isinstance(item.get("model"), str):
            names.append(item["model"])
    return names


def count_prompt_tokens(model: str | None, messages: Any) -> int:
    """Prompt tokens by LiteLLM's counter; a rough len/4 when it cannot count."""
    if not isinstance(messages, list):
        return 0
    try:
        return int(litellm.token_counter(model=model or "gpt-4o", messages=messages))
    except Exception:
        text = "".join(str(m.get("content", "")) for m in messages if isinstance(m, Mapping))
        return max(1, len(text) // 4)


class LiteLLMModelCatalog:
    """The models the operator configured, as the ``model`` label's allowed values (a ``ModelCatalog``).

    With a router: its model groups, the provider models its deployments call, its
    ``model_group_alias`` names and routing groups; a name a wildcard group (``openai/*``) matches
    counts as that group's pattern. Without a router (plain ``litellm.acompletion``): the names in
    LiteLLM's price map. Anything else is not configured (the caller counts it as ``other``). The
    router's list is read again when it changes (or every ``refresh_s``), so models added at run
    time appear.
    """

    def __init__(self, router: RouterGetter | None = None, refresh_s: float = 10.0) -> None:
        self._router = router or (lambda: None)
        self._refresh_s = refresh_s
        self._stamp: tuple[int, int, int, int] | None = None
        self._built_at = 0.0
        self._names: frozenset[str] = frozenset()
        self._patterns: tuple[tuple[re.Pattern[str], str], ...] = ()

    def resolve(self, model: str) -> str | None:
        """``model`` itself when configured, the wildcard group's pattern it falls under, else None."""
        router = self._router()
        if router is None:
            return model if model in litellm.model_cost else None
        self._refresh(router)
        if model in self._names:
            return model
        for regex, pattern in self._patterns:
            if regex.fullmatch(model):
                return pattern
        return None

    def _refresh(self, router: Any) -> None:
        deployments = getattr(router, "model_list", None) or []
        aliases = getattr(router, "model_group_alias", None) or {}
        groups = getattr(router, "routing_groups", None) or {}
        stamp = (id(router), id(deployments), len(deployments), len(aliases) + len(groups))
        now = time.monotonic()
        if stamp == self._stamp and now - self._built_at < self._refresh_s:
            return
        names: set[str] = set()
        patterns: dict[str, None] = {}
        for deployment in deployments:
            if not isinstance(deployment, Mapping):
                continue
            group = deployment.get("model_name")
            params = deployment.get("litellm_params") or {}
            provider_model = params.get("model") if isinstance(params, Mapping) else None
            for name in (group, provider_model):
                if isinstance(name, str) and name and "*" in name:
                    patterns[name] = None
                elif isinstance(name, str) and name:
                    names.add(name)
        names.update(str(name) for name in (*aliases, *(groups if isinstance(groups, Mapping) else ())))
        self._names = frozenset(names)
        self._patterns = tuple(
            (re.compile(".*".join(re.escape(part) for part in pattern.split("*"))), pattern) for pattern in patterns
        )
        self._stamp, self._built_at = stamp, now
