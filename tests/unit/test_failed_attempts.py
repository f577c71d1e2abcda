"""A failed attempt that LiteLLM may retry or fall back from keeps the request's hold; the request's end settles it."""

from __future__ import annotations

from dataclasses import replace

from prometheus_client import CollectorRegistry
from test_budgets import FlakyStore
from test_round_trips import BUDGET, KEY, Prices, ctx, make_kit, sample, say, success

from costkit_litellm.config import parse_config
from costkit_litellm.kit import CostKit
from costkit_litellm.store import MemoryStore


async def test_a_failed_attempt_keeps_the_hold_and_is_accounted() -> None:
    """A non-final failure releases nothing (a retry or fallback runs on the hold) but is counted as a failure."""
    kit, store, registry = make_kit([BUDGET])
    admission = await kit.admit(ctx(), 10, messages=say("a"))
    held = (await store.usage([KEY]))[0].reserved
    assert held > 0
    await success(kit, admission, 0, kind="failure", final=False)
    assert (await store.usage([KEY]))[0].reserved == held
    assert sample(registry, "costkit_requests_total", model="m", tier="none", outcome="failure", endpoint="chat") == 1


async def test_the_final_failure_releases_and_is_not_accounted_again() -> None:
    """The request's final failure (settle_only) releases the hold, commits nothing, and counts no second
    failure (without a ledger, whose entry ids would hide a second count)."""
    store = MemoryStore()
    registry = CollectorRegistry()
    config = parse_config({"budgets": [BUDGET], "ledger": {"enabled": False}})
    kit = CostKit(config, store=store, price_source=Prices(), registry=registry)
    admission = await kit.admit(ctx(), 10, messages=say("a"))
    await success(kit, admission, 0, kind="failure", final=False)
    await success(kit, admission, 0, kind="failure", settle_only=True)
    usage = (await store.usage([KEY]))[0]
    assert (usage.committed, usage.reserved) == (0, 0)
    assert sample(registry, "costkit_requests_total", model="m", tier="none", outcome="failure", endpoint="chat") == 1


async def test_a_fallback_that_answers_commits_on_the_hold_it_kept() -> None:
    """Failed attempt, then the fallback's success: its cost is committed and the hold released in one step."""
    kit, store, _ = make_kit([BUDGET])
    admission = await kit.admit(ctx(), 10, messages=say("a"))
    await success(kit, admission, 0, kind="failure", final=False)
    await success(kit, replace(admission), 7_000)
    usage = (await store.usage([KEY]))[0]
    assert (usage.committed, usage.reserved) == (7_000, 0)


async def test_a_failed_attempt_that_cost_something_is_charged_once_and_the_hold_kept() -> None:
    """A failed attempt with a cost (a stream the provider broke off) is committed at once, under an
    id of its own, while the hold stays for a retry; the request's final failure then releases it,
    and a replayed callback of the same attempt is a new attempt (each attempt callback is one)."""
    kit, store, _ = make_kit([BUDGET])
    admission = await kit.admit(ctx(), 10, messages=say("a"))
    held = (await store.usage([KEY]))[0].reserved
    await success(kit, admission, 3_000, kind="failure", final=False)
    usage = (await store.usage([KEY]))[0]
    assert (usage.committed, usage.reserved) == (3_000, held)
    await success(kit, admission, 0, kind="failure", settle_only=True)
    usage = (await store.usage([KEY]))[0]
    assert (usage.committed, usage.reserved) == (3_000, 0)


async def test_a_charged_attempt_then_a_fallbacks_answer_commits_both() -> None:
    """A failed attempt that cost 3,000 n$, then the fallback's answer at 7,000: 10,000 committed, nothing held
    (the answer's own commit, once per request id, is not taken by the attempt's)."""
    kit, store, _ = make_kit([BUDGET])
    admission = await kit.admit(ctx(), 10, messages=say("a"))
    await success(kit, admission, 3_000, kind="failure", final=False)
    await success(kit, replace(admission), 7_000)
    usage = (await store.usage([KEY]))[0]
    assert (usage.committed, usage.reserved) == (10_000, 0)


async def test_an_attempt_charged_during_an_outage_is_replayed_and_counted_meanwhile() -> None:
    """The store down when a failed attempt's cost comes in: it is queued (replayed once the store is
    back), and counted against this replica's outage allowance meanwhile."""
    store = FlakyStore()
    settings = {"on_store_error": "fail_open", "runtime_refresh_s": 0}
    kit = CostKit(
        parse_config({"budgets": [BUDGET], "budget_settings": settings}),
        store=store,
        price_source=Prices(),
        registry=CollectorRegistry(),
    )
    admission = await kit.admit(ctx(), 10, messages=say("a"))
    store.down = True
    await success(kit, admission, 3_000, kind="failure", final=False)
    stage = kit.budget_stage()
    assert stage is not None and stage.pending == 1
    assert stage._outage.spent == {KEY: 3_000}
    store.down = False
    assert await stage.flush() == 0
    assert (await store.usage([KEY]))[0].committed == 3_000
