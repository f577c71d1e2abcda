"""One store round trip before the call and one after, for budgets and the breaker, with the old outcomes."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from costkit_litellm.config import parse_config
from costkit_litellm.context import RequestContext, SamplingParams
from costkit_litellm.errors import RequestAnswered, RequestRejected
from costkit_litellm.kit import CostKit
from costkit_litellm.money import Nano
from costkit_litellm.pipeline import Admission, Outcome
from costkit_litellm.pricing import CostEstimate, ModelPrice
from costkit_litellm.store import MemoryStore, StoreError

PRICE = ModelPrice(input_nano_per_mtok=10**9, output_nano_per_mtok=10**9, max_output_tokens=1000)
BUDGET = {"name": "daily", "scope": "user", "limit_usd": "1", "window": "total"}
KEY = "budget:daily:total:u:total"
PUBLIC = ("incr", "count", "reserve", "commit", "release", "commit_and_release", "map_get_all", "usage")


class Prices:
    def price(self, model: str) -> ModelPrice | None:
        return PRICE if model == "m" else None


class CountingStore(MemoryStore):
    """The in-process store, logging each call a stage makes (not the calls a combined one makes inside),
    with an outage switch on every one of them."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []
        self.down = False
        self._depth = 0
        for name in PUBLIC:
            setattr(self, name, self._logged(name, getattr(self, name)))

    def _logged(self, name: str, method: Callable[..., Any]) -> Callable[..., Any]:
        async def call(*args: Any, **kwargs: Any) -> Any:
            if self._depth == 0:
                self.calls.append(name)
                if self.down:
                    raise StoreError("redis://127.0.0.1:1 does not answer")
            self._depth += 1
            try:
                return await method(*args, **kwargs)
            finally:
                self._depth -= 1

        return call

    def take(self) -> list[str]:
        calls, self.calls = self.calls, []
        return calls


def make_kit(
    budgets: list[dict[str, Any]] | None = None, **breaker: Any
) -> tuple[CostKit, CountingStore, CollectorRegistry]:
    store = CountingStore()
    registry = CollectorRegistry()
    settings = breaker.pop("settings", {})
    config = parse_config(
        {
            "budgets": budgets or [],
            "breaker": {"enabled": True, **breaker},
            "budget_settings": {"runtime_refresh_s": 3600, **settings},
        }
    )
    return CostKit(config, store=store, price_source=Prices(), registry=registry), store, registry


_ids = iter(range(10**9))
SESSION = "session:client_user=u:s1"
"""The breaker's keys of session s1 for ``ctx()``: no API key, so scoped by the declared user."""


def ctx(session: str | None = "s1", model: str = "m") -> RequestContext:
    return RequestContext(
        call_id=f"c{next(_ids)}", model=model, user_id="u", session_id=session, params=SamplingParams(max_tokens=10)
    )


def say(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


async def success(kit: CostKit, admission: Admission, cost: int, kind: str = "success", **flags: bool) -> None:
    await kit.record(
        Outcome(
            kind=kind,  # type: ignore[arg-type]
            context=admission.context,
            model="m",
            deployment_model=None,
            cost=Nano(cost),
            state=admission.state,
            **flags,
        )
    )


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, labels) or 0.0


class Answering:
    """A stage between the breaker and the budgets that answers (like a cache hit) or refuses (like routing)."""

    name = "answering"

    def __init__(self, error: Exception) -> None:
        self.error = error

    async def on_request(self, admission: Admission) -> None:
        raise self.error

    async def on_outcome(self, outcome: Outcome) -> None:
        """Nothing."""


class TestRoundTrips:
    async def test_a_budgeted_session_call_is_one_round_trip_before_and_one_after(self) -> None:
        """With budgets, a session cap and the breaker, admit is one reserve and a success one commit_and_release."""
        kit, store, _ = make_kit([BUDGET], max_spend_usd="1")
        await success(kit, await kit.admit(ctx(), 10, messages=say("warm")), 5_000)  # reads the runtime map once
        store.take()
        admission = await kit.admit(ctx(), 10, messages=say("a"))
        assert store.take() == ["reserve"]
        assert [x["key"] for x in admission.state["budgets"]["limits"]] == [KEY, f"{SESSION}:spend"]
        await success(kit, admission, 7_000)
        assert store.take() == ["commit_and_release"]
        await success(kit, await kit.admit(ctx(), 10, messages=say("b")), 0, kind="failure")
        assert store.take() == ["reserve", "commit_and_release"]
        [budget, session] = await store.usage([KEY, f"{SESSION}:spend"])
        assert (budget.committed, budget.reserved, session.committed) == (12_000, 0, 12_000)
        assert await store.get(f"{SESSION}:steps") == 3

    async def test_the_breaker_alone_is_one_count(self) -> None:
        """Without budgets or a spend cap the session counters are one count call, and nothing after."""
        kit, store, _ = make_kit(max_steps=1, max_spend_usd=None)
        admission = await kit.admit(ctx(), 10, messages=say("a"))
        assert store.take() == ["map_get_all", "count"]
        await success(kit, admission, 1_000)
        assert store.take() == []
        with pytest.raises(RequestRejected) as info:
            await kit.admit(ctx(), 10, messages=say("b"))
        assert info.value.error_type == "agent_step_limit" and store.take() == ["count"]

    async def test_a_trip_in_the_reservation_holds_nothing_and_counts_every_counter(self) -> None:
        """The step limit trips before the repeated request in the same script; nothing is held; both are counted."""
        kit, store, registry = make_kit([BUDGET], max_steps=2, loop_threshold=2, max_spend_usd="1")
        await kit.admit(ctx(), 10, messages=say("same"))
        await kit.admit(ctx(), 10, messages=say("other"))
        with pytest.raises(RequestRejected) as info:
            await kit.admit(ctx(), 10, messages=say("same"))
        assert info.value.error_type == "agent_step_limit" and info.value.status == 429
        assert info.value.message == (
            "Agent session 's1' stopped by the costkit circuit breaker: it made 3 calls (limit 2). "
            "Start a new session to continue."
        )
        assert sample(registry, "costkit_circuit_breaks_total", reason="agent_step_limit") == 1
        [budget] = await store.usage([KEY])
        assert budget.reserved == 2 * 20_000
        assert await store.get(f"{SESSION}:steps") == 3


class TestLaterStages:
    @pytest.mark.parametrize(
        "error",
        [
            RequestAnswered("from the cache", "cache_hit", cache_hit=True),
            RequestRejected("no route", status=400, error_type="routing_rejected"),
        ],
    )
    async def test_a_later_answer_counts_the_counters_and_a_trip_wins(self, error: Exception) -> None:
        """A stage that answers or refuses before the budgets still counts the step (one count), and a trip wins."""
        kit, store, _ = make_kit([BUDGET], max_steps=1)
        kit.add_stage(Answering(error), before="budgets")
        with pytest.raises(type(error)):
            await kit.admit(ctx(), 10, messages=say("a"))
        assert store.take()[-1:] == ["count"] and await store.get(f"{SESSION}:steps") == 1
        with pytest.raises(RequestRejected) as info:
            await kit.admit(ctx(), 10, messages=say("b"))
        assert info.value.error_type == "agent_step_limit" and store.take() == ["count"]

    async def test_a_budget_refusal_before_reserving_comes_after_a_trip(self) -> None:
        """A price-unknown refusal is preceded by the counters: a trip wins and no budget rejection is counted."""
        kit, _, registry = make_kit([BUDGET], max_steps=1)
        with pytest.raises(RequestRejected) as first:
            await kit.admit(ctx(model="unpriced"), 10, messages=say("a"))
        assert first.value.error_type == "budget_price_unknown"
        with pytest.raises(RequestRejected) as info:
            await kit.admit(ctx(model="unpriced"), 10, messages=say("b"))
        assert info.value.error_type == "agent_step_limit"
        assert sample(registry, "costkit_budget_rejections_total", budget="daily", reason="price_unknown") == 1


class TestOutage:
    async def test_fail_closed_answers_the_breakers_503(self) -> None:
        """Under fail_closed a session request in an outage gets the breaker's own 503, as before."""
        kit, store, registry = make_kit([BUDGET], settings={"on_store_error": "fail_closed"})
        await kit.admit(ctx(), 10, messages=say("warm"))
        store.down = True
        with pytest.raises(RequestRejected) as info:
            await kit.admit(ctx(), 10, messages=say("a"))
        assert (info.value.status, info.value.error_type, info.value.headers) == (
            503,
            "budget_store_unavailable",
            {"Retry-After": "5"},
        )
        assert info.value.message.startswith("The agent circuit breaker cannot reach its store")
        assert sample(registry, "costkit_budget_rejections_total", budget="*", reason="store_unavailable") == 0

    async def test_fail_open_skips_the_counters_and_the_session_cap(self) -> None:
        """Under fail_open an outage skips the counters and the session's cap; the budgets' outage allowance applies."""
        kit, store, _ = make_kit([BUDGET], max_steps=1, max_spend_usd="1", settings={"outage_headroom_share": 1})
        await kit.admit(ctx(), 10, messages=say("warm"))
        store.down = True
        admission = await kit.admit(ctx(), 10, messages=say("a"))
        state = admission.state["budgets"]
        assert state["unreserved"] and [x["key"] for x in state["limits"]] == [KEY]
        await kit.admit(ctx(), 10, messages=say("b"))  # not counted: no step limit

    async def test_fail_open_with_only_the_session_cap_admits_holding_nothing(self) -> None:
        """Without budgets, an outage under fail_open admits the session request with nothing to settle."""
        kit, store, _ = make_kit(max_spend_usd="1")
        store.down = True
        admission = await kit.admit(ctx(), 10, messages=say("a"))
        assert "budgets" not in admission.state


class TestReplay:
    async def test_queued_commit_and_release_replay_as_one_call_once(self) -> None:
        """An outage queue (or an old spool) of commit + release replays as one commit_and_release; again, nothing."""
        kit, store, _ = make_kit([BUDGET])
        stage = kit.budget_stage()
        assert stage is not None
        admission = await kit.admit(ctx(session=None), 10)
        store.down = True
        await success(kit, admission, 3_000)
        records = stage.take_pending()
        assert [r["op"] for r in records] == ["commit", "release"]
        store.down = False
        store.take()
        for _ in range(2):
            stage.restore_pending(records)
            assert await stage.flush() == 0
        assert store.take() == ["commit_and_release", "commit_and_release"]
        [usage] = await store.usage([KEY])
        assert (usage.committed, usage.reserved) == (3_000, 0)

    async def test_unbounded_estimate_still_refused_under_a_budget(self) -> None:
        """The budget stage's own refusals keep their messages when counters travel with the reservation."""
        kit, _, _ = make_kit([BUDGET])
        with pytest.raises(RequestRejected) as info:
            await kit.admit(ctx(), 0, estimate=CostEstimate(None, 0, 0, None, unbounded="batches"))
        assert info.value.error_type == "budget_unbounded_call" and "'daily'" in info.value.message
