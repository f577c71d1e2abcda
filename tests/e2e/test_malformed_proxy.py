"""Odd but JSON-valid requests through a real proxy with the pack, next to the same proxy without it (issue 9
items 5 and 7): the pack never adds a 500, refuses only what it cannot estimate (a 400 naming the field), turns
its own bugs into a 422 or a pass per ``request.on_internal_error``, and streams carry no false cost header.

The pack proxy runs the shipped proxy_config.yaml ``costkit:`` section (routing, cache, budgets, breaker) on the
session Redis; both proxies share the same deployments (a FakeProvider, and a mock deployment).
"""

from __future__ import annotations

import copy
import re
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from costkit_litellm.testing.fake_provider import FakeProvider
from costkit_litellm.testing.ports import free_port
from costkit_litellm.testing.proxy_server import (
    ProxyServer,
    base_config,
    enable_costkit,
    mock_deployment,
    openai_deployment,
)
from costkit_litellm.testing.redis_server import RedisServer

pytestmark = pytest.mark.redis

ROOT = Path(__file__).resolve().parents[2]
HELLO = [{"role": "user", "content": "hello"}]

# A stage that fails like a bug would, on requests that ask for it (metadata feature: explode).
FAULTY_MODULE = """
from costkit_litellm.litellm_adapter.proxy import build


class Faulty:
    name = "faulty"

    async def on_request(self, admission):
        if admission.context.attributes.get("feature") == "explode":
            raise KeyError("a bug in a stage")

    async def on_outcome(self, outcome):
        return None


callback = build()
callback.kit.add_stage(Faulty(), before="accounting")
"""


def models(provider: FakeProvider) -> list[dict[str, Any]]:
    """The shipped model groups on the FakeProvider, plus a mock deployment (answers any call type itself)."""
    return [
        openai_deployment("gpt-4o-mini", provider.base_url),
        openai_deployment("gpt-4o", provider.base_url, model="openai/gpt-4o"),
        mock_deployment("mock"),
    ]


def shipped_costkit(redis_url: str) -> dict[str, Any]:
    """The ``costkit:`` section of the shipped proxy_config.yaml, on the test Redis under a fresh prefix."""
    section = copy.deepcopy(yaml.safe_load((ROOT / "proxy_config.yaml").read_text())["costkit"])
    section.update(redis_url=redis_url, key_prefix=f"malformed-{uuid.uuid4().hex[:8]}")
    return dict(section)


@pytest.fixture(scope="module")
def provider() -> Iterator[FakeProvider]:
    with FakeProvider(seed=0) as fake:
        yield fake


@pytest.fixture(scope="module")
def vanilla(proxy_factory: Callable[..., ProxyServer], provider: FakeProvider) -> ProxyServer:
    """The proxy without the pack."""
    return proxy_factory("vanilla", base_config(models(provider), num_retries=0))


@pytest.fixture(scope="module")
def pack(proxy_factory: Callable[..., ProxyServer], provider: FakeProvider, redis_server: RedisServer) -> ProxyServer:
    """The same proxy with the pack and the shipped costkit section."""
    config = enable_costkit(base_config(models(provider), num_retries=0), shipped_costkit(redis_server.url))
    return proxy_factory("pack", config)


def post(
    proxy: ProxyServer, route: str, body: Mapping[str, Any], headers: Mapping[str, str] | None = None
) -> httpx.Response:
    return httpx.post(
        f"{proxy.base_url}{route}", json=body, headers={**proxy.auth_headers, **(headers or {})}, timeout=120
    )


def chat(**params: Any) -> dict[str, Any]:
    return {"model": "gpt-4o-mini", "messages": HELLO, **params}


IDS = ["stop-5", "stop-true", "stop-object", "stream-stop-5", "auto-stop-5", "completion-stop-5", "responses", "odd"]


class TestOddParametersAreNotWorseThanVanilla:
    @pytest.mark.parametrize(
        ("route", "body"),
        [
            ("/v1/chat/completions", chat(stop=5)),
            ("/v1/chat/completions", chat(stop=True)),
            ("/v1/chat/completions", chat(stop={"a": 1})),
            ("/v1/chat/completions", chat(stop=5, stream=True)),
            ("/v1/chat/completions", chat(model="auto", stop=5)),
            ("/v1/completions", {"model": "mock", "prompt": "hello", "stop": 5}),
            ("/v1/responses", {"model": "mock", "input": "hello"}),
            ("/v1/responses", {"model": "mock", "input": "hello", "stop": True, "max_output_tokens": -1}),
        ],
        ids=[
            "stop-5",
            "stop-true",
            "stop-object",
            "stream-stop-5",
            "auto-stop-5",
            "completion-stop-5",
            "responses",
            "responses-odd",
        ],
    )
    def test_same_status_as_vanilla(
        self, vanilla: ProxyServer, pack: ProxyServer, route: str, body: dict[str, Any]
    ) -> None:
        """An odd value the proxy itself accepts is accepted with the pack too (was a 500, or 400 on /v1/responses)."""
        if body.get("model") == "auto":  # vanilla has no virtual model: compare with the tier it routes to
            expected = post(vanilla, route, {**body, "model": "gpt-4o-mini"}).status_code
        else:
            expected = post(vanilla, route, body).status_code
        got = post(pack, route, body)
        assert got.status_code == expected == 200, got.text

    def test_malformed_tool_calls_in_a_session_fail_as_in_litellm_not_in_the_pack(
        self, vanilla: ProxyServer, pack: ProxyServer
    ) -> None:
        """``tool_calls: 5`` under a session header reaches LiteLLM, which answers as it does without the pack
        (the breaker used to fail first with a bare 500 of its own)."""
        messages = [*HELLO, {"role": "assistant", "content": None, "tool_calls": 5}, {"role": "user", "content": "x"}]
        session = {"x-costkit-session": f"s-{uuid.uuid4().hex[:8]}"}
        without = post(vanilla, "/v1/chat/completions", chat(messages=messages), session)
        got = post(pack, "/v1/chat/completions", chat(messages=messages), session)
        assert got.status_code == without.status_code
        assert got.json()["error"]["message"].startswith("litellm."), got.text
        assert got.json()["error"]["message"] == without.json()["error"]["message"]

    @pytest.mark.parametrize("name", ["max_tokens", "max_completion_tokens", "n"])
    def test_count_too_large_to_estimate_is_a_400_naming_it(self, pack: ProxyServer, name: str) -> None:
        """A count past int32 is a 400 that names the parameter (was a 429 from an alert-only budget)."""
        got = post(pack, "/v1/chat/completions", chat(**{name: 10**30}))
        assert got.status_code == 400, got.text
        assert got.json()["error"]["message"].startswith(f"{name} must be at most 2147483647")


class TestStreamedCostHeader:
    def test_stream_has_no_cost_header_but_keeps_the_max_cost(self, pack: ProxyServer) -> None:
        """A streamed answer's headers leave before its cost is known: no x-costkit-cost-usd (was 0.000000000),
        the worst-case header stays; a non-streamed answer still carries its cost."""
        with httpx.stream(
            "POST",
            f"{pack.base_url}/v1/chat/completions",
            json=chat(stream=True, user=f"u-{uuid.uuid4().hex[:6]}"),
            headers=pack.auth_headers,
            timeout=120,
        ) as streamed:
            assert streamed.status_code == 200
            body = streamed.read().decode()
        assert "data: [DONE]" in body
        assert "x-costkit-cost-usd" not in streamed.headers
        assert re.fullmatch(r"\d+\.\d{9}", streamed.headers["x-costkit-max-cost-usd"])
        plain = post(pack, "/v1/chat/completions", chat())
        assert float(plain.headers["x-costkit-cost-usd"]) > 0


def faulty_proxy(
    config_writer: Callable[[str, Mapping[str, Any]], Path], provider: FakeProvider, policy: str
) -> ProxyServer:
    """A proxy whose pack has a stage that raises on ``feature: explode``, with ``on_internal_error: policy``."""
    port = free_port()
    costkit = {"request": {"on_internal_error": policy}, "metrics": {"port": port}}
    config = enable_costkit(base_config(models(provider), num_retries=0), costkit, callback="faulty_pack.callback")
    path = config_writer(f"faulty-{policy}", config)
    (path.parent / "faulty_pack.py").write_text(FAULTY_MODULE)
    proxy = ProxyServer(path, env={"PYTHONPATH": f"{path.parent}:{ROOT}"})
    proxy.metrics_port = port  # type: ignore[attr-defined]
    return proxy


def internal_errors(proxy: ProxyServer, action: str) -> float:
    text = httpx.get(f"http://127.0.0.1:{proxy.metrics_port}/metrics", timeout=10).text  # type: ignore[attr-defined]
    found = re.search(rf'costkit_internal_errors_total{{action="{action}",stage="([^"]+)"}} (\S+)', text)
    return float(found.group(2)) if found else 0.0


class TestCatchAll:
    def test_fail_closed_is_a_422_naming_the_error(
        self, config_writer: Callable[[str, Mapping[str, Any]], Path], provider: FakeProvider
    ) -> None:
        """A bug inside a stage is a logged 422 ``costkit_internal_error`` naming the error, counted; never a 500."""
        with faulty_proxy(config_writer, provider, "fail_closed") as proxy:
            got = post(proxy, "/v1/chat/completions", chat(metadata={"feature": "explode"}))
            assert got.status_code == 422, got.text
            error = got.json()["error"]
            assert error["type"] == "costkit_internal_error"
            assert "KeyError" in error["message"] and "on_internal_error: fail_closed" in error["message"]
            assert post(proxy, "/v1/chat/completions", chat()).status_code == 200
            assert internal_errors(proxy, "refused") == 1
            assert "costkit: unexpected KeyError" in proxy.log_text()

    def test_fail_open_admits_and_counts(
        self, config_writer: Callable[[str, Mapping[str, Any]], Path], provider: FakeProvider
    ) -> None:
        """With ``fail_open`` the same bug lets the request through to the provider, logged and counted."""
        with faulty_proxy(config_writer, provider, "fail_open") as proxy:
            got = post(proxy, "/v1/chat/completions", chat(metadata={"feature": "explode"}))
            assert got.status_code == 200, got.text
            assert got.json()["choices"][0]["message"]["content"]
            assert internal_errors(proxy, "admitted") == 1
            assert "admitted without the pack" in proxy.log_text()
