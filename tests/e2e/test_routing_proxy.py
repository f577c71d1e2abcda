"""Routing through a real proxy: the `auto` model picks a tier, and the cascade escalates on a failed check."""

from __future__ import annotations

import asyncio
import time
from decimal import Decimal
from typing import Any

import httpx
import pytest

from costkit_litellm.store import RedisStore
from costkit_litellm.testing.fake_provider import FakeProvider
from costkit_litellm.testing.proxy_server import (
    ProxyPool,
    ProxyServer,
    base_config,
    enable_costkit,
    mock_deployment,
    openai_deployment,
)
from costkit_litellm.testing.redis_server import RedisServer

NANO = Decimal("1e-9")
SIMPLE = "What is the capital of France?"
HARD = "Prove that the square root of 2 is irrational, step by step, and then analyze the implications."


@pytest.fixture(scope="module")
def routed(proxy_factory: ProxyPool) -> ProxyServer:
    """Two mock tiers behind `auto`, rules classifier, no cascade."""
    config = base_config(
        [
            mock_deployment("mini", "cheap answer", "openai/gpt-4o-mini"),
            mock_deployment("big", "premium answer", "openai/gpt-4o"),
        ]
    )
    costkit = {
        "routing": {
            "enabled": True,
            "tiers": [{"name": "economy", "model": "mini"}, {"name": "premium", "model": "big"}],
        },
        "metrics": {"tag_labels": ["feature"]},
    }
    return proxy_factory("routing-decisions", enable_costkit(config, costkit))


def cascade_config(economy: dict[str, Any], redis_url: str, **costkit: Any) -> dict[str, Any]:
    """Every `auto` request goes to premium (a mock) through a cascade from the ``economy`` deployment."""
    config = base_config([economy, mock_deployment("big", '{"answer": "premium"}', "openai/gpt-4o")], num_retries=0)
    section = {
        "redis_url": redis_url,
        "key_prefix": "routing-e2e",
        "routing": {
            "enabled": True,
            "threshold": 0.0,
            "tiers": [
                {"name": "economy", "model": economy["model_name"]},
                {"name": "premium", "model": "big", "cascade": True},
            ],
            "validators": {"regexes": ["APPROVED"]},
        },
        "budgets": [{"name": "cascade-total", "scope": "global", "limit_usd": 10, "window": "total"}],
        **costkit,
    }
    return enable_costkit(config, section)


@pytest.fixture(scope="module")
def cascading(proxy_factory: ProxyPool, fake_provider: FakeProvider, redis_server: RedisServer) -> ProxyServer:
    """Every `auto` request goes to premium through a cascade from a FakeProvider economy tier."""
    economy = openai_deployment("mini", fake_provider.base_url, "openai/gpt-4o-mini")
    return proxy_factory("routing-cascade", cascade_config(economy, redis_server.url))


def ask(proxy: ProxyServer, content: str, model: str = "auto", **extra: Any) -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": content}], "max_tokens": 50, **extra}
    return httpx.post(f"{proxy.base_url}/v1/chat/completions", headers=proxy.auth_headers, json=body, timeout=60)


async def ledger(redis_url: str, call_id: str) -> dict[str, dict[str, str]]:
    """The ledger entries of one call, by outcome (polling: callbacks run after the response)."""
    store = RedisStore(redis_url, prefix="routing-e2e")
    await store.start()
    try:
        deadline = time.monotonic() + 15
        while True:
            found = {
                e.entry_id.rsplit(":", 1)[1]: dict(e.fields)
                for e in await store.ledger_read()
                if e.fields.get("litellm.call_id") == call_id  # the client's id labels the pack's own
            }
            if "success" in found or time.monotonic() > deadline:
                return found
            await asyncio.sleep(0.1)
    finally:
        await store.close()


class TestDecisions:
    def test_simple_prompt_goes_to_economy(self, routed: ProxyServer) -> None:
        """A short factual question to `auto` is answered by the economy tier and says why."""
        response = ask(routed, SIMPLE)
        assert response.status_code == 200, response.text
        assert response.headers["x-costkit-tier"].startswith("economy (score")
        assert response.json()["choices"][0]["message"]["content"] == "cheap answer"

    def test_hard_prompt_goes_to_premium(self, routed: ProxyServer) -> None:
        """A multi-step proof goes to the premium tier."""
        response = ask(routed, HARD)
        assert response.headers["x-costkit-tier"].startswith("premium (score")
        assert response.json()["choices"][0]["message"]["content"] == "premium answer"

    def test_concrete_model_is_left_alone(self, routed: ProxyServer) -> None:
        """A request naming a model group is not routed."""
        response = ask(routed, HARD, model="mini")
        assert "x-costkit-tier" not in response.headers
        assert response.json()["choices"][0]["message"]["content"] == "cheap answer"


class TestCascade:
    async def test_passing_cheap_answer_is_served_at_its_cost(
        self, cascading: ProxyServer, fake_provider: FakeProvider, redis_server: RedisServer
    ) -> None:
        """A cheap answer that passes the checks is served: one provider call, the cheap tier's cost, once."""
        before = fake_provider.stats()["requests"]
        response = ask(cascading, "Reply with the word APPROVED please")
        assert response.status_code == 200, response.text
        assert response.headers["x-costkit-tier"] == "economy (cascade: the answer passed the checks)"
        assert "APPROVED" in response.json()["choices"][0]["message"]["content"]
        assert fake_provider.stats()["requests"] == before + 1
        entries = await ledger(redis_server.url, response.headers["x-litellm-call-id"])
        assert set(entries) == {"success"}
        cost = Decimal(response.headers["x-costkit-cost-usd"])
        assert cost > 0 and Decimal(entries["success"]["costkit.cost_nano"]) * NANO == cost
        assert entries["success"]["costkit.tier"] == "economy"

    async def test_failing_check_escalates_and_both_costs_are_recorded_once(
        self, cascading: ProxyServer, redis_server: RedisServer
    ) -> None:
        """A cheap answer that fails a check escalates to premium; the ledger has both calls, each once."""
        response = ask(cascading, "Say something")
        assert response.status_code == 200, response.text
        assert response.headers["x-costkit-tier"] == "premium (escalated: no match for 'APPROVED')"
        assert response.json()["choices"][0]["message"]["content"] == '{"answer": "premium"}'
        entries = await ledger(redis_server.url, response.headers["x-litellm-call-id"])
        assert set(entries) == {"escalated", "success"}
        assert entries["escalated"]["costkit.tier"] == "economy" and int(entries["escalated"]["costkit.cost_nano"]) > 0
        premium_cost = Decimal(response.headers["x-costkit-cost-usd"])
        assert Decimal(entries["success"]["costkit.cost_nano"]) * NANO == premium_cost

    async def test_invalid_json_escalates(self, cascading: ProxyServer, redis_server: RedisServer) -> None:
        """With response_format json_object, a cheap answer that is not JSON escalates ('invalid JSON')."""
        response = ask(cascading, "APPROVED; answer in JSON", response_format={"type": "json_object"})
        assert response.headers["x-costkit-tier"] == "premium (escalated: invalid JSON)"

    async def test_budget_commits_both_calls(self, cascading: ProxyServer, redis_server: RedisServer) -> None:
        """After an escalation the budget holds the cheap and the premium cost together, nothing reserved."""
        store = RedisStore(redis_server.url, prefix="routing-e2e")
        await store.start()
        try:
            # the earlier tests' requests settle after their responses: start from a quiet budget
            deadline = time.monotonic() + 15
            while True:
                [before] = await store.list_limits("budget:cascade-total:") or [None]
                if before is None or before.reserved == 0 or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.1)
            assert before is None or before.reserved == 0, f"earlier requests still hold {before.reserved} n$"
            response = ask(cascading, "Say something else")
            entries = await ledger(redis_server.url, response.headers["x-litellm-call-id"])
            expected = sum(int(e["costkit.cost_nano"]) for e in entries.values())
            deadline = time.monotonic() + 15
            while True:
                [after] = await store.list_limits("budget:cascade-total:")
                grown = after.committed - (before.committed if before else 0)
                if (grown == expected and after.reserved == 0) or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.1)
            assert grown == expected and after.reserved == 0
        finally:
            await store.close()


@pytest.fixture(scope="module")
def self_hosted_cascade(
    proxy_factory: ProxyPool, fake_provider: FakeProvider, redis_server: RedisServer
) -> ProxyServer:
    """A cascade whose economy tier is a self-hosted model LiteLLM has no price for, priced by pricing.models."""
    economy = openai_deployment("selfhosted", fake_provider.base_url, "hosted_vllm/mymodel")
    pricing = {"models": {"selfhosted": {"input_usd_per_million_tokens": 2, "output_usd_per_million_tokens": 8}}}
    return proxy_factory("routing-cascade-selfhosted", cascade_config(economy, redis_server.url, pricing=pricing))


async def test_an_escalated_cheap_answer_is_charged_at_its_configured_price(
    self_hosted_cascade: ProxyServer, redis_server: RedisServer
) -> None:
    """The cheap attempt of an escalated cascade, on a model priced only by pricing.models, is charged at that
    price (2 and 8 $/M tokens), not at LiteLLM's $0 for a model it does not know."""
    response = ask(self_hosted_cascade, "Say something")
    assert response.status_code == 200, response.text
    assert response.headers["x-costkit-tier"] == "premium (escalated: no match for 'APPROVED')"
    escalated = (await ledger(redis_server.url, response.headers["x-litellm-call-id"]))["escalated"]
    tokens_in, tokens_out = int(escalated["gen_ai.usage.input_tokens"]), int(escalated["gen_ai.usage.output_tokens"])
    assert tokens_in > 0 and tokens_out > 0
    assert int(escalated["costkit.cost_nano"]) == tokens_in * 2_000 + tokens_out * 8_000
