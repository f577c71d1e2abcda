"""The pack's prompt token count is LiteLLM's own number, for any conversation, remembered or not."""

from __future__ import annotations

from typing import Any

import litellm
from hypothesis import given, settings
from hypothesis import strategies as st

from costkit_litellm.litellm_adapter import token_count
from costkit_litellm.litellm_adapter.token_count import MEMO_MIN_CHARS, TokenCounter

MODELS = ("gpt-4o", "openai/gpt-4o-mini", "gpt-3.5-turbo-0301", "claude-3-5-sonnet-20240620", "bench-model")
texts = st.text(max_size=40) | st.text(min_size=MEMO_MIN_CHARS, max_size=MEMO_MIN_CHARS + 200)
tool_call = st.fixed_dictionaries(
    {
        "id": st.text(max_size=8),
        "type": st.just("function"),
        "function": st.fixed_dictionaries({"name": st.text(min_size=1, max_size=8), "arguments": texts}),
    }
)
message = st.fixed_dictionaries(
    {"role": st.sampled_from(("system", "user", "assistant", "tool"))},
    optional={
        "content": texts
        | st.none()
        | st.lists(st.fixed_dictionaries({"type": st.just("text"), "text": texts}), max_size=3),
        "name": st.text(min_size=1, max_size=10),
        "tool_call_id": st.text(max_size=10),
        "tool_calls": st.lists(tool_call, min_size=1, max_size=2),
    },
)


class TestTokenCounter:
    @settings(max_examples=300, deadline=None)
    @given(model=st.sampled_from(MODELS), conversation=st.lists(message, min_size=1, max_size=6), repeat=st.booleans())
    def test_messages_count_as_litellm_counts_them(
        self, model: str, conversation: list[dict[str, Any]], repeat: bool
    ) -> None:
        """Any conversation (parts, names, tool calls, long messages seen before) counts as litellm.token_counter."""
        counter = TokenCounter()
        if repeat:
            counter.messages(model, conversation[:-1] or conversation)  # the memo holds the earlier messages
        expected = litellm.token_counter(model=model, messages=[dict(m) for m in conversation])
        assert counter.messages(model, conversation) == expected

    @settings(max_examples=100, deadline=None)
    @given(model=st.sampled_from(MODELS), text=texts)
    def test_text_counts_as_litellm_counts_it(self, model: str, text: str) -> None:
        """A plain text field counts exactly as litellm.token_counter(text=...)."""
        assert TokenCounter().text(model, text) == litellm.token_counter(model=model, text=text)

    def test_a_long_message_is_counted_once_per_model(self, monkeypatch: Any) -> None:
        """An agent's growing conversation tokenises each long message once; short ones and other models count again."""
        calls: list[int] = []
        real = token_count._count_messages
        monkeypatch.setattr(token_count, "_count_messages", lambda *a: calls.append(1) or real(*a))
        counter = TokenCounter()
        history = [{"role": "user", "content": "x" * MEMO_MIN_CHARS}, {"role": "assistant", "content": "ok"}]
        first = counter.messages("gpt-4o", history)
        assert len(calls) == 2
        longer = [*history, {"role": "user", "content": "next"}]
        assert first == litellm.token_counter(model="gpt-4o", messages=history)
        assert counter.messages("gpt-4o", longer) == litellm.token_counter(model="gpt-4o", messages=longer)
        assert len(calls) == 4  # the two short messages again, the long one remembered
        counter.messages("claude-3-5-sonnet-20240620", history)
        assert len(calls) == 6
