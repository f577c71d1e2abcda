"""The base of every config section (kept apart so capability packages can define their own sections)."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from costkit_litellm.redact import mask_url


class Section(BaseModel):
    """A config section: immutable, unknown keys refused, field docs kept for the reference."""

    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)


NonNegativeUsd = Annotated[Decimal, Field(ge=0, allow_inf_nan=False)]
PositiveUsd = Annotated[Decimal, Field(gt=0, allow_inf_nan=False)]


def valid_redis_url(value: str | None) -> str | None:
    """``None`` for an unset or empty URL; the URL if its scheme is a Redis one; else a ``ValueError``."""
    if value is None or value == "":
        return None
    if not value.startswith(("redis://", "rediss://", "unix://")):
        raise ValueError(f"{mask_url(value)!r} is not a Redis URL; use redis://, rediss:// or unix://")
    return value
