"""Two request fields LiteLLM honours that would let a client spend without the pack counting it,
through a real proxy on FakeProvider and a real Redis: ``custom_llm_provider`` (LiteLLM priced the
answer as the named provider's model, often at $0, so every commit was $0 and no budget capped
anything) is refused with a 400 before any hold or provider call; ``"no-log": true`` (LiteLLM skipped
the pack's logging callbacks with every other logger's, so a served request committed nothing and left
no ledger event) is accounted like any other request."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from costkit_litellm.testing.fake_provider import FakeProvider
from costkit_litellm.testing.proxy_server import ProxyServer, base_config, enable_costkit, openai_deployment
from costkit_litellm.testing.redis_server import RedisServer, _Resp

pytestmark = pytest.mark.redis

IN_NANO, OUT_NANO = 150, 600  # gpt-4o-mini: $0.15 / $0.60 per million tokens, in n$ per token


@pytest.fixture(scope="module")
def provider() -> Iterator[FakeProvider]:
    with FakeProvider(prompt_tokens=7, completion_tokens=30) as fake:
        yield fake


@pytest.fixture(scope="module")
def prefix() -> str:
    return f"overrides-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def proxy(
    config_writer: Callable[[str, Mapping[str, Any]], Path],
    redis_server: RedisServer,
    provider: FakeProvider,
    prefix: str,
) -> Iterator[ProxyServer]:
    deployments = [
        openai_deployment("mini", provider.base_url),
        openai_deployment("embed", provider.base_url, model="openai/text-embedding-3-small"),
    ]
    budgets = [{"name": "cap", "scope": "global", "limit_usd": "1", "window": "total"}]
    costkit = {"redis_url": redis_server.url, "key_prefix": prefix, "budgets": budgets}
    config = enable_costkit(base_config(deployments, num_retries=0), costkit)
    with ProxyServer(config_writer("client-overrides", config)) as server:
        yield server


def budget_state(server: RedisServer, prefix: str) -> tuple[int, int]:
    """(committed, held) n$ of the global budget, from its hash in Redis ((0, 0) before any write)."""
    client = _Resp(server.port)
    try:
        names = client.call("KEYS", f"{prefix}:{{lim:budget:cap:*}}:s")
        assert isinstance(names, list) and len(names) <= 1, names
        if not names:
            return 0, 0
        raw = client.call("HGETALL", names[0])
        assert isinstance(raw, list)
        fields = {raw[i].decode(): raw[i + 1].decode() for i in range(0, len(raw), 2)}
        return int(fields.get("c", 0)), int(fields.get("r", 0))
    finally:
        client.close()


def ledger_length(server: RedisServer, prefix: str) -> int:
    client = _Resp(server.port)
    try:
        return int(str(client.call("XLEN", f"{prefix}:{{ledger}}")))
    finally:
        client.close()


def billed_nano(provider: FakeProvider, since: int) -> int:
    """What the provider billed for the chat answers it recorded after the first ``since``, in n$."""
    return sum(
        r.usage["prompt_tokens"] * IN_NANO + r.usage["completion_tokens"] * OUT_NANO
        for r in provider.recorded()[since:]
        if r.usage
    )


def settle(check: Callable[[], bool], timeout_s: float = 15) -> None:
    """Wait for the success callbacks (they run after the answer) to make ``check`` true."""
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "the pack's callbacks did not settle in time"
        time.sleep(0.2)


def sdk(proxy: ProxyServer) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=f"{proxy.base_url}/v1", api_key=proxy.auth_headers["Authorization"].split()[-1], max_retries=0
    )


@pytest.mark.parametrize("provider_name", ["hosted_vllm", "lm_studio", "openai"])
def test_a_chat_naming_its_own_provider_is_refused_before_any_hold(
    proxy: ProxyServer, provider: FakeProvider, redis_server: RedisServer, prefix: str, provider_name: str
) -> None:
    """A chat completion sent with custom_llm_provider (the openai SDK's extra_body puts it at the top of
    the body) answers 400 provider_override_not_allowed, reaches no provider and holds nothing, whichever
    provider it names (even the deployment's own)."""
    calls, before = len(provider.recorded()), budget_state(redis_server, prefix)
    with sdk(proxy) as client, pytest.raises(openai.BadRequestError) as raised:
        client.chat.completions.create(
            model="mini",
            max_tokens=50,
            messages=[{"role": "user", "content": "hi"}],
            extra_body={"custom_llm_provider": provider_name},
        )
    assert "provider_override_not_allowed" in raised.value.response.text
    assert "custom_llm_provider" in raised.value.message
    assert len(provider.recorded()) == calls
    assert budget_state(redis_server, prefix) == before


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/completions", {"model": "mini", "prompt": "hi", "max_tokens": 20, "stream": True}),
        ("/v1/embeddings", {"model": "embed", "input": "hi"}),
    ],
)
def test_the_other_priced_routes_refuse_it_too(
    proxy: ProxyServer, provider: FakeProvider, path: str, body: dict[str, Any]
) -> None:
    """A text completion (streamed) and an embedding naming custom_llm_provider answer 400, not a $0 commit."""
    calls = len(provider.recorded())
    response = httpx.post(
        f"{proxy.base_url}{path}",
        headers=proxy.auth_headers,
        json={**body, "custom_llm_provider": "hosted_vllm"},
        timeout=60,
    )
    assert response.status_code == 400, response.text
    assert "provider_override_not_allowed" in response.text
    assert len(provider.recorded()) == calls


def test_no_log_requests_are_committed_at_their_bill_and_in_the_ledger(
    proxy: ProxyServer, provider: FakeProvider, redis_server: RedisServer, prefix: str
) -> None:
    """Five chat completions sent with "no-log": true are each committed at what the provider billed (the
    budget's spend grows by exactly their bill, no hold is left to expire) and each is a ledger event."""
    calls = len(provider.recorded())
    committed, _ = budget_state(redis_server, prefix)
    events = ledger_length(redis_server, prefix)
    with sdk(proxy) as client:
        for i in range(5):
            client.chat.completions.create(
                model="mini",
                max_tokens=100,
                messages=[{"role": "user", "content": f"no log {i}"}],
                extra_body={"no-log": True},
            )
    bill = billed_nano(provider, calls)
    assert len(provider.recorded()) == calls + 5 and bill > 0
    settle(lambda: budget_state(redis_server, prefix) == (committed + bill, 0))
    settle(lambda: ledger_length(redis_server, prefix) == events + 5)
