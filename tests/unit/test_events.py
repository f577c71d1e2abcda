"""Usage events: OpenTelemetry GenAI field names, a lossless ledger round trip, and outcome kinds."""

from __future__ import annotations

import pytest

from costkit_litellm.accounting.events import UsageEvent, event_outcome
from costkit_litellm.context import RequestContext
from costkit_litellm.money import Nano
from costkit_litellm.pipeline import Outcome


def outcome(kind: str, **extra: object) -> Outcome:
    ctx = RequestContext(
        call_id="c1", model="auto", user_id="123", team_id="t", api_key_hash="h", attributes={"feature": "email_writer"}
    )
    return Outcome(
        kind=kind, context=ctx, model="gpt-4o-mini", deployment_model="openai/gpt-4o-mini", cost=Nano(13_500), **extra
    )  # type: ignore[arg-type]


class TestUsageEvent:
    def test_fields_follow_opentelemetry_genai_names(self) -> None:
        """Ledger fields use gen_ai.* names where OpenTelemetry has one, and never hold a raw key."""
        fields = UsageEvent.from_outcome(outcome("success", prompt_tokens=10, completion_tokens=20)).to_fields()
        assert fields["gen_ai.request.model"] == "auto"
        assert fields["gen_ai.response.model"] == "openai/gpt-4o-mini"
        assert fields["gen_ai.usage.input_tokens"] == "10" and fields["gen_ai.usage.output_tokens"] == "20"
        assert fields["costkit.cost_nano"] == "13500" and fields["costkit.attr.feature"] == "email_writer"
        assert fields["user.id"] == "123" and fields["costkit.api_key_hash"] == "h"

    def test_round_trip_through_ledger_fields(self) -> None:
        """An event read back from its ledger fields equals the original."""
        original = UsageEvent.from_outcome(
            outcome("success", timestamp=1.5, tier="economy", saved=Nano(7), saved_source="routing", latency_s=0.25)
        )
        assert UsageEvent.from_fields("c1", original.to_fields()) == original

    @pytest.mark.parametrize(
        ("kind", "extra", "expected"),
        [
            ("success", {}, "success"),
            ("success", {"cache_hit": True}, "cache_hit"),
            ("failure", {}, "failure"),
            ("rejected", {"reason": "budget_exceeded"}, "budget_rejected"),
            ("rejected", {"reason": "agent_loop_detected"}, "circuit_tripped"),
            ("answered", {"reason": "agent_step_limit"}, "circuit_tripped"),
            ("rejected", {"reason": "invalid_request_error"}, "rejected"),
            ("escalated", {}, "escalated"),
        ],
    )
    def test_outcome_kinds(self, kind: str, extra: dict[str, object], expected: str) -> None:
        """Each pipeline outcome maps to its event outcome."""
        assert event_outcome(outcome(kind, **extra)) == expected
