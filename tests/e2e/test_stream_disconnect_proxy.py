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


# --- streams whose usage the proxy cannot know ---------------------------------------------------

REASONING = 5000
IN_PRICE, OUT_PRICE = 1e-6, 4e-6
"""The deployments' own prices (USD per token): what the provider bills, known to the test."""
NANO = 1_000_000_000


@pytest.fixture(scope="module")
def thinking_provider() -> Iterator[FakeProvider]:
    """A reasoning model: every answer bills 5,000 reasoning tokens the stream never shows."""
    with FakeProvider(reply=" ".join(f"w{i}" for i in range(WORDS)), reasoning_tokens=REASONING) as provider:
        yield provider


@pytest.fixture(scope="module")
def long_provider() -> Iterator[FakeProvider]:
    """A fast provider with a long answer (300 words), so a stream is well ahead of a slow client."""
    with FakeProvider(reply=" ".join(f"w{i}" for i in range(300))) as provider:
        yield provider


@pytest.fixture(scope="module")
def cut_proxy(
    thinking_provider: FakeProvider,
    hangup_provider: FakeProvider,
    long_provider: FakeProvider,
    redis_server: RedisServer,
    config_writer: Callable[[str, Mapping[str, Any]], Path],
) -> Iterator[tuple[ProxyServer, str]]:
    prefix = unique("cut")
    prices = {"input_cost_per_token": IN_PRICE, "output_cost_per_token": OUT_PRICE}
    slow = {"x-fake-chunk-delay-ms": "100"}
    models = [
        openai_deployment("thinker", thinking_provider.base_url, extra_headers=slow, **prices),
        openai_deployment(
            "breaks", hangup_provider.base_url, extra_headers={"x-fake-abort-after-chunks": "5"}, **prices
        ),
        openai_deployment(
            "breaks-late", long_provider.base_url, extra_headers={"x-fake-abort-after-chunks": "250"}, **prices
        ),
    ]
    costkit = {
        "redis_url": redis_server.url,
        "key_prefix": prefix,
        "budgets": [{"name": "cut", "scope": "global", "limit_usd": "5", "window": "total"}],
        "budget_settings": {"lease_s": 20},
    }
    path = config_writer(unique("cut"), proxy_config(models, costkit))
    with running(ProxyServer(path)) as (proxy,):
        yield proxy, prefix


def _billed(provider: FakeProvider, since: int) -> int:
    """What the provider billed (nano-dollars) for the requests it received after the first ``since``."""
    total = 0.0
    for recorded in provider.recorded()[since:]:
        usage = recorded.usage or {}
        total += usage.get("prompt_tokens", 0) * IN_PRICE + usage.get("completion_tokens", 0) * OUT_PRICE
    return round(total * NANO)


async def _ledger_costs(store: Any) -> list[tuple[int, int]]:
    """(cost, estimate) in nano-dollars of every outcome in the ledger."""
    entries = await store.ledger_read()
    return [
        (int(e.fields.get("costkit.cost_nano", 0)), int(e.fields.get("costkit.estimate_nano", 0)))
        for e in entries
        if e.fields.get("costkit.outcome")
    ]


async def test_a_reasoning_stream_left_by_its_client_is_charged_its_hold(
    cut_proxy: tuple[ProxyServer, str], thinking_provider: FakeProvider, redis_server: RedisServer
) -> None:
    """A client that leaves a reasoning model's stream after 3 chunks: the provider bills 5,000
    reasoning tokens the stream never showed, so the request is charged its hold (the worst case),
    never LiteLLM's count of the chunks sent: the committed spend covers the provider's bill and
    equals the ledger's."""
    proxy, prefix = cut_proxy
    since = len(thinking_provider.recorded())
    body = {
        "model": "thinker",
        "max_tokens": 6000,
        "stream": True,
        "messages": [{"role": "user", "content": "think hard, then count"}],
    }

    async def one() -> None:
        async with (
            httpx.AsyncClient(timeout=60) as client,
            client.stream("POST", f"{proxy.base_url}/v1/chat/completions", headers=proxy.auth_headers, json=body) as r,
        ):
            assert r.status_code == 200
            seen = 0
            async for line in r.aiter_lines():
                if line.startswith("data: "):
                    seen += 1
                    if seen == 3:
                        break  # hang up

    await asyncio.gather(*(one() for _ in range(4)))
    async with redis_store(redis_server.url, prefix) as store:
        final = await settled(store, "budget:cut:", timeout_s=10)
        await asyncio.sleep(1.0)
        costs = await _ledger_costs(store)
    billed = _billed(thinking_provider, since)
    print(f"\ncommitted {final.committed} n$, provider billed {billed} n$, ledger {costs}")
    assert len(costs) == 4
    assert all(cost == estimate > 0 for cost, estimate in costs), costs
    assert final.committed == sum(cost for cost, _ in costs)
    assert final.committed >= billed > 4 * REASONING * OUT_PRICE * NANO


async def test_a_stream_the_provider_breaks_off_is_charged_its_hold(
    cut_proxy: tuple[ProxyServer, str], hangup_provider: FakeProvider, redis_server: RedisServer
) -> None:
    """A provider that drops the connection after 5 chunks (the client saw content, then an
    error): the failed attempt produced output the provider bills, so it is charged its hold on the
    budget and in the ledger, never $0; nothing stays held."""
    proxy, prefix = cut_proxy
    async with redis_store(redis_server.url, prefix) as store:
        before = await settled(store, "budget:cut:", timeout_s=10)
        ledger_before = len(await _ledger_costs(store))
    since = len(hangup_provider.recorded())
    body = {
        "model": "breaks",
        "max_tokens": 300,
        "stream": True,
        "messages": [{"role": "user", "content": "count"}],
    }

    async def one() -> str:
        text = ""
        async with (
            httpx.AsyncClient(timeout=60) as client,
            client.stream("POST", f"{proxy.base_url}/v1/chat/completions", headers=proxy.auth_headers, json=body) as r,
        ):
            async for line in r.aiter_lines():
                text += line
        return text

    streamed = await asyncio.gather(*(one() for _ in range(3)))
    assert all("w3" in text for text in streamed), streamed  # content reached the client first
    async with redis_store(redis_server.url, prefix) as store:
        final = await settled(store, "budget:cut:", timeout_s=10)
        await asyncio.sleep(1.0)
        costs = (await _ledger_costs(store))[ledger_before:]
    billed = _billed(hangup_provider, since)
    spent = final.committed - before.committed
    print(f"\ncommitted {spent} n$, provider billed {billed} n$, ledger {costs}")
    assert len(hangup_provider.recorded()) - since == 3
    assert spent == sum(cost for cost, _ in costs) > 0
    assert spent >= billed > 0


async def test_a_stream_that_breaks_off_and_loses_its_client_is_charged_once(
    cut_proxy: tuple[ProxyServer, str], long_provider: FakeProvider, redis_server: RedisServer
) -> None:
    """The provider breaks a long stream off while its client hangs up after 3 chunks: LiteLLM may log
    the attempt's failure and then the disconnect's success for the same call; the request is
    charged its hold once (the ledger's costs per request add up to it), never twice."""
    proxy, prefix = cut_proxy
    async with redis_store(redis_server.url, prefix) as store:
        before = await settled(store, "budget:cut:", timeout_s=10)
        ledger_before = len(await store.ledger_read())
    body = {
        "model": "breaks-late",
        "max_tokens": 1000,
        "stream": True,
        "messages": [{"role": "user", "content": "count"}],
    }

    async def one() -> str:
        async with (
            httpx.AsyncClient(timeout=60) as client,
            client.stream("POST", f"{proxy.base_url}/v1/chat/completions", headers=proxy.auth_headers, json=body) as r,
        ):
            assert r.status_code == 200
            hold = r.headers["x-costkit-max-cost-usd"]
            seen = 0
            async for line in r.aiter_lines():
                if line.startswith("data: "):
                    seen += 1
                    if seen == 3:
                        await asyncio.sleep(0.5)  # the proxy has read the provider's whole stream by now
                        break
        return hold

    holds = await asyncio.gather(*(one() for _ in range(3)))
    async with redis_store(redis_server.url, prefix) as store:
        final = await settled(store, "budget:cut:", timeout_s=10)
        await asyncio.sleep(1.0)
        entries = (await store.ledger_read())[ledger_before:]
    by_call: dict[str, int] = {}
    for e in entries:
        if e.fields.get("costkit.outcome"):
            call = e.entry_id.rsplit(":", 1)[0]  # the pack's request id, then the outcome
            by_call[call] = by_call.get(call, 0) + int(e.fields.get("costkit.cost_nano", 0))
    hold_nano = [round(float(h) * NANO) for h in holds]
    print(f"\nholds {hold_nano}, ledger per request {by_call}, committed {final.committed - before.committed}")
    assert len(by_call) == 3
    assert sorted(by_call.values()) == sorted(hold_nano)
    assert final.committed - before.committed == sum(hold_nano)
