"""Metrics: exact sums with bounded label cardinality whatever clients send, one set per registry, every
costkit_* family."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, generate_latest

from costkit_litellm.accounting.events import OUTCOMES, UsageEvent
from costkit_litellm.accounting.labels import LabelLimiter, ModelLabels
from costkit_litellm.accounting.metrics import CostKitMetrics
from costkit_litellm.config import parse_config
from costkit_litellm.errors import ConfigError

MODELS = ModelLabels(["m"])
"""The model names the tests' operator configured."""


def event(feature: str | None, cost: int | None = 13_500, outcome: str = "success", **extra: object) -> UsageEvent:
    attributes = {"feature": feature} if feature else {}
    return UsageEvent(
        call_id="c",
        outcome=outcome,
        timestamp=0.0,
        request_model="m",
        model="m",
        cost_nano=cost,
        attributes=attributes,
        **extra,  # type: ignore[arg-type]
    )


class TestLabelLimiter:
    def test_values_beyond_the_cap_become_other(self) -> None:
        """The first N distinct values are kept; later ones are 'other'; missing is 'none'."""
        limiter = LabelLimiter(["feature"], 2)
        assert [limiter.values({"feature": v})[0] for v in ("a", "b", "c", "a")] == ["a", "b", "other", "a"]
        assert limiter.values({}) == ("none",)


class TestCostKitMetrics:
    def test_ten_thousand_features_keep_series_bounded_and_total_exact(self) -> None:
        """10,000 distinct feature values give at most cap+2 spend series and the exact total spend."""
        registry = CollectorRegistry()
        metrics = CostKitMetrics(["feature"], max_label_values=20, registry=registry)
        for i in range(10_000):
            metrics.record(event(f"f{i}"))
        series = [
            s
            for family in registry.collect()
            if family.name == "costkit_spend_usd"
            for s in family.samples
            if s.name == "costkit_spend_usd_total"
        ]
        assert len(series) <= 22
        assert abs(sum(s.value for s in series) - 0.135) < 1e-9

    def test_families_and_labels(self) -> None:
        """One event feeds requests, spend, tokens, the cost histogram, savings and cache results."""
        registry = CollectorRegistry()
        metrics = CostKitMetrics(["feature"], registry=registry, models=MODELS)
        metrics.record(
            event(
                "email_writer",
                cost=1_500_000_000,
                tier="economy",
                input_tokens=10,
                output_tokens=20,
                saved_nano=500_000_000,
                saved_source="routing",
                cache_status="miss",
            )
        )
        labels = {"model": "m", "tier": "economy", "feature": "email_writer"}
        by_endpoint = {**labels, "endpoint": "chat"}
        assert registry.get_sample_value("costkit_spend_usd_total", by_endpoint) == 1.5
        assert registry.get_sample_value("costkit_requests_total", {**by_endpoint, "outcome": "success"}) == 1
        assert registry.get_sample_value("costkit_tokens_total", {**labels, "direction": "output"}) == 20
        assert registry.get_sample_value("costkit_request_cost_usd_count", {"model": "m", "tier": "economy"}) == 1
        saved = {"source": "routing", "model": "m", "feature": "email_writer"}
        assert registry.get_sample_value("costkit_saved_usd_total", saved) == 0.5
        assert registry.get_sample_value("costkit_cache_requests_total", {"result": "miss"}) == 1
        assert b"costkit_spend_usd_total" in generate_latest(registry)

    def test_unknown_cost_counts_the_request_only(self) -> None:
        """A request whose cost is unknown is counted, without inventing a spend."""
        registry = CollectorRegistry()
        metrics = CostKitMetrics([], registry=registry, models=MODELS)
        metrics.record(event(None, cost=None))
        assert (
            registry.get_sample_value(
                "costkit_requests_total", {"model": "m", "tier": "none", "outcome": "success", "endpoint": "chat"}
            )
            == 1
        )
        spend = {"model": "m", "tier": "none", "endpoint": "chat"}
        assert registry.get_sample_value("costkit_spend_usd_total", spend) is None

    def test_one_set_per_registry(self) -> None:
        """Asking twice for the same registry returns the same metrics instead of registering twice."""
        registry = CollectorRegistry()
        assert CostKitMetrics.for_registry(["feature"], registry=registry) is CostKitMetrics.for_registry(
            ["feature"], registry=registry
        )

    def test_budget_remaining_series_are_capped(self) -> None:
        """Remaining is exported for at most max_remaining_series (budget, value) pairs."""
        registry = CollectorRegistry()
        metrics = CostKitMetrics([], registry=registry, max_remaining_series=2)
        for value in ("a", "b", "c"):
            metrics.budget_remaining("daily", value, 10**9)
        assert registry.get_sample_value("costkit_budget_remaining_usd", {"budget": "daily", "value": "b"}) == 1.0
        assert registry.get_sample_value("costkit_budget_remaining_usd", {"budget": "daily", "value": "c"}) is None

    def test_a_new_registry_gets_its_own_metrics(self) -> None:
        """A registry created after another was dropped never inherits the dropped one's metrics."""
        import gc

        gc.freeze()  # the session's heap (litellm, torch) stays out of the collections below: each is cheap
        try:
            for _ in range(20):
                registry = CollectorRegistry()
                metrics = CostKitMetrics.for_registry([], registry=registry, models=MODELS)
                metrics.record(event(None))
                labels = {"model": "m", "tier": "none", "outcome": "success", "endpoint": "chat"}
                assert registry.get_sample_value("costkit_requests_total", labels) == 1
                del registry, metrics
                gc.collect()
        finally:
            gc.unfreeze()


def label_values(registry: CollectorRegistry, label: str, sample: str = "costkit_requests_total") -> set[str]:
    """The values ``label`` takes on one sample name."""
    return {s.labels[label] for f in registry.collect() for s in f.samples if s.name == sample}


def series(registry: CollectorRegistry) -> int:
    """Every costkit_* sample the registry exports."""
    return sum(len(f.samples) for f in registry.collect() if f.name.startswith("costkit_"))


def tagged(
    model: str,
    team: str | None,
    key: str,
    attributes: dict[str, str] | None = None,
    outcome: str = "success",
    cost_nano: int = 1_000,
) -> UsageEvent:
    """A priced event from ``key`` of ``team`` with the client's ``attributes``."""
    return UsageEvent(
        call_id="c",
        outcome=outcome,
        timestamp=0.0,
        request_model=model,
        model=model,
        cost_nano=cost_nano,
        team=team,
        api_key_hash=key,
        attributes=attributes or {},
    )


class Catalog:
    """A router that knows one group, its provider model and a wildcard group."""

    def resolve(self, model: str) -> str | None:
        if model in ("gpt-4o", "openai/gpt-4o"):
            return model
        return "anthropic/*" if model.startswith("anthropic/") else None


class TestModelLabel:
    def test_only_configured_models_are_label_values(self) -> None:
        """450 invented model names give no series of their own: they all count as 'other', totals exact."""
        registry = CollectorRegistry()
        metrics = CostKitMetrics([], registry=registry, models=ModelLabels(["auto"], Catalog()))
        for i in range(450):
            metrics.record(tagged(f"random-{i}", None, "k"))
        for model in ("gpt-4o", "openai/gpt-4o", "anthropic/claude-x", "auto", ""):
            metrics.record(tagged(model, None, "k"))
        assert label_values(registry, "model") == {"other", "gpt-4o", "openai/gpt-4o", "anthropic/*", "auto", "unknown"}
        other = {"model": "other", "tier": "none", "outcome": "success", "endpoint": "chat"}
        assert registry.get_sample_value("costkit_requests_total", other) == 450

    def test_a_cap_filled_first_by_junk_still_shows_the_real_model(self) -> None:
        """Invented names sent before any real request never take the real model's place."""
        registry = CollectorRegistry()
        metrics = CostKitMetrics([], registry=registry, models=ModelLabels((), Catalog()))
        for i in range(100):
            metrics.record(tagged(f"junk-{i}", None, "k"))
        metrics.record(tagged("gpt-4o", None, "k"))
        labels = {"model": "gpt-4o", "tier": "none", "outcome": "success", "endpoint": "chat"}
        assert registry.get_sample_value("costkit_requests_total", labels) == 1

    def test_a_catalog_that_raises_counts_other(self) -> None:
        """A failing model lookup never fails the accounting: the event counts as 'other'."""

        class Broken:
            def resolve(self, model: str) -> str | None:
                raise RuntimeError("router gone")

        assert ModelLabels((), Broken()).label("gpt-4o") == "other"

    def test_odd_outcomes_and_endpoints_are_other(self) -> None:
        """An outcome outside OUTCOMES or an over-long endpoint is labelled 'other'."""
        registry = CollectorRegistry()
        metrics = CostKitMetrics([], registry=registry, models=MODELS)
        metrics.record(event(None, outcome="x" * 40, endpoint="e" * 100))
        assert label_values(registry, "outcome") == {"other"}
        assert label_values(registry, "endpoint") == {"other"}


class TestTagLabels:
    def test_the_team_label_is_the_keys_team_not_metadata(self) -> None:
        """metadata.team = 'team-a' sent with team-b's key is counted under team-b."""
        registry = CollectorRegistry()
        metrics = CostKitMetrics(["feature", "team"], registry=registry, models=MODELS)
        metrics.record(tagged("m", "team-b", "bob", {"feature": "f", "team": "team-a"}))
        assert label_values(registry, "team") == {"team-b"}

    def test_one_tenant_flooding_features_leaves_room_for_the_others(self) -> None:
        """50 junk features from one team take at most max_label_values_per_tenant slots; another team's
        feature keeps its own series."""
        registry = CollectorRegistry()
        metrics = CostKitMetrics(
            ["feature", "team"], 50, registry=registry, models=MODELS, max_label_values_per_tenant=10
        )
        for i in range(50):
            metrics.record(tagged("m", "team-b", "bob", {"feature": f"junk-{i}"}))
        metrics.record(tagged("m", "team-a", "alice", {"feature": "email_writer"}))
        features = label_values(registry, "feature")
        assert "email_writer" in features and len(features - {"email_writer", "other"}) == 10
        alice = {"model": "m", "tier": "none", "endpoint": "chat", "feature": "email_writer", "team": "team-a"}
        assert registry.get_sample_value("costkit_spend_usd_total", alice) == pytest.approx(1e-6)

    def test_declared_values_are_the_only_label_values(self) -> None:
        """With metrics.tag_values, an undeclared value is 'other' even when slots are free."""
        limiter = LabelLimiter(["feature"], 50, allowed={"feature": ["email_writer"]})
        assert limiter.values({"feature": "email_writer"}) == ("email_writer",)
        assert limiter.values({"feature": "junk"}) == ("other",)

    @settings(max_examples=60, deadline=None)
    @given(
        st.lists(
            st.tuples(
                st.text(max_size=30),
                st.sampled_from([None, "team-a", "team-b"]),
                st.sampled_from(["alice", "bob", "carol"]),
                st.dictionaries(st.sampled_from(["feature", "team", "x"]), st.text(min_size=1, max_size=8)),
                st.sampled_from(OUTCOMES),
            ),
            max_size=120,
        )
    )
    def test_series_stay_bounded_whatever_clients_send(
        self, sent: list[tuple[str, str | None, str, dict[str, str], str]]
    ) -> None:
        """Property: whatever model names and metadata clients send, each label keeps a bounded set of values
        (model: configured names + other/unknown; team: the keys' teams + none; feature: at most cap + 2)."""
        registry = CollectorRegistry()
        metrics = CostKitMetrics(
            ["feature", "team"], 5, registry=registry, models=MODELS, max_label_values_per_tenant=2
        )
        for model, team, key, attributes, outcome in sent:
            metrics.record(tagged(model, team, key, attributes, outcome=outcome, cost_nano=1))
        assert label_values(registry, "model") <= {"m", "other", "unknown"}
        assert label_values(registry, "team") <= {"team-a", "team-b", "none"}
        assert len(label_values(registry, "feature")) <= 5 + 2
        # 3 models x 7 outcomes x 1 endpoint x 7 features x 3 teams requests series, at most
        assert len([1 for f in registry.collect() for s in f.samples if s.name == "costkit_requests_total"]) <= 441
        assert series(registry) <= 441 * 12


class TestRemainingGauge:
    def test_client_asserted_values_get_no_series(self) -> None:
        """An untrusted (client-asserted) budget value never takes a remaining-gauge slot from a trusted one."""
        registry = CollectorRegistry()
        metrics = CostKitMetrics([], registry=registry, max_remaining_series=2)
        for i in range(50):
            metrics.budget_remaining("daily", f"junk-{i}", 10**9, trusted=False)
        metrics.budget_remaining("daily", "key-user", 10**9)
        assert registry.get_sample_value("costkit_budget_remaining_usd", {"budget": "daily", "value": "key-user"}) == 1
        assert registry.get_sample_value("costkit_budget_remaining_usd", {"budget": "daily", "value": "junk-0"}) is None


class TestConfig:
    @pytest.mark.parametrize("label", ["user", "end_user", "api_key_alias"])
    def test_identity_labels_are_refused(self, label: str) -> None:
        """A per-user or per-key label (client-assertable, one series each) is refused at start-up."""
        with pytest.raises(ConfigError, match=f"costkit.metrics.tag_labels: .*'{label}' cannot be a label"):
            parse_config({"metrics": {"tag_labels": [label]}})

    def test_declared_values_name_a_tag_label(self) -> None:
        """tag_values for a key missing from tag_labels, or for team, is refused."""
        with pytest.raises(ConfigError, match="is not in tag_labels"):
            parse_config({"metrics": {"tag_labels": ["feature"], "tag_values": {"x": ["a"]}}})
        with pytest.raises(ConfigError, match="authenticated key"):
            parse_config({"metrics": {"tag_labels": ["team"], "tag_values": {"team": ["a"]}}})


class TestSources:
    async def test_a_metadata_user_gets_no_remaining_series_but_the_keys_user_does(self) -> None:
        """A per-user budget exports remaining for the key's own user, not for a client's metadata.user_id."""
        from dataclasses import replace

        from test_round_trips import BUDGET, ctx, make_kit

        kit, _, registry = make_kit([BUDGET])
        await kit.admit(ctx(), 10)  # user "u" asserted by the client (the key has no user)
        await kit.admit(replace(ctx(), user_id="k", key_user_id="k"), 10)
        assert registry.get_sample_value("costkit_budget_remaining_usd", {"budget": "daily", "value": "u"}) is None
        assert registry.get_sample_value("costkit_budget_remaining_usd", {"budget": "daily", "value": "k"}) is not None
        await kit.close()

    def test_the_ledger_keeps_a_long_model_name_cut(self) -> None:
        """A 100,000-character model name reaches the ledger cut to MAX_NAME_LENGTH characters."""
        from costkit_litellm.accounting.events import MAX_NAME_LENGTH
        from costkit_litellm.context import RequestContext
        from costkit_litellm.money import Nano
        from costkit_litellm.pipeline import Outcome

        long = "x" * 100_000
        context = RequestContext(call_id="c", model=long, client_call_id=long)
        fields = UsageEvent.from_outcome(
            Outcome(kind="failure", context=context, model=long, deployment_model=long, cost=Nano(0))
        ).to_fields()
        assert {len(fields[k]) for k in ("gen_ai.request.model", "costkit.model_group", "litellm.call_id")} == {
            MAX_NAME_LENGTH
        }

    def test_the_router_catalog_knows_groups_provider_models_aliases_and_wildcards(self) -> None:
        """LiteLLMModelCatalog: a group, its provider model, an alias and a wildcard's pattern; anything else None."""
        import litellm

        from costkit_litellm.litellm_adapter.prices import LiteLLMModelCatalog

        router = litellm.Router(
            model_list=[
                {"model_name": "gpt-4o", "litellm_params": {"model": "openai/gpt-4o", "api_key": "x"}},
                {"model_name": "anthropic/*", "litellm_params": {"model": "anthropic/*", "api_key": "x"}},
            ],
            model_group_alias={"smart": "gpt-4o"},
        )
        catalog = LiteLLMModelCatalog(lambda: router)
        got = [catalog.resolve(m) for m in ("gpt-4o", "openai/gpt-4o", "smart", "anthropic/claude-9", "gpt-5-junk")]
        assert got == ["gpt-4o", "openai/gpt-4o", "smart", "anthropic/*", None]
        router.model_list.append({"model_name": "late", "litellm_params": {"model": "openai/late"}})
        assert catalog.resolve("late") == "late"  # a model added at run time is seen at once
        assert LiteLLMModelCatalog(lambda: None).resolve("gpt-4o-mini") == "gpt-4o-mini"  # no router: price map
        assert LiteLLMModelCatalog(lambda: None).resolve("gpt-5-junk") is None
