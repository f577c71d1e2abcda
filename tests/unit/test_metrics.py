"""Metrics: exact sums with bounded label cardinality, one set per registry, every costkit_* family."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest

from costkit_litellm.accounting.events import UsageEvent
from costkit_litellm.accounting.labels import LabelLimiter
from costkit_litellm.accounting.metrics import CostKitMetrics


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
        metrics = CostKitMetrics(["feature"], registry=registry)
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
        metrics = CostKitMetrics([], registry=registry)
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
                metrics = CostKitMetrics.for_registry([], registry=registry)
                metrics.record(event(None))
                labels = {"model": "m", "tier": "none", "outcome": "success", "endpoint": "chat"}
                assert registry.get_sample_value("costkit_requests_total", labels) == 1
                del registry, metrics
                gc.collect()
        finally:
            gc.unfreeze()
