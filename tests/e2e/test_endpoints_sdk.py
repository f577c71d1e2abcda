"""Every endpoint budgeted, accounted and stopped by the breaker, driven with the real SDKs (issue 10).

One proxy with the pack on a real Redis, served by the fake provider (which bills like a real
one). Each endpoint gets its own feature and a budget worth a few answers: the official OpenAI,
Anthropic and Agents SDKs are refused with what they surface (exception class, ``type``,
``Retry-After``), the provider's bill stays under each limit, and ``costkit report --by feature``
(and ``--by endpoint``) equals what the fake provider billed, one ledger event per outcome.
"""

from __future__ import annotations

import contextlib
import io
import json
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest

from costkit_litellm.cli import main as costkit_main
from costkit_litellm.testing.fake_provider import FakeProvider, RecordedRequest
from costkit_litellm.testing.proxy_server import ProxyServer, base_config, enable_costkit, openai_deployment
from costkit_litellm.testing.redis_server import RedisServer

pytestmark = pytest.mark.redis

NANO = Decimal("1e-9")
# LiteLLM's price map in nano-dollars: per token (gpt-4o-mini, text-embedding-3-small), per
# character (tts-1), per second (whisper-1), per search (Cohere rerank), per image token (gpt-image-1).
MINI_IN, MINI_OUT = 150, 600
EMBED_IN = 20
TTS_PER_CHAR = 15_000
WHISPER_PER_SECOND = 100_000
RERANK_PER_SEARCH = 2_000_000
IMAGE_TEXT_IN, IMAGE_OUT = 5_000, 40_000
LIMITS = {  # feature -> limit in nano-dollars (a few answers each)
    "sdk_chat": 102_000,
    "sdk_stream": 102_000,
    "sdk_responses": 102_000,
    "sdk_messages": 102_000,
    "sdk_embeddings": 2_000,
    "sdk_speech": 1_400_000,
    "sdk_transcription": 2_000_000,
    "sdk_images": 45_000_000,
    "sdk_rerank": 7_000_000,
    "sdk_batches": 1_000_000,
}
TRIES = 15


def usd(nano: int) -> str:
    return str(Decimal(nano) * NANO)


def billed_nano(request: RecordedRequest) -> int:
    """What one provider request cost at LiteLLM's prices, from what the fake provider billed."""
    usage = request.usage or {}
    path = request.path
    if path == "/v1/audio/speech":
        return int(usage["characters"]) * TTS_PER_CHAR
    if path == "/v1/audio/transcriptions":
        return int(usage["seconds"]) * WHISPER_PER_SECOND
    if path.endswith("/rerank"):
        return int(usage["searches"]) * RERANK_PER_SEARCH
    if path == "/v1/images/generations":
        return int(usage["prompt_tokens"]) * IMAGE_TEXT_IN + int(usage["completion_tokens"]) * IMAGE_OUT
    if path == "/v1/embeddings":
        return int(usage["prompt_tokens"]) * EMBED_IN
    return int(usage["prompt_tokens"]) * MINI_IN + int(usage["completion_tokens"]) * MINI_OUT


@pytest.fixture(scope="module")
def provider() -> Iterator[FakeProvider]:
    """A provider billing every input it reads and the reply it writes."""
    with FakeProvider(record_limit=5000) as fake:
        yield fake


@pytest.fixture(scope="module")
def config_path(
    config_writer: Callable[[str, Mapping[str, Any]], Path], provider: FakeProvider, redis_server: RedisServer
) -> Path:
    models = [
        openai_deployment("mini", provider.base_url),
        openai_deployment("agent-mini", provider.base_url, extra_headers={"x-fake-tool-call": '{"q": "same"}'}),
        openai_deployment("embed", provider.base_url, model="openai/text-embedding-3-small"),
        openai_deployment("tts", provider.base_url, model="openai/tts-1"),
        openai_deployment("whisper", provider.base_url, model="openai/whisper-1"),
        openai_deployment("image", provider.base_url, model="openai/gpt-image-1"),
        openai_deployment("moderation", provider.base_url, model="openai/omni-moderation-latest"),
        {
            "model_name": "rerank",
            "litellm_params": {"model": "cohere/rerank-english-v3.0", "api_base": provider.root_url, "api_key": "x"},
        },
    ]
    config = base_config(models, num_retries=0)
    config["router_settings"] = {"num_retries": 0, "disable_cooldowns": True}
    budgets = [
        {"name": f"cap_{f}", "scope": "tag:feature", "values": [f], "limit_usd": usd(n), "window": "day"}
        for f, n in LIMITS.items()
    ]
    costkit = {
        "redis_url": redis_server.url,
        "key_prefix": f"sdk-{uuid.uuid4().hex[:8]}",
        "budgets": budgets,
        "breaker": {"enabled": True, "max_steps": 4, "loop_threshold": 3, "max_spend_usd": 1},
    }
    return config_writer("endpoints-sdk", enable_costkit(config, costkit))


@pytest.fixture(scope="module")
def proxy(config_path: Path) -> Iterator[ProxyServer]:
    with ProxyServer(config_path) as server:
        yield server


@pytest.fixture(scope="module")
def oai(proxy: ProxyServer) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{proxy.base_url}/v1", api_key=proxy.master_key, max_retries=0) as client:
        yield client


def refused_after_some(call: Callable[[], Any], error: type[Exception]) -> tuple[int, Any]:
    """Call until the SDK raises ``error`` (at most TRIES times); returns (admitted, the exception)."""
    for admitted in range(TRIES):
        try:
            call()
        except error as exc:
            return admitted, exc
    raise AssertionError(f"no {error.__name__} after {TRIES} calls")


def assert_budget_429(
    exc: openai.APIStatusError | anthropic.APIStatusError,
    feature: str,
    error_type: str = "budget_exceeded",
    retry_after: bool = True,
) -> None:
    """A 429 of ``error_type`` naming the feature's budget, with a Retry-After (where the proxy route keeps it)."""
    assert exc.status_code == 429
    body = exc.body if isinstance(exc.body, dict) else {}
    error = body.get("error", body)
    assert error.get("type") == error_type, body
    assert f"Budget 'cap_{feature}' exceeded" in str(error.get("message")), body
    if retry_after:
        assert int(exc.response.headers["retry-after"]) > 0
    else:  # LiteLLM's image route rebuilds the error without the hook's headers
        assert "retry-after" not in exc.response.headers


def report(config_path: Path, by: str) -> dict[str, dict[str, Any]]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert costkit_main(["report", "--config", str(config_path), "--by", by, "--format", "json"]) == 0
    return {row["group"]: row for row in json.loads(out.getvalue())}


def ledger(config_path: Path, feature: str) -> list[dict[str, Any]]:
    """The ledger entries of one feature (``costkit ledger``)."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert costkit_main(["ledger", "--config", str(config_path), "--format", "jsonl"]) == 0
    rows = [json.loads(line) for line in out.getvalue().splitlines() if line]
    return [r for r in rows if r.get("costkit.attr.feature") == feature]


def meta(feature: str) -> dict[str, Any]:
    return {"metadata": {"feature": feature}}


class TestSDKsAgainstBudgets:
    def test_chat_completions(self, oai: openai.OpenAI) -> None:
        """chat.completions.create: a few admitted, then RateLimitError type budget_exceeded with Retry-After."""
        admitted, exc = refused_after_some(
            lambda: oai.chat.completions.create(
                model="mini",
                messages=[{"role": "user", "content": "hello sdk_chat"}],
                max_tokens=40,
                **meta("sdk_chat"),
            ),
            openai.RateLimitError,
        )
        assert admitted >= 3
        assert_budget_429(exc, "sdk_chat")

    def test_streaming_with_usage(self, oai: openai.OpenAI) -> None:
        """A stream with include_usage is budgeted like a plain call."""

        def stream() -> None:
            chunks = oai.chat.completions.create(
                model="mini",
                messages=[{"role": "user", "content": "hello sdk_stream"}],
                max_tokens=40,
                stream=True,
                stream_options={"include_usage": True},
                **meta("sdk_stream"),
            )
            assert any(c.usage is not None for c in chunks)

        admitted, exc = refused_after_some(stream, openai.RateLimitError)
        assert admitted >= 3
        assert_budget_429(exc, "sdk_stream")

    def test_responses(self, oai: openai.OpenAI) -> None:
        """responses.create (metadata in litellm_metadata on this route) is budgeted, not refused with a 400."""
        admitted, exc = refused_after_some(
            lambda: oai.responses.create(
                model="mini", input="hello sdk_responses", max_output_tokens=40, metadata={"feature": "sdk_responses"}
            ),
            openai.RateLimitError,
        )
        assert admitted >= 3
        assert_budget_429(exc, "sdk_responses")

    def test_anthropic_messages(self, proxy: ProxyServer) -> None:
        """Anthropic's messages.create on /v1/messages (served by an OpenAI deployment) is budgeted."""
        client = anthropic.Anthropic(base_url=proxy.base_url, api_key=proxy.master_key, max_retries=0)
        admitted, exc = refused_after_some(
            lambda: client.messages.create(
                model="mini",
                max_tokens=40,
                messages=[{"role": "user", "content": "hello sdk_messages"}],
                extra_headers={"x-litellm-tags": "feature:sdk_messages"},
            ),
            anthropic.RateLimitError,
        )
        assert admitted >= 3
        # The proxy answers /v1/messages in Anthropic's error shape, whose types are fixed: rate_limit_error.
        assert_budget_429(exc, "sdk_messages", error_type="rate_limit_error")

    def test_embeddings(self, oai: openai.OpenAI) -> None:
        """embeddings.create is held at its input tokens and refused when the budget is spent."""
        admitted, exc = refused_after_some(
            lambda: oai.embeddings.create(
                model="embed",
                input=["hello sdk_embeddings", "budgets for every endpoint"],
                extra_body=meta("sdk_embeddings"),
            ),
            openai.RateLimitError,
        )
        assert admitted >= 3
        assert_budget_429(exc, "sdk_embeddings")

    def test_speech(self, oai: openai.OpenAI) -> None:
        """audio.speech.create is held at characters x price and refused when the budget is spent."""
        admitted, exc = refused_after_some(
            lambda: oai.audio.speech.create(
                model="tts", voice="alloy", input="hello sdk_speech", extra_body=meta("sdk_speech")
            ).read(),
            openai.RateLimitError,
        )
        assert admitted >= 3
        assert_budget_429(exc, "sdk_speech")

    def test_transcription(self, oai: openai.OpenAI) -> None:
        """audio.transcriptions.create is held at the upload's longest possible duration."""
        audio = b"\0" * 8_000  # the fake bills 1 s; the hold assumes at most 8 s
        admitted, exc = refused_after_some(
            lambda: oai.audio.transcriptions.create(
                model="whisper",
                file=("a.mp3", audio, "audio/mpeg"),
                extra_headers={"x-litellm-tags": "feature:sdk_transcription"},  # a multipart body has no metadata
            ),
            openai.RateLimitError,
        )
        assert admitted >= 3
        assert_budget_429(exc, "sdk_transcription", retry_after=False)

    def test_images(self, oai: openai.OpenAI) -> None:
        """images.generate is held at LiteLLM's per-image price for the size and quality."""
        admitted, exc = refused_after_some(
            lambda: oai.images.generate(
                model="image", prompt="a cat sdk_images", size="1024x1024", quality="low", extra_body=meta("sdk_images")
            ),
            openai.RateLimitError,
        )
        assert admitted >= 3
        assert_budget_429(exc, "sdk_images", retry_after=False)

    def test_rerank(self, proxy: ProxyServer) -> None:
        """/v1/rerank is held at its search units and refused when the budget is spent."""
        body = {"model": "rerank", "query": "q sdk_rerank", "documents": ["a", "b", "c"], **meta("sdk_rerank")}
        statuses = [
            httpx.post(f"{proxy.base_url}/v1/rerank", headers=proxy.auth_headers, json=body, timeout=30).status_code
            for _ in range(6)
        ]
        assert statuses[:3] == [200, 200, 200] and 429 in statuses, statuses

    def test_moderation_is_free_and_accounted(self, oai: openai.OpenAI) -> None:
        """moderations.create costs nothing and passes."""
        result = oai.moderations.create(model="moderation", input="hello")
        assert result.results and not result.results[0].flagged

    def test_batches_under_a_budget_are_refused_naming_it(
        self, oai: openai.OpenAI, provider: FakeProvider, config_path: Path
    ) -> None:
        """A batch cannot be bounded before it runs: under a budget it is refused, naming the budget and the endpoint.

        The pack raises a 400 ``budget_unbounded_call``; LiteLLM 1.108.7's batches route turns any error into a
        500 when the ``prisma`` package is not installed (as here), so the refusal is read from the ledger.
        """
        before = len(provider.recorded())
        with pytest.raises(openai.APIStatusError):
            oai.batches.create(
                input_file_id="file-abc",
                endpoint="/v1/chat/completions",
                completion_window="24h",
                metadata={"feature": "sdk_batches"},
            )
        assert not [r for r in provider.recorded()[before:] if "batch" in r.path]
        deadline = time.monotonic() + 10
        while not (events := ledger(config_path, "sdk_batches")) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert [(e["costkit.outcome"], e["costkit.reason"], e["costkit.endpoint"]) for e in events] == [
            ("budget_rejected", "budget_unbounded_call", "batches")
        ]

    def test_breaker_steps_on_embeddings(self, oai: openai.OpenAI) -> None:
        """The breaker's step limit counts embeddings calls of a session like chat calls."""
        session = {"x-costkit-session": f"emb-{uuid.uuid4().hex[:8]}"}
        admitted, exc = refused_after_some(
            lambda: oai.embeddings.create(model="embed", input=f"hi {uuid.uuid4().hex}", extra_headers=session),
            openai.RateLimitError,
        )
        assert admitted == 4
        body = exc.body if isinstance(exc.body, dict) else {}
        assert body.get("error", body).get("type") == "agent_step_limit", body

    async def test_looping_agent_is_stopped(self, proxy: ProxyServer) -> None:
        """An Agents SDK agent calling the same tool again and again is stopped with 429 agent_loop_detected."""
        from agents import Agent, OpenAIChatCompletionsModel, Runner, function_tool, set_tracing_disabled

        set_tracing_disabled(True)
        calls: list[str] = []

        @function_tool
        def lookup(q: str) -> str:
            """Look something up."""
            calls.append(q)
            return "nothing found"

        client = openai.AsyncOpenAI(
            base_url=f"{proxy.base_url}/v1",
            api_key=proxy.master_key,
            max_retries=0,
            default_headers={"x-costkit-session": f"agent-{uuid.uuid4().hex[:8]}"},
        )
        agent = Agent(
            name="looper",
            instructions="Find it.",
            tools=[lookup],
            model=OpenAIChatCompletionsModel(model="agent-mini", openai_client=client),
        )
        with pytest.raises(openai.RateLimitError) as info:
            await Runner.run(agent, "find the thing", max_turns=20)
        body = info.value.body if isinstance(info.value.body, dict) else {}
        assert body.get("error", body).get("type") == "agent_loop_detected", body
        assert calls == ["same"] * 3
        await client.close()


class TestAccounting:
    def test_report_by_feature_equals_the_provider_bill(
        self, provider: FakeProvider, config_path: Path, proxy: ProxyServer
    ) -> None:
        """After the SDK runs, the report by feature equals what the fake provider billed, under every limit."""
        billed: dict[str, int] = {}
        for request in provider.recorded():
            if request.status != 200 or not request.usage:
                continue
            feature = _feature(request)
            if feature in LIMITS:
                billed[feature] = billed.get(feature, 0) + billed_nano(request)
        assert set(billed) >= set(LIMITS) - {"sdk_batches"}
        for feature, amount in billed.items():
            assert amount <= LIMITS[feature], feature
        deadline = time.monotonic() + 20
        while True:
            rows = report(config_path, "feature")
            spent = {f: int(Decimal(rows[f]["spend"]) / NANO) for f in billed if f in rows}
            if spent == billed or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert spent == billed

    def test_one_event_per_outcome_and_endpoint_grouping(self, config_path: Path) -> None:
        """Each request is one ledger event (responses included), and the report groups by endpoint."""
        rows = report(config_path, "feature")
        assert rows["sdk_responses"]["requests"] == rows["sdk_responses"]["billable"] + 1  # + the refusal
        assert rows["sdk_messages"]["requests"] == rows["sdk_messages"]["billable"] + 1
        endpoints = report(config_path, "endpoint")
        assert {"chat", "responses", "messages", "embeddings", "speech", "transcription", "image_generation"} <= set(
            endpoints
        )
        assert {"rerank", "moderation", "batches"} <= set(endpoints)


def _feature(request: RecordedRequest) -> str | None:
    """The feature a provider request was made for: each test's input names its feature."""
    if request.path == "/v1/audio/transcriptions":
        return "sdk_transcription"
    text = json.dumps(request.body, default=str)
    return next((f for f in LIMITS if f in text), None)
