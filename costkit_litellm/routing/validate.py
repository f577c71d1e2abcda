"""Cascade checks: is the cheap tier's answer good enough to serve? (pure)"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from costkit_litellm.routing.config import ValidatorConfig

_REFUSAL = re.compile(
    r"^\s*(i'?m sorry|i am sorry|sorry,|i apologi[sz]e|unfortunately,? i|i can(?:no|')t|i cannot|i am unable|"
    r"i'?m unable|as an ai(?: language model)?,? i)",
    re.IGNORECASE,
)


@dataclass(frozen=True, slots=True)
class Check:
    """The verdict on one answer."""

    ok: bool
    reason: str
    """``passed``, or why it failed (``empty answer``, ``invalid JSON``, ``schema: ...``)."""


class AnswerValidator:
    """Runs the configured checks on a chat completion dict."""

    def __init__(self, config: ValidatorConfig) -> None:
        self._config = config
        self._patterns = [re.compile(p) for p in config.regexes]

    def check(self, response: Mapping[str, Any], response_format: Any = None) -> Check:
        """The first failing check, or ``passed``."""
        choices = response.get("choices") or []
        choice = choices[0] if choices and isinstance(choices[0], Mapping) else {}
        message = choice.get("message") or {}
        content = message.get("content") if isinstance(message, Mapping) else None
        text = content if isinstance(content, str) else ""
        tool_calls = message.get("tool_calls") if isinstance(message, Mapping) else None
        if self._config.non_empty and not text.strip() and not tool_calls:
            return Check(False, "empty answer")
        if self._config.finish_not_length and choice.get("finish_reason") == "length":
            return Check(False, "answer cut off (finish_reason length)")
        if self._config.refusal and _REFUSAL.match(text):
            return Check(False, "refusal")
        if self._config.valid_json and isinstance(response_format, Mapping):
            kind = response_format.get("type")
            if kind in ("json_object", "json_schema"):
                verdict = _check_json(text, response_format)
                if not verdict.ok:
                    return verdict
        for pattern in self._patterns:
            if not pattern.search(text):
                return Check(False, f"no match for {pattern.pattern!r}")
        return Check(True, "passed")


def _check_json(text: str, response_format: Mapping[str, Any]) -> Check:
    try:
        document = json.loads(text)
    except ValueError:
        return Check(False, "invalid JSON")
    spec = response_format.get("json_schema")
    schema = spec.get("schema") if isinstance(spec, Mapping) else None
    if isinstance(schema, Mapping):
        import jsonschema

        try:
            jsonschema.validate(document, dict(schema))
        except jsonschema.ValidationError as exc:
            return Check(False, f"schema: {exc.message[:120]}")
        except jsonschema.SchemaError:
            return Check(True, "passed")  # the client's schema is broken: not the answer's fault
    return Check(True, "passed")
