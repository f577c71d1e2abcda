"""Which provider answers the semantic cache keeps: complete ones, judged without trusting the answer's shape."""

from __future__ import annotations

from typing import Any

import pytest

from costkit_litellm.cache.stage import _storable


def _answer(finish: Any, content: Any = "Paris.") -> dict[str, Any]:
    return {"choices": [{"index": 0, "finish_reason": finish, "message": {"role": "assistant", "content": content}}]}


@pytest.mark.parametrize("finish", ["stop", "length", None])
def test_a_complete_answer_is_kept(finish: Any) -> None:
    """Answers that stopped, hit their cap or name no reason are stored."""
    assert _storable(_answer(finish))


@pytest.mark.parametrize("finish", ["content_filter", "tool_calls_cut", {"reason": "stop"}, ["stop"], 1])
def test_an_unfinished_or_malformed_finish_reason_is_not_kept(finish: Any) -> None:
    """A filtered answer, or a finish reason that is not a string (a malformed answer), is never stored
    and never raises (a dict used to reach a set lookup: TypeError)."""
    assert not _storable(_answer(finish))


def test_an_answer_without_content_or_choices_is_not_kept() -> None:
    """No content and no tool calls, no choices, or choices that are not objects: not stored."""
    assert not _storable(_answer("stop", content=""))
    assert not _storable({"choices": []})
    assert not _storable({"choices": ["stop"]})
    assert not _storable(None)
