"""The base of every config section (kept apart so capability packages can define their own sections)."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field


class Section(BaseModel):
    """A config section: immutable, unknown keys refused, field docs kept for the reference."""

    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)


NonNegativeUsd = Annotated[Decimal, Field(ge=0, allow_inf_nan=False)]
PositiveUsd = Annotated[Decimal, Field(gt=0, allow_inf_nan=False)]
