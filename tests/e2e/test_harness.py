"""The e2e harness itself: proxies start, answer, fail loudly, and the fake provider behaves."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import httpx
import pytest

from costkit_litellm.testing.fake_provider import FakeProvider
from costkit_litellm.testing.proxy_server import (
    ProxyPool,
    ProxyServer,
    ProxyStartError,
    base_config,
    mock_deployment,
    openai_deployment,
)

ConfigWriter = Callable[[str, Mapping[str, Any]], Path]

CHAT = {"messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 20}


def chat(proxy: ProxyServer, model: str) -> httpx.Response:
    """One chat completion through ``proxy`` with its master key."""
    return httpx.post(
        f"{proxy.base_url}/v1/chat/completions", headers=proxy.auth_headers, json={"model": model, **CHAT}, timeout=30
    )


@pytest.fixture(scope="module")
def basic_proxy(proxy_factory: ProxyPool, fake_provider: FakeProvider) -> ProxyServer:
    config = base_config(
        [
            mock_deployment("mock-model", response="hello from the mock"),
            openai_deployment("fake-model", fake_provider.base_url),
        ]
    )
    return proxy_factory("harness-basic", config)


class TestProxyFixture:
    def test_mock_deployment_answers(self, basic_proxy: ProxyServer) -> None:
        """A mock_response deployment answers through the proxy with its fixed content and a usage."""
        response = chat(basic_proxy, "mock-model")
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["choices"][0]["message"]["content"] == "hello from the mock"
        assert body["usage"]["total_tokens"] > 0

    def test_fake_provider_deployment_answers(self, basic_proxy: ProxyServer, fake_provider: FakeProvider) -> None:
        """A deployment pointed at the fake provider reaches it and returns its reply."""
        before = fake_provider.stats()["chat_completions"]
        response = chat(basic_proxy, "fake-model")
        assert response.status_code == 200, response.text
        assert response.json()["choices"][0]["message"]["content"].startswith("Fake reply from gpt-4o-mini")
        assert fake_provider.stats()["chat_completions"] == before + 1

    def test_same_name_returns_the_running_proxy(
        self, basic_proxy: ProxyServer, proxy_factory: ProxyPool, fake_provider: FakeProvider
    ) -> None:
        """Asking the factory again for a config name returns the proxy already running."""
        config = base_config(
            [
                mock_deployment("mock-model", response="hello from the mock"),
                openai_deployment("fake-model", fake_provider.base_url),
            ]
        )
        assert proxy_factory("harness-basic", config) is basic_proxy

    def test_requests_need_the_master_key(self, basic_proxy: ProxyServer) -> None:
        """The proxy refuses a request that lacks the generated master key or carries another key."""
        # Without a database LiteLLM 1.108.7 answers 400 for a wrong key and a
        # plain-text 500 for a missing one (its error handler imports prisma).
        for headers in ({}, {"Authorization": "Bearer sk-not-the-master-key"}):
            response = httpx.post(
                f"{basic_proxy.base_url}/v1/chat/completions",
                headers=headers,
                json={"model": "mock-model", **CHAT},
                timeout=30,
            )
            assert response.status_code >= 400


class TestPortRaces:
    def test_a_port_taken_by_another_proxy_is_given_up_for_a_new_one(
        self, basic_proxy: ProxyServer, config_writer: ConfigWriter
    ) -> None:
        """A proxy whose chosen port another proxy holds (a second test worker) moves to a free port and
        answers its own master key, never passing the other proxy off as itself."""
        path = config_writer("harness-port-race", base_config([mock_deployment("mock-model")]))
        proxy = ProxyServer(path)
        proxy.port = basic_proxy.port  # as if the other worker bound it between free_port() and ours
        with proxy:
            assert proxy.port != basic_proxy.port
            response = chat(proxy, "mock-model")
            assert response.status_code == 200, response.text
        assert httpx.get(f"{basic_proxy.base_url}/health/liveliness", timeout=10).status_code == 200


class TestProxyStartFailure:
    def test_invalid_yaml_fails_with_log_tail(self, config_writer: ConfigWriter) -> None:
        """A proxy with an invalid YAML config exits and the error carries the log tail."""
        path = config_writer("harness-placeholder", {})
        path.write_text("model_list:\n  - model_name: m\n    litellm_params: {model: [unclosed\n")
        proxy = ProxyServer(path)
        with pytest.raises(ProxyStartError) as info:
            proxy.start(timeout_s=120)
        assert info.value.exit_code not in (None, 0)
        assert "yaml" in info.value.log_tail.lower()
        assert "proxy log tail" in str(info.value)
        assert proxy.pid is None

    def test_start_expecting_failure_returns_code_and_log(self, config_writer: ConfigWriter) -> None:
        """start_expecting_failure returns the non-zero exit code and the full log."""
        path = config_writer("harness-placeholder-2", {})
        path.write_text("model_list: [\n")
        code, log = ProxyServer(path).start_expecting_failure(timeout_s=120)
        assert code != 0
        assert "ParserError" in log or "ScannerError" in log


class TestFakeProvider:
    def test_failure_rate_is_deterministic_with_a_seed(self) -> None:
        """With a seed, N requests yield the same mix of 200/429/500 every time, near the failure rate."""
        runs = []
        for _ in range(2):
            with (
                FakeProvider(failure_rate=0.3, seed=42) as provider,
                httpx.Client(base_url=provider.base_url) as client,
            ):
                statuses = Counter(
                    client.post("/chat/completions", json={"model": "m", **CHAT}).status_code for _ in range(200)
                )
                assert dict(provider.stats()["by_status"]) == {str(k): v for k, v in sorted(statuses.items())}
            runs.append(statuses)
        assert runs[0] == runs[1]
        assert set(runs[0]) == {200, 429, 500}
        assert 40 <= runs[0][429] + runs[0][500] <= 80

    def test_failures_are_openai_shaped(self) -> None:
        """A failing request answers an OpenAI error body, with Retry-After on 429."""
        with FakeProvider() as provider, httpx.Client(base_url=provider.base_url) as client:
            response = client.post("/chat/completions", headers={"x-fake-fail": "429"}, json={"model": "m", **CHAT})
            assert response.status_code == 429
            assert response.headers["retry-after"] == "1"
            assert set(response.json()["error"]) >= {"message", "type", "code"}

    def test_reset_reseeds_and_zeroes_counts(self) -> None:
        """After a reset the counters are zero and the same seed replays the same statuses."""
        with (
            FakeProvider(failure_rate=0.5, seed=3) as provider,
            httpx.Client(base_url=provider.base_url) as client,
        ):
            first = [client.post("/chat/completions", json={"model": "m", **CHAT}).status_code for _ in range(30)]
            assert client.post(f"{provider.root_url}/_stats/reset").json()["requests"] == 0
            second = [client.post("/chat/completions", json={"model": "m", **CHAT}).status_code for _ in range(30)]
            assert first == second
            assert client.get(f"{provider.root_url}/_stats").json()["requests"] == 30

    def test_latency_is_configured_and_overridable(self) -> None:
        """Each request waits the configured latency, or the one its x-fake-latency-ms header asks for."""
        with FakeProvider(latency_s=0.002) as provider, httpx.Client(base_url=provider.base_url) as client:
            client.post("/chat/completions", json={"model": "m", **CHAT})
            client.post("/chat/completions", headers={"x-fake-latency-ms": "5"}, json={"model": "m", **CHAT})
            assert [r.latency_s for r in provider.recorded()] == [0.002, 0.005]

    def test_latency_holds_the_answer_back(self) -> None:
        """A request given a 60 s latency is not answered within a 0.5 s client timeout."""
        with (
            FakeProvider(latency_s=60) as provider,
            httpx.Client(base_url=provider.base_url) as client,
            pytest.raises(httpx.ReadTimeout),
        ):
            client.post("/chat/completions", json={"model": "m", **CHAT}, timeout=0.5)

    def test_streaming_ends_with_a_usage_chunk(self) -> None:
        """A stream with include_usage ends with a usage chunk and [DONE]."""
        with (
            FakeProvider(completion_tokens=7) as provider,
            httpx.Client(base_url=provider.base_url) as client,
        ):
            body = {"model": "m", "stream": True, "stream_options": {"include_usage": True}, **CHAT}
            lines = [line for line in client.post("/chat/completions", json=body).text.splitlines() if line]
            assert lines[-1] == "data: [DONE]"
            assert '"completion_tokens": 7' in lines[-2]

    def test_embeddings_are_deterministic(self) -> None:
        """The same text gets the same vector of the requested dimension; other text another."""
        with FakeProvider(embedding_dim=8) as provider, httpx.Client(base_url=provider.base_url) as client:
            data = client.post("/embeddings", json={"model": "e", "input": ["a", "a", "b"]}).json()["data"]
            vectors = [d["embedding"] for d in data]
            assert len(vectors[0]) == 8
            assert vectors[0] == vectors[1] != vectors[2]
