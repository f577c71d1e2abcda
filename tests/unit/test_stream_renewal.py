"""A live stream renews its hold on every route the proxy streams, wherever that route keeps its metadata."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from costkit_litellm.config import parse_config
from costkit_litellm.kit import CostKit
from costkit_litellm.litellm_adapter.call_types import call_type
from costkit_litellm.litellm_adapter.callback import CostKitCallback
from costkit_litellm.pipeline import Admission

BUDGET = {"budgets": [{"name": "g", "scope": "global", "limit_usd": "10", "window": "total"}]}


async def _chunks(n: int) -> AsyncIterator[str]:
    for i in range(n):
        yield f"chunk-{i}"


@pytest.mark.parametrize(
    ("route", "call", "body"),
    [
        ("/v1/chat/completions", "acompletion", {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 9}),
        ("/v1/responses", "aresponses", {"input": "hi", "max_output_tokens": 9}),
        ("/v1/messages", "anthropic_messages", {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 9}),
    ],
)
async def test_a_stream_renews_its_hold_on_every_streaming_route(route: str, call: str, body: dict[str, Any]) -> None:
    """The streaming hook finds the request's stash in the route's own metadata dict (litellm_metadata on
    /v1/responses and /v1/messages) and renews the hold; it read only `metadata` and never renewed there."""
    kit = CostKit(parse_config(BUDGET), registry=CollectorRegistry())
    callback = CostKitCallback(kit, router=lambda: None)
    callback.lease_s = 0.0  # every chunk is due a renewal
    renewed: list[str] = []

    async def renew(request_id: str, admission: Admission) -> None:
        renewed.append(request_id)

    kit.renew = renew  # type: ignore[method-assign]
    data: dict[str, Any] = {"model": "gpt-4o-mini", "stream": True, **body}
    data["proxy_server_request"] = {"url": f"http://proxy{route}"}
    await callback.admit(data, call_type(call))
    chunks = [c async for c in callback.async_post_call_streaming_iterator_hook(None, _chunks(3), data)]
    assert chunks == ["chunk-0", "chunk-1", "chunk-2"]
    assert len(renewed) == 3 and len(set(renewed)) == 1
    await kit.close()
