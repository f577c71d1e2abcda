"""The pack in application code: install(kit, router) runs the same pipeline as the proxy hook."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from decimal import Decimal
from typing import Any

import litellm
import pytest
import pytest_asyncio
from prometheus_client import CollectorRegistry

from costkit_litellm import BadRequestMetadata, CostKit, parse_config
from costkit_litellm.litellm_adapter import install, kit_acompletion, uninstall
from costkit_litellm.litellm_adapter.callback import CostKitCallback
from costkit_litellm.store import LedgerEntry, MemoryStore, RedisStore, Store
from costkit_litellm.testing.fake_provider import FakeProvider
from costkit_litellm.testing.redis_server import RedisServer

NANO = Decimal("1e-9")

# LiteLLM's logging worker binds to the first event loop it sees: one loop for the module, as an
# application has one loop.
pytestmark = pytest.mark.asyncio(loop_scope="module")


def make_router(provider: FakeProvider) -> litellm.Router:
    return litellm.Router(
        model_list=[
            {
                "model_name": "gpt-4o-mini",
                "litellm_params": {
                    "model": "openai/gpt-4o-mini",
                    "api_base": provider.base_url,
                    "api_key": "fake",
                },
            },
            {
                "model_name": "mocked",
                "litellm_params": {"model": "openai/gpt-4o", "mock_response": "hi there"},
            },
        ]
    )


@pytest_asyncio.fixture(loop_scope="module")
async def cleanup_callbacks() -> AsyncIterator[None]:
    """Remove the callbacks a test installed from LiteLLM's global list."""
    yield
    for callback in [
        cb for cb in litellm.logging_callback_manager.get_all_callbacks() if isinstance(cb, CostKitCallback)
    ]:
        uninstall(callback)


async def ledger_when(
    store: Store, ready: Callable[[list[LedgerEntry]], bool], timeout_s: float = 15
) -> list[LedgerEntry]:
    """Read the ledger until ``ready`` holds: LiteLLM logs success in a background task."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        entries = await store.ledger_read()
        if ready(entries) or asyncio.get_running_loop().time() > deadline:
            return entries
        await asyncio.sleep(0.05)


def kit_with(store: Store, **section: Any) -> tuple[CostKit, CollectorRegistry]:
    registry = CollectorRegistry()
    config = parse_config({"metrics": {"tag_labels": ["feature"]}, **section})
    return CostKit(config, store=store, registry=registry), registry


@pytest.mark.usefixtures("cleanup_callbacks")
class TestRouter:
    async def test_headers_ledger_and_metrics(self, fake_provider: FakeProvider) -> None:
        """A routed call gets the cost headers, one ledger entry and the spend metric, all equal to LiteLLM's cost."""
        kit, registry = kit_with(MemoryStore())
        router = make_router(fake_provider)
        install(kit, router)
        response = await router.acompletion(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": "hello from the app"}],
            metadata={"feature": "email_writer", "user_id": "123"},
        )
        headers = response._hidden_params["additional_headers"]
        cost = Decimal(headers["x-costkit-cost-usd"])
        assert abs(cost - Decimal(repr(response._hidden_params["response_cost"]))) < NANO
        assert Decimal(headers["x-costkit-max-cost-usd"]) >= cost > 0
        entries = await ledger_when(kit.store, lambda e: len(e) >= 1)
        assert len(entries) == 1
        assert entries[0].fields["costkit.attr.feature"] == "email_writer" and entries[0].fields["user.id"] == "123"
        assert Decimal(entries[0].fields["costkit.cost_nano"]) * NANO == cost
        spend = registry.get_sample_value(
            "costkit_spend_usd_total",
            {"model": "gpt-4o-mini", "tier": "none", "endpoint": "chat", "feature": "email_writer"},
        )
        assert spend is not None and abs(Decimal(repr(spend)) - cost) < NANO
        await kit.close()

    async def test_install_twice_wraps_once(self, fake_provider: FakeProvider) -> None:
        """Installing on the same router twice keeps one callback and one wrapper."""
        kit, _ = kit_with(MemoryStore())
        router = make_router(fake_provider)
        first = install(kit, router)
        assert install(kit, router) is first
        assert sum(isinstance(cb, CostKitCallback) for cb in litellm.callbacks) == 1
        await router.acompletion(model="mocked", messages=[{"role": "user", "content": "x"}])
        entries = await ledger_when(kit.store, lambda e: len(e) >= 1)
        await asyncio.sleep(0.3)  # room for a wrongly doubled entry to show up
        assert len(await kit.store.ledger_read()) == len(entries) == 1
        await kit.close()

    async def test_bad_metadata_raises_before_any_provider_call(self) -> None:
        """Malformed metadata raises BadRequestMetadata and the provider is never called."""
        with FakeProvider() as provider:
            kit, _ = kit_with(MemoryStore())
            router = make_router(provider)
            install(kit, router)
            with pytest.raises(BadRequestMetadata, match=r"metadata\.tags\[0\] must be a string"):
                await router.acompletion(
                    model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}], metadata={"tags": [1]}
                )
            assert provider.stats()["requests"] == 0
            await kit.close()

    async def test_streaming_is_recorded_once(self, fake_provider: FakeProvider) -> None:
        """A streamed routed call is recorded once, when the stream ends, with a cost."""
        kit, _ = kit_with(MemoryStore())
        router = make_router(fake_provider)
        install(kit, router)
        stream = await router.acompletion(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": "stream it"}],
            stream=True,
            stream_options={"include_usage": True},
            metadata={"feature": "streamer"},
        )
        async for _ in stream:
            pass
        entries = await ledger_when(kit.store, lambda e: len(e) >= 1)
        await asyncio.sleep(0.3)
        entries = await kit.store.ledger_read()
        assert len(entries) == 1
        assert int(entries[0].fields["costkit.cost_nano"]) > 0
        await kit.close()

    async def test_two_kits_in_one_process_both_record(self) -> None:
        """Two kits side by side each record exactly their own router's calls, neither merged nor mixed."""
        kit_a, _ = kit_with(MemoryStore())
        kit_b, _ = kit_with(MemoryStore())
        provider_free = [{"model_name": "mocked", "litellm_params": {"model": "openai/gpt-4o", "mock_response": "a"}}]
        router_a, router_b = (
            litellm.Router(model_list=provider_free),
            litellm.Router(model_list=provider_free),
        )
        install(kit_a, router_a)
        install(kit_b, router_b)
        await router_a.acompletion(model="mocked", messages=[{"role": "user", "content": "a"}])
        await router_b.acompletion(model="mocked", messages=[{"role": "user", "content": "b"}])
        entries_a = await ledger_when(kit_a.store, lambda e: len(e) >= 1)
        entries_b = await ledger_when(kit_b.store, lambda e: len(e) >= 1)
        await asyncio.sleep(0.3)  # room for a wrongly crossed entry to show up
        assert [e.entry_id for e in await kit_a.store.ledger_read()] == [e.entry_id for e in entries_a]
        assert len(entries_a) == len(entries_b) == 1
        assert entries_a[0].entry_id != entries_b[0].entry_id
        await kit_a.close()
        await kit_b.close()

    async def test_plain_acompletion(self) -> None:
        """kit_acompletion runs the pipeline around litellm.acompletion without a router."""
        kit, _ = kit_with(MemoryStore())
        callback = install(kit)
        response = await kit_acompletion(
            callback,
            model="openai/gpt-4o-mini",
            mock_response="ok",
            messages=[{"role": "user", "content": "x"}],
        )
        assert "x-costkit-cost-usd" in response._hidden_params["additional_headers"]
        assert len(await ledger_when(kit.store, lambda e: len(e) >= 1)) == 1
        await kit.close()

    async def test_ledger_in_redis_from_config(self, fake_provider: FakeProvider, redis_server: RedisServer) -> None:
        """A kit configured with a redis_url writes its ledger to Redis."""
        prefix = "app-" + str(id(self))
        registry = CollectorRegistry()
        kit = CostKit(parse_config({"redis_url": redis_server.url, "key_prefix": prefix}), registry=registry)
        router = make_router(fake_provider)
        install(kit, router)
        await router.acompletion(model="mocked", messages=[{"role": "user", "content": "x"}])
        reader = RedisStore(redis_server.url, prefix=prefix)
        await reader.start()
        try:
            entries = await ledger_when(reader, lambda e: len(e) >= 1)
        finally:
            await reader.close()
        assert len(entries) == 1 and entries[0].fields["gen_ai.request.model"] == "mocked"
        await kit.close()
