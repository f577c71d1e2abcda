"""The pack's part in the proxy's life: readiness, and a shutdown that loses nothing.

LiteLLM (1.108.7) has no shutdown hook for callbacks. On SIGTERM uvicorn stops accepting
connections and waits for open ones; the proxy's lifespan then drains in-flight requests
(``GracefulShutdownManager.wait_for_drain``, bounded by ``GRACEFUL_SHUTDOWN_TIMEOUT``) and calls
``proxy_server.proxy_shutdown_event``, a module global looked up at that moment. We wrap that
function: before LiteLLM tears down, the pack

1. refuses new requests (503 ``costkit_shutting_down``: nothing should still arrive, but a
   request that does is not admitted half-way through the flush),
2. waits (``shutdown.flush_timeout_s``) for LiteLLM's logging worker, which runs the success
   callbacks of the requests just answered, so their spend reaches the pack,
3. runs ``CostKit.shutdown``: replays the outage queue, spools what the store does not take,
   flushes the webhook queue, closes the store.

The kit starts (connects the store, replays a spool left by an earlier shutdown) as soon as the
callback is built, on the proxy's loop.

``GET /costkit/readiness`` (no auth, for probes): 503 while the proxy drains or shuts down, and
503 while the store does not answer under ``on_store_error: fail_closed`` (the replica would only
answer 503s then); otherwise 200. Under ``fail_open`` the replica stays ready through an outage.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from costkit_litellm.litellm_adapter.callback import CostKitCallback

log = logging.getLogger(__name__)

READINESS_PATH = "/costkit/readiness"
_MARK = "_costkit_shutdown"
_background: set[asyncio.Task[None]] = set()


def litellm_draining() -> bool:
    """True once LiteLLM's graceful shutdown began (SIGTERM, or a preStop call to ``/health/drain``)."""
    try:
        from litellm.proxy.shutdown.graceful_shutdown_manager import GracefulShutdownManager
    except Exception:
        return False
    return bool(GracefulShutdownManager.is_shutting_down())


async def wait_for_logging_callbacks(timeout_s: float) -> bool:
    """Wait until LiteLLM's logging worker has run every queued callback; False on timeout."""
    from litellm.litellm_core_utils.logging_worker import GLOBAL_LOGGING_WORKER

    try:
        await asyncio.wait_for(GLOBAL_LOGGING_WORKER.flush(), timeout_s)
    except asyncio.TimeoutError:
        return False
    return True


async def shutdown(callback: CostKitCallback) -> None:
    """Stop admitting, let the answered requests' callbacks finish, flush and close the kit."""
    kit = callback.kit
    kit.closing = True
    if not await wait_for_logging_callbacks(kit.config.shutdown.flush_timeout_s):
        log.warning("costkit: LiteLLM's logging callbacks did not finish within shutdown.flush_timeout_s")
    report = await kit.shutdown()
    print(report.summary(), file=sys.stderr, flush=True)


def _wrap_shutdown(proxy_server: Any, callback: CostKitCallback) -> None:
    original: Callable[..., Awaitable[None]] = proxy_server.proxy_shutdown_event
    if getattr(original, _MARK, False):  # one wrapper per process (a re-built callback replaces it)
        original = getattr(original, "__wrapped__")  # noqa: B009

    async def costkit_then_litellm_shutdown(*args: Any, **kwargs: Any) -> None:
        try:
            await shutdown(callback)
        except Exception:  # LiteLLM's own teardown must still run
            log.exception("costkit: shutdown flush failed")
        await original(*args, **kwargs)

    setattr(costkit_then_litellm_shutdown, _MARK, True)
    costkit_then_litellm_shutdown.__wrapped__ = original  # type: ignore[attr-defined]
    proxy_server.proxy_shutdown_event = costkit_then_litellm_shutdown


def _add_readiness_route(proxy_server: Any, callback: CostKitCallback) -> None:
    from fastapi.responses import JSONResponse

    async def costkit_readiness() -> JSONResponse:
        if litellm_draining() or callback.kit.closing:
            return JSONResponse({"status": "shutting_down"}, status_code=503)
        ready, detail = await callback.kit.ready()
        return JSONResponse({"status": "ready" if ready else "store_unreachable", **detail}, 200 if ready else 503)

    router = proxy_server.app.router
    router.routes[:] = [r for r in router.routes if getattr(r, "path", None) != READINESS_PATH]
    proxy_server.app.add_api_route(READINESS_PATH, costkit_readiness, methods=["GET"], include_in_schema=False)
    router.routes.insert(0, router.routes.pop())  # ahead of any catch-all route


def install_proxy_lifecycle(callback: CostKitCallback) -> None:
    """Wrap the proxy's shutdown and add the readiness route; nothing outside the proxy."""
    try:
        from litellm.proxy import proxy_server
    except Exception:  # proxy extras not importable: application code without the proxy
        return
    if getattr(proxy_server, "app", None) is None:
        return
    _wrap_shutdown(proxy_server, callback)
    _add_readiness_route(proxy_server, callback)
    _start_soon(callback)


def _start_soon(callback: CostKitCallback) -> None:
    """Connect the store (and replay a spool) while the proxy finishes starting, not on the first request."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:  # built outside the proxy's loop: the first request starts it
        return
    task = loop.create_task(callback.kit.warm_up())
    _background.add(task)
    task.add_done_callback(_background.discard)
