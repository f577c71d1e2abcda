"""The newcomer's path through the Makefile: installs show progress, apt leaves no service behind."""

from __future__ import annotations

import re
from pathlib import Path

MAKEFILE = Path(__file__).resolve().parents[2] / "Makefile"


def _recipe(target: str) -> str:
    """The recipe lines of a target (up to the next blank line)."""
    text = MAKEFILE.read_text()
    match = re.search(rf"^{re.escape(target)}:.*\n((?:\t.*\n)+)", text, re.M)
    assert match, target
    return match.group(1)


class TestMakefile:
    def test_installs_are_not_silent(self) -> None:
        """No pip install runs with -q: a cold install takes minutes and must show progress."""
        pip_lines = [line for line in MAKEFILE.read_text().splitlines() if "pip install" in line]
        assert pip_lines
        for line in pip_lines:
            assert not re.search(r"\s-q\b|--quiet", line), line

    def test_prometheus_install_leaves_the_service_disabled(self) -> None:
        """make prometheus-tools disables the system service the Debian package enables, and never starts it."""
        recipe = _recipe("prometheus-tools")
        assert "policy-rc.d" in recipe and "exit 101" in recipe
        assert "deb-systemd-helper disable prometheus.service" in recipe
        assert "update-rc.d prometheus disable" in recipe
