"""The worst case reads the request the way LiteLLM and the provider will: only the cap fields the
route honours, counts written as strings or floats, a batch of legacy prompts, and every kind of the
request's own fallbacks."""

from __future__ import annotations

from typing import Any

import litellm
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from costkit_litellm.config import PricingConfig, parse_config
from costkit_litellm.context import from_request
from costkit_litellm.kit import CostKit
from costkit_litellm.litellm_adapter.call_types import call_type
from costkit_litellm.litellm_adapter.callback import CostKitCallback
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
    extra=st.dictionaries(st.sampled_from(CAPS), st.integers(min_value=1, max_value=100_000)),
)
@settings(max_examples=200, deadline=None)
def test_the_hold_is_bound_by_the_largest_cap_the_provider_may_receive(
    row: Any, values: dict[str, int], extra: dict[str, int]
) -> None:
    """Whatever caps a client sends, at the top level and in extra_body: with one the route passes on
    (or any in extra_body, which goes over the body), the hold is that of the largest cap set anywhere
    (at least 16, the Responses API's least); with none it is the uncapped hold. The context's max_tokens
    (which decides whether a default cap is injected) is the same bound."""
    body: dict[str, Any] = {**_body(row), **values}
    if extra:
        body["extra_body"] = dict(extra)
    bounded = extra or any(k in row.output_caps for k in values)
    caps = [*values.values(), *extra.values()]
    expected = max(caps) if bounded else None
    reference = {**_body(row), row.output_cap: max(expected, 16)} if expected is not None else _body(row)
    assert _amount(row, body) == _amount(row, reference)
    context = from_request(body, endpoint=row.endpoint, output_caps=row.output_caps)
    assert context.params.max_tokens == expected


@pytest.mark.parametrize("odd", ["4000", 0, -1, 2.5, True, [4000], {"n": 1}])
def test_a_cap_that_is_no_whole_number_leaves_the_request_unbounded(odd: Any) -> None:
    """A cap a lenient provider may read as more (`"4000"`), or none at all, beside a valid one: the hold
    is the uncapped one, not the valid cap's."""
    uncapped = _amount(CHAT, _body(CHAT))
    assert _amount(CHAT, {**_body(CHAT), "max_tokens": 20, "max_completion_tokens": odd}) == uncapped
    assert _amount(CHAT, {**_body(CHAT), "max_tokens": 20, "extra_body": {"max_tokens": odd}}) == uncapped


def test_a_cap_below_the_responses_minimum_is_held_as_16() -> None:
    """`max_tokens: 1` on /v1/messages is sent on as 16 (LiteLLM's Responses bridge): held as 16."""
    assert _amount(MESSAGES, {**_body(MESSAGES), "max_tokens": 1}) == _amount(
        MESSAGES, {**_body(MESSAGES), "max_tokens": 16}
    )
    assert _amount(MESSAGES, {**_body(MESSAGES), "max_tokens": 1}) < _amount(
        MESSAGES, {**_body(MESSAGES), "max_tokens": 17}
    )


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
            {"model_name": "bridged", "litellm_params": {"model": "openai/responses/gpt-4o-mini", "api_key": "x"}},
            {"model_name": "unpriced", "litellm_params": {"model": "openai/no-such-model-costkit", "api_key": "x"}},
        ]
    )


def test_a_deployment_bridged_to_responses_is_priced_as_its_model(router: Any) -> None:
    """`openai/responses/gpt-4o-mini` (chat sent to the Responses API) is held at gpt-4o-mini's price,
    not at the $0 of the empty entry the Router registers for it."""
    body = {**_body(CHAT), "max_tokens": 1000}
    assert _amount(CHAT, body, "bridged", router) == _amount(CHAT, body, "cheap", router) > 0


def test_a_model_the_router_registered_without_prices_is_unknown_not_free(router: Any) -> None:
    """A deployment model with no price in LiteLLM's map has no worst case (unknown_price decides), never $0."""
    prices = LiteLLMPriceSource(lambda: router)
    assert prices.price("unpriced") is None
    estimate = _estimator(router).worst_case(CHAT, {**_body(CHAT), "max_tokens": 10}, "unpriced", None)
    assert estimate.amount is None


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


async def test_inject_default_also_overwrites_an_odd_cap_in_extra_body() -> None:
    """Under inject_default a request whose only caps are odd (`extra_body: {"max_tokens": "4000"}`, which
    goes over the body) gets the injected cap there too, so the provider stops where the hold does."""
    kit = CostKit(
        parse_config({"pricing": {"output_bound": "inject_default", "default_max_output_tokens": 300}}),
        registry=CollectorRegistry(),
    )
    callback = CostKitCallback(kit, router=lambda: None)
    data: dict[str, Any] = {"model": "gpt-4o-mini", **_body(CHAT), "extra_body": {"max_tokens": "4000", "seed": 1}}
    admission = await callback.admit(data, CHAT)
    assert data["max_tokens"] == 300 and data["extra_body"] == {"max_tokens": 300, "seed": 1}
    assert admission.estimate.inject_max_tokens == 300
    await kit.close()
