"""The ``costkit.ledger`` and ``costkit.revenue`` sections."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, model_validator

from costkit_litellm.config_base import NonNegativeUsd, Section


class WebhookConfig(Section):
    """Forward every ledger event to a billing system."""

    url: str
    """HTTP(S) endpoint that receives JSON batches: ``{"events": [...]}`` (``os.environ/`` references work)."""
    timeout_s: Annotated[float, Field(gt=0)] = 5.0
    """Per-request timeout."""
    max_attempts: Annotated[int, Field(ge=1, le=20)] = 5
    """Attempts per batch (exponential backoff) before it goes to the dead-letter record."""
    batch_size: Annotated[int, Field(ge=1, le=10_000)] = 100
    """Most events per POST."""
    queue_size: Annotated[int, Field(ge=1)] = 100_000
    """Events waiting to be sent; beyond it new events go straight to the dead-letter record."""
    dead_letter_max_events: Annotated[int, Field(ge=1)] | None = 100_000
    """Most events kept in the dead-letter record (shared by every replica); beyond it the events
    given up on are dropped from it, logged and counted (``costkit_webhook_events{result="dropped"}``),
    and stay in the ledger stream. ``null``: no cap (a webhook that stays down then grows it with
    every event, refusals included)."""


class LedgerConfig(Section):
    """The durable, append-only usage ledger (Redis Stream, or in process)."""

    enabled: bool = True
    """Write a usage event per request outcome (idempotent by call id)."""
    max_entries: Annotated[int, Field(ge=1)] | None = 1_000_000
    """Keep at most this many events (oldest trimmed first)."""
    max_age_days: Annotated[float, Field(gt=0)] | None = 90.0
    """Drop events older than this."""
    webhook: WebhookConfig | None = None
    """Optional forwarding to a billing system, with retries and a dead-letter record; never blocks requests."""


class RevenuePlan(Section):
    """What one value of the revenue attribute (one feature) earns."""

    per_request_usd: NonNegativeUsd | None = None
    """Revenue per successful request (including cache hits)."""
    per_active_user_month_usd: NonNegativeUsd | None = None
    """Revenue per distinct user who used it, per 30 days (pro-rated to the report's period)."""

    @model_validator(mode="after")
    def _one_price(self) -> RevenuePlan:
        if (self.per_request_usd is None) == (self.per_active_user_month_usd is None):
            raise ValueError("set exactly one of per_request_usd or per_active_user_month_usd")
        return self


class RevenueConfig(Section):
    """Revenue per feature, so reports show margin ("is the Email Writer feature profitable?")."""

    attribute: str = "feature"
    """The request attribute the plans are keyed by."""
    plans: dict[str, RevenuePlan] = Field(default_factory=dict)
    """Plans by attribute value (``email_writer: {per_request_usd: 0.01}``)."""
