"""Build the configured ``Store`` from a URL: none -> in-process, ``redis://`` & co -> Redis."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from costkit_litellm.store.base import Store, StoreError
from costkit_litellm.store.memory import MemoryStore

REDIS_SCHEMES = frozenset({"redis", "rediss", "unix"})
"""URL schemes served by ``RedisStore`` (``rediss`` is TLS, ``unix`` a local socket)."""


def store_from_url(url: str | None, *, prefix: str = "costkit", cluster: bool = False, **kw: Any) -> Store:
    """A not-yet-started store for ``url``; ``kw`` goes to the store's constructor.

    ``None`` or ``""`` gives a ``MemoryStore`` (``prefix`` and ``cluster`` do not apply to it);
    an unknown scheme raises ``StoreError`` naming it.
    """
    if not url:
        if cluster:
            raise StoreError("cluster=True needs a redis:// URL")
        return MemoryStore(**kw)
    scheme = urlsplit(url).scheme.lower()
    if scheme not in REDIS_SCHEMES:
        known = ", ".join(f"{s}://" for s in sorted(REDIS_SCHEMES))
        raise StoreError(f"unsupported store URL scheme {scheme!r}; use {known} or no URL")
    if cluster and scheme == "unix":
        raise StoreError("Redis Cluster cannot be reached over a unix:// socket")
    from costkit_litellm.store.redis import RedisStore

    return RedisStore(url, prefix=prefix, cluster=cluster, **kw)
