"""Which budgets apply to a request, their caps and keys, and the words of a refusal (pure)."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import quote
from zoneinfo import ZoneInfo

from costkit_litellm.budgets.config import BudgetConfig, BudgetSettings
from costkit_litellm.budgets.windows import Slot, describe, slot
from costkit_litellm.context import RequestContext
from costkit_litellm.money import format_usd_short, usd_to_nano
from costkit_litellm.store import Limit, LimitUsage

# Alert budgets track spend without ever refusing: their hold is checked against this cap.
UNCAPPED = 2**62
BUDGET_KEY_PREFIX = "budget:"
RUNTIME_MAP = "budget_limits"


@functools.lru_cache(maxsize=16_384)
def escaped_key_part(value: str) -> str:
    """A value as a part of a store key: ``:``, ``=``, ``,``, braces and spaces escaped (collision-free)."""
    return quote(value, safe="@._-")


def budget_key(name: str, window: str, value: str, slot_id: str) -> str:
    """Store key of one budget window for one scope value (the value is escaped: no braces or spaces)."""
    return f"{BUDGET_KEY_PREFIX}{name}:{window}:{escaped_key_part(value)}:{slot_id}"


def runtime_field(name: str, value: str | None = None) -> str:
    """Field of the runtime-limits map: ``name`` (every value) or ``name|value`` (one value)."""
    return name if value is None else f"{name}|{value}"


def parse_runtime_limits(raw: Mapping[str, str]) -> dict[str, int]:
    """The runtime-limits map as read from the store: field -> cap in nano-dollars (junk values ignored)."""
    return {field: int(value) for field, value in raw.items() if value.lstrip("-").isdigit()}


@dataclass(frozen=True, slots=True)
class AppliedBudget:
    """A budget as it applies to one request: the scope value, the cap and the window slot."""

    budget: BudgetConfig
    value: str
    limit: int
    """The cap in nano-dollars (runtime setting > per-value override > ``limit_usd``)."""
    slot: Slot
    key: str

    @property
    def caps(self) -> bool:
        """True when the budget refuses spend over its limit (reject and downgrade budgets)."""
        return self.budget.action != "alert"

    def to_limit(self) -> Limit:
        """The store limit to hold against."""
        return Limit(
            key=self.key,
            cap=self.limit if self.caps else UNCAPPED,
            expires_at=self.slot.expires_at,
            window_s=self.slot.window_s,
        )

    def who(self) -> str:
        """``user '123'``, ``feature 'email_writer'``, or ``everyone`` for a global budget."""
        scope = self.budget.scope
        if scope == "global":
            return "everyone"
        label = scope[4:] if scope.startswith("tag:") else scope.replace("_", " ")
        return f"{label} {self.value!r}"


class BudgetPolicy:
    """Matches requests to budgets; knows caps, windows and runtime settings."""

    def __init__(
        self,
        budgets: Sequence[BudgetConfig],
        settings: BudgetSettings,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.budgets = tuple(budgets)
        self.settings = settings
        self.tz = ZoneInfo(settings.timezone)
        self._clock = clock
        self._overrides = {
            b.name: {value: usd_to_nano(usd) for value, usd in b.overrides.items()} for b in self.budgets
        }
        self._limits = {b.name: usd_to_nano(b.limit_usd) for b in self.budgets}

    def now(self) -> float:
        """The policy's clock (injectable for window tests)."""
        return self._clock()

    def limit_for(self, budget: BudgetConfig, value: str, runtime: Mapping[str, int]) -> int:
        """The cap of one budget for one value, in nano-dollars."""
        for field in (runtime_field(budget.name, value), runtime_field(budget.name)):
            if field in runtime:
                return runtime[field]
        return self._overrides[budget.name].get(value, self._limits[budget.name])

    def applicable(self, context: RequestContext, runtime: Mapping[str, int] | None = None) -> list[AppliedBudget]:
        """The budgets that apply to a request (a scope the request has no value for does not apply)."""
        now = self.now()
        found = []
        for budget in self.budgets:
            value = context.scope_value(budget.scope, budget.identity)
            if value is None or (budget.values and value not in budget.values):
                continue
            current = slot(budget.window, now, self.tz)
            found.append(
                AppliedBudget(
                    budget=budget,
                    value=value,
                    limit=self.limit_for(budget, value, runtime or {}),
                    slot=current,
                    key=budget_key(budget.name, budget.window, value, current.id),
                )
            )
        return found

    def resets(self, applied: AppliedBudget) -> str:
        """When the window resets, in words."""
        if applied.slot.resets_at is None:
            return "it does not reset (window: total)"
        moment = datetime.fromtimestamp(applied.slot.resets_at, self.tz).isoformat(timespec="seconds")
        if applied.slot.window_s is not None:
            return f"spend leaves the {describe(applied.budget.window, self.tz)} window gradually; next at {moment}"
        return f"it resets at {moment}"

    def retry_after(self, applied: AppliedBudget) -> int | None:
        """Seconds until the window frees spend (None for a total budget)."""
        if applied.slot.resets_at is None:
            return None
        return max(1, int(applied.slot.resets_at - self.now() + 0.999))

    def exceeded_message(self, applied: AppliedBudget, usage: LimitUsage, request_nano: int) -> str:
        """The 429 message: which budget, for whom, spent of limit, when it resets."""
        held = f" (plus {format_usd_short(usage.reserved)} held by requests in flight)" if usage.reserved else ""
        return (
            f"Budget {applied.budget.name!r} exceeded for {applied.who()}: spent "
            f"{format_usd_short(usage.committed)} of {format_usd_short(applied.limit)}{held} in the "
            f"{describe(applied.budget.window, self.tz)} window, and this request may cost up to "
            f"{format_usd_short(request_nano)}; {self.resets(applied)}."
        )

    def too_large_message(self, applied: AppliedBudget, request_nano: int, max_tokens: int | None) -> str:
        """The message for a request whose worst case alone exceeds a whole limit."""
        hint = "set max_tokens" if max_tokens is None else f"lower max_tokens (now {max_tokens})"
        return (
            f"This request may cost up to {format_usd_short(request_nano)}, more than the whole "
            f"{format_usd_short(applied.limit)} limit of budget {applied.budget.name!r} for {applied.who()}; "
            f"{hint} so that its worst case fits."
        )
