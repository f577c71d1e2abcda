"""The callback instance the proxy loads: ``litellm_settings.callbacks:
costkit_litellm.litellm_adapter.proxy.costkit_callback``.

The instance is built when the proxy asks for it (module ``__getattr__``), not at import: by then
the proxy knows its config file, so the ``costkit:`` section is read and validated at start-up and
a bad key stops the proxy with a message naming the file and the key. If a ``redis_url`` is set,
Redis is probed once (and the cache's Redis for the search module): an unreachable Redis also
stops the start-up, naming the URL. Every such problem is printed as one ``costkit:`` line before
LiteLLM's traceback. Building the callback also installs the proxy's shutdown flush and the
``/costkit/readiness`` route (``lifecycle``).
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from typing import Any

from costkit_litellm.errors import ConfigError
from costkit_litellm.kit import CostKit
from costkit_litellm.litellm_adapter.callback import CostKitCallback
from costkit_litellm.litellm_adapter.lifecycle import install_proxy_lifecycle
from costkit_litellm.preflight import check_connections
from costkit_litellm.redact import mask_url

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


def build() -> CostKitCallback:
    """Read the proxy's config, probe the store, and build the callback."""
    path = proxy_config_path()
    if path is None:
        log.warning("costkit: proxy config file not found; running with defaults")
        kit = CostKit()
    else:
        kit = CostKit.from_yaml(path)
    check_connections(kit.config, path)
    where = f"Redis {mask_url(kit.config.redis_url)}" if kit.config.redis_url else "in process (embedded default)"
    # A start-up banner on stderr (the proxy's own logging config may hide INFO lines).
    print(
        f"costkit: loaded from {path}; state: {where}; stages: {', '.join(kit.stage_names())}",
        file=sys.stderr,
        flush=True,
    )
    callback = CostKitCallback(kit)
    install_proxy_lifecycle(callback)
    return callback


def startup_lines(exc: BaseException, source: str | None) -> list[str]:
    """One ``costkit:`` line per problem, naming the file and key (or URL) and the fix."""
    if isinstance(exc, ConfigError):
        where = f"{exc.source or source}: " if (exc.source or source) else ""
        return [f"costkit: {where}{problem}" for problem in exc.problems]
    where = f"{source}: " if source else ""
    return [f"costkit: {where}start-up failed: {type(exc).__name__}: {exc}"]


def __getattr__(name: str) -> Any:
    global _instance
    if name != "costkit_callback":
        raise AttributeError(name)
    with _lock:
        if _instance is None:
            try:
                _instance = build()
            except Exception as exc:
                # Printed plainly, before LiteLLM's traceback: the lines a user reads when the proxy
                # refuses to start.
                for line in startup_lines(exc, proxy_config_path()):
                    print(line, file=sys.stderr, flush=True)
                raise
        return _instance
