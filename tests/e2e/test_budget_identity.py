"""Budgets against a hostile client, through a real `litellm --config ...` proxy on real Redis:
reused call ids, a forged ``metadata.costkit`` on every route, and holds that outlive their lease.

Costs are exact: the fake provider reports fixed token counts, so each answer's price is known.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from costkit_litellm.store import LedgerEntry, Limit, LimitUsage
from costkit_litellm.store.redis import RedisStore
from costkit_litellm.testing.fake_provider import FakeProvider
from costkit_litellm.testing.proxy_server import ProxyServer, base_config, enable_costkit, openai_deployment
from costkit_litellm.testing.redis_server import RedisServer

pytestmark = pytest.mark.redis

NANO = Decimal("1e-9")
MINI_IN, MINI_OUT = 150, 600  # openai/gpt-4o-mini, n$ per token
PROMPT_TOKENS, COMPLETION_TOKENS, MAX_TOKENS = 5, 20, 40
MINI_COST = PROMPT_TOKENS * MINI_IN + COMPLETION_TOKENS * MINI_OUT  # 12_750 n$
LEASE_S = 1.0
SLOW_S = 2.5
VICTIM_KEY = "budget:spend:total:victim:"


def usd(nano: int) -> str:
    return str(Decimal(nano) * NANO)


def nano(header: str) -> int:
    return int(Decimal(header) / NANO)


@pytest.fixture(scope="module")
def provider() -> Iterator[FakeProvider]:
    """Answers in 0.1 s with fixed token counts."""
    with FakeProvider(latency_s=0.1, prompt_tokens=PROMPT_TOKENS, completion_tokens=COMPLETION_TOKENS) as fake:
        yield fake


@pytest.fixture(scope="module")
def slow_provider() -> Iterator[FakeProvider]:
    """Answers after 2.5 s: longer than the 1 s lease."""
    with FakeProvider(latency_s=SLOW_S, prompt_tokens=PROMPT_TOKENS, completion_tokens=COMPLETION_TOKENS) as fake:
        yield fake


@pytest.fixture(scope="module")
def prefix() -> str:
    return f"identity-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def proxy(
    config_writer: Callable[[str, Mapping[str, Any]], Path],
    redis_server: RedisServer,
    provider: FakeProvider,
    slow_provider: FakeProvider,
    prefix: str,
) -> Iterator[ProxyServer]:
    """One proxy with a per-user budget, a 1 s lease, a fast and a slow deployment and embeddings."""
    models = [
        openai_deployment("mini", provider.base_url),
        openai_deployment("slow", slow_provider.base_url),
        openai_deployment("embed", provider.base_url, model="openai/text-embedding-3-small"),
    ]
    costkit = {
        "redis_url": redis_server.url,
        "key_prefix": prefix,
        "budget_settings": {"lease_s": LEASE_S},
        "budgets": [{"name": "spend", "scope": "user", "limit_usd": "1", "window": "total"}],
    }
    config = base_config(models, num_retries=0)
    config["router_settings"] = {"num_retries": 0, "disable_cooldowns": True}
    server = ProxyServer(config_writer(f"identity-{uuid.uuid4().hex[:6]}", enable_costkit(config, costkit)))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def store(redis_server: RedisServer, prefix: str) -> AsyncIterator[RedisStore]:
    redis = RedisStore(redis_server.url, prefix=prefix, socket_timeout_s=10)
    await redis.start()
    try:
        yield redis
    finally:
        await redis.close()


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=64)) as http:
        yield http


async def chat(
    client: httpx.AsyncClient, proxy: ProxyServer, user: str, headers: Mapping[str, str] | None = None, **extra: Any
) -> httpx.Response:
    body: dict[str, Any] = {
        "model": "mini",
        "max_tokens": MAX_TOKENS,
        "messages": [{"role": "user", "content": "hello"}],
        "metadata": {"user_id": user},
        **extra,
    }
    return await client.post(
        f"{proxy.base_url}/v1/chat/completions", headers={**proxy.auth_headers, **(headers or {})}, json=body
    )


async def spend(store: RedisStore, key: str) -> LimitUsage:
    """Committed and reserved over every budget key under ``key`` (zeros when none)."""
    found = await store.list_limits(key)
    return LimitUsage(key, sum(u.committed for u in found), sum(u.reserved for u in found))


async def settled(store: RedisStore, key: str, done: Callable[[LimitUsage], bool], timeout_s: float = 30) -> LimitUsage:
    deadline = time.monotonic() + timeout_s
    while True:
        current = await spend(store, key)
        if done(current) or time.monotonic() > deadline:
            return current
        await asyncio.sleep(0.05)


async def ledger_for(store: RedisStore, client_call_id: str, count: int, timeout_s: float = 15) -> list[LedgerEntry]:
    deadline = time.monotonic() + timeout_s
    while True:
        found = [
            e
            for e in await store.ledger_read()
            if e.fields.get("litellm.call_id") == client_call_id or e.entry_id.startswith(client_call_id + ":")
        ]
        if len(found) >= count or time.monotonic() > deadline:
            return found
        await asyncio.sleep(0.1)


async def test_a_reused_call_id_is_charged_and_ledgered_every_time(
    proxy: ProxyServer, store: RedisStore, client: httpx.AsyncClient
) -> None:
    """15 sequential and 30 concurrent requests sharing one x-litellm-call-id are each charged and ledgered."""
    reused = {"x-litellm-call-id": str(uuid.uuid4())}
    key = "budget:spend:total:reuser:"
    sequential = [await chat(client, proxy, "reuser", reused) for _ in range(15)]
    concurrent = await asyncio.gather(*(chat(client, proxy, "reuser", reused) for _ in range(30)))
    answered = [r for r in [*sequential, *concurrent] if r.status_code == 200]
    assert len(answered) == 45, [r.text for r in [*sequential, *concurrent] if r.status_code != 200][:3]
    usage = await settled(store, key, lambda u: u.committed >= 45 * MINI_COST and u.reserved == 0)
    print(f"\nreused call id: 45 served, {usage.committed / MINI_COST:.0f} charged")
    assert usage == LimitUsage(key, 45 * MINI_COST, 0)
    entries = await ledger_for(store, reused["x-litellm-call-id"], 45)
    print(f"reused call id: {len(entries)} ledger events")
    assert len(entries) == 45
    assert len({e.entry_id for e in entries}) == 45


def forged_stash(amount: int) -> dict[str, Any]:
    """What the pack used to stash, naming the victim's budget, another user, team and key."""
    limit = {"key": VICTIM_KEY, "cap": 10**15, "expires_at": None, "window_s": None}
    return {
        "id": uuid.uuid4().hex,
        "owner": None,
        "context": {
            "call_id": "forged",
            "model": "mini",
            "user_id": "victim",
            "team_id": "victims",
            "api_key_hash": "forged-key",
        },
        "estimate_nano": 1,
        "headers": {},
        "state": {"budgets": {"limits": [limit], "amount": amount}, "routing": {"escalated_cost": amount}},
    }


async def test_a_forged_costkit_stash_changes_no_budget_and_no_ledger_identity(
    proxy: ProxyServer, store: RedisStore, client: httpx.AsyncClient
) -> None:
    """A forged metadata.costkit on chat, completions, embeddings and responses moves no budget, names no one."""
    await store.commit("victim-spend", 500_000, [_limit(VICTIM_KEY)])  # the key a forged stash names
    before = await spend(store, VICTIM_KEY)
    routes: dict[str, dict[str, Any]] = {
        "/v1/chat/completions": {
            "model": "mini",
            "max_tokens": MAX_TOKENS,
            "messages": [{"role": "user", "content": "hi"}],
        },
        "/v1/completions": {"model": "mini", "max_tokens": MAX_TOKENS, "prompt": "hi"},
        "/v1/embeddings": {"model": "embed", "input": "hi"},
        "/v1/responses": {"model": "mini", "max_output_tokens": MAX_TOKENS, "input": "hi"},
    }
    sent: dict[str, int] = {}
    for route, body in routes.items():
        for amount in (-999_999_980, 10**12):
            call_id = str(uuid.uuid4())
            forged = forged_stash(amount)
            payload = {
                **body,
                "metadata": {"costkit": forged, "requester_metadata": {"costkit": forged}},
                "litellm_metadata": {"costkit": forged},
            }
            response = await client.post(
                f"{proxy.base_url}{route}", headers={**proxy.auth_headers, "x-litellm-call-id": call_id}, json=payload
            )
            print(f"\n{route} amount {amount}: HTTP {response.status_code}")
            sent[call_id] = response.status_code
    await asyncio.sleep(2)  # the logging callbacks run after the response
    after = await spend(store, VICTIM_KEY)
    print(f"victim budget before {before}, after {after}")
    assert after == before
    for call_id, status in sent.items():
        for entry in await ledger_for(store, call_id, 1, timeout_s=2 if status != 200 else 15):
            assert entry.fields.get("user.id") != "victim", entry
            assert entry.fields.get("costkit.team") != "victims", entry
            assert entry.fields.get("costkit.api_key_hash") != "forged-key", entry


def _limit(key: str) -> Limit:
    return Limit(key, 10**15)


async def test_holds_that_outlive_their_lease_never_let_spend_pass_the_cap(
    proxy: ProxyServer, store: RedisStore, client: httpx.AsyncClient
) -> None:
    """With lease_s 1 and 2.5 s calls under concurrency, committed spend never passes the budget's cap."""
    probe = await chat(client, proxy, "lease-probe", model="slow", max_tokens=COMPLETION_TOKENS)
    assert probe.status_code == 200, probe.text
    worst = nano(probe.headers["x-costkit-max-cost-usd"])
    user, key = "leaser", "budget:spend:total:leaser:"
    cap = 1_000_000_000  # the budget's $1
    first = await chat(client, proxy, user)
    assert first.status_code == 200, first.text
    await settled(store, key, lambda u: u.committed > 0 and u.reserved == 0)
    [limit] = await store.list_limits(key)
    await store.commit("leaser-before", cap - 3 * worst - limit.committed, [_limit(limit.key)])  # room for 3 holds

    async def wave() -> list[httpx.Response]:
        return list(
            await asyncio.gather(
                *(chat(client, proxy, user, model="slow", max_tokens=COMPLETION_TOKENS) for _ in range(6))
            )
        )

    waves = []
    for _ in range(4):  # a new wave once the last one's leases expired, while its calls still run
        waves.append(asyncio.ensure_future(wave()))
        await asyncio.sleep(LEASE_S + 0.3)
    responses = [r for done in await asyncio.gather(*waves) for r in done]
    usage = await settled(store, key, lambda u: u.reserved == 0, timeout_s=20)
    await asyncio.sleep(1)
    usage = await spend(store, key)
    served = sum(r.status_code == 200 for r in responses)
    ratio = (usage.committed - (cap - 3 * worst)) / (3 * worst)
    print(
        f"\nlease 1 s, 2.5 s calls: {served} served, headroom used {ratio:.2f}x, "
        f"committed {usage.committed} of cap {cap}"
    )
    assert usage.committed <= cap
    assert served >= 3
