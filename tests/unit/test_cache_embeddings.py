"""One embedding per request: the learned router and the semantic cache share it, an empty scope needs none
before the call, and the local embedder runs off the event loop."""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from costkit_litellm.config import parse_config
from costkit_litellm.context import RequestContext, SamplingParams
from costkit_litellm.embeddings import LOCAL_MINILM, Vectors, normalise
from costkit_litellm.embeddings import local as local_module
from costkit_litellm.errors import RequestAnswered
from costkit_litellm.kit import CostKit
from costkit_litellm.money import Nano
from costkit_litellm.pipeline import Outcome
from costkit_litellm.pricing import ModelPrice
from costkit_litellm.routing.learned import Layer, LearnedModel
from costkit_litellm.store import MemoryStore

PRICES = {"mini": ModelPrice(150_000_000, 600_000_000, 16384), "big": ModelPrice(2_500_000_000, 10_000_000_000, 16384)}
TIERS = [{"name": "economy", "model": "mini"}, {"name": "premium", "model": "big"}]
ANSWER = {"choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "Paris."}}]}


class Prices:
    def price(self, model: str) -> ModelPrice | None:
        return PRICES.get(model)


class CountingEmbedder:
    """Stands in for the local MiniLM: counts calls; a text's vector is a function of its words."""

    name = LOCAL_MINILM
    dimensions = 384
    instances: list[CountingEmbedder] = []

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.texts: list[str] = []
        self.sync_texts: list[str] = []
        CountingEmbedder.instances.append(self)

    def _vectors(self, texts: Sequence[str]) -> Vectors:
        rows = []
        for text in texts:
            row = np.zeros(384, dtype=np.float32)
            for word in text.lower().strip("?!. ").split():
                row[int(hashlib.sha256(word.encode()).hexdigest(), 16) % 384] += 1.0
            rows.append(row)
        return normalise(rows)

    def embed_sync(self, texts: Sequence[str]) -> Vectors:
        self.sync_texts.extend(texts)
        return self._vectors(texts)

    async def embed(self, texts: Sequence[str]) -> Vectors:
        self.texts.extend(texts)
        await asyncio.sleep(0)
        return self._vectors(texts)


@pytest.fixture
def embedder(monkeypatch: pytest.MonkeyPatch) -> CountingEmbedder:
    CountingEmbedder.instances = []
    monkeypatch.setattr(local_module, "LocalEmbedder", CountingEmbedder)
    return CountingEmbedder()


def router_model(path: Path) -> Path:
    weights = np.zeros((384, 1))
    LearnedModel(LOCAL_MINILM, 384, (Layer(weights, np.zeros(1), "sigmoid"),), thresholds={"default": 0.9}).save(path)
    return path


def make_kit(tmp_path: Path, routing: bool) -> CostKit:
    section: dict[str, Any] = {"cache": {"enabled": True, "backend": "memory", "verify": {"classifier": False}}}
    if routing:
        section["routing"] = {
            "enabled": True,
            "tiers": TIERS,
            "classifier": "learned",
            "model_path": str(router_model(tmp_path / "router.json")),
        }
    return CostKit(parse_config(section), store=MemoryStore(), price_source=Prices(), registry=CollectorRegistry())


def request(call_id: str, model: str, text: str) -> tuple[RequestContext, list[dict[str, str]]]:
    context = RequestContext(
        call_id=call_id, model=model, api_key_hash="k1", params=SamplingParams(temperature=0.0, max_tokens=50)
    )
    return context, [{"role": "user", "content": text}]


async def answer(kit: CostKit, context: RequestContext, state: dict[str, Any]) -> None:
    await kit.record(
        Outcome(
            kind="success",
            context=context,
            model="mini",
            deployment_model="openai/gpt-4o-mini",
            cost=Nano(1000),
            state=state,
            response=ANSWER,
        )
    )


class TestOneEmbeddingPerRequest:
    async def test_the_router_and_the_cache_share_one_embedding_per_request(
        self, tmp_path: Path, embedder: CountingEmbedder
    ) -> None:
        """With the learned router and the cache both on, each request is embedded exactly once (a miss
        in an empty scope, then a paraphrase searched in the now non-empty scope), never inline."""
        kit = make_kit(tmp_path, routing=True)
        (local,) = [e for e in CountingEmbedder.instances if e is not embedder]
        first, messages = request("c1", "auto", "What is the capital of France?")
        admission = await kit.admit(first, prompt_tokens=10, messages=messages)
        assert admission.headers["x-costkit-cache"] == "miss"
        assert local.texts == ["What is the capital of France?"]
        await answer(kit, first, admission.state)
        assert local.texts == ["What is the capital of France?"], "the store reused the request's vector"
        second, messages = request("c2", "auto", "what is the capital of france")
        with pytest.raises(RequestAnswered, match="Paris"):  # answered from the cache
            await kit.admit(second, prompt_tokens=10, messages=messages)
        assert local.texts == ["What is the capital of France?", "what is the capital of france"]
        assert local.sync_texts == []
        await kit.close()

    async def test_a_miss_in_an_empty_scope_embeds_after_the_answer_is_on_its_way(
        self, tmp_path: Path, embedder: CountingEmbedder
    ) -> None:
        """Cache alone: a miss in a scope with no entry answers without waiting for an embedding; the
        vector is computed in the background and the stored entry then serves a paraphrase."""
        kit = make_kit(tmp_path, routing=False)
        first, messages = request("c1", "mini", "What is the capital of France?")
        admission = await kit.admit(first, prompt_tokens=10, messages=messages)
        assert admission.headers["x-costkit-cache"] == "miss"
        local = CountingEmbedder.instances[-1]
        assert len(local.texts) <= 1  # started in the background, not awaited
        await answer(kit, first, admission.state)
        assert local.texts == ["What is the capital of France?"]
        second, messages = request("c2", "mini", "what is the capital of france")
        with pytest.raises(RequestAnswered, match="Paris"):
            await kit.admit(second, prompt_tokens=10, messages=messages)
        assert len(local.texts) == 2
        await kit.close()

    async def test_a_skipped_request_is_never_embedded(self, tmp_path: Path, embedder: CountingEmbedder) -> None:
        """A request the cache skips (temperature omitted) costs no embedding when the router is off."""
        kit = make_kit(tmp_path, routing=False)
        context = RequestContext(call_id="c1", model="mini", api_key_hash="k1", params=SamplingParams(max_tokens=5))
        admission = await kit.admit(context, prompt_tokens=10, messages=[{"role": "user", "content": "Hello"}])
        assert admission.headers["x-costkit-cache"] == "skip"
        await asyncio.sleep(0.01)
        assert all(e.texts == [] for e in CountingEmbedder.instances)
        await kit.close()


class TestWorker:
    async def test_the_event_loop_keeps_running_while_the_worker_embeds(self) -> None:
        """A slow encode runs in the embedder's worker thread: a ticker on the loop keeps ticking, and
        texts that wait meanwhile are embedded together in one batch."""
        batches: list[int] = []

        def slow(texts: list[str]) -> Vectors:
            batches.append(len(texts))
            time.sleep(0.2)
            return normalise(np.ones((len(texts), 384)))

        worker = local_module._Worker(slow)
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        task = asyncio.ensure_future(ticker())
        first = asyncio.ensure_future(worker.embed(["a"]))
        await asyncio.sleep(0.05)
        rest = await asyncio.gather(*(worker.embed([t]) for t in "bcd"))
        await first
        task.cancel()
        assert ticks >= 20
        assert batches == [1, 3]
        assert [r.shape for r in rest] == [(1, 384)] * 3

    async def test_an_encode_error_reaches_every_waiting_caller(self) -> None:
        """An encode that raises fails the requests of its batch with that error, and the worker goes on."""
        calls = 0

        def flaky(texts: list[str]) -> Vectors:
            nonlocal calls
            calls += 1
            if calls == 1:
                raise OSError("broken")
            return normalise(np.ones((len(texts), 384)))

        worker = local_module._Worker(flaky)
        with pytest.raises(OSError, match="broken"):
            await worker.embed(["a"])
        assert (await worker.embed(["b"])).shape == (1, 384)
