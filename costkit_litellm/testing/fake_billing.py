"""What the fake provider bills for a request, the way a real provider bills it.

A real provider bills every input it reads (messages, tool calls and tool definitions, the
response format, a text completion's ``prompt``, a Responses ``input`` and ``instructions``, an
Anthropic ``system``), and as many output tokens as the model writes: up to the request's cap
(``max_tokens``, ``max_completion_tokens`` or ``max_output_tokens``), or up to the model's own
maximum when the request sets none. Reasoning tokens are output tokens.

Written independently of the pack's estimator (on purpose: a shared helper would hide a field
both forgot). Tokens are roughly 4 characters each, counted per piece of text.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Mapping
from typing import Any

OUTPUT_CAPS = ("max_completion_tokens", "max_output_tokens", "max_tokens")
"""Request fields that cap the output, most specific first."""


def estimate_tokens(text: str) -> int:
    """Roughly 4 characters per token, at least 1."""
    return max(1, math.ceil(len(text) / 4))


def _content_texts(content: Any) -> Iterator[str]:
    if isinstance(content, str):
        yield content
    elif isinstance(content, list):
        for part in content:
            if isinstance(part, str):
                yield part
            elif isinstance(part, Mapping):
                for key in ("text", "input_text", "output_text", "content"):
                    value = part.get(key)
                    if isinstance(value, str):
                        yield value
                    elif isinstance(value, list):
                        yield from _content_texts(value)


def _item_texts(item: Any) -> Iterator[str]:
    """Texts of a chat message or a Responses input item."""
    if isinstance(item, str):
        yield item
        return
    if not isinstance(item, Mapping):
        return
    yield from _content_texts(item.get("content"))
    for call in item.get("tool_calls") or ():
        function = call.get("function") if isinstance(call, Mapping) else None
        if isinstance(function, Mapping):
            yield str(function.get("name") or "")
            yield str(function.get("arguments") or "")
    for key in ("arguments", "output"):  # Responses function_call / function_call_output items
        value = item.get(key)
        if isinstance(value, str):
            yield value


def input_texts(body: Mapping[str, Any]) -> Iterator[str]:
    """Every billable piece of text in a request body."""
    for message in body.get("messages") or ():
        yield from _item_texts(message)
    raw_input = body.get("input")
    if isinstance(raw_input, list):
        for item in raw_input:
            yield from _item_texts(item)
    elif isinstance(raw_input, str):
        yield raw_input
    prompt = body.get("prompt")
    if isinstance(prompt, str):
        yield prompt
    elif isinstance(prompt, list):
        yield from (p for p in prompt if isinstance(p, str))
    for key in ("instructions", "system"):
        value = body.get(key)
        if isinstance(value, str):
            yield value
        elif isinstance(value, list):
            yield from _content_texts(value)
    for key in ("tools", "functions", "response_format", "text"):
        value = body.get(key)
        if value:
            yield json.dumps(value)


def image_parts(body: Mapping[str, Any]) -> int:
    """How many image parts the request's messages or input carry."""
    count = 0
    items = list(body.get("messages") or ())
    if isinstance(body.get("input"), list):
        items += body["input"]
    for item in items:
        content = item.get("content") if isinstance(item, Mapping) else None
        if isinstance(content, list):
            count += sum(
                1 for p in content if isinstance(p, Mapping) and p.get("type") in ("image_url", "input_image", "image")
            )
    return count


def prompt_tokens(body: Mapping[str, Any], image_tokens: int = 765) -> int:
    """Input tokens billed for a request (``image_tokens`` per image part)."""
    return sum(estimate_tokens(t) for t in input_texts(body) if t) + image_tokens * image_parts(body)


def output_cap(body: Mapping[str, Any]) -> int | None:
    """The request's output cap, None when it sets none."""
    for key in OUTPUT_CAPS:
        value = body.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None
