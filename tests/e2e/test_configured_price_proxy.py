"""Reviewer finding: a price under ``costkit.pricing.models`` changed only the hold.

The commit, the ledger and ``x-costkit-cost-usd`` used LiteLLM's ``response_cost``: $0 for a model
LiteLLM does not know (``hosted_vllm/mymodel``, priced only by the override, as the pack's own
``budget_price_unknown`` message suggests), so a $0.001 cap admitted 40 of 40 calls and committed
nothing; and LiteLLM's own price for a known model overridden upward. Here a real proxy, a real
Redis and the FakeProvider (fixed token counts: every answer's price is exact) show the spend
committed at the override, and the cap refusing once it is reached.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from costkit_litellm.store.redis import RedisStore
from costkit_litellm.testing.fake_provider import FakeProvider
from costkit_litellm.testing.proxy_server import ProxyServer, base_config, enable_costkit, openai_deployment
from costkit_litellm.testing.redis_server import RedisServer

pytestmark = pytest.mark.redis

NANO = Decimal("1e-9")
PROMPT_TOKENS, COMPLETION_TOKENS, MAX_TOKENS = 5, 20, 40
# hosted_vllm/mymodel: unknown to LiteLLM, priced only here at $2 / $8 per million tokens.
OWN_COST = PROMPT_TOKENS * 2_000 + COMPLETION_TOKENS * 8_000  # 170,000 n$ per answer
# gpt-4o-mini overridden upward to $100 per million (LiteLLM's $0.15 / $0.60 would be 12,750 n$).
UPWARD_COST = (PROMPT_TOKENS + COMPLETION_TOKENS) * 100_000  # 2,500,000 n$ per answer
CAP = 1_000_000  # $0.001
PREFIX = f"cp-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def provider() -> Iterator[FakeProvider]:
    """A provider that always bills 5 prompt and 20 completion tokens."""
    with FakeProvider(prompt_tokens=PROMPT_TOKENS, completion_tokens=COMPLETION_TOKENS) as fake:
        yield fake


@pytest.fixture(scope="module")
def proxy(
    config_writer: Callable[[str, Mapping[str, Any]], Path], provider: FakeProvider, redis_server: RedisServer
) -> Iterator[ProxyServer]:
    models = [
        openai_deployment("mymodel", provider.base_url, model="hosted_vllm/mymodel"),
        openai_deployment("mini", provider.base_url, model="openai/gpt-4o-mini"),
    ]
    config = base_config(models, num_retries=0)
    config["router_settings"] = {"num_retries": 0, "disable_cooldowns": True}
    hundred = {"input_usd_per_million_tokens": 100, "output_usd_per_million_tokens": 100}
    costkit = {
        "redis_url": redis_server.url,
        "key_prefix": PREFIX,
        "pricing": {
            "models": {
                "hosted_vllm/mymodel": {"input_usd_per_million_tokens": 2, "output_usd_per_million_tokens": 8},
                "mini": hundred,
            }
        },
        "budgets": [
            {"name": "own_cap", "scope": "user", "values": ["capped", "streamer"], "limit_usd": "0.001"},
            {"name": "upward_watch", "scope": "user", "values": ["upward"], "limit_usd": "1"},
        ],
    }
    with ProxyServer(config_writer("configured-price", enable_costkit(config, costkit))) as server:
        yield server


def body(model: str, user: str, **extra: Any) -> dict[str, Any]:
    return {
        "model": model,
        "max_tokens": MAX_TOKENS,
        "messages": [{"role": "user", "content": "hello"}],
        "metadata": {"user_id": user},
        **extra,
    }


def nano(header: str) -> int:
    return int(Decimal(header) / NANO)


async def committed(redis_server: RedisServer, budget: str, user: str, wanted: int) -> int:
    """The budget's committed spend for ``user``, once it reaches ``wanted`` (or after 15 s)."""
    store = RedisStore(redis_server.url, prefix=PREFIX)
    await store.start()
    try:
        deadline = time.monotonic() + 15
        while True:
            found = [u for u in await store.list_limits("") if budget in u.key and user in u.key]
            spent = sum(u.committed for u in found)
            if spent >= wanted or time.monotonic() > deadline:
                return spent
            await asyncio.sleep(0.1)
    finally:
        await store.close()


async def ledger_costs(redis_server: RedisServer, call_ids: set[str]) -> dict[str, int]:
    """``costkit.cost_nano`` of the success events of these client call ids (waits up to 15 s for all)."""
    store = RedisStore(redis_server.url, prefix=PREFIX)
    await store.start()
    try:
        deadline = time.monotonic() + 15
        while True:
            costs = {
                str(e.fields.get("litellm.call_id")): int(e.fields["costkit.cost_nano"])
                for e in await store.ledger_read()
                if e.entry_id.endswith(":success") and e.fields.get("litellm.call_id") in call_ids
            }
            if set(costs) == call_ids or time.monotonic() > deadline:
                return costs
            await asyncio.sleep(0.1)
    finally:
        await store.close()


async def test_a_model_priced_only_by_the_override_commits_and_is_capped(
    proxy: ProxyServer, redis_server: RedisServer
) -> None:
    """A model LiteLLM does not know, priced by the override alone: each answer commits the override
    price (header and ledger too), and the $0.001 cap refuses once committed spend plus a hold passes it."""
    answered: list[httpx.Response] = []
    refused: httpx.Response | None = None
    with httpx.Client(timeout=60) as client:
        for _ in range(40):
            response = client.post(
                f"{proxy.base_url}/v1/chat/completions", headers=proxy.auth_headers, json=body("mymodel", "capped")
            )
            if response.status_code != 200:
                refused = response
                break
            answered.append(response)
            # commits are written by the success callback, just after the answer: wait for this one
            spent = len(answered) * OWN_COST
            assert await committed(redis_server, "own_cap", "capped", spent) == spent
    assert refused is not None, "a $0.001 cap admitted 40 calls"
    assert refused.status_code == 429, refused.text
    assert refused.json()["error"]["type"] == "budget_exceeded"
    hold = nano(answered[0].headers["x-costkit-max-cost-usd"])
    assert len(answered) == (CAP - hold) // OWN_COST + 1  # admitted while committed + its hold fit
    assert all(nano(r.headers["x-costkit-cost-usd"]) == OWN_COST for r in answered)
    assert await committed(redis_server, "own_cap", "capped", 0) == len(answered) * OWN_COST <= CAP
    call_ids = {r.headers["x-litellm-call-id"] for r in answered}
    assert await ledger_costs(redis_server, call_ids) == dict.fromkeys(call_ids, OWN_COST)


async def test_a_stream_commits_at_the_override(proxy: ProxyServer, redis_server: RedisServer) -> None:
    """A streamed answer of the override-priced model commits its final usage at the override price."""
    request = body("mymodel", "streamer", stream=True, stream_options={"include_usage": True})
    url = f"{proxy.base_url}/v1/chat/completions"
    with httpx.Client(timeout=60) as client, client.stream("POST", url, headers=proxy.auth_headers, json=request) as r:
        assert r.status_code == 200
        text = "".join(r.iter_text())
    assert "[DONE]" in text
    assert await committed(redis_server, "own_cap", "streamer", OWN_COST) == OWN_COST


async def test_a_known_model_overridden_upward_commits_at_the_override(
    proxy: ProxyServer, redis_server: RedisServer
) -> None:
    """gpt-4o-mini overridden to $100/M commits $100/M (not LiteLLM's own price): header, budget and ledger."""
    url = f"{proxy.base_url}/v1/chat/completions"
    with httpx.Client(timeout=60) as client:
        responses = [client.post(url, headers=proxy.auth_headers, json=body("mini", "upward")) for _ in range(2)]
    assert [r.status_code for r in responses] == [200, 200], responses[-1].text
    assert [nano(r.headers["x-costkit-cost-usd"]) for r in responses] == [UPWARD_COST, UPWARD_COST]
    assert await committed(redis_server, "upward_watch", "upward", 2 * UPWARD_COST) == 2 * UPWARD_COST
    call_ids = {r.headers["x-litellm-call-id"] for r in responses}
    assert await ledger_costs(redis_server, call_ids) == dict.fromkeys(call_ids, UPWARD_COST)
