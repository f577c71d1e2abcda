"""Reviewer finding: image parts are held at LiteLLM's 257-token default, billed at far more.

The fake provider (which bills like a real one) charges 765 tokens per image part, and OpenAI bills
gpt-4o-mini images at 2,833 + 5,667 tokens per tile; the pack holds 257 per image, so a request with
many images is admitted under a limit it then overruns (chat, /v1/responses and /v1/messages alike).
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Callable, Iterator, Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from costkit_litellm.testing.fake_provider import FakeProvider
from costkit_litellm.testing.proxy_server import ProxyServer, base_config, enable_costkit, openai_deployment
from costkit_litellm.testing.redis_server import RedisServer

pytestmark = pytest.mark.redis

PNG = base64.b64encode(
    bytes.fromhex(
        "89504e470d0a1a0a0000000d49484452000000010000000108060000001f15c489"
        "0000000d49444154789c6360000002000154a24f5d0000000049454e44ae426082"
    )
).decode()
LIMIT = Decimal("0.005")
IMAGES = 100


@pytest.fixture(scope="module")
def provider() -> Iterator[FakeProvider]:
    with FakeProvider(record_limit=100) as fake:
        yield fake


@pytest.fixture(scope="module")
def proxy(
    config_writer: Callable[[str, Mapping[str, Any]], Path], provider: FakeProvider, redis_server: RedisServer
) -> Iterator[ProxyServer]:
    config = base_config([openai_deployment("mini", provider.base_url)], num_retries=0)
    config["router_settings"] = {"num_retries": 0, "disable_cooldowns": True}
    budgets = [
        {"name": f"cap_{f}", "scope": "tag:feature", "values": [f], "limit_usd": str(LIMIT), "window": "day"}
        for f in ("chat", "responses", "messages")
    ]
    costkit = {"redis_url": redis_server.url, "key_prefix": f"img-{uuid.uuid4().hex[:8]}", "budgets": budgets}
    with ProxyServer(config_writer("review-image-hold", enable_costkit(config, costkit))) as server:
        yield server


def _bodies() -> dict[str, tuple[str, dict[str, Any]]]:
    url = f"data:image/png;base64,{PNG}"
    chat = [{"type": "text", "text": "describe"}] + [
        {"type": "image_url", "image_url": {"url": url, "detail": "high"}} for _ in range(IMAGES)
    ]
    responses = [{"type": "input_text", "text": "describe"}] + [
        {"type": "input_image", "image_url": url, "detail": "high"} for _ in range(IMAGES)
    ]
    messages = [{"type": "text", "text": "describe"}] + [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}} for _ in range(IMAGES)
    ]
    return {
        "chat": (
            "/v1/chat/completions",
            {"model": "mini", "max_tokens": 1, "messages": [{"role": "user", "content": chat}]},
        ),
        "responses": (
            "/v1/responses",
            {"model": "mini", "max_output_tokens": 16, "input": [{"role": "user", "content": responses}]},
        ),
        "messages": (
            "/v1/messages",
            {"model": "mini", "max_tokens": 1, "messages": [{"role": "user", "content": messages}]},
        ),
    }


@pytest.mark.parametrize("endpoint", ["chat", "responses", "messages"])
def test_images_never_bill_past_the_limit(proxy: ProxyServer, provider: FakeProvider, endpoint: str) -> None:
    """A request with many images is refused, or bills within the limit, on every endpoint."""
    url, body = _bodies()[endpoint]
    headers = {**proxy.auth_headers, "anthropic-version": "2023-06-01"}
    provider.reset()
    response = httpx.post(
        f"{proxy.base_url}{url}", headers=headers, json={**body, "metadata": {"feature": endpoint}}, timeout=60
    )
    billed_tokens = sum(
        int((r.usage or {}).get("prompt_tokens", 0)) * 150 + int((r.usage or {}).get("completion_tokens", 0)) * 600
        for r in provider.recorded()
    )
    billed = Decimal(billed_tokens) * Decimal("1e-9")
    assert billed <= LIMIT, (
        f"{endpoint}: status {response.status_code}, held {response.headers.get('x-costkit-max-cost-usd')}, "
        f"provider billed ${billed} against a ${LIMIT} limit"
    )
