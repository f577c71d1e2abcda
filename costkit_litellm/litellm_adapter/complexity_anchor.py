"""LiteLLM's own ``complexity_router`` as a reference in router evaluations (the anchor).

LiteLLM 1.108.7 ships a rule-based router (``litellm.router_strategy.complexity_router``): seven
weighted keyword and length dimensions summed into a raw score, mapped to the tiers SIMPLE <
MEDIUM < COMPLEX < REASONING by fixed boundaries (0.15, 0.35, 0.60), with an override to
REASONING on two or more reasoning keywords. Its ``classify(prompt)`` runs locally with no
network and no LiteLLM Router behind it, which is all an offline evaluation needs.

Two ways to read it as a premium-tier router, both scored by ``costkit router eval``:

- ``complexity_score``: the raw weighted score (a continuous ranking);
- ``complexity_tier_rank``: its tier decision as an ordinal, 0 (SIMPLE) to 3 (REASONING); the
  threshold sweep then places the premium cut between tiers.

This is the only module of the router work that imports litellm.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
from litellm.router_strategy.complexity_router import ComplexityRouter, ComplexityTier

TIER_RANK = {
    ComplexityTier.SIMPLE: 0,
    ComplexityTier.MEDIUM: 1,
    ComplexityTier.COMPLEX: 2,
    ComplexityTier.REASONING: 3,
}
"""Built-in tiers, cheapest first (``NON_REASONING`` only appears with custom tiers)."""


@functools.lru_cache(maxsize=1)
def _router() -> Any:
    # The default config; classify() needs neither a LiteLLM Router nor any deployment.
    return ComplexityRouter(model_name="costkit-anchor", litellm_router_instance=None)  # type: ignore[arg-type]


def classify(prompt: str) -> tuple[str, float, list[str]]:
    """LiteLLM's verdict for one prompt: (tier name, raw score, signals)."""
    tier, score, signals = _router().classify(prompt)
    return str(tier.value), float(score), list(signals)


def complexity_score(prompt: str) -> float:
    """LiteLLM's raw weighted complexity score (higher = more complex)."""
    return float(_router().classify(prompt)[1])


def complexity_tier_rank(prompt: str) -> int:
    """LiteLLM's tier decision as an ordinal: 0 SIMPLE, 1 MEDIUM, 2 COMPLEX, 3 REASONING."""
    return TIER_RANK.get(_router().classify(prompt)[0], 0)


def score_prompts(prompts: Sequence[str]) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """(raw scores, tier ranks) for many prompts, one ``classify`` per prompt."""
    router = _router()
    raw = np.empty(len(prompts))
    ranks = np.empty(len(prompts))
    for i, prompt in enumerate(prompts):
        tier, score, _ = router.classify(prompt)
        raw[i] = score
        ranks[i] = TIER_RANK.get(tier, 0)
    return raw, ranks
