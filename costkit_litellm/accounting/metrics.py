"""Every ``costkit_*`` Prometheus metric, in one place, for the accounting, budget and breaker stages.

Built on prometheus_client's own metric classes, so they also work in multiprocess mode (several
proxy workers, ``PROMETHEUS_MULTIPROC_DIR`` set, as LiteLLM does with ``--num_workers``). Dollar
values are float64 sums of exact nano-dollar amounts (exact to 1e-9 USD for totals far beyond a
day of traffic; the ledger keeps the exact integers). Labels: ``model`` (a model the operator
configured, else ``other``: ``labels.ModelLabels``), ``tier``, ``endpoint`` (the call type, from the
adapter's table: a bounded set; on requests and spend), ``outcome`` (``events.OUTCOMES``) and the
allow-listed tag keys (``metrics.tag_labels``): ``team`` from the authenticated key, the others
declared values or capped per process and per tenant (``labels.LabelLimiter``; overflow is
counted as ``other``, so sums stay exact and series bounded).

One ``CostKitMetrics`` per registry: asking again for the same registry returns the same object,
so two kits in one process (or a re-built callback) never register twice.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Collection, Mapping, Sequence
from typing import TYPE_CHECKING

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram

from costkit_litellm.accounting.events import OUTCOMES
from costkit_litellm.accounting.labels import OTHER, LabelLimiter, ModelLabels
from costkit_litellm.money import NANO_PER_USD

if TYPE_CHECKING:
    from costkit_litellm.accounting.events import UsageEvent

COST_BUCKETS = (1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0)
_OUTCOMES = frozenset(OUTCOMES)
MAX_ENDPOINT_LENGTH = 32
"""An endpoint label comes from the adapter's table of call types; anything longer is ``other``."""
MAX_CACHED_SERIES = 10_000
"""Label sets whose metric children ``record`` keeps; beyond it, it looks them up each time."""
# Keyed by the registry itself (weakly): an id() key could be reused by a later registry.
_BY_REGISTRY: weakref.WeakKeyDictionary[CollectorRegistry, CostKitMetrics] = weakref.WeakKeyDictionary()
_LOCK = threading.Lock()


class CostKitMetrics:
    """The pack's metrics on one registry."""

    def __init__(
        self,
        tag_labels: Sequence[str] = (),
        max_label_values: int = 50,
        registry: CollectorRegistry | None = REGISTRY,
        max_remaining_series: int = 100,
        *,
        max_label_values_per_tenant: int | None = None,
        tag_values: Mapping[str, Collection[str]] | None = None,
        models: ModelLabels | None = None,
    ) -> None:
        self.tag_labels = tuple(tag_labels)
        self._limiter = LabelLimiter(self.tag_labels, max_label_values, max_label_values_per_tenant, tag_values)
        self.models = models or ModelLabels()
        """Which model names may be label values (``CostKit`` plugs in the configured ones)."""
        self._lock = threading.Lock()
        self._remaining_children: dict[tuple[str, str], Gauge] = {}
        """The remaining-budget gauge's children by (budget, value): at most ``max_remaining_series``."""
        self._max_remaining = max_remaining_series
        self._series: dict[tuple[str, str, str, str, tuple[str, ...]], _Series] = {}
        self._cache_results: dict[str, Counter] = {}
        tags = list(self.tag_labels)
        self.spend = Counter(
            "costkit_spend_usd",
            "Spend on LLM calls in US dollars.",
            ["model", "tier", "endpoint", *tags],
            registry=registry,
        )
        self.tokens = Counter(
            "costkit_tokens", "Tokens by direction.", ["model", "tier", "direction", *tags], registry=registry
        )
        self.requests = Counter(
            "costkit_requests",
            "Requests seen by costkit, by outcome.",
            ["model", "tier", "outcome", "endpoint", *tags],
            registry=registry,
        )
        self.saved = Counter(
            "costkit_saved_usd",
            "Dollars saved, by source (cache, routing).",
            ["source", "model", *tags],
            registry=registry,
        )
        self.cache = Counter(
            "costkit_cache_requests", "Cache lookups by result (hit, miss, skip).", ["result"], registry=registry
        )
        self.cost = Histogram(
            "costkit_request_cost_usd",
            "Cost of one request in dollars.",
            ["model", "tier"],
            buckets=COST_BUCKETS,
            registry=registry,
        )
        self.remaining = Gauge(
            "costkit_budget_remaining_usd",
            "Dollars left in a budget window.",
            ["budget", "value"],
            multiprocess_mode="mostrecent",
            registry=registry,
        )
        self.rejections = Counter(
            "costkit_budget_rejections", "Requests refused by a budget.", ["budget", "reason"], registry=registry
        )
        self.alerts = Counter(
            "costkit_budget_alerts", "Budget alert thresholds crossed.", ["budget", "threshold"], registry=registry
        )
        self.downgrades = Counter(
            "costkit_budget_downgrades",
            "Requests sent to a cheaper model by a downgrade budget.",
            ["budget"],
            registry=registry,
        )
        self.breaks = Counter(
            "costkit_circuit_breaks", "Agent sessions stopped by the breaker.", ["reason"], registry=registry
        )
        self.overrun = Counter(
            "costkit_budget_overrun_usd",
            "Spend committed above what was held for the request (the estimate missed), by budget.",
            ["budget"],
            registry=registry,
        )
        self.inflight_drops = Counter(
            "costkit_inflight_dropped",
            "Requests whose server-side state was dropped before any outcome arrived.",
            registry=registry,
        )
        self.store_errors = Counter(
            "costkit_store_errors",
            "Store operations that failed (handled by the outage policy).",
            ["operation"],
            registry=registry,
        )
        self.webhook_events = Counter(
            "costkit_webhook_events",
            "Ledger events the billing webhook forwarder handled, by result (sent, dead_lettered, dropped: "
            "given up on while the dead-letter record was full).",
            ["result"],
            registry=registry,
        )
        self.internal_errors = Counter(
            "costkit_internal_errors",
            "Unexpected errors inside the pack's pre-call hook, by stage and what was done (refused, admitted).",
            ["stage", "action"],
            registry=registry,
        )

    @classmethod
    def for_registry(
        cls,
        tag_labels: Sequence[str] = (),
        max_label_values: int = 50,
        registry: CollectorRegistry | None = REGISTRY,
        max_remaining_series: int = 100,
        *,
        max_label_values_per_tenant: int | None = None,
        tag_values: Mapping[str, Collection[str]] | None = None,
        models: ModelLabels | None = None,
    ) -> CostKitMetrics:
        """The metrics of ``registry``, created on first use (``None``: a private, unregistered set)."""

        def build(target: CollectorRegistry | None) -> CostKitMetrics:
            return cls(
                tag_labels,
                max_label_values,
                target,
                max_remaining_series,
                max_label_values_per_tenant=max_label_values_per_tenant,
                tag_values=tag_values,
                models=models,
            )

        if registry is None:
            return build(None)
        with _LOCK:
            existing = _BY_REGISTRY.get(registry)
            if existing is None:
                existing = build(registry)
                _BY_REGISTRY[registry] = existing
            return existing

    # --- accounting ---------------------------------------------------------------------
    def record(self, event: UsageEvent) -> None:
        """Count one usage event: request, spend, tokens, cost histogram, savings, cache result.

        The metric children an event touches are looked up once per label set and kept
        (``prometheus_client``'s ``labels()`` validates and formats every value on each call).
        """
        with self._lock:
            tags = self._limiter.values(event.attributes, event.team, event.team or event.api_key_hash)
        model, tier = self.models.label(event.model), event.tier or "none"
        endpoint = event.endpoint if event.endpoint and len(event.endpoint) <= MAX_ENDPOINT_LENGTH else OTHER
        outcome = event.outcome if event.outcome in _OUTCOMES else OTHER
        key = (model, tier, outcome, endpoint, tags)
        series = self._series.get(key)
        if series is None:
            series = _Series(self.requests.labels(model, tier, outcome, endpoint, *tags))
            if len(self._series) < MAX_CACHED_SERIES:
                self._series[key] = series
        series.requests.inc()
        cost = event.cost_nano
        if cost:
            if series.spend is None:
                series.spend = self.spend.labels(model, tier, endpoint, *tags)
            series.spend.inc(cost / NANO_PER_USD)
        if cost is not None and outcome in ("success", "cache_hit"):
            if series.cost is None:
                series.cost = self.cost.labels(model, tier)
            series.cost.observe(cost / NANO_PER_USD)
        if event.input_tokens:
            if series.input_tokens is None:
                series.input_tokens = self.tokens.labels(model, tier, "input", *tags)
            series.input_tokens.inc(event.input_tokens)
        if event.output_tokens:
            if series.output_tokens is None:
                series.output_tokens = self.tokens.labels(model, tier, "output", *tags)
            series.output_tokens.inc(event.output_tokens)
        if event.saved_nano and event.saved_source:
            saved = series.saved.get(event.saved_source)
            if saved is None:
                saved = series.saved[event.saved_source] = self.saved.labels(event.saved_source, model, *tags)
            saved.inc(event.saved_nano / NANO_PER_USD)
        if event.cache_status:
            result = self._cache_results.get(event.cache_status)
            if result is None:
                result = self.cache.labels(event.cache_status)
                if len(self._cache_results) < MAX_CACHED_SERIES:
                    self._cache_results[event.cache_status] = result
            result.inc()

    # --- budgets and breaker ------------------------------------------------------------
    def budget_remaining(self, budget: str, value: str, nano: int, trusted: bool = True) -> None:
        """What is left of one budget for one value (at most ``max_remaining_series`` pairs, first come).

        Only ``trusted`` values get a series: ones the key carries (global, api key, team, the key's
        own user) or the budget names (``values``, ``overrides``). A client-asserted value
        (``metadata.user_id``, ``user``, a tag) gets none, so invented values cannot take the slots."""
        key = (budget, value)
        child = self._remaining_children.get(key)
        if child is None:
            if not trusted:
                return
            with self._lock:
                if key not in self._remaining_children:
                    if len(self._remaining_children) >= self._max_remaining:
                        return
                    self._remaining_children[key] = self.remaining.labels(budget, value)
                child = self._remaining_children[key]
        child.set(nano / NANO_PER_USD)

    def rejected(self, budget: str, reason: str) -> None:
        """A refusal by a budget (``exceeded``, ``too_large``, ``price_unknown``, ``store_unavailable``)."""
        self.rejections.labels(budget, reason).inc()

    def alerted(self, budget: str, threshold: str) -> None:
        """An alert threshold crossed."""
        self.alerts.labels(budget, threshold).inc()

    def downgraded(self, budget: str) -> None:
        """A request sent to a cheaper model by a downgrade budget."""
        self.downgrades.labels(budget).inc()

    def tripped(self, reason: str) -> None:
        """A circuit-breaker trip."""
        self.breaks.labels(reason).inc()

    def overran(self, budget: str, nano: int) -> None:
        """A commit above the request's hold: ``nano`` more than held, on ``budget``."""
        self.overrun.labels(budget).inc(nano / 1e9)

    def inflight_dropped(self) -> None:
        """A request's server-side state was dropped with no outcome."""
        self.inflight_drops.inc()

    def store_error(self, operation: str) -> None:
        """A failed store operation."""
        self.store_errors.labels(operation).inc()

    def internal_error(self, stage: str, action: str) -> None:
        """An unexpected error in the pre-call hook, and whether the request was ``refused`` or ``admitted``."""
        self.internal_errors.labels(stage, action).inc()


class _Series:
    """The metric children of one (model, tier, outcome, endpoint, tags) label set, each made on first use
    (so a series appears only once something was counted in it, as with ``labels()`` each time)."""

    __slots__ = ("cost", "input_tokens", "output_tokens", "requests", "saved", "spend")

    def __init__(self, requests: Counter) -> None:
        self.requests = requests
        self.spend: Counter | None = None
        self.cost: Histogram | None = None
        self.input_tokens: Counter | None = None
        self.output_tokens: Counter | None = None
        self.saved: dict[str, Counter] = {}
