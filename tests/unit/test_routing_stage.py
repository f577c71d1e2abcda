"""The routing stage and the cascade checks: tier choice, estimates, forced callers, validators, config errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from costkit_litellm.config import parse_config
from costkit_litellm.context import RequestContext, SamplingParams
from costkit_litellm.errors import ConfigError
from costkit_litellm.kit import CostKit
from costkit_litellm.money import Nano
from costkit_litellm.pipeline import Outcome
from costkit_litellm.pricing import ModelPrice
from costkit_litellm.routing.config import ValidatorConfig
from costkit_litellm.routing.validate import AnswerValidator
from costkit_litellm.store import MemoryStore

PRICES = {
    "mini": ModelPrice(input_nano_per_mtok=150_000_000, output_nano_per_mtok=600_000_000, max_output_tokens=16384),
    "big": ModelPrice(input_nano_per_mtok=2_500_000_000, output_nano_per_mtok=10_000_000_000, max_output_tokens=16384),
}
TIERS = [{"name": "economy", "model": "mini"}, {"name": "premium", "model": "big"}]
SIMPLE = [{"role": "user", "content": "What is the capital of France?"}]
HARD = [{"role": "user", "content": "Prove that sqrt(2) is irrational step by step, then analyze the implications."}]


class Prices:
    def price(self, model: str) -> ModelPrice | None:
        return PRICES.get(model)


def make_kit(**routing: Any) -> tuple[CostKit, CollectorRegistry]:
    registry = CollectorRegistry()
    config = parse_config(
        {"routing": {"enabled": True, "tiers": TIERS, **routing}, "metrics": {"tag_labels": ["feature"]}}
    )
    return CostKit(config, store=MemoryStore(), price_source=Prices(), registry=registry), registry


def ctx(model: str = "auto", **extra: Any) -> RequestContext:
    return RequestContext(call_id="c1", model=model, params=SamplingParams(max_tokens=100), **extra)


class TestTierChoice:
    async def test_simple_prompt_to_economy_with_its_estimate(self) -> None:
        """A simple prompt to `auto` goes to the economy tier, estimated at that tier's price, with the reason."""
        kit, _ = make_kit()
        admission = await kit.admit(ctx(), 10, messages=SIMPLE)
        assert admission.model == "mini"
        assert admission.estimate.amount == PRICES["mini"].cost(10, 100)
        assert admission.headers["x-costkit-tier"].startswith("economy (score 0.")
        assert admission.state["routing"]["tier"] == "economy"

    async def test_hard_prompt_to_premium(self) -> None:
        """A multi-step proof goes to the premium tier."""
        kit, _ = make_kit()
        admission = await kit.admit(ctx(), 10, messages=HARD)
        assert admission.model == "big" and admission.headers["x-costkit-tier"].startswith("premium")

    async def test_concrete_models_are_left_alone_unless_forced(self) -> None:
        """A request naming a model keeps it, except for a forced team."""
        kit, _ = make_kit(force={"teams": ["growth"]})
        assert (await kit.admit(ctx("big"), 10, messages=SIMPLE)).model is None
        assert (await kit.admit(ctx("big", team_id="growth"), 10, messages=SIMPLE)).model == "mini"

    async def test_cascade_plans_and_reserves_both_tiers(self) -> None:
        """A cascade tier is planned through the cheapest, and the worst case covers both calls."""
        kit, _ = make_kit(threshold=0.0, tiers=[TIERS[0], {**TIERS[1], "cascade": True}])
        admission = await kit.admit(ctx(), 10, messages=SIMPLE)
        plan = admission.state["routing"]
        assert (plan["cascade_from"], plan["tier"]) == ("mini", "premium")
        assert admission.estimate.amount == PRICES["mini"].cost(10, 100) + PRICES["big"].cost(10, 100)

    async def test_streaming_is_routed_directly(self) -> None:
        """A streaming request to a cascade tier goes straight to it (no buffering)."""
        kit, _ = make_kit(threshold=0.0, tiers=[TIERS[0], {**TIERS[1], "cascade": True}])
        stream = RequestContext(call_id="c", model="auto", params=SamplingParams(max_tokens=100, stream=True))
        admission = await kit.admit(stream, 10, messages=SIMPLE)
        assert "cascade_from" not in admission.state["routing"] and admission.model == "big"


class TestSavings:
    async def test_routing_savings_are_what_premium_would_have_cost(self) -> None:
        """An economy answer saves the premium price of the same tokens minus what was paid."""
        kit, registry = make_kit()
        admission = await kit.admit(ctx(attributes={"feature": "chat"}), 10, messages=SIMPLE)
        paid = PRICES["mini"].cost(10, 20)
        await kit.record(
            Outcome(
                kind="success", context=admission.context, model="mini", deployment_model=None, cost=Nano(paid),
                prompt_tokens=10, completion_tokens=20, state=admission.state,
            )
        )  # fmt: skip
        saved = registry.get_sample_value(
            "costkit_saved_usd_total", {"source": "routing", "model": "mini", "feature": "chat"}
        )
        assert saved == pytest.approx((PRICES["big"].cost(10, 20) - paid) / 1e9, abs=1e-12)
        [entry] = await kit.store.ledger_read()
        assert entry.fields["costkit.tier"] == "economy"


def completion(content: str | None, finish: str = "stop", tool_calls: Any = None) -> dict[str, Any]:
    message = {"role": "assistant", "content": content, "tool_calls": tool_calls}
    return {"choices": [{"index": 0, "finish_reason": finish, "message": message}]}


class TestValidators:
    @pytest.mark.parametrize(
        ("response", "response_format", "reason"),
        [
            (completion(""), None, "empty answer"),
            (completion("partial", finish="length"), None, "answer cut off (finish_reason length)"),
            (completion("I'm sorry, but I can't help with that."), None, "refusal"),
            (completion("not json"), {"type": "json_object"}, "invalid JSON"),
            (
                completion('{"name": 3}'),
                {
                    "type": "json_schema",
                    "json_schema": {"schema": {"type": "object", "properties": {"name": {"type": "string"}}}},
                },
                "schema: 3 is not of type 'string'",
            ),
        ],
        ids=["empty", "cut-off", "refusal", "invalid-json", "schema"],
    )
    def test_failing_answers(self, response: dict[str, Any], response_format: Any, reason: str) -> None:
        """Each check refuses its kind of bad answer, saying which."""
        check = AnswerValidator(ValidatorConfig()).check(response, response_format)
        assert (check.ok, check.reason) == (False, reason)

    def test_good_answers_pass(self) -> None:
        """Valid JSON, a tool call, and a matching regex pass."""
        validator = AnswerValidator(ValidatorConfig(regexes=("total: \\d+",)))
        assert validator.check(completion('{"total: 3": 1}'), {"type": "json_object"}).ok
        assert AnswerValidator(ValidatorConfig()).check(completion(None, tool_calls=[{"id": "t"}])).ok
        assert not validator.check(completion("no number")).ok


class TestConfig:
    def test_one_tier_is_not_routing(self) -> None:
        """Routing with a single tier fails at start-up."""
        with pytest.raises(ConfigError, match="at least two tiers"):
            parse_config({"routing": {"enabled": True, "tiers": TIERS[:1]}})

    def test_learned_needs_a_model_path(self) -> None:
        """classifier: learned without model_path fails naming what to do."""
        with pytest.raises(ConfigError, match="costkit router train"):
            parse_config({"routing": {"enabled": True, "tiers": TIERS, "classifier": "learned"}})

    def test_bad_regex_is_named(self) -> None:
        """A validator regex that does not compile fails naming it."""
        with pytest.raises(ConfigError, match=r"'\(' is not a valid regular expression"):
            parse_config({"routing": {"validators": {"regexes": ["("]}}})

    @pytest.mark.parametrize("content", [None, "{not json", json.dumps({"format": "something-else"})])
    def test_missing_or_corrupt_model_file_fails_at_startup_naming_it(
        self, tmp_path: Path, content: str | None
    ) -> None:
        """A learned model file that is missing or corrupt stops the kit at start-up with the file's path."""
        path = tmp_path / "router.json"
        if content is not None:
            path.write_text(content)
        config = parse_config(
            {"routing": {"enabled": True, "tiers": TIERS, "classifier": "learned", "model_path": str(path)}}
        )
        with pytest.raises(ConfigError) as info:
            CostKit(config, store=MemoryStore(), registry=CollectorRegistry())
        assert "costkit.routing.model_path" in str(info.value) and str(path) in str(info.value)
