"""Shared state: the ``Store`` protocol, the in-process default and the Redis store.

``RedisStore`` is imported lazily (on first attribute access) so that using the in-process store
never imports ``redis``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from costkit_litellm.store.base import (
    Counter,
    FinishResult,
    LedgerEntry,
    Limit,
    LimitUsage,
    ReserveResult,
    Store,
    StoreError,
    first_tripped,
)
from costkit_litellm.store.factory import store_from_url
from costkit_litellm.store.memory import MemoryStore

if TYPE_CHECKING:
    from costkit_litellm.store.redis import RedisStore

__all__ = [
    "Counter",
    "FinishResult",
    "LedgerEntry",
    "Limit",
    "LimitUsage",
    "MemoryStore",
    "RedisStore",
    "ReserveResult",
    "Store",
    "StoreError",
    "first_tripped",
    "store_from_url",
]


def __getattr__(name: str) -> Any:
    if name == "RedisStore":
        from costkit_litellm.store.redis import RedisStore

        return RedisStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
