"""A real Prometheus server (Debian's /usr/bin/prometheus) scrapes a real proxy with the pack.

One proxy (pack + LiteLLM's ``prometheus`` callback, ledger in the session's Redis) and one
Prometheus (loopback port, temporary TSDB, 1 s scrape and rule interval, the repository's
alerts.yml loaded) serve the whole module; both are always stopped. Without the prometheus
binary the module fails under CI and skips elsewhere (``make prometheus-tools`` installs it).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from costkit_litellm.store.redis import RedisStore
from costkit_litellm.testing.fake_provider import FakeProvider
from costkit_litellm.testing.ports import free_port
from costkit_litellm.testing.proxy_server import (
    ProxyPool,
    ProxyServer,
    base_config,
    enable_costkit,
    openai_deployment,
)
from costkit_litellm.testing.redis_server import RedisServer

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS_BIN = Path("/usr/bin/prometheus")
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "costkit-dashboard.json"
NANO = Decimal("1e-9")
PREFIX = f"prom{uuid.uuid4().hex[:8]}"
FEATURES = tuple(f"{name}-{uuid.uuid4().hex[:4]}" for name in ("email", "search", "summary"))
MODELS = ("gpt-4o-mini", "gpt-4o")
REQUESTS = 60


class PrometheusServer:
    """``prometheus`` on a free loopback port with a temporary TSDB; always stopped by :meth:`stop`."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="costkit-prometheus-"))
        self.config_path = self.folder / "prometheus.yml"
        self.config_path.write_text(yaml.safe_dump(config, sort_keys=False))
        self.port = free_port()
        self.log_path = self.folder / "prometheus.log"
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 60) -> PrometheusServer:
        command = [
            str(PROMETHEUS_BIN),
            f"--config.file={self.config_path}",
            f"--storage.tsdb.path={self.folder / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--storage.tsdb.retention.time=1h",
            "--log.level=warn",
        ]
        with self.log_path.open("wb") as log:
            self._process = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if (code := self._process.poll()) is not None:
                self.stop()
                log_text = self.log_path.read_text(errors="replace")
                raise RuntimeError(f"prometheus exited with code {code}:\n{log_text[-3000:]}")
            with (
                contextlib.suppress(urllib.error.URLError, OSError),
                urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as response,
            ):
                if response.status == 200:
                    return self
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"prometheus not ready after {timeout_s}s")

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is not None:
            for sig, wait_s in ((signal.SIGTERM, 15.0), (signal.SIGKILL, 5.0)):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, sig)
                try:
                    process.wait(wait_s)
                    break
                except subprocess.TimeoutExpired:
                    continue

    def api(self, path: str, **params: str) -> Any:
        """GET ``/api/v1/<path>``; the ``data`` of a successful answer."""
        query = urllib.parse.urlencode(params)
        with urllib.request.urlopen(f"{self.url}/api/v1/{path}?{query}", timeout=10) as response:
            body = json.loads(response.read())
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query's result vector."""
        data = self.api("query", query=expr)
        assert data["resultType"] == "vector", data
        result: list[dict[str, Any]] = data["result"]
        return result


def eventually(check: Any, timeout_s: float = 30, interval_s: float = 0.5) -> Any:
    """Poll ``check()`` until it returns something truthy (scrapes every 2 s, rule runs every second)."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval_s)


def _filled(expr: str) -> str:
    """A dashboard expression with Grafana's variables filled in (intervals, range, ``.*`` for the rest)."""
    expr = re.sub(r"\$__(?:rate_interval|interval)\b", "30s", expr)
    expr = re.sub(r"\$__range\b", "10m", expr)
    return re.sub(r"\$\{?\w+\}?", ".*", expr)


@pytest.fixture(scope="module")
def proxy(proxy_factory: ProxyPool, fake_provider: FakeProvider, redis_server: RedisServer) -> ProxyServer:
    """The pack with LiteLLM's prometheus callback, two models on the fake provider, ledger in Redis."""
    config = base_config(
        [openai_deployment(model, fake_provider.base_url, model=f"openai/{model}") for model in MODELS],
        callbacks=["prometheus"],
    )
    costkit = {"redis_url": redis_server.url, "key_prefix": PREFIX, "metrics": {"tag_labels": ["feature", "team"]}}
    return proxy_factory("prometheus-scrape", enable_costkit(config, costkit))


@pytest.fixture(scope="module")
def prometheus(proxy: ProxyServer) -> Iterator[PrometheusServer]:
    """Prometheus scraping the proxy every 2 s with the master key, the repository's alerts loaded."""
    if not PROMETHEUS_BIN.is_file():
        reason = f"{PROMETHEUS_BIN} missing (Debian package `prometheus`; `make prometheus-tools`)"
        if os.environ.get("CI"):
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason)
    config = {
        # a 2 s scrape timeout (it may not exceed the interval): a scrape slowed by a loaded machine still lands
        "global": {"scrape_interval": "2s", "scrape_timeout": "2s", "evaluation_interval": "1s"},
        "rule_files": [str(ALERTS)],
        "scrape_configs": [
            {
                "job_name": "costkit",
                "metrics_path": "/metrics/",
                "authorization": {"type": "Bearer", "credentials": proxy.master_key},
                "static_configs": [{"targets": [f"127.0.0.1:{proxy.port}"]}],
            }
        ],
    }
    server = PrometheusServer(config).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def traffic(proxy: ProxyServer) -> dict[str, Decimal]:
    """60 requests across 3 features and 2 models; the sum of x-costkit-cost-usd by feature."""
    expected = {feature: Decimal(0) for feature in FEATURES}

    async def send() -> None:
        limits = httpx.Limits(max_connections=8)
        async with httpx.AsyncClient(
            base_url=proxy.base_url, headers=proxy.auth_headers, timeout=60, limits=limits
        ) as client:

            async def one(i: int) -> tuple[str, httpx.Response]:
                feature = FEATURES[i % 3]
                body = {
                    "model": MODELS[(i // 3) % 2],
                    "messages": [{"role": "user", "content": "count " * (i + 1)}],
                    "max_tokens": 50,
                    "metadata": {"feature": feature, "team": f"team-{i % 2}", "user_id": f"u{i % 5}"},
                }
                return feature, await client.post("/v1/chat/completions", json=body)

            for feature, response in await asyncio.gather(*(one(i) for i in range(REQUESTS))):
                assert response.status_code == 200, response.text
                expected[feature] += Decimal(response.headers["x-costkit-cost-usd"])

    asyncio.run(send())
    assert all(cost > 0 for cost in expected.values())
    return expected


def _by_feature(result: list[dict[str, Any]]) -> dict[str, Decimal]:
    return {sample["metric"].get("feature", ""): Decimal(sample["value"][1]) for sample in result}


def _matches(got: dict[str, Decimal], expected: dict[str, Decimal]) -> bool:
    return set(got) == set(expected) and all(abs(got[k] - expected[k]) < NANO for k in expected)


FEATURE_MATCH = "|".join(FEATURES)  # letters, digits and dashes: no regex escaping needed


class TestPrometheusScrapesTheProxy:
    def test_target_is_up_with_the_master_key(self, prometheus: PrometheusServer) -> None:
        """Prometheus scrapes /metrics/ with the master key as bearer token and the target is up."""

        def healthy() -> list[dict[str, Any]]:
            targets = prometheus.api("targets")["activeTargets"]
            return [t for t in targets if t["health"] == "up"]

        up = eventually(healthy)
        assert up, prometheus.api("targets")
        assert up[0]["scrapeUrl"].endswith("/metrics/")

    def test_spend_by_feature_equals_cost_headers(
        self, prometheus: PrometheusServer, traffic: dict[str, Decimal]
    ) -> None:
        """Prometheus's sum by (feature) (costkit_spend_usd_total) equals the summed cost headers, to 1e-9 USD."""
        expr = f'sum by (feature) (costkit_spend_usd_total{{feature=~"{FEATURE_MATCH}"}})'
        assert eventually(lambda: _matches(_by_feature(prometheus.query(expr)), traffic)), (
            _by_feature(prometheus.query(expr)),
            traffic,
        )
        counts = _by_feature(
            prometheus.query(
                f'sum by (feature) (costkit_requests_total{{feature=~"{FEATURE_MATCH}",outcome="success"}})'
            )
        )
        assert counts == {feature: REQUESTS // 3 for feature in FEATURES}

    def test_spend_by_feature_and_model_add_up(self, prometheus: PrometheusServer, traffic: dict[str, Decimal]) -> None:
        """Spend split by model sums back to the per-feature total, with both models present."""
        expr = f'sum by (feature, model) (costkit_spend_usd_total{{feature=~"{FEATURE_MATCH}"}})'
        result = eventually(lambda: r if len(r := prometheus.query(expr)) == 6 else None)
        assert result, prometheus.query(expr)
        totals: dict[str, Decimal] = {}
        for sample in result:
            totals[sample["metric"]["feature"]] = totals.get(sample["metric"]["feature"], Decimal(0)) + Decimal(
                sample["value"][1]
            )
        assert {sample["metric"]["model"] for sample in result} == set(MODELS)
        assert _matches(totals, traffic)

    async def test_spend_by_feature_equals_the_redis_ledger(
        self, prometheus: PrometheusServer, traffic: dict[str, Decimal], redis_server: RedisServer
    ) -> None:
        """The Redis ledger's cost_nano summed by costkit.attr.feature equals Prometheus's spend by feature exactly."""
        store = RedisStore(redis_server.url, prefix=PREFIX)
        await store.start()
        try:
            ledger: dict[str, Decimal] = {}
            deadline = time.monotonic() + 30
            while True:
                entries = [e for e in await store.ledger_read() if e.fields.get("costkit.outcome") == "success"]
                ledger = {}
                for entry in entries:
                    feature = entry.fields.get("costkit.attr.feature", "")
                    ledger[feature] = ledger.get(feature, Decimal(0)) + int(entry.fields["costkit.cost_nano"]) * NANO
                if len(entries) >= REQUESTS or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.2)
        finally:
            await store.close()
        assert len(entries) == REQUESTS
        assert ledger == traffic  # exact: the headers print the same nano-dollar integers
        expr = f'sum by (feature) (costkit_spend_usd_total{{feature=~"{FEATURE_MATCH}"}})'
        assert eventually(lambda: _matches(_by_feature(prometheus.query(expr)), ledger))

    def test_alert_rules_evaluate_on_scraped_data(
        self, prometheus: PrometheusServer, traffic: dict[str, Decimal]
    ) -> None:
        """Prometheus loads alerts.yml and evaluates every rule against the scraped series without an error."""

        def evaluated() -> list[dict[str, Any]] | None:
            rules = [r for g in prometheus.api("rules")["groups"] for r in g["rules"]]
            return rules if rules and all(r.get("lastEvaluation", "").startswith("20") for r in rules) else None

        rules = eventually(evaluated)
        assert rules, prometheus.api("rules")
        assert len(rules) == 8
        assert all(rule["health"] == "ok" for rule in rules), [(r["name"], r.get("lastError")) for r in rules]
        # 60 quick requests: nothing is wrong, so nothing fires.
        assert [r["name"] for r in rules if r["state"] == "firing"] == []

    def test_dashboard_queries_run_on_scraped_data(
        self, prometheus: PrometheusServer, traffic: dict[str, Decimal]
    ) -> None:
        """Every dashboard expression (variables filled in) runs on the real server; the spend panels see data."""
        dashboard = json.loads(DASHBOARD.read_text())
        exprs = [
            target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", []) if "expr" in target
        ]
        plain = [_filled(expr) for expr in exprs]

        def with_data() -> int:
            # every query must run; the count may lag a scrape that timed out on a loaded machine (its
            # staleness markers empty instant queries until the next scrape succeeds)
            return sum(bool(prometheus.api("query", query=expr)["result"]) for expr in plain)  # asserts success

        found = eventually(lambda: (count := with_data()) >= 10 and count)
        assert found, (with_data(), prometheus.api("query", query="up")["result"])
