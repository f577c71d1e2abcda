"""Session fixtures for end-to-end tests against a real ``litellm`` proxy process.

- ``fake_provider``: one :class:`FakeProvider` for the session (no latency, no
  failures). Tests that count requests or change its behaviour start their own
  (``with FakeProvider(...) as provider:``) or call ``fake_provider.reset()``.
- ``proxy_factory(name, config, env=None)``: the running proxy for a config
  name, started on first use and reused for the rest of the module; all are
  stopped when the module ends (a dozen idle proxies would hold gigabytes). Build ``config`` dicts with ``base_config``,
  ``mock_deployment``, ``openai_deployment`` and ``enable_costkit`` from
  ``costkit_litellm.testing.proxy_server``.
- ``config_writer(name, config)``: writes ``<name>.yaml`` into the module's
  config folder and returns its path (for proxies a test starts itself).

Every test collected from this folder is marked ``proxy``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from costkit_litellm.testing.fake_provider import FakeProvider
from costkit_litellm.testing.proxy_server import ProxyPool

_HERE = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if _HERE in item.path.parents:
            item.add_marker(pytest.mark.proxy)


@pytest.fixture(scope="session")
def fake_provider() -> Iterator[FakeProvider]:
    """A FakeProvider shared by the session: instant, never failing."""
    with FakeProvider(seed=0) as provider:
        yield provider


@pytest.fixture(scope="module")
def proxy_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProxyPool]:
    """Start-once-per-module proxies by config name, all stopped when the module ends (bounded memory)."""
    pool = ProxyPool(tmp_path_factory.mktemp("proxy-configs"))
    try:
        yield pool
    finally:
        pool.close()


@pytest.fixture(scope="module")
def config_writer(proxy_factory: ProxyPool) -> Callable[[str, Mapping[str, Any]], Path]:
    """Writes ``<name>.yaml`` into the module's config folder and returns its path."""
    return proxy_factory.write_config
