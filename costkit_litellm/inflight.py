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
cheap call), only its response headers stay, for ``settled_ttl_s``, as a plain tuple of atomic
values (its expiry, then each header's name and value). The garbage collector stops tracking such
a tuple at its first pass, so the minute of settled requests a busy proxy keeps costs later collections no
work; a settled entry that kept the admission kept about eight tracked objects per request alive
for that minute, walked by every full collection. An outcome for a settled id finds nothing, exactly as a
repeated one does (the callback skips any id a kit issued). Without this every answered request
kept its whole admission, messages included, for the lease plus a margin (11 minutes by default):
memory and garbage-collector work grew with the request rate times the lease.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

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
    failed: bool = False
    """The request failed for good (the proxy's failure hook, or the router wrapper's exception): its
    holds were settled; late failure callbacks of its attempts are still accounted."""

    @property
    def headers(self) -> Mapping[str, str]:
        """The ``x-costkit-*`` headers of the request so far."""
        return self.admission.headers


class Settled(NamedTuple):
    """What stays of a request whose outcome is known: its headers, until ``expires`` (a view made
    by ``InFlight.get``; the map keeps ``(expires, name, value, name, value, ...)``)."""

    expires: float
    headers: Mapping[str, str]


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
        self._settled: OrderedDict[str, tuple[Any, ...]] = OrderedDict()
        """``(expires, name, value, ...)`` of the requests whose outcome is known, oldest first: one
        flat tuple of atomic values, which the collector stops tracking at its first pass (a
        NamedTuple, a dict or a tuple of tuples inside would keep it tracked longer, or for good)."""
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

    def get(self, request_id: object) -> Admitted | Settled | None:
        """The entry of an id for its response headers, live or settled (None for anything else:
        unknown, expired, not a string)."""
        if not isinstance(request_id, str):
            return None
        entry = self._entries.get(request_id)
        if entry is not None:
            return entry if entry.expires > self._clock() else None
        settled = self._settled.get(request_id)
        if settled is None or settled[0] <= self._clock():
            return None
        return Settled(settled[0], dict(zip(settled[1::2], settled[2::2], strict=True)))

    def live(self, request_id: object) -> Admitted | None:
        """The entry of an id still waiting for its final outcome (None once settled, or unknown)."""
        entry = self._entries.get(request_id) if isinstance(request_id, str) else None
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
        """The live entry for an outcome: a ``final`` (success) one only once, then it is settled;
        failures may repeat (a router fallback fails before it succeeds). A settled id (its
        outcome is known or was recorded before the call) finds nothing."""
        entry = self.live(request_id)
        if entry is None or entry.finished:
            return None
        entry.seen_outcome = True
        entry.finished = final
        if final and isinstance(request_id, str) and self._entries.pop(request_id, None) is not None:
            self._settle(request_id, entry, self._clock())
        return entry

    def _settle(self, request_id: str, entry: Admitted, now: float) -> None:
        """Keep only ``entry``'s headers for ``settled_ttl_s`` (nothing of the admission or of
        LiteLLM's request stays alive)."""
        flat: list[Any] = [now + self._settled_ttl_s]
        for name, value in entry.admission.headers.items():
            flat += (name, value)
        self._settled[request_id] = tuple(flat)

    def _sweep(self, now: float) -> None:
        while self._settled:
            expires = next(iter(self._settled.values()))[0]
            if expires > now and len(self) < self._max:
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
