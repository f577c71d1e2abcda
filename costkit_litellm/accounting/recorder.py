"""The accounting stage: each outcome once into the ledger, then into the metrics."""

from __future__ import annotations

import logging

from costkit_litellm.accounting.metrics import CostMetrics
from costkit_litellm.pipeline import Admission, Outcome
from costkit_litellm.store import Store, StoreError

log = logging.getLogger(__name__)


def ledger_fields(outcome: Outcome) -> dict[str, str]:
    """The ledger record of an outcome (strings only; names follow OpenTelemetry GenAI where one exists)."""
    ctx = outcome.context
    fields = {
        "outcome": outcome.kind,
        "gen_ai.request.model": ctx.model,
        "gen_ai.response.model": outcome.deployment_model or "",
        "gen_ai.usage.input_tokens": str(outcome.prompt_tokens),
        "gen_ai.usage.output_tokens": str(outcome.completion_tokens),
        "cost_nano": "" if outcome.cost is None else str(outcome.cost),
        "estimate_nano": "" if outcome.estimate is None else str(outcome.estimate),
        "cache_hit": "1" if outcome.cache_hit else "0",
        "api_key_hash": ctx.api_key_hash or "",
        "user": ctx.user_id or "",
        "team": ctx.team_id or "",
        "end_user": ctx.end_user or "",
        "session": ctx.session_id or "",
    }
    for key, value in ctx.attributes.items():
        fields[f"attr.{key}"] = value
    if outcome.error:
        fields["error"] = outcome.error[:500]
    return fields


class AccountingStage:
    """Writes each outcome to the ledger once (by call id) and counts it in the metrics.

    The ledger append is the idempotency point: a duplicated callback for the same call id and
    outcome is dropped there and never reaches the metrics.
    """

    name = "accounting"

    def __init__(self, store: Store, metrics: CostMetrics | None) -> None:
        self._store = store
        self._metrics = metrics

    async def on_request(self, admission: Admission) -> None:
        """Nothing to do before the call."""

    async def on_outcome(self, outcome: Outcome) -> None:
        """Append to the ledger; count in metrics if this is the first time."""
        call_id = outcome.context.call_id
        first = True
        if call_id:
            try:
                first = await self._store.ledger_append(f"{call_id}:{outcome.kind}", ledger_fields(outcome))
            except StoreError as exc:
                log.warning("costkit: ledger unavailable, counting %s in metrics only: %s", call_id, exc)
        if first and self._metrics is not None:
            self._metrics.record(outcome.model, outcome.context.attributes, outcome.kind, outcome.cost)
