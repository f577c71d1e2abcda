"""Application code: the same pipeline around ``litellm.Router`` or ``litellm.acompletion``.

::

    kit = CostKit.from_yaml("proxy_config.yaml")
    router = litellm.Router(model_list=[...])
    install(kit, router)                  # router.acompletion now runs the costkit pipeline
    response = await router.acompletion(model="gpt-4o-mini", messages=[...], metadata={"feature": "x"})
    response._hidden_params["additional_headers"]["x-costkit-cost-usd"]

Refusals raise ``RequestRejected`` (the same policy the proxy answers with an HTTP error).
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import litellm

from costkit_litellm.errors import RequestAnswered
from costkit_litellm.kit import CostKit
from costkit_litellm.litellm_adapter.callback import CostKitCallback, final_answer

_ATTR = "_costkit_callback"


def _register(callback: CostKitCallback) -> None:
    if callback not in litellm.callbacks:
        litellm.callbacks.append(callback)


def _attach_headers(callback: CostKitCallback, data: dict[str, Any], response: Any) -> None:
    headers = callback.headers_for(data, response)
    hidden = getattr(response, "_hidden_params", None)
    if headers and isinstance(hidden, dict):
        hidden.setdefault("additional_headers", {}).update(headers)


def _wrap(callback: CostKitCallback, call: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    @functools.wraps(call)
    async def run(*args: Any, **kwargs: Any) -> Any:
        if args:
            raise TypeError("call with keyword arguments (model=..., messages=...)")
        if not callback.kit.config.enabled:
            return await call(**kwargs)
        kwargs.setdefault("litellm_call_id", str(uuid.uuid4()))
        try:
            await callback.admit(kwargs)
        except RequestAnswered as answer:
            return final_answer(str(kwargs.get("model", "")), answer)
        try:
            response = await call(**kwargs)
        except Exception:  # after the router's retries and fallbacks: the request's end
            await callback.request_failed(kwargs)
            raise
        _attach_headers(callback, kwargs, response)
        return response

    return run


def install(kit: CostKit, router: Any | None = None) -> CostKitCallback:
    """Register the pack with LiteLLM; with a router, wrap its ``acompletion`` too.

    Idempotent: installing twice on the same router keeps one wrapper.
    """
    existing = getattr(router, _ATTR, None) if router is not None else None
    if isinstance(existing, CostKitCallback):
        return existing
    callback = CostKitCallback(kit, router=(lambda: router) if router is not None else None)
    _register(callback)
    if router is not None:
        router.acompletion = _wrap(callback, router.acompletion)
        setattr(router, _ATTR, callback)
    return callback


def uninstall(callback: CostKitCallback, router: Any | None = None) -> None:
    """Remove the pack from LiteLLM's callback lists (and unwrap the router it was installed on)."""
    litellm.logging_callback_manager.remove_callback_from_all_lists(callback)
    if router is not None and getattr(router, _ATTR, None) is callback:
        router.acompletion = router.acompletion.__wrapped__
        delattr(router, _ATTR)


async def kit_acompletion(callback: CostKitCallback, **kwargs: Any) -> Any:
    """``litellm.acompletion`` through the costkit pipeline (no router)."""
    return await _wrap(callback, litellm.acompletion)(**kwargs)
