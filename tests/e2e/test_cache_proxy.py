"""The semantic cache inside a real `litellm --config ...` proxy: hits at $0 without a provider call, tenant
and context isolation, what is never cached, TTL expiry, a Redis outage, and a bad config at start-up.

The proxy embeds with the local all-MiniLM-L6-v2 and verifies candidates with the shipped pair classifier
(no fake embeddings: whether a paraphrase hits is the point). With no database the master key is the only
API key, so tenants are told apart by OpenAI's ``user`` field: the proxies run with ``scope: end_user``.
Each proxy configuration starts once per module and writes under its own key prefix.
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
import redis.asyncio as aioredis

from costkit_litellm.cache.scope import tenant_tag
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
PROMPT_TOKENS, COMPLETION_TOKENS = 5, 20
MINI_COST = PROMPT_TOKENS * 150 + COMPLETION_TOKENS * 600  # openai/gpt-4o-mini: 12_750 n$ per answer
TTL_S = 4
QUESTION = "How do I reset my password?"
PARAPHRASE = "How can I reset my password?"

pytestmark = [pytest.mark.redis, pytest.mark.search]


def unique(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:8]}"


def nano(header: str) -> int:
    """A dollar header as nano-dollars."""
    return int(Decimal(header) / NANO)


def proxy_config(models: list[dict[str, Any]], costkit: Mapping[str, Any]) -> dict[str, Any]:
    """The pack on, no retries: a provider call is one call."""
    config = base_config(models, num_retries=0)
    config["router_settings"] = {"num_retries": 0, "disable_cooldowns": True}
    return enable_costkit(config, costkit)


async def chat(
    client: httpx.AsyncClient,
    proxy: ProxyServer,
    content: str = QUESTION,
    *,
    user: str,
    history: list[dict[str, str]] | None = None,
    headers: Mapping[str, str] | None = None,
    **params: Any,
) -> httpx.Response:
    """One chat completion at temperature 0 (unless ``temperature=None`` leaves it out)."""
    body: dict[str, Any] = {
        "model": "mini",
        "user": user,
        "temperature": 0,
        "messages": [*(history or []), {"role": "user", "content": content}],
        **params,
    }
    body = {k: v for k, v in body.items() if v is not None}
    response = await client.post(
        f"{proxy.base_url}/v1/chat/completions", headers={**proxy.auth_headers, **(headers or {})}, json=body
    )
    assert response.status_code == 200, response.text
    return response


def answer(response: httpx.Response) -> str:
    return str(response.json()["choices"][0]["message"]["content"])


class Entries:
    """Reads the cache entries a proxy wrote under its prefix (to wait for a store after the response)."""

    def __init__(self, url: str, prefix: str) -> None:
        self.client = aioredis.Redis.from_url(url, decode_responses=True)
        self.pattern = f"{prefix}:cache:v1:e:*"

    async def texts(self, user: str) -> list[str]:
        tenant = tenant_tag("end_user", user)
        found = []
        async for key in self.client.scan_iter(match=self.pattern, count=1000):
            fields = await self.client.hmget(key, ["tenant", "text"])
            if fields[0] == tenant:
                found.append(str(fields[1]))
        return found

    async def wait_for(self, user: str, text: str, timeout_s: float = 20) -> None:
        """Until ``user`` has an entry for ``text`` (stored by the success callback, just after the answer)."""
        deadline = time.monotonic() + timeout_s
        while text not in await self.texts(user):
            if time.monotonic() > deadline:
                pytest.fail(f"no cache entry for {text!r} of {user!r} after {timeout_s}s")
            await asyncio.sleep(0.05)


# --- fixtures -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def provider() -> Iterator[FakeProvider]:
    """A provider reporting fixed token counts, so each answer's price is exact."""
    with FakeProvider(prompt_tokens=PROMPT_TOKENS, completion_tokens=COMPLETION_TOKENS) as fake:
        yield fake


@pytest.fixture(scope="module")
def prefix() -> str:
    return unique("cache-e2e")


@pytest.fixture(scope="module")
def proxy(
    config_writer: Callable[[str, Mapping[str, Any]], Path],
    redis_server: RedisServer,
    provider: FakeProvider,
    prefix: str,
) -> Iterator[ProxyServer]:
    """The cache on the session Redis, scope end_user, a short TTL; warmed up (MiniLM loaded)."""
    costkit = {
        "redis_url": redis_server.url,
        "key_prefix": prefix,
        "cache": {"enabled": True, "scope": "end_user", "ttl_s": TTL_S},
    }
    path = config_writer(unique("cache"), proxy_config([openai_deployment("mini", provider.base_url)], costkit))
    with ProxyServer(path) as server:
        httpx.post(
            f"{server.base_url}/v1/chat/completions",
            headers=server.auth_headers,
            json={
                "model": "mini",
                "user": "warm-up",
                "temperature": 0,
                "messages": [{"role": "user", "content": "hi"}],
            },
            timeout=120,
        ).raise_for_status()
        yield server


@pytest.fixture
async def entries(redis_server: RedisServer, prefix: str) -> AsyncIterator[Entries]:
    reader = Entries(redis_server.url, prefix)
    yield reader
    await reader.client.aclose()


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=120) as http:
        yield http


def calls(provider: FakeProvider) -> int:
    return int(provider.stats()["chat_completions"])


# --- hits -----------------------------------------------------------------------------------


async def test_paraphrase_is_a_hit_at_zero_cost_without_a_provider_call(
    proxy: ProxyServer, provider: FakeProvider, entries: Entries, client: httpx.AsyncClient
) -> None:
    """A reworded second question gets the first answer: x-costkit-cache hit with its similarity, $0, and
    the provider is not called again; the exact question again is an exact hit at similarity 1.000."""
    user = unique("para")
    first = await chat(client, proxy, user=user)
    assert first.headers["x-costkit-cache"] == "miss"
    assert nano(first.headers["x-costkit-cost-usd"]) == MINI_COST
    await entries.wait_for(user, QUESTION)
    before = calls(provider)

    second = await chat(client, proxy, PARAPHRASE, user=user)
    assert second.headers["x-costkit-cache"] == "hit"
    assert second.headers["x-costkit-cache-match"] == "semantic"
    assert 0.85 <= float(second.headers["x-costkit-cache-similarity"]) < 1.0
    assert second.headers["x-costkit-cost-usd"] == "0.000000000"
    assert answer(second) == answer(first)
    assert second.json()["usage"]["total_tokens"] == 0

    third = await chat(client, proxy, f"  {QUESTION}", user=user)
    assert (third.headers["x-costkit-cache"], third.headers["x-costkit-cache-match"]) == ("hit", "exact")
    assert third.headers["x-costkit-cache-similarity"] == "1.000"
    assert calls(provider) == before


async def test_a_trap_is_not_served_the_cached_answer(
    proxy: ProxyServer, provider: FakeProvider, entries: Entries, client: httpx.AsyncClient
) -> None:
    """ "...unsafe..." after "...safe..." (similarity 0.98) is a miss: the verifier refuses the candidate."""
    user = unique("trap")
    await chat(client, proxy, "Is ibuprofen safe with alcohol?", user=user)
    await entries.wait_for(user, "Is ibuprofen safe with alcohol?")
    before = calls(provider)
    trap = await chat(client, proxy, "Is ibuprofen unsafe with alcohol?", user=user)
    assert trap.headers["x-costkit-cache"] == "miss"
    assert calls(provider) == before + 1
    assert "unsafe" in answer(trap)


async def test_one_users_entry_is_never_served_to_another(
    proxy: ProxyServer, provider: FakeProvider, entries: Entries, client: httpx.AsyncClient
) -> None:
    """With scope end_user (the tenant here: no DB means one key), user B's identical question misses
    user A's entry and reaches the provider; B's own repeat then hits B's entry."""
    alice, bob = unique("alice"), unique("bob")
    await chat(client, proxy, user=alice)
    await entries.wait_for(alice, QUESTION)
    before = calls(provider)
    theirs = await chat(client, proxy, user=bob)
    assert theirs.headers["x-costkit-cache"] == "miss"
    assert calls(provider) == before + 1
    await entries.wait_for(bob, QUESTION)
    again = await chat(client, proxy, user=bob)
    assert again.headers["x-costkit-cache"] == "hit"
    assert calls(provider) == before + 1


# --- never cached ---------------------------------------------------------------------------


@pytest.mark.parametrize("temperature", [None, 0.7])
async def test_omitted_or_nonzero_temperature_is_never_cached(
    proxy: ProxyServer, provider: FakeProvider, client: httpx.AsyncClient, temperature: float | None
) -> None:
    """Without temperature (1.0 at OpenAI) or at 0.7, the same question twice is skip, skip: two provider calls."""
    user = unique("temp")
    before = calls(provider)
    responses = [await chat(client, proxy, user=user, temperature=temperature) for _ in range(2)]
    assert [r.headers["x-costkit-cache"] for r in responses] == ["skip", "skip"]
    await asyncio.sleep(0.5)  # a wrongly stored answer would have been written by now
    third = await chat(client, proxy, user=user, temperature=temperature)
    assert third.headers["x-costkit-cache"] == "skip"
    assert calls(provider) == before + 3


async def test_client_opt_out_header_skips_the_cache(
    proxy: ProxyServer, provider: FakeProvider, entries: Entries, client: httpx.AsyncClient
) -> None:
    """x-costkit-cache: off on the request skips even a question the cache holds."""
    user = unique("optout")
    await chat(client, proxy, user=user)
    await entries.wait_for(user, QUESTION)
    before = calls(provider)
    response = await chat(client, proxy, user=user, headers={"x-costkit-cache": "off"})
    assert response.headers["x-costkit-cache"] == "skip"
    assert calls(provider) == before + 1


async def test_a_changed_earlier_turn_misses(
    proxy: ProxyServer, provider: FakeProvider, entries: Entries, client: httpx.AsyncClient
) -> None:
    """The same last question after another earlier turn is a miss; after the same turns it is a hit."""
    user = unique("turns")
    cats = [{"role": "user", "content": "Tell me about cats."}, {"role": "assistant", "content": "Cats purr."}]
    dogs = [{"role": "user", "content": "Tell me about dogs."}, {"role": "assistant", "content": "Dogs bark."}]
    follow_up = "How long do they live?"
    first = await chat(client, proxy, follow_up, user=user, history=cats)
    assert first.headers["x-costkit-cache"] == "miss"
    await entries.wait_for(user, follow_up)
    same = await chat(client, proxy, follow_up, user=user, history=cats)
    assert same.headers["x-costkit-cache"] == "hit"
    before = calls(provider)
    changed = await chat(client, proxy, follow_up, user=user, history=dogs)
    assert changed.headers["x-costkit-cache"] == "miss"
    assert calls(provider) == before + 1


@pytest.mark.parametrize(
    "params",
    [
        {"logit_bias": {"1734": -100}},
        {"presence_penalty": 1.0, "frequency_penalty": 0.5},
        {"reasoning_effort": "high", "allowed_openai_params": ["reasoning_effort"]},
        {"logprobs": True},
        {"service_tier": "flex"},
        {"prediction": {"type": "content", "content": "Go to Settings."}},
    ],
    ids=["logit_bias", "penalties", "reasoning_effort", "logprobs", "service_tier", "prediction"],
)
async def test_a_parameter_that_changes_the_answer_is_part_of_the_key(
    proxy: ProxyServer, provider: FakeProvider, entries: Entries, client: httpx.AsyncClient, params: dict[str, Any]
) -> None:
    """An answer stored for a request with ``logit_bias`` (or penalties, reasoning_effort...) at temperature 0 is
    never served to the same request without it (was an exact hit, issue 9 item 6); with it again it is a hit,
    and an allow-listed parameter (``timeout``, ``stream_options``) does not split the key."""
    user = unique("params")
    first = await chat(client, proxy, user=user, **params)
    assert first.headers["x-costkit-cache"] == "miss"
    await entries.wait_for(user, QUESTION)
    before = calls(provider)
    plain = await chat(client, proxy, user=user)
    assert plain.headers["x-costkit-cache"] == "miss", "served an answer given under other parameters"
    assert calls(provider) == before + 1
    again = await chat(client, proxy, user=user, timeout=30, **params)
    assert again.headers["x-costkit-cache"] == "hit"
    assert again.headers["x-costkit-cache-match"] == "exact"


async def test_entries_expire_after_the_ttl(
    proxy: ProxyServer, provider: FakeProvider, entries: Entries, client: httpx.AsyncClient
) -> None:
    """An entry hits within ttl_s and misses after it (a hit does not extend it)."""
    user = unique("ttl")
    await chat(client, proxy, user=user)
    stored_at = time.monotonic()
    await entries.wait_for(user, QUESTION)
    assert (await chat(client, proxy, user=user)).headers["x-costkit-cache"] == "hit"
    await asyncio.sleep(max(0.0, stored_at + TTL_S + 0.5 - time.monotonic()))
    before = calls(provider)
    expired = await chat(client, proxy, user=user)
    assert expired.headers["x-costkit-cache"] == "miss"
    assert calls(provider) == before + 1


# --- outage and start-up --------------------------------------------------------------------


@pytest.fixture(scope="module")
def outage_redis() -> Iterator[RedisServer]:
    """This module's own Redis with search, so a test can stop it and start it again."""
    with RedisServer(search=True) as server:
        yield server


@pytest.fixture(scope="module")
def outage_proxy(
    config_writer: Callable[[str, Mapping[str, Any]], Path], outage_redis: RedisServer, provider: FakeProvider
) -> Iterator[ProxyServer]:
    costkit = {"redis_url": outage_redis.url, "key_prefix": unique("cache-outage"), "cache": {"enabled": True}}
    path = config_writer(unique("cache-outage"), proxy_config([openai_deployment("mini", provider.base_url)], costkit))
    with ProxyServer(path) as server:
        yield server


async def test_redis_stopped_mid_test_requests_still_succeed_with_skip(
    outage_proxy: ProxyServer, outage_redis: RedisServer, provider: FakeProvider, client: httpx.AsyncClient
) -> None:
    """Redis down: every request is a 200 from the provider with x-costkit-cache: skip; Redis back: the
    cache works again (a miss, then a hit)."""
    user = unique("outage")
    await chat(client, outage_proxy, user=user)
    await asyncio.sleep(0.5)
    assert (await chat(client, outage_proxy, user=user)).headers["x-costkit-cache"] == "hit"

    outage_redis.stop_server()
    try:
        before = calls(provider)
        during = [await chat(client, outage_proxy, user=user) for _ in range(3)]
        assert [r.headers["x-costkit-cache"] for r in during] == ["skip"] * 3
        assert [nano(r.headers["x-costkit-cost-usd"]) for r in during] == [MINI_COST] * 3
        assert calls(provider) == before + 3
    finally:
        outage_redis.restart()  # same port, empty data

    deadline = time.monotonic() + 15
    statuses: list[str] = []
    while time.monotonic() < deadline and statuses[-1:] != ["hit"]:
        statuses.append((await chat(client, outage_proxy, user=user)).headers["x-costkit-cache"])
        await asyncio.sleep(0.5)
    assert "miss" in statuses and statuses[-1] == "hit", statuses


def test_bad_cache_config_stops_the_proxy_naming_the_key(
    config_writer: Callable[[str, Mapping[str, Any]], Path],
) -> None:
    """cache.scope: teams stops the proxy at start-up, naming costkit.cache.scope and the accepted scopes."""
    costkit = {"cache": {"enabled": True, "scope": "teams"}}
    path = config_writer(unique("cache-bad"), proxy_config([mock_deployment("mini")], costkit))
    code, log = ProxyServer(path).start_expecting_failure(timeout_s=120)
    assert code != 0
    assert "costkit.cache.scope: 'teams'" in log
    assert "'global', 'team', 'api_key', 'user' or 'end_user'" in log


async def test_a_reused_call_id_never_stores_one_users_answer_under_anothers_prompt(
    proxy: ProxyServer, entries: Entries, client: httpx.AsyncClient
) -> None:
    """Two users asking different questions at once with one ``x-litellm-call-id``: each later hit
    serves that user's own answer (pending entries are keyed by the pack's id, not the client's)."""
    shared = {"x-litellm-call-id": unique("shared-call-id")}
    pairs = [(unique("alice"), f"What is the capital of country number {i}?") for i in range(3)]
    pairs += [(unique("bob"), f"How many legs does animal number {i} have?") for i in range(3)]
    first = await asyncio.gather(*(chat(client, proxy, text, user=user, headers=shared) for user, text in pairs))
    for (user, text), response in zip(pairs, first, strict=True):
        assert response.headers["x-costkit-cache"] == "miss"
        await entries.wait_for(user, text)
        assert await entries.texts(user) == [text]  # nobody else's prompt was stored under this user
    for (user, text), response in zip(pairs, first, strict=True):
        again = await chat(client, proxy, text, user=user, headers=shared)
        assert again.headers["x-costkit-cache"] == "hit"
        assert answer(again) == answer(response)


# --- an answer from another group than the one asked for ------------------------------------------


@pytest.fixture(scope="module")
def rerouting_proxy(
    config_writer: Callable[[str, Mapping[str, Any]], Path], redis_server: RedisServer, provider: FakeProvider
) -> Iterator[ProxyServer]:
    """The cache in its default scope (the API key: every user of the master key shares it), groups
    whose answers say who wrote them, a per-end-user budget that downgrades ``big`` to ``small`` once
    anything is spent, and ``flaky`` (always a 500) falling back to ``small``."""

    def group(name: str, reply: str, **headers: str) -> dict[str, Any]:
        return openai_deployment(name, provider.base_url, extra_headers={"x-fake-reply": reply, **headers})

    models = [
        group("big", "BIG-MODEL-ANSWER"),
        group("small", "SMALL-MODEL-ANSWER"),
        group("flaky", "FLAKY-MODEL-ANSWER", **{"x-fake-fail": "500"}),
    ]
    costkit = {
        "redis_url": redis_server.url,
        "key_prefix": unique("cache-reroute"),
        "cache": {"enabled": True},
        "budgets": [
            {
                "name": "thrifty",
                "scope": "end_user",
                "limit_usd": 1,
                "window": "total",
                "action": "downgrade",
                "downgrade_to": "small",
                "downgrade_below": 1,
            }
        ],
    }
    config = proxy_config(models, costkit)
    config["router_settings"]["fallbacks"] = [{"flaky": ["small"]}]
    with ProxyServer(config_writer(unique("cache-reroute"), config)) as server:
        yield server


async def _ask(client: httpx.AsyncClient, proxy: ProxyServer, model: str, user: str, content: str) -> httpx.Response:
    body = {
        "model": model,
        "temperature": 0,
        "max_tokens": 50,
        "messages": [{"role": "user", "content": content}],
        "user": user,
    }
    response = await client.post(f"{proxy.base_url}/v1/chat/completions", headers=proxy.auth_headers, json=body)
    assert response.status_code == 200, response.text
    await asyncio.sleep(1.0)  # the answer is stored (or not) just after the response
    return response


async def test_a_downgraded_answer_is_never_served_for_the_model_asked_for(
    rerouting_proxy: ProxyServer, client: httpx.AsyncClient
) -> None:
    """A user whose budget downgrades ``big`` to ``small`` gets small's answer; another user asking
    ``big`` the same question (or a paraphrase) gets big's own answer, never the cached small one."""
    alice = unique("alice")
    question = f"What is the capital of Peru? ({unique('q')})"
    await _ask(client, rerouting_proxy, "big", alice, f"warm up {question}")  # spends: the next is downgraded
    downgraded = await _ask(client, rerouting_proxy, "big", alice, question)
    assert "x-costkit-downgraded" in downgraded.headers
    assert answer(downgraded) == "SMALL-MODEL-ANSWER"
    # the paraphrase first: small's entry, if stored, would answer it semantically; then the exact
    # question, which big's own answer to the paraphrase may serve (a hit, but big's)
    for n, text in enumerate((question.replace("What is", "Tell me"), question)):
        other = await _ask(client, rerouting_proxy, "big", unique("bob"), text)  # a fresh budget each
        assert answer(other) == "BIG-MODEL-ANSWER", other.headers.get("x-costkit-cache")
        if n == 0:
            assert other.headers["x-costkit-cache"] == "miss"


async def test_a_fallbacks_answer_is_never_served_for_the_group_that_failed(
    rerouting_proxy: ProxyServer, client: httpx.AsyncClient
) -> None:
    """``flaky`` fails and falls back to ``small``: the answer is small's, and it is not cached as
    flaky's (the same question to flaky misses again); small's own answers still are."""
    user = unique("carol")
    question = f"How many moons has Mars? ({unique('q')})"
    for _ in range(2):
        fallen = await _ask(client, rerouting_proxy, "flaky", user, question)
        assert answer(fallen) == "SMALL-MODEL-ANSWER"
        assert fallen.headers["x-costkit-cache"] == "miss"
    await _ask(client, rerouting_proxy, "small", user, question)
    for _ in range(5):  # its answer is stored just after the response: on a busy machine, a moment later
        again = await _ask(client, rerouting_proxy, "small", user, question)
        if again.headers["x-costkit-cache"] == "hit":
            break
    assert again.headers["x-costkit-cache"] == "hit"
