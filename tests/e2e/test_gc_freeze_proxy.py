"""performance.gc_freeze_after_s in a real proxy: LiteLLM's start-up heap is frozen once, and the pack works on."""

from __future__ import annotations

import re
import time

import httpx

from costkit_litellm.testing.proxy_server import ProxyPool, base_config, enable_costkit, mock_deployment


def test_the_proxy_freezes_its_start_up_heap_and_answers_as_before(proxy_factory: ProxyPool) -> None:
    """With gc_freeze_after_s: 0 the proxy logs one freeze of LiteLLM's whole start-up heap (hundreds of
    thousands of objects) and goes on answering with the pack's headers."""
    config = enable_costkit(base_config([mock_deployment("gpt-4o-mini")]), {"performance": {"gc_freeze_after_s": 0}})
    proxy = proxy_factory("gc-freeze", config)
    found: list[str] = []
    deadline = time.monotonic() + 30
    while not found and time.monotonic() < deadline:
        found = re.findall(r"froze the start-up heap \((\d+) objects\)", proxy.log_text())
        time.sleep(0.2)
    assert len(found) == 1, proxy.log_tail()
    assert int(found[0]) > 100_000  # LiteLLM's modules, model map and schemas, not a handful of objects
    for _ in range(3):
        response = httpx.post(
            f"{proxy.base_url}/v1/chat/completions",
            headers=proxy.auth_headers,
            json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 8},
            timeout=60,
        )
        assert response.status_code == 200, response.text
        assert response.headers["x-costkit-cost-usd"].startswith("0.")
    assert len(re.findall(r"froze the start-up heap", proxy.log_text())) == 1
