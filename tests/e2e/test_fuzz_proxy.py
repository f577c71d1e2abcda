"""Property-based fuzzing through real proxies (issue 9, "no 500s"): Hypothesis generates odd but JSON-valid
chat, completion and responses bodies (wrong types, huge and negative numbers, nested nulls, unicode, unusual
parameter combinations, metadata of every shape, session and tag headers) and sends each to the same proxy
with and without the pack (same mock deployments). For every body:

- the pack adds no 5xx: a 5xx with the pack is one the vanilla proxy also gives;
- a status the pack gives that the vanilla proxy does not is a 4xx whose message names a field of the
  request (a key of the body, a header sent, or ``max_tokens`` for a worst case above a budget), or a
  429 of a named policy (a budget or the agent breaker);
- never ``costkit_internal_error`` (the catch-all is a safety net: the fuzzer proves it is not needed).

Deterministic (``derandomize``, no example database, no shrinking). ``EXAMPLES`` bodies per route (1,000 in
all, 2,000 requests, about a minute and a half); ``COSTKIT_FUZZ_SCALE=20`` multiplies them for a long run
(``python bench/fuzz_proxy.py``). ``COSTKIT_FUZZ_REPORT=path.json`` writes the statuses seen.
"""

from __future__ import annotations

import copy
import json
import os
import re
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from costkit_litellm.testing.proxy_server import ProxyServer, base_config, enable_costkit, mock_deployment
from costkit_litellm.testing.redis_server import RedisServer

pytestmark = pytest.mark.redis

ROOT = Path(__file__).resolve().parents[2]
SCALE = float(os.environ.get("COSTKIT_FUZZ_SCALE", "1"))
EXAMPLES = {"/v1/chat/completions": 600, "/v1/completions": 200, "/v1/responses": 200}
"""Examples per route at scale 1 (the mock text-completion and responses paths are slower to answer)."""
SESSION_HEADER = "x-costkit-session"
POLICY_TYPES = frozenset({"budget_exceeded", "agent_step_limit", "agent_loop_detected", "agent_budget_exceeded"})
FUZZ = settings(
    derandomize=True,
    database=None,
    deadline=None,
    phases=(Phase.explicit, Phase.generate),  # no shrinking: a failure prints its body as generated, in bounded time
    report_multiple_bugs=False,
    suppress_health_check=(HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much),
)

# --- strategies --------------------------------------------------------------------------------------------

_text = st.text(max_size=24)
_big_ints = st.sampled_from([-(2**63), -1, 0, 1, 2, 2**31 - 1, 2**31, 2**53 + 1, 2**64, 10**30])
_numbers = st.one_of(
    st.integers(min_value=-1000, max_value=100_000),
    _big_ints,
    st.floats(allow_nan=False, allow_infinity=False, width=64),
)
_scalars = st.one_of(st.none(), st.booleans(), _numbers, _text)
_json = st.recursive(
    _scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(_text, inner, max_size=4)),
    max_leaves=12,
)
_long_text = st.sampled_from(["x" * 300, "é" * 257, "\u0000\ud7ff\U0001f600", " ,  ,", "feature:a,team:b"])
_header_text = st.one_of(
    st.text(st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=40),
    st.sampled_from(["x" * 300, "feature:a,team:b", "a,,b", "tag:" + "y" * 256]),
)  # what HTTP carries in a header value


def _or_json(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Mostly well-typed values, sometimes anything JSON can carry."""
    return st.one_of(strategy, strategy, strategy, _json)


_content = _or_json(
    st.one_of(
        _text,
        st.lists(
            st.one_of(
                st.fixed_dictionaries({"type": st.just("text"), "text": _or_json(_text)}),
                st.fixed_dictionaries({"type": _text, "image_url": _json}),
                _json,
            ),
            max_size=3,
        ),
    )
)
_tool_call = st.fixed_dictionaries(
    {"id": _or_json(_text), "type": st.just("function")},
    optional={"function": _or_json(st.fixed_dictionaries({"name": _or_json(_text), "arguments": _or_json(_text)}))},
)
_message = st.fixed_dictionaries(
    {"role": _or_json(st.sampled_from(["user", "assistant", "system", "tool", "developer", "function"]))},
    optional={
        "content": _content,
        "tool_calls": _or_json(st.lists(_or_json(_tool_call), max_size=3)),
        "function_call": _json,
        "name": _or_json(_text),
        "tool_call_id": _or_json(_text),
    },
)
_messages = _or_json(st.lists(_or_json(_message), min_size=0, max_size=4))
_metadata = _or_json(
    st.fixed_dictionaries(
        {},
        optional={
            "tags": _or_json(st.lists(_or_json(st.one_of(_text, _long_text)), max_size=4)),
            "user_id": _or_json(st.one_of(_text, _long_text)),
            "session_id": _or_json(_text),
            "feature": _or_json(st.one_of(_text, _long_text)),
            "cache": _json,
            "costkit": _json,
            "requester_metadata": _json,
            "user_api_key_hash": _json,
            "headers": _json,
        },
    )
)
_common = {
    "temperature": _or_json(st.one_of(st.just(0), st.just(0.0), _numbers)),
    "top_p": _or_json(_numbers),
    "max_tokens": _or_json(_numbers),
    "n": _or_json(st.sampled_from([-1, 0, 1, 2, 3, 10**20])),  # 2**31 hangs the vanilla mock (2e9 choices)
    "stop": _or_json(st.one_of(_text, st.lists(_text, max_size=4))),
    "seed": _or_json(_numbers),
    "user": _or_json(st.one_of(_text, _long_text)),
    "metadata": _metadata,
    "stream": _or_json(st.booleans()),
    "stream_options": _json,
    "tags": _or_json(st.lists(_text, max_size=3)),
    "logit_bias": _json,
    "presence_penalty": _or_json(_numbers),
    "frequency_penalty": _or_json(_numbers),
    "timeout": _or_json(st.integers(min_value=1, max_value=60)),
    "an_unknown_parameter": _json,
}
_chat_only = {
    "max_completion_tokens": _or_json(_numbers),
    "response_format": _json,
    "tools": _json,
    "tool_choice": _json,
    "functions": _json,
    "logprobs": _or_json(st.booleans()),
    "reasoning_effort": _or_json(st.sampled_from(["low", "medium", "high"])),
    "service_tier": _or_json(st.sampled_from(["auto", "default", "flex", "priority"])),
    "prediction": _json,
    "parallel_tool_calls": _json,
}
_models = st.one_of(st.sampled_from(["gpt-4o-mini", "gpt-4o", "auto"]), st.sampled_from(["gpt-4o-mini", "auto"]))
_headers = st.fixed_dictionaries(
    {},
    optional={
        SESSION_HEADER: _header_text,
        "x-litellm-tags": _header_text,
        "cache-control": st.sampled_from(["no-cache", "no-store", "max-age=0", "junk"]),
        "x-costkit-cache": _header_text,
    },
)

BODIES: dict[str, st.SearchStrategy[dict[str, Any]]] = {
    "/v1/chat/completions": st.fixed_dictionaries(
        {"model": _models, "messages": _messages}, optional={**_common, **_chat_only}
    ),
    "/v1/completions": st.fixed_dictionaries(
        {"model": _models, "prompt": _or_json(st.one_of(_text, st.lists(_text, max_size=3)))}, optional=_common
    ),
    "/v1/responses": st.fixed_dictionaries(
        {"model": _models, "input": _or_json(st.one_of(_text, st.lists(_or_json(_message), max_size=3)))},
        optional={
            **{k: v for k, v in _common.items() if k not in ("n", "stop")},
            "max_output_tokens": _or_json(_numbers),
            "instructions": _or_json(_text),
            "metadata": _or_json(st.dictionaries(_text, _or_json(_text), max_size=4)),
        },
    ),
}

# --- proxies -----------------------------------------------------------------------------------------------


def models() -> list[dict[str, Any]]:
    """The shipped model groups and the virtual model as mock deployments, identical in both proxies (vanilla
    serves ``auto`` itself; the pack routes it to a tier first)."""
    return [
        mock_deployment("gpt-4o-mini"),
        mock_deployment("gpt-4o", model="openai/gpt-4o"),
        mock_deployment("auto"),
    ]


@pytest.fixture(scope="module")
def proxies(proxy_factory: Callable[..., ProxyServer], redis_server: RedisServer) -> tuple[ProxyServer, ProxyServer]:
    """(vanilla, pack): the pack with the shipped ``costkit:`` section on the session Redis."""
    section = copy.deepcopy(yaml.safe_load((ROOT / "proxy_config.yaml").read_text())["costkit"])
    section.update(redis_url=redis_server.url, key_prefix=f"fuzz-{uuid.uuid4().hex[:8]}")
    config = base_config(models(), num_retries=0)
    config["router_settings"] = {"num_retries": 0, "disable_cooldowns": True}
    return proxy_factory("fuzz-vanilla", config), proxy_factory("fuzz-pack", enable_costkit(config, section))


@pytest.fixture(scope="module")
def send(proxies: tuple[ProxyServer, ProxyServer]) -> Iterator[Callable[..., tuple[httpx.Response, httpx.Response]]]:
    """Sends one body to both proxies at once; returns (vanilla, pack) responses (bodies read)."""
    vanilla, pack = proxies
    clients = [httpx.Client(base_url=p.base_url, headers=p.auth_headers, timeout=120) for p in (vanilla, pack)]
    pool = ThreadPoolExecutor(2)

    def one(client: httpx.Client, route: str, body: bytes, headers: Mapping[str, str]) -> httpx.Response:
        return client.post(route, content=body, headers={"content-type": "application/json", **headers})

    def both(route: str, body: Mapping[str, Any], headers: Mapping[str, str]) -> tuple[httpx.Response, httpx.Response]:
        raw = json.dumps(body, allow_nan=False).encode()
        futures = [pool.submit(one, client, route, raw, headers) for client in clients]
        first, second = (f.result() for f in futures)
        return first, second

    yield both
    pool.shutdown()
    for client in clients:
        client.close()


# --- the property ------------------------------------------------------------------------------------------

SEEN: Counter[tuple[str, int, int, str]] = Counter()
TIMES: dict[str, float] = {}


def field_names(body: Mapping[str, Any], headers: Mapping[str, str]) -> set[str]:
    """The names a 4xx may cite: the body's parameters, its metadata keys, the headers sent, and ``max_tokens``
    (a budget's "lower max_tokens" for a worst case above the limit)."""
    metadata = body.get("metadata")
    keys = {str(k) for k in metadata} if isinstance(metadata, dict) else set()
    return {str(k) for k in body} | keys | {name.lower() for name in headers} | {"max_tokens"}


def _error(response: httpx.Response) -> tuple[str, str]:
    try:
        error = response.json().get("error") or {}
    except (ValueError, AttributeError):
        return "", response.text[:300]
    return str(error.get("type") or ""), str(error.get("message") or "")


def check(route: str, body: dict[str, Any], headers: dict[str, str], send: Callable[..., Any]) -> None:
    if SESSION_HEADER in headers:  # one session per example: the breaker's step and repeat limits stay out of it
        headers[SESSION_HEADER] = f"{headers[SESSION_HEADER]}-{uuid.uuid4().hex[:6]}"
    vanilla, pack = send(route, body, headers)
    kind, message = _error(pack) if pack.status_code >= 400 else ("", "")
    SEEN[(route, vanilla.status_code, pack.status_code, kind)] += 1
    if pack.status_code == vanilla.status_code:
        return
    statuses = f"vanilla {vanilla.status_code}, pack {pack.status_code} {kind}: {message[:300]}"
    context = f"{route} {json.dumps(body)[:600]} headers={headers}: {statuses}"
    assert kind != "costkit_internal_error", f"a bug inside the pack: {context}"
    assert 400 <= pack.status_code < 500, f"the pack adds a non-4xx status: {context}"
    if pack.status_code == 429 and kind in POLICY_TYPES:
        return  # a named budget or breaker refusal (its message names the budget or session)
    names = field_names(body, headers)
    cited = [name for name in names if name and re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])", message)]
    assert cited, f"the pack's 4xx names no field of the request: {context}"


@pytest.mark.parametrize("route", list(BODIES))
def test_the_pack_adds_no_5xx_and_names_the_field_of_every_refusal(
    route: str, send: Callable[..., tuple[httpx.Response, httpx.Response]]
) -> None:
    """Thousands of generated bodies: every status the pack gives that vanilla does not is a 4xx naming a field."""
    started = time.monotonic()

    @settings(FUZZ, max_examples=max(1, int(EXAMPLES[route] * SCALE)))
    @given(body=BODIES[route], headers=_headers)
    def run(body: dict[str, Any], headers: dict[str, str]) -> None:
        check(route, body, headers, send)

    try:
        run()
    finally:
        TIMES[route] = time.monotonic() - started
        _report()


def _report() -> None:
    path = os.environ.get("COSTKIT_FUZZ_REPORT")
    if not path:
        return
    rows = [{"route": r, "vanilla": v, "pack": p, "type": t, "count": c} for (r, v, p, t), c in sorted(SEEN.items())]
    report = {"scale": SCALE, "examples": EXAMPLES, "seconds": TIMES, "statuses": rows}
    Path(path).write_text(json.dumps(report, indent=1))
