"""One contract for every ``Store``: the in-process store, Redis, and Redis Cluster.

Each test runs three times (``make_store`` is parametrized); time moves only through the
injected ``FakeClock``, so lease and window expiry are deterministic on Redis too.
"""

from __future__ import annotations

import math

import pytest

from costkit_litellm.store import Counter, FinishResult, Limit, LimitUsage, Store

pytestmark = pytest.mark.redis

LEASE_S = 30.0


@pytest.fixture
async def store(make_store, fake_clock) -> Store:
    """A started store of the parametrized kind, on the fake clock."""
    return await make_store(clock=fake_clock)


async def usage_of(store: Store, key: str | Limit) -> tuple[int, int]:
    [usage] = await store.usage([key])
    return usage.committed, usage.reserved


def align(clock, period_s: float, offset_s: float = 0.0) -> None:
    """Move a fake clock forward to ``offset_s`` past the next multiple of ``period_s`` (epoch)."""
    clock.now = (math.floor(clock.now / period_s) + 1) * period_s + offset_s


class TestCounters:
    async def test_incr_returns_running_total(self, store):
        """Increments add up and ``get`` reads the same total."""
        assert await store.incr("c", 2) == 2
        assert await store.incr("c", 5) == 7
        assert await store.incr("c", -3) == 4
        assert await store.get("c") == 4

    async def test_absent_counter_reads_zero(self, store):
        """A counter never written reads 0."""
        assert await store.get("never") == 0

    async def test_ttl_expires_counter(self, store, fake_clock):
        """A counter created with a ttl reads 0 after it and starts afresh."""
        await store.incr("c", 3, ttl_s=10)
        fake_clock.advance(9.9)
        assert await store.get("c") == 3
        fake_clock.advance(0.2)
        assert await store.get("c") == 0
        assert await store.incr("c", 1, ttl_s=10) == 1

    async def test_extend_keeps_counter_alive_while_incremented(self, store, fake_clock):
        """With ``extend=True`` each increment restarts the ttl; inactivity for ``ttl_s`` ends it."""
        await store.incr("s", 1, ttl_s=10, extend=True)
        for _ in range(5):  # 40 s of activity, never 10 s apart
            fake_clock.advance(8)
            await store.incr("s", 1, ttl_s=10, extend=True)
        assert await store.get("s") == 6
        fake_clock.advance(9.9)
        assert await store.get("s") == 6
        fake_clock.advance(0.2)
        assert await store.get("s") == 0
        assert await store.incr("s", 1, ttl_s=10, extend=True) == 1

    async def test_later_increments_do_not_extend_ttl(self, store, fake_clock):
        """The ttl is fixed at creation; later increments (with or without ttl) keep it."""
        await store.incr("c", 1, ttl_s=10)
        fake_clock.advance(6)
        await store.incr("c", 1, ttl_s=10)
        await store.incr("c", 1)
        fake_clock.advance(5)
        assert await store.get("c") == 0


class TestReserve:
    async def test_reserve_holds_amount_on_every_limit(self, store):
        """An admitted reservation shows as reserved on each limit it names."""
        result = await store.reserve("a", 300, [Limit("x", 1000), Limit("y", 500)], LEASE_S)
        assert result.ok and result.denied is None
        assert await store.usage(["x", "y"]) == [LimitUsage("x", 0, 300), LimitUsage("y", 0, 300)]

    async def test_reserve_up_to_cap_exactly_is_admitted(self, store):
        """``committed + reserved + amount == cap`` is still within the cap."""
        assert (await store.reserve("a", 600, [Limit("x", 1000)], LEASE_S)).ok
        assert (await store.reserve("b", 400, [Limit("x", 1000)], LEASE_S)).ok
        assert not (await store.reserve("c", 1, [Limit("x", 1000)], LEASE_S)).ok

    async def test_refusal_reserves_nothing_anywhere(self, store):
        """A refusal by any limit holds nothing on the others and names the refusing limit."""
        await store.commit("old", 400, [Limit("y", 500)])
        await store.reserve("held", 50, [Limit("y", 500)], LEASE_S)
        limits = [Limit("x", 10_000), Limit("y", 500), Limit("z", 10_000)]
        result = await store.reserve("a", 100, limits, LEASE_S)
        assert not result.ok
        assert result.denied == LimitUsage("y", 400, 50)
        assert result.denied_cap == 500
        assert await store.usage(["x", "y", "z"]) == [
            LimitUsage("x", 0, 0),
            LimitUsage("y", 400, 50),
            LimitUsage("z", 0, 0),
        ]
        assert not await store.settle("a", 100)

    async def test_first_refusing_limit_is_reported(self, store):
        """When several limits would refuse, the first in the given order is reported."""
        await store.commit("old", 10, [Limit("x", 10), Limit("y", 10)])
        result = await store.reserve("a", 1, [Limit("y", 10), Limit("x", 10)], LEASE_S)
        assert result.denied is not None and result.denied.key == "y"

    async def test_reserving_a_live_id_is_refused_as_a_collision(self, store):
        """A second reserve for a call id with a live lease is refused (``collision``) and holds nothing."""
        assert (await store.reserve("a", 300, [Limit("x", 1000)], LEASE_S)).ok
        again = await store.reserve("a", 300, [Limit("x", 1000)], LEASE_S)
        assert not again.ok and again.collision and again.denied is None
        assert await usage_of(store, "x") == (0, 300)
        assert await store.settle("a", 100)
        assert await usage_of(store, "x") == (100, 0)

    async def test_reserving_a_finished_id_is_refused_as_a_collision(self, store):
        """A reserve for a call id already settled or released is refused and holds nothing."""
        await store.reserve("a", 300, [Limit("x", 1000)], LEASE_S)
        await store.settle("a", 200)
        await store.reserve("b", 300, [Limit("x", 1000)], LEASE_S)
        await store.release("b")
        for call_id in ("a", "b"):
            result = await store.reserve(call_id, 300, [Limit("x", 1000)], LEASE_S)
            assert not result.ok and result.collision
        assert await usage_of(store, "x") == (200, 0)

    async def test_zero_amount_reservation_settles_and_releases(self, store):
        """A reservation of 0 (a free model) settles and releases like any other."""
        assert (await store.reserve("a", 0, [Limit("x", 10)], LEASE_S)).ok
        assert await store.settle("a", 0)
        assert (await store.reserve("b", 0, [Limit("x", 10)], LEASE_S)).ok
        assert await store.release("b")
        assert await usage_of(store, "x") == (0, 0)

    async def test_reserve_with_no_limits_is_admitted(self, store):
        """Reserving against no limits is trivially admitted and settles once."""
        assert (await store.reserve("a", 5, [], LEASE_S)).ok
        assert await store.settle("a", 5)
        assert not await store.settle("a", 5)


class TestSettleAndRelease:
    async def test_settle_below_reserved_frees_the_rest(self, store):
        """Settling for less commits the actual amount and frees the whole hold."""
        await store.reserve("a", 1000, [Limit("x", 5000), Limit("y", 5000)], LEASE_S)
        assert await store.settle("a", 250)
        assert await store.usage(["x", "y"]) == [LimitUsage("x", 250, 0), LimitUsage("y", 250, 0)]

    async def test_settle_above_reserved_commits_actual(self, store):
        """Settling for more than was reserved commits the real (larger) amount."""
        await store.reserve("a", 100, [Limit("x", 5000)], LEASE_S)
        assert await store.settle("a", 700)
        assert await usage_of(store, "x") == (700, 0)

    async def test_duplicate_settle_changes_nothing(self, store):
        """A settle for a call id already settled changes nothing and returns False."""
        await store.reserve("a", 100, [Limit("x", 5000)], LEASE_S)
        assert await store.settle("a", 80)
        assert not await store.settle("a", 80)
        assert not await store.settle("a", 999)
        assert await usage_of(store, "x") == (80, 0)

    async def test_settle_of_unknown_id_changes_nothing(self, store):
        """Settling or releasing an id never reserved returns False."""
        assert not await store.settle("ghost", 10)
        assert not await store.release("ghost")

    async def test_expired_lease_counts_as_spent(self, store, fake_clock):
        """An unsettled lease stops being reserved after ``lease_s`` and is counted as committed spend."""
        await store.reserve("a", 800, [Limit("x", 1000)], LEASE_S)
        assert not (await store.reserve("b", 800, [Limit("x", 1000)], LEASE_S)).ok
        fake_clock.advance(LEASE_S + 0.01)
        assert await usage_of(store, "x") == (800, 0)
        assert not (await store.reserve("b", 800, [Limit("x", 1000)], LEASE_S)).ok
        assert (await store.reserve("c", 200, [Limit("x", 1000)], LEASE_S)).ok

    async def test_settle_after_lease_expiry_corrects_to_the_actual_amount(self, store, fake_clock):
        """A late settle replaces the expired hold counted as spent by the actual amount, once."""
        await store.reserve("a", 500, [Limit("x", 1000), Limit("y", 1000)], LEASE_S)
        fake_clock.advance(LEASE_S + 1)
        await store.reserve("b", 300, [Limit("x", 1000)], LEASE_S)
        assert await usage_of(store, "x") == (500, 300)
        assert await store.settle("a", 400)
        assert not await store.settle("a", 400)
        assert await store.usage(["x", "y"]) == [LimitUsage("x", 400, 300), LimitUsage("y", 400, 0)]

    async def test_late_settle_above_the_hold_commits_the_actual_amount(self, store, fake_clock):
        """A late settle for more than the expired hold commits the real (larger) amount."""
        await store.reserve("a", 500, [Limit("x", 1000)], LEASE_S)
        fake_clock.advance(LEASE_S + 1)
        assert await store.settle("a", 900)
        assert await usage_of(store, "x") == (900, 0)

    async def test_reserving_an_expired_id_is_refused(self, store, fake_clock):
        """After its lease expired, the same call id is still known: a new reserve is a collision."""
        await store.reserve("a", 500, [Limit("x", 1000)], LEASE_S)
        fake_clock.advance(LEASE_S + 1)
        result = await store.reserve("a", 100, [Limit("x", 1000)], LEASE_S)
        assert not result.ok and result.collision
        assert await usage_of(store, "x") == (500, 0)

    async def test_renew_keeps_a_lease_live(self, store, fake_clock):
        """``renew`` pushes the lease back: a hold renewed in time never expires; an expired one cannot be renewed."""
        await store.reserve("a", 500, [Limit("x", 1000), Limit("y", 1000, window_s=600)], LEASE_S)
        for _ in range(4):
            fake_clock.advance(LEASE_S * 0.6)
            assert await store.renew("a", LEASE_S)
        assert await store.usage(["x", "y"]) == [LimitUsage("x", 0, 500), LimitUsage("y", 0, 500)]
        fake_clock.advance(LEASE_S + 1)
        assert not await store.renew("a", LEASE_S)
        assert await usage_of(store, "x") == (500, 0)
        assert not await store.renew("ghost", LEASE_S)
        await store.reserve("b", 100, [Limit("x", 1000)], LEASE_S)
        await store.settle("b", 100)
        assert not await store.renew("b", LEASE_S)

    async def test_release_frees_the_hold(self, store):
        """Release gives the whole reservation back and commits nothing."""
        await store.reserve("a", 500, [Limit("x", 1000), Limit("y", 1000)], LEASE_S)
        assert await store.release("a")
        assert await store.usage(["x", "y"]) == [LimitUsage("x", 0, 0), LimitUsage("y", 0, 0)]

    async def test_duplicate_release_changes_nothing(self, store):
        """A second release for the same id returns False and frees nothing more."""
        await store.reserve("a", 500, [Limit("x", 1000)], LEASE_S)
        await store.reserve("b", 200, [Limit("x", 1000)], LEASE_S)
        assert await store.release("a")
        assert not await store.release("a")
        assert await usage_of(store, "x") == (0, 200)

    async def test_release_then_settle_commits_nothing(self, store):
        """A settle after a release of the same id returns False and commits nothing."""
        await store.reserve("a", 500, [Limit("x", 1000)], LEASE_S)
        assert await store.release("a")
        assert not await store.settle("a", 500)
        assert await usage_of(store, "x") == (0, 0)

    async def test_settle_then_release_keeps_the_spend(self, store):
        """A release after a settle returns False and leaves the committed spend."""
        await store.reserve("a", 500, [Limit("x", 1000)], LEASE_S)
        assert await store.settle("a", 300)
        assert not await store.release("a")
        assert await usage_of(store, "x") == (300, 0)

    async def test_release_after_lease_expiry_refunds_the_expired_hold(self, store, fake_clock):
        """Releasing an expired lease takes back what its expiry counted, once, and never other calls' holds."""
        await store.reserve("a", 500, [Limit("x", 1000)], LEASE_S)
        fake_clock.advance(LEASE_S + 1)
        await store.reserve("b", 200, [Limit("x", 1000)], LEASE_S)
        assert await store.release("a")
        assert not await store.release("a")
        assert await usage_of(store, "x") == (0, 200)

    async def test_negative_amounts_are_rejected(self, store):
        """Reserving or settling a negative amount is a programming error."""
        with pytest.raises(ValueError):
            await store.reserve("a", -1, [Limit("x", 10)], LEASE_S)
        await store.reserve("b", 1, [Limit("x", 10)], LEASE_S)
        with pytest.raises(ValueError):
            await store.settle("b", -5)
        with pytest.raises(ValueError):
            await store.commit("c", -999_999_980, [Limit("x", 10)])
        assert await usage_of(store, "x") == (0, 1)


class TestReserveWithCounters:
    async def test_counters_are_incremented_with_the_hold(self, store):
        """``reserve`` with counters increments each (as ``incr``), answers their values and holds as without them."""
        await store.incr("steps", 4)
        counters = [Counter("steps"), Counter("repeats", amount=2)]
        result = await store.reserve("a", 300, [Limit("x", 1000)], LEASE_S, counters=counters)
        assert result.ok and result.counts == (5, 2) and result.tripped is None
        assert result.usages == (LimitUsage("x", 0, 300),)
        assert (await store.get("steps"), await store.get("repeats")) == (5, 2)

    async def test_a_counter_above_its_threshold_trips_and_holds_nothing(self, store):
        """The first counter above ``trip_above`` refuses with its index; every counter is counted, nothing held."""
        counters = [Counter("steps", trip_above=1), Counter("repeats", trip_above=0)]
        assert (await store.reserve("a", 100, [Limit("x", 1000)], LEASE_S, counters=counters)).tripped == 1
        result = await store.reserve("b", 100, [Limit("x", 1000)], LEASE_S, counters=counters)
        assert not result.ok and result.tripped == 0 and result.counts == (2, 2)
        assert result.denied is None and not result.collision and result.usages == ()
        assert await usage_of(store, "x") == (0, 0)
        again = await store.reserve("b", 100, [Limit("x", 1000)], LEASE_S)  # the id was not taken
        assert again.ok and again.counts == ()

    async def test_counters_count_before_a_refusal_or_a_collision(self, store):
        """Counters are incremented even when a limit refuses or the id is already known."""
        counter = [Counter("steps")]
        assert (await store.reserve("a", 600, [Limit("x", 1000)], LEASE_S, counters=counter)).ok
        refused = await store.reserve("b", 600, [Limit("x", 1000)], LEASE_S, counters=counter)
        assert not refused.ok and refused.denied == LimitUsage("x", 0, 600) and refused.counts == (2,)
        collision = await store.reserve("a", 1, [Limit("x", 1000)], LEASE_S, counters=counter)
        assert collision.collision and collision.counts == (3,)
        assert await store.get("steps") == 3 and await usage_of(store, "x") == (0, 600)

    async def test_counter_expiry_is_as_incr(self, store, fake_clock):
        """A counter's ttl is set at creation, pushed back with ``extend``, and an expired one starts again."""
        fixed, sliding = Counter("fixed", ttl_s=10), Counter("sliding", ttl_s=10, extend=True)
        await store.reserve("a", 0, [], LEASE_S, counters=[fixed, sliding])
        fake_clock.advance(6)
        assert (await store.reserve("b", 0, [], LEASE_S, counters=[fixed, sliding])).counts == (2, 2)
        fake_clock.advance(6)
        assert (await store.reserve("c", 0, [], LEASE_S, counters=[fixed, sliding])).counts == (1, 3)
        fake_clock.advance(5)
        assert await store.count([fixed, sliding]) == [2, 4]
        fake_clock.advance(11)
        assert await store.count([fixed, sliding]) == [1, 1]

    async def test_count_increments_alone(self, store):
        """``count`` increments every counter and answers the new values in order; no counters, no values."""
        assert await store.count([Counter("a"), Counter("b", amount=5), Counter("a")]) == [1, 5, 2]
        assert await store.count([]) == []
        assert (await store.get("a"), await store.get("b")) == (2, 5)


class TestCommitAndRelease:
    async def test_commits_the_actual_cost_and_frees_the_hold(self, store):
        """After a reservation, one call commits the amount on every limit and releases the whole hold."""
        limits = [Limit("x", 5000), Limit("y", 5000, window_s=600)]
        await store.reserve("a", 1000, limits, LEASE_S)
        assert await store.commit_and_release("a", 250, limits) == FinishResult(committed=True, released=True)
        assert await store.usage(["x", "y"]) == [LimitUsage("x", 250, 0), LimitUsage("y", 250, 0)]

    async def test_a_repeat_changes_nothing(self, store):
        """The same call again (a duplicate callback or a replay) charges and frees nothing more."""
        await store.reserve("a", 1000, [Limit("x", 5000)], LEASE_S)
        await store.reserve("b", 100, [Limit("x", 5000)], LEASE_S)
        await store.commit_and_release("a", 250, [Limit("x", 5000)])
        assert await store.commit_and_release("a", 250, [Limit("x", 5000)]) == FinishResult(False, False)
        assert await store.commit_and_release("a", None, [Limit("x", 5000)]) == FinishResult(False, False)
        assert await usage_of(store, "x") == (250, 100)

    async def test_without_an_amount_it_only_releases(self, store):
        """``amount=None`` is a release: the hold is freed and nothing is committed."""
        await store.reserve("a", 500, [Limit("x", 1000)], LEASE_S)
        assert await store.commit_and_release("a", None, [Limit("x", 1000)]) == FinishResult(False, True)
        assert await usage_of(store, "x") == (0, 0)
        assert not await store.release("a")

    async def test_without_a_reservation_it_commits(self, store):
        """A call never reserved (admitted during an outage) is still charged, once; there is nothing to release."""
        assert await store.commit_and_release("a", 300, [Limit("x", 100)]) == FinishResult(True, False)
        assert await store.commit_and_release("a", 300, [Limit("x", 100)]) == FinishResult(False, False)
        assert await usage_of(store, "x") == (300, 0)

    async def test_mixes_with_commit_and_release_by_call_id(self, store):
        """It shares the commit and finished markers of ``commit`` and ``release``: each half happens once per id."""
        await store.reserve("a", 500, [Limit("x", 1000)], LEASE_S)
        assert await store.commit("a", 100, [Limit("x", 1000)])
        assert await store.commit_and_release("a", 100, [Limit("x", 1000)]) == FinishResult(False, True)
        await store.reserve("b", 500, [Limit("y", 1000)], LEASE_S)
        assert await store.release("b")
        assert await store.commit_and_release("b", 70, [Limit("y", 1000)]) == FinishResult(True, False)
        assert not await store.commit("b", 70, [Limit("y", 1000)])
        assert await store.usage(["x", "y"]) == [LimitUsage("x", 100, 0), LimitUsage("y", 70, 0)]

    @pytest.mark.parametrize("window_s", [None, 600.0])
    async def test_an_expired_hold_ends_as_commit_then_release(self, store, fake_clock, window_s):
        """After the lease expired (counted as spent), the result equals ``commit`` then ``release``: the
        expired hold is corrected away and the actual cost stays."""
        align(fake_clock, 60, 1)
        for call_id, key in (("a", "x"), ("b", "y")):
            await store.reserve(call_id, 800, [Limit(key, 1000, window_s=window_s)], LEASE_S)
        fake_clock.advance(LEASE_S + 1)
        await store.reserve("c", 100, [Limit("x", 1000, window_s=window_s)], LEASE_S)
        await store.reserve("d", 100, [Limit("y", 1000, window_s=window_s)], LEASE_S)
        assert await store.commit_and_release("a", 300, [Limit("x", 1000, window_s=window_s)]) == FinishResult(
            True, True
        )
        await store.commit("b", 300, [Limit("y", 1000, window_s=window_s)])
        await store.release("b")
        [x, y] = await store.usage([Limit("x", 0, window_s=window_s), Limit("y", 0, window_s=window_s)])
        assert (x.committed, x.reserved) == (y.committed, y.reserved) == (300, 100)

    async def test_limits_other_than_the_reservations_release_the_real_hold(self, store):
        """Given limits that differ from the reservation's, the commit goes on the given ones and the release
        frees the hold where it really is."""
        await store.reserve("a", 500, [Limit("x", 1000), Limit("y", 1000)], LEASE_S)
        assert await store.commit_and_release("a", 40, [Limit("x", 1000), Limit("z", 1000)]) == FinishResult(True, True)
        assert await store.usage(["x", "y", "z"]) == [
            LimitUsage("x", 40, 0),
            LimitUsage("y", 0, 0),
            LimitUsage("z", 40, 0),
        ]


class TestCommit:
    async def test_commit_charges_every_limit_without_cap_check(self, store):
        """``commit`` adds to committed on every limit, even past the cap."""
        assert await store.commit("a", 1500, [Limit("x", 1000), Limit("y", 10_000)])
        assert await store.usage(["x", "y"]) == [LimitUsage("x", 1500, 0), LimitUsage("y", 1500, 0)]

    async def test_duplicate_commit_changes_nothing(self, store):
        """A commit for a call id already committed changes nothing and returns False."""
        assert await store.commit("a", 100, [Limit("x", 1000)])
        assert not await store.commit("a", 100, [Limit("x", 1000)])
        assert await usage_of(store, "x") == (100, 0)

    async def test_committed_spend_counts_against_reserve(self, store):
        """Committed spend leaves only ``cap - committed`` to reserve."""
        await store.commit("a", 700, [Limit("x", 1000)])
        assert not (await store.reserve("b", 301, [Limit("x", 1000)], LEASE_S)).ok
        assert (await store.reserve("c", 300, [Limit("x", 1000)], LEASE_S)).ok


class TestReserveUsages:
    async def test_usages_after_reserve_match_a_usage_call(self, store, fake_clock):
        """``reserve`` answers each limit's usage after the hold, in order, as ``usage`` reads it."""
        limits = [
            Limit("u", 10_000),
            Limit("fixed", 5_000, expires_at=fake_clock.now + 3600),
            Limit("roll", 3_000, window_s=60),
        ]
        await store.commit("before", 700, limits[1:])
        await store.reserve("other", 200, limits[:2], LEASE_S)
        result = await store.reserve("a", 500, limits, LEASE_S)
        assert result.ok
        assert result.usages == (
            LimitUsage("u", 0, 700),
            LimitUsage("fixed", 700, 700),
            LimitUsage("roll", 700, 500),
        )
        assert list(result.usages) == await store.usage(limits)

    async def test_refusal_has_no_usages(self, store):
        """A refused reserve reports the refusing limit in ``denied`` and no ``usages``."""
        await store.commit("old", 900, [Limit("x", 1000)])
        result = await store.reserve("a", 200, [Limit("x", 1000)], LEASE_S)
        assert not result.ok and result.usages == ()
        assert result.denied == LimitUsage("x", 900, 0)


class TestRollingWindows:
    WINDOW_S = 60.0
    BUCKET_S = 10.0

    def rolling(self, key: str, cap: int = 1000) -> Limit:
        return Limit(key, cap, window_s=self.WINDOW_S, buckets=int(self.WINDOW_S / self.BUCKET_S))

    async def test_spend_leaves_after_the_window_and_never_before(self, store, fake_clock):
        """Spend committed at t counts until t + window_s and stops within one bucket after that."""
        align(fake_clock, self.BUCKET_S)
        committed_at = {}
        for phase in (0.0, 3.3, 9.99):  # start, middle and end of one bucket
            fake_clock.now = math.floor(fake_clock.now / self.BUCKET_S) * self.BUCKET_S + phase
            key = f"r{phase}"
            await store.commit(key, 100, [self.rolling(key)])
            committed_at[key] = fake_clock.now
        first = min(committed_at.values())
        fake_clock.now = first + self.WINDOW_S - 2
        left_at: dict[str, float] = {}
        while len(left_at) < len(committed_at):
            for key in committed_at:
                if key not in left_at and await usage_of(store, self.rolling(key)) == (0, 0):
                    left_at[key] = fake_clock.now
            fake_clock.advance(0.25)
            assert fake_clock.now < first + self.WINDOW_S + 2 * self.BUCKET_S
        for key, at in committed_at.items():
            assert at + self.WINDOW_S <= left_at[key] <= at + self.WINDOW_S + self.BUCKET_S + 0.25, key

    async def test_cap_is_enforced_across_buckets(self, store, fake_clock):
        """Spend in every bucket of the window adds up against the cap; room returns as buckets leave."""
        align(fake_clock, self.BUCKET_S, 1)
        limit = self.rolling("r")
        for i in range(3):
            assert await store.commit(f"c{i}", 300, [limit])
            fake_clock.advance(self.BUCKET_S)
        refused = await store.reserve("big", 101, [limit], LEASE_S)
        assert not refused.ok and refused.denied == LimitUsage("r", 900, 0)
        assert (await store.reserve("fits", 100, [limit], LEASE_S)).ok
        assert await store.release("fits")
        fake_clock.advance(self.WINDOW_S - 3 * self.BUCKET_S)  # the first commit is a window old...
        assert await usage_of(store, limit) == (900, 0)  # ...but counts to the end of its bucket
        fake_clock.advance(self.BUCKET_S)
        assert await usage_of(store, limit) == (600, 0)
        assert not (await store.reserve("over", 401, [limit], LEASE_S)).ok
        assert (await store.reserve("later", 400, [limit], LEASE_S)).ok

    async def test_settle_commits_into_the_bucket_of_settle_time(self, store, fake_clock):
        """A settled amount counts from the settle time on, not from when it was reserved."""
        align(fake_clock, self.BUCKET_S, 1)
        limit = self.rolling("r")
        assert (await store.reserve("a", 500, [limit], 300)).ok
        fake_clock.advance(50)
        assert await store.settle("a", 400)
        fake_clock.advance(self.WINDOW_S - 1)  # 109 s after the reserve, 59 s after the settle
        assert await usage_of(store, limit) == (400, 0)
        fake_clock.advance(self.BUCKET_S + 1)
        assert await usage_of(store, limit) == (0, 0)

    async def test_expired_hold_counts_in_the_bucket_of_its_expiry(self, store, fake_clock):
        """An expired rolling hold counts as spent from its expiry for a whole window, then leaves."""
        align(fake_clock, self.BUCKET_S, 1)
        limit = self.rolling("r")
        assert (await store.reserve("a", 500, [limit], 15)).ok  # expires at 16 s past a bucket start
        fake_clock.advance(20)
        assert await usage_of(store, limit) == (500, 0)
        fake_clock.advance(self.WINDOW_S - 10)  # 15 + window - 5: still within the window
        assert await usage_of(store, limit) == (500, 0)
        fake_clock.advance(self.BUCKET_S + 5)
        assert await usage_of(store, limit) == (0, 0)

    async def test_late_settle_corrects_the_expiry_bucket_and_never_undercounts(self, store, fake_clock):
        """A late settle corrects the bucket where the expired hold was counted; once it left, nothing."""
        align(fake_clock, self.BUCKET_S, 1)
        limit = self.rolling("r")
        await store.reserve("a", 500, [limit], 15)
        await store.reserve("b", 500, [limit], 15)
        fake_clock.advance(30)
        assert await store.settle("a", 100)  # corrected where it was counted: 100 + 500
        assert await usage_of(store, limit) == (600, 0)
        fake_clock.advance(self.WINDOW_S)  # the expiry bucket left the window
        assert await usage_of(store, limit) == (0, 0)
        assert await store.release("b")
        assert await usage_of(store, limit) == (0, 0)

    async def test_reserved_amounts_are_not_bucketed(self, store, fake_clock):
        """A live lease counts in full however long it is held, past the window too."""
        limit = self.rolling("r")
        assert (await store.reserve("a", 300, [limit], 300)).ok
        fake_clock.advance(3 * self.WINDOW_S)
        assert await usage_of(store, limit) == (0, 300)
        assert not (await store.reserve("b", 701, [limit], LEASE_S)).ok
        fake_clock.advance(300)
        assert await usage_of(store, limit) == (0, 0)

    async def test_plain_key_reads_a_rolling_limit_as_rolling(self, store, fake_clock):
        """``usage`` by key alone uses the window the limit was written with."""
        await store.commit("a", 250, [self.rolling("r")])
        assert await usage_of(store, "r") == (250, 0)
        fake_clock.advance(self.WINDOW_S + self.BUCKET_S + 0.01)
        assert await usage_of(store, "r") == (0, 0)

    async def test_rolling_and_fixed_window_together_is_an_error(self, store, fake_clock):
        """A limit with both ``window_s`` and ``expires_at`` is refused with ``ValueError``."""
        both = Limit("x", 10, expires_at=fake_clock.now + 60, window_s=60)
        with pytest.raises(ValueError):
            await store.reserve("a", 1, [both], LEASE_S)
        with pytest.raises(ValueError):
            await store.commit("b", 1, [both])
        with pytest.raises(ValueError):
            await store.usage([both])
        with pytest.raises(ValueError):
            await store.reserve("c", 1, [Limit("y", 10, window_s=60, buckets=0)], LEASE_S)
        assert await store.usage(["x", "y"]) == [LimitUsage("x", 0, 0), LimitUsage("y", 0, 0)]


class TestUsageAndReset:
    async def test_usage_of_unknown_keys_is_zero_in_order(self, store):
        """``usage`` answers every key asked, in order, with zeros for unknown ones."""
        await store.commit("a", 5, [Limit("b", 100)])
        assert await store.usage(["a", "b", "c"]) == [
            LimitUsage("a", 0, 0),
            LimitUsage("b", 5, 0),
            LimitUsage("c", 0, 0),
        ]
        assert await store.usage([]) == []

    async def test_reset_forgets_committed_and_leases(self, store):
        """``reset`` zeroes one limit and leaves the others alone."""
        await store.commit("a", 400, [Limit("x", 1000), Limit("y", 1000)])
        await store.reserve("b", 500, [Limit("x", 1000)], LEASE_S)
        await store.reset("x")
        assert await store.usage(["x", "y"]) == [LimitUsage("x", 0, 0), LimitUsage("y", 400, 0)]
        assert (await store.reserve("c", 1000, [Limit("x", 1000)], LEASE_S)).ok


class TestListLimits:
    async def test_lists_exactly_the_limits_under_a_prefix(self, store, fake_clock):
        """``list_limits`` finds every live limit whose key starts with the prefix, sorted, with usage."""
        day = Limit("budget:team:a:day", 1000, expires_at=fake_clock.now + 3600)
        hour = Limit("budget:team:a:1h", 1000, window_s=3600)
        total = Limit("budget:team:a:total", 1000)
        other = Limit("budget:team:ab:total", 1000)
        await store.commit("c1", 100, [day, hour, total, other, Limit("elsewhere", 10)])
        await store.reserve("r1", 50, [hour, total], LEASE_S)
        assert await store.list_limits("budget:team:a:") == [
            LimitUsage("budget:team:a:1h", 100, 50),
            LimitUsage("budget:team:a:day", 100, 0),
            LimitUsage("budget:team:a:total", 100, 50),
        ]
        everything = await store.list_limits("")
        assert [u.key for u in everything] == [
            "budget:team:a:1h",
            "budget:team:a:day",
            "budget:team:a:total",
            "budget:team:ab:total",
            "elsewhere",
        ]
        assert await store.list_limits("nothing:") == []

    async def test_ended_windows_and_emptied_rolling_limits_are_not_listed(self, store, fake_clock):
        """A fixed window past its end, a reset limit and a rolling limit whose spend left are gone."""
        align(fake_clock, 10, 9.5)  # the first rolling spend leaves 60.5 s later, the second 60.5 s + 30 s
        day = Limit("b:day", 1000, expires_at=fake_clock.now + 60)
        roll = Limit("b:roll", 1000, window_s=60, buckets=6)
        await store.commit("c", 100, [day, roll, Limit("b:total", 1000), Limit("b:reset", 10)])
        await store.reset("b:reset")
        fake_clock.advance(30)
        await store.commit("d", 5, [roll])
        assert [u.key for u in await store.list_limits("b:")] == ["b:day", "b:roll", "b:total"]
        fake_clock.advance(31)
        assert await store.list_limits("b:") == [LimitUsage("b:roll", 5, 0), LimitUsage("b:total", 100, 0)]
        fake_clock.advance(40)
        assert await store.list_limits("b:") == [LimitUsage("b:total", 100, 0)]

    async def test_glob_characters_in_the_prefix_are_literal(self, store):
        """``*``, ``?``, ``[`` and backslashes in the prefix match only themselves."""
        for key in ("a*b", "axb", "q?1", "q11", "s[1]", "s1", "t\\u", "tu"):
            await store.commit(f"c-{key}", 1, [Limit(key, 10)])
        assert [u.key for u in await store.list_limits("a*")] == ["a*b"]
        assert [u.key for u in await store.list_limits("q?")] == ["q?1"]
        assert [u.key for u in await store.list_limits("s[")] == ["s[1]"]
        assert [u.key for u in await store.list_limits("t\\")] == ["t\\u"]


class TestSettingsMaps:
    async def test_set_get_all_and_delete(self, store):
        """Fields set are read back together; overwrite replaces; delete removes once."""
        assert await store.map_get_all("overrides") == {}
        await store.map_set("overrides", "team:a", "5.00")
        await store.map_set("overrides", "team:b", "7")
        await store.map_set("overrides", "team:a", "6.50")
        await store.map_set("other", "team:a", "1")
        assert await store.map_get_all("overrides") == {"team:a": "6.50", "team:b": "7"}
        assert await store.map_delete("overrides", "team:a")
        assert not await store.map_delete("overrides", "team:a")
        assert not await store.map_delete("never", "x")
        assert await store.map_get_all("overrides") == {"team:b": "7"}
        assert await store.map_get_all("other") == {"team:a": "1"}

    async def test_a_capped_map_refuses_new_fields_once_full_and_still_overwrites(self, store):
        """With max_fields, a new field is refused (False, nothing written) once the map is full; an existing
        field is still overwritten; other maps and an uncapped set are unaffected."""
        assert await store.map_set("dead", "a", "1", max_fields=2)
        assert await store.map_set("dead", "b", "2", max_fields=2)
        assert not await store.map_set("dead", "c", "3", max_fields=2)
        assert await store.map_set("dead", "a", "1b", max_fields=2)
        assert await store.map_get_all("dead") == {"a": "1b", "b": "2"}
        assert await store.map_set("other", "c", "3", max_fields=1)
        assert await store.map_set("dead", "c", "3")  # no cap: the caller's choice
        assert await store.map_get_all("dead") == {"a": "1b", "b": "2", "c": "3"}

    async def test_returned_map_is_a_copy(self, store):
        """Changing the returned dict does not change the stored map."""
        await store.map_set("m", "k", "v")
        got = await store.map_get_all("m")
        got["k"] = "changed"
        assert await store.map_get_all("m") == {"k": "v"}


class TestClaim:
    async def test_first_claim_wins(self, store):
        """Only the first claim of a token within its ttl succeeds."""
        assert await store.claim("tok", 10)
        assert not await store.claim("tok", 10)
        assert await store.claim("other", 10)

    async def test_claim_is_free_again_after_ttl(self, store, fake_clock):
        """Once the ttl has passed the token can be claimed again."""
        assert await store.claim("tok", 10)
        fake_clock.advance(10.5)
        assert await store.claim("tok", 10)


class TestWindows:
    async def test_window_end_drops_committed_and_leases(self, store, fake_clock):
        """A limit whose ``expires_at`` has passed reads empty and admits a full cap again."""
        limit = Limit("day", 1000, expires_at=fake_clock.now + 60)
        await store.commit("a", 600, [limit])
        await store.reserve("b", 300, [limit], LEASE_S)
        assert await usage_of(store, "day") == (600, 300)
        fake_clock.advance(61)
        assert await usage_of(store, "day") == (0, 0)
        next_day = Limit("day", 1000, expires_at=fake_clock.now + 60)
        assert (await store.reserve("c", 1000, [next_day], LEASE_S)).ok

    async def test_settle_after_window_end_does_not_revive_it(self, store, fake_clock):
        """Spend settled after its window ended is not charged to a window that is gone."""
        window = Limit("day", 1000, expires_at=fake_clock.now + 60)
        await store.reserve("a", 300, [window, Limit("total", 10_000)], 600)
        fake_clock.advance(61)
        assert await store.settle("a", 200)
        assert await store.usage(["day", "total"]) == [
            LimitUsage("day", 0, 0),
            LimitUsage("total", 200, 0),
        ]


class TestLedger:
    async def test_append_is_idempotent_by_entry_id(self, store):
        """A repeated ``entry_id`` is ignored and returns False."""
        assert await store.ledger_append("e1", {"cost": "1"})
        assert not await store.ledger_append("e1", {"cost": "2"})
        entries = await store.ledger_read()
        assert [(e.entry_id, dict(e.fields)) for e in entries] == [("e1", {"cost": "1"})]

    async def test_append_many_appends_each_new_entry_once_in_order(self, store):
        """A batch appends its entries in order, flags repeats (earlier or within the batch), and is idempotent."""
        assert await store.ledger_append("b0", {"i": "0"})
        batch = [("b1", {"i": "1"}), ("b0", {"i": "x"}), ("b2", {"i": "2"}), ("b1", {"i": "y"})]
        assert await store.ledger_append_many(batch) == [True, False, True, False]
        assert await store.ledger_append_many(batch) == [False, False, False, False]
        assert await store.ledger_append_many([]) == []
        entries = await store.ledger_read()
        assert [(e.entry_id, e.fields["i"]) for e in entries] == [("b0", "0"), ("b1", "1"), ("b2", "2")]

    async def test_entries_come_back_in_append_order(self, store, fake_clock):
        """Reads return entries oldest first with their fields and growing timestamps."""
        for i in range(5):
            await store.ledger_append(f"e{i}", {"i": str(i), "entry_id": "field named like the id"})
            fake_clock.advance(0.01 * (i % 2))
        entries = await store.ledger_read()
        assert [e.entry_id for e in entries] == [f"e{i}" for i in range(5)]
        assert [e.fields["i"] for e in entries] == [str(i) for i in range(5)]
        assert entries[0].fields["entry_id"] == "field named like the id"
        stamps = [e.timestamp_ms for e in entries]
        assert stamps == sorted(stamps)
        assert abs(stamps[0] - fake_clock.now * 1000) < 100

    async def test_reads_are_bounded_by_time_and_count(self, store, fake_clock):
        """``since_ms`` and ``until_ms`` are inclusive bounds; ``limit`` keeps the oldest ones."""
        stamps = []
        for i in range(5):
            await store.ledger_append(f"e{i}", {})
            stamps.append(int(fake_clock.now * 1000))
            fake_clock.advance(1)
        ids = [e.entry_id for e in await store.ledger_read(since_ms=stamps[1], until_ms=stamps[3])]
        assert ids == ["e1", "e2", "e3"]
        assert [e.entry_id for e in await store.ledger_read(since_ms=stamps[3])] == ["e3", "e4"]
        assert [e.entry_id for e in await store.ledger_read(until_ms=stamps[0])] == ["e0"]
        assert [e.entry_id for e in await store.ledger_read(limit=2)] == ["e0", "e1"]
        assert await store.ledger_read(since_ms=stamps[4] + 1) == []

    async def test_ledger_is_trimmed_to_max_entries(self, make_store, fake_clock):
        """With ``ledger_max_entries=3`` only the three newest entries remain."""
        store = await make_store(clock=fake_clock, ledger_max_entries=3)
        for i in range(6):
            await store.ledger_append(f"e{i}", {})
        assert [e.entry_id for e in await store.ledger_read()] == ["e3", "e4", "e5"]

    async def test_ledger_is_trimmed_by_age(self, make_store, fake_clock):
        """Entries older than ``ledger_max_age_s`` are dropped at the next append."""
        store = await make_store(clock=fake_clock, ledger_max_age_s=60)
        await store.ledger_append("old", {})
        fake_clock.advance(30)
        await store.ledger_append("mid", {})
        fake_clock.advance(40)
        await store.ledger_append("new", {})
        assert [e.entry_id for e in await store.ledger_read()] == ["mid", "new"]


class TestLedgerBatches:
    async def test_a_batch_larger_than_one_script_call_answers_every_entry_in_order(self, store):
        """1,300 entries (more than one script call takes) with repeats across chunks: each id is
        appended once, at its first position, and a repeat of the whole batch appends nothing."""
        batch = [(f"e{i % 1000}", {"i": str(i)}) for i in range(1300)]
        assert await store.ledger_append_many(batch) == [i < 1000 for i in range(1300)]
        assert await store.ledger_append_many(batch) == [False] * 1300
        entries = await store.ledger_read()
        assert [(e.entry_id, e.fields["i"]) for e in entries] == [(f"e{i}", str(i)) for i in range(1000)]

    async def test_duplicate_ids_in_one_batch_keep_the_first_entry(self, store):
        """Within one batch only the first of several entries with one id is appended."""
        flags = await store.ledger_append_many([("d", {"v": "first"}), ("d", {"v": "second"}), ("d", {})])
        assert flags == [True, False, False]
        assert [(e.entry_id, dict(e.fields)) for e in await store.ledger_read()] == [("d", {"v": "first"})]

    async def test_batches_are_idempotent_against_single_appends(self, store):
        """An id appended alone is a repeat in a later batch, and an id from a batch is a repeat alone."""
        assert await store.ledger_append("a", {})
        assert await store.ledger_append_many([("a", {}), ("b", {})]) == [False, True]
        assert not await store.ledger_append("b", {})
        assert [e.entry_id for e in await store.ledger_read()] == ["a", "b"]

    async def test_fields_survive_a_batch_as_given(self, store):
        """Unicode, empty values, quotes, a field named ``entry_id`` and 300 fields come back unchanged."""
        odd = {"user.id": "Zoë ✓ 用户", "empty": "", "quote": '"\\\n\t{}', "entry_id": "not the id"}
        many = {f"f{i}": str(i) for i in range(300)}
        assert await store.ledger_append_many([("odd", odd), ("many", many), ("none", {})]) == [True] * 3
        entries = {e.entry_id: dict(e.fields) for e in await store.ledger_read()}
        assert entries == {"odd": odd, "many": many, "none": {}}

    async def test_a_batch_trims_to_max_entries(self, make_store, fake_clock):
        """A batch longer than ``ledger_max_entries`` leaves exactly the newest entries of the batch."""
        store = await make_store(clock=fake_clock, ledger_max_entries=3)
        await store.ledger_append("old", {})
        assert await store.ledger_append_many([(f"e{i}", {}) for i in range(5)]) == [True] * 5
        assert [e.entry_id for e in await store.ledger_read()] == ["e2", "e3", "e4"]
        assert not await store.ledger_append("e0", {})  # trimmed, but still remembered as appended

    async def test_a_batch_trims_by_age(self, make_store, fake_clock):
        """Entries older than ``ledger_max_age_s`` are dropped by the next batch; the batch itself is kept."""
        store = await make_store(clock=fake_clock, ledger_max_age_s=60)
        await store.ledger_append_many([("old1", {}), ("old2", {})])
        fake_clock.advance(61)
        await store.ledger_append_many([("new1", {}), ("new2", {})])
        assert [e.entry_id for e in await store.ledger_read()] == ["new1", "new2"]

    async def test_a_batch_of_repeats_changes_nothing(self, make_store, fake_clock):
        """A batch whose entries are all repeats appends nothing and trims nothing (like a single repeat)."""
        store = await make_store(clock=fake_clock, ledger_max_age_s=60)
        await store.ledger_append_many([("a", {}), ("b", {})])
        fake_clock.advance(61)
        assert await store.ledger_append_many([("a", {}), ("b", {})]) == [False, False]
        assert [e.entry_id for e in await store.ledger_read()] == ["a", "b"]


class TestLifecycle:
    async def test_ping_answers_and_close_is_idempotent(self, make_store):
        """A started store answers ``ping``; closing twice is harmless."""
        store = await make_store()
        assert await store.ping()
        await store.close()
        await store.close()
