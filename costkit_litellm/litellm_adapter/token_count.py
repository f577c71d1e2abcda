"""LiteLLM's prompt token count, the same numbers for less CPU: tokenizers resolved once per model,
and the count of a long message remembered.

``litellm.token_counter(model=..., messages=...)`` resolves the model's tokenizer and its
per-message overheads on every call, then sums a count per message plus 3 tokens that prime the
reply (1.108.7: ``_count_messages`` is a plain sum over messages, ``_count_extra`` adds 3 without
tools). An agent resends its whole conversation on every step, so a session of n steps counted the
first message n times. Here the per-model parameters are built once, and a message of at least
``MEMO_MIN_CHARS`` characters is counted once per model and remembered under a 16-byte BLAKE2b
digest of its fields (never under the text itself: the memory stays small; a collision is not a
practical event). A message that is not a mapping, a LiteLLM without these internals, or a
disabled token counter goes to ``litellm.token_counter`` itself; errors reach the caller as they
would from it. The result is always LiteLLM's own number (a property test compares both on
arbitrary conversations).
"""

from __future__ import annotations

import functools
import hashlib
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any, cast

import litellm

try:  # LiteLLM's internals (1.108.7); without them every count goes to token_counter
    from litellm.litellm_core_utils.token_counter import _count_messages, _MessageCountParams
except ImportError:  # pragma: no cover - another LiteLLM version
    _MessageCountParams = None  # type: ignore[assignment,misc]
    _count_messages = None  # type: ignore[assignment]

MEMO_MIN_CHARS = 512
"""Messages shorter than this are counted each time (cheaper than a digest and a lookup)."""
MEMO_ENTRIES = 16_384
MODELS = 256
REPLY_PRIMER = 3
"""Tokens LiteLLM adds once per conversation (no tools): ``<|start|>assistant<|message|>``."""


class TokenCounter:
    """Prompt tokens of messages and texts for a model, as ``litellm.token_counter`` counts them."""

    def __init__(self) -> None:
        self._memo: OrderedDict[tuple[str, bytes], int] = OrderedDict()

    def messages(self, model: str, messages: Sequence[Any]) -> int:
        """``litellm.token_counter(model=model, messages=messages)`` (messages without images)."""
        params = _params_for(model)
        if params is None or litellm.disable_token_counter is True:
            return int(litellm.token_counter(model=model, messages=list(messages)))
        total = REPLY_PRIMER
        for message in messages:
            if not isinstance(message, Mapping):
                return int(litellm.token_counter(model=model, messages=list(messages)))
            total += self._message(model, params, message)
        return total

    def text(self, model: str, text: str) -> int:
        """``litellm.token_counter(model=model, text=text)``."""
        params = _params_for(model)
        if params is None or litellm.disable_token_counter is True:
            return int(litellm.token_counter(model=model, text=text))
        return int(params.count_function(text))

    def _message(self, model: str, params: Any, message: Mapping[str, Any]) -> int:
        digest = _digest(message)
        key = (model, digest) if digest is not None else None
        if key is not None and (found := self._memo.get(key)) is not None:
            self._memo.move_to_end(key)
            return found
        count = int(_count_messages(params, [cast(Any, dict(message))], False, None))
        if key is not None:
            self._memo[key] = count
            if len(self._memo) > MEMO_ENTRIES:
                self._memo.popitem(last=False)
        return count


@functools.lru_cache(maxsize=MODELS)
def _params_for(model: str) -> Any:
    """LiteLLM's per-model counting parameters (tokenizer, overheads), built once per model."""
    return _MessageCountParams(model, None) if _MessageCountParams is not None else None


def _digest(message: Mapping[str, Any]) -> bytes | None:
    """A digest of a long message whose every field is a string or None; None for anything else
    (short, or with content parts or tool calls: counted each time)."""
    size = 0
    for key, value in message.items():
        if not isinstance(key, str) or not (value is None or isinstance(value, str)):
            return None
        if value is not None:
            size += len(value)
    if size < MEMO_MIN_CHARS:
        return None
    h = hashlib.blake2b(digest_size=16)
    for key, value in message.items():
        name = key.encode("utf-8", "surrogatepass")
        h.update(len(name).to_bytes(8, "little") + name)
        if value is None:
            h.update(b"\x00N")
        else:
            encoded = value.encode("utf-8", "surrogatepass")
            h.update(b"\x00S" + len(encoded).to_bytes(8, "little"))
            h.update(encoded)
        h.update(b"\x01")
    return h.digest()
