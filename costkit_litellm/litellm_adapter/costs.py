"""LiteLLM's cost figures (floats in dollars) as nano-dollars."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from costkit_litellm.money import Nano, usd_to_nano


def cost_nano(raw: Any) -> Nano | None:
    """A cost LiteLLM reported (``response_cost``), in nano-dollars; None when absent or unreadable."""
    if raw is None:
        return None
    try:
        return usd_to_nano(float(raw))
    except (TypeError, ValueError):
        return None


def response_cost(response: Any) -> Nano | None:
    """LiteLLM's cost of a response object (from its hidden params), in nano-dollars."""
    hidden = getattr(response, "_hidden_params", None)
    return cost_nano(hidden.get("response_cost")) if isinstance(hidden, Mapping) else None


def _count(usage: Any, names: tuple[str, ...]) -> int:
    for name in names:
        value = usage.get(name) if isinstance(usage, Mapping) else getattr(usage, name, None)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return 0


def usage_tokens(response: Any) -> tuple[int, int]:
    """(prompt, completion) tokens of a response's ``usage`` (OpenAI's ``prompt_tokens`` /
    ``completion_tokens``, or the Responses and Anthropic ``input_tokens`` / ``output_tokens``);
    (0, 0) when it has none."""
    usage = response.get("usage") if isinstance(response, Mapping) else getattr(response, "usage", None)
    if usage is None:
        return 0, 0
    return _count(usage, ("prompt_tokens", "input_tokens")), _count(usage, ("completion_tokens", "output_tokens"))
