"""Soak: two `litellm --config` replicas on one Redis under a mixed, concurrent load, one SIGKILLed mid-run.

The mix is the issue 9 attacks (reused call ids, a forged ``metadata.costkit`` stash, a long completions
``prompt``, a big ``tools`` list, no ``max_tokens``, ``/v1/responses`` with ``max_output_tokens``) next to
plain chat. Every request carries a unique tag in its text, so what the fake provider billed for it is found
in its records and compared with the ledger, to the nano-dollar.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from test_budgets_proxy import MINI_IN, MINI_OUT, nano, proxy_config, redis_store, running, settled, unique, usage

from costkit_litellm.testing.fake_provider import FakeProvider
from costkit_litellm.testing.proxy_server import ProxyServer, openai_deployment
from costkit_litellm.testing.redis_server import RedisServer

pytestmark = pytest.mark.redis

LIMIT_NANO = 80_000_000  # $0.08: the holds of no-max_tokens calls (about $0.01 each) make it bite
LEASE_S = 3.0
RUN_S, KILL_AT_S, CONCURRENCY = 15.0, 6.0, 20
LATENCY_S = 0.75  # calls are in flight when the replica dies
BUDGET_KEY = "budget:soak:"
KINDS = ("plain", "reused_id", "forged_stash", "long_prompt", "big_tools", "no_max_tokens", "responses")
REUSED_CALL_ID = "soak-reused-call-id"
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": f"tool_{i}",
            "description": "Looks a thing up in a catalogue of things. " * 8,
            "parameters": {"type": "object", "properties": {"q": {"type": "string", "description": "query " * 10}}},
        },
    }
    for i in range(40)
]


@dataclass
class Outcome:
    tag: str
    kind: str
    replica: int
    status: int | None  # None: the connection failed (the replica died)
    headers: Mapping[str, str]


def request_for(kind: str, tag: str) -> tuple[str, dict[str, Any], dict[str, str]]:
    """Path, body and extra headers of one request of this kind; ``tag`` is in its text."""
    text = f"hello {tag}"
    chat: dict[str, Any] = {"model": "mini", "max_tokens": 40, "messages": [{"role": "user", "content": text}]}
    if kind == "plain":
        return "/v1/chat/completions", chat, {}
    if kind == "reused_id":
        return "/v1/chat/completions", chat, {"x-litellm-call-id": REUSED_CALL_ID}
    if kind == "forged_stash":
        forged = {"costkit": {"holds": [], "worst_nano": 0, "request_id": "forged", "admitted": True}}
        return "/v1/chat/completions", {**chat, "metadata": forged}, {}
    if kind == "long_prompt":
        body = {"model": "mini", "max_tokens": 40, "prompt": f"{tag} " + "a long prompt to bill. " * 1500}
        return "/v1/completions", body, {}
    if kind == "big_tools":
        return "/v1/chat/completions", {**chat, "tools": TOOLS}, {}
    if kind == "no_max_tokens":
        return "/v1/chat/completions", {"model": "mini", "messages": [{"role": "user", "content": text}]}, {}
    assert kind == "responses", kind
    return "/v1/responses", {"model": "mini", "input": text, "max_output_tokens": 40}, {}


def billed_nano(usage: Mapping[str, Any]) -> int:
    """What the provider's usage costs at gpt-4o-mini prices (reasoning is inside completion_tokens)."""
    return int(usage["prompt_tokens"]) * MINI_IN + int(usage["completion_tokens"]) * MINI_OUT


@pytest.fixture(scope="module")
def soak_provider() -> Iterator[FakeProvider]:
    """A provider that bills by the request's content and answers after LATENCY_S."""
    with FakeProvider(latency_s=LATENCY_S, record_limit=20_000) as fake:
        yield fake


@pytest.fixture(scope="module")
def soak_prefix() -> str:
    return unique("soak")


@pytest.fixture(scope="module")
def soak_replicas(
    config_writer: Callable[[str, Mapping[str, Any]], Path],
    redis_server: RedisServer,
    soak_provider: FakeProvider,
    soak_prefix: str,
) -> Iterator[tuple[ProxyServer, ...]]:
    """Two proxies, one config: a global total budget, a short lease, one Redis and key prefix."""
    costkit = {
        "redis_url": redis_server.url,
        "key_prefix": soak_prefix,
        "budget_settings": {"lease_s": LEASE_S},
        "budgets": [
            {"name": "soak", "scope": "global", "limit_usd": str(Decimal(LIMIT_NANO) / 10**9), "window": "total"}
        ],
    }
    path = config_writer(unique("soak"), proxy_config([openai_deployment("mini", soak_provider.base_url)], costkit))
    with running(ProxyServer(path), ProxyServer(path)) as proxies:
        yield proxies


@pytest.fixture
async def soak_client() -> AsyncIterator[httpx.AsyncClient]:
    limits = httpx.Limits(max_connections=4 * CONCURRENCY, max_keepalive_connections=4 * CONCURRENCY)
    async with httpx.AsyncClient(timeout=60, limits=limits) as http:
        yield http


async def test_soak_two_replicas_one_killed_spend_within_limit_and_ledger_equals_billed(
    soak_replicas: tuple[ProxyServer, ...],
    soak_provider: FakeProvider,
    redis_server: RedisServer,
    soak_prefix: str,
    soak_client: httpx.AsyncClient,
) -> None:
    """Mixed attack load on two replicas, one SIGKILLed: spend <= limit, ledger == billed, dead holds spent."""
    soak_provider.reset()
    victim = soak_replicas[0]
    alive = [0, 1]
    outcomes: list[Outcome] = []
    counter = iter(range(10**9))
    started = time.monotonic()

    async def one(index: int) -> None:
        kind, tag = KINDS[index % len(KINDS)], f"soak-{index:06d}"
        replica = alive[index % len(alive)]
        proxy = soak_replicas[replica]
        path, body, extra = request_for(kind, tag)
        try:
            response = await soak_client.post(
                f"{proxy.base_url}{path}", headers={**proxy.auth_headers, **extra}, json=body
            )
        except httpx.TransportError:
            outcomes.append(Outcome(tag, kind, replica, None, {}))
            return
        outcomes.append(Outcome(tag, kind, replica, response.status_code, response.headers))

    async def worker() -> None:
        while time.monotonic() - started < RUN_S:
            await one(next(counter))

    async def killer() -> None:
        await asyncio.sleep(KILL_AT_S)
        pid = victim.pid
        assert pid is not None and os.getpgid(pid) == pid  # the proxy leads its own process group
        alive[:] = [1]  # from now on the client sends to the survivor only
        os.killpg(pid, signal.SIGKILL)

    async with redis_store(redis_server.url, soak_prefix) as store:
        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)), killer())
        victim.stop()  # reap it
        elapsed = time.monotonic() - started
        final = await settled(store, BUDGET_KEY, timeout_s=LEASE_S + 30)
        answered = [o for o in outcomes if o.status == 200]
        refused = [o for o in outcomes if o.status == 429]
        killed = [o for o in outcomes if o.status is None]
        other = [o for o in outcomes if o.status not in (200, 429, None)]
        deadline = time.monotonic() + 15
        while True:
            ledger = [e for e in await store.ledger_read() if e.fields.get("costkit.outcome") == "success"]
            if len(ledger) >= len(answered) or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.2)
        await asyncio.sleep(0.5)
        assert await usage(store, BUDGET_KEY) == final  # nothing moved after settling

    by_tag: dict[str, int] = {}  # what the provider billed, by the tag in each request's text
    for record in soak_provider.recorded():
        if record.status != 200 or record.usage is None:
            continue
        text = json.dumps(record.body)
        start = text.find("soak-")
        assert start >= 0, text[:200]
        tag = text[start : start + len("soak-000000")]
        assert tag not in by_tag, f"{tag} reached the provider twice"
        by_tag[tag] = billed_nano(record.usage)
    billed = sum(by_tag[o.tag] for o in answered)
    ledger_sum = sum(int(e.fields["costkit.cost_nano"]) for e in ledger)
    worst = max(nano(o.headers["x-costkit-max-cost-usd"]) for o in answered)
    print(
        f"\nsoak {elapsed:.1f}s, 2 replicas (1 SIGKILLed at {KILL_AT_S}s), concurrency {CONCURRENCY}: "
        f"sent {len(outcomes)}, answered {len(answered)}, refused {len(refused)}, other {len(other)}, "
        f"killed in flight {len(killed)}; committed {final.committed} n$, ledger sum {ledger_sum} n$, "
        f"billed (answered) {billed} n$, limit {LIMIT_NANO} n$; dead holds spent {final.committed - ledger_sum} n$ "
        f"(bound {len(killed)} x {worst} n$); ledger entries {len(ledger)} for {len(answered)} answers"
    )
    assert not other, [(o.kind, o.status) for o in other[:5]]
    assert {o.kind for o in answered} == set(KINDS)  # every attack was admitted and answered
    assert refused, "the budget never refused: the limit did not bite"
    assert killed and all(o.replica == 0 for o in killed)
    assert final.reserved == 0, final
    assert final.committed <= LIMIT_NANO
    for o in answered:  # each answer's cost header is what the provider billed for it
        assert nano(o.headers["x-costkit-cost-usd"]) == by_tag[o.tag], (o.kind, o.tag)
    # A SIGKILL can land after the victim answered a request but before its success callback wrote
    # the ledger: that call's hold then expired into spend. Only the victim may miss entries, each
    # at most one answer's cost; the survivor's answers are all in the ledger.
    # (Or the other way round: it wrote the entry of a call whose answer never reached the client.)
    missing = len(answered) - len(ledger)
    victim_answers = [o for o in answered if o.replica == 0]
    assert -len(killed) <= missing <= len(victim_answers), (missing, len(victim_answers), len(killed))
    most = max(by_tag.values(), default=0)
    assert abs(ledger_sum - billed) <= abs(missing) * most
    if missing == 0:
        assert ledger_sum == billed
    # The dead replica's holds are spent: committed covers the ledger, and is at most the ledger
    # plus one worst case per call that died in flight or lost its ledger entry.
    assert ledger_sum < final.committed <= ledger_sum + (len(killed) + max(missing, 0)) * worst
