"""The worst case reads the request the way LiteLLM and the provider will: only the cap fields the
route honours, counts written as strings or floats, a batch of legacy prompts, and every kind of the
request's own fallbacks."""

from __future__ import annotations

from typing import Any

import litellm
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from costkit_litellm.config import PricingConfig
from costkit_litellm.context import from_request
from costkit_litellm.litellm_adapter.call_types import call_type
from costkit_litellm.litellm_adapter.estimates import Estimator
from costkit_litellm.litellm_adapter.prices import LiteLLMPriceSource
from costkit_litellm.pricing import Pricing

CHAT = call_type("acompletion")
TEXT = call_type("atext_completion")
RESPONSES = call_type("aresponses")
MESSAGES = call_type("anthropic_messages")
CAPS = ("max_tokens", "max_completion_tokens", "max_output_tokens")


def _estimator(router: Any = None) -> Estimator:
    prices = LiteLLMPriceSource(lambda: router)
    return Estimator(Pricing(PricingConfig(), prices), prices)


def _amount(row: Any, body: dict[str, Any], group: str = "gpt-4o-mini", router: Any = None) -> int:
    deployment = None if router is None else LiteLLMPriceSource(lambda: router).deployment_model(group)
    amount = _estimator(router).worst_case(row, body, group, deployment).amount
    assert amount is not None
    return int(amount)


def _body(row: Any) -> dict[str, Any]:
    if row is RESPONSES:
        return {"input": "hello"}
    if row is TEXT:
        return {"prompt": "hello"}
    return {"messages": [{"role": "user", "content": "hello"}]}


@pytest.mark.parametrize(
    ("row", "ignored"),
    [
        (RESPONSES, "max_tokens"),
        (RESPONSES, "max_completion_tokens"),
        (CHAT, "max_output_tokens"),
        (TEXT, "max_completion_tokens"),
        (TEXT, "max_output_tokens"),
        (MESSAGES, "max_output_tokens"),
        (MESSAGES, "max_completion_tokens"),
    ],
)
def test_a_cap_in_a_field_the_route_drops_is_held_as_no_cap(row: Any, ignored: str) -> None:
    """`max_tokens: 1` on /v1/responses (LiteLLM drops it; the provider writes to its maximum) holds
    what no cap holds, and so on for every field a route does not pass on."""
    uncapped = _amount(row, _body(row))
    assert _amount(row, {**_body(row), ignored: 1}) == uncapped
    assert _amount(row, {**_body(row), row.output_cap: 1}) < uncapped


def test_the_caps_a_route_honours_still_bound_it() -> None:
    """Chat honours max_tokens and max_completion_tokens (the larger of two is held)."""
    body = _body(CHAT)
    small = _amount(CHAT, {**body, "max_completion_tokens": 10})
    assert small == _amount(CHAT, {**body, "max_tokens": 10})
    assert _amount(CHAT, {**body, "max_tokens": 10, "max_completion_tokens": 500}) > small


@given(
    row=st.sampled_from([CHAT, TEXT, RESPONSES, MESSAGES]),
    values=st.dictionaries(st.sampled_from(CAPS), st.integers(min_value=1, max_value=100_000)),
)
@settings(max_examples=150, deadline=None)
def test_only_honoured_cap_fields_change_the_hold(row: Any, values: dict[str, int]) -> None:
    """Whatever caps a client sends, the hold equals the hold of the honoured ones alone, and the
    context's max_tokens (which decides whether a default cap is injected) reads the same fields."""
    body = {**_body(row), **values}
    honoured = {k: v for k, v in values.items() if k in row.output_caps}
    assert _amount(row, body) == _amount(row, {**_body(row), **honoured})
    context = from_request(body, endpoint=row.endpoint, output_caps=row.output_caps)
    assert context.params.max_tokens == (max(honoured.values()) if honoured else None)


@pytest.mark.parametrize("n", ["8", 8.0, " 8 ", 7.2, "7.5"])
def test_a_count_written_as_a_string_or_float_is_held_as_that_count(n: Any) -> None:
    """`n: "8"` or `n: 8.0` (a lenient provider reads 8) holds 8 answers, not one; a fraction rounds up."""
    body = {**_body(CHAT), "max_tokens": 100}
    assert _amount(CHAT, {**body, "n": n}) == _amount(CHAT, {**body, "n": 8})


@pytest.mark.parametrize("n", ["x", None, 0, -3, float("nan"), float("inf"), True, [8]])
def test_a_count_that_is_no_count_is_one(n: Any) -> None:
    """A count a provider cannot read (or below one) holds one answer, as before."""
    body = {**_body(CHAT), "max_tokens": 100}
    assert _amount(CHAT, {**body, "n": n}) == _amount(CHAT, body)


def test_a_batch_of_legacy_prompts_holds_one_completion_per_prompt() -> None:
    """/v1/completions with 200 prompts writes 200 completions: the output held is 200 x the cap."""
    one = _amount(TEXT, {"prompt": "hello", "max_tokens": 1000})
    batch = _amount(TEXT, {"prompt": ["hello"] * 200, "max_tokens": 1000})
    tokens_batch = _amount(TEXT, {"prompt": [[1, 2, 3]] * 4, "max_tokens": 1000})
    single_ids = _amount(TEXT, {"prompt": [1, 2, 3], "max_tokens": 1000})
    assert batch > 150 * one
    assert tokens_batch > 3 * single_ids
    assert single_ids < 2 * one


@pytest.fixture(scope="module")
def router() -> Any:
    return litellm.Router(
        model_list=[
            {"model_name": "cheap", "litellm_params": {"model": "openai/gpt-4o-mini", "api_key": "x"}},
            {"model_name": "pricey", "litellm_params": {"model": "openai/gpt-4o", "api_key": "x"}},
        ]
    )


@pytest.mark.parametrize(
    "fallbacks",
    [
        {"fallbacks": ["pricey"]},
        {"fallbacks": [{"model": "pricey"}]},
        {"fallbacks": [{"cheap": ["pricey"]}]},
        {"context_window_fallbacks": [{"cheap": ["pricey"]}]},
        {"content_policy_fallbacks": [{"cheap": ["pricey"]}]},
        {"context_window_fallbacks": [{"*": ["pricey"]}]},
    ],
)
def test_the_requests_own_fallbacks_of_every_kind_are_in_the_worst_case(router: Any, fallbacks: Any) -> None:
    """A request for `cheap` naming `pricey` as a fallback of any kind the router honours holds pricey's price."""
    body = {**_body(CHAT), "max_tokens": 1000}
    cheap = _amount(CHAT, body, "cheap", router)
    pricey = _amount(CHAT, body, "pricey", router)
    assert cheap < pricey
    assert _amount(CHAT, {**body, **fallbacks}, "cheap", router) >= pricey
