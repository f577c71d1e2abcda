"""The pack's exception tree.

::

    CostKitError
    ├── ConfigError            bad `costkit:` section; names the file and the key path
    ├── StoreError             (costkit_litellm.store) the shared store failed
    ├── RequestRejected        a policy refused a request; carries the HTTP status and an
    │   └── BadRequestMetadata   OpenAI-shaped error body (status 400: malformed metadata)
    └── RequestAnswered        a policy answers the request itself (e.g. the breaker's final
                               message): the client gets this assistant message at $0

Clients of the proxy see ``RequestRejected`` as an HTTP error with an OpenAI-shaped body;
application code using the Router sees the exception itself.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class CostKitError(Exception):
    """Base class of every error the pack raises on purpose."""


class ConfigError(CostKitError, ValueError):
    """The ``costkit:`` configuration is invalid; the message names the file and key path."""

    def __init__(self, problems: list[str], source: str | None = None) -> None:
        self.problems = problems
        self.source = source
        where = f"{source}: " if source else ""
        if len(problems) == 1:
            message = f"{where}{problems[0]}"
        else:
            lines = "\n".join(f"  - {p}" for p in problems)
            message = f"{where}{len(problems)} problems in the costkit configuration:\n{lines}"
        super().__init__(message)


class RequestRejected(CostKitError):
    """A policy refused the request before any provider call.

    ``status`` is the HTTP status the proxy answers with, ``error_type`` and ``code`` go into the
    OpenAI-shaped body, ``headers`` (e.g. ``Retry-After``) into the response.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int,
        error_type: str,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.error_type = error_type
        self.headers = dict(headers or {})

    def body(self) -> dict[str, dict[str, str | None]]:
        """The OpenAI-shaped error body: ``{"error": {"message", "type", "code", "param"}}``."""
        return {
            "error": {
                "message": self.message,
                "type": self.error_type,
                "code": str(self.status),
                "param": None,
            }
        }


class BadRequestMetadata(RequestRejected):
    """Request metadata (tags, session id, attributes) is malformed: HTTP 400 saying why."""

    def __init__(self, message: str) -> None:
        super().__init__(message, status=400, error_type="invalid_request_error")


class RequestAnswered(CostKitError):
    """A stage answers the request itself, without a provider call, at $0.

    The breaker answers with a final assistant message (``content``); the semantic cache with a
    whole stored response (``response``: an OpenAI chat completion as a dict), marking it a cache
    hit with the cost it saved. ``headers`` go into the client's response.
    """

    def __init__(
        self,
        content: str,
        reason: str,
        *,
        response: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        cache_hit: bool = False,
        saved_nano: int | None = None,
    ) -> None:
        super().__init__(content)
        self.content = content
        self.reason = reason
        self.response = response
        self.headers = dict(headers or {})
        self.cache_hit = cache_hit
        self.saved_nano = saved_nano
