"""The exact keys and arguments RedisStore sends its two hot-path scripts: replicas of different versions
share one Redis, so the layout (and the limits spec a reservation's record keeps) must not drift."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from costkit_litellm.store.base import Counter, Limit
from costkit_litellm.store.redis import RedisStore

LIMITS = [Limit("g", 100, expires_at=1_700_000_600.5), Limit("r", 50, window_s=60.0004, buckets=7), Limit("n", 7)]
LIMIT_KEYS = [f"p:{{lim:{k}}}:{s}" for k in ("g", "r", "n") for s in ("s", "l", "a")]
SPEC = '[["g", "1700000600500", "0", "0"], ["r", "0", "60001", "8572"], ["n", "0", "0", "0"]]'
WINDOWS = ["1700000600500", "0", "0", "0", "60001", "8572", "0", "0", "0"]
"""Per limit: window end ms (0: none), rolling window ms and bucket ms (0: not rolling; 60.0004 s rounds up
to 60,001 ms, in 7 buckets of 8,572 ms rounded up)."""


def _recording_store() -> tuple[RedisStore, list[tuple[str, list[str], list[str]]]]:
    store = RedisStore("redis://127.0.0.1:1", prefix="p", clock=lambda: 1_700_000_000.0)
    calls: list[tuple[str, list[str], list[str]]] = []

    async def record(name: str, keys: Sequence[str], args: Sequence[str | bytes]) -> Any:
        calls.append((name, list(keys), [str(a) for a in args]))
        return [1, 0, 0, 0, 0, 0, 0, 1] if name == "reserve" else [1, 1]

    store._eval = record  # type: ignore[method-assign]
    return store, calls


async def test_reserve_sends_the_record_counters_and_limits_in_one_script() -> None:
    """reserve: record and done keys, counter keys, then (S, L, A) per limit; the clock, the lease and
    record TTLs, the limits spec, each counter's four arguments, each limit's cap and windows."""
    store, calls = _recording_store()
    counters = [Counter("s:steps", ttl_s=1800, extend=True, trip_above=10)]
    result = await store.reserve("c1", 25, LIMITS, 600.0, counters=counters)
    assert result.ok and result.counts == (1,)
    caps = [["100", *WINDOWS[0:3]], ["50", *WINDOWS[3:6]], ["7", *WINDOWS[6:9]]]
    assert calls == [
        (
            "reserve",
            ["p:{call:c1}:r", "p:{call:c1}:d", "p:n:s:steps", *LIMIT_KEYS],
            ["1700000000000", "1", "c1", "25", "600000", "87000000", SPEC, "1", "1", "1800000", "1", "10"]
            + [v for cap in caps for v in cap],
        )
    ]


async def test_commit_and_release_sends_the_amount_spec_and_a_role_per_limit() -> None:
    """commit_and_release: record, done and commit-marker keys, then the limits; the amount ('' when only
    releasing), the marker TTL, the same spec as the reservation's record, and 'b' plus windows per limit."""
    store, calls = _recording_store()
    await store.commit_and_release("c1", 12, LIMITS)
    await store.commit_and_release("c1", None, LIMITS)
    keys = ["p:{call:c1}:r", "p:{call:c1}:d", "p:{commit:c1}", *LIMIT_KEYS]
    roles = ["b", *WINDOWS[0:3], "b", *WINDOWS[3:6], "b", *WINDOWS[6:9]]
    assert calls == [
        ("commit_release", keys, ["1700000000000", "c1", "12", "86400000", SPEC, *roles]),
        ("commit_release", keys, ["1700000000000", "c1", "", "86400000", SPEC, *roles]),
    ]
