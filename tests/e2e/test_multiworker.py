"""The pack in a proxy with two worker processes: /metrics/ aggregates every worker's costkit_* samples.

``litellm --num_workers 2`` with the ``prometheus`` callback in the config sets
``PROMETHEUS_MULTIPROC_DIR`` before it starts the workers (proxy_cli.py,
``maybe_setup_prometheus_multiproc_dir``; default ``$TMPDIR/litellm_prometheus_multiproc``,
wiped at start-up), so prometheus_client in each spawned worker writes its samples to mmap
files there, and each worker's ``/metrics`` serves a ``MultiProcessCollector`` over the whole
folder. The test gives the proxy a folder of its own (the default one is shared by every
multi-worker proxy on the machine, and each start-up wipes it).

uvicorn (0.54) kills a worker that does not answer its supervisor's ping within
``timeout_worker_healthcheck`` (default 5 s), and a spawned worker only starts answering
after it has re-imported litellm, which takes longer than that on a busy 2-core machine: the
workers are then killed and respawned forever. ``--timeout_worker_healthcheck 120`` (a
LiteLLM option passed on to uvicorn) avoids that.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.mmap_dict import MmapedDict

from costkit_litellm.testing.fake_provider import FakeProvider
from costkit_litellm.testing.ports import free_port
from costkit_litellm.testing.proxy_server import (
    ProxyPool,
    ProxyServer,
    base_config,
    enable_costkit,
    openai_deployment,
)

NANO = Decimal("1e-9")
ROUND = 20
MAX_ROUNDS = 5
FEATURES = tuple(f"mw{i}-{uuid.uuid4().hex[:4]}" for i in range(2))
_SAMPLE = re.compile(r"^(?P<name>[a-zA-Z_:][\w:]*)(?:\{(?P<labels>[^}]*)\})? (?P<value>\S+)$", re.M)


@pytest.fixture(scope="module")
def multiproc_dir() -> Iterator[Path]:
    """A PROMETHEUS_MULTIPROC_DIR of this module's own."""
    folder = Path(tempfile.mkdtemp(prefix="costkit-multiproc-"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def proxy(proxy_factory: ProxyPool, fake_provider: FakeProvider, multiproc_dir: Path) -> Iterator[ProxyServer]:
    """Two workers, the pack and LiteLLM's prometheus callback, two models on the fake provider."""
    config = base_config(
        [openai_deployment(m, fake_provider.base_url, model=f"openai/{m}") for m in ("gpt-4o-mini", "gpt-4o")],
        callbacks=["prometheus"],
    )
    config = enable_costkit(config, {"metrics": {"tag_labels": ["feature"]}})
    name = "multiworker"
    path = proxy_factory.write_config(name, config)
    server = ProxyServer(
        path,
        env={"PROMETHEUS_MULTIPROC_DIR": str(multiproc_dir)},
        extra_args=("--num_workers", "2", "--timeout_worker_healthcheck", "120"),
    )
    server.start(timeout_s=240)
    try:
        yield server
    finally:
        server.stop()


def scrape(proxy: ProxyServer) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every costkit_* sample of /metrics/: (name, labels) -> value."""
    text = httpx.get(f"{proxy.base_url}/metrics/", headers=proxy.auth_headers, timeout=10).text
    samples = {}
    for match in _SAMPLE.finditer(text):
        if match.group("name").startswith("costkit_"):
            labels = frozenset(re.findall(r'(\w+)="([^"]*)"', match.group("labels") or ""))
            samples[(match.group("name"), labels)] = float(match.group("value"))
    return samples


def total(samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **match: str) -> Decimal:
    """Sum of a metric's samples whose labels include ``match`` (each value read exactly as printed)."""
    wanted = set(match.items())
    return sum(
        (Decimal(repr(value)) for (n, labels), value in samples.items() if n == name and wanted <= labels),
        Decimal(0),
    )


def requests_by_worker(multiproc_dir: Path) -> dict[int, float]:
    """costkit_requests_total counted by each worker (pid), read from its multiprocess file."""
    counts: dict[int, float] = {}
    for path in multiproc_dir.glob("counter_*.db"):
        pid = int(path.stem.rsplit("_", 1)[1])
        for key, value, _timestamp, _pos in MmapedDict.read_all_values_from_file(str(path)):  # type: ignore[no-untyped-call]
            if json.loads(key)[1] == "costkit_requests_total":
                counts[pid] = counts.get(pid, 0.0) + value
    return {pid: n for pid, n in counts.items() if n}


class Traffic:
    """What the module sent: cost headers by feature and the number of requests."""

    def __init__(self) -> None:
        self.expected = {feature: Decimal(0) for feature in FEATURES}
        self.sent = 0


@pytest.fixture(scope="module")
def traffic(proxy: ProxyServer, multiproc_dir: Path) -> Traffic:
    """Rounds of 20 requests on fresh connections until both workers have counted some (at most 5 rounds)."""
    sent = Traffic()

    async def send_round() -> None:
        async def one(i: int) -> tuple[str, httpx.Response]:
            feature = FEATURES[i % 2]
            body = {
                "model": "gpt-4o" if i % 3 == 0 else "gpt-4o-mini",
                "messages": [{"role": "user", "content": "worker " * (i + 1)}],
                "max_tokens": 40,
                "metadata": {"feature": feature},
            }
            # A new connection per request: the workers accept from one shared socket.
            async with httpx.AsyncClient(base_url=proxy.base_url, headers=proxy.auth_headers, timeout=60) as client:
                return feature, await client.post("/v1/chat/completions", json=body)

        for feature, response in await asyncio.gather(*(one(sent.sent + i) for i in range(ROUND))):
            assert response.status_code == 200, response.text
            sent.expected[feature] += Decimal(response.headers["x-costkit-cost-usd"])
        sent.sent += ROUND

    for _ in range(MAX_ROUNDS):
        asyncio.run(send_round())
        deadline = time.monotonic() + 10
        while sum(requests_by_worker(multiproc_dir).values()) < sent.sent and time.monotonic() < deadline:
            time.sleep(0.2)
        if len(requests_by_worker(multiproc_dir)) >= 2:
            break
    return sent


def _eventually_equal(proxy: ProxyServer, expected: dict[str, Decimal], timeout_s: float = 20) -> dict[str, Decimal]:
    """Scrape until spend by feature equals ``expected`` (callbacks run just after the response)."""
    deadline = time.monotonic() + timeout_s
    while True:
        samples = scrape(proxy)
        got = {f: total(samples, "costkit_spend_usd_total", feature=f) for f in expected}
        if all(abs(got[f] - expected[f]) < NANO for f in expected) or time.monotonic() > deadline:
            return got
        time.sleep(0.2)


class TestTwoWorkers:
    def test_proxy_runs_two_workers_in_multiprocess_mode(self, proxy: ProxyServer, multiproc_dir: Path) -> None:
        """The proxy runs two worker processes with the pack, in prometheus_client multiprocess mode on its folder."""
        # The proxy is healthy once one worker serves; the second may still be loading the pack.
        deadline = time.monotonic() + 120
        while proxy.log_text().count("costkit: loaded from") < 2 and time.monotonic() < deadline:
            time.sleep(0.5)
        log = proxy.log_text()
        assert f"PROMETHEUS_MULTIPROC_DIR={multiproc_dir}" in log
        assert len(re.findall(r"Started server process \[\d+\]", log)) >= 2
        assert log.count("costkit: loaded from") >= 2

    def test_both_workers_counted_requests(self, traffic: Traffic, multiproc_dir: Path) -> None:
        """Each of the two workers counted part of the requests in its own file, together all of them."""
        by_worker = requests_by_worker(multiproc_dir)
        assert len(by_worker) == 2, by_worker
        assert sum(by_worker.values()) == traffic.sent

    def test_spend_is_exact_across_workers(self, proxy: ProxyServer, traffic: Traffic) -> None:
        """Aggregated costkit_spend_usd_total by feature on /metrics/ equals the sum of cost headers, to 1e-9 USD."""
        got = _eventually_equal(proxy, traffic.expected)
        assert all(abs(got[f] - traffic.expected[f]) < NANO for f in FEATURES), (got, traffic.expected)

    def test_request_count_is_exact_across_workers(self, proxy: ProxyServer, traffic: Traffic) -> None:
        """Aggregated costkit_requests_total (and the cost histogram's count) equals the number of requests sent."""
        _eventually_equal(proxy, traffic.expected)
        samples = scrape(proxy)
        assert sum(total(samples, "costkit_requests_total", feature=f, outcome="success") for f in FEATURES) == (
            traffic.sent
        )
        assert total(samples, "costkit_request_cost_usd_count") == traffic.sent

    def test_every_scrape_sees_the_same_totals(self, proxy: ProxyServer, traffic: Traffic) -> None:
        """Scrapes answered by either worker (fresh connections) return the same aggregated spend."""
        _eventually_equal(proxy, traffic.expected)
        seen = set()
        for _ in range(6):
            with httpx.Client(base_url=proxy.base_url, headers=proxy.auth_headers, timeout=10) as client:
                samples_text = client.get("/metrics/").text
            seen.add(
                sum(
                    (
                        Decimal(m.group("value"))
                        for m in _SAMPLE.finditer(samples_text)
                        if m.group("name") == "costkit_spend_usd_total"
                        and any(f'feature="{f}"' in (m.group("labels") or "") for f in FEATURES)
                    ),
                    Decimal(0),
                )
            )
        assert len(seen) == 1, seen


def test_own_metrics_port_with_two_workers(
    fake_provider: FakeProvider, config_writer: Callable[[str, Mapping[str, Any]], Path]
) -> None:
    """With metrics.port, two workers and a multiprocess dir: every request answered, all workers' spend served."""
    port = free_port()
    config = base_config([openai_deployment("gpt-4o-mini", fake_provider.base_url)])
    path = config_writer("multiworker-own-port", enable_costkit(config, {"metrics": {"port": port}}))
    multiproc = path.parent / "own-port-multiproc"
    multiproc.mkdir(exist_ok=True)
    server = ProxyServer(
        path,
        env={"PROMETHEUS_MULTIPROC_DIR": str(multiproc)},
        extra_args=("--num_workers", "2", "--timeout_worker_healthcheck", "120"),
    )
    server.start(timeout_s=240)
    try:
        statuses = []
        expected = Decimal(0)
        for _ in range(30):
            with httpx.Client(base_url=server.base_url, headers=server.auth_headers, timeout=60) as client:
                response = client.post(
                    "/v1/chat/completions",
                    json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "own port"}]},
                )
            statuses.append(response.status_code)
            expected += Decimal(response.headers.get("x-costkit-cost-usd", "0"))
        assert statuses == [200] * len(statuses), statuses
        deadline = time.monotonic() + 15
        while True:
            text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
            spend = sum(
                (
                    Decimal(m.group("value"))
                    for m in _SAMPLE.finditer(text)
                    if m.group("name") == "costkit_spend_usd_total"
                ),
                Decimal(0),
            )
            if abs(spend - expected) < NANO or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert abs(spend - expected) < NANO, (spend, expected)
    finally:
        server.stop()
