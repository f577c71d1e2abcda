"""The configuration reference (README section), generated from the config models' field docs."""

from __future__ import annotations

import json
import types
from decimal import Decimal
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel

from costkit_litellm.config import CostKitConfig

BEGIN = "<!-- config-reference:begin -->"
END = "<!-- config-reference:end -->"


def _default(model: type[BaseModel], name: str) -> str:
    field = model.model_fields[name]
    if field.is_required():
        return "required"
    if field.default_factory is not None:
        value: Any = field.default_factory()  # type: ignore[call-arg]
        if isinstance(value, BaseModel):
            return "(section)"
    else:
        value = field.default
    if isinstance(value, tuple):
        value = list(value)
    return json.dumps(value, default=lambda v: float(v) if isinstance(v, Decimal) else str(v))


def _type_name(annotation: Any) -> str:
    origin = get_origin(annotation)
    if origin is Annotated:
        return _type_name(get_args(annotation)[0])
    if origin in (Union, types.UnionType):
        names = [_type_name(a) for a in get_args(annotation) if a is not type(None)]
        optional = type(None) in get_args(annotation)
        return " or ".join(names) + (" (optional)" if optional else "")
    if origin is tuple:
        return f"list of {_type_name(get_args(annotation)[0])}"
    if origin is Literal:
        return "one of " + ", ".join(str(a) for a in get_args(annotation))
    if origin is dict:
        key, value = get_args(annotation)
        return f"map of {_type_name(key)} to {_type_name(value)}"
    if annotation is Decimal:
        return "number"
    return getattr(annotation, "__name__", str(annotation))


def _rows(model: type[BaseModel], prefix: str) -> list[str]:
    rows: list[str] = []
    for name, field in model.model_fields.items():
        path = f"{prefix}.{name}"
        annotation = field.annotation
        doc = " ".join((field.description or "").split())
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            rows.append(f"| `{path}` | section | | {doc} |")
            rows.extend(_rows(annotation, path))
            continue
        kind = _type_name(annotation)
        item = get_args(annotation)[0] if get_origin(annotation) is tuple else None
        if isinstance(item, type) and issubclass(item, BaseModel):
            rows.append(f"| `{path}` | list of sections | `[]` | {doc} |")
            rows.extend(_rows(item, f"{path}[]"))
            continue
        value_type = get_args(annotation)[1] if get_origin(annotation) is dict else None
        if isinstance(value_type, type) and issubclass(value_type, BaseModel):
            rows.append(f"| `{path}` | map of name to section | `{{}}` | {doc} |")
            rows.extend(_rows(value_type, f"{path}.<name>"))
            continue
        default = _default(model, name)
        rows.append(f"| `{path}` | {kind} | {default if default == 'required' else f'`{default}`'} | {doc} |")
    return rows


def config_reference() -> str:
    """A markdown table of every ``costkit:`` key with its type, default and meaning."""
    lines = ["| key | type | default | meaning |", "| --- | --- | --- | --- |"]
    lines.extend(_rows(CostKitConfig, "costkit"))
    return "\n".join(lines)
