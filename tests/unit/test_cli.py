"""The costkit command: check-config exit codes and messages, and the README's config reference."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from costkit_litellm.cli import build_parser, iter_parsers, main, parse_duration
from costkit_litellm.reference import BEGIN, END, config_reference

ROOT = Path(__file__).resolve().parents[2]
CALLBACK = "costkit_litellm.litellm_adapter.proxy.costkit_callback"


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "proxy_config.yaml"
    path.write_text(text)
    return str(path)


class TestCheckConfig:
    def test_valid_config_exits_zero(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """A valid config exits 0 and says where state is kept."""
        path = write(tmp_path, f"litellm_settings:\n  callbacks: [{CALLBACK}]\ncostkit:\n  key_prefix: x\n")
        assert main(["check-config", path]) == 0
        assert "in process (embedded default)" in capsys.readouterr().out

    def test_invalid_config_exits_non_zero_naming_the_key(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A bad key exits 1 and names the file and key path on stderr."""
        path = write(tmp_path, "costkit:\n  metrics:\n    max_label_values: -3\n")
        assert main(["check-config", path]) == 1
        assert "costkit.metrics.max_label_values" in capsys.readouterr().err

    def test_section_without_callback_is_flagged(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """A costkit: section the proxy would never load (callback not listed) exits 2 with a warning."""
        path = write(tmp_path, "costkit:\n  key_prefix: x\n")
        assert main(["check-config", path]) == 2
        assert CALLBACK in capsys.readouterr().out

    def test_shipped_config_checks(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """The repository's proxy_config.yaml passes check-config."""
        monkeypatch.delenv("REDIS_URL", raising=False)
        assert main(["check-config", str(ROOT / "proxy_config.yaml")]) == 0


class TestReference:
    def test_readme_reference_is_current(self) -> None:
        """The README's config reference is exactly what the config models generate (run `costkit config-reference`)."""
        readme = (ROOT / "README.md").read_text(encoding="utf-8")
        section = readme.split(BEGIN, 1)[1].split(END, 1)[0].strip()
        assert section == config_reference()


class TestDurations:
    def test_durations(self) -> None:
        """--since accepts 90s, 15m, 24h and 7d."""
        assert [parse_duration(t) for t in ("90s", "15m", "24h", "7d")] == [90, 900, 86400, 604800]


class TestHelp:
    def test_every_argument_has_help_and_shows_its_default(self) -> None:
        """Every argument of every subcommand has help text, and --help shows each non-empty default."""
        parsers = list(iter_parsers(build_parser()))
        assert len(parsers) > 10
        for name, parser in parsers:
            text = parser.format_help()
            for action in parser._actions:
                if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
                    continue
                label = "/".join(action.option_strings) or action.dest
                assert action.help, f"{name} {label} has no help text"
                if action.required or action.default is None or action.default is False:
                    # nothing to show, or the help says what happens without it
                    assert (
                        action.required
                        or not action.option_strings
                        or "default" in action.help
                        or (action.default is False)
                    ), f"{name} {label}: say what the default is"
                    continue
                assert f"(default: {action.default})" in " ".join(text.split()) or "default" in action.help, (
                    f"{name} {label}: default {action.default!r} not shown"
                )

    def test_check_config_help_shows_connect(self) -> None:
        """check-config --help documents --connect."""
        (check,) = [p for n, p in iter_parsers(build_parser()) if n == "costkit check-config"]
        assert "--connect" in check.format_help()
