"""The CostKit engine: estimates before the call, exactly-once accounting after it, stages in order."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry

from costkit_litellm.config import parse_config
from costkit_litellm.context import RequestContext
from costkit_litellm.errors import RequestRejected
from costkit_litellm.kit import HEADER_MAX_COST, CostKit
from costkit_litellm.money import Nano
from costkit_litellm.pipeline import Admission, Outcome
from costkit_litellm.pricing import ModelPrice
from costkit_litellm.store.memory import MemoryStore

MINI = ModelPrice.from_per_token_usd(1.5e-07, 6e-07, max_output_tokens=16384)


class Prices:
    """Knows one model."""

    def price(self, model: str) -> ModelPrice | None:
        return MINI if model == "mini" else None


def make_kit(**section: object) -> tuple[CostKit, CollectorRegistry]:
    registry = CollectorRegistry()
    kit = CostKit(
        parse_config({"metrics": {"tag_labels": ["feature"]}, **section}),
        store=MemoryStore(),
        price_source=Prices(),
        registry=registry,
    )
    return kit, registry


def outcome(call_id: str, cost: int, kind: str = "success", feature: str = "chat") -> Outcome:
    ctx = RequestContext(call_id=call_id, model="mini", attributes={"feature": feature})
    return Outcome(kind=kind, context=ctx, model="mini", deployment_model="openai/gpt-4o-mini", cost=Nano(cost))  # type: ignore[arg-type]


class TestAdmit:
    async def test_worst_case_header(self) -> None:
        """admit() puts the worst-case cost of the request in x-costkit-max-cost-usd."""
        kit, _ = make_kit()
        ctx = RequestContext(call_id="c1", model="mini")
        admission = await kit.admit(ctx, prompt_tokens=10, deployment_model="openai/gpt-4o-mini")
        assert admission.estimate.amount == 10 * 150 + 16_384 * 600  # no max_tokens: the model's maximum output
        assert admission.headers[HEADER_MAX_COST] == "0.009831900"
        await kit.close()

    async def test_unknown_price_says_unknown(self) -> None:
        """A model without a price gets 'unknown', not $0."""
        kit, _ = make_kit()
        admission = await kit.admit(RequestContext(call_id="c1", model="mystery"), prompt_tokens=10)
        assert admission.headers[HEADER_MAX_COST] == "unknown"
        await kit.close()

    async def test_headers_can_be_turned_off(self) -> None:
        """headers.enabled: false adds no x-costkit headers."""
        kit, _ = make_kit(headers={"enabled": False})
        admission = await kit.admit(RequestContext(call_id="c1", model="mini"), prompt_tokens=1)
        assert admission.headers == {}
        await kit.close()

    async def test_a_refusing_stage_stops_the_request(self) -> None:
        """A stage that raises RequestRejected refuses the request and later stages do not run."""
        kit, _ = make_kit()
        seen: list[str] = []

        class Refuse:
            name = "refuse"

            async def on_request(self, admission: Admission) -> None:
                raise RequestRejected("no", status=429, error_type="budget_exceeded")

            async def on_outcome(self, outcome: Outcome) -> None:
                return None

        class Later:
            name = "later"

            async def on_request(self, admission: Admission) -> None:
                seen.append("later")

            async def on_outcome(self, outcome: Outcome) -> None:
                return None

        kit.add_stage(Refuse(), before="accounting")
        kit.add_stage(Later())
        assert kit.stage_names() == ["refuse", "accounting", "later"]
        with pytest.raises(RequestRejected):
            await kit.admit(RequestContext(call_id="c1", model="mini"), prompt_tokens=1)
        assert seen == []
        await kit.close()


class TestRecord:
    async def test_duplicate_callback_counts_once(self) -> None:
        """The same success delivered twice is one ledger entry and one metric increment."""
        kit, registry = make_kit()
        await kit.record(outcome("c1", 13_500))
        await kit.record(outcome("c1", 13_500))
        entries = await kit.store.ledger_read()
        assert [e.entry_id for e in entries] == ["c1:success"]
        assert entries[0].fields["costkit.cost_nano"] == "13500"
        assert entries[0].fields["costkit.attr.feature"] == "chat"
        labels = {"model": "mini", "tier": "none", "endpoint": "chat", "feature": "chat"}
        assert registry.get_sample_value("costkit_spend_usd_total", labels) == pytest.approx(13_500e-9, abs=1e-15)
        await kit.close()

    async def test_sum_of_many_costs_is_exact(self) -> None:
        """A thousand small costs sum exactly in the ledger (nano-dollars) and to 1e-9 USD in the metrics."""
        kit, registry = make_kit()
        for i in range(1000):
            await kit.record(outcome(f"c{i}", 13_501))
        entries = await kit.store.ledger_read()
        assert sum(int(e.fields["costkit.cost_nano"]) for e in entries) == 13_501_000
        spend = registry.get_sample_value(
            "costkit_spend_usd_total", {"model": "mini", "tier": "none", "endpoint": "chat", "feature": "chat"}
        )
        assert spend is not None and abs(spend - 0.013501) < 1e-9
        await kit.close()

    async def test_a_failing_stage_does_not_lose_the_others(self) -> None:
        """A stage that crashes on an outcome is logged; the accounting still happens."""
        kit, _ = make_kit()

        class Broken:
            name = "broken"

            async def on_request(self, admission: Admission) -> None:
                return None

            async def on_outcome(self, outcome: Outcome) -> None:
                raise RuntimeError("bug")

        kit.add_stage(Broken(), before="accounting")
        await kit.record(outcome("c1", 5))
        assert len(await kit.store.ledger_read()) == 1
        await kit.close()

    async def test_failure_and_success_of_one_call_are_separate_entries(self) -> None:
        """A failed attempt and the success of the same call id are both kept."""
        kit, _ = make_kit()
        await kit.record(outcome("c1", 0, kind="failure"))
        await kit.record(outcome("c1", 7))
        assert [e.entry_id for e in await kit.store.ledger_read()] == ["c1:failure", "c1:success"]
        await kit.close()


class TestStartupChecks:
    def test_local_embedder_without_its_extra_fails_at_startup(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """A cache on the local MiniLM without sentence-transformers installed fails naming the key and the extra."""
        import importlib.util

        from costkit_litellm.errors import ConfigError

        real = importlib.util.find_spec
        monkeypatch.setattr(
            importlib.util, "find_spec", lambda name, *a: None if name == "sentence_transformers" else real(name, *a)
        )
        with pytest.raises(ConfigError, match=r"costkit\.cache\.embedding_model: .*local-embeddings"):
            CostKit(parse_config({"cache": {"enabled": True}}), store=MemoryStore(), registry=CollectorRegistry())
