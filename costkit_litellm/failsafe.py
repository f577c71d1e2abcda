"""What the pre-call hook does with an error the pack did not mean to raise (a bug, never a policy).

``request.on_internal_error`` decides: ``fail_closed`` refuses the request with a 422 whose message
names where the pack failed and how (``InternalError``, a ``RequestRejected``); ``fail_open`` lets
it go on without the pack. Either way the adapter logs it with the traceback and counts
``costkit_internal_errors_total{stage, action}``. Nothing here is ever a 500.
"""

from __future__ import annotations

import traceback
from pathlib import PurePath

from costkit_litellm.errors import RequestRejected

_PACKAGE = "costkit_litellm"


def failed_at(exc: BaseException) -> str:
    """Where in the pack the error was raised, as a module name (``budgets.breaker``); ``costkit`` if unknown."""
    where = "costkit"
    for frame in traceback.extract_tb(exc.__traceback__):
        parts = PurePath(frame.filename).with_suffix("").parts
        if _PACKAGE in parts:
            where = ".".join(parts[parts.index(_PACKAGE) + 1 :])
    return where


class InternalError(RequestRejected):
    """A request the pack failed to process (fail_closed): HTTP 422 naming the module and the error."""

    def __init__(self, exc: BaseException, where: str) -> None:
        detail = str(exc)[:200] or "no detail"
        super().__init__(
            f"costkit could not process this request: {type(exc).__name__} in {where} ({detail}). "
            "It was refused rather than admitted unchecked (costkit.request.on_internal_error: fail_closed); "
            "check the request's fields, and report it if they are valid.",
            status=422,
            error_type="costkit_internal_error",
        )
        self.where = where
