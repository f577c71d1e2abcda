"""The shutdown spool: post-call budget operations the store did not take, kept on disk until the next start.

A process that stops while Redis does not answer (``fail_open``) still holds queued commits and
releases. ``Spool.write`` puts them in ``<dir>/<store tag>-<host>-<pid>-<ns>.jsonl`` (written to a temporary
name, then renamed: a reader never sees half a file). At the next start ``Spool.claim`` renames
every such file to ``*.claimed-<pid>`` (atomic, so two replicas sharing the directory never take
the same file), returns its records, and ``Spool.remove`` deletes the files once their records are
replayed. A claim older than ``STALE_CLAIM_S`` (its process was killed) is claimed again.
Replays are idempotent by call id, so a file replayed twice (a crash between the replay and the
removal) charges nothing twice.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

log = logging.getLogger("costkit.budgets")

SUFFIX = ".jsonl"
STALE_CLAIM_S = 600.0
"""A file claimed this long ago by a process that never removed it (killed) is claimed again."""


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return float("inf")


class Spool:
    """A directory of JSON-lines files of budget operations, for one store (URL and key prefix):
    a process only claims files written for the same store, so two deployments (or tests) sharing
    a directory never replay each other's spend."""

    def __init__(self, directory: str | os.PathLike[str], store: str = "") -> None:
        self.directory = Path(directory)
        self._tag = hashlib.sha256(store.encode()).hexdigest()[:12]

    def write(self, records: Sequence[Mapping[str, Any]]) -> Path | None:
        """Write the records to a new file (none for no records); returns its path."""
        if not records:
            return None
        self.directory.mkdir(parents=True, exist_ok=True)
        name = f"{self._tag}-{socket.gethostname()}-{os.getpid()}-{time.time_ns()}"
        temporary = self.directory / f".{name}.tmp"
        with temporary.open("w", encoding="utf-8") as file:
            for record in records:
                file.write(json.dumps(record, sort_keys=True) + "\n")
            file.flush()
            os.fsync(file.fileno())
        path = self.directory / f"{name}{SUFFIX}"
        os.replace(temporary, path)
        return path

    def claim(self) -> tuple[list[dict[str, Any]], list[Path]]:
        """Take every spooled file (oldest first): their records in order, and the claimed paths."""
        if not self.directory.is_dir():
            return [], []
        records: list[dict[str, Any]] = []
        claimed: list[Path] = []
        stale = time.time() - STALE_CLAIM_S
        paths = list(self.directory.glob(f"{self._tag}-*{SUFFIX}"))
        paths += [p for p in self.directory.glob(f"{self._tag}-*{SUFFIX}.claimed-*") if _mtime(p) < stale]
        for path in sorted(paths, key=lambda p: p.name):  # <host>-<pid>-<ns>: oldest first per writer
            base = path.name.split(".claimed-")[0]
            target = path.with_name(f"{base}.claimed-{os.getpid()}")
            try:
                os.rename(path, target)
                os.utime(target)  # the claim is fresh: not stale for another STALE_CLAIM_S
            except OSError:  # another process claimed it first
                continue
            claimed.append(target)
            for number, line in enumerate(target.read_text(encoding="utf-8").splitlines(), 1):
                try:
                    record = json.loads(line)
                except ValueError:
                    log.error("costkit: spool %s line %d is not JSON; skipped", target, number)
                    continue
                if isinstance(record, dict):
                    records.append(record)
        return records, claimed

    @staticmethod
    def remove(paths: Sequence[Path]) -> None:
        """Delete claimed files whose records were replayed (or spooled again)."""
        for path in paths:
            path.unlink(missing_ok=True)
