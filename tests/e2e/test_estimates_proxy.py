"""Worst-case estimates that bound the bill (issue 9 item 3), through a real proxy on a real Redis.

The provider writes every output token it may (``fill_output``): the request's cap, or the model's
whole maximum when there is none. Each case sends requests one by one under a budget of about
2.5 answers until it is refused; what the provider billed (priced at LiteLLM's price map) never
exceeds the limit. On the old code each case overspent: the hold missed the ``prompt``, the
``tools``, the model's real maximum output, the fallback's price or the priority tier's.
"""

from __future__ import annotations

import contextlib
import io
import json
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from costkit_litellm.cli import main as costkit_main
from costkit_litellm.testing.fake_provider import FakeProvider, RecordedRequest
from costkit_litellm.testing.proxy_server import ProxyServer, base_config, enable_costkit, openai_deployment
from costkit_litellm.testing.redis_server import RedisServer

pytestmark = pytest.mark.redis

NANO = Decimal("1e-9")
# LiteLLM's price map in nano-dollars per token (standard and priority tiers).
PRICES = {
    ("gpt-4o-mini", None): (150, 600),
    ("gpt-4o-mini", "priority"): (250, 1_000),
    ("gpt-4o", None): (2_500, 10_000),
}
MODEL_MAX_OUTPUT = 16_384  # gpt-4o-mini and gpt-4o
INJECTED = 300
CASES = {
    # feature: the limit in nano-dollars, about 2.5 answers of that case
    "long_prompt": 3_750_000,  # 10,000 prompt tokens x 150 + 1 x 600 per answer
    "big_tools": 26_000_000,  # ~5,000 tool tokens x 150 + 16,384 x 600 per answer
    "fallback": 1_100_000,  # gpt-4o: ~2 x 2,500 + 40 x 10,000 per answer
    "priority": 115_000,  # priority tier: ~2 x 250 + 40 x 1,000 per answer
    "injected": 500_000,  # 300 injected output tokens x 600 per answer
    "dropped_cap": 25_000_000,  # max_tokens on /v1/responses caps nothing: 16,384 x 600 per answer
    "dropped_cap_injected": 500_000,  # the same, with inject_default: 300 x 600 per answer
    "context_fallback": 1_100_000,  # the request's own context_window_fallbacks to gpt-4o, as "fallback"
    "extra_body_cap": 6_000_000,  # extra_body's max_tokens 4,000 goes over the top-level 1: 4,000 x 600
    "bridged": 6_000_000,  # chat to openai/responses/...: max_output_tokens 4,000 wins there
}


def usd(nano: int) -> str:
    return str(Decimal(nano) * NANO)


def billed_nano(request: RecordedRequest) -> int:
    """What a provider request cost, from what the fake provider billed and LiteLLM's prices."""
    usage = request.usage or {}
    model = str(request.body.get("model")).removeprefix("openai/")
    inp, out = PRICES[(model, usage.get("service_tier"))]
    return int(usage["prompt_tokens"]) * inp + int(usage["completion_tokens"]) * out


@pytest.fixture(scope="module")
def provider() -> Iterator[FakeProvider]:
    """A provider that writes the whole output it is allowed."""
    with FakeProvider(fill_output=True, max_output_tokens=MODEL_MAX_OUTPUT) as fake:
        yield fake


def _config(provider: FakeProvider, redis_url: str, pricing: Mapping[str, Any]) -> dict[str, Any]:
    models = [
        openai_deployment("mini", provider.base_url),
        openai_deployment("big", provider.base_url, model="openai/gpt-4o"),
        openai_deployment("flaky-mini", provider.base_url, extra_headers={"x-fake-fail": "429"}),
        openai_deployment("short-mini", provider.base_url, extra_headers={"x-fake-fail": "400"}),
        openai_deployment("bridged-mini", provider.base_url, model="openai/responses/gpt-4o-mini"),
    ]
    config = base_config(models, num_retries=0)
    config["router_settings"] = {"num_retries": 0, "disable_cooldowns": True, "fallbacks": [{"flaky-mini": ["big"]}]}
    budgets = [
        {"name": f"cap_{f}", "scope": "tag:feature", "values": [f], "limit_usd": usd(n), "window": "total"}
        for f, n in CASES.items()
    ]
    costkit = {
        "redis_url": redis_url,
        "key_prefix": f"estimates-{uuid.uuid4().hex[:8]}",
        "pricing": dict(pricing),
        "budgets": budgets,
    }
    return enable_costkit(config, costkit)


@pytest.fixture(scope="module")
def proxy(
    config_writer: Callable[[str, Mapping[str, Any]], Path], provider: FakeProvider, redis_server: RedisServer
) -> Iterator[ProxyServer]:
    """The pack with the default output bound (the model's maximum)."""
    with ProxyServer(config_writer("estimates", _config(provider, redis_server.url, {}))) as server:
        yield server


@pytest.fixture(scope="module")
def injecting_proxy(
    config_writer: Callable[[str, Mapping[str, Any]], Path], provider: FakeProvider, redis_server: RedisServer
) -> Iterator[ProxyServer]:
    """The pack with ``output_bound: inject_default``."""
    pricing = {"output_bound": "inject_default", "default_max_output_tokens": INJECTED}
    with ProxyServer(config_writer("estimates-inject", _config(provider, redis_server.url, pricing))) as server:
        yield server


def _settled(proxy: ProxyServer, budget: str, timeout_s: float = 15.0) -> None:
    """Wait until the budget holds nothing (LiteLLM settles a call in a background task after answering)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            costkit_main(["budgets", "show", budget, "--format", "json", "--config", str(proxy.config_path)])
        rows = [json.loads(line) for line in out.getvalue().splitlines() if line]
        if rows and all(row["reserved"] == 0 for row in rows):
            return
        time.sleep(0.05)
    raise AssertionError(f"{budget} still holds after {timeout_s}s")


def _run(proxy: ProxyServer, provider: FakeProvider, path: str, body: dict[str, Any], feature: str) -> list[int]:
    """Send the request until refused (at most 8 times, each after the last settled); checks the bill."""
    provider.reset()
    statuses = []
    with httpx.Client(base_url=proxy.base_url, headers=proxy.auth_headers, timeout=60) as client:
        for _ in range(8):
            response = client.post(path, json={**body, "metadata": {"feature": feature}})
            statuses.append(response.status_code)
            if response.status_code != 200:
                break
            _settled(proxy, f"cap_{feature}")
    billed = sum(billed_nano(r) for r in provider.recorded() if r.status == 200 and r.usage)
    assert statuses.count(200) >= 2, statuses
    assert statuses[-1] == 429, statuses
    assert billed <= CASES[feature], (billed, CASES[feature], statuses)
    return statuses


class TestEstimatesBoundTheBill:
    def test_long_prompt_on_text_completions(self, proxy: ProxyServer, provider: FakeProvider) -> None:
        """A 40k-character prompt on /v1/completions with max_tokens 1 is held at its prompt: the bill stays capped."""
        body = {"model": "mini", "prompt": "lorem ipsum " * 3334, "max_tokens": 1}
        _run(proxy, provider, "/v1/completions", body, "long_prompt")

    def test_big_tools_and_no_max_tokens(self, proxy: ProxyServer, provider: FakeProvider) -> None:
        """Big tools and no max_tokens are held at the tools' tokens and the model's whole maximum output."""
        tools = [
            {
                "type": "function",
                "function": {
                    "name": f"tool_{i}",
                    "description": "Looks something up in a very large catalogue of things. " * 10,
                    "parameters": {"type": "object", "properties": {"q": {"type": "string"}}},
                },
            }
            for i in range(30)
        ]
        body = {"model": "mini", "messages": [{"role": "user", "content": "hi"}], "tools": tools}
        _run(proxy, provider, "/v1/chat/completions", body, "big_tools")
        assert all(r.body.get("max_tokens") is None for r in provider.recorded() if r.status == 200)

    def test_fallback_to_a_dearer_model(self, proxy: ProxyServer, provider: FakeProvider) -> None:
        """A request whose group falls back from mini to gpt-4o is held at gpt-4o's price."""
        body = {"model": "flaky-mini", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 40}
        _run(proxy, provider, "/v1/chat/completions", body, "fallback")
        served = {r.body.get("model") for r in provider.recorded() if r.status == 200}
        assert served == {"gpt-4o"}

    def test_priority_service_tier(self, proxy: ProxyServer, provider: FakeProvider) -> None:
        """service_tier priority is held at the priority price, which is what the provider bills."""
        body = {
            "model": "mini",
            "messages": [{"role": "user", "content": "hi"}],
            "max_tokens": 40,
            "service_tier": "priority",
        }
        _run(proxy, provider, "/v1/chat/completions", body, "priority")

    def test_inject_default_caps_the_request(self, injecting_proxy: ProxyServer, provider: FakeProvider) -> None:
        """output_bound inject_default writes the default cap into a request without one, and holds exactly that."""
        body = {"model": "mini", "messages": [{"role": "user", "content": "hi"}]}
        _run(injecting_proxy, provider, "/v1/chat/completions", body, "injected")
        sent = [r.body.get("max_tokens") for r in provider.recorded() if r.status == 200]
        assert sent and set(sent) == {INJECTED}

    def test_a_cap_the_route_drops_bounds_nothing(self, proxy: ProxyServer, provider: FakeProvider) -> None:
        """max_tokens 1 on /v1/responses (LiteLLM drops it; the provider writes its whole maximum) is held at
        the model's maximum output: the bill stays capped (it was held at 1 token and spent 20x the cap)."""
        body = {"model": "mini", "input": "hi", "max_tokens": 1, "max_completion_tokens": 1}
        _run(proxy, provider, "/v1/responses", body, "dropped_cap")
        assert all(r.body.get("max_output_tokens") is None for r in provider.recorded() if r.status == 200)

    def test_inject_default_writes_the_cap_a_route_honours(
        self, injecting_proxy: ProxyServer, provider: FakeProvider
    ) -> None:
        """With inject_default, /v1/responses with only a dropped max_tokens gets max_output_tokens injected."""
        body = {"model": "mini", "input": "hi", "max_tokens": 1}
        _run(injecting_proxy, provider, "/v1/responses", body, "dropped_cap_injected")
        sent = [r.body.get("max_output_tokens") for r in provider.recorded() if r.status == 200]
        assert sent and set(sent) == {INJECTED}

    def test_a_cap_in_extra_body_goes_over_the_top_level_one(self, proxy: ProxyServer, provider: FakeProvider) -> None:
        """max_tokens 1 with extra_body max_tokens 4,000 (LiteLLM sends the provider 4,000) is held at 4,000:
        the bill stays capped (it was held at 1 token and billed 1,230x the hold)."""
        body = {"model": "mini", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}
        _run(proxy, provider, "/v1/chat/completions", {**body, "extra_body": {"max_tokens": 4000}}, "extra_body_cap")
        assert {r.body.get("max_tokens") for r in provider.recorded() if r.status == 200} == {4000}

    def test_chat_bridged_to_responses_is_priced_and_capped(self, proxy: ProxyServer, provider: FakeProvider) -> None:
        """A chat request to an openai/responses/gpt-4o-mini deployment is held at gpt-4o-mini's price (it was
        held at $0) and at the larger of max_tokens and max_output_tokens (the bridge sends the latter)."""
        body = {
            "model": "bridged-mini",
            "messages": [{"role": "user", "content": "hi"}],
            "max_tokens": 1,
            "max_output_tokens": 4000,
        }
        _run(proxy, provider, "/v1/chat/completions", body, "bridged")

    def test_the_requests_own_context_window_fallbacks(self, proxy: ProxyServer, provider: FakeProvider) -> None:
        """A request's own context_window_fallbacks to gpt-4o (its group always overflows) is held at gpt-4o's price."""
        body = {
            "model": "short-mini",
            "messages": [{"role": "user", "content": "hi"}],
            "max_tokens": 40,
            "context_window_fallbacks": [{"short-mini": ["big"]}],
        }
        _run(proxy, provider, "/v1/chat/completions", body, "context_fallback")
        served = {r.body.get("model") for r in provider.recorded() if r.status == 200}
        assert served == {"gpt-4o"}


def test_a_model_list_that_fans_out_is_refused_before_any_call(proxy: ProxyServer, provider: FakeProvider) -> None:
    """`model: "mini,mini"` (the proxy would call each listed model on one hold) gets a 400 that says why, and
    no provider call; the same request for one model is served."""
    provider.reset()
    body = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 5, "metadata": {"feature": "unbudgeted"}}
    with httpx.Client(base_url=proxy.base_url, headers=proxy.auth_headers, timeout=60) as client:
        for model in ("mini,mini", "mini, big", "big,mini"):
            refused = client.post("/v1/chat/completions", json={**body, "model": model})
            assert refused.status_code == 400, refused.text
            assert "model_fan_out_unsupported" in refused.text and "one request per model" in refused.text
        assert provider.recorded() == []
        assert client.post("/v1/chat/completions", json={**body, "model": "mini"}).status_code == 200
