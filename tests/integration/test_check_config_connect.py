"""``costkit check-config --connect`` against real Redis servers: it connects, checks the search module
the cache needs and reads the router model, failing with the same one-line messages as the proxy."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from costkit_litellm.cli import main
from costkit_litellm.testing.redis_server import RedisServer

pytestmark = pytest.mark.redis
CALLBACK = "costkit_litellm.litellm_adapter.proxy.costkit_callback"


def config_file(tmp_path: Path, costkit: dict[str, Any]) -> str:
    path = tmp_path / "proxy_config.yaml"
    path.write_text(yaml.safe_dump({"litellm_settings": {"callbacks": [CALLBACK]}, "costkit": costkit}))
    return str(path)


def errors(capsys: pytest.CaptureFixture[str]) -> list[str]:
    return capsys.readouterr().err.splitlines()


def test_unreachable_redis_is_valid_without_connect_and_fails_with_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """redis://...:1 passes the file check; --connect exits 1 with one line naming the masked URL and the fix."""
    path = config_file(tmp_path, {"redis_url": "redis://ops:s3cret@127.0.0.1:1"})
    assert main(["check-config", path]) == 0
    capsys.readouterr()
    assert main(["check-config", path, "--connect"]) == 1
    [line] = errors(capsys)
    assert line.startswith(
        f"costkit: {path}: costkit.redis_url: cannot connect to Redis at redis://ops:***@127.0.0.1:1 ("
    )
    assert "(connection refused)" in line and "s3cret" not in line


def test_a_reachable_redis_with_search_passes(
    redis_server: RedisServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """With a Redis that answers and has the search module, --connect exits 0 and says so."""
    costkit = {
        "redis_url": redis_server.url,
        "cache": {"enabled": True, "embedding_model": "text-embedding-3-small"},
    }
    assert main(["check-config", config_file(tmp_path, costkit), "--connect"]) == 0
    assert "its Redis, cache and models answer" in capsys.readouterr().out


def test_cache_on_a_redis_without_search_fails(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The cache on a Redis without the search module exits 1 naming the cache's own URL key."""
    with RedisServer(search=False) as plain:
        costkit = {
            "cache": {"enabled": True, "embedding_model": "text-embedding-3-small", "redis_url": plain.url},
        }
        path = config_file(tmp_path, costkit)
        assert main(["check-config", path, "--connect"]) == 1
        [line] = errors(capsys)
        assert line.startswith(f"costkit: {path}: costkit.cache.redis_url (semantic cache): {plain.url} has no search")


def test_missing_router_model_fails(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A learned router whose model file is missing exits 1 naming the file and how to make one."""
    routing = {
        "enabled": True,
        "classifier": "learned",
        "model_path": str(tmp_path / "router.json"),
        "tiers": [{"name": "economy", "model": "a"}, {"name": "premium", "model": "b"}],
    }
    path = config_file(tmp_path, {"routing": routing})
    assert main(["check-config", path, "--connect"]) == 1
    [line] = [line for line in errors(capsys) if line.startswith("costkit: ")]  # the embedder may log too
    assert line.startswith(f"costkit: {path}: costkit.routing.model_path: router model file {tmp_path / 'router.json'}")
    assert "costkit router train" in line
