"""``InFlight``: per-request state kept server-side, keyed by the pack's own request id.

The pre-call step puts what it admitted here and writes only the id (a uuid4, unguessable) into
the request's metadata; the logging callbacks look the id up. A client can write anything into
metadata, but cannot make an outcome touch budgets with state the pack did not admit: an id that
is not in this process's map (forged, or another kit's) finds nothing.

Bounded: an entry lives ``ttl_s`` (the lease plus a margin) and at most ``max_entries`` are kept;
an entry dropped before any outcome arrived is logged and counted (its hold, if any, has expired
in the store by then and counts as spent).
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from costkit_litellm.pipeline import Admission

log = logging.getLogger("costkit.inflight")

DEFAULT_MAX_ENTRIES = 200_000


@dataclass(slots=True)
class Admitted:
    """What the pack admitted for one request."""

    admission: Admission
    recorded: str | None = None
    """The outcome was already recorded before the call (``rejected``, ``answered``, ``cascade``)."""
    expires: float = 0.0
    finished: bool = False
    """A success outcome took it (a second one finds nothing)."""
    seen_outcome: bool = False
    renewed_at: float = 0.0
    """Monotonic time of the last lease renewal (streams)."""


class InFlight:
    """The server-side map request id -> ``Admitted`` of one callback (one process)."""

    def __init__(
        self,
        ttl_s: float,
        *,
        max_entries: int = DEFAULT_MAX_ENTRIES,
        clock: Callable[[], float] = time.monotonic,
        on_drop: Callable[[], None] | None = None,
    ) -> None:
        self._ttl_s = ttl_s
        self._max = max_entries
        self._clock = clock
        self._on_drop = on_drop
        self._entries: OrderedDict[str, Admitted] = OrderedDict()
        self.dropped = 0
        """Entries dropped before any outcome arrived."""

    def __len__(self) -> int:
        return len(self._entries)

    def add(self, request_id: str, entry: Admitted) -> None:
        """Keep ``entry`` for ``ttl_s``; old entries are swept first."""
        now = self._clock()
        self._sweep(now)
        entry.expires = now + self._ttl_s
        entry.renewed_at = now
        self._entries[request_id] = entry

    def get(self, request_id: object) -> Admitted | None:
        """The live entry of an id (None for anything else: unknown, expired, not a string)."""
        if not isinstance(request_id, str):
            return None
        entry = self._entries.get(request_id)
        if entry is None or entry.expires <= self._clock():
            return None
        return entry

    def touch(self, request_id: str) -> None:
        """Keep a live entry for another ``ttl_s`` (a long stream renewed its lease)."""
        entry = self.get(request_id)
        if entry is not None:
            entry.expires = self._clock() + self._ttl_s
            self._entries.move_to_end(request_id)

    def take(self, request_id: object, final: bool) -> Admitted | None:
        """The entry for an outcome: a ``final`` (success) one only once; failures may repeat
        (a router fallback fails before it succeeds)."""
        entry = self.get(request_id)
        if entry is None or entry.finished:
            return None
        entry.seen_outcome = True
        entry.finished = final
        return entry

    def _sweep(self, now: float) -> None:
        while self._entries:
            request_id, oldest = next(iter(self._entries.items()))
            if oldest.expires > now and len(self._entries) < self._max:
                return
            self._entries.popitem(last=False)
            if not oldest.seen_outcome and oldest.recorded is None:
                self.dropped += 1
                log.warning("costkit: request %s saw no outcome before its state was dropped", request_id)
                if self._on_drop is not None:
                    self._on_drop()
