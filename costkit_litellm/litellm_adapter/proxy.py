"""The callback instance the proxy loads: ``litellm_settings.callbacks:
costkit_litellm.litellm_adapter.proxy.costkit_callback``.

The instance is built when the proxy asks for it (module ``__getattr__``), not at import: by then
the proxy knows its config file, so the ``costkit:`` section is read and validated at start-up and
a bad key stops the proxy with a message naming the file and the key. If a ``redis_url`` is set,
Redis is probed once: an unreachable Redis also stops the start-up, naming the URL.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import threading
from typing import Any

from costkit_litellm.config import CostKitConfig
from costkit_litellm.errors import ConfigError
from costkit_litellm.kit import CostKit
from costkit_litellm.litellm_adapter.callback import CostKitCallback
from costkit_litellm.redact import mask_url
from costkit_litellm.store.factory import store_from_url

log = logging.getLogger(__name__)

_instance: CostKitCallback | None = None
_lock = threading.Lock()

CONFIG_ENV = "COSTKIT_CONFIG"


def proxy_config_path() -> str | None:
    """The config file the proxy was started with (``COSTKIT_CONFIG`` overrides it)."""
    explicit = os.environ.get(CONFIG_ENV)
    if explicit:
        return explicit
    try:
        from litellm.proxy import proxy_server

        path = getattr(proxy_server, "user_config_file_path", None)
    except Exception:
        path = None
    if path:
        return str(path)
    for name in ("CONFIG_FILE_PATH", "WORKER_CONFIG"):
        value = os.environ.get(name)
        if value and os.path.isfile(value):
            return value
    return None


def _probe_store(config: CostKitConfig) -> None:
    """Connect once to the configured Redis (in a thread with its own loop) or raise naming it."""
    if not config.redis_url:
        return
    errors: list[BaseException] = []

    async def probe() -> None:
        store = store_from_url(config.redis_url, prefix=config.key_prefix, cluster=config.redis_cluster)
        try:
            await store.start()
        finally:
            await store.close()

    def run() -> None:
        try:
            asyncio.run(probe())
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=run, name="costkit-store-probe")
    thread.start()
    thread.join()
    if errors:
        raise errors[0]


def build() -> CostKitCallback:
    """Read the proxy's config, probe the store, and build the callback."""
    path = proxy_config_path()
    if path is None:
        log.warning("costkit: proxy config file not found; running with defaults")
        kit = CostKit()
    else:
        kit = CostKit.from_yaml(path)
    _probe_store(kit.config)
    where = f"Redis {mask_url(kit.config.redis_url)}" if kit.config.redis_url else "in process (embedded default)"
    # A start-up banner on stderr (the proxy's own logging config may hide INFO lines).
    print(
        f"costkit: loaded from {path}; state: {where}; stages: {', '.join(kit.stage_names())}",
        file=sys.stderr,
        flush=True,
    )
    return CostKitCallback(kit)


def __getattr__(name: str) -> Any:
    global _instance
    if name != "costkit_callback":
        raise AttributeError(name)
    with _lock:
        if _instance is None:
            try:
                _instance = build()
            except ConfigError as exc:
                # Printed plainly: this is the line a user reads when the proxy refuses to start.
                print(f"costkit: invalid configuration: {exc}", file=sys.stderr, flush=True)
                raise
        return _instance
