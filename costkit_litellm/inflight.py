"""``InFlight``: per-request state kept server-side, keyed by the pack's own request id.

The pre-call step puts what it admitted here and writes only the id (a uuid4, unguessable) into
the request's metadata; the logging callbacks look the id up. A client can write anything into
metadata, but cannot make an outcome touch budgets with state the pack did not admit: an id that
is not in this process's map (forged, or another kit's) finds nothing.

Bounded: an entry lives ``ttl_s`` (the lease plus a margin) and at most ``max_entries`` are kept;
an entry dropped before any outcome arrived is logged and counted (its hold, if any, has expired
in the store by then and counts as spent).

Settled entries are slim and short-lived: once a request's final outcome took its entry (a
success), or its outcome was recorded before the call (a refusal, a policy's answer, a cascade's
cheap call), only what the response headers need stays, for ``settled_ttl_s``. An outcome for an
id that has left the map finds nothing, exactly as a repeated one does (the callback skips any id
a kit issued). Without this every answered request kept its whole admission, messages included,
for the lease plus a margin (11 minutes by default): memory and garbage-collector work grew with
the request rate times the lease.
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
DEFAULT_SETTLED_TTL_S = 60.0
"""How long a settled entry stays for the response headers (built just before or after the
success callback runs)."""


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
        settled_ttl_s: float = DEFAULT_SETTLED_TTL_S,
        clock: Callable[[], float] = time.monotonic,
        on_drop: Callable[[], None] | None = None,
    ) -> None:
        self._ttl_s = ttl_s
        self._settled_ttl_s = min(settled_ttl_s, ttl_s)
        self._max = max_entries
        self._clock = clock
        self._on_drop = on_drop
        self._entries: OrderedDict[str, Admitted] = OrderedDict()
        """Entries waiting for their final outcome, oldest first."""
        self._settled: OrderedDict[str, Admitted] = OrderedDict()
        """Slim entries whose outcome is known, kept for the headers, oldest first."""
        self.dropped = 0
        """Entries dropped before any outcome arrived."""

    def __len__(self) -> int:
        return len(self._entries) + len(self._settled)

    def add(self, request_id: str, entry: Admitted) -> None:
        """Keep ``entry`` for ``ttl_s`` (an entry already ``recorded`` is settled at once); old
        entries are swept first."""
        now = self._clock()
        self._sweep(now)
        entry.renewed_at = now
        if entry.recorded is not None:
            self._settle(request_id, entry, now)
            return
        entry.expires = now + self._ttl_s
        self._entries[request_id] = entry

    def get(self, request_id: object) -> Admitted | None:
        """The live entry of an id (None for anything else: unknown, expired, not a string)."""
        if not isinstance(request_id, str):
            return None
        entry = self._entries.get(request_id)
        if entry is None:
            entry = self._settled.get(request_id)
        if entry is None or entry.expires <= self._clock():
            return None
        return entry

    def touch(self, request_id: str) -> None:
        """Keep a live (unsettled) entry for another ``ttl_s`` (a long stream renewed its lease)."""
        entry = self._entries.get(request_id)
        if entry is not None and entry.expires > self._clock():
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
        if final and isinstance(request_id, str) and self._entries.pop(request_id, None) is not None:
            self._settle(request_id, entry, self._clock())
        return entry

    def _settle(self, request_id: str, entry: Admitted, now: float) -> None:
        """Keep a slim copy of ``entry`` (its headers, context and estimate) for ``settled_ttl_s``; the
        context without the request's parameters, so nothing of LiteLLM's request stays alive."""
        full = entry.admission
        slim = Admission(context=full.context.without_request_params(), estimate=full.estimate, headers=full.headers)
        self._settled[request_id] = Admitted(
            slim,
            recorded=entry.recorded,
            expires=now + self._settled_ttl_s,
            finished=entry.finished,
            seen_outcome=entry.seen_outcome,
            renewed_at=entry.renewed_at,
        )

    def _sweep(self, now: float) -> None:
        while self._settled:
            oldest = next(iter(self._settled.values()))
            if oldest.expires > now and len(self) < self._max:
                break
            self._settled.popitem(last=False)
        while self._entries:
            request_id, oldest = next(iter(self._entries.items()))
            if oldest.expires > now and len(self) < self._max:
                return
            self._entries.popitem(last=False)
            if not oldest.seen_outcome:
                self.dropped += 1
                log.warning("costkit: request %s saw no outcome before its state was dropped", request_id)
                if self._on_drop is not None:
                    self._on_drop()
