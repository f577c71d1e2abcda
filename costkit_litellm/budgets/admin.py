"""Budgets at runtime: show usage, set or unset a cap, reset a window (what ``costkit budgets`` runs).

Caps set here live in the store's runtime map and win over the config on every replica within
``budget_settings.runtime_refresh_s``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from urllib.parse import unquote

from costkit_litellm.budgets.config import BudgetConfig
from costkit_litellm.budgets.policy import (
    BUDGET_KEY_PREFIX,
    RUNTIME_MAP,
    BudgetPolicy,
    budget_key,
    parse_runtime_limits,
    runtime_field,
)
from costkit_litellm.budgets.windows import slot
from costkit_litellm.config import CostKitConfig
from costkit_litellm.errors import CostKitError
from costkit_litellm.money import usd_to_nano
from costkit_litellm.store import Store


class UnknownBudget(CostKitError):
    """A budget name that the config does not define."""


@dataclass(frozen=True, slots=True)
class BudgetRow:
    """One budget window of one scope value, as ``costkit budgets show`` prints it."""

    budget: str
    scope: str
    value: str
    window: str
    slot: str
    committed: int
    reserved: int
    limit: int
    limit_source: str
    """``config``, ``override`` (per-value in config) or ``runtime`` (set with the CLI)."""


class BudgetAdmin:
    """Operator actions on the budgets of one config, against its store."""

    def __init__(self, config: CostKitConfig, store: Store) -> None:
        self.config = config
        self.store = store
        self.policy = BudgetPolicy(config.budgets, config.budget_settings)
        self._by_name = {b.name: b for b in config.budgets}

    def budget(self, name: str) -> BudgetConfig:
        """The configured budget of that name."""
        try:
            return self._by_name[name]
        except KeyError:
            known = ", ".join(sorted(self._by_name)) or "none configured"
            raise UnknownBudget(f"no budget named {name!r} in the config (budgets: {known})") from None

    async def runtime(self) -> dict[str, int]:
        """Caps set at runtime, by map field."""
        raw = await self.store.map_get_all(RUNTIME_MAP)
        return parse_runtime_limits(raw)

    def _source(self, budget: BudgetConfig, value: str, runtime: dict[str, int]) -> str:
        if runtime_field(budget.name, value) in runtime or runtime_field(budget.name) in runtime:
            return "runtime"
        return "override" if value in budget.overrides else "config"

    async def show(self, name: str | None = None) -> list[BudgetRow]:
        """Usage of every live window of the budgets (all, or one by name)."""
        budgets = [self.budget(name)] if name else list(self.config.budgets)
        runtime = await self.runtime()
        rows = []
        for budget in budgets:
            prefix = f"{BUDGET_KEY_PREFIX}{budget.name}:{budget.window}:"
            for usage in await self.store.list_limits(prefix):
                value_part, _, slot_id = usage.key[len(prefix) :].rpartition(":")
                value = unquote(value_part)
                rows.append(
                    BudgetRow(
                        budget=budget.name,
                        scope=budget.scope,
                        value=value,
                        window=budget.window,
                        slot=slot_id,
                        committed=usage.committed,
                        reserved=usage.reserved,
                        limit=self.policy.limit_for(budget, value, runtime),
                        limit_source=self._source(budget, value, runtime),
                    )
                )
        return sorted(rows, key=lambda r: (r.budget, r.value, r.slot))

    async def set_limit(self, name: str, limit_usd: str, value: str | None = None) -> int:
        """Set a runtime cap (for one value, or for every value of the budget); returns it in n$."""
        budget = self.budget(name)
        nano = usd_to_nano(limit_usd)
        if nano <= 0:
            raise CostKitError(f"a limit must be more than $0, got {limit_usd}")
        if value is not None and budget.scope == "global":
            raise CostKitError(f"budget {name!r} is global: it has no values")
        await self.store.map_set(RUNTIME_MAP, runtime_field(name, value), str(nano))
        return nano

    async def unset_limit(self, name: str, value: str | None = None) -> bool:
        """Remove a runtime cap; the config's applies again."""
        self.budget(name)
        return await self.store.map_delete(RUNTIME_MAP, runtime_field(name, value))

    async def reset(self, name: str, value: str | None = None, now: float | None = None) -> list[str]:
        """Forget the spend of the current window (of one value, or of every value); returns the keys reset."""
        budget = self.budget(name)
        current = slot(budget.window, time.time() if now is None else now, self.policy.tz)
        if value is not None or budget.scope == "global":
            keys = [budget_key(name, budget.window, "*" if budget.scope == "global" else value or "", current.id)]
        else:
            prefix = f"{BUDGET_KEY_PREFIX}{name}:{budget.window}:"
            keys = [u.key for u in await self.store.list_limits(prefix) if u.key.endswith(f":{current.id}")]
        for key in keys:
            await self.store.reset(key)
        return keys
