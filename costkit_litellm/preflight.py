"""Start-up checks that connect: the store, the cache's search module, the embedder and model files.

The proxy runs the cheap ones (Redis answers, the search module is there) before it serves;
``costkit check-config --connect`` runs them all, loading the embedder too. Each problem is one
line naming the key and the URL (password masked) and saying what to do, e.g.
``costkit.redis_url: cannot connect to redis://127.0.0.1:1 (Connection refused); start Redis
there, fix the URL, or unset it to keep state in process (one replica only)``. They come back as
a ``ConfigError`` so the proxy and the CLI print them the same way.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any

from costkit_litellm.config import CostKitConfig
from costkit_litellm.embeddings import LOCAL_MINILM, EmbedderUnavailable
from costkit_litellm.errors import ConfigError
from costkit_litellm.redact import mask_url
from costkit_litellm.store import StoreError
from costkit_litellm.store.factory import store_from_url


def _reason(exc: BaseException) -> str:
    """The useful part of a connection error: ``connection refused``, ``timed out``, else its text."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ConnectionRefusedError) or "Connect call failed" in str(seen):
            return "connection refused"
        if isinstance(seen, TimeoutError) or "Timeout" in type(seen).__name__:
            return "timed out"
        seen = seen.__cause__ or seen.__context__
    text = str(exc.__cause__ or exc)
    return text.split(". ", 1)[-1].strip().rstrip(".") or type(exc).__name__


async def store_problems(config: CostKitConfig) -> list[str]:
    """``costkit.redis_url``: the store connects and loads its scripts."""
    if not config.redis_url:
        return []
    url = mask_url(config.redis_url)
    try:
        store = store_from_url(config.redis_url, prefix=config.key_prefix, cluster=config.redis_cluster)
    except StoreError as exc:
        return [f"costkit.redis_url: {exc}"]
    try:
        await store.start()
    except StoreError as exc:
        kind = "Redis Cluster" if config.redis_cluster else "Redis"
        return [
            f"costkit.redis_url: cannot connect to {kind} at {url} ({_reason(exc)}); start it there, fix the URL "
            "(REDIS_URL), or unset costkit.redis_url to keep state in process (one replica only)"
        ]
    finally:
        await store.close()
    return []


async def cache_problems(config: CostKitConfig) -> list[str]:
    """``costkit.cache``: the cache's Redis answers and has the search module."""
    cache = config.cache
    url = config.cache_url()
    if not cache.enabled or cache.backend == "memory" or not url:
        return []
    from costkit_litellm.cache.redis_backend import RedisCache
    from costkit_litellm.cache.scope import CacheError

    key = "costkit.cache.redis_url" if cache.redis_url else "costkit.redis_url"
    backend = RedisCache(url, prefix=config.key_prefix, ttl_s=cache.ttl_s, max_entries=cache.max_entries)
    try:
        await backend.check_search()
    except CacheError as exc:
        return [f"{key} (semantic cache): {exc}; or set costkit.cache.backend: memory"]
    finally:
        await backend.close()
    return []


def model_problems(config: CostKitConfig) -> list[str]:
    """The local embedder loads (cache, learned router) and the router's model file reads."""
    problems: list[str] = []
    needs_local = (config.cache.enabled and config.cache.embedding_model == LOCAL_MINILM) or (
        config.routing.enabled and config.routing.classifier == "learned"
    )
    if needs_local:
        key = "costkit.cache.embedding_model" if config.cache.enabled else "costkit.routing.classifier"
        try:
            from costkit_litellm.embeddings.local import LocalEmbedder

            LocalEmbedder().embed_sync(["costkit start-up check"])
        except EmbedderUnavailable as exc:
            problems.append(f"{key}: {exc}")
        except Exception as exc:  # a broken install: torch, weights
            problems.append(f"{key}: {LOCAL_MINILM} does not load ({type(exc).__name__}: {exc})")
    if config.routing.enabled and config.routing.classifier == "learned":
        from costkit_litellm.routing.classifiers import ModelFileError
        from costkit_litellm.routing.stage import build_classifier

        try:
            build_classifier(config.routing, None)
        except ModelFileError as exc:
            problems.append(f"costkit.routing.model_path: {exc}; train one with `costkit router train`")
    return problems


async def connection_problems(config: CostKitConfig) -> list[str]:
    """Store and cache problems, both checked."""
    return [*await store_problems(config), *await cache_problems(config)]


def run_isolated(coroutine: Coroutine[Any, Any, list[str]]) -> list[str]:
    """Run a check on its own loop in a thread (the proxy's loop may be running in this one)."""
    result: list[list[str]] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            result.append(asyncio.run(coroutine))
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=run, name="costkit-preflight")
    thread.start()
    thread.join()
    if errors:
        raise errors[0]
    return result[0]


def check_connections(config: CostKitConfig, source: str | None, *, load_models: bool = False) -> None:
    """Raise a ``ConfigError`` listing every problem (one line each), or return."""
    problems = run_isolated(connection_problems(config))
    if load_models:
        problems += model_problems(config)
    if problems:
        raise ConfigError(problems, source)
