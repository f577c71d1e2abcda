"""The table of call types: every route the installed proxy serves has a row, the right metadata
dict, and worst-case inputs that count every billable field."""

from __future__ import annotations

import datetime
import json
import math
import re
from pathlib import Path
from typing import Any

import litellm
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from costkit_litellm.config import PricingConfig
from costkit_litellm.context import from_request
from costkit_litellm.litellm_adapter.call_types import ENDPOINTS, ROWS, UNKNOWN, call_type, metadata_key
from costkit_litellm.litellm_adapter.estimates import Estimator, conversation, input_tokens
from costkit_litellm.litellm_adapter.prices import LiteLLMPriceSource
from costkit_litellm.pricing import Pricing

PROXY_SOURCE = Path(litellm.__file__).parent / "proxy"


def _proxy_route_types() -> set[str]:
    """Every ``route_type="..."`` the installed proxy hands its pre-call hooks and router."""
    found: set[str] = set()
    for path in PROXY_SOURCE.rglob("*.py"):
        text = path.read_text(errors="ignore")
        found.update(m.group(1) for m in re.finditer(r'route_type\s*=\s*"([a-z_]+)"', text))
    return found


BILLABLE = ("messages", "prompt", "input", "instructions", "system", "tools", "functions", "response_format", "text")
_PARTS = st.sampled_from(
    [{"type": "image_url", "image_url": {"url": "data:image/png;base64," + "A" * 400}}, {"type": "text", "text": "hi"}]
)
JSON_VALUES = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=60), _PARTS),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.sampled_from(["role", "content", "type", "text"]), inner, max_size=3),
    ),
    max_leaves=12,
)
"""Request field values as JSON bodies carry them, image parts among them."""


def _text_parts(value: Any) -> Any:
    """``value`` without its image parts (list items that are objects typed image_url, input_image or image)."""
    if isinstance(value, list):
        return [
            _text_parts(v)
            for v in value
            if not (isinstance(v, dict) and v.get("type") in ("image_url", "input_image", "image"))
        ]
    if isinstance(value, dict):
        return {k: _text_parts(v) for k, v in value.items()}
    return value


class TestTable:
    def test_every_route_type_the_proxy_serves_has_a_row(self) -> None:
        """No call type the installed LiteLLM proxy routes falls to 'other' (unknown)."""
        routed = _proxy_route_types()
        assert len(routed) > 40
        assert sorted(n for n in routed if call_type(n) is UNKNOWN) == []

    @pytest.mark.parametrize(
        ("name", "endpoint", "key"),
        [
            ("acompletion", "chat", "metadata"),
            ("atext_completion", "text_completion", "metadata"),
            ("aresponses", "responses", "litellm_metadata"),
            ("anthropic_messages", "messages", "litellm_metadata"),
            ("aembedding", "embeddings", "metadata"),
            ("image_generation", "image_generation", "metadata"),
            ("aspeech", "speech", "metadata"),
            ("transcription", "transcription", "metadata"),
            ("rerank", "rerank", "metadata"),
            ("acreate_batch", "batches", "litellm_metadata"),
            ("acreate_file", "files", "litellm_metadata"),
            ("pass_through_endpoint", "pass_through", "metadata"),
            ("_arealtime", "realtime", "metadata"),
        ],
    )
    def test_endpoint_and_metadata_dict(self, name: str, endpoint: str, key: str) -> None:
        """Each call type maps to its endpoint and to the metadata dict LiteLLM fills on its route."""
        row = call_type(litellm.types.utils.CallTypes(name) if name != "_arealtime" else name)
        assert (row.endpoint, row.metadata_key) == (endpoint, key)

    def test_the_request_url_decides_the_metadata_dict(self) -> None:
        """A pass-through request to an Anthropic-style path keeps its metadata where LiteLLM puts it there."""
        data = {"proxy_server_request": {"url": "http://proxy/anthropic/v1/messages"}}
        assert metadata_key(data, call_type("pass_through_endpoint")) == "litellm_metadata"
        assert metadata_key({}, call_type("pass_through_endpoint")) == "metadata"

    def test_long_urls_answer_the_same_and_are_not_remembered(self) -> None:
        """A URL with a long query string gets the same dict as its path, and the memo of URLs stays small."""
        from costkit_litellm.litellm_adapter import call_types

        row = call_type("pass_through_endpoint")
        for path, key in (("/anthropic/v1/messages", "litellm_metadata"), ("/v1/chat/completions", "metadata")):
            before = call_types._metadata_key_for_url.cache_info().currsize
            for n in range(50):
                long = {"proxy_server_request": {"url": f"http://proxy{path}?pad={'x' * 300}{n}"}}
                assert metadata_key(long, row) == key
            assert call_types._metadata_key_for_url.cache_info().currsize == before
            assert metadata_key({"proxy_server_request": {"url": f"http://proxy{path}?n=1"}}, row) == key

    def test_unknown_call_types_are_unbounded_never_free(self) -> None:
        """A call type the table does not know is 'other' and unbounded: budgets refuse or hold it."""
        row = call_type("a_brand_new_call")
        assert row is UNKNOWN and row.bound == "unbounded" and row.billable

    def test_only_chat_is_cached_or_routed(self) -> None:
        """The cache and the tier router only ever see chat completions."""
        assert [r.endpoint for r in ROWS if r.cacheable or r.routable] == ["chat"]

    def test_endpoint_labels_are_a_bounded_unique_set(self) -> None:
        """Endpoint labels (a metric label) are few, unique per row, and include 'other'."""
        assert len(ENDPOINTS) == len(ROWS) + 1 < 60 and ENDPOINTS[-1] == "other"


class TestProviderOverride:
    @pytest.mark.parametrize(
        "name",
        ["acompletion", "atext_completion", "aresponses", "anthropic_messages", "aembedding", "aspeech", "rerank"],
    )
    def test_a_call_priced_by_its_deployment_may_not_name_a_provider(self, name: str) -> None:
        """Every call type a deployment's model serves and LiteLLM prices refuses a client's custom_llm_provider."""
        from costkit_litellm.errors import RequestRejected
        from costkit_litellm.litellm_adapter.callback import _refuse_provider_override

        row = call_type(litellm.types.utils.CallTypes(name))
        _refuse_provider_override({"model": "m"}, row)  # absent: nothing to refuse
        with pytest.raises(RequestRejected) as refused:
            _refuse_provider_override({"model": "m", "custom_llm_provider": "hosted_vllm"}, row)
        assert (refused.value.status, refused.value.error_type) == (400, "provider_override_not_allowed")

    @pytest.mark.parametrize("name", ["acreate_batch", "acreate_file", "aretrieve_batch"])
    def test_routes_that_take_a_provider_as_an_argument_keep_it(self, name: str) -> None:
        """Files and batches name their provider in the request (LiteLLM needs it there): not refused."""
        from costkit_litellm.litellm_adapter.callback import _refuse_provider_override

        _refuse_provider_override({"custom_llm_provider": "openai"}, call_type(litellm.types.utils.CallTypes(name)))


class TestMetadataPerRoute:
    def test_responses_metadata_is_read_from_litellm_metadata(self) -> None:
        """On /v1/responses the proxy's own datetime is not read as a client attribute (it was a 400)."""
        data: dict[str, Any] = {
            "model": "mini",
            "input": "hi",
            "metadata": {"feature": "search"},
            "litellm_metadata": {
                "litellm_received_at": datetime.datetime.now(datetime.timezone.utc),
                "user_api_key_hash": "hash-1",
                "user_api_key_team_id": "team-1",
                "headers": {"x-costkit-session": "s-1"},
            },
            "proxy_server_request": {"url": "http://proxy/v1/responses"},
        }
        row = call_type("aresponses")
        ctx = from_request(data, None, metadata_key(data, row), row.endpoint)
        assert ctx.attributes == {"feature": "search"}
        assert (ctx.api_key_hash, ctx.team_id, ctx.session_id, ctx.endpoint) == ("hash-1", "team-1", "s-1", "responses")

    def test_messages_without_client_metadata(self) -> None:
        """/v1/messages with no client metadata and no requester_metadata has no attributes, and no error."""
        data = {
            "model": "mini",
            "messages": [{"role": "user", "content": "hi"}],
            "litellm_metadata": {"litellm_received_at": datetime.datetime.now(), "user_api_key_hash": "h"},
        }
        ctx = from_request(data, None, "litellm_metadata", "messages")
        assert dict(ctx.attributes) == {} and ctx.api_key_hash == "h"


class TestWorstCaseInputs:
    def test_every_billable_field_is_counted(self) -> None:
        """prompt, input, instructions, system, tools and response_format all add input tokens."""
        base = {"messages": [{"role": "user", "content": "hi"}]}
        alone = input_tokens("gpt-4o-mini", base)
        for field, value in [
            ("prompt", "word " * 400),
            ("input", "word " * 400),
            ("instructions", "word " * 400),
            ("system", "word " * 400),
            ("tools", [{"type": "function", "function": {"name": "f", "description": "word " * 400}}]),
            ("response_format", {"type": "json_schema", "json_schema": {"description": "word " * 400}}),
        ]:
            assert input_tokens("gpt-4o-mini", {**base, field: value}) >= alone + 400, field

    def test_never_fewer_than_a_token_per_four_characters(self) -> None:
        """A text the tokenizer packs tightly is still held at one token per 4 characters of it."""
        assert input_tokens("gpt-4o-mini", {"prompt": "a" * 40_000}) >= 10_000

    def test_a_part_whose_type_is_not_a_string_is_text_not_an_error(self) -> None:
        """A malformed part (``"type": {...}``) is counted as text; it never makes the estimate raise."""
        part = {"type": {"type": "image_url"}, "text": "word " * 400}
        assert input_tokens("gpt-4o-mini", {"messages": [{"role": "user", "content": [part]}]}) >= 400
        assert input_tokens("gpt-4o-mini", {"messages": [{"type": ["image"], "content": "x"}]}) > 0

    @settings(max_examples=300, deadline=None)
    @given(st.dictionaries(st.sampled_from(BILLABLE), JSON_VALUES, max_size=4))
    def test_every_billable_field_counts_in_the_character_floor(self, body: dict[str, Any]) -> None:
        """Whatever the tokenizer says, a body is held at one token per 4 characters of each billable
        field's JSON (images out), each field once."""
        floor = sum(
            math.ceil(len(json.dumps(_text_parts(body[f]), ensure_ascii=False, default=str)) / 4)
            for f in BILLABLE
            if body.get(f) not in (None, "", [])
        )
        assert input_tokens("gpt-4o-mini", body) >= floor

    def test_images_count_by_litellm_rule_not_by_their_base64(self) -> None:
        """A 200 kB base64 image is held at LiteLLM's image tokens (chat and Responses), not at 50k 'tokens'."""
        url = "data:image/png;base64," + "A" * 200_000
        chat = {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}}]}]}
        responses = {"input": [{"role": "user", "content": [{"type": "input_image", "image_url": url}]}]}
        for body in (chat, responses):
            assert 50 < input_tokens("gpt-4o-mini", body) < 5_000

    def test_non_chat_calls_have_a_conversation_for_the_breaker(self) -> None:
        """Embeddings inputs become one message, so the breaker tells two different inputs apart."""
        assert conversation({"input": "one"}) != conversation({"input": "two"})
        assert conversation({"messages": [{"role": "user", "content": "x"}]}) == [{"role": "user", "content": "x"}]

    def test_speech_is_held_at_characters_times_price(self) -> None:
        """tts-1 speech is held at LiteLLM's per-character price x the characters."""
        estimator = Estimator(Pricing(PricingConfig(), LiteLLMPriceSource()), LiteLLMPriceSource())
        estimate = estimator.worst_case(call_type("aspeech"), {"input": "x" * 100}, "tts-1", None)
        assert estimate.amount == 100 * 15_000

    def test_batches_are_unbounded(self) -> None:
        """A batch's worst case is unknown before it runs: the estimate names its endpoint."""
        estimator = Estimator(Pricing(PricingConfig(), LiteLLMPriceSource()), LiteLLMPriceSource())
        estimate = estimator.worst_case(call_type("acreate_batch"), {}, "mini", None)
        assert estimate.unbounded == "batches" and estimate.amount is None
