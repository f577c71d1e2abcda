"""A router fallback (the first deployment fails, the fallback answers) keeps its request's
hold until the fallback's answer is settled, so concurrent requests cannot spend the same headroom."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from test_budgets_proxy import (
    COMPLETION_TOKENS,
    MAX_TOKENS,
    PROMPT_TOKENS,
    nano,
    redis_store,
    settled,
    unique,
    usage,
    usd,
    wait_for,
)

from costkit_litellm.testing.fake_provider import FakeProvider
from costkit_litellm.testing.proxy_server import ProxyServer, base_config, enable_costkit, openai_deployment
from costkit_litellm.testing.redis_server import RedisServer

pytestmark = pytest.mark.redis

USER = "fallback"
REQUESTS = 40


def capped(redis_server: RedisServer, prefix: str, limit: int) -> dict[str, Any]:
    """The ``costkit:`` section: one total budget of ``limit`` n$ for USER."""
    budget = {"name": "fb", "scope": "user", "values": [USER], "limit_usd": usd(limit), "window": "total"}
    return {"redis_url": redis_server.url, "key_prefix": prefix, "budgets": [budget]}


async def send_all(proxy: ProxyServer, model: str) -> list[tuple[int, Mapping[str, str]]]:
    """REQUESTS concurrent chat calls for USER through the openai SDK: each one's status and headers."""
    client = openai.AsyncOpenAI(
        base_url=f"{proxy.base_url}/v1", api_key=proxy.auth_headers["Authorization"].split()[-1], max_retries=0
    )

    async def one(i: int) -> tuple[int, Mapping[str, str]]:
        try:
            raw = await client.chat.completions.with_raw_response.create(
                model=model,
                max_tokens=MAX_TOKENS,
                messages=[{"role": "user", "content": f"hi {i}"}],
                extra_body={"metadata": {"user_id": USER}},
            )
            return raw.status_code, raw.headers
        except openai.APIStatusError as exc:
            return exc.status_code, exc.response.headers

    try:
        return await asyncio.gather(*(one(i) for i in range(REQUESTS)))
    finally:
        await client.close()


@pytest.fixture(scope="module")
def fallback_provider() -> Iterator[FakeProvider]:
    with FakeProvider(prompt_tokens=PROMPT_TOKENS, completion_tokens=COMPLETION_TOKENS) as fake:
        yield fake


@contextlib.contextmanager
def fallback_deployments(
    config_writer: Callable[[str, Mapping[str, Any]], Path],
    redis_server: RedisServer,
    provider: FakeProvider,
    name: str,
    limit: int,
    extra: Sequence[Mapping[str, Any]] = (),
) -> Iterator[tuple[ProxyServer, str, int]]:
    """A proxy where 'primary' always fails (429) and the router falls back to 'backup', which answers after
    1.5 s (no retries); ``extra`` deployments beside them; USER's total budget of ``limit`` n$."""
    prefix = unique(name)
    models = [
        openai_deployment("primary", provider.base_url, extra_headers={"x-fake-fail": "429"}),
        openai_deployment("backup", provider.base_url, extra_headers={"x-fake-latency-ms": "1500"}),
        *extra,
    ]
    config = base_config(models, num_retries=0)
    config["router_settings"] = {"num_retries": 0, "disable_cooldowns": True, "fallbacks": [{"primary": ["backup"]}]}
    costkit = capped(redis_server, prefix, limit)
    with ProxyServer(config_writer(unique(name), enable_costkit(config, costkit))) as proxy:
        yield proxy, prefix, limit


@pytest.fixture(scope="module")
def fallback_proxy(
    config_writer: Callable[[str, Mapping[str, Any]], Path], redis_server: RedisServer, fallback_provider: FakeProvider
) -> Iterator[tuple[ProxyServer, str, int]]:
    """'primary' always fails (429); the router falls back to 'backup', which answers after 1.5 s."""
    # a cap of 5 worst cases (gpt-4o-mini: 5 prompt tokens x 150 + 40 x 600 n$ at most, counted a little higher)
    with fallback_deployments(config_writer, redis_server, fallback_provider, "fallback", 5 * 26_000) as proxy:
        yield proxy


async def test_concurrent_fallbacks_never_spend_past_the_cap(
    fallback_proxy: tuple[ProxyServer, str, int], redis_server: RedisServer
) -> None:
    """40 concurrent requests whose first deployment fails and whose fallback answers: at most the cap
    is committed (the failed attempt must not give the hold back while the fallback still runs)."""
    proxy, prefix, limit = fallback_proxy
    results = await send_all(proxy, "primary")
    statuses = [s for s, _ in results]
    worst = {h.get("x-costkit-max-cost-usd") for s, h in results if s == 200}
    async with redis_store(redis_server.url, prefix) as store:
        final = await settled(store, f"budget:fb:total:{USER}:")
    print("\nstatuses", {s: statuses.count(s) for s in set(statuses)}, "worst", worst, "final", final, "limit", limit)
    assert set(statuses) <= {200, 429}, statuses
    assert final.reserved == 0
    assert final.committed <= limit, (final, limit, statuses.count(200))
    costs = [nano(h["x-costkit-cost-usd"]) for s, h in results if s == 200]
    assert final.committed == sum(costs)


@pytest.fixture(scope="module")
def one_hold_proxy(
    config_writer: Callable[[str, Mapping[str, Any]], Path], redis_server: RedisServer, fallback_provider: FakeProvider
) -> Iterator[tuple[ProxyServer, str, int]]:
    """As ``fallback_proxy``, with a cap of one and a half worst cases: one hold leaves no room for a second;
    and 'dead', which always fails (500) and has no fallback."""
    dead = openai_deployment("dead", fallback_provider.base_url, extra_headers={"x-fake-fail": "500"})
    limit = 39_000  # a worst case is 25,500 n$
    with fallback_deployments(config_writer, redis_server, fallback_provider, "onehold", limit, [dead]) as proxy:
        yield proxy


async def test_a_failed_attempt_keeps_its_hold_while_the_fallback_runs(
    one_hold_proxy: tuple[ProxyServer, str, int], redis_server: RedisServer
) -> None:
    """The first deployment fails at once and the fallback takes 1.5 s: a request sent meanwhile finds
    the first one's hold still there and is refused (the failed attempt gave nothing back), and the
    first one's answer is then committed and its hold released."""
    proxy, prefix, limit = one_hold_proxy
    client = openai.AsyncOpenAI(
        base_url=f"{proxy.base_url}/v1", api_key=proxy.auth_headers["Authorization"].split()[-1], max_retries=0
    )

    async def send(text: str) -> tuple[int, Mapping[str, str]]:
        try:
            raw = await client.chat.completions.with_raw_response.create(
                model="primary",
                max_tokens=MAX_TOKENS,
                messages=[{"role": "user", "content": text}],
                extra_body={"metadata": {"user_id": USER}},
            )
            return raw.status_code, raw.headers
        except openai.APIStatusError as exc:
            return exc.status_code, exc.response.headers

    try:
        first = asyncio.create_task(send("first"))
        await asyncio.sleep(0.8)  # the primary has failed; the fallback is on its way
        async with redis_store(redis_server.url, prefix) as store:
            during = await usage(store, f"budget:fb:total:{USER}:")
        second_status, _ = await send("second")
        first_status, first_headers = await first
    finally:
        await client.close()
    assert during.reserved == nano(first_headers["x-costkit-max-cost-usd"]), during
    assert (first_status, second_status) == (200, 429)
    async with redis_store(redis_server.url, prefix) as store:
        final = await settled(store, f"budget:fb:total:{USER}:")
    assert final.reserved == 0
    assert final.committed == nano(first_headers["x-costkit-cost-usd"]) <= limit


async def test_a_request_whose_every_attempt_fails_gives_its_hold_back_at_its_end(
    one_hold_proxy: tuple[ProxyServer, str, int], redis_server: RedisServer
) -> None:
    """A deployment that always fails and has no fallback: the client's error is the request's end, and
    the proxy's failure hook releases its hold at once (not when the 10-minute lease expires)."""
    proxy, prefix, _ = one_hold_proxy
    async with httpx.AsyncClient(base_url=proxy.base_url, headers=proxy.auth_headers, timeout=30) as client:
        for stream in (False, True):
            body = {
                "model": "dead",
                "max_tokens": MAX_TOKENS,
                "stream": stream,
                "messages": [{"role": "user", "content": f"fails (stream={stream})"}],
                "metadata": {"user_id": USER},
            }
            response = await client.post("/v1/chat/completions", json=body)
            assert response.status_code >= 400 and "budget" not in response.text, response.text
    async with redis_store(redis_server.url, prefix) as store:
        final = await wait_for(store, f"budget:fb:total:{USER}:", lambda u: u.reserved == 0, timeout_s=10)
    assert final.reserved == 0, final


@pytest.fixture(scope="module")
def retry_proxy(
    config_writer: Callable[[str, Mapping[str, Any]], Path], redis_server: RedisServer
) -> Iterator[tuple[ProxyServer, str, int]]:
    """LiteLLM retries (num_retries 3) against a provider failing 60% of calls (500) after 300 ms."""
    with FakeProvider(
        latency_s=0.3,
        failure_rate=0.6,
        failure_statuses=(500,),
        seed=3,
        prompt_tokens=PROMPT_TOKENS,
        completion_tokens=COMPLETION_TOKENS,
    ) as fake:
        prefix = unique("retry")
        config = base_config([openai_deployment("mini", fake.base_url)], num_retries=3)
        config["router_settings"] = {"num_retries": 3, "retry_after": 0, "disable_cooldowns": True}
        limit = 5 * 26_000
        costkit = capped(redis_server, prefix, limit)
        with ProxyServer(config_writer(unique("retry"), enable_costkit(config, costkit))) as proxy:
            yield proxy, prefix, limit


async def test_concurrent_retries_never_spend_past_the_cap(
    retry_proxy: tuple[ProxyServer, str, int], redis_server: RedisServer
) -> None:
    """40 concurrent requests that LiteLLM retries after provider failures: at most the cap is
    committed, nothing stays held, and the commits are the answered requests' cost headers."""
    proxy, prefix, limit = retry_proxy
    results = await send_all(proxy, "mini")
    statuses = [s for s, _ in results]
    async with redis_store(redis_server.url, prefix) as store:
        final = await settled(store, f"budget:fb:total:{USER}:")
    print("\nstatuses", {s: statuses.count(s) for s in set(statuses)}, "final", final, "limit", limit)
    assert set(statuses) <= {200, 429, 500}, statuses
    assert final.reserved == 0
    assert final.committed <= limit, (final, limit, statuses.count(200))
    costs = [nano(h["x-costkit-cost-usd"]) for s, h in results if s == 200]
    assert final.committed == sum(costs)
