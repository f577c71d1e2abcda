"""The agent circuit breaker: loops, step limits, session spend caps, expiry, and the final-message mode."""

from __future__ import annotations

import contextlib
import json
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from costkit_litellm.budgets.breaker import caller_scope, most_repeated_tool_call, request_fingerprint, session_key
from costkit_litellm.config import parse_config
from costkit_litellm.context import RequestContext, SamplingParams
from costkit_litellm.errors import RequestAnswered, RequestRejected
from costkit_litellm.kit import CostKit
from costkit_litellm.money import Nano
from costkit_litellm.pipeline import Admission, Outcome
from costkit_litellm.pricing import ModelPrice
from costkit_litellm.store import MemoryStore

PRICE = ModelPrice(input_nano_per_mtok=10**9, output_nano_per_mtok=10**9, max_output_tokens=1000)


class Prices:
    def price(self, model: str) -> ModelPrice | None:
        return PRICE


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def make_kit(**breaker: Any) -> tuple[CostKit, Clock, CollectorRegistry]:
    clock = Clock()
    registry = CollectorRegistry()
    config = parse_config({"breaker": {"enabled": True, **breaker}})
    kit = CostKit(config, store=MemoryStore(clock=clock), price_source=Prices(), registry=registry, clock=clock)
    return kit, clock, registry


_ids = iter(range(10**9))


def ctx(session: str | None = "s1", **identity: str) -> RequestContext:
    return RequestContext(
        call_id=f"c{next(_ids)}", model="m", session_id=session, params=SamplingParams(max_tokens=100), **identity
    )


ALICE = {"api_key_hash": "hash-alice", "user_id": "alice", "key_user_id": "alice", "team_id": "team-a"}
BOB = {"api_key_hash": "hash-bob", "user_id": "bob", "key_user_id": "bob", "team_id": "team-b"}


async def spend(kit: CostKit, admission: Admission, nano: int) -> None:
    """Record the admitted call as a success that cost ``nano``."""
    outcome = Outcome(
        kind="success",
        context=admission.context,
        model="m",
        deployment_model=None,
        cost=Nano(nano),
        state=admission.state,
    )
    await kit.record(outcome)


def search(query: str, n: int) -> dict[str, Any]:
    return {
        "role": "assistant",
        "tool_calls": [
            {"id": f"t{n}", "type": "function", "function": {"name": "search", "arguments": json.dumps({"q": query})}}
        ],
    }


def agent_conversation(queries: list[str]) -> list[dict[str, Any]]:
    """An agent's history: a user task, then each search call and its tool result."""
    messages: list[dict[str, Any]] = [{"role": "user", "content": "Find the Python release date"}]
    for n, query in enumerate(queries):
        messages.append(search(query, n))
        messages.append({"role": "tool", "tool_call_id": f"t{n}", "content": "Pythons are large snakes."})
    return messages


class TestLoopDetection:
    def test_repeated_tool_call_is_counted_with_normalised_arguments(self) -> None:
        """The same call with reordered or re-spaced JSON arguments counts as the same call."""
        messages = agent_conversation(["Python"])
        messages.append(
            {
                "role": "assistant",
                "tool_calls": [{"function": {"name": "search", "arguments": '{ "q" :  "python" }'}}],
            }
        )
        call, count = most_repeated_tool_call(messages)
        assert call == ("search", '{"q":"python"}') and count == 2

    async def test_search_python_get_snake_loop_trips_at_n(self) -> None:
        """The third identical search in a session trips agent_loop_detected with a readable message."""
        kit, _, registry = make_kit(loop_threshold=3)
        await kit.admit(ctx(), 10, messages=agent_conversation(["Python", "Python"]))
        with pytest.raises(RequestRejected) as info:
            await kit.admit(ctx(), 10, messages=agent_conversation(["Python", "Python", "Python"]))
        assert info.value.status == 429 and info.value.error_type == "agent_loop_detected"
        assert "search" in info.value.message and "3 times" in info.value.message
        assert registry.get_sample_value("costkit_circuit_breaks_total", {"reason": "agent_loop_detected"}) == 1

    async def test_different_searches_do_not_trip(self) -> None:
        """An agent making progress (different queries) is not a loop."""
        kit, _, _ = make_kit(loop_threshold=2)
        await kit.admit(ctx(), 10, messages=agent_conversation(["Python", "Python release date 3.13"]))

    async def test_the_same_request_resent_trips(self) -> None:
        """The same normalised request sent N times in a session trips the breaker."""
        kit, _, _ = make_kit(loop_threshold=3)
        messages = [{"role": "user", "content": "Summarise   the report"}]
        await kit.admit(ctx(), 10, messages=messages)
        await kit.admit(ctx(), 10, messages=[{"role": "user", "content": "summarise the report"}])
        with pytest.raises(RequestRejected, match="same request was sent 3 times"):
            await kit.admit(ctx(), 10, messages=messages)

    def test_fingerprint_ignores_case_and_spacing(self) -> None:
        """Fingerprints of the same request written differently are equal; of different ones, not."""
        a = request_fingerprint("m", [{"role": "user", "content": "Hello  World"}])
        assert a == request_fingerprint("m", [{"role": "user", "content": "hello world"}])
        assert a != request_fingerprint("m", [{"role": "user", "content": "hello there"}])


class TestLimits:
    async def test_step_limit(self) -> None:
        """The call after max_steps in a session is refused with agent_step_limit."""
        kit, _, _ = make_kit(max_steps=3)
        for i in range(3):
            await kit.admit(ctx(), 10, messages=[{"role": "user", "content": f"step {i}"}])
        with pytest.raises(RequestRejected) as info:
            await kit.admit(ctx(), 10, messages=[{"role": "user", "content": "step 4"}])
        assert info.value.error_type == "agent_step_limit" and "4 calls (limit 3)" in info.value.message

    async def test_sessions_are_independent_and_calls_without_session_are_free(self) -> None:
        """Another session, or a call with no session, is not counted against a session."""
        kit, _, _ = make_kit(max_steps=1)
        await kit.admit(ctx("a"), 10, messages=[{"role": "user", "content": "x"}])
        await kit.admit(ctx("b"), 10, messages=[{"role": "user", "content": "x"}])
        await kit.admit(ctx(None), 10, messages=[{"role": "user", "content": "x"}])

    async def test_session_spend_cap(self) -> None:
        """A session that spent its cap is refused with agent_budget_exceeded."""
        kit, _, _ = make_kit(max_spend_usd="0.0003", loop_threshold=100)
        first = await kit.admit(ctx(), 100, messages=[{"role": "user", "content": "a"}])
        await spend(kit, first, 200_000)
        with pytest.raises(RequestRejected) as info:
            await kit.admit(ctx(), 100, messages=[{"role": "user", "content": "b"}])
        assert (
            info.value.error_type == "agent_budget_exceeded"
            and "spent $0.0002 of its $0.0003 limit" in info.value.message
        )

    async def test_session_expires_after_inactivity(self) -> None:
        """After inactivity_s without calls, the session's counters start again."""
        kit, clock, _ = make_kit(max_steps=1, inactivity_s=60)
        await kit.admit(ctx(), 10, messages=[{"role": "user", "content": "x"}])
        clock.now += 61
        await kit.admit(ctx(), 10, messages=[{"role": "user", "content": "y"}])

    async def test_final_message_mode_answers_instead_of_failing(self) -> None:
        """on_trip: final_message answers with the configured message naming the reason."""
        kit, _, _ = make_kit(max_steps=1, on_trip="final_message")
        await kit.admit(ctx(), 10, messages=[{"role": "user", "content": "x"}])
        with pytest.raises(RequestAnswered) as info:
            await kit.admit(ctx(), 10, messages=[{"role": "user", "content": "y"}])
        assert info.value.content == "I could not finish this task within its limits (it took too many steps)."
        assert info.value.reason == "agent_step_limit"

    async def test_admission_is_recorded_for_the_session_spend(self) -> None:
        """An admitted session call holds its worst case against the session's cap."""
        kit, _, _ = make_kit(max_spend_usd="1")
        admission: Admission = await kit.admit(ctx(), 100, messages=[{"role": "user", "content": "a"}])
        [limit] = admission.state["budgets"]["limits"]
        assert limit["key"] == "session:anonymous:s1:spend"


class TestCallerScope:
    def test_the_api_key_hash_scopes_the_session_keys_escaped(self) -> None:
        """With an API key, every breaker key is session:key=<hash>:<session>, both parts escaped."""
        assert session_key(ctx(**ALICE), "s1") == "session:key=hash-alice:s1"
        assert session_key(ctx(api_key_hash="a:b c"), "x:y{z}") == "session:key=a%3Ab%20c:x%3Ay%7Bz%7D"

    @pytest.mark.parametrize(
        ("identity", "scope"),
        [
            ({"team_id": "t", "key_user_id": "u", "user_id": "claimed"}, "team=t,user=u"),
            ({"team_id": "t", "user_id": "claimed"}, "team=t"),
            ({"key_user_id": "u", "user_id": "claimed"}, "user=u"),
            ({"user_id": "u"}, "client_user=u"),
            ({}, "anonymous"),
        ],
    )
    def test_without_a_key_the_authenticated_team_and_user_then_the_declared_user(
        self, identity: dict[str, str], scope: str
    ) -> None:
        """No key: the key's team and user (not the client's claim), else the declared user, else anonymous."""
        assert caller_scope(ctx(**identity)) == scope

    def test_a_jwt_is_scoped_by_its_user_so_a_refreshed_token_keeps_the_counters(self) -> None:
        """LiteLLM reports each JWT as its own key hash (hashed-jwt-...): a token naming its user scopes the
        session by that user alone, so a refreshed token keeps counting it, another team the same user picks
        does not split it, and two users of one team never share it; a token without a user keeps its hash."""
        first, refreshed = "hashed-jwt-" + "a" * 64, "hashed-jwt-" + "b" * 64
        assert caller_scope(ctx(api_key_hash=first, team_id="t1", key_user_id="u")) == "jwt_user=u"
        assert session_key(ctx(api_key_hash=first, team_id="t1", key_user_id="u"), "s") == session_key(
            ctx(api_key_hash=refreshed, team_id="t2", key_user_id="u"), "s"
        )
        assert caller_scope(ctx(api_key_hash=first, team_id="t", key_user_id="u")) != caller_scope(
            ctx(api_key_hash=refreshed, team_id="t", key_user_id="v")
        )
        assert caller_scope(ctx(api_key_hash=first, team_id="t")) == f"key={first}"
        assert caller_scope(ctx(api_key_hash=refreshed, team_id="t")) != caller_scope(
            ctx(api_key_hash=first, team_id="t")
        )
        assert caller_scope(ctx(api_key_hash="sk-hash", team_id="t", key_user_id="u")) == "key=sk-hash"
        assert caller_scope(ctx(api_key_hash=first, key_user_id="u")) != caller_scope(ctx(key_user_id="u"))

    def test_no_two_callers_forms_collide(self) -> None:
        """Values that look like another form's separators are escaped, so distinct callers get distinct scopes."""
        callers = [
            {"api_key_hash": "team=t"},
            {"team_id": "t"},
            {"team_id": "t,user=u"},
            {"team_id": "t", "key_user_id": "u"},
            {"key_user_id": "u"},
            {"user_id": "u"},
            {"user_id": "anonymous"},
            {"api_key_hash": "anonymous"},
            {},
        ]
        scopes = [caller_scope(ctx(**identity)) for identity in callers]
        assert len(set(scopes)) == len(scopes) and all(":" not in scope for scope in scopes)

    async def test_another_key_on_the_same_session_id_never_shares_the_steps(self) -> None:
        """Bob's calls on Alice's session id count under his key: her first call is admitted, her own still count."""
        kit, _, _ = make_kit(max_steps=2)
        for i in range(5):
            with contextlib.suppress(RequestRejected):
                await kit.admit(ctx(**BOB), 10, messages=[{"role": "user", "content": f"bob {i}"}])
        for i in range(2):
            await kit.admit(ctx(**ALICE), 10, messages=[{"role": "user", "content": f"alice {i}"}])
        with pytest.raises(RequestRejected) as info:
            await kit.admit(ctx(**ALICE), 10, messages=[{"role": "user", "content": "alice 2"}])
        assert info.value.error_type == "agent_step_limit"

    async def test_another_key_resending_the_same_request_never_trips_the_loop(self) -> None:
        """Bob sending Alice's predictable prompt on her session id leaves her fingerprint count at zero."""
        kit, _, _ = make_kit(loop_threshold=2)
        prompt = [{"role": "user", "content": "plan the trip"}]
        await kit.admit(ctx(**BOB), 10, messages=prompt)
        with pytest.raises(RequestRejected):
            await kit.admit(ctx(**BOB), 10, messages=prompt)
        await kit.admit(ctx(**ALICE), 10, messages=prompt)
        with pytest.raises(RequestRejected) as info:
            await kit.admit(ctx(**ALICE), 10, messages=prompt)
        assert info.value.error_type == "agent_loop_detected"

    async def test_another_keys_spend_is_never_held_against_the_session_cap(self) -> None:
        """Bob's spend on Alice's session id is on Bob's session cap; Alice's first call is admitted."""
        kit, _, _ = make_kit(max_spend_usd="0.0003", loop_threshold=100)
        first = await kit.admit(ctx(**BOB), 100, messages=[{"role": "user", "content": "a"}])
        await spend(kit, first, 300_000)
        with pytest.raises(RequestRejected, match="spent"):
            await kit.admit(ctx(**BOB), 100, messages=[{"role": "user", "content": "b"}])
        admission = await kit.admit(ctx(**ALICE), 100, messages=[{"role": "user", "content": "b"}])
        [limit] = admission.state["budgets"]["limits"]
        assert limit["key"] == "session:key=hash-alice:s1:spend"


class TestMalformedConversations:
    @pytest.mark.parametrize(
        "message",
        [
            {"role": "assistant", "tool_calls": 5},
            {"role": "assistant", "tool_calls": True},
            {"role": "assistant", "tool_calls": {"function": {"name": "f"}}},
            {"role": "assistant", "tool_calls": [5, None, "x", {"function": 5}]},
            {"role": "assistant", "tool_calls": [{"function": {"name": {"a": 1}, "arguments": "[" * 5000}}]},
            {"role": "assistant", "function_call": {"name": 5, "arguments": [[[["deep"]]]]}},
            {"role": {"odd": True}, "content": [5, {"text": 7}]},
        ],
    )
    async def test_malformed_tool_calls_are_no_tool_calls(self, message: dict[str, Any]) -> None:
        """A session's conversation with malformed tool calls is counted as a step, never raised (issue 9 item 5)."""
        kit, _, _ = make_kit()
        messages = [{"role": "user", "content": "go"}, message, {"role": "user", "content": "again"}]
        most_repeated_tool_call(messages)
        request_fingerprint("m", [message])
        await kit.admit(ctx(), 10, None, messages)

    def test_arguments_nested_too_deep_to_write_compare_as_one_value(self) -> None:
        """Arguments nested deeper than JSON can write are one opaque value, not an error."""
        deep: Any = "x"
        for _ in range(100_000):
            deep = [deep]
        calls = [{"role": "assistant", "tool_calls": [{"function": {"name": "f", "arguments": deep}}]}] * 3
        assert most_repeated_tool_call(calls) == (("f", "<unreadable>"), 3)
