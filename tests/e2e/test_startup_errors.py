"""Start-up mistakes in real `litellm --config ...` proxies: each stops the proxy with one `costkit:`
line naming the file, the key (or the URL, password masked) and the fix, printed before LiteLLM's
own traceback."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest

from costkit_litellm.testing.proxy_server import ProxyServer, base_config, enable_costkit, mock_deployment
from costkit_litellm.testing.redis_server import RedisServer


def _costkit_lines(log: str) -> list[str]:
    return [line for line in log.splitlines() if line.startswith("costkit: ")]


def _fails(config_writer: Callable[[str, Mapping[str, Any]], Path], costkit: Mapping[str, Any]) -> tuple[Path, str]:
    """Start a proxy with this costkit section; assert it exits; return (config path, log)."""
    config = enable_costkit(base_config([mock_deployment("mini")]), costkit)
    path = config_writer(f"startup-{uuid.uuid4().hex[:8]}", config)
    code, log = ProxyServer(path).start_expecting_failure(timeout_s=120)
    assert code != 0, log
    return path, log


def _one_line_first(log: str) -> str:
    """The single costkit: line, which comes before any traceback."""
    lines = _costkit_lines(log)
    assert len(lines) == 1, lines
    (line,) = lines
    traceback = log.find("Traceback")
    assert traceback == -1 or log.index(line) < traceback, "the costkit: line must precede LiteLLM's traceback"
    return line


def test_typo_gets_a_did_you_mean(config_writer: Callable[[str, Mapping[str, Any]], Path]) -> None:
    """`loop_treshold` stops the proxy with one line naming the file and key and suggesting `loop_threshold`."""
    path, log = _fails(config_writer, {"breaker": {"enabled": True, "loop_treshold": 3}})
    line = _one_line_first(log)
    assert line == f"costkit: {path}: costkit.breaker.loop_treshold: is not a known key; did you mean loop_threshold?"


def test_bad_value_names_the_key_and_the_accepted_values(
    config_writer: Callable[[str, Mapping[str, Any]], Path],
) -> None:
    """A wrong value stops the proxy with one line naming the file, the key path and what is accepted."""
    path, log = _fails(config_writer, {"budget_settings": {"on_store_error": "fail_sometimes"}})
    line = _one_line_first(log)
    assert line.startswith(f"costkit: {path}: costkit.budget_settings.on_store_error: 'fail_sometimes'")
    assert "'fail_open' or 'fail_closed'" in line


@pytest.mark.redis
def test_unreachable_redis_names_the_masked_url_and_the_fix(
    config_writer: Callable[[str, Mapping[str, Any]], Path],
) -> None:
    """An unreachable Redis stops the proxy with one line: the key, the URL with its password masked, the fix."""
    path, log = _fails(config_writer, {"redis_url": "redis://ops:hunter2@127.0.0.1:1/0"})
    line = _one_line_first(log)
    assert line.startswith(
        f"costkit: {path}: costkit.redis_url: cannot connect to Redis at redis://ops:***@127.0.0.1:1/0 ("
    )
    assert "unset costkit.redis_url to keep state in process" in line
    assert "hunter2" not in log


@pytest.mark.redis
def test_cache_on_a_redis_without_search_says_so(config_writer: Callable[[str, Mapping[str, Any]], Path]) -> None:
    """The cache on a Redis without the search module stops the proxy with one line naming the cache's URL."""
    with RedisServer(search=False) as plain:
        url = plain.url
        path, log = _fails(
            config_writer,
            {"redis_url": plain.url, "cache": {"enabled": True, "embedding_model": "text-embedding-3-small"}},
        )
    line = _one_line_first(log)
    assert re.match(
        rf"costkit: {re.escape(str(path))}: costkit\.redis_url \(semantic cache\): "
        rf"{re.escape(url)} has no search module",
        line,
    ), line
    assert "cache.backend: memory" in line


def test_missing_router_model_names_the_file_and_the_fix(
    config_writer: Callable[[str, Mapping[str, Any]], Path], tmp_path: Path
) -> None:
    """A learned router whose model file is missing stops the proxy with one line naming the file and the fix."""
    missing = tmp_path / "router.json"
    routing = {
        "enabled": True,
        "classifier": "learned",
        "model_path": str(missing),
        "tiers": [{"name": "economy", "model": "mini"}, {"name": "premium", "model": "mini"}],
    }
    path, log = _fails(config_writer, {"routing": routing})
    line = _one_line_first(log)
    assert line.startswith(f"costkit: {path}: costkit.routing.model_path: router model file {missing}")
    assert "costkit router train" in line
