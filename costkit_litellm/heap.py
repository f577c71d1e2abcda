"""Opt-in: take the process's start-up heap out of the garbage collector's reach (``gc.freeze``).

A LiteLLM proxy holds about 790,000 tracked objects once it has started (modules, classes, the
model map, pydantic schemas); almost all of them live as long as the process. CPython walks every
one of them in each full collection, which a proxy under load runs every few hundred requests:
300-500 ms each on this project's 2-core bench machine, about 0.7 ms of CPU per request and the
proxy's longest pauses (``bench/pack_overhead.py``'s ``+ gc freeze`` arms). ``gc.freeze()`` moves
every object alive at that moment to a permanent generation that collections skip; objects made
later are collected as before.

``performance.gc_freeze_after_s`` schedules one ``gc.collect()`` then ``gc.freeze()`` that many
seconds after the pack starts (time for the proxy to finish starting and for its first requests'
lazy imports). The cost: what the frozen heap holds is never collected, so garbage cycles among
start-up objects that die later (a config reload's old objects) stay in memory. Off by default:
it changes the whole process's collector, not only the pack's objects.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time

log = logging.getLogger(__name__)

_scheduled = False


def freeze_now() -> int:
    """Collect once, then freeze every object still alive; the number of frozen objects."""
    started = time.perf_counter()
    gc.collect()
    gc.freeze()
    frozen = gc.get_freeze_count()
    log.warning(
        "costkit: froze the start-up heap (%d objects) out of the garbage collector in %.0f ms "
        "(performance.gc_freeze_after_s)",
        frozen,
        1000 * (time.perf_counter() - started),
    )
    return frozen


def schedule_freeze(after_s: float | None) -> bool:
    """Freeze the heap ``after_s`` seconds from now on the running loop, once per process (None:
    never). True when this call scheduled it."""
    global _scheduled
    if after_s is None or _scheduled:
        return False
    _scheduled = True
    asyncio.get_running_loop().call_later(after_s, freeze_now)
    return True
