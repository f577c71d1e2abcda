"""Shutdown without losing spend: the outage queue is replayed, or spooled to disk and replayed by the next start."""

from __future__ import annotations

import os
import time
from pathlib import Path

from prometheus_client import CollectorRegistry
from test_budgets import FlakyStore as BudgetsFlakyStore

from costkit_litellm.budgets.spool import STALE_CLAIM_S, Spool
from costkit_litellm.config import parse_config
from costkit_litellm.context import RequestContext, SamplingParams
from costkit_litellm.kit import CostKit
from costkit_litellm.money import Nano
from costkit_litellm.pipeline import Admission, Outcome
from costkit_litellm.pricing import ModelPrice

PRICE = ModelPrice(input_nano_per_mtok=10**9, output_nano_per_mtok=10**9, max_output_tokens=1000)
BUDGET = {"name": "daily", "scope": "user", "limit_usd": "1", "window": "total"}


class Prices:
    def price(self, model: str) -> ModelPrice | None:
        return PRICE


class FlakyStore(BudgetsFlakyStore):
    """The budgets tests' flaky store, whose start and ping also fail while it is down (shared between
    'processes' like a Redis)."""

    async def start(self) -> None:
        await self._check()

    async def ping(self) -> bool:
        return not self.down


def kit(store: FlakyStore, spool: Path, policy: str = "fail_open") -> CostKit:
    config = parse_config(
        {
            "redis_url": "redis://127.0.0.1:1",  # the store is given; the URL only names it
            "budgets": [BUDGET],
            "budget_settings": {"on_store_error": policy, "runtime_refresh_s": 0},
            "shutdown": {"spool_dir": str(spool), "flush_timeout_s": 5},
        }
    )
    return CostKit(config, store=store, price_source=Prices(), registry=CollectorRegistry())


async def answered(k: CostKit, call_id: str, cost: int) -> Admission:
    context = RequestContext(call_id=call_id, model="m", user_id="u", params=SamplingParams(max_tokens=10))
    admission = await k.admit(context, 10)
    outcome = Outcome(
        kind="success", context=context, model="m", deployment_model=None, cost=Nano(cost), state=admission.state
    )
    await k.record(outcome)
    return admission


async def committed(store: FlakyStore, admission: Admission) -> tuple[int, int]:
    [usage] = await store.usage([admission.state["budgets"]["limits"][0]["key"]])
    return usage.committed, usage.reserved


class TestSpool:
    def test_write_then_claim_returns_the_records_once(self, tmp_path: Path) -> None:
        """Records written are claimed once, in order; a second claimer finds nothing; remove deletes the file."""
        spool = Spool(tmp_path / "spool")
        assert spool.write([]) is None
        path = spool.write([{"op": "commit", "n": 1}, {"op": "release", "n": 2}])
        assert path is not None and path.parent == tmp_path / "spool" and path.suffix == ".jsonl"
        records, claimed = spool.claim()
        assert records == [{"op": "commit", "n": 1}, {"op": "release", "n": 2}]
        assert Spool(tmp_path / "spool").claim() == ([], [])
        Spool.remove(claimed)
        assert list((tmp_path / "spool").iterdir()) == []

    def test_a_claim_left_by_a_killed_process_is_claimed_again(self, tmp_path: Path) -> None:
        """A claimed file older than STALE_CLAIM_S (its process died before removing it) is claimed again."""
        spool = Spool(tmp_path)
        spool.write([{"op": "commit"}])
        _, [claimed] = spool.claim()
        assert spool.claim() == ([], [])
        old = time.time() - STALE_CLAIM_S - 1
        os.utime(claimed, (old, old))
        records, [again] = spool.claim()
        assert records == [{"op": "commit"}] and again.exists()
        assert spool.claim() == ([], [])  # claimed afresh

    def test_only_files_of_the_same_store_are_claimed(self, tmp_path: Path) -> None:
        """A spool written for another store (URL or key prefix) is left to that store's processes."""
        Spool(tmp_path, "redis://a|costkit").write([{"op": "commit"}])
        assert Spool(tmp_path, "redis://a|other").claim() == ([], [])
        assert Spool(tmp_path, "redis://b|costkit").claim() == ([], [])
        assert Spool(tmp_path, "redis://a|costkit").claim()[0] == [{"op": "commit"}]

    def test_a_torn_line_is_skipped(self, tmp_path: Path) -> None:
        """A line that is not JSON is skipped; the others are kept."""
        spool = Spool(tmp_path)
        path = spool.write([{"op": "commit"}])
        assert path is not None
        path.write_text(path.read_text() + '{"op": "rel\n')
        records, _ = spool.claim()
        assert records == [{"op": "commit"}]


class TestShutdown:
    async def test_shutdown_with_the_store_back_replays_and_spools_nothing(self, tmp_path: Path) -> None:
        """Queued commits are replayed at shutdown when the store answers again; no spool file is written."""
        store = FlakyStore()
        k = kit(store, tmp_path)
        before = await answered(k, "a", 1000)
        store.down = True
        await answered(k, "b", 2000)
        store.down = False
        report = await k.shutdown()
        assert (report.replayed, report.spooled) == (2, 0)
        assert await committed(store, before) == (3000, 0)
        assert not any(tmp_path.iterdir())

    async def test_shutdown_during_an_outage_spools_and_the_next_start_replays_once(self, tmp_path: Path) -> None:
        """Store still down at shutdown: the queue goes to the spool; the next kit replays it exactly once."""
        store = FlakyStore()
        first = kit(store, tmp_path)
        before = await answered(first, "a", 1000)
        store.down = True
        await answered(first, "b", 2000)
        await answered(first, "c", 4000)
        report = await first.shutdown()
        assert (report.replayed, report.spooled) == (0, 4)
        assert report.spool_path is not None and report.spool_path.exists()
        assert "spooled 4 to" in report.summary()
        assert await committed(store, before) == (1000, 0)

        store.down = False
        second = kit(store, tmp_path)
        await second.warm_up()
        assert await committed(store, before) == (7000, 0)
        assert not any(tmp_path.iterdir())  # replayed: the claimed file is gone
        third = kit(store, tmp_path)
        await third.warm_up()
        await answered(third, "d", 8000)
        assert await committed(store, before) == (15_000, 0)  # nothing replayed twice

    async def test_a_start_while_still_down_keeps_the_spool_for_later(self, tmp_path: Path) -> None:
        """A start during the outage queues the spooled records; its own shutdown spools them again."""
        store = FlakyStore()
        first = kit(store, tmp_path)
        before = await answered(first, "a", 1000)
        store.down = True
        await answered(first, "b", 2000)
        await first.shutdown()
        second = kit(store, tmp_path)
        await second.warm_up()  # the store is still down
        report = await second.shutdown()
        assert report.spooled == 2
        assert len(list(tmp_path.glob("*.jsonl"))) == 1 and not list(tmp_path.glob("*.claimed-*"))
        store.down = False
        await kit(store, tmp_path).warm_up()
        assert await committed(store, before) == (3000, 0)


class TestReadiness:
    async def test_fail_closed_is_not_ready_while_the_store_is_down(self, tmp_path: Path) -> None:
        """Under fail_closed the replica is unready while the store does not answer (masked URL named), ready after."""
        store = FlakyStore()
        k = kit(store, tmp_path, "fail_closed")
        assert await k.ready() == (True, {})
        store.down = True
        ready, detail = await k.ready()
        assert not ready and detail["store"] == "redis://127.0.0.1:1" and "fail_closed" in detail["reason"]
        store.down = False
        assert (await k.ready())[0]

    async def test_fail_open_stays_ready_through_an_outage(self, tmp_path: Path) -> None:
        """Under fail_open a store outage does not take the replica out of rotation (it still answers)."""
        store = FlakyStore()
        k = kit(store, tmp_path, "fail_open")
        store.down = True
        assert await k.ready() == (True, {})


class TestStopsAdmitting:
    async def test_a_closing_kit_answers_503_through_the_proxy_hook(self, tmp_path: Path) -> None:
        """Once shutdown begins, the proxy's pre-call hook refuses with a 503 saying the replica is shutting down."""
        from litellm.proxy._types import ProxyException

        from costkit_litellm.litellm_adapter.callback import CostKitCallback

        k = kit(FlakyStore(), tmp_path)
        callback = CostKitCallback(k, router=lambda: None)
        data = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "litellm_call_id": "x"}
        assert await callback.async_pre_call_hook(None, None, dict(data), "acompletion") is not None
        await k.shutdown()
        try:
            await callback.async_pre_call_hook(None, None, dict(data), "acompletion")
        except ProxyException as exc:
            assert exc.code == "503" and exc.type == "costkit_shutting_down" and "shutting down" in exc.message
        else:
            raise AssertionError("a closing kit admitted a request")
