"""The agent circuit breaker with two tenants, through a real `litellm --config ...` proxy on real Redis.

The proxy authenticates with a ``general_settings.custom_auth`` written beside its config:
``sk-alice`` is key hash ``hash-alice`` (user alice, team team-a), ``sk-bob`` is ``hash-bob`` (bob,
team-b), the master key is the admin (a ``UserAPIKeyAuth``, not a dict: with LiteLLM's enterprise package
installed a dict falls through to the database check). Bob knows Alice's session ids (they are the client's choice)
and sends them, by header and by ``metadata.session_id``: his calls count under his own key and
never refuse Alice's first call, while Alice's own looping is still stopped.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

from costkit_litellm.store.redis import RedisStore
from costkit_litellm.testing.fake_provider import FakeProvider
from costkit_litellm.testing.proxy_server import ProxyPool, ProxyServer, base_config, enable_costkit, openai_deployment
from costkit_litellm.testing.redis_server import RedisServer
from costkit_litellm.testing.tenants import write_custom_auth

pytestmark = pytest.mark.redis

PROMPT_TOKENS, COMPLETION_TOKENS, MAX_TOKENS = 5, 20, 40
MINI_COST = PROMPT_TOKENS * 150 + COMPLETION_TOKENS * 600  # openai/gpt-4o-mini: 12_750 n$ an answer
MAX_STEPS = 4
# One answer's worst case (about 25_000 n$: 40 output tokens at 600) fits; after one answer's cost
# is committed the next worst case does not.
SPEND_CAP_USD = "0.00003"

TENANTS = {
    "sk-alice": {"api_key": "hash-alice", "user_id": "alice", "team_id": "team-a"},
    "sk-bob": {"api_key": "hash-bob", "user_id": "bob", "team_id": "team-b"},
}


@pytest.fixture(scope="module")
def provider() -> Iterator[FakeProvider]:
    """Answers at once with fixed token counts."""
    with FakeProvider(prompt_tokens=PROMPT_TOKENS, completion_tokens=COMPLETION_TOKENS) as fake:
        yield fake


@pytest.fixture(scope="module")
def prefix() -> str:
    return f"breaker-tenants-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def proxy(
    proxy_factory: ProxyPool,
    redis_server: RedisServer,
    provider: FakeProvider,
    prefix: str,
) -> Iterator[ProxyServer]:
    """A proxy with the custom auth, the breaker (4 steps, loops at 2, a tiny spend cap) on the session Redis."""
    config = base_config([openai_deployment("mini", provider.base_url)], num_retries=0)
    config["general_settings"] = {"custom_auth": write_custom_auth(proxy_factory.config_dir, TENANTS)}
    costkit = {
        "redis_url": redis_server.url,
        "key_prefix": prefix,
        "breaker": {"enabled": True, "max_steps": MAX_STEPS, "loop_threshold": 2, "max_spend_usd": SPEND_CAP_USD},
    }
    path = proxy_factory.write_config("breaker-tenants", enable_costkit(config, costkit))
    with ProxyServer(path) as server:
        yield server


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=60) as http:
        yield http


@pytest.fixture
async def store(redis_server: RedisServer, prefix: str) -> AsyncIterator[RedisStore]:
    """A store reading the proxy's keys."""
    redis = RedisStore(redis_server.url, prefix=prefix)
    await redis.start()
    try:
        yield redis
    finally:
        await redis.close()


async def chat(
    client: httpx.AsyncClient, proxy: ProxyServer, key: str, session: str, content: str, *, by_header: bool = True
) -> httpx.Response:
    """One call of ``key``'s agent in ``session`` (header ``x-costkit-session``, or ``metadata.session_id``)."""
    messages = [{"role": "user", "content": content}]
    body: dict[str, Any] = {"model": "mini", "max_tokens": MAX_TOKENS, "messages": messages}
    headers = {"Authorization": f"Bearer {key}"}
    if by_header:
        headers["x-costkit-session"] = session
    else:
        body["metadata"] = {"session_id": session}
    return await client.post(f"{proxy.base_url}/v1/chat/completions", headers=headers, json=body)


async def committed(store: RedisStore, key: str, amount: int, timeout_s: float = 30) -> int:
    """The spend committed under ``key`` once it reaches ``amount`` (success callbacks run just after the answer)."""
    deadline = time.monotonic() + timeout_s
    while (usage := (await store.usage([key]))[0]).committed < amount and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    return usage.committed


def refused(response: httpx.Response) -> str:
    """The error type of a 429 (asserting it is one)."""
    assert response.status_code == 429, response.text
    return str(response.json()["error"]["type"])


async def test_another_tenant_on_the_same_session_id_never_refuses_the_owners_first_call(
    proxy: ProxyServer, client: httpx.AsyncClient, store: RedisStore
) -> None:
    """Bob's steps, repeats and spend on Alice's session ids never refuse her first call; her own loop still trips."""
    steps, loop, spend = (f"alice-{name}-{uuid.uuid4().hex[:8]}" for name in ("steps", "loop", "spend"))
    prompt = "Plan the quarterly report"  # Alice's predictable first prompt

    async def alice_first_call(session: str, by_header: bool = True) -> None:
        response = await chat(client, proxy, "sk-alice", session, prompt, by_header=by_header)
        assert response.status_code == 200, response.text

    # Steps: Bob uses up the step limit of a session with Alice's id (his own, under his key).
    bob_steps = [await chat(client, proxy, "sk-bob", steps, f"bob step {i}") for i in range(MAX_STEPS + 1)]
    assert refused(bob_steps[-1]) == "agent_step_limit"
    await alice_first_call(steps)
    # Loop: Bob sends Alice's prompt twice on her id, by metadata.session_id; Alice's own repeat still trips.
    await chat(client, proxy, "sk-bob", loop, prompt, by_header=False)
    assert refused(await chat(client, proxy, "sk-bob", loop, prompt, by_header=False)) == "agent_loop_detected"
    await alice_first_call(loop, by_header=False)
    assert refused(await chat(client, proxy, "sk-alice", loop, prompt, by_header=False)) == "agent_loop_detected"
    # Spend: Bob's answer is committed to his session's cap, and his next call is refused.
    assert (await chat(client, proxy, "sk-bob", spend, "bob spends")).status_code == 200
    assert await committed(store, f"session:key=hash-bob:{spend}:spend", MINI_COST) == MINI_COST
    assert refused(await chat(client, proxy, "sk-bob", spend, "bob spends again")) == "agent_budget_exceeded"
    await alice_first_call(spend)
    assert await committed(store, f"session:key=hash-alice:{spend}:spend", MINI_COST) == MINI_COST  # hers alone
