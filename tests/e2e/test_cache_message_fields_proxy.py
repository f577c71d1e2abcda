"""Reviewer finding: a message's ``name`` is left out of the cache key.

OpenAI shows the participant's ``name`` to the model ("What is my name?" is answered from it), so
the same question asked as ``bob`` must not be served the answer cached for ``alice``.
"""

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


@pytest.fixture(scope="module")
def proxy(
    config_writer: Callable[[str, Mapping[str, Any]], Path], fake_provider: FakeProvider, redis_server: RedisServer
) -> Iterator[ProxyServer]:
    config = base_config([openai_deployment("mini", fake_provider.base_url)], num_retries=0)
    costkit = {"redis_url": redis_server.url, "key_prefix": f"nm-{uuid.uuid4().hex[:8]}", "cache": {"enabled": True}}
    with ProxyServer(config_writer("review-cache-name", enable_costkit(config, costkit))) as server:
        yield server


def test_message_name_is_in_the_cache_key(proxy: ProxyServer) -> None:
    """The same question from a differently named participant is not a cache hit."""

    def ask(name: str) -> httpx.Response:
        body = {
            "model": "mini",
            "temperature": 0,
            "max_tokens": 8,
            "messages": [{"role": "user", "name": name, "content": "What is my name?"}],
        }
        return httpx.post(f"{proxy.base_url}/v1/chat/completions", headers=proxy.auth_headers, json=body, timeout=60)

    assert ask("alice").headers.get("x-costkit-cache") == "miss"
    assert ask("bob").headers.get("x-costkit-cache") != "hit"
