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
