"""The pack inside a real `litellm --config ...` proxy: headers, exact accounting, bad input, start-up errors."""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid
from collections.abc import Callable
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
    mock_deployment,
)
from costkit_litellm.testing.redis_server import RedisServer

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = yaml.safe_load((ROOT / "proxy_config.yaml").read_text())
NANO = Decimal("1e-9")


def shipped_env(provider: FakeProvider, **extra: str) -> dict[str, str]:
    """Environment for the repository's proxy_config.yaml talking to the fake provider."""
    return {"OPENAI_API_BASE": provider.base_url, "OPENAI_API_KEY": "fake", "REDIS_URL": "", **extra}


@pytest.fixture(scope="module")
def shipped(proxy_factory: ProxyPool, fake_provider: FakeProvider) -> ProxyServer:
    """The shipped proxy_config.yaml without REDIS_URL: the embedded default."""
    return proxy_factory("shipped-memory", SHIPPED, env=shipped_env(fake_provider))


@pytest.fixture(scope="module")
def shipped_redis(proxy_factory: ProxyPool, fake_provider: FakeProvider, redis_server: RedisServer) -> ProxyServer:
    """The shipped proxy_config.yaml with REDIS_URL set."""
    return proxy_factory("shipped-redis", SHIPPED, env=shipped_env(fake_provider, REDIS_URL=redis_server.url))


@pytest.fixture(scope="module")
def failing(proxy_factory: ProxyPool) -> ProxyServer:
    """A proxy with the pack whose deployment always fails with a rate-limit error."""
    config = base_config(
        [mock_deployment("failing", response="litellm.RateLimitError")],
        num_retries=0,
        callbacks=["prometheus"],
    )
    return proxy_factory("failing", enable_costkit(config, {"metrics": {"tag_labels": ["feature"]}}))


def chat(proxy: ProxyServer, body: dict[str, Any], headers: dict[str, str] | None = None) -> httpx.Response:
    payload = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello"}], **body}
    return httpx.post(
        f"{proxy.base_url}/v1/chat/completions",
        headers={**proxy.auth_headers, **(headers or {})},
        json=payload,
        timeout=60,
    )


_SAMPLE = re.compile(r"^(?P<name>costkit_\w+)\{(?P<labels>[^}]*)\} (?P<value>\S+)$", re.M)


def scrape(proxy: ProxyServer, name: str, **match: str) -> float:
    """Sum of a costkit_* metric's samples whose labels include ``match``."""
    text = httpx.get(f"{proxy.base_url}/metrics/", headers=proxy.auth_headers, timeout=10).text
    total = 0.0
    for sample in _SAMPLE.finditer(text):
        if sample.group("name") != name:
            continue
        labels = dict(re.findall(r'(\w+)="([^"]*)"', sample.group("labels")))
        if all(labels.get(k) == v for k, v in match.items()):
            total += float(sample.group("value"))
    return total


def eventually(check: Callable[[], bool], timeout_s: float = 15) -> bool:
    """Poll until ``check()`` holds: success callbacks run just after the response is sent."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.1)
    return check()


class TestHeadersAndAccounting:
    def test_cost_header_equals_litellm_cost(self, shipped: ProxyServer) -> None:
        """x-costkit-cost-usd equals LiteLLM's x-litellm-response-cost and is at most the worst case."""
        response = chat(shipped, {"max_tokens": 100})
        assert response.status_code == 200, response.text
        cost = Decimal(response.headers["x-costkit-cost-usd"])
        assert abs(cost - Decimal(response.headers["x-litellm-response-cost"])) < NANO
        assert cost > 0
        assert Decimal(response.headers["x-costkit-max-cost-usd"]) >= cost

    def test_spend_metric_by_feature_equals_headers(self, shipped: ProxyServer) -> None:
        """Spend on /metrics by feature equals the sum of the cost headers of the requests, to 1e-9 USD."""
        features = [f"f-{uuid.uuid4().hex[:6]}" for _ in range(3)]
        expected: dict[str, Decimal] = {f: Decimal(0) for f in features}

        async def send() -> None:
            async with httpx.AsyncClient(base_url=shipped.base_url, headers=shipped.auth_headers, timeout=60) as c:
                jobs = []
                for i in range(30):
                    feature = features[i % 3]
                    body = {
                        "model": "gpt-4o" if i % 2 else "gpt-4o-mini",
                        "messages": [{"role": "user", "content": "word " * (i + 1)}],
                        "metadata": {"feature": feature, "user_id": f"u{i % 4}"},
                    }
                    jobs.append((feature, c.post("/v1/chat/completions", json=body)))
                for feature, job in jobs:
                    response = await job
                    assert response.status_code == 200, response.text
                    expected[feature] += Decimal(response.headers["x-costkit-cost-usd"])

        asyncio.run(send())
        for feature in features:
            assert eventually(
                lambda f=feature: (
                    abs(Decimal(repr(scrape(shipped, "costkit_spend_usd_total", feature=f))) - expected[f]) < NANO
                )
            ), feature
            assert scrape(shipped, "costkit_requests_total", feature=feature, outcome="success") == 10

    def test_tags_header_and_key_value_tags_label_spend(self, shipped: ProxyServer) -> None:
        """A feature given as an x-litellm-tags 'feature:x' tag labels the spend like metadata does; a 'team:x'
        tag does not (the team label is the key's team: none for the master key)."""
        feature = f"t-{uuid.uuid4().hex[:6]}"
        response = chat(shipped, {}, headers={"x-litellm-tags": f"feature:{feature},team:growth"})
        assert response.status_code == 200
        cost = float(response.headers["x-costkit-cost-usd"])
        assert eventually(
            lambda: abs(scrape(shipped, "costkit_spend_usd_total", feature=feature, team="none") - cost) < 1e-12
        )

    def test_streaming_is_recorded_once_when_it_ends(self, shipped: ProxyServer) -> None:
        """A streamed answer carries the worst-case header and is recorded once with its cost."""
        feature = f"s-{uuid.uuid4().hex[:6]}"
        body = {
            "model": "gpt-4o-mini",
            "stream": True,
            "messages": [{"role": "user", "content": "stream please"}],
            "metadata": {"feature": feature},
        }
        with httpx.stream(
            "POST",
            f"{shipped.base_url}/v1/chat/completions",
            headers=shipped.auth_headers,
            json=body,
            timeout=60,
        ) as response:
            assert response.status_code == 200
            assert "x-costkit-max-cost-usd" in response.headers
            chunks = [line for line in response.iter_lines() if line.startswith("data: ")]
        assert chunks[-1] == "data: [DONE]"
        assert eventually(lambda: scrape(shipped, "costkit_requests_total", feature=feature) == 1)
        assert scrape(shipped, "costkit_spend_usd_total", feature=feature) > 0

    def test_provider_failure_is_recorded_not_a_500(self, failing: ProxyServer) -> None:
        """A failing provider call keeps LiteLLM's error status, costs $0 and is counted as a failure."""
        response = chat(failing, {"model": "failing", "metadata": {"feature": "fails"}})
        assert response.status_code == 429
        assert response.headers["x-costkit-cost-usd"] == "0.000000000"
        assert eventually(lambda: scrape(failing, "costkit_requests_total", feature="fails", outcome="failure") >= 1)


class TestBadRequests:
    @pytest.mark.parametrize(
        ("metadata", "expected"),
        [
            ({"tags": ["ok", 7]}, "metadata.tags[1] must be a string, got int"),
            ({"tags": [f"t{i}" for i in range(10_000)]}, "has 10000 tags (the limit is 64)"),
            ({"feature": "x" * 100_000}, "metadata.feature is 100000 characters long"),
        ],
        ids=["non-string-tag", "ten-thousand-tags", "huge-value"],
    )
    def test_malformed_metadata_is_a_400_saying_why(
        self, shipped: ProxyServer, metadata: dict[str, Any], expected: str
    ) -> None:
        """Malformed metadata gets a 400 with an OpenAI-shaped body that says what is wrong."""
        response = chat(shipped, {"metadata": metadata})
        assert response.status_code == 400, response.text
        error = response.json()["error"]
        assert expected in error["message"]
        assert error["type"] == "invalid_request_error"

    def test_non_utf8_body_is_a_client_error(self, shipped: ProxyServer) -> None:
        """A request body that is not UTF-8 gets a 4xx, never a 500, and the proxy keeps serving."""
        response = httpx.post(
            f"{shipped.base_url}/v1/chat/completions",
            headers={**shipped.auth_headers, "content-type": "application/json"},
            content=b'{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "\xff\xfe"}]}',
            timeout=30,
        )
        assert 400 <= response.status_code < 500, response.text
        assert chat(shipped, {}).status_code == 200

    def test_metadata_that_is_not_an_object_is_not_a_500(self, shipped: ProxyServer) -> None:
        """metadata given as a string is refused or ignored, never a 500."""
        response = chat(shipped, {"metadata": "feature=x"})
        assert response.status_code < 500, response.text


class TestState:
    def test_embedded_default_without_redis_url(self, shipped: ProxyServer) -> None:
        """Without REDIS_URL the proxy keeps state in process and says so at start-up."""
        assert "state: in process (embedded default)" in shipped.log_text()

    async def test_redis_url_puts_the_ledger_in_redis(
        self, shipped_redis: ProxyServer, redis_server: RedisServer
    ) -> None:
        """With REDIS_URL set, every answered call lands in the Redis ledger once, with its exact cost."""
        assert "state: Redis redis://" in shipped_redis.log_text()
        responses = [chat(shipped_redis, {"metadata": {"feature": "ledgered"}}) for _ in range(5)]
        wanted = {r.headers["x-litellm-call-id"]: r.headers["x-costkit-cost-usd"] for r in responses}
        store = RedisStore(redis_server.url, prefix="costkit")
        await store.start()
        try:
            deadline = time.monotonic() + 15
            while True:
                # Entry ids are the pack's own request ids; the client's call id is a label field.
                entries = {
                    f"{e.fields.get('litellm.call_id')}:{e.entry_id.rsplit(':', 1)[1]}": e
                    for e in await store.ledger_read()
                }
                if all(f"{cid}:success" in entries for cid in wanted) or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.1)
        finally:
            await store.close()
        for call_id, cost in wanted.items():
            entry = entries[f"{call_id}:success"]
            assert Decimal(entry.fields["costkit.cost_nano"]) * NANO == Decimal(cost)
            assert entry.fields["costkit.attr.feature"] == "ledgered"


class TestStartup:
    def _start(self, tmp_path: Path, costkit: Any, env: dict[str, str] | None = None) -> tuple[int, str]:
        config = enable_costkit(base_config([mock_deployment("m")]), {})
        config["costkit"] = costkit
        path = tmp_path / "bad_config.yaml"
        path.write_text(yaml.safe_dump(config))
        return ProxyServer(path, env=env).start_expecting_failure(timeout_s=120)

    def test_unknown_key_stops_the_proxy_naming_file_and_key(self, tmp_path: Path) -> None:
        """A wrong key in costkit: stops the proxy at start-up with the file and the key path."""
        code, log = self._start(tmp_path, {"metrics": {"tag_label": ["feature"]}})
        assert code != 0
        assert "bad_config.yaml: costkit.metrics.tag_label: is not a known key" in log

    def test_missing_environment_variable_stops_the_proxy(self, tmp_path: Path) -> None:
        """A required os.environ/ reference that is unset stops the proxy naming the variable."""
        code, log = self._start(tmp_path, {"redis_url": "os.environ/COSTKIT_TEST_UNSET_VAR"})
        assert code != 0
        assert "costkit.redis_url: environment variable COSTKIT_TEST_UNSET_VAR is not set" in log

    def test_unreachable_redis_stops_the_proxy_naming_the_url(self, tmp_path: Path) -> None:
        """A configured Redis that does not answer stops the proxy, naming the URL with the password masked."""
        url = f"redis://:s3cret@127.0.0.1:{free_port()}/0"
        code, log = self._start(tmp_path, {"redis_url": url})
        assert code != 0
        assert f"127.0.0.1:{url.rsplit(':', 1)[1]}" in log
        assert "s3cret" not in log

    def test_no_section_loads_and_answers(self, proxy_factory: ProxyPool) -> None:
        """With the callback listed but no costkit: section, the proxy answers with default headers."""
        config = enable_costkit(base_config([mock_deployment("gpt-4o-mini")]), {})
        del config["costkit"]
        proxy = proxy_factory("no-section", config)
        response = chat(proxy, {})
        assert response.status_code == 200
        assert Decimal(response.headers["x-costkit-cost-usd"]) > 0
        assert json.loads(response.text)["choices"][0]["message"]["content"] == "mock reply"
