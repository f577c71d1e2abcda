"""Prometheus metrics of the pack, kept as exact integers and exposed at scrape time.

Spend is summed in integer nano-dollars and converted to dollars once per scrape, so the exported
total equals the sum of the recorded costs to 1e-9 USD however many requests were counted (a float
``Counter`` would accumulate rounding). The collector registers on any ``CollectorRegistry``
(default: the global one, which LiteLLM's ``prometheus`` callback serves at ``/metrics``).
"""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence

from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from costkit_litellm.accounting.labels import LabelLimiter
from costkit_litellm.money import NANO_PER_USD

Labels = tuple[str, ...]


class CostMetrics(Collector):
    """``costkit_spend_usd_total`` and ``costkit_requests_total``, labelled by model and tag labels."""

    def __init__(
        self,
        tag_labels: Sequence[str] = (),
        max_label_values: int = 50,
        registry: CollectorRegistry | None = REGISTRY,
    ) -> None:
        self._limiter = LabelLimiter(tag_labels, max_label_values)
        self._lock = threading.Lock()
        self._spend: dict[Labels, int] = defaultdict(int)
        self._requests: dict[Labels, int] = defaultdict(int)
        if registry is not None:
            registry.register(self)

    @property
    def tag_labels(self) -> tuple[str, ...]:
        """The attribute keys exported as labels."""
        return self._limiter.names

    def record(self, model: str, attributes: Mapping[str, str], outcome: str, cost_nano: int | None) -> None:
        """Count one request outcome and its cost (None: cost unknown, counted as a request only)."""
        with self._lock:
            tags = self._limiter.values(attributes)
            self._requests[(model, outcome, *tags)] += 1
            if cost_nano:
                self._spend[(model, *tags)] += cost_nano

    def spend_nano(self) -> int:
        """Total spend recorded by this process, in nano-dollars."""
        with self._lock:
            return sum(self._spend.values())

    def collect(self) -> Iterator[Metric]:
        """Yield the metric families (called by the registry at scrape time)."""
        names = list(self._limiter.names)
        with self._lock:
            spend = dict(self._spend)
            requests = dict(self._requests)
        spend_family = CounterMetricFamily(
            "costkit_spend_usd", "Spend on LLM calls in US dollars.", labels=["model", *names]
        )
        for labels, nano in spend.items():
            spend_family.add_metric(list(labels), nano / NANO_PER_USD)
        yield spend_family
        requests_family = CounterMetricFamily(
            "costkit_requests",
            "LLM requests seen by costkit, by outcome.",
            labels=["model", "outcome", *names],
        )
        for labels, count in requests.items():
            requests_family.add_metric(list(labels), count)
        yield requests_family

    def describe(self) -> Iterator[Metric]:
        """No up-front description: avoids a collect() at registration."""
        return iter(())
