"""Reviewer finding: audio output is held at the text output price, billed at the audio one.

gpt-4o-audio-preview writes audio tokens at $80/M (LiteLLM's ``output_cost_per_audio_token``)
against $10/M for text; the pack holds ``max_tokens`` x $10/M, so one request with
``modalities: ["text", "audio"]`` is admitted under a $0.02 limit and commits $0.08. The provider
here answers with the usage shape OpenAI returns for audio output (``completion_tokens_details``).
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp import web

from costkit_litellm.testing.ports import free_port
from costkit_litellm.testing.proxy_server import ProxyServer, base_config, enable_costkit, openai_deployment
from costkit_litellm.testing.redis_server import RedisServer

pytestmark = pytest.mark.redis

LIMIT = Decimal("0.02")


async def _chat(request: web.Request) -> web.Response:
    body = await request.json()
    cap = int(body.get("max_tokens") or 1000)
    audio = "audio" in (body.get("modalities") or [])
    message: dict[str, Any] = {"role": "assistant", "content": None if audio else "hi"}
    if audio:
        message["audio"] = {
            "id": "audio_x",
            "data": "UklGRg==",
            "expires_at": int(time.time()) + 3600,
            "transcript": "hi",
        }
    usage = {
        "prompt_tokens": 10,
        "completion_tokens": cap,
        "total_tokens": 10 + cap,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": cap if audio else 0,
            "text_tokens": 0 if audio else cap,
        },
    }
    choice = {"index": 0, "finish_reason": "length", "message": message}
    return web.json_response(
        {
            "id": "chatcmpl-x",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body["model"],
            "choices": [choice],
            "usage": usage,
        }
    )


@pytest.fixture(scope="module")
def audio_provider() -> Iterator[str]:
    """An OpenAI-shaped chat endpoint that writes ``max_tokens`` audio tokens when audio is asked for."""
    port = free_port()
    loop = asyncio.new_event_loop()
    ready = threading.Event()

    def serve() -> None:
        asyncio.set_event_loop(loop)
        app = web.Application()
        app.router.add_post("/v1/chat/completions", _chat)
        runner = web.AppRunner(app)
        loop.run_until_complete(runner.setup())
        loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", port).start())
        ready.set()
        loop.run_forever()
        loop.run_until_complete(runner.cleanup())

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    ready.wait(10)
    yield f"http://127.0.0.1:{port}/v1"
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)


@pytest.fixture(scope="module")
def proxy(
    config_writer: Callable[[str, Mapping[str, Any]], Path], audio_provider: str, redis_server: RedisServer
) -> Iterator[ProxyServer]:
    config = base_config(
        [openai_deployment("audio", audio_provider, model="openai/gpt-4o-audio-preview-2024-12-17")], num_retries=0
    )
    budget = {"name": "cap_audio", "scope": "global", "limit_usd": str(LIMIT), "window": "day"}
    costkit = {"redis_url": redis_server.url, "key_prefix": f"au-{uuid.uuid4().hex[:8]}", "budgets": [budget]}
    with ProxyServer(config_writer("review-audio-hold", enable_costkit(config, costkit))) as server:
        yield server


def test_audio_output_never_commits_past_the_limit(proxy: ProxyServer) -> None:
    """A chat request asking for audio output is refused, or commits within the limit."""
    body = {
        "model": "audio",
        "modalities": ["text", "audio"],
        "audio": {"voice": "alloy", "format": "wav"},
        "max_tokens": 1000,
        "messages": [{"role": "user", "content": "Say hi"}],
    }
    committed = Decimal(0)
    for _ in range(3):
        response = httpx.post(
            f"{proxy.base_url}/v1/chat/completions", headers=proxy.auth_headers, json=body, timeout=60
        )
        if response.status_code == 200:
            committed += Decimal(response.headers.get("x-costkit-cost-usd", "0"))
    assert committed <= LIMIT, f"committed ${committed} against a ${LIMIT} limit"
