"""Budgets inside real `litellm --config ...` proxies: a hard cap across replicas, leases after a crash,
Redis outages under both policies, and what a client sees (429s, headers, overrides, breaker, downgrade).

Every proxy configuration starts once per module (a proxy takes several seconds to start) and writes
under its own key prefix, so these tests never see other tests' keys in the session Redis. Costs are
exact: the fake providers report fixed token counts, so each answer's price is known to the nano-dollar.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from costkit_litellm.budgets.enforce import HEADER_REMAINING
from costkit_litellm.store import LimitUsage
from costkit_litellm.store.redis import RedisStore
from costkit_litellm.testing.fake_provider import FakeProvider
from costkit_litellm.testing.proxy_server import (
    ProxyServer,
    base_config,
    enable_costkit,
    mock_deployment,
    openai_deployment,
)
from costkit_litellm.testing.redis_server import RedisServer

NANO = Decimal("1e-9")
# LiteLLM's price map, in nano-dollars per token: openai/gpt-4o-mini $0.15 / $0.60 per million
# input / output tokens, openai/gpt-4o $2.50 / $10.00.
MINI_IN, MINI_OUT = 150, 600
BIG_IN, BIG_OUT = 2_500, 10_000
# The fake providers always report these token counts; every request asks for at most MAX_TOKENS.
PROMPT_TOKENS, COMPLETION_TOKENS, MAX_TOKENS = 5, 20, 40
MINI_COST = PROMPT_TOKENS * MINI_IN + COMPLETION_TOKENS * MINI_OUT  # 12_750 n$ per answer
BIG_COST = PROMPT_TOKENS * BIG_IN + COMPLETION_TOKENS * BIG_OUT  # 212_500 n$ per answer

OVERSHOOT_USER = "overshoot"
OVERSHOOT_LIMIT = 50 * MINI_COST  # about 50 answers
REQUESTS, CONCURRENCY = 300, 40
PER_USER_LIMIT = 100_000  # 'capped' gets about 6 answers a day
VIP_LIMIT = 1_000_000
DOWNGRADE_LIMIT = 2_000_000  # big costs 212_500: the 6th call finds less than half left
LEASE_S = 3.0
FINAL_MESSAGE = "Stopped: {reason}."

pytestmark = pytest.mark.redis


def usd(nano: int) -> str:
    """Nano-dollars as the dollar string a config takes."""
    return str(Decimal(nano) * NANO)


def nano(header: str) -> int:
    """A dollar header as nano-dollars."""
    value = Decimal(header) / NANO
    assert value == value.to_integral_value(), header
    return int(value)


def unique(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:8]}"


@contextlib.contextmanager
def running(*proxies: ProxyServer) -> Iterator[tuple[ProxyServer, ...]]:
    """Start the proxies side by side; stop all of them at the end (also when one fails to start)."""
    try:
        with ThreadPoolExecutor(len(proxies)) as pool:
            for future in [pool.submit(proxy.start) for proxy in proxies]:
                future.result()
        yield proxies
    finally:
        for proxy in proxies:
            proxy.stop()


def proxy_config(models: list[dict[str, Any]], costkit: Mapping[str, Any]) -> dict[str, Any]:
    """The pack on, no retries and no cooldowns: a provider failure is one failed call."""
    config = base_config(models, num_retries=0)
    config["router_settings"] = {"num_retries": 0, "disable_cooldowns": True}
    return enable_costkit(config, costkit)


async def chat(
    client: httpx.AsyncClient,
    proxy: ProxyServer,
    *,
    model: str = "mini",
    user: str | None = None,
    content: str = "hello",
    headers: Mapping[str, str] | None = None,
) -> httpx.Response:
    body: dict[str, Any] = {
        "model": model,
        "max_tokens": MAX_TOKENS,
        "messages": [{"role": "user", "content": content}],
    }
    if user is not None:
        body["metadata"] = {"user_id": user}
    return await client.post(
        f"{proxy.base_url}/v1/chat/completions", headers={**proxy.auth_headers, **(headers or {})}, json=body
    )


def openai_error(response: httpx.Response, status: int, error_type: str) -> str:
    """Assert an OpenAI-shaped error body with this status and type; returns its message."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}, body
    error = body["error"]
    assert set(error) == {"message", "type", "param", "code"}, error
    assert error["type"] == error_type, error
    assert error["param"] is None
    assert error["code"] == str(status)
    return str(error["message"])


@contextlib.asynccontextmanager
async def redis_store(url: str, prefix: str) -> AsyncIterator[RedisStore]:
    store = RedisStore(url, prefix=prefix)
    await store.start()
    try:
        yield store
    finally:
        await store.close()


async def usage(store: RedisStore, key_prefix: str) -> LimitUsage:
    """Committed and reserved over every budget key under ``key_prefix`` (zeros when none)."""
    found = await store.list_limits(key_prefix)
    return LimitUsage(key_prefix, sum(u.committed for u in found), sum(u.reserved for u in found))


async def wait_for(
    store: RedisStore, key_prefix: str, done: Callable[[LimitUsage], bool], timeout_s: float = 30
) -> LimitUsage:
    """Poll the budget until ``done`` holds (callbacks settle just after the response is sent)."""
    deadline = time.monotonic() + timeout_s
    while True:
        current = await usage(store, key_prefix)
        if done(current) or time.monotonic() > deadline:
            return current
        await asyncio.sleep(0.05)


async def settled(store: RedisStore, key_prefix: str, timeout_s: float = 30) -> LimitUsage:
    """The budget once nothing is held: every admitted request committed or released."""
    return await wait_for(store, key_prefix, lambda u: u.reserved == 0, timeout_s)


# --- fixtures -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def provider() -> Iterator[FakeProvider]:
    """A reliable provider reporting fixed token counts."""
    with FakeProvider(prompt_tokens=PROMPT_TOKENS, completion_tokens=COMPLETION_TOKENS) as fake:
        yield fake


@pytest.fixture(scope="module")
def flaky_provider() -> Iterator[FakeProvider]:
    """About one call in ten fails with a 500 (seeded); 50 ms per call, so holds overlap."""
    with FakeProvider(
        latency_s=0.05,
        failure_rate=0.1,
        failure_statuses=(500,),
        seed=7,
        prompt_tokens=PROMPT_TOKENS,
        completion_tokens=COMPLETION_TOKENS,
    ) as fake:
        yield fake


@pytest.fixture(scope="module")
def shared_prefix() -> str:
    return unique("budgets-e2e")


@pytest.fixture(scope="module")
def replicas(
    config_writer: Callable[[str, Mapping[str, Any]], Path],
    redis_server: RedisServer,
    provider: FakeProvider,
    flaky_provider: FakeProvider,
    shared_prefix: str,
) -> Iterator[tuple[ProxyServer, ...]]:
    """Two proxy processes with one config, sharing one Redis and one key prefix."""
    models = [
        openai_deployment("flaky", flaky_provider.base_url),
        openai_deployment("mini", provider.base_url),
        openai_deployment("big", provider.base_url, model="openai/gpt-4o"),
    ]
    budgets = [
        {
            "name": "shared",
            "scope": "user",
            "values": [OVERSHOOT_USER],
            "limit_usd": usd(OVERSHOOT_LIMIT),
            "window": "total",
        },
        {
            "name": "per_user",
            "scope": "user",
            "values": ["capped", "vip"],
            "limit_usd": usd(PER_USER_LIMIT),
            "window": "day",
            "overrides": {"vip": usd(VIP_LIMIT)},
        },
        {
            "name": "downgrade",
            "scope": "user",
            "values": ["downgrader"],
            "limit_usd": usd(DOWNGRADE_LIMIT),
            "window": "day",
            "action": "downgrade",
            "downgrade_to": "mini",
            "downgrade_below": 0.5,
        },
    ]
    costkit = {
        "redis_url": redis_server.url,
        "key_prefix": shared_prefix,
        "budgets": budgets,
        "breaker": {"enabled": True, "max_steps": 2},
    }
    path = config_writer(unique("budgets-replicas"), proxy_config(models, costkit))
    with running(ProxyServer(path), ProxyServer(path)) as proxies:
        yield proxies


@pytest.fixture
async def shared_store(redis_server: RedisServer, shared_prefix: str) -> AsyncIterator[RedisStore]:
    """A store reading the replicas' keys."""
    async with redis_store(redis_server.url, shared_prefix) as store:
        yield store


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    limits = httpx.Limits(max_connections=2 * CONCURRENCY, max_keepalive_connections=2 * CONCURRENCY)
    async with httpx.AsyncClient(timeout=120, limits=limits) as http:
        yield http


# --- a hard cap across replicas -------------------------------------------------------------


async def test_two_replicas_under_load_never_overshoot_a_shared_budget(
    replicas: tuple[ProxyServer, ...],
    flaky_provider: FakeProvider,
    shared_store: RedisStore,
    client: httpx.AsyncClient,
) -> None:
    """Two proxies on one Redis, 300 concurrent requests, 10% provider failures: spend stays under the cap,
    every hold is settled or released, and settled spend equals the cost headers to the nano-dollar."""
    flaky_provider.reset()
    key = f"budget:shared:total:{OVERSHOOT_USER}:"
    gate = asyncio.Semaphore(CONCURRENCY)

    async def one(index: int) -> httpx.Response:
        async with gate:
            return await chat(client, replicas[index % 2], model="flaky", user=OVERSHOOT_USER)

    started = time.monotonic()
    responses = await asyncio.gather(*(one(i) for i in range(REQUESTS)))
    elapsed = time.monotonic() - started
    by_status: dict[int, list[httpx.Response]] = {}
    for response in responses:
        by_status.setdefault(response.status_code, []).append(response)
    answered, refused, failed = by_status.get(200, []), by_status.get(429, []), by_status.get(500, [])
    assert set(by_status) <= {200, 429, 500}, {s: r[0].text for s, r in by_status.items()}

    worst = {nano(r.headers["x-costkit-max-cost-usd"]) for r in answered + failed}
    assert len(worst) == 1, worst  # same model, same prompt: one worst case
    worst_case = worst.pop()
    assert (worst_case - MAX_TOKENS * MINI_OUT) % MINI_IN == 0  # counted prompt tokens x in + max x out
    assert worst_case >= MINI_COST
    for response in refused:
        message = openai_error(response, 429, "budget_exceeded")
        assert f"Budget 'shared' exceeded for user '{OVERSHOOT_USER}'" in message
        assert "Retry-After" not in response.headers  # a total budget never resets
    for response in failed:
        assert nano(response.headers["x-costkit-cost-usd"]) == 0
    # Refused requests never reached the provider; admitted ones reached it once (no retries).
    stats = flaky_provider.stats()
    assert stats["chat_completions"] == len(answered) + len(failed)
    assert stats["by_status"] == {k: v for k, v in {"200": len(answered), "500": len(failed)}.items() if v}

    after_burst = await settled(shared_store, key)
    print(
        f"\n{REQUESTS} requests over 2 proxies at concurrency {CONCURRENCY} in {elapsed:.1f}s: "
        f"admitted {len(answered) + len(failed)} ({len(answered)} answered, {len(failed)} failed at the "
        f"provider), refused {len(refused)}; settled {after_burst.committed} n$ of {OVERSHOOT_LIMIT} n$ "
        f"(worst case {worst_case} n$, actual {MINI_COST} n$ per answer)"
    )
    assert after_burst.reserved == 0, after_burst
    assert after_burst.committed <= OVERSHOOT_LIMIT
    costs = [nano(r.headers["x-costkit-cost-usd"]) for r in answered]
    assert costs == [MINI_COST] * len(answered)
    assert after_burst.committed == sum(costs)
    assert 0 < len(answered) <= OVERSHOOT_LIMIT // MINI_COST
    assert failed, "the seeded provider failed no admitted call: the test did not exercise releases"

    # Top up one request at a time (each settled before the next) until the budget refuses:
    # then less than one worst case is left, so the cap was really used, not just respected.
    topped_up = 0
    for index in range(2 * OVERSHOOT_LIMIT // MINI_COST):
        response = await chat(client, replicas[index % 2], model="flaky", user=OVERSHOOT_USER)
        await settled(shared_store, key)
        if response.status_code == 429:
            openai_error(response, 429, "budget_exceeded")
            break
        assert response.status_code in (200, 500), response.text
        topped_up += response.status_code == 200
    else:
        pytest.fail("the budget never refused")
    final = await settled(shared_store, key)
    print(f"top-up: {topped_up} more answered; settled {final.committed} n$ of {OVERSHOOT_LIMIT} n$")
    assert final.reserved == 0
    assert OVERSHOOT_LIMIT - worst_case < final.committed <= OVERSHOOT_LIMIT
    assert final.committed == (len(answered) + topped_up) * MINI_COST


# --- what a client sees ---------------------------------------------------------------------


def seconds_to_utc_midnight() -> float:
    now = datetime.now(timezone.utc)
    midnight = (now + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    return (midnight - now).total_seconds()


async def test_budget_refusal_is_an_openai_429_with_retry_after_and_falling_remaining(
    replicas: tuple[ProxyServer, ...], shared_store: RedisStore, client: httpx.AsyncClient
) -> None:
    """Each answer's remaining header is the cap minus settled spend minus its own hold; then a 429 naming
    the budget, with Retry-After until the day's end."""
    key = "budget:per_user:day:capped:"
    spent, remaining = 0, []
    for _ in range(PER_USER_LIMIT // MINI_COST + 2):
        response = await chat(client, replicas[0], user="capped")
        await settled(shared_store, key)
        if response.status_code != 200:
            break
        worst = nano(response.headers["x-costkit-max-cost-usd"])
        remaining.append(nano(response.headers["x-costkit-budget-remaining-usd"]))
        assert remaining[-1] == PER_USER_LIMIT - spent - worst
        spent += nano(response.headers["x-costkit-cost-usd"])
    else:
        pytest.fail("the per-user budget never refused")
    assert len(remaining) >= 2
    assert remaining == sorted(remaining, reverse=True) and len(set(remaining)) == len(remaining)
    assert spent + worst > PER_USER_LIMIT >= spent  # refused exactly when the worst case no longer fits
    message = openai_error(response, 429, "budget_exceeded")
    assert "Budget 'per_user' exceeded for user 'capped'" in message
    assert "day (UTC)" in message
    assert abs(int(response.headers["Retry-After"]) - seconds_to_utc_midnight()) <= 5
    assert (await usage(shared_store, key)).committed == spent


async def test_per_value_override_raises_one_users_cap(
    replicas: tuple[ProxyServer, ...], shared_store: RedisStore, client: httpx.AsyncClient
) -> None:
    """overrides: {vip: ...} gives user 'vip' its own cap: the remaining header starts from it, not limit_usd."""
    response = await chat(client, replicas[1], user="vip")
    assert response.status_code == 200, response.text
    worst = nano(response.headers["x-costkit-max-cost-usd"])
    assert nano(response.headers["x-costkit-budget-remaining-usd"]) == VIP_LIMIT - worst
    assert worst < PER_USER_LIMIT < VIP_LIMIT
    spent = (await settled(shared_store, "budget:per_user:day:vip:")).committed
    assert spent == nano(response.headers["x-costkit-cost-usd"])


async def test_breaker_step_limit_is_a_429_through_the_proxy(
    replicas: tuple[ProxyServer, ...], client: httpx.AsyncClient
) -> None:
    """With max_steps: 2, the third call of an x-costkit-session is a 429 of type agent_step_limit."""
    session = {"x-costkit-session": unique("agent")}
    for step in range(2):
        response = await chat(client, replicas[step % 2], content=f"step {step}", headers=session)
        assert response.status_code == 200, response.text
    response = await chat(client, replicas[0], content="step 2", headers=session)
    message = openai_error(response, 429, "agent_step_limit")
    assert session["x-costkit-session"] in message and "3 calls (limit 2)" in message
    other = await chat(client, replicas[0], content="step 0", headers={"x-costkit-session": unique("agent")})
    assert other.status_code == 200, other.text


@pytest.fixture(scope="module")
def final_message_proxy(
    config_writer: Callable[[str, Mapping[str, Any]], Path], provider: FakeProvider
) -> Iterator[ProxyServer]:
    """A proxy whose breaker answers a tripped session with a final message (in-process store)."""
    costkit = {"breaker": {"enabled": True, "max_steps": 2, "on_trip": "final_message", "final_message": FINAL_MESSAGE}}
    path = config_writer(unique("budgets-final"), proxy_config([openai_deployment("mini", provider.base_url)], costkit))
    with running(ProxyServer(path)) as (proxy,):
        yield proxy


async def test_breaker_final_message_answers_200_at_zero_cost(
    final_message_proxy: ProxyServer, provider: FakeProvider, client: httpx.AsyncClient
) -> None:
    """With on_trip: final_message, the third call is a 200 carrying the message and x-costkit-stopped, at $0."""
    session = {"x-costkit-session": unique("agent")}
    calls = provider.stats()["chat_completions"]
    for step in range(2):
        response = await chat(client, final_message_proxy, content=f"step {step}", headers=session)
        assert response.status_code == 200, response.text
        assert "x-costkit-stopped" not in response.headers
    response = await chat(client, final_message_proxy, content="step 2", headers=session)
    assert response.status_code == 200, response.text
    assert response.headers["x-costkit-stopped"] == "agent_step_limit"
    assert response.json()["choices"][0]["message"]["content"] == "Stopped: it took too many steps."
    assert nano(response.headers["x-costkit-cost-usd"]) == 0
    assert provider.stats()["chat_completions"] == calls + 2  # the stopped call never reached it


async def test_downgrade_budget_switches_to_the_cheaper_group(
    replicas: tuple[ProxyServer, ...], shared_store: RedisStore, client: httpx.AsyncClient
) -> None:
    """Once less than downgrade_below of the cap is left, calls to 'big' are served by 'mini' and say so."""
    key = "budget:downgrade:day:downgrader:"
    served = []
    for _ in range(10):
        response = await chat(client, replicas[0], model="big", user="downgrader")
        assert response.status_code == 200, response.text
        served.append(response)
        await settled(shared_store, key)
        if "x-costkit-downgraded" in response.headers:
            break
    else:
        pytest.fail("never downgraded")
    *full_price, downgraded = served
    for response in full_price:
        assert response.headers["x-litellm-model-group"] == "big"
        assert nano(response.headers["x-costkit-cost-usd"]) == BIG_COST
    assert downgraded.headers["x-costkit-downgraded"] == "downgrade: big -> mini"
    # The body's `model` is what the client asked for: LiteLLM 1.108.7 restamps it on every response
    # (proxy/common_request_processing.py, _override_openai_response_model); these say what served it.
    assert downgraded.headers["x-litellm-model-group"] == "mini"
    assert downgraded.headers["x-litellm-model-name"] == "openai/gpt-4o-mini"
    assert "gpt-4o-mini" in downgraded.json()["choices"][0]["message"]["content"]  # the provider's echo
    assert nano(downgraded.headers["x-costkit-cost-usd"]) == MINI_COST
    # Exactly at the threshold: 'big' while at least half the cap was left, 'mini' from then on.
    assert len(full_price) == -(-(DOWNGRADE_LIMIT // 2) // BIG_COST)
    again = await chat(client, replicas[1], model="big", user="downgrader")
    assert again.headers.get("x-costkit-downgraded") == "downgrade: big -> mini"
    assert again.headers["x-litellm-model-group"] == "mini"
    await settled(shared_store, key)
    total = (await usage(shared_store, key)).committed
    assert total == len(full_price) * BIG_COST + 2 * MINI_COST


# --- a crashed replica ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def crash_prefix() -> str:
    return unique("budgets-crash")


@pytest.fixture(scope="module")
def crash_proxy(
    config_writer: Callable[[str, Mapping[str, Any]], Path],
    redis_server: RedisServer,
    provider: FakeProvider,
    crash_prefix: str,
) -> Iterator[ProxyServer]:
    """A proxy with a 3 s lease whose 'slow' group takes 30 s to answer (the test kills it)."""
    models = [
        openai_deployment("slow", provider.base_url, extra_headers={"x-fake-latency-ms": "30000"}),
        openai_deployment("mini", provider.base_url),
    ]
    costkit = {
        "redis_url": redis_server.url,
        "key_prefix": crash_prefix,
        "budget_settings": {"lease_s": LEASE_S},
        "budgets": [{"name": "crash", "scope": "user", "values": ["crasher"], "limit_usd": "1", "window": "total"}],
    }
    path = config_writer(unique("budgets-crash"), proxy_config(models, costkit))
    with running(ProxyServer(path)) as (proxy,):
        yield proxy


async def test_killed_replica_holds_count_as_spent_after_the_lease(
    crash_proxy: ProxyServer, redis_server: RedisServer, crash_prefix: str, client: httpx.AsyncClient
) -> None:
    """SIGKILL of a proxy mid-call leaves its holds in Redis; after lease_s they count as spent (the
    provider may have billed), so a crash only makes the budget stricter."""
    probe = await chat(client, crash_proxy, model="mini")  # same model and prompt: the worst case held
    assert probe.status_code == 200, probe.text
    worst = nano(probe.headers["x-costkit-max-cost-usd"])
    key, calls = "budget:crash:total:crasher:", 4
    async with redis_store(redis_server.url, crash_prefix) as store:
        sent = time.monotonic()
        pending = [asyncio.create_task(chat(client, crash_proxy, model="slow", user="crasher")) for _ in range(calls)]
        held = await wait_for(store, key, lambda u: u.reserved == calls * worst, timeout_s=20)
        assert held == LimitUsage(key, 0, calls * worst)
        pid = crash_proxy.pid
        assert pid is not None and os.getpgid(pid) == pid  # the proxy leads its own process group
        os.killpg(pid, signal.SIGKILL)
        crash_proxy.stop()  # reap it
        after_kill = await usage(store, key)
        if time.monotonic() - sent < LEASE_S - 0.5:  # nobody released them: held until the lease ends
            assert after_kill == LimitUsage(key, 0, calls * worst)
        outcomes = await asyncio.gather(*pending, return_exceptions=True)
        assert all(isinstance(o, httpx.TransportError) for o in outcomes), outcomes
        back = await wait_for(store, key, lambda u: u.reserved == 0, timeout_s=LEASE_S + 15)
        returned = time.monotonic()
        print(f"\nholds of the killed proxy became spend {returned - sent:.1f}s after the calls (lease {LEASE_S}s)")
        assert back == LimitUsage(key, calls * worst, 0)
        assert returned - sent >= LEASE_S - 0.2  # not before the lease ended
        await asyncio.sleep(0.5)
        assert await usage(store, key) == LimitUsage(key, calls * worst, 0)


# --- a Redis outage -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def outage_redis() -> Iterator[RedisServer]:
    """This module's own Redis, so a test can stop it and start it again on the same port."""
    with RedisServer(search=False) as server:
        yield server


@pytest.fixture(scope="module")
def outage_prefixes() -> dict[str, str]:
    return {policy: unique(f"budgets-{policy}") for policy in ("fail_open", "fail_closed")}


@pytest.fixture(scope="module")
def outage_proxies(
    config_writer: Callable[[str, Mapping[str, Any]], Path],
    outage_redis: RedisServer,
    provider: FakeProvider,
    outage_prefixes: dict[str, str],
) -> Iterator[tuple[ProxyServer, ...]]:
    """Proxy A (fail_open) and proxy B (fail_closed) on the outage Redis, each with a per-user budget."""
    proxies = []
    for policy in ("fail_open", "fail_closed"):
        costkit = {
            "redis_url": outage_redis.url,
            "key_prefix": outage_prefixes[policy],
            "budget_settings": {"on_store_error": policy},
            "budgets": [{"name": "spend", "scope": "user", "limit_usd": "1", "window": "total"}],
        }
        config = proxy_config([openai_deployment("mini", provider.base_url)], costkit)
        proxies.append(ProxyServer(config_writer(unique(f"budgets-{policy}"), config)))
    with running(*proxies) as started:
        yield started


async def test_redis_outage_fail_open_reconciles_once_and_fail_closed_answers_503(
    outage_proxies: tuple[ProxyServer, ...],
    outage_redis: RedisServer,
    outage_prefixes: dict[str, str],
    client: httpx.AsyncClient,
) -> None:
    """Redis down: fail_open answers 200, fail_closed 503 naming the policy, never a 500; Redis back:
    fail_open's spend of the outage is in Redis exactly once."""
    open_proxy, closed_proxy = outage_proxies
    user, key = "outage", "budget:spend:total:outage:"
    # fail_open's replica reads the user's budget before the outage, so it has an outage allowance.
    for proxy, before in ((open_proxy, user), (closed_proxy, "before")):
        response = await chat(client, proxy, user=before)
        assert response.status_code == 200, response.text
        assert "x-costkit-budget-remaining-usd" in response.headers
    for policy, before in (("fail_open", user), ("fail_closed", "before")):  # settled before the stop
        async with redis_store(outage_redis.url, outage_prefixes[policy]) as store:
            await settled(store, f"budget:spend:total:{before}:")

    outage_redis.stop_server()
    try:
        during = [await chat(client, open_proxy, user=user) for _ in range(4)]
        refused = [await chat(client, closed_proxy, user=user) for _ in range(2)]
    finally:
        outage_redis.restart()  # same port, empty data (the spend before the outage is gone)
    for response in during:
        assert response.status_code == 200, response.text
        assert nano(response.headers["x-costkit-cost-usd"]) == MINI_COST
    for response in refused:
        message = openai_error(response, 503, "budget_store_unavailable")
        assert "on_store_error: fail_closed" in message
        assert response.headers["Retry-After"] == "5"

    after = [await chat(client, open_proxy, user=user) for _ in range(3)]
    assert [r.status_code for r in after] == [200] * 3, [r.text for r in after]
    closed_again = await chat(client, closed_proxy, user=user)
    assert closed_again.status_code == 200, closed_again.text

    expected = sum(nano(r.headers["x-costkit-cost-usd"]) for r in during + after)
    async with redis_store(outage_redis.url, outage_prefixes["fail_open"]) as store:
        reconciled = await wait_for(store, key, lambda u: u.committed >= expected and u.reserved == 0)
        assert reconciled == LimitUsage(key, expected, 0)
        # Later traffic replays nothing twice.
        later = await chat(client, open_proxy, user="later")
        assert later.status_code == 200, later.text
        await settled(store, "budget:spend:total:later:")
        assert await usage(store, key) == LimitUsage(key, expected, 0)
    async with redis_store(outage_redis.url, outage_prefixes["fail_closed"]) as store:
        closed_spend = await settled(store, key)
        assert closed_spend == LimitUsage(key, nano(closed_again.headers["x-costkit-cost-usd"]), 0)


BOUNDED_USER, BOUNDED_LIMIT, OUTAGE_SHARE = "bounded", 100 * MINI_COST, 0.1


@pytest.fixture(scope="module")
def bounded_prefix() -> str:
    return unique("budgets-bounded")


@pytest.fixture(scope="module")
def bounded_proxy(
    config_writer: Callable[[str, Mapping[str, Any]], Path],
    outage_redis: RedisServer,
    provider: FakeProvider,
    bounded_prefix: str,
) -> Iterator[ProxyServer]:
    """A fail_open proxy on the outage Redis with a per-user total budget and the outage share."""
    costkit = {
        "redis_url": outage_redis.url,
        "key_prefix": bounded_prefix,
        "budget_settings": {"on_store_error": "fail_open", "outage_headroom_share": OUTAGE_SHARE},
        "budgets": [{"name": "bounded", "scope": "user", "limit_usd": usd(BOUNDED_LIMIT), "window": "total"}],
    }
    config = proxy_config([openai_deployment("mini", provider.base_url)], costkit)
    with running(ProxyServer(config_writer(unique("budgets-bounded"), config))) as (proxy,):
        yield proxy


async def test_redis_stopped_under_load_fail_open_spends_at_most_its_share_of_headroom(
    bounded_proxy: ProxyServer,
    outage_redis: RedisServer,
    bounded_prefix: str,
    client: httpx.AsyncClient,
) -> None:
    """Redis stopped mid-run under concurrent load: fail_open spends at most share x headroom, then 503s;
    after recovery the committed spend is <= the limit and equals every answered request's cost."""
    key = f"budget:bounded:total:{BOUNDED_USER}:"
    async with redis_store(outage_redis.url, bounded_prefix) as store:
        warm = [await chat(client, bounded_proxy, user=BOUNDED_USER) for _ in range(20)]
        assert [r.status_code for r in warm] == [200] * 20, [r.text for r in warm]
        before = await settled(store, key)
    headroom = BOUNDED_LIMIT - before.committed  # the replica saw at most this much left
    allowance = OUTAGE_SHARE * headroom

    gate, answered, stopped = asyncio.Semaphore(10), [0], asyncio.Event()

    async def one() -> httpx.Response:
        async with gate:
            response = await chat(client, bounded_proxy, user=BOUNDED_USER)
        answered[0] += 1
        if answered[0] == 10 and not stopped.is_set():  # mid-run: 10 answered, the rest still coming
            stopped.set()
            await asyncio.to_thread(outage_redis.shutdown_saving)
        return response

    try:
        load = await asyncio.gather(*(one() for _ in range(80)))
    finally:
        outage_redis.restart()  # same port, the data saved at shutdown
    statuses = {r.status_code for r in load}
    assert statuses <= {200, 503}, {r.status_code: r.text for r in load}
    during = [r for r in load if r.status_code == 200 and HEADER_REMAINING not in r.headers]
    refused = [r for r in load if r.status_code == 503]
    for response in refused:
        message = openai_error(response, 503, "budget_store_unavailable")
        assert "'bounded'" in message and "outage allowance for it is used up" in message
    outage_spend = sum(nano(r.headers["x-costkit-cost-usd"]) for r in during)

    after: list[httpx.Response] = []
    for _ in range(2 * BOUNDED_LIMIT // MINI_COST):  # fill the budget until it refuses
        response = await chat(client, bounded_proxy, user=BOUNDED_USER)
        after.append(response)
        if response.status_code == 429:
            break
        assert response.status_code == 200, response.text
    assert after[-1].status_code == 429, "the budget never refused after recovery"
    answered_all = [r for r in warm + load + after if r.status_code == 200]
    expected = sum(nano(r.headers["x-costkit-cost-usd"]) for r in answered_all)
    # One more request (another user) replays anything queued after the last one (the queue is
    # replayed at the next request, not on a timer).
    assert (await chat(client, bounded_proxy, user="bounded-later")).status_code == 200
    async with redis_store(outage_redis.url, bounded_prefix) as store:
        final = await wait_for(store, key, lambda u: u.committed >= expected and u.reserved == 0)
    print(
        f"\noutage under load: {len(load)} requests, {len(load) - len(during) - len(refused)} reserved before "
        f"the stop, {len(during)} admitted during the outage, {len(refused)} refused (503); outage spend "
        f"{outage_spend} n$ of an allowance of {allowance:.0f} n$ ({OUTAGE_SHARE} x {headroom} n$ headroom); "
        f"after recovery committed {final.committed} n$ of {BOUNDED_LIMIT} n$"
    )
    assert during, "no request was admitted during the outage: fail_open behaved as fail_closed"
    assert refused, "no request was refused during the outage: fail_open was not bounded"
    assert outage_spend <= allowance
    assert final == LimitUsage(key, expected, 0)
    assert final.committed <= BOUNDED_LIMIT


# --- start-up -------------------------------------------------------------------------------


def test_bad_budget_window_stops_the_proxy_naming_the_budget(
    config_writer: Callable[[str, Mapping[str, Any]], Path],
) -> None:
    """A budget with window '1 day' stops the proxy at start-up, naming the budget and the accepted windows."""
    costkit = {"budgets": [{"name": "daily_cap", "scope": "global", "limit_usd": "5", "window": "1 day"}]}
    path = config_writer(unique("budgets-bad"), proxy_config([mock_deployment("mini")], costkit))
    code, log = ProxyServer(path).start_expecting_failure(timeout_s=120)
    assert code != 0
    assert "costkit.budgets[0] (daily_cap).window: '1 day' is not a window" in log
    assert "1m, 1h, 1d, 7d, 30d, day, month or total" in log
