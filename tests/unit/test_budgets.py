"""Budgets through the CostKit engine and the in-process store: caps, windows, overrides, downgrade, alerts, outages."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from prometheus_client import CollectorRegistry

from costkit_litellm.budgets.enforce import HEADER_DOWNGRADED, HEADER_REMAINING
from costkit_litellm.budgets.policy import RUNTIME_MAP, runtime_field
from costkit_litellm.config import parse_config
from costkit_litellm.context import RequestContext, SamplingParams
from costkit_litellm.errors import ConfigError, RequestRejected
from costkit_litellm.kit import CostKit
from costkit_litellm.money import Nano, usd_to_nano
from costkit_litellm.pipeline import Admission, Outcome
from costkit_litellm.pricing import CostEstimate, ModelPrice
from costkit_litellm.store import Limit, MemoryStore, StoreError

# $1 per million input and output tokens: 1,000 n$ a token, easy sums.
PRICES = {
    "big": ModelPrice(input_nano_per_mtok=10**9 * 10, output_nano_per_mtok=10**9 * 10, max_output_tokens=1000),
    "small": ModelPrice(input_nano_per_mtok=10**9, output_nano_per_mtok=10**9, max_output_tokens=1000),
}
START = datetime(2026, 11, 29, 12, 0, tzinfo=ZoneInfo("UTC")).timestamp()


class Prices:
    """A fixed price table."""

    def price(self, model: str) -> ModelPrice | None:
        return PRICES.get(model)


class Clock:
    """A clock tests move by hand."""

    def __init__(self, now: float = START) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def make_kit(budgets: Sequence[Mapping[str, Any]], **section: Any) -> tuple[CostKit, Clock, CollectorRegistry]:
    clock = Clock()
    registry = CollectorRegistry()
    config = parse_config({"budgets": list(budgets), **section})
    kit = CostKit(config, store=MemoryStore(clock=clock), price_source=Prices(), registry=registry, clock=clock)
    return kit, clock, registry


_calls = iter(range(10**9))


def request(
    model: str = "small", user: str | None = "u1", max_tokens: int | None = 100, **attributes: str
) -> RequestContext:
    return RequestContext(
        call_id=f"call-{next(_calls)}",
        model=model,
        user_id=user,
        attributes=attributes,
        params=SamplingParams(max_tokens=max_tokens),
    )


async def admit(kit: CostKit, ctx: RequestContext, prompt_tokens: int = 100) -> Admission:
    return await kit.admit(ctx, prompt_tokens)


async def finish(kit: CostKit, admission: Admission, cost: int | None, kind: str = "success") -> None:
    await kit.record(
        Outcome(
            kind=kind,  # type: ignore[arg-type]
            context=admission.context,
            model=admission.model or admission.context.model,
            deployment_model=None,
            cost=Nano(cost) if cost is not None else None,
            state=admission.state,
        )
    )


async def spent(kit: CostKit, admission: Admission) -> tuple[int, int]:
    """(committed, reserved) of the first budget limit the admission held."""
    key = admission.state["budgets"]["limits"][0]["key"]
    [usage] = await kit.store.usage([key])
    return usage.committed, usage.reserved


USER_DAILY = {"name": "user-daily", "scope": "user", "limit_usd": "0.001", "window": "day"}  # 1,000,000 n$


class TestConfig:
    @pytest.mark.parametrize(
        ("budget", "expected"),
        [
            ({**USER_DAILY, "limit_usd": -1}, "costkit.budgets[0] (user-daily).limit_usd"),
            ({**USER_DAILY, "scope": "planet"}, "'planet' is not a scope"),
            (
                {**USER_DAILY, "window": "1 day"},
                "'1 day' is not a window; use 1m, 1h, 1d, 7d, 30d, day, month or total",
            ),
            ({**USER_DAILY, "action": "downgrade"}, "downgrade needs downgrade_to"),
            ({**USER_DAILY, "scope": "global", "overrides": {"x": 1}}, "a global budget has no scope values"),
            (
                {**USER_DAILY, "scope": "end_user", "identity": "authenticated"},
                "identity: authenticated cannot be used with scope 'end_user'",
            ),
            (
                {**USER_DAILY, "scope": "tag:feature", "identity": "authenticated"},
                "identity: authenticated cannot be used with scope 'tag:feature'",
            ),
            ({**USER_DAILY, "identity": "trusted"}, "costkit.budgets[0] (user-daily).identity"),
        ],
        ids=[
            "negative-limit",
            "unknown-scope",
            "bad-window",
            "downgrade-without-target",
            "global-with-values",
            "authenticated-end-user",
            "authenticated-tag",
            "unknown-identity",
        ],
    )
    def test_bad_budget_names_the_budget(self, budget: dict[str, Any], expected: str) -> None:
        """Each kind of bad budget fails at start-up naming the budget and the problem."""
        with pytest.raises(ConfigError) as info:
            parse_config({"budgets": [budget]}, "proxy_config.yaml")
        assert expected in str(info.value)
        assert "(user-daily)" in str(info.value)

    def test_duplicate_names_fail(self) -> None:
        """Two budgets with one name are refused."""
        with pytest.raises(ConfigError, match="budget name 'user-daily' is used twice"):
            parse_config({"budgets": [USER_DAILY, USER_DAILY]})


def kit_policy(kit: CostKit) -> Any:
    """The budget policy of a kit's budgets stage."""
    return kit.stages[0].policy  # type: ignore[attr-defined]


class TestIdentity:
    """identity: authenticated budgets on user count the key's user, never metadata.user_id."""

    BUDGET = {**USER_DAILY, "identity": "authenticated"}

    def test_authenticated_user_is_the_keys_user_not_the_declared_one(self) -> None:
        """With identity: authenticated the user budget applies to the key's user even when metadata.user_id differs."""
        kit, _, _ = make_kit([self.BUDGET])
        context = RequestContext(call_id="c", model="small", user_id="someone-else", key_user_id="u-key")
        [applied] = kit_policy(kit).applicable(context)
        assert applied.value == "u-key"

    def test_authenticated_user_budget_skips_requests_without_a_key_user(self) -> None:
        """A declared metadata.user_id alone gives an authenticated user budget no value (the key has no user)."""
        kit, _, _ = make_kit([self.BUDGET])
        context = RequestContext(call_id="c", model="small", user_id="declared")
        assert kit_policy(kit).applicable(context) == []

    def test_any_keeps_the_declared_user(self) -> None:
        """With the default identity: any, metadata.user_id still overrides the key's user."""
        kit, _, _ = make_kit([USER_DAILY])
        context = RequestContext(call_id="c", model="small", user_id="declared", key_user_id="u-key")
        [applied] = kit_policy(kit).applicable(context)
        assert applied.value == "declared"

    async def test_rotating_metadata_user_id_cannot_escape_the_cap(self) -> None:
        """A key holder sending a new metadata.user_id per request is still capped on the key's user."""
        kit, _, _ = make_kit([self.BUDGET])
        for n in range(5):  # 5 x 200,000 fills the 1,000,000 cap
            context = RequestContext(
                call_id=f"rot-{n}-{next(_calls)}",
                model="small",
                user_id=f"fake-{n}",
                key_user_id="u-key",
                params=SamplingParams(max_tokens=100),
            )
            await admit(kit, context)
        context = RequestContext(
            call_id=f"rot-x-{next(_calls)}",
            model="small",
            user_id="fake-x",
            key_user_id="u-key",
            params=SamplingParams(max_tokens=100),
        )
        with pytest.raises(RequestRejected) as info:
            await admit(kit, context)
        assert info.value.status == 429
        await kit.close()


class TestHardCap:
    async def test_success_commits_actual_cost_and_frees_the_hold(self) -> None:
        """After a success the budget holds the actual cost, not the worst case, and nothing stays reserved."""
        kit, _, _ = make_kit([USER_DAILY])
        admission = await admit(kit, request())
        assert await spent(kit, admission) == (0, 200_000)  # 100 in + 100 out tokens at 1,000 n$
        await finish(kit, admission, 123_456)
        assert await spent(kit, admission) == (123_456, 0)

    async def test_over_the_cap_is_a_429_naming_budget_user_spend_and_reset(self) -> None:
        """A request that does not fit gets a 429 naming the budget, the user, spent of limit, and the reset."""
        kit, _, registry = make_kit([USER_DAILY])
        for _ in range(4):
            await finish(kit, await admit(kit, request()), 200_000)
        await admit(kit, request())  # fits exactly: 800,000 spent + 200,000 held = the cap
        with pytest.raises(RequestRejected) as info:
            await admit(kit, request())
        error = info.value
        assert error.status == 429 and error.error_type == "budget_exceeded"
        assert error.message.startswith(
            "Budget 'user-daily' exceeded for user 'u1': spent $0.0008 of $0.001 "
            "(plus $0.0002 held by requests in flight)"
        )
        assert "resets at 2026-11-30T00:00:00+00:00" in error.message
        assert error.headers["Retry-After"] == str(12 * 3600)
        assert error.body()["error"]["type"] == "budget_exceeded"
        assert (
            registry.get_sample_value("costkit_budget_rejections_total", {"budget": "user-daily", "reason": "exceeded"})
            == 1
        )

    async def test_refusal_holds_nothing_anywhere(self) -> None:
        """When one of two budgets refuses, the other is left exactly as it was."""
        global_budget = {"name": "all", "scope": "global", "limit_usd": "1", "window": "day"}
        tight = {"name": "tight", "scope": "user", "limit_usd": "0.0003", "window": "day"}
        kit, _, _ = make_kit([global_budget, tight])
        first = await admit(kit, request())
        await finish(kit, first, 200_000)
        with pytest.raises(RequestRejected):
            await admit(kit, request())
        assert await spent(kit, first) == (200_000, 0)  # the global budget: no leftover hold

    async def test_other_users_are_not_affected(self) -> None:
        """A per-user budget caps each user separately."""
        kit, _, _ = make_kit([USER_DAILY])
        for _ in range(5):
            await finish(kit, await admit(kit, request(user="u1")), 200_000)
        await admit(kit, request(user="u2"))

    async def test_request_without_the_scope_value_is_not_capped_by_it(self) -> None:
        """A per-user budget does not apply to a request that names no user."""
        kit, _, _ = make_kit([USER_DAILY])
        admission = await admit(kit, request(user=None))
        assert "budgets" not in admission.state

    async def test_worst_case_larger_than_the_whole_limit_is_a_400_suggesting_max_tokens(self) -> None:
        """A request that could never fit is refused at once, suggesting max_tokens."""
        kit, _, _ = make_kit([USER_DAILY])
        with pytest.raises(RequestRejected) as info:
            await admit(kit, request(model="big", max_tokens=None))
        assert info.value.status == 400 and info.value.error_type == "budget_request_too_large"
        assert "set max_tokens" in info.value.message and "more than the whole $0.001 limit" in info.value.message

    async def test_failure_releases_the_hold(self) -> None:
        """A failed call gives its hold back and charges nothing."""
        kit, _, _ = make_kit([USER_DAILY])
        admission = await admit(kit, request())
        await finish(kit, admission, 0, kind="failure")
        assert await spent(kit, admission) == (0, 0)

    async def test_duplicate_success_charges_once(self) -> None:
        """The same success delivered twice is charged once."""
        kit, _, _ = make_kit([USER_DAILY])
        admission = await admit(kit, request())
        await finish(kit, admission, 5_000)
        await finish(kit, admission, 5_000)
        assert await spent(kit, admission) == (5_000, 0)

    async def test_failure_then_success_of_one_call_is_charged(self) -> None:
        """A retried call whose failed attempt released the hold is still charged when it succeeds."""
        kit, _, _ = make_kit([USER_DAILY])
        admission = await admit(kit, request())
        await finish(kit, admission, 0, kind="failure")
        await finish(kit, admission, 7_000)
        assert await spent(kit, admission) == (7_000, 0)

    async def test_remaining_header_is_the_tightest_budget(self) -> None:
        """x-costkit-budget-remaining-usd is what the tightest budget has left after this hold."""
        loose = {"name": "loose", "scope": "global", "limit_usd": "1"}
        kit, _, _ = make_kit([loose, USER_DAILY])
        admission = await admit(kit, request())
        assert admission.headers[HEADER_REMAINING] == "0.000800000"


class TestPrices:
    async def test_unknown_price_is_refused_by_default(self) -> None:
        """A model with no price cannot be held against a budget: 400 saying how to fix it."""
        kit, _, _ = make_kit([USER_DAILY])
        with pytest.raises(RequestRejected) as info:
            await admit(kit, request(model="mystery"))
        assert info.value.error_type == "budget_price_unknown" and "costkit.pricing.models" in info.value.message

    async def test_unknown_price_can_reserve_a_fixed_amount(self) -> None:
        """unknown_price: reserve holds the configured amount instead."""
        kit, _, _ = make_kit(
            [USER_DAILY], budget_settings={"unknown_price": "reserve", "unknown_price_reserve_usd": "0.0004"}
        )
        admission = await admit(kit, request(model="mystery"))
        assert await spent(kit, admission) == (0, 400_000)
        await finish(kit, admission, None)
        assert await spent(kit, admission) == (400_000, 0)  # unknown actual cost: the held amount is charged


class TestWindowsAndOverrides:
    async def test_daily_budget_starts_again_the_next_day(self) -> None:
        """Spend of yesterday does not count today (calendar window rollover)."""
        kit, clock, _ = make_kit([USER_DAILY])
        for _ in range(5):
            await finish(kit, await admit(kit, request()), 200_000)
        with pytest.raises(RequestRejected):
            await admit(kit, request())
        clock.now += 12 * 3600 + 1
        admission = await admit(kit, request())
        assert await spent(kit, admission) == (0, 200_000)

    async def test_day_follows_the_configured_timezone(self) -> None:
        """A day budget in America/New_York resets at New York midnight."""
        kit, _, _ = make_kit([USER_DAILY], budget_settings={"timezone": "America/New_York"})
        with pytest.raises(RequestRejected) as info:
            for _ in range(6):
                await finish(kit, await admit(kit, request()), 200_000)
        assert "resets at 2026-11-30T00:00:00-05:00" in info.value.message

    async def test_rolling_minute_throttles_bursts(self) -> None:
        """'$0.0004 per user per minute' admits a burst up to the cap, then again once the minute passed."""
        per_minute = {"name": "burst", "scope": "user", "limit_usd": "0.0004", "window": "1m"}
        kit, clock, _ = make_kit([per_minute])
        for _ in range(2):
            await finish(kit, await admit(kit, request()), 200_000)
        with pytest.raises(RequestRejected) as info:
            await admit(kit, request())
        assert "rolling 1m window" in info.value.message
        clock.now += 61
        await admit(kit, request())

    async def test_per_value_override(self) -> None:
        """User 123 gets $0.002 a day while the default is $0.001."""
        kit, _, _ = make_kit([{**USER_DAILY, "overrides": {"123": "0.002"}}])
        for _ in range(10):
            await finish(kit, await admit(kit, request(user="123")), 200_000)
        with pytest.raises(RequestRejected, match=r"of \$0\.002"):
            await admit(kit, request(user="123"))

    async def test_budget_restricted_to_values(self) -> None:
        """A tag budget restricted to feature email_writer does not apply to other features."""
        feature = {"name": "writer", "scope": "tag:feature", "values": ["email_writer"], "limit_usd": "0.001"}
        kit, _, _ = make_kit([feature])
        assert "budgets" in (await admit(kit, request(feature="email_writer"))).state
        assert "budgets" not in (await admit(kit, request(feature="chat"))).state

    async def test_runtime_limit_wins_over_config(self) -> None:
        """A cap set at runtime in the store (costkit budgets set) replaces the configured one."""
        kit, _, _ = make_kit([USER_DAILY], budget_settings={"runtime_refresh_s": 0})
        await kit.store.map_set(RUNTIME_MAP, runtime_field("user-daily", "u1"), str(usd_to_nano("0.0002")))
        await finish(kit, await admit(kit, request()), 200_000)
        with pytest.raises(RequestRejected, match=r"of \$0\.0002"):
            await admit(kit, request())


class TestDowngradeAndAlerts:
    async def test_downgrade_switches_to_the_cheaper_model_when_little_is_left(self) -> None:
        """Under 20% left, a downgrade budget sends the request to its cheaper model and says so."""
        budget = {
            "name": "team-big",
            "scope": "user",
            "limit_usd": "0.01",
            "action": "downgrade",
            "downgrade_to": "small",
        }
        kit, _, registry = make_kit([budget])
        first = await admit(kit, request(model="big"))
        assert first.model is None
        await finish(kit, first, 8_500_000)
        second = await admit(kit, request(model="big"))
        assert second.model == "small"
        assert second.headers[HEADER_DOWNGRADED] == "team-big: big -> small"
        assert second.estimate.amount == 200_000  # re-estimated at the small model's price
        assert second.headers["x-costkit-max-cost-usd"] == "0.000200000"
        assert registry.get_sample_value("costkit_budget_downgrades_total", {"budget": "team-big"}) == 1

    async def test_alert_thresholds_fire_once_each_and_never_block(self) -> None:
        """An alert budget reports 50%, 80% and 100% once each per window and keeps admitting."""
        alert = {"name": "watch", "scope": "global", "limit_usd": "0.001", "action": "alert"}
        kit, _, registry = make_kit([alert])
        for _ in range(8):
            await finish(kit, await admit(kit, request()), 200_000)
        for threshold in ("50%", "80%", "100%"):
            value = registry.get_sample_value(
                "costkit_budget_alerts_total", {"budget": "watch", "threshold": threshold}
            )
            assert value == 1, threshold


class FlakyStore(MemoryStore):
    """The in-process store, with an outage switch."""

    down = False

    async def _check(self) -> None:
        if self.down:
            raise StoreError("redis://127.0.0.1:1 does not answer")

    async def reserve(self, *args: Any, **kwargs: Any) -> Any:
        await self._check()
        return await super().reserve(*args, **kwargs)

    async def commit(self, *args: Any, **kwargs: Any) -> Any:
        await self._check()
        return await super().commit(*args, **kwargs)

    async def release(self, *args: Any, **kwargs: Any) -> Any:
        await self._check()
        return await super().release(*args, **kwargs)

    async def map_get_all(self, *args: Any, **kwargs: Any) -> Any:
        await self._check()
        return await super().map_get_all(*args, **kwargs)


def flaky_kit(policy: str, share: float = 0.5) -> tuple[CostKit, FlakyStore]:
    store = FlakyStore()
    settings = {"on_store_error": policy, "runtime_refresh_s": 0, "outage_headroom_share": share}
    config = parse_config({"budgets": [USER_DAILY], "budget_settings": settings})
    return CostKit(config, store=store, price_source=Prices(), registry=CollectorRegistry()), store


class NoReplyStore(MemoryStore):
    """The in-process store whose next reservation runs, then ``fail_next`` is raised instead of its
    reply (a lost reply: Redis paused past the timeout; a cancelled caller)."""

    fail_next: BaseException | None = None

    async def reserve(self, *args: Any, **kwargs: Any) -> Any:
        result = await super().reserve(*args, **kwargs)
        failure, self.fail_next = self.fail_next, None
        if failure is not None:
            raise failure
        return result


class TestOutage:
    async def test_a_reservation_whose_caller_was_cancelled_is_released(self) -> None:
        """A request cancelled while its reservation was on the wire (the script ran) gives the hold back
        with the next call that reaches the store, instead of leaving it to expire into spend."""
        store = NoReplyStore()
        config = parse_config({"budgets": [USER_DAILY], "budget_settings": {"runtime_refresh_s": 0}})
        kit = CostKit(config, store=store, price_source=Prices(), registry=CollectorRegistry())
        first = await admit(kit, request())
        await finish(kit, first, 1_000)
        store.fail_next = asyncio.CancelledError()
        with pytest.raises(asyncio.CancelledError):
            await admit(kit, request())
        committed, reserved = await spent(kit, first)
        assert committed == 1_000 and reserved > 0  # the cancelled reservation did land
        later = await admit(kit, request(user="u2"))
        assert await spent(kit, first) == (1_000, 0)
        await finish(kit, later, 0)

    async def test_fail_closed_answers_503(self) -> None:
        """With fail_closed, a store outage refuses with 503 and a message naming the policy."""
        kit, store = flaky_kit("fail_closed")
        store.down = True
        with pytest.raises(RequestRejected) as info:
            await admit(kit, request())
        assert info.value.status == 503 and "fail_closed" in info.value.message

    @pytest.mark.parametrize("policy", ["fail_closed", "fail_open"])
    async def test_a_reservation_whose_reply_was_lost_is_released_once_the_store_answers(self, policy: str) -> None:
        """A reservation that ran although its reply was lost (the request got a 503, or ran on the
        outage allowance) is released by the next call that reaches the store, not left to expire into spend."""
        store = NoReplyStore()
        settings = {"on_store_error": policy, "runtime_refresh_s": 0, "outage_headroom_share": 1.0}
        config = parse_config({"budgets": [USER_DAILY], "budget_settings": settings})
        kit = CostKit(config, store=store, price_source=Prices(), registry=CollectorRegistry())
        first = await admit(kit, request())  # the store is read once (fail_open needs an allowance)
        await finish(kit, first, 1_000)
        store.fail_next = StoreError("no reply from redis://127.0.0.1:1 within 1s", uncertain=True)
        lost = request()
        if policy == "fail_closed":
            with pytest.raises(RequestRejected) as info:
                await admit(kit, lost)
            assert info.value.status == 503
        else:
            admitted = await admit(kit, lost)
            assert admitted.state["budgets"].get("unreserved") is True
        committed, reserved = await spent(kit, first)
        assert committed == 1_000 and reserved > 0  # the lost reservation did land
        later = await admit(kit, request(user="u2"))  # reaches the store: replays the queued release first
        assert await spent(kit, first) == (1_000, 0)
        await finish(kit, later, 0)

    async def test_fail_open_admits_and_reconciles_exactly_once(self) -> None:
        """With fail_open, requests during an outage are admitted and charged once when the store is back."""
        kit, store = flaky_kit("fail_open")
        before = await admit(kit, request())  # reserved while the store was up
        store.down = True
        during = await admit(kit, request())
        assert during.state["budgets"].get("unreserved") is True
        await finish(kit, before, 10_000)
        await finish(kit, during, 20_000)
        await finish(kit, during, 20_000)  # a duplicate callback during the outage
        stage = kit.stages[0]
        assert getattr(stage, "pending", 0) > 0
        store.down = False
        await admit(kit, request(user="u2"))  # the next request replays the queue
        assert await spent(kit, before) == (30_000, 0)


class TestOutageAllowance:
    """fail_open is bounded: share x the headroom last seen, per limit, per replica (worst case 200,000 n$)."""

    async def test_admits_up_to_the_share_of_headroom_then_503(self) -> None:
        """During an outage a replica admits worst cases up to share x last-seen headroom, then answers 503."""
        kit, store = flaky_kit("fail_open", share=0.5)
        await admit(kit, request())  # headroom seen: 1,000,000 - 200,000 = 800,000 -> allowance 400,000
        store.down = True
        await admit(kit, request())
        await admit(kit, request())
        with pytest.raises(RequestRejected) as info:
            await admit(kit, request())
        assert (info.value.status, info.value.error_type) == (503, "budget_store_unavailable")
        assert "'user-daily'" in info.value.message and "used up" in info.value.message

    async def test_default_share_is_a_tenth(self) -> None:
        """With the default share (0.1 of 800,000 = 80,000) a 200,000 worst case is refused during an outage."""
        store = FlakyStore()
        config = parse_config({"budgets": [USER_DAILY], "budget_settings": {"runtime_refresh_s": 0}})
        kit = CostKit(config, store=store, price_source=Prices(), registry=CollectorRegistry())
        await admit(kit, request(max_tokens=10))  # worst case 110,000: headroom 890,000 -> 89,000
        store.down = True
        await admit(kit, request(max_tokens=80), 0)  # 80,000 fits
        with pytest.raises(RequestRejected) as info:
            await admit(kit, request())
        assert info.value.status == 503

    async def test_limit_never_seen_gets_no_allowance(self) -> None:
        """A limit this replica never read from the store before the outage is refused (503), not admitted."""
        kit, store = flaky_kit("fail_open", share=1.0)
        await admit(kit, request(user="u1"))
        store.down = True
        with pytest.raises(RequestRejected) as info:
            await admit(kit, request(user="someone-new"))
        assert info.value.status == 503 and "no outage allowance" in info.value.message

    async def test_settled_cost_counts_and_a_failure_frees_its_hold(self) -> None:
        """Outage spend counts at its actual cost once settled; a failed call frees its whole hold."""
        kit, store = flaky_kit("fail_open", share=0.5)
        await admit(kit, request())  # allowance 400,000
        store.down = True
        failed = await admit(kit, request())
        await finish(kit, failed, None, kind="failure")  # frees 200,000
        first = await admit(kit, request())
        await finish(kit, first, 150_000)  # 150,000 spent, queued for replay
        await admit(kit, request())  # 350,000 used
        with pytest.raises(RequestRejected):
            await admit(kit, request())  # 550,000 > 400,000

    async def test_recovery_replays_exactly_and_refreshes_the_allowance(self) -> None:
        """When the store answers, outage spend is replayed once and the allowance restarts from fresh headroom."""
        kit, store = flaky_kit("fail_open", share=0.5)
        seen = await admit(kit, request())
        await finish(kit, seen, 100_000)  # committed 100,000
        await admit(kit, request())  # headroom 700,000 (200,000 held) -> allowance 350,000
        store.down = True
        during = await admit(kit, request())
        await finish(kit, during, 300_000)
        with pytest.raises(RequestRejected):
            await admit(kit, request())  # 300,000 + 200,000 > 350,000
        store.down = False
        after = await admit(kit, request())  # replays; headroom 1,000,000 - 400,000 - 400,000 = 200,000
        assert await spent(kit, after) == (400_000, 400_000)
        store.down = True
        with pytest.raises(RequestRejected):
            await admit(kit, request())  # 100,000 allowance < 200,000 worst case
        await admit(kit, request(max_tokens=1), 99)  # worst case 100,000 fits


class TestUnboundedCalls:
    """Calls whose cost cannot be bounded before they are sent (batches, pass-through, unknown types)."""

    BUDGET = {"name": "daily", "scope": "user", "limit_usd": 1, "window": "day"}

    async def test_refused_under_a_budget_naming_it_and_the_endpoint(self) -> None:
        """unbounded_calls: reject (the default) answers 400 budget_unbounded_call naming the budget and endpoint."""
        kit, _, _ = make_kit([self.BUDGET])
        unbounded = CostEstimate(None, 0, 0, None, unbounded="batches")
        with pytest.raises(RequestRejected) as info:
            await kit.admit(request(), 0, estimate=unbounded)
        assert (info.value.status, info.value.error_type) == (400, "budget_unbounded_call")
        assert "'daily'" in info.value.message and "'batches'" in info.value.message
        await kit.close()

    async def test_reserve_holds_the_configured_amount_then_commits_the_real_cost(self) -> None:
        """unbounded_calls: reserve holds unbounded_reserve_usd and commits what the call really cost."""
        kit, _, _ = make_kit(
            [self.BUDGET], budget_settings={"unbounded_calls": "reserve", "unbounded_reserve_usd": 0.25}
        )
        context = request()
        admission = await kit.admit(context, 0, estimate=CostEstimate(None, 0, 0, None, unbounded="pass_through"))
        assert admission.state["budgets"]["amount"] == usd_to_nano(0.25)
        await kit.record(
            Outcome(
                kind="success",
                context=context,
                model="small",
                deployment_model=None,
                cost=Nano(400_000_000),
                state=admission.state,
            )
        )
        usage = await kit.store.usage([Limit(key=admission.state["budgets"]["limits"][0]["key"], cap=0)])
        assert (usage[0].committed, usage[0].reserved) == (400_000_000, 0)
        await kit.close()

    async def test_without_a_budget_unbounded_calls_pass(self) -> None:
        """No budget applies: an unbounded call passes untouched."""
        kit, _, _ = make_kit([])
        admission = await kit.admit(request(), 0, estimate=CostEstimate(None, 0, 0, None, unbounded="realtime"))
        assert "budgets" not in admission.state
        await kit.close()
