"""A failed attempt that LiteLLM may retry or fall back from keeps the request's hold; the request's end settles it."""

from __future__ import annotations

from dataclasses import replace

from prometheus_client import CollectorRegistry
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
