"""The routing stage: the virtual model ``auto`` goes to the cheapest tier that can handle the prompt.

The classifier scores the last user message (the learned one with the request's embedding, computed
here off the event loop and shared with the semantic cache, which embeds the same text with the same
local model: one embedding per request; when the cache is configured with another embedding model,
the router still needs MiniLM, the model it was trained on, and the two differ by design); a score
under the threshold goes to the first (cheapest) tier, the rest to the last. A tier marked
``cascade`` is reached through the cheapest one: the adapter calls the cheap tier first and
escalates only when its answer fails the checks (``routing.validate``), so ``state["routing"]``
tells it what to do. Requests naming a concrete model are left alone unless their team or key is
forced.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from costkit_litellm.embeddings import Embedder, EmbedderUnavailable
from costkit_litellm.errors import CostKitError
from costkit_litellm.money import Nano
from costkit_litellm.pipeline import Admission, Outcome
from costkit_litellm.pricing import CostEstimate, Pricing
from costkit_litellm.routing.classifiers import Classifier
from costkit_litellm.routing.config import RoutingConfig, TierConfig
from costkit_litellm.routing.rules import RuleClassifier

log = logging.getLogger(__name__)

HEADER_TIER = "x-costkit-tier"
STATE_KEY = "routing"
DEFAULT_THRESHOLD = 0.5


def build_classifier(config: RoutingConfig, embedder: Embedder | None) -> tuple[Classifier, float]:
    """The configured classifier and its threshold; a learned model file is loaded (and checked) now."""
    if config.classifier == "rules":
        return RuleClassifier(), config.threshold if config.threshold is not None else DEFAULT_THRESHOLD
    from costkit_litellm.routing.learned import FallbackClassifier, LearnedClassifier, load_model

    model = load_model(config.model_path or "")
    # The stage hands it the request's vector (computed off the event loop, shared with the cache);
    # it never embeds on its own, so a request never costs a second embedding.
    learned = LearnedClassifier(model, embedder, source=config.model_path or "", embed_inline=False)
    if config.threshold is not None:
        threshold = config.threshold
    elif config.target_premium_share is not None:
        threshold = threshold_for_share(model.thresholds, config.target_premium_share, model.threshold)
    else:
        threshold = model.threshold
    return FallbackClassifier(learned, RuleClassifier()), threshold


def threshold_for_share(thresholds: Mapping[str, Any], share: float, default: float) -> float:
    """The model's calibrated threshold for the premium share nearest to ``share``."""
    table = thresholds.get("by_premium_share")
    if not isinstance(table, Mapping) or not table:
        return default
    nearest = min(table, key=lambda key: abs(float(key) - share))
    return float(table[nearest])


class RoutingStage:
    """Rewrites requests for the virtual model to a tier's model group."""

    name = "routing"

    def __init__(
        self,
        config: RoutingConfig,
        classifier: Classifier,
        threshold: float,
        pricing: Callable[[], Pricing],
        embedder: Callable[[], Embedder] | None = None,
    ) -> None:
        self.config = config
        self._classifier = classifier
        self._threshold = threshold
        self._pricing = pricing
        self._embedder = embedder
        self._cheapest = config.tiers[0]
        self._premium = config.tiers[-1]
        self._forced_teams = frozenset(config.force.teams)
        self._forced_keys = frozenset(config.force.api_keys)

    def _applies(self, admission: Admission) -> bool:
        ctx = admission.context
        if ctx.model == self.config.virtual_model:
            return True
        return bool(
            (ctx.team_id and ctx.team_id in self._forced_teams)
            or (ctx.api_key_hash and ctx.api_key_hash in self._forced_keys)
            or (ctx.api_key_alias and ctx.api_key_alias in self._forced_keys)
        )

    async def on_request(self, admission: Admission) -> None:
        """Choose the tier; set the model, the estimate, the header and the cascade plan."""
        if not self.config.enabled or not self._applies(admission):
            return
        text = admission.last_user_text()
        prompt = text or ""
        vector = None
        if self._classifier.needs_embedding and self._embedder is not None:
            try:
                embedder = self._embedder()
                # The cache embeds the same text (the last user message) with the same embedder:
                # ``Admission.vectors`` keeps it, so the cache stage reuses this vector.
                vector = (
                    await admission.last_user_vector(embedder) if text is not None else (await embedder.embed([""]))[0]
                )
            except (EmbedderUnavailable, CostKitError, OSError) as exc:
                log.warning("costkit: no embedding for routing (%s); the classifier falls back", exc)
        decision = self._classifier.score(prompt, vector)
        premium = decision.score >= self._threshold
        tier = self._premium if premium else self._cheapest
        comparison = ">=" if premium else "<"
        why = f"score {decision.score:.2f} {comparison} {self._threshold:.2f}: {decision.reason}"
        params = admission.context.params
        state: dict[str, Any] = {
            "tier": tier.name,
            "model": tier.model,
            "premium_model": self._premium.model,
            "score": round(decision.score, 4),
        }
        cascade = tier.cascade and not params.stream and tier is not self._cheapest
        if cascade:
            state.update(cascade_from=self._cheapest.model, cascade_tier=self._cheapest.name)
            admission.model = tier.model
            admission.estimate = self._combined_estimate(admission, (self._cheapest, tier))
            admission.headers[HEADER_TIER] = f"{tier.name} via {self._cheapest.name} (cascade; {why})"
        else:
            admission.model = tier.model
            admission.estimate = self._combined_estimate(admission, (tier,))
            admission.headers[HEADER_TIER] = f"{tier.name} ({why})"
        admission.state[STATE_KEY] = state

    def _combined_estimate(self, admission: Admission, tiers: tuple[TierConfig, ...]) -> CostEstimate:
        """Worst case of calling each of ``tiers`` (a cascade may call two)."""
        pricing = self._pricing()
        params = admission.context.params
        tokens = admission.estimate.prompt_tokens
        estimates = [pricing.worst_case(t.model, tokens, params.max_tokens, params.n) for t in tiers]
        unknown = next((e for e in estimates if e.amount is None), None)
        if unknown is not None:
            return unknown  # a tier without a price makes the whole worst case unknown
        last = estimates[-1]
        total = Nano(sum(e.amount or 0 for e in estimates))
        return CostEstimate(total, tokens, last.max_output_tokens, last.price, last.inject_max_tokens)

    async def on_outcome(self, outcome: Outcome) -> None:
        """Nothing after the call (savings are computed by the accounting stage from the state)."""
