"""Metric labels against a hostile client, through a real `litellm --config ...` proxy scraped on /metrics/.

Two teams' keys (a custom auth module next to the config file: ``sk-team-a`` is Alice's key of team-a,
``sk-team-b`` Bob's of team-b). Bob sends invented model names three ways (malformed metadata the pack
refuses, a budget refusing the unknown price, a model LiteLLM fails), a forged ``metadata.team`` and
50 junk ``feature`` values: no series of his own appears, Alice's numbers do not move, and a feature
Alice starts using afterwards still gets its own series.
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import httpx
import pytest

from costkit_litellm.testing.fake_provider import FakeProvider
from costkit_litellm.testing.proxy_server import ProxyPool, ProxyServer, base_config, enable_costkit, openai_deployment
from costkit_litellm.testing.tenants import write_custom_auth

TENANTS = {
    "sk-team-a": {"api_key": "sk-team-a", "user_id": "alice", "team_id": "team-a"},
    "sk-team-b": {"api_key": "sk-team-b", "user_id": "bob", "team_id": "team-b"},
}
ALICE = {"Authorization": "Bearer sk-team-a"}
BOB = {"Authorization": "Bearer sk-team-b"}
_SAMPLE = re.compile(r"^(?P<name>costkit_\w+)\{(?P<labels>[^}]*)\} (?P<value>\S+)$", re.M)
NANO = Decimal("1e-9")


@pytest.fixture(scope="module")
def proxy(proxy_factory: ProxyPool, fake_provider: FakeProvider) -> ProxyServer:
    """The pack labelling by feature and team, one model, a budget on feature 'billing', the custom auth."""
    deployment = openai_deployment("gpt-4o-mini", fake_provider.base_url, model="openai/gpt-4o-mini")
    config = base_config([deployment], callbacks=["prometheus"])
    config["general_settings"] = {"custom_auth": write_custom_auth(proxy_factory.config_dir, TENANTS)}
    costkit = {
        "metrics": {"tag_labels": ["feature", "team"], "max_label_values": 50},
        "budgets": [
            {"name": "billing", "scope": "tag:feature", "values": ["billing"], "limit_usd": "10", "window": "day"}
        ],
    }
    return proxy_factory("metric-labels", enable_costkit(config, costkit))


def samples(proxy: ProxyServer) -> list[tuple[str, dict[str, str], float]]:
    """Every costkit_* sample on /metrics/: name, labels, value."""
    text = httpx.get(f"{proxy.base_url}/metrics/", headers=proxy.auth_headers, timeout=10).text
    return [
        (m.group("name"), dict(re.findall(r'(\w+)="([^"]*)"', m.group("labels"))), float(m.group("value")))
        for m in _SAMPLE.finditer(text)
    ]


def total(proxy: ProxyServer, name: str, **match: str) -> float:
    return sum(v for n, labels, v in samples(proxy) if n == name and all(labels.get(k) == x for k, x in match.items()))


def eventually(check: Callable[[], bool], timeout_s: float = 20) -> bool:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


async def chat(client: httpx.AsyncClient, proxy: ProxyServer, key: dict[str, str], **body: Any) -> httpx.Response:
    payload = {"model": "gpt-4o-mini", "max_tokens": 20, "messages": [{"role": "user", "content": "hi"}], **body}
    return await client.post(f"{proxy.base_url}/v1/chat/completions", headers=key, json=payload)


def test_invented_models_and_a_forged_team_create_no_series_and_move_no_other_team(proxy: ProxyServer) -> None:
    """120 invented model names (refused, budget-refused, failed) with metadata.team='team-a' and 50 junk
    features from team-b's key add no model series, leave team-a's spend as it was, count Bob's own
    success under team-b, and leave room for a feature team-a starts afterwards."""
    tag = uuid.uuid4().hex[:6]

    async def run() -> tuple[Decimal, list[httpx.Response], httpx.Response, httpx.Response]:
        async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=16)) as client:
            alice = [await chat(client, proxy, ALICE, metadata={"feature": "email_writer"}) for _ in range(3)]
            assert all(r.status_code == 200 for r in alice), [r.text for r in alice]
            spent = sum(Decimal(r.headers["x-costkit-cost-usd"]) for r in alice)
            assert eventually(lambda: total(proxy, "costkit_requests_total", team="team-a") == 3), [
                s for s in samples(proxy) if s[0] == "costkit_requests_total"
            ]

            def forged(i: int) -> dict[str, Any]:
                model = f"random-{tag}-{i}"
                metadata: dict[str, Any] = {"team": "team-a", "feature": f"junk-{tag}-{i % 50}"}
                if i % 3 == 0:
                    metadata["tags"] = [1]  # malformed: the pack refuses it (400)
                elif i % 3 == 1:
                    metadata["feature"] = "billing"  # the budget refuses an unknown price
                return {"model": model, "metadata": metadata}

            sem = asyncio.Semaphore(16)

            async def one(i: int) -> httpx.Response:
                async with sem:
                    return await chat(client, proxy, BOB, **forged(i))

            bob = await asyncio.gather(*(one(i) for i in range(120)))
            junk = await asyncio.gather(
                *(one_feature(client, f"junk-{tag}-x{i}") for i in range(50))  # 50 junk features on a real model
            )
            bob_real = await chat(client, proxy, BOB, metadata={"team": "team-a", "feature": "email_writer"})
            late = await chat(client, proxy, ALICE, metadata={"feature": "summarizer"})
            assert all(r.status_code == 200 for r in junk)
            return spent, bob, bob_real, late

    async def one_feature(client: httpx.AsyncClient, feature: str) -> httpx.Response:
        return await chat(client, proxy, BOB, metadata={"team": "team-a", "feature": feature})

    spent, bob, bob_real, late = asyncio.run(run())
    assert all(r.status_code >= 400 for r in bob), [r.status_code for r in bob if r.status_code < 400]
    assert bob_real.status_code == 200 and late.status_code == 200
    assert eventually(lambda: total(proxy, "costkit_requests_total", team="team-a", feature="summarizer") == 1)
    assert eventually(lambda: total(proxy, "costkit_requests_total", team="team-b", outcome="success") == 51)
    found = samples(proxy)
    models = {labels["model"] for name, labels, _ in found if "model" in labels}
    assert models <= {"gpt-4o-mini", "openai/gpt-4o-mini", "other", "unknown"}, models
    assert not [labels for _, labels, _ in found if any(f"random-{tag}" in v for v in labels.values())]
    team_a = Decimal(repr(total(proxy, "costkit_spend_usd_total", team="team-a", feature="email_writer")))
    assert abs(team_a - spent) < NANO  # Bob's forged team and features moved nothing of Alice's
    bob_success = total(proxy, "costkit_requests_total", team="team-b", outcome="success", feature="email_writer")
    assert bob_success == 1
    junk_features = {labels["feature"] for _, labels, _ in found if labels.get("feature", "").startswith("junk-")}
    assert len(junk_features) <= 10  # max_label_values_per_tenant: the rest of Bob's are "other"
    assert len([1 for name, _, _ in found if name == "costkit_requests_total"]) < 60
