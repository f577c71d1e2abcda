"""The ``costkit.budgets`` list, ``costkit.budget_settings`` and ``costkit.breaker`` sections."""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, field_validator, model_validator

from costkit_litellm.budgets.windows import parse_window
from costkit_litellm.config_base import PositiveUsd, Section

SCOPES = ("global", "api_key", "user", "team", "end_user")
SCOPE_HELP = "use global, api_key, user, team, end_user or tag:<key>"
_TAG_SCOPE = re.compile(r"^tag:[A-Za-z0-9_.-]+$")
Share = Annotated[Decimal, Field(gt=0, le=1)]


class BudgetConfig(Section):
    """One dollar budget: a cap on spend per scope value and window."""

    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]+$", max_length=64)]
    """Unique name, shown in errors, headers, metrics and the CLI."""
    scope: str
    """Whose spend is capped: ``global``, ``api_key``, ``user``, ``team``, ``end_user`` or ``tag:<key>``
    (e.g. ``tag:feature``). Each value of the scope (each user, each feature) has its own cap."""
    identity: Literal["any", "authenticated"] = "any"
    """Where the scope value may come from: ``any`` (the client's ``metadata.user_id`` overrides the
    key's user) or ``authenticated`` (only the authenticated key: ``user`` is the key's user, never
    ``metadata.user_id``). ``authenticated`` cannot be used with ``end_user`` or ``tag:`` scopes,
    which are client-asserted; use it when each end user holds their own key."""
    values: tuple[str, ...] = ()
    """Apply only to these values of the scope (e.g. ``[email_writer]``); empty: every value."""
    limit_usd: PositiveUsd
    """The cap in dollars per scope value and window."""
    window: str = "day"
    """``1m``, ``1h``, ``1d``, ``7d``, ``30d`` (rolling), ``day``, ``month`` (calendar) or ``total``."""
    action: Literal["reject", "downgrade", "alert"] = "reject"
    """``reject``: over the cap is a 429. ``downgrade``: when less than ``downgrade_below`` of the cap
    remains, the request goes to ``downgrade_to`` instead (still capped). ``alert``: never blocks;
    reports crossing each share in ``alert_at``."""
    downgrade_to: str | None = None
    """Cheaper model group used by ``action: downgrade``."""
    downgrade_below: Share = Decimal("0.2")
    """Share of the cap left under which ``downgrade`` switches model."""
    alert_at: tuple[Share, ...] = (Decimal("0.5"), Decimal("0.8"), Decimal("1"))
    """Shares of the cap at which an ``alert`` budget reports (metric, log line, webhook), each once per window."""
    alert_webhook: str | None = None
    """URL that receives a JSON POST for each alert (``os.environ/`` references work)."""
    overrides: dict[str, PositiveUsd] = Field(default_factory=dict)
    """Per-value caps in dollars (``{"123": 5.00}``: user 123 gets $5 while the others get ``limit_usd``)."""

    @field_validator("scope")
    @classmethod
    def _valid_scope(cls, value: str) -> str:
        if value in SCOPES or _TAG_SCOPE.match(value):
            return value
        raise ValueError(f"{value!r} is not a scope; {SCOPE_HELP}")

    @field_validator("window")
    @classmethod
    def _valid_window(cls, value: str) -> str:
        return parse_window(value)

    @model_validator(mode="after")
    def _consistent(self) -> BudgetConfig:
        if self.action == "downgrade" and not self.downgrade_to:
            raise ValueError("action downgrade needs downgrade_to (a cheaper model group)")
        if self.action != "downgrade" and self.downgrade_to:
            raise ValueError("downgrade_to is only used with action: downgrade")
        if self.scope == "global" and (self.values or self.overrides):
            raise ValueError("a global budget has no scope values: drop values/overrides")
        if self.identity == "authenticated" and (self.scope == "end_user" or self.scope.startswith("tag:")):
            raise ValueError(
                f"identity: authenticated cannot be used with scope {self.scope!r}: its value is asserted by "
                "the client (OpenAI's user field, or request tags/metadata), not by the key; use scope "
                "api_key, user or team, or identity: any"
            )
        if self.alert_webhook and self.action != "alert":
            raise ValueError("alert_webhook is only used with action: alert")
        return self


class BudgetSettings(Section):
    """How budgets are enforced."""

    timezone: str = "UTC"
    """Timezone of the calendar windows ``day`` and ``month``."""
    lease_s: Annotated[float, Field(gt=0)] = 600.0
    """How long a reservation holds without a settle or release (a crashed replica's holds come back after it)."""
    unknown_price: Literal["reject", "reserve"] = "reject"
    """A request for a model without a known price: ``reject`` it (400) or ``reserve`` a fixed amount."""
    unknown_price_reserve_usd: PositiveUsd = Decimal("0.05")
    """What ``unknown_price: reserve`` holds per request."""
    unbounded_calls: Literal["reject", "reserve"] = "reject"
    """A call whose cost cannot be bounded before it is sent (batches, pass-through routes, realtime
    sessions, video, an unknown call type), when a budget applies to it: ``reject`` it (400 naming
    the budget and the endpoint) or ``reserve`` ``unbounded_reserve_usd`` and commit the real cost
    afterwards (which may exceed the hold)."""
    unbounded_reserve_usd: PositiveUsd = Decimal("1")
    """What ``unbounded_calls: reserve`` holds per call."""
    on_store_error: Literal["fail_open", "fail_closed"] = "fail_open"
    """Redis unreachable: ``fail_open`` admits within the outage allowance (``outage_headroom_share``) and
    reconciles spend when Redis is back; ``fail_closed`` answers 503."""
    outage_headroom_share: Annotated[float, Field(ge=0, le=1)] = 0.1
    """With ``fail_open``: the share of each limit's remaining headroom (cap - committed - reserved, as
    this replica last saw it from the store) that one replica may spend while the store is unreachable;
    worst cases are held in process against it, and past it the replica answers 503
    ``budget_store_unavailable`` like ``fail_closed``. A limit the replica never saw before the outage
    (a new user, a new window) gets no allowance. With N replicas the outage can spend at most
    N x share of the headroom; 0 makes fail_open behave as fail_closed for budgeted requests."""
    runtime_refresh_s: Annotated[float, Field(ge=0)] = 5.0
    """How often each replica re-reads caps set at runtime with ``costkit budgets set``."""
    max_remaining_series: Annotated[int, Field(ge=1)] = 100
    """Most (budget, value) series of ``costkit_budget_remaining_usd`` per process."""

    @field_validator("timezone")
    @classmethod
    def _valid_timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"{value!r} is not a known timezone (e.g. UTC, Europe/Paris)") from None
        return value


class BreakerConfig(Section):
    """The agent circuit breaker, per caller (API key) and session id."""

    enabled: bool = False
    """Trip sessions that loop, take too many steps or spend too much."""
    max_steps: Annotated[int, Field(ge=1)] | None = 50
    """Most calls in one session."""
    max_spend_usd: PositiveUsd | None = Decimal("5")
    """Most dollars one session may spend (reserved like a budget: a hard cap)."""
    loop_threshold: Annotated[int, Field(ge=2)] = 3
    """The same normalised request, or the same tool call (name + arguments), seen this many times trips it."""
    inactivity_s: Annotated[float, Field(gt=0)] = 1800.0
    """A session is forgotten after this long without a call."""
    on_trip: Literal["error", "final_message"] = "error"
    """``error``: a 429 an agent framework can show. ``final_message``: answer with ``final_message`` at $0."""
    final_message: str = "I could not finish this task within its limits ({reason})."
    """The assistant message sent when ``on_trip: final_message``; ``{reason}`` is filled in."""
