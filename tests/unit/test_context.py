"""RequestContext is parsed the same way from pre-call data and logging payloads recorded from a real proxy."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from costkit_litellm.config import RequestConfig
from costkit_litellm.context import from_json, from_logging_payload, from_request, sampling_params
from costkit_litellm.errors import BadRequestMetadata

RECORDED = Path(__file__).resolve().parents[1] / "fixtures" / "recorded"


def _load(name: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = json.loads((RECORDED / f"{name}.json").read_text())
    return rows


PRE = _load("pre")
SUCCESS = _load("success")
FAILURE = _load("failure")


class TestRecordedProxyPayloads:
    def test_tagged_request_pre_call(self) -> None:
        """Tags from metadata, top-level tags and the x-litellm-tags header all arrive, key:value ones as attributes."""
        ctx = from_request(PRE[0]["data"])
        assert ctx.call_id == "95639fab-91bb-4f51-8654-28dc1e447ea7"
        assert ctx.model == "gpt-4o-mini"
        assert set(ctx.tags) == {"team:growth", "feature:email_writer", "beta", "top:level"}
        assert ctx.attributes["feature"] == "email_writer"
        assert ctx.attributes["team"] == "growth"
        assert ctx.user_id == "123"
        assert ctx.end_user == "enduser-7"
        assert ctx.session_id == "sess-1"  # the x-costkit-session header wins over metadata.session_id
        assert ctx.api_key_hash == "litellm_proxy_master_key"
        assert ctx.team_id is None
        assert ctx.params.temperature == 0.0 and ctx.params.max_tokens == 50

    def test_same_request_post_call_matches_pre_call(self) -> None:
        """The success payload of the same call parses to the same identity, tags and attributes."""
        pre = from_request(PRE[0]["data"])
        post = from_logging_payload(SUCCESS[0]["slo"])
        for name in ("call_id", "model", "user_id", "end_user", "api_key_hash", "team_id", "session_id"):
            assert getattr(pre, name) == getattr(post, name), name
        assert set(pre.tags) == set(post.tags)
        assert dict(pre.attributes) == dict(post.attributes)

    def test_streaming_request_with_litellm_session(self) -> None:
        """A streaming request's litellm_session_id becomes the session; stream is seen."""
        ctx = from_request(PRE[2]["data"])
        assert ctx.session_id == "ls-1"
        assert ctx.params.stream is True
        assert ctx.user_id is None  # LiteLLM's placeholder user of the master key is not a user

    def test_failure_payload(self) -> None:
        """A failure payload parses leniently with the model group the client asked for."""
        ctx = from_logging_payload(FAILURE[0]["slo"])
        assert ctx.model == "failing"
        assert ctx.call_id == "3e4564b9-bd49-4038-9434-d05218e9b429"

    def test_stash_round_trip(self) -> None:
        """A context stashed as JSON reads back equal (how it reaches the logging callbacks)."""
        ctx = from_request(PRE[0]["data"])
        again = from_json(json.loads(json.dumps(ctx.to_json())), ctx.params)
        assert again == ctx


def _data(**metadata: Any) -> dict[str, Any]:
    return {"model": "m", "messages": [], "metadata": metadata}


class TestIdentity:
    def test_team_only_from_the_key(self) -> None:
        """A client cannot claim a team by metadata: team comes from the authenticated key only."""
        ctx = from_request(_data(team="other-team", user_api_key_team_id="t-1"))
        assert ctx.team_id == "t-1"
        assert ctx.attributes["team"] == "other-team"

    def test_declared_user_overrides_key_user(self) -> None:
        """metadata.user_id names the application's user; else the key's user."""
        assert from_request(_data(user_id="123", user_api_key_user_id="u-key")).user_id == "123"
        assert from_request(_data(user_api_key_user_id="u-key")).user_id == "u-key"

    def test_key_user_is_kept_apart_from_the_declared_user(self) -> None:
        """key_user_id is the key's user only: metadata.user_id never sets it, and it survives to_json."""
        context = from_request(_data(user_id="123", user_api_key_user_id="u-key"))
        assert (context.user_id, context.key_user_id) == ("123", "u-key")
        assert from_request(_data(user_id="123")).key_user_id is None
        assert from_json(context.to_json()).key_user_id == "u-key"
        assert context.scope_value("user", "authenticated") == "u-key"
        assert context.scope_value("end_user", "authenticated") is None

    @pytest.mark.parametrize(
        ("scope", "expected"),
        [
            ("global", "*"),
            ("user", "123"),
            ("team", "t-1"),
            ("end_user", "eu"),
            ("tag:feature", "chat"),
            ("api_key", "h"),
        ],
    )
    def test_scope_values(self, scope: str, expected: str) -> None:
        """Each budget/cache scope reads the right field."""
        data = _data(user_id="123", user_api_key_team_id="t-1", user_api_key_hash="h", feature="chat")
        data["user"] = "eu"
        assert from_request(data).scope_value(scope) == expected

    def test_unknown_scope_is_an_error(self) -> None:
        """An unknown scope name is a programming error, not silently None."""
        with pytest.raises(ValueError, match="unknown scope"):
            from_request(_data()).scope_value("planet")


class TestTagsAndAttributes:
    def test_sources_are_merged_and_deduplicated(self) -> None:
        """Tags from all three sources merge in order without duplicates."""
        data = _data(tags=["a", "feature:x"], headers={"X-LiteLLM-Tags": "b, a"})
        data["tags"] = ["c"]
        assert from_request(data).tags == ("a", "feature:x", "c", "b")

    def test_metadata_key_wins_over_tag(self) -> None:
        """An explicit metadata key overrides a key:value tag of the same key."""
        ctx = from_request(_data(tags=["feature:from_tag"], feature="from_metadata"))
        assert ctx.attributes["feature"] == "from_metadata"

    def test_structured_metadata_values_are_not_attributes(self) -> None:
        """Nested dicts and lists in metadata are not turned into attributes."""
        ctx = from_request(_data(extra={"a": 1}, items=[1], count=3, flag=True))
        assert "extra" not in ctx.attributes and "items" not in ctx.attributes
        assert ctx.attributes["count"] == "3"

    def test_attribute_count_is_capped(self) -> None:
        """Metadata keys beyond max_attributes are ignored, not an error."""
        ctx = from_request(_data(**{f"k{i}": "v" for i in range(50)}), RequestConfig(max_attributes=5))
        assert len(ctx.attributes) == 5


class TestMalformedMetadata:
    def test_non_string_tag_is_a_400(self) -> None:
        """A tag that is not a string is refused with its position."""
        with pytest.raises(BadRequestMetadata, match=r"metadata\.tags\[1\] must be a string, got int") as info:
            from_request(_data(tags=["ok", 7]))
        assert info.value.status == 400

    def test_too_many_tags_is_a_400(self) -> None:
        """10,000 tags are refused, saying how many and the limit."""
        with pytest.raises(BadRequestMetadata, match="has 10000 tags"):
            from_request(_data(tags=[f"t{i}" for i in range(10_000)]))

    def test_huge_value_is_a_400(self) -> None:
        """A megabyte-long attribute is refused, saying how long and the limit."""
        with pytest.raises(BadRequestMetadata, match=r"metadata\.feature is 1000000 characters long"):
            from_request(_data(feature="x" * 1_000_000))

    def test_tags_not_a_list_is_a_400(self) -> None:
        """tags given as a dict is refused."""
        with pytest.raises(BadRequestMetadata, match="must be a list of strings"):
            from_request(_data(tags={"a": 1}))

    def test_logging_payload_is_lenient(self) -> None:
        """After the call, malformed tags are dropped, never raised."""
        payload = dict(SUCCESS[0]["slo"])
        payload["request_tags"] = ["ok", 3, "x" * 10_000]
        assert from_logging_payload(payload).tags == ("ok",)

    def test_non_mapping_metadata_is_ignored(self) -> None:
        """metadata that is not a mapping does not crash the parser."""
        ctx = from_request({"model": "m", "metadata": "oops"})
        assert ctx.tags == () and ctx.attributes == {}


class TestSamplingParams:
    def test_defaults(self) -> None:
        """An omitted temperature stays None (OpenAI's default is 1.0, not deterministic)."""
        params = sampling_params({})
        assert params.temperature is None and params.n == 1 and params.max_tokens is None

    def test_max_completion_tokens_and_stop_string(self) -> None:
        """max_completion_tokens counts as max_tokens; a single stop string becomes a tuple."""
        params = sampling_params({"max_completion_tokens": 20, "stop": "END", "n": 3, "seed": 7})
        assert (params.max_tokens, params.stop, params.n, params.seed) == (20, ("END",), 3, 7)

    def test_tools_and_response_format_are_canonical(self) -> None:
        """Equal tools in different key order give the same canonical string."""
        a = sampling_params({"tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}]})
        b = sampling_params({"tools": [{"function": {"parameters": {}, "name": "f"}, "type": "function"}]})
        assert a.tools == b.tools and a.tools is not None

    def test_boolean_is_not_a_number(self) -> None:
        """max_tokens: true is not read as 1."""
        assert sampling_params({"max_tokens": True}).max_tokens is None


class TestNoCache:
    @pytest.mark.parametrize(
        ("headers", "metadata"),
        [
            ({"Cache-Control": "no-cache"}, {}),
            ({"cache-control": "no-store, max-age=0"}, {}),
            ({"x-costkit-cache": "off"}, {}),
            ({}, {"cache": False}),
            ({}, {"cache": "false"}),
        ],
        ids=["no-cache", "no-store", "header-off", "metadata-false", "metadata-string"],
    )
    def test_client_can_opt_out_of_the_cache(self, headers: dict[str, str], metadata: dict[str, Any]) -> None:
        """Cache-Control no-cache/no-store, x-costkit-cache: off, or metadata cache: false mark no_cache."""
        assert from_request(_data(headers=headers, **metadata)).no_cache is True

    def test_default_allows_the_cache(self) -> None:
        """Without any opt-out the request may use the cache, and `cache` is not an attribute."""
        ctx = from_request(_data(cache=True))
        assert ctx.no_cache is False and "cache" not in ctx.attributes


class TestOddParameters:
    @pytest.mark.parametrize("stop", [5, True, {"a": 1}, [1, None, "END"], 1.5])
    def test_odd_stop_values_are_no_stop_sequence(self, stop: Any) -> None:
        """A stop that is not a string or a list of strings is no stop sequence, never raised (issue 9 item 5)."""
        ctx = from_request(_data() | {"stop": stop})
        assert ctx.params.stop == (("END",) if isinstance(stop, list) else ())

    @pytest.mark.parametrize("name", ["max_tokens", "max_completion_tokens", "max_output_tokens", "n"])
    def test_counts_past_int32_are_a_400_naming_the_field(self, name: str) -> None:
        """A count too large for any provider (and for an estimate) is a 400 that names the parameter."""
        with pytest.raises(BadRequestMetadata, match=rf"^{name} must be at most 2147483647, got 10{{30}}") as info:
            from_request(_data() | {name: 10**30})
        assert info.value.status == 400
        with pytest.raises(BadRequestMetadata, match=name):
            from_request(_data() | {name: 1e30})

    @pytest.mark.parametrize("value", ["5", -5, 0, None, [], 2.5, float("nan")])
    def test_odd_counts_are_read_leniently(self, value: Any) -> None:
        """Strings, negatives and non-integers are accepted as the proxy accepts them (no limit assumed)."""
        ctx = from_request(_data() | {"max_tokens": value, "n": value})
        assert ctx.params.n >= 1

    def test_request_params_keep_the_body_but_messages(self) -> None:
        """The raw parameters reach the context (read-only) for the cache key; messages are not copied."""
        ctx = from_request({"model": "m", "messages": [], "logit_bias": {"1": 5}})
        assert dict(ctx.request_params) == {"model": "m", "logit_bias": {"1": 5}}


class TestResponsesRouteMetadata:
    @staticmethod
    def responses_data(client: dict[str, Any] | None) -> dict[str, Any]:
        """The pre-call data of /v1/responses as the proxy builds it: its fields in litellm_metadata."""
        proxy: dict[str, Any] = {
            "user_api_key_hash": "h-1",
            "user_api_key_team_id": "t-1",
            "litellm_received_at": datetime.now(timezone.utc),
            "headers": {},
        }
        data: dict[str, Any] = {"model": "m", "input": "hi", "litellm_metadata": proxy}
        if client is not None:
            data["metadata"] = client
            proxy["requester_metadata"] = dict(client)
        return data

    def test_proxy_fields_are_not_client_attributes(self) -> None:
        """Without client metadata, the proxy's own fields (a datetime) are not client attributes (was a 400)."""
        ctx = from_request(self.responses_data(None), metadata_key="litellm_metadata")
        assert ctx.attributes == {} and ctx.api_key_hash == "h-1" and ctx.team_id == "t-1"

    def test_identity_comes_from_litellm_metadata_when_the_client_sends_metadata(self) -> None:
        """With client metadata on /v1/responses, the key and team still come from the proxy's dict."""
        ctx = from_request(self.responses_data({"feature": "chat"}), metadata_key="litellm_metadata")
        assert (ctx.api_key_hash, ctx.team_id, ctx.attributes["feature"]) == ("h-1", "t-1", "chat")
