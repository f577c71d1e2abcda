"""An unexpected error in the pack's pre-call hook becomes a 422 naming where it failed, never a 500."""

from __future__ import annotations

from costkit_litellm.budgets.breaker import tool_calls
from costkit_litellm.failsafe import InternalError, failed_at


def _raise_inside_the_pack() -> BaseException:
    try:
        tool_calls(None)  # type: ignore[arg-type]  # a bug: None is not a conversation
    except TypeError as exc:
        return exc
    raise AssertionError("tool_calls(None) did not raise")


class TestInternalError:
    def test_names_the_module_where_the_pack_failed(self) -> None:
        """The innermost frame inside the package names the place (``budgets.breaker``)."""
        assert failed_at(_raise_inside_the_pack()) == "budgets.breaker"

    def test_outside_the_pack_is_costkit(self) -> None:
        """An error raised outside the package is attributed to ``costkit``."""
        assert failed_at(ValueError("x")) == "costkit"

    def test_is_a_422_with_the_error_and_the_setting(self) -> None:
        """The refusal is a 4xx whose message names the error type, the module and the setting that chose it."""
        error = InternalError(_raise_inside_the_pack(), "budgets.breaker")
        assert error.status == 422 and error.error_type == "costkit_internal_error"
        assert "TypeError in budgets.breaker" in error.message
        assert "costkit.request.on_internal_error: fail_closed" in error.message
