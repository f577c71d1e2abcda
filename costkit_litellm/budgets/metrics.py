"""Budget and breaker metrics: remaining per budget (bounded), rejections, alerts, circuit trips."""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Iterator, Mapping

from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from costkit_litellm.money import NANO_PER_USD


class BudgetMetrics(Collector):
    """``costkit_budget_remaining_usd``, ``costkit_budget_rejections_total``, ``costkit_budget_alerts_total``,
    ``costkit_budget_downgrades_total``, ``costkit_circuit_breaks_total`` and ``costkit_store_errors_total``.

    Remaining is kept for at most ``max_series`` (budget, value) pairs per process: later pairs are
    not exported (an ``other`` bucket would mean nothing for a remaining amount).
    """

    def __init__(self, max_series: int = 100, registry: CollectorRegistry | None = REGISTRY) -> None:
        self._max = max_series
        self._lock = threading.Lock()
        self._remaining: dict[tuple[str, str], int] = {}
        self._rejections: dict[tuple[str, ...], int] = defaultdict(int)
        self._alerts: dict[tuple[str, ...], int] = defaultdict(int)
        self._downgrades: dict[str, int] = defaultdict(int)
        self._breaks: dict[str, int] = defaultdict(int)
        self._store_errors: dict[str, int] = defaultdict(int)
        if registry is not None:
            registry.register(self)

    def remaining(self, budget: str, value: str, nano: int) -> None:
        """Record what is left of one budget for one value."""
        with self._lock:
            key = (budget, value)
            if key in self._remaining or len(self._remaining) < self._max:
                self._remaining[key] = nano

    def rejected(self, budget: str, reason: str) -> None:
        """Count a refusal by a budget (``exceeded``, ``too_large``, ``price_unknown``, ``store_unavailable``)."""
        with self._lock:
            self._rejections[(budget, reason)] += 1

    def alerted(self, budget: str, threshold: str) -> None:
        """Count an alert threshold crossed."""
        with self._lock:
            self._alerts[(budget, threshold)] += 1

    def downgraded(self, budget: str) -> None:
        """Count a request sent to a cheaper model by a downgrade budget."""
        with self._lock:
            self._downgrades[budget] += 1

    def tripped(self, reason: str) -> None:
        """Count a circuit-breaker trip."""
        with self._lock:
            self._breaks[reason] += 1

    def store_error(self, operation: str) -> None:
        """Count a failed store operation (the outage policy decided what happened)."""
        with self._lock:
            self._store_errors[operation] += 1

    def collect(self) -> Iterator[Metric]:
        """Yield the metric families at scrape time."""
        with self._lock:
            remaining = dict(self._remaining)
            rejections = dict(self._rejections)
            alerts = dict(self._alerts)
            downgrades = dict(self._downgrades)
            breaks = dict(self._breaks)
            errors = dict(self._store_errors)
        gauge = GaugeMetricFamily(
            "costkit_budget_remaining_usd", "Dollars left in a budget window.", labels=["budget", "value"]
        )
        for labels, nano in remaining.items():
            gauge.add_metric(list(labels), nano / NANO_PER_USD)
        yield gauge
        yield _counter("costkit_budget_rejections", "Requests refused by a budget.", ["budget", "reason"], rejections)
        yield _counter("costkit_budget_alerts", "Budget alert thresholds crossed.", ["budget", "threshold"], alerts)
        yield _counter(
            "costkit_budget_downgrades",
            "Requests sent to a cheaper model by a downgrade budget.",
            ["budget"],
            {(k,): v for k, v in downgrades.items()},
        )
        yield _counter(
            "costkit_circuit_breaks",
            "Agent sessions stopped by the breaker.",
            ["reason"],
            {(k,): v for k, v in breaks.items()},
        )
        yield _counter(
            "costkit_store_errors",
            "Store operations that failed (handled by the outage policy).",
            ["operation"],
            {(k,): v for k, v in errors.items()},
        )

    def describe(self) -> Iterator[Metric]:
        """No up-front description: avoids a collect() at registration."""
        return iter(())


def _counter(name: str, doc: str, labels: list[str], values: Mapping[tuple[str, ...], int]) -> CounterMetricFamily:
    family = CounterMetricFamily(name, doc, labels=labels)
    for key, count in values.items():
        family.add_metric(list(key), count)
    return family
