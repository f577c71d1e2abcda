"""A live stream renews its budget hold: a stream outliving ``lease_s`` stays reserved, never expired into spend."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from test_budgets_proxy import proxy_config, redis_store, settled, unique, usage

from costkit_litellm.testing.fake_provider import FakeProvider
from costkit_litellm.testing.proxy_server import ProxyServer, openai_deployment
from costkit_litellm.testing.redis_server import RedisServer

pytestmark = pytest.mark.redis

LEASE_S = 1.0
WORDS = 16
CHUNK_DELAY_MS = 250  # 16 chunks x 0.25 s = 4 s of stream: four leases long
KEY = "budget:stream:"


@pytest.fixture(scope="module")
def stream_provider() -> Iterator[FakeProvider]:
    """A provider whose answer is WORDS words long."""
    with FakeProvider(reply=" ".join(f"w{i}" for i in range(WORDS))) as provider:
        yield provider


@pytest.fixture(scope="module")
def stream_proxy(
    stream_provider: FakeProvider, redis_server: RedisServer, config_writer: Callable[[str, dict[str, Any]], Path]
) -> Iterator[tuple[ProxyServer, str]]:
    """A proxy with a 1 s lease and one global budget on the harness Redis."""
    prefix = unique("stream")
    headers = {"x-fake-chunk-delay-ms": str(CHUNK_DELAY_MS)}
    models = [openai_deployment("mini", stream_provider.base_url, extra_headers=headers)]
    costkit = {
        "redis_url": redis_server.url,
        "key_prefix": prefix,
        "budgets": [{"name": "stream", "scope": "global", "limit_usd": "1", "window": "total"}],
        "budget_settings": {"lease_s": LEASE_S},
    }
    with ProxyServer(config_writer(unique("stream-lease"), proxy_config(models, costkit))) as proxy:
        yield proxy, prefix


async def test_stream_longer_than_the_lease_keeps_its_hold_and_commits_its_cost(
    stream_proxy: tuple[ProxyServer, str], redis_server: RedisServer
) -> None:
    """While a 4 s stream runs under a 1 s lease its hold stays reserved (nothing counted as spent);
    when it ends, exactly its real cost is committed."""
    proxy, prefix = stream_proxy
    body = {
        "model": "mini",
        "max_tokens": 200,
        "stream": True,
        "stream_options": {"include_usage": True},
        "messages": [{"role": "user", "content": "count slowly"}],
    }
    seen: list[tuple[float, int, int]] = []
    async with redis_store(redis_server.url, prefix) as store, httpx.AsyncClient(timeout=60) as client:
        started = time.monotonic()
        chunks = 0
        async with client.stream(
            "POST", f"{proxy.base_url}/v1/chat/completions", headers=proxy.auth_headers, json=body
        ) as response:
            assert response.status_code == 200
            async for line in response.aiter_lines():
                if not line.startswith("data: "):
                    continue
                chunks += 1
                now = await usage(store, KEY)
                seen.append((time.monotonic() - started, now.committed, now.reserved))
        elapsed = time.monotonic() - started
        final = await settled(store, KEY)
        await asyncio.sleep(0.2)
        ledger = [e for e in await store.ledger_read() if e.fields.get("costkit.outcome") == "success"]
    late = [(t, c, r) for t, c, r in seen if t > 2 * LEASE_S]
    print(
        f"\nstream {elapsed:.1f}s, {chunks} chunks, lease {LEASE_S}s; usage after 2 leases: {late[:3]} ... {late[-1:]}"
    )
    assert elapsed > 3 * LEASE_S, "the stream was not longer than the lease: the test proves nothing"
    assert late, "no chunk arrived after two leases"
    assert all(c == 0 and r > 0 for _, c, r in late[:-2]), late  # still held, not expired into spend
    assert len(ledger) == 1
    cost_nano = int(ledger[0].fields["costkit.cost_nano"])
    assert final.reserved == 0 and final.committed == cost_nano > 0
