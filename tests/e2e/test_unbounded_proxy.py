"""Calls whose cost cannot be bounded before they are sent, under a budget, through a real proxy:
a pass-through route is refused naming the budget and the endpoint (``unbounded_calls: reject``), or
held at ``unbounded_reserve_usd`` and committed at its real cost (``reserve``). Never unlimited."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx
import pytest

from costkit_litellm.testing.fake_provider import FakeProvider
from costkit_litellm.testing.proxy_server import ProxyServer, base_config, enable_costkit, openai_deployment
from costkit_litellm.testing.redis_server import RedisServer

pytestmark = pytest.mark.redis


def _config(provider: FakeProvider, redis_url: str, settings: Mapping[str, Any]) -> dict[str, Any]:
    config = base_config([openai_deployment("mini", provider.base_url)], num_retries=0)
    config["general_settings"] = {
        "pass_through_endpoints": [
            {"path": "/fake-chat", "target": f"{provider.base_url}/chat/completions", "auth": True}
        ]
    }
    costkit = {
        "redis_url": redis_url,
        "key_prefix": f"unbounded-{uuid.uuid4().hex[:8]}",
        "budgets": [{"name": "org_daily", "scope": "global", "limit_usd": 1, "window": "day"}],
        "budget_settings": dict(settings),
    }
    return enable_costkit(config, costkit)


@pytest.fixture(scope="module")
def provider() -> Iterator[FakeProvider]:
    with FakeProvider() as fake:
        yield fake


@pytest.fixture(scope="module")
def start(
    config_writer: Callable[[str, Mapping[str, Any]], Path], provider: FakeProvider, redis_server: RedisServer
) -> Iterator[Callable[[str, Mapping[str, Any]], ProxyServer]]:
    started: list[ProxyServer] = []

    def run(name: str, settings: Mapping[str, Any]) -> ProxyServer:
        proxy = ProxyServer(config_writer(name, _config(provider, redis_server.url, settings))).start()
        started.append(proxy)
        return proxy

    yield run
    for proxy in started:
        proxy.stop()


BODY = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}


class TestUnboundedCalls:
    def test_pass_through_is_refused_under_a_budget(
        self, start: Callable[[str, Mapping[str, Any]], ProxyServer], provider: FakeProvider
    ) -> None:
        """unbounded_calls: reject: a pass-through call under a budget is a 400 naming the budget and the endpoint."""
        proxy = start("unbounded-reject", {})
        provider.reset()
        response = httpx.post(f"{proxy.base_url}/fake-chat", headers=proxy.auth_headers, json=BODY, timeout=30)
        assert response.status_code == 400, response.text
        error = response.json()["error"]
        assert error["type"] == "budget_unbounded_call"
        assert "'org_daily'" in error["message"] and "'pass_through'" in error["message"]
        assert provider.stats()["chat_completions"] == 0
        chat = httpx.post(
            f"{proxy.base_url}/v1/chat/completions", headers=proxy.auth_headers, json={**BODY, "model": "mini"}
        )
        assert chat.status_code == 200  # a bounded call under the same budget still passes

    def test_pass_through_is_held_with_reserve(
        self, start: Callable[[str, Mapping[str, Any]], ProxyServer], provider: FakeProvider
    ) -> None:
        """unbounded_calls: reserve holds unbounded_reserve_usd and admits; a hold above the limit never fits."""
        proxy = start("unbounded-reserve", {"unbounded_calls": "reserve", "unbounded_reserve_usd": 0.3})
        provider.reset()
        statuses = [
            httpx.post(f"{proxy.base_url}/fake-chat", headers=proxy.auth_headers, json=BODY, timeout=30).status_code
            for _ in range(2)
        ]
        assert statuses == [200, 200]
        assert provider.stats()["chat_completions"] == 2
        too_big = start("unbounded-reserve-big", {"unbounded_calls": "reserve", "unbounded_reserve_usd": 2})
        response = httpx.post(f"{too_big.base_url}/fake-chat", headers=too_big.auth_headers, json=BODY, timeout=30)
        assert response.status_code == 400  # a hold larger than the whole budget can never fit
        assert response.json()["error"]["type"] == "budget_request_too_large"
