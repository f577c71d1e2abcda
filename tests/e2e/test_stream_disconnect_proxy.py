"""A streaming client that hangs up mid-stream, many at once over two replicas: every hold
is settled once (never left to expire into the worst case, never charged twice), and the ledger
holds one outcome per request whose cost is what the budget committed."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx
import pytest
from test_budgets_proxy import proxy_config, redis_store, running, settled, unique

from costkit_litellm.testing.fake_provider import FakeProvider
from costkit_litellm.testing.proxy_server import ProxyServer, openai_deployment
from costkit_litellm.testing.redis_server import RedisServer

pytestmark = pytest.mark.redis

WORDS = 30
KEY = "budget:hangup:"
STREAMS = 24


@pytest.fixture(scope="module")
def hangup_provider() -> Iterator[FakeProvider]:
    with FakeProvider(reply=" ".join(f"w{i}" for i in range(WORDS))) as provider:
        yield provider


@pytest.fixture(scope="module")
def hangup_replicas(
    hangup_provider: FakeProvider, redis_server: RedisServer, config_writer: Callable[[str, Mapping[str, Any]], Path]
) -> Iterator[tuple[tuple[ProxyServer, ...], str]]:
    prefix = unique("hangup")
    models = [openai_deployment("mini", hangup_provider.base_url, extra_headers={"x-fake-chunk-delay-ms": "100"})]
    costkit = {
        "redis_url": redis_server.url,
        "key_prefix": prefix,
        "budgets": [{"name": "hangup", "scope": "global", "limit_usd": "1", "window": "total"}],
        "budget_settings": {"lease_s": 20},
    }
    path = config_writer(unique("hangup"), proxy_config(models, costkit))
    with running(ProxyServer(path), ProxyServer(path)) as proxies:
        yield proxies, prefix


async def test_streams_cut_by_their_clients_are_settled_once(
    hangup_replicas: tuple[tuple[ProxyServer, ...], str], redis_server: RedisServer
) -> None:
    """24 streams over two replicas, each client gone after 3 chunks: within a few seconds (far less
    than the 20 s lease) nothing is held, and the committed spend is the ledger's, one outcome each."""
    proxies, prefix = hangup_replicas
    body = {
        "model": "mini",
        "max_tokens": 200,
        "stream": True,
        "stream_options": {"include_usage": True},
        "messages": [{"role": "user", "content": "count"}],
    }

    async def one(i: int) -> None:
        proxy = proxies[i % 2]
        async with (
            httpx.AsyncClient(timeout=60) as client,
            client.stream(
                "POST", f"{proxy.base_url}/v1/chat/completions", headers=proxy.auth_headers, json=body
            ) as response,
        ):
            assert response.status_code == 200
            seen = 0
            async for line in response.aiter_lines():
                if line.startswith("data: "):
                    seen += 1
                    if seen == 3:
                        break  # hang up

    await asyncio.gather(*(one(i) for i in range(STREAMS)))
    async with redis_store(redis_server.url, prefix) as store:
        final = await settled(store, KEY, timeout_s=10)
        await asyncio.sleep(1.0)
        entries = await store.ledger_read()
    kept = [e for e in entries if e.fields.get("costkit.outcome")]
    outcomes = [e.fields for e in kept]
    by_call: dict[str, int] = {}
    for e in kept:
        call = e.fields.get("litellm.call_id") or e.entry_id
        by_call[call] = by_call.get(call, 0) + 1
    print("\nfinal", final, "outcomes", len(outcomes), {f.get("costkit.outcome") for f in outcomes})
    assert final.reserved == 0, f"holds left to expire into spend: {final}"
    assert all(n == 1 for n in by_call.values()), by_call
    assert len(outcomes) == STREAMS, [f.get("costkit.outcome") for f in outcomes]
    assert final.committed == sum(int(f.get("costkit.cost_nano", 0)) for f in outcomes)
