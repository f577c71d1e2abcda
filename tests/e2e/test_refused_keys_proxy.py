"""A refused request leaves nothing in Redis that a client can grow: through a real proxy, requests
refused by a spent global budget, each naming a user id never seen before (a per-user budget covers
every end user), add no key; before the fix each left a hash without a TTL per limit it named. The
billing webhook is down all along, so every event lands in its dead-letter record, which stays at
its cap instead of growing by one field per refusal."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx
import pytest

from costkit_litellm.testing.fake_provider import FakeProvider
from costkit_litellm.testing.ports import free_port
from costkit_litellm.testing.proxy_server import ProxyServer, base_config, enable_costkit, openai_deployment
from costkit_litellm.testing.redis_server import RedisServer, _Resp

pytestmark = pytest.mark.redis

GLOBAL_LIMIT_USD = "0.00003"  # one answer (worst case 25,500 n$, cost 12,750) fits, the next does not
DEAD_LETTER_CAP = 5
_WEBHOOK_SAMPLE = re.compile(r'^costkit_webhook_events_total\{result="(\w+)"\} ([0-9.e+]+)$', re.M)


@pytest.fixture(scope="module")
def provider() -> Iterator[FakeProvider]:
    with FakeProvider(prompt_tokens=5, completion_tokens=20) as fake:
        yield fake


@pytest.fixture(scope="module")
def prefix() -> str:
    return f"refused-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def proxy(
    config_writer: Callable[[str, Mapping[str, Any]], Path],
    redis_server: RedisServer,
    provider: FakeProvider,
    prefix: str,
) -> Iterator[ProxyServer]:
    budgets = [
        {"name": "all", "scope": "global", "limit_usd": GLOBAL_LIMIT_USD, "window": "total"},
        {"name": "per_user", "scope": "end_user", "limit_usd": "1", "window": "day"},
    ]
    config = base_config([openai_deployment("mini", provider.base_url)], num_retries=0, callbacks=["prometheus"])
    webhook = {  # nothing listens there: every batch is given up on at once
        "url": f"http://127.0.0.1:{free_port()}/billing",
        "max_attempts": 1,
        "dead_letter_max_events": DEAD_LETTER_CAP,
    }
    costkit = {"redis_url": redis_server.url, "key_prefix": prefix, "budgets": budgets, "ledger": {"webhook": webhook}}
    with ProxyServer(config_writer("refused-keys", enable_costkit(config, costkit))) as server:
        yield server


def keys(server: RedisServer, prefix: str) -> dict[str, int]:
    """Every key under ``prefix`` with its TTL in ms (-1: none)."""
    client = _Resp(server.port)
    try:
        names = client.call("KEYS", f"{prefix}:*")
        assert isinstance(names, list)
        decoded = [name.decode() if isinstance(name, bytes) else str(name) for name in names]
        return {name: int(str(client.call("PTTL", name))) for name in decoded}
    finally:
        client.close()


def given_up(proxy: ProxyServer) -> int:
    """Events the webhook forwarder gave up on so far (dead-lettered plus dropped), from /metrics/."""
    text = httpx.get(f"{proxy.base_url}/metrics/", headers=proxy.auth_headers, timeout=10).text
    return int(sum(float(v) for result, v in _WEBHOOK_SAMPLE.findall(text) if result in ("dead_lettered", "dropped")))


def wait_given_up(proxy: ProxyServer, events: int, timeout_s: float = 30) -> None:
    """Wait until the forwarder has given up on ``events`` events."""
    deadline = time.monotonic() + timeout_s
    while given_up(proxy) < events:
        assert time.monotonic() < deadline, f"the webhook gave up on {given_up(proxy)} of {events} events"
        time.sleep(0.2)


def ask(proxy: ProxyServer, user: str) -> httpx.Response:
    body: dict[str, Any] = {
        "model": "mini",
        "max_tokens": 40,
        "messages": [{"role": "user", "content": "hello"}],
        "user": user,
    }
    return httpx.post(f"{proxy.base_url}/v1/chat/completions", headers=proxy.auth_headers, json=body, timeout=60)


def test_refused_requests_with_new_user_ids_add_no_key(
    proxy: ProxyServer, redis_server: RedisServer, prefix: str
) -> None:
    """Once the global budget refuses, 30 requests naming 30 new users answer 429 and Redis holds the same
    state keys as before them (no hash per invented user; without a TTL only the total window's limit and
    the ledger stream); each refusal's ledger marker expires. The webhook being down, the dead-letter
    record holds its cap of fields, no more."""
    first = ask(proxy, "first-user")
    assert first.status_code == 200, first.text
    for i in range(DEAD_LETTER_CAP + 2):
        assert ask(proxy, f"early-{i}").status_code == 429
    wait_given_up(proxy, DEAD_LETTER_CAP + 3)
    before = keys(redis_server, prefix)
    dead_letter = f"{prefix}:map:ledger_dead_letter"
    assert dead_letter in before
    for i in range(30):
        response = ask(proxy, f"invented-{uuid.uuid4().hex}-{i}")
        assert response.status_code == 429, response.text
        assert "budget_exceeded" in response.text
    wait_given_up(proxy, DEAD_LETTER_CAP + 33)
    after = keys(redis_server, prefix)
    client = _Resp(redis_server.port)
    try:
        assert client.call("HLEN", dead_letter) == DEAD_LETTER_CAP
    finally:
        client.close()
    markers = {name for name in after if name.startswith(f"{prefix}:{{ledger}}:id:")}  # one per ledger event
    assert all(after[name] > 0 for name in markers)
    state = set(after) - markers
    assert state == set(before) - markers, sorted(state ^ (set(before) - markers))
    assert not [name for name in state if "invented" in name]
    without_ttl = [name for name in state if after[name] == -1]
    allowed = (f"{prefix}:{{lim:budget:all:", f"{prefix}:{{ledger}}", dead_letter)
    assert all(name.startswith(allowed) for name in without_ttl), without_ttl
