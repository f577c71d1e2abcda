"""What the semantic cache may store and under which keys (pure rules, no backend)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from costkit_litellm.cache.config import CacheConfig
from costkit_litellm.cache.scope import UNKEYED_PARAMS, Decision, decide, parse_tenant, tenant_tag
from costkit_litellm.config import parse_config
from costkit_litellm.context import from_request
from costkit_litellm.errors import ConfigError

EMBEDDER = "local/all-MiniLM-L6-v2"
QUESTION = "How do I reset my password?"


def request(content: Any = QUESTION, *, history: list[dict[str, Any]] | None = None, **params: Any) -> dict[str, Any]:
    """An OpenAI-style body from a proxy key of team t1, temperature 0 unless overridden."""
    body: dict[str, Any] = {
        "model": "mini",
        "messages": [*(history or []), {"role": "user", "content": content}],
        "temperature": 0,
        "metadata": {"user_api_key_hash": "key-1", "user_api_key_team_id": "t1"},
        **params,
    }
    return {k: v for k, v in body.items() if v is not None}


def decision(body: dict[str, Any], config: CacheConfig | None = None, model: str | None = None) -> Decision:
    context = from_request(body)
    return decide(context, body["messages"], model or context.model, config or CacheConfig(enabled=True), EMBEDDER)


def keys(body: dict[str, Any], config: CacheConfig | None = None) -> Any:
    found = decision(body, config)
    assert found.keys is not None, found.skip
    return found.keys


class TestWhatIsCacheable:
    def test_explicit_zero_temperature_is_cacheable(self) -> None:
        """A plain question at temperature 0 gets keys and no skip reason."""
        found = decision(request())
        assert found.skip is None and found.keys is not None
        assert found.keys.text == QUESTION

    @pytest.mark.parametrize("temperature", [None, 0.7, 1])
    def test_omitted_or_nonzero_temperature_is_skipped(self, temperature: float | None) -> None:
        """An omitted temperature (1.0 at OpenAI) or any non-zero one is skipped as ``temperature``."""
        assert decision(request(temperature=temperature)).skip == "temperature"

    def test_nonzero_temperature_allowed_by_config_is_scoped_by_it(self) -> None:
        """With allow_nonzero_temperature, temperatures 0.7 and 0.2 never share a scope."""
        config = CacheConfig(enabled=True, allow_nonzero_temperature=True)
        assert keys(request(temperature=0.7), config).scope != keys(request(temperature=0.2), config).scope

    def test_streaming_is_skipped(self) -> None:
        """A streaming request is skipped: a hit is never replayed as a stream."""
        assert decision(request(stream=True)).skip == "stream"

    def test_several_choices_are_skipped(self) -> None:
        """n > 1 is skipped."""
        assert decision(request(n=3)).skip == "n"

    def test_tools_are_skipped_unless_allowed(self) -> None:
        """Tools make a request uncacheable unless allow_tools; then the tools are part of the scope."""
        tool = {"type": "function", "function": {"name": "lookup", "parameters": {}}}
        other = {"type": "function", "function": {"name": "search", "parameters": {}}}
        assert decision(request(tools=[tool])).skip == "tools"
        allowed = CacheConfig(enabled=True, allow_tools=True)
        assert keys(request(tools=[tool]), allowed).scope != keys(request(tools=[other]), allowed).scope

    @pytest.mark.parametrize(
        "how",
        [
            {"metadata": {"user_api_key_hash": "key-1", "cache": False}},
            {"metadata": {"user_api_key_hash": "key-1", "headers": {"Cache-Control": "no-cache"}}},
            {"metadata": {"user_api_key_hash": "key-1", "headers": {"x-costkit-cache": "off"}}},
        ],
    )
    def test_client_opt_out_is_skipped(self, how: dict[str, Any]) -> None:
        """metadata cache: false, Cache-Control: no-cache or x-costkit-cache: off skip the cache."""
        assert decision(request(**how)).skip == "disabled_by_client"

    def test_only_enabled_model_groups_are_cached(self) -> None:
        """With model_groups, other groups are skipped; the routed-to group counts too."""
        config = CacheConfig(enabled=True, model_groups=("big",))
        assert decision(request(), config).skip == "model_group"
        assert decision(request(), config, model="big").skip is None

    def test_images_in_the_last_question_are_skipped(self) -> None:
        """A last user message with non-text parts is skipped (the embedding would ignore the image)."""
        parts = [{"type": "text", "text": "What is this?"}, {"type": "image_url", "image_url": {"url": "x"}}]
        assert decision(request(parts)).skip == "non_text_content"

    def test_text_parts_are_joined(self) -> None:
        """A last user message made of text parts is cacheable, keyed on its joined text."""
        parts = [{"type": "text", "text": "How do I reset"}, {"type": "text", "text": "my password?"}]
        assert keys(request(parts)).text == "How do I reset\nmy password?"

    def test_no_user_message_is_skipped(self) -> None:
        """A conversation without a user message is skipped."""
        body = request()
        body["messages"] = [{"role": "system", "content": "Be brief."}]
        assert decision(body).skip == "no_user_message"

    def test_missing_tenant_value_is_skipped_never_pooled(self) -> None:
        """With scope team, a request without a team is skipped rather than sharing a team-less pool."""
        body = request()
        body["metadata"] = {"user_api_key_hash": "key-1"}
        assert decision(body, CacheConfig(enabled=True, scope="team")).skip == "no_scope_value"


class TestScopes:
    def test_same_request_same_keys(self) -> None:
        """The same request twice gets the same scope and entry id."""
        assert keys(request()) == keys(request())

    def test_surrounding_whitespace_does_not_change_the_exact_key(self) -> None:
        """Leading and trailing whitespace of the question is not part of the exact key."""
        assert keys(request(f"  {QUESTION}\n")).entry_id == keys(request()).entry_id

    def test_paraphrase_shares_the_scope_but_not_the_exact_key(self) -> None:
        """A reworded question is looked up in the same scope (for the vector search) under another exact key."""
        a, b = keys(request()), keys(request("How can I reset my password?"))
        assert a.scope == b.scope and a.entry_id != b.entry_id

    @pytest.mark.parametrize(
        "change",
        [
            {"model": "big"},
            {"max_tokens": 50},
            {"stop": ["\n"]},
            {"seed": 7},
            {"top_p": 0.5},
            {"response_format": {"type": "json_object"}},
        ],
    )
    def test_sampling_parameters_and_model_split_scopes(self, change: dict[str, Any]) -> None:
        """Model group, max_tokens, stop, seed, top_p and response_format are each part of the scope."""
        assert keys(request(**change)).scope != keys(request()).scope

    @pytest.mark.parametrize(
        "change",
        [
            {"logit_bias": {"1734": -100}},
            {"presence_penalty": 1.5},
            {"frequency_penalty": -0.5},
            {"reasoning_effort": "high"},
            {"logprobs": True},
            {"top_logprobs": 3},
            {"service_tier": "flex"},
            {"prediction": {"type": "content", "content": "Reset it in Settings."}},
            {"parallel_tool_calls": False},
            {"modalities": ["text", "audio"]},
            {"fallbacks": ["big"]},
            {"a_parameter_from_next_year": {"x": 1}},
            {"stop": 5},
        ],
    )
    def test_every_parameter_but_the_allow_list_splits_scopes(self, change: dict[str, Any]) -> None:
        """Each parameter that can change the answer, and any unknown one, is part of the scope (issue 9 item 6)."""
        assert keys(request(**change)).scope != keys(request()).scope

    @pytest.mark.parametrize(
        "change",
        [
            {"user": "someone"},
            {"metadata": {"user_api_key_hash": "key-1", "user_api_key_team_id": "t1", "feature": "x"}},
            {"stream": False},
            {"stream_options": {"include_usage": True}},
            {"timeout": 30},
            {"request_timeout": 5},
            {"extra_headers": {"x-trace": "1"}},
            {"num_retries": 3},
            {"store": True},
            {"litellm_call_id": "another-call"},
            {"proxy_server_request": {"url": "/x"}},
            {"tags": ["a"]},
            {"temperature": 0.0},
            {"logit_bias": None},
        ],
    )
    def test_allow_listed_parameters_share_the_scope(self, change: dict[str, Any]) -> None:
        """The documented allow-list, the proxy's plumbing, empty values and 0.0 for 0 share a scope."""
        assert keys(request(**change)).scope == keys(request()).scope

    def test_allow_list_is_short_and_documented(self) -> None:
        """The allow-list is the documented one: each name appears in the README's cache section."""
        readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
        readme = readme.split("## Semantic cache", 1)[1].split("\n## ", 1)[0]
        missing = [name for name in sorted(UNKEYED_PARAMS) if f"`{name}`" not in readme]
        assert not missing and len(UNKEYED_PARAMS) <= 20

    def test_parameters_nested_too_deep_are_skipped(self) -> None:
        """A parameter nested deeper than can be keyed skips the cache instead of failing the request."""
        deep: Any = 1
        for _ in range(100_000):
            deep = [deep]
        assert decision(request(logit_bias=deep)).skip == "unreadable_params"

    def test_earlier_turns_split_scopes(self) -> None:
        """The same last question after different earlier turns lives in different scopes."""
        french = [{"role": "user", "content": "Translate to French: cat"}, {"role": "assistant", "content": "chat"}]
        german = [{"role": "user", "content": "Translate to German: cat"}, {"role": "assistant", "content": "Katze"}]
        assert keys(request("And dog?", history=french)).scope != keys(request("And dog?", history=german)).scope

    def test_fields_of_the_last_question_split_scopes(self) -> None:
        """The last user message's other fields (``name``) are part of the scope: the model sees them."""
        alice, bob = request(), request()
        alice["messages"][-1]["name"] = "alice"
        bob["messages"][-1]["name"] = "bob"
        assert keys(alice).scope != keys(bob).scope
        assert keys(alice).scope != keys(request()).scope

    def test_system_prompt_splits_scopes(self) -> None:
        """A different system prompt is a different scope."""
        a = request(history=[{"role": "system", "content": "Answer in English."}])
        b = request(history=[{"role": "system", "content": "Answer in Spanish."}])
        assert keys(a).scope != keys(b).scope

    def test_empty_message_fields_do_not_split_scopes(self) -> None:
        """An earlier turn with ``name: None`` hashes like the same turn without the field."""
        plain = [{"role": "assistant", "content": "Hi"}]
        noisy: list[dict[str, Any]] = [{"role": "assistant", "content": "Hi", "name": None, "tool_calls": []}]
        assert keys(request(history=plain)).scope == keys(request(history=noisy)).scope

    @pytest.mark.parametrize(
        ("scope", "first", "second"),
        [
            ("api_key", {"user_api_key_hash": "key-1"}, {"user_api_key_hash": "key-2"}),
            ("team", {"user_api_key_team_id": "t1"}, {"user_api_key_team_id": "t2"}),
            ("user", {"user_id": "alice"}, {"user_id": "bob"}),
        ],
    )
    def test_tenants_never_share_a_scope(self, scope: str, first: dict[str, str], second: dict[str, str]) -> None:
        """Two values of the configured tenant scope never share a scope or an exact key."""
        config = CacheConfig(enabled=True, scope=scope)  # type: ignore[arg-type]
        a, b = request(metadata=first), request(metadata=second)
        assert keys(a, config).tenant != keys(b, config).tenant
        assert keys(a, config).scope != keys(b, config).scope
        assert keys(a, config).entry_id != keys(b, config).entry_id

    def test_end_users_never_share_a_scope(self) -> None:
        """With scope end_user, OpenAI's ``user`` field separates entries."""
        config = CacheConfig(enabled=True, scope="end_user")
        assert keys(request(user="u1"), config).scope != keys(request(user="u2"), config).scope

    def test_global_scope_shares_across_keys(self) -> None:
        """With scope global, two API keys share entries."""
        config = CacheConfig(enabled=True, scope="global")
        a = request(metadata={"user_api_key_hash": "key-1"})
        b = request(metadata={"user_api_key_hash": "key-2"})
        assert keys(a, config).entry_id == keys(b, config).entry_id

    def test_the_embedder_is_part_of_the_scope(self) -> None:
        """Entries embedded by another model are never compared with this one's vectors."""
        body = request()
        context = from_request(body)
        a = decide(context, body["messages"], "mini", CacheConfig(enabled=True), EMBEDDER).keys
        b = decide(context, body["messages"], "mini", CacheConfig(enabled=True), "text-embedding-3-small").keys
        assert a is not None and b is not None and a.scope != b.scope

    @pytest.mark.parametrize("scope", ["user", "end_user"])
    def test_a_user_a_client_names_stays_within_its_key(self, scope: str) -> None:
        """Under the client-named scopes user and end_user, another key naming the same user gets another scope
        (it can neither read nor write the first key's entries); the same key keeps one scope for that user."""
        config = CacheConfig(enabled=True, scope=scope)  # type: ignore[arg-type]
        named = {"user": "alice", "metadata": {"user_api_key_hash": "key-1", "user_id": "alice"}}
        other = {"user": "alice", "metadata": {"user_api_key_hash": "key-2", "user_id": "alice"}}
        mine, again, theirs = (
            keys(request(**named), config),
            keys(request(**named), config),
            keys(request(**other), config),
        )
        assert mine.scope == again.scope and mine.scope != theirs.scope
        assert mine.tenant == theirs.tenant  # `costkit cache clear --scope user:alice` still clears both

    @pytest.mark.parametrize(
        ("scope", "digest"),
        [
            ("api_key", "6319a0d4caf611bd1c0ce28d7bbddbcdfeff18c58daf6806b05bcf3e266b166a"),
            ("team", "554ed6bd5e261a2b52fded14b47153cb215300a27e1eadd5324b0f8454afd9e2"),
            ("global", "ce3983c250131590c33c32160f94c70a192511827baebf76895b1d26b67262bb"),
        ],
    )
    def test_scopes_the_key_decides_keep_their_keys(self, scope: str, digest: str) -> None:
        """The scopes a client cannot name keep the keys they had before (no cold cache on upgrade): pinned digests."""
        assert keys(request(), CacheConfig(enabled=True, scope=scope)).scope == digest  # type: ignore[arg-type]


class TestTenantSpecs:
    def test_cli_scope_spec_names_the_same_tenant(self) -> None:
        """``--scope team:t1`` names the tenant tag that team t1's entries carry."""
        assert parse_tenant("team:t1") == tenant_tag("team", "t1")
        assert parse_tenant("global") == tenant_tag("global", "*")

    @pytest.mark.parametrize("spec", ["team", "teams:t1", "user:", "tag:feature"])
    def test_malformed_scope_spec_is_refused(self, spec: str) -> None:
        """A spec without a known scope and a value is a ValueError."""
        with pytest.raises(ValueError, match="not a cache scope"):
            parse_tenant(spec)


class TestConfig:
    def test_defaults_are_off_and_safe(self) -> None:
        """Off by default; when on: api_key scope, explicit temperature 0 only, no tools, flat index, auto backend."""
        config = parse_config({}).cache
        assert not config.enabled
        assert (config.scope, config.allow_nonzero_temperature, config.allow_tools) == ("api_key", False, False)
        assert (config.index, config.backend, config.similarity_threshold) == ("flat", "auto", None)

    @pytest.mark.parametrize(
        ("raw", "path"),
        [
            ({"scope": "teams"}, "costkit.cache.scope"),
            ({"ttl": 5}, "costkit.cache.ttl"),
            ({"index": "ivf"}, "costkit.cache.index"),
            ({"similarity_threshold": 1.5}, "costkit.cache.similarity_threshold"),
            ({"max_entries": 0}, "costkit.cache.max_entries"),
            ({"verify": {"guard": True}}, "costkit.cache.verify.guard"),
        ],
    )
    def test_bad_values_name_the_key(self, raw: dict[str, Any], path: str) -> None:
        """Unknown keys and impossible values fail validation naming the full key path."""
        with pytest.raises(ConfigError, match=path.replace(".", r"\.")):
            parse_config({"cache": {"enabled": True, **raw}})

    def test_threshold_set_twice_is_refused(self) -> None:
        """similarity_threshold in both cache and cache.verify is an error."""
        with pytest.raises(ConfigError, match="set similarity_threshold once"):
            parse_config({"cache": {"similarity_threshold": 0.9, "verify": {"similarity_threshold": 0.8}}})

    def test_unknown_guard_is_refused(self) -> None:
        """A misspelt guard name in verify.disabled_guards fails naming it."""
        with pytest.raises(ConfigError, match="numbres"):
            parse_config({"cache": {"verify": {"disabled_guards": ["numbres"]}}})

    def test_threshold_reaches_the_verifier_settings(self) -> None:
        """cache.similarity_threshold is the verifier's similarity threshold."""
        assert CacheConfig(similarity_threshold=0.93).verifier_settings().similarity_threshold == 0.93
