"""Two replicas on one Redis under load while the server stalls (a busy script longer than
the socket timeout, so replies are lost while the commands still run): budgets stay hard caps and
spend is exact once the replicas replay what they queued."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import openai
import pytest
import redis
from test_budgets_proxy import (
    COMPLETION_TOKENS,
    MAX_TOKENS,
    MINI_COST,
    PROMPT_TOKENS,
    nano,
    proxy_config,
    redis_store,
    running,
    settled,
    unique,
    usd,
)

from costkit_litellm.testing.fake_provider import FakeProvider
from costkit_litellm.testing.proxy_server import ProxyServer, openai_deployment
from costkit_litellm.testing.redis_server import RedisServer

pytestmark = pytest.mark.redis

LIMIT = 15 * MINI_COST
REQUESTS, CONCURRENCY = 400, 32
STALL_S = 1.6  # longer than the store's 1 s socket timeout
USER = "chaos"


@pytest.fixture(scope="module")
def chaos_provider() -> Iterator[FakeProvider]:
    """50 ms per call, so holds overlap the stalls."""
    with FakeProvider(latency_s=0.05, prompt_tokens=PROMPT_TOKENS, completion_tokens=COMPLETION_TOKENS) as fake:
        yield fake


@pytest.fixture(scope="module")
def chaos_replicas(
    config_writer: Callable[[str, Mapping[str, Any]], Path],
    redis_server: RedisServer,
    chaos_provider: FakeProvider,
) -> Iterator[tuple[tuple[ProxyServer, ...], str]]:
    prefix = unique("chaos")
    models = [openai_deployment("mini", chaos_provider.base_url)]
    costkit = {
        "redis_url": redis_server.url,
        "key_prefix": prefix,
        "budgets": [{"name": "chaos", "scope": "user", "values": [USER], "limit_usd": usd(LIMIT), "window": "total"}],
        "budget_settings": {"on_store_error": "fail_closed", "lease_s": 30},
    }
    path = config_writer(unique("chaos"), proxy_config(models, costkit))
    with running(ProxyServer(path), ProxyServer(path)) as proxies:
        yield proxies, prefix


def stall(url: str, seconds: float) -> None:
    """Block the server with a busy script (commands sent meanwhile run after it)."""
    client = redis.Redis.from_url(url, socket_timeout=seconds + 5)
    script = (
        "local t0 = redis.call('TIME') local s = tonumber(t0[1]) + tonumber(t0[2]) / 1e6 "
        "while true do local t = redis.call('TIME') "
        "if tonumber(t[1]) + tonumber(t[2]) / 1e6 - s > tonumber(ARGV[1]) then break end end return 1"
    )
    client.eval(script, 0, str(seconds))
    client.close()


async def test_two_replicas_with_a_stalling_redis_keep_the_cap_and_exact_spend(
    chaos_replicas: tuple[tuple[ProxyServer, ...], str], redis_server: RedisServer
) -> None:
    """Requests over two replicas while Redis stalls past the socket timeout three times: only 200,
    429 and 503 answers, spend never above the cap, and once replayed every hold is gone and the
    committed spend is exactly the sum of the answered requests' cost headers."""
    (proxies, prefix) = chaos_replicas
    key = f"budget:chaos:total:{USER}:"
    clients = [
        openai.AsyncOpenAI(
            base_url=f"{p.base_url}/v1", api_key=p.auth_headers["Authorization"].split()[-1], max_retries=0
        )
        for p in proxies
    ]
    gate = asyncio.Semaphore(CONCURRENCY)

    async def one(i: int) -> tuple[int, Mapping[str, str]]:
        async with gate:
            try:
                raw = await clients[i % 2].chat.completions.with_raw_response.create(
                    model="mini",
                    max_tokens=MAX_TOKENS,
                    messages=[{"role": "user", "content": f"hello {i}"}],
                    user=USER,
                    extra_body={"metadata": {"user_id": USER}},
                )
                return raw.status_code, raw.headers
            except openai.APIStatusError as exc:
                return exc.status_code, exc.response.headers

    stop = threading.Event()

    def staller() -> None:
        for _ in range(3):
            time.sleep(0.4)
            stall(redis_server.url, STALL_S)
            if stop.is_set():
                return

    thread = threading.Thread(target=staller)
    thread.start()
    try:
        results = await asyncio.gather(*(one(i) for i in range(REQUESTS)))
    finally:
        stop.set()
        await asyncio.to_thread(thread.join)
    by_status: dict[int, int] = {}
    for status, _ in results:
        by_status[status] = by_status.get(status, 0) + 1
    print("\nstatuses", by_status)
    assert set(by_status) <= {200, 429, 503}, by_status
    costs = [nano(h["x-costkit-cost-usd"]) for s, h in results if s == 200]
    # one more answered-or-refused request per replica replays what each queued during the stalls
    async with redis_store(redis_server.url, prefix) as store:
        for c in clients:
            for _ in range(2):
                try:
                    raw = await c.chat.completions.with_raw_response.create(
                        model="mini",
                        max_tokens=MAX_TOKENS,
                        messages=[{"role": "user", "content": "x"}],
                        extra_body={"metadata": {"user_id": USER}},
                    )
                    costs.append(nano(raw.headers["x-costkit-cost-usd"]))
                except openai.APIStatusError as exc:
                    assert exc.status_code in (429, 503), exc
        final = await settled(store, key, timeout_s=40)
    print("final", final, "answered", len(costs), "sum", sum(costs), "limit", LIMIT)
    assert final.reserved == 0, final
    assert final.committed <= LIMIT, final
    assert final.committed == sum(costs), (final, sum(costs))
    for c in clients:
        await c.close()
