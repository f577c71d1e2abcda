"""The ``costkit.routing`` section: tiers, the virtual model, the classifier and the cascade checks."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from costkit_litellm.config_base import Section


class TierConfig(Section):
    """One tier: a LiteLLM model group, cheapest tier first."""

    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]+$")]
    """Shown in ``x-costkit-tier``, metrics and reports (``economy``, ``premium``)."""
    model: str
    """The model group requests routed to this tier go to."""
    cascade: bool = False
    """Requests routed here try the cheapest tier first and come here only when its answer fails the
    checks in ``validators`` (or its call fails). Not for streaming requests (routed directly)."""


class ValidatorConfig(Section):
    """The checks a cheap tier's answer must pass in a cascade."""

    non_empty: bool = True
    """The answer has content or tool calls."""
    finish_not_length: bool = True
    """The answer was not cut off (``finish_reason`` is not ``length``)."""
    valid_json: bool = True
    """When the request asks for JSON (``response_format``), the answer parses; with a ``json_schema``, it validates."""
    refusal: bool = True
    """The answer is not a refusal ("I'm sorry, but I can't ...")."""
    regexes: tuple[str, ...] = ()
    """Patterns the answer must each contain (Python regular expressions)."""

    @field_validator("regexes")
    @classmethod
    def _compiles(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for pattern in value:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"{pattern!r} is not a valid regular expression: {exc}") from None
        return value


class ForceRouting(Section):
    """Callers whose requests are routed even when they name a concrete model."""

    teams: tuple[str, ...] = ()
    """Team ids."""
    api_keys: tuple[str, ...] = ()
    """API key hashes (as LiteLLM reports them), or aliases."""


class RoutingConfig(Section):
    """Tiered routing behind a virtual model."""

    enabled: bool = False
    """Route requests for ``virtual_model`` (and forced callers) to a tier."""
    virtual_model: str = "auto"
    """The model name clients ask for to be routed."""
    tiers: tuple[TierConfig, ...] = ()
    """Tiers from cheapest to most capable; at least two when routing is enabled. Scores under
    ``threshold`` go to the first, the others to the last; middle tiers are reached by escalation."""
    classifier: Literal["rules", "learned"] = "rules"
    """``rules`` (zero setup) or ``learned`` (a model trained with ``costkit router train``)."""
    model_path: str | None = None
    """The learned model file (JSON); checked at start-up."""
    threshold: Annotated[float, Field(ge=0, le=1)] | None = None
    """Score at or above which the last tier is chosen. Unset: 0.5 for rules, the model's calibrated threshold."""
    target_premium_share: Annotated[float, Field(gt=0, lt=1)] | None = None
    """Instead of a threshold: the share of premium calls to aim for (learned models calibrate it at training)."""
    force: ForceRouting = Field(default_factory=ForceRouting)
    """Callers routed even when naming a concrete model."""
    validators: ValidatorConfig = Field(default_factory=ValidatorConfig)
    """Checks for cascades."""

    @model_validator(mode="after")
    def _consistent(self) -> RoutingConfig:
        if self.enabled and len(self.tiers) < 2:
            raise ValueError("routing needs at least two tiers (cheapest first)")
        names = [t.name for t in self.tiers]
        if len(set(names)) != len(names):
            raise ValueError("tier names must be unique")
        if self.classifier == "learned" and not self.model_path:
            raise ValueError("classifier learned needs model_path (train one with: costkit router train)")
        if self.threshold is not None and self.target_premium_share is not None:
            raise ValueError("set threshold or target_premium_share, not both")
        if self.tiers and self.tiers[0].cascade:
            raise ValueError(f"tier {self.tiers[0].name!r} is the cheapest: it has nothing cheaper to cascade from")
        return self
