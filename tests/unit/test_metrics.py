"""Spend metrics are exact sums with bounded label cardinality."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest

from costkit_litellm.accounting.labels import LabelLimiter
from costkit_litellm.accounting.metrics import CostMetrics


class TestLabelLimiter:
    def test_values_beyond_the_cap_become_other(self) -> None:
        """The first N distinct values are kept; later ones are 'other'; missing is 'none'."""
        limiter = LabelLimiter(["feature"], 2)
        assert [limiter.values({"feature": v})[0] for v in ("a", "b", "c", "a")] == ["a", "b", "other", "a"]
        assert limiter.values({}) == ("none",)


class TestCostMetrics:
    def test_ten_thousand_features_keep_series_bounded_and_total_exact(self) -> None:
        """10,000 distinct feature values give at most cap+2 series and the exact total spend."""
        registry = CollectorRegistry()
        metrics = CostMetrics(["feature"], max_label_values=20, registry=registry)
        for i in range(10_000):
            metrics.record("gpt-4o-mini", {"feature": f"f{i}"}, "success", 13_500)
        series = [s for family in registry.collect() if family.name == "costkit_spend_usd" for s in family.samples]
        assert len(series) <= 22
        assert metrics.spend_nano() == 10_000 * 13_500
        total = sum(s.value for s in series)
        assert abs(total - 0.135) < 1e-12

    def test_exposition_has_dollars_per_model_and_label(self) -> None:
        """The scrape shows costkit_spend_usd_total in dollars with model and tag labels."""
        registry = CollectorRegistry()
        metrics = CostMetrics(["feature"], registry=registry)
        metrics.record("m", {"feature": "email_writer"}, "success", 1_500_000_000)
        metrics.record("m", {"feature": "email_writer"}, "failure", 0)
        assert registry.get_sample_value("costkit_spend_usd_total", {"model": "m", "feature": "email_writer"}) == 1.5
        assert (
            registry.get_sample_value(
                "costkit_requests_total", {"model": "m", "feature": "email_writer", "outcome": "failure"}
            )
            == 1.0
        )
        assert b"costkit_spend_usd_total" in generate_latest(registry)

    def test_unknown_cost_counts_the_request_only(self) -> None:
        """A request whose cost is unknown is counted, without inventing a spend."""
        registry = CollectorRegistry()
        metrics = CostMetrics([], registry=registry)
        metrics.record("m", {}, "success", None)
        assert registry.get_sample_value("costkit_requests_total", {"model": "m", "outcome": "success"}) == 1.0
        assert metrics.spend_nano() == 0
