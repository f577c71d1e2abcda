"""SIGTERM to a real `litellm --config ...` proxy replica loses no spend.

Two replicas share one Redis behind a "load balancer" (the test's client: a request a replica does
not take is sent to the other). One replica gets SIGTERM under load: every answered request is in
the ledger exactly once and the budget committed equals what the provider billed. A replica
stopped during a Redis outage (fail_open) spools its queued commits and the next start replays them.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from test_budgets_proxy import running

from costkit_litellm.store import LimitUsage
from costkit_litellm.store.redis import RedisStore
from costkit_litellm.testing.fake_provider import FakeProvider
from costkit_litellm.testing.proxy_server import (
    ProxyServer,
    base_config,
    enable_costkit,
    openai_deployment,
    write_config,
)
from costkit_litellm.testing.redis_server import RedisServer

pytestmark = pytest.mark.redis

# LiteLLM's price of openai/gpt-4o-mini in nano-dollars per token, and the provider's fixed counts.
MINI_IN, MINI_OUT = 150, 600
PROMPT_TOKENS, COMPLETION_TOKENS = 5, 20
MINI_COST = PROMPT_TOKENS * MINI_IN + COMPLETION_TOKENS * MINI_OUT
BUDGET_KEY = "budget:spend:total:"


def _config(
    provider: FakeProvider, redis_url: str, prefix: str, spool: Path, policy: str = "fail_open"
) -> dict[str, Any]:
    config = base_config([openai_deployment("mini", provider.base_url)], num_retries=0)
    config["router_settings"] = {"num_retries": 0, "disable_cooldowns": True}
    costkit = {
        "redis_url": redis_url,
        "key_prefix": prefix,
        "budget_settings": {"on_store_error": policy},
        "budgets": [{"name": "spend", "scope": "user", "limit_usd": "1000", "window": "total"}],
        "shutdown": {"spool_dir": str(spool), "flush_timeout_s": 20},
    }
    return enable_costkit(config, costkit)


async def _chat(client: httpx.AsyncClient, proxy: ProxyServer, user: str, probe: str) -> httpx.Response:
    body = {
        "model": "mini",
        "max_tokens": 40,
        "messages": [{"role": "user", "content": "hello"}],
        "metadata": {"user_id": user, "probe": probe},
    }
    return await client.post(f"{proxy.base_url}/v1/chat/completions", headers=proxy.auth_headers, json=body)


async def _ledger(url: str, prefix: str) -> list[Mapping[str, str]]:
    store = RedisStore(url, prefix=prefix)
    await store.start()
    try:
        return [entry.fields for entry in await store.ledger_read()]
    finally:
        await store.close()


async def _budget(url: str, prefix: str, done: Callable[[LimitUsage], bool], timeout_s: float = 30) -> LimitUsage:
    store = RedisStore(url, prefix=prefix)
    await store.start()
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            found = await store.list_limits(BUDGET_KEY)
            current = LimitUsage(BUDGET_KEY, sum(u.committed for u in found), sum(u.reserved for u in found))
            if done(current) or time.monotonic() > deadline:
                return current
            await asyncio.sleep(0.1)
    finally:
        await store.close()


def _billed(provider: FakeProvider) -> int:
    stats = provider.stats()
    return int(stats["prompt_tokens"]) * MINI_IN + int(stats["completion_tokens"]) * MINI_OUT


async def test_sigterm_under_load_loses_no_request_and_no_spend(redis_server: RedisServer, tmp_path: Path) -> None:
    """SIGTERM to one of two replicas under load: every answered request is in the ledger exactly once,
    and the budget committed equals what the provider billed."""
    prefix = f"sigterm-{uuid.uuid4().hex[:8]}"
    env = {"GRACEFUL_SHUTDOWN_TIMEOUT": "15"}
    with FakeProvider(latency_s=0.3, prompt_tokens=PROMPT_TOKENS, completion_tokens=COMPLETION_TOKENS) as provider:
        config = _config(provider, redis_server.url, prefix, tmp_path / "spool")
        proxies = [ProxyServer(tmp_path / "replica.yaml", env=env) for _ in range(2)]
        write_config(tmp_path / "replica.yaml", config)
        with running(*proxies) as (first, second):
            answered: list[tuple[str, ProxyServer, httpx.Response]] = []
            refused_by_first = 0
            terminated, sigterm_sent = asyncio.Event(), asyncio.Event()
            drained_by_first = 0
            exit_code: list[int] = []

            async def request(index: int, client: httpx.AsyncClient) -> None:
                nonlocal refused_by_first, drained_by_first
                probe = uuid.uuid4().hex
                order = (first, second) if index % 2 == 0 else (second, first)
                for proxy in order:
                    try:
                        response = await _chat(client, proxy, "sigterm", probe)
                    except httpx.TransportError:  # the replica is gone or closing: the balancer tries the other
                        refused_by_first += proxy is first
                        continue
                    assert response.status_code == 200, response.text
                    answered.append((probe, proxy, response))
                    drained_by_first += proxy is first and sigterm_sent.is_set()
                    return
                raise AssertionError("no replica answered")

            async def load() -> None:
                limits = httpx.Limits(max_connections=24, max_keepalive_connections=24)
                async with httpx.AsyncClient(timeout=60, limits=limits) as client:
                    index = 0
                    pending: set[asyncio.Task[None]] = set()
                    deadline = time.monotonic() + 60
                    while time.monotonic() < deadline and (not terminated.is_set() or len(answered) < 160):
                        while len(pending) < 12:
                            pending.add(asyncio.create_task(request(index, client)))
                            index += 1
                        done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                        for task in done:
                            task.result()
                    for task in await asyncio.gather(*pending, return_exceptions=True):
                        assert task is None, task

            async def sigterm_first() -> None:
                while len(answered) < 40:
                    await asyncio.sleep(0.05)
                sigterm_sent.set()
                exit_code.append(await asyncio.to_thread(first.terminate, 60))
                terminated.set()

            await asyncio.gather(load(), sigterm_first())
            shutdown_log = first.log_text()

        by_first = sum(1 for _, proxy, _ in answered if proxy is first)
        # uvicorn re-raises SIGTERM once its shutdown is complete: -15 after a clean teardown.
        assert exit_code[0] in (0, -15) and "Application shutdown complete." in shutdown_log, shutdown_log[-3000:]
        assert "costkit: shutdown: replayed 0 queued budget operations" in shutdown_log
        assert by_first >= 20 and len(answered) - by_first >= 80
        assert drained_by_first > 0  # requests in flight at SIGTERM were answered, not cut

        usage = await _budget(redis_server.url, prefix, lambda u: u.reserved == 0)
        ledger = await _ledger(redis_server.url, prefix)
        successes = [f["costkit.attr.probe"] for f in ledger if f.get("costkit.outcome") == "success"]
        answered_probes = sorted(probe for probe, _, _ in answered)
        billed = _billed(provider)
        header_costs = sum(int(Decimal(r.headers["x-costkit-cost-usd"]) * 10**9) for _, _, r in answered)
        print(
            f"\nSIGTERM under load: answered {len(answered)} (first replica {by_first}, {drained_by_first} of them "
            "in flight at SIGTERM; "
            f"second {len(answered) - by_first}; {refused_by_first} sent to the first after SIGTERM went to the "
            f"second), ledger success events {len(successes)} ({len(set(successes))} distinct), provider calls "
            f"{provider.stats()['chat_completions']}, budget committed {usage.committed} n$ held {usage.reserved}, "
            f"provider billed {billed} n$, response headers {header_costs} n$"
        )
        assert sorted(successes) == answered_probes  # each answered request once, nothing else
        assert provider.stats()["chat_completions"] == len(answered)
        assert usage == LimitUsage(BUDGET_KEY, billed, 0)
        assert billed == len(answered) * MINI_COST == header_costs


async def test_sigterm_during_a_redis_outage_spools_and_the_next_start_replays(tmp_path: Path) -> None:
    """A replica stopped while Redis is down (fail_open) spools its queued commits; the next start
    replays them, so the budget equals what the provider billed during the outage."""
    prefix = f"spool-{uuid.uuid4().hex[:8]}"
    spool = tmp_path / "spool"
    with (
        RedisServer(search=False) as redis,
        FakeProvider(prompt_tokens=PROMPT_TOKENS, completion_tokens=COMPLETION_TOKENS) as provider,
    ):
        path = write_config(tmp_path / "replica.yaml", _config(provider, redis.url, prefix, spool))
        proxy = ProxyServer(path).start()
        try:
            async with httpx.AsyncClient(timeout=30) as client:
                assert (await _chat(client, proxy, "outage", "before")).status_code == 200
                await _budget(redis.url, prefix, lambda u: u.committed == MINI_COST and u.reserved == 0)
                redis.stop_server()
                provider.reset()
                during = [await _chat(client, proxy, "outage", f"during-{i}") for i in range(5)]
            assert [r.status_code for r in during] == [200] * 5, [r.text for r in during]
            code = proxy.terminate(60)
            log = proxy.log_text()
        finally:
            proxy.stop()
        assert code in (0, -15) and "Application shutdown complete." in log, log[-3000:]
        assert f"spooled 10 to {spool}/" in log, log[-3000:]
        assert len(list(spool.glob("*.jsonl"))) == 1

        redis.restart()  # same port, empty data: only the replay can put the outage's spend back
        with ProxyServer(path) as restarted:
            usage = await _budget(redis.url, prefix, lambda u: u.committed >= 5 * MINI_COST and u.reserved == 0)
            assert "spooled at an earlier shutdown are queued for replay" in restarted.log_text()
        billed = _billed(provider)
        print(
            f"\nSIGTERM during an outage: 5 answered, spooled 10 operations, replayed: committed {usage.committed} n$, "
            f"provider billed {billed} n$"
        )
        assert usage == LimitUsage(BUDGET_KEY, billed, 0)
        assert billed == 5 * MINI_COST
        assert list(spool.iterdir()) == []


async def test_readiness_follows_the_store_under_fail_closed(tmp_path: Path) -> None:
    """/costkit/readiness answers 200 while Redis answers, 503 naming the store (fail_closed) while it
    does not, and 200 again once it is back; under fail_open it stays 200 through the outage."""
    with RedisServer(search=False) as redis, FakeProvider() as provider:
        closed = ProxyServer(
            write_config(tmp_path / "closed.yaml", _config(provider, redis.url, "ready-c", tmp_path, "fail_closed"))
        )
        opened = ProxyServer(write_config(tmp_path / "open.yaml", _config(provider, redis.url, "ready-o", tmp_path)))
        with running(closed, opened):
            async with httpx.AsyncClient(timeout=10) as client:

                async def ready(proxy: ProxyServer) -> httpx.Response:
                    return await client.get(f"{proxy.base_url}/costkit/readiness")

                assert [(await ready(p)).status_code for p in (closed, opened)] == [200, 200]
                redis.stop_server()
                down = await ready(closed)
                assert down.status_code == 503, down.text
                assert down.json()["status"] == "store_unreachable" and down.json()["store"] == redis.url
                assert (await ready(opened)).status_code == 200
                redis.restart()
                deadline = time.monotonic() + 20
                while (await ready(closed)).status_code != 200:
                    assert time.monotonic() < deadline, "not ready again after Redis came back"
                    await asyncio.sleep(0.2)
