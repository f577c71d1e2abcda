"""Stage counters in the store: counted with the reservation, or alone when no reservation follows.

The breaker does not count its session counters itself: it adds them to the admission
(``CounterChecks``) and the budgets stage increments them in the same script as its reservation, so
a request costs one store round trip before the call. This module is the rest of that contract, in
one place, so the outcome is what it was when the breaker counted first:

- ``pending`` : the groups not counted yet, and their counters in order;
- ``count_pending`` : count them alone (one round trip) and raise the first trip; for a request
  that never reaches the reservation (a later stage answers or refuses, the budgets stage refuses
  before reserving, or there is nothing to reserve);
- ``trip`` : the refusal of the counter a reservation reported as tripped;
- ``unreachable`` : the store did not answer: a group with an ``unavailable`` refusal (fail_closed)
  raises it; otherwise the counters are skipped and the limits that depended on them dropped.
"""

from __future__ import annotations

from collections.abc import Sequence

from costkit_litellm.errors import RequestAnswered, RequestRejected
from costkit_litellm.pipeline import Admission, CounterChecks
from costkit_litellm.store import Counter, Store, StoreError, first_tripped


def pending(admission: Admission) -> tuple[list[CounterChecks], list[Counter]]:
    """The groups not counted yet, and all their counters in order (a trip is the first in this order)."""
    groups = [group for group in admission.counters if group.pending]
    return groups, [counter for group in groups for counter in group.counters]


def mark_counted(groups: list[CounterChecks]) -> None:
    """The store took these groups' counters (with a reservation or alone)."""
    for group in groups:
        group.pending = False


def trip(groups: list[CounterChecks], index: int, values: Sequence[int]) -> RequestRejected | RequestAnswered:
    """The refusal for the ``index``-th counter over all ``groups`` (in ``pending`` order), at its value."""
    for group in groups:
        if index < len(group.counters):
            return group.trip(index, values[index])
        index, values = index - len(group.counters), values[len(group.counters) :]
    raise IndexError("tripped counter out of range")


def unreachable(admission: Admission) -> None:
    """The store did not answer before the pending counters were counted: raise the first group's
    ``unavailable`` refusal (fail_closed), else skip them and drop the extra limits they guard."""
    groups, _ = pending(admission)
    mark_counted(groups)
    for group in groups:
        if group.unavailable is not None:
            raise group.unavailable()
    dropped = {key for group in groups for key in group.limit_keys}
    admission.extra_limits[:] = [entry for entry in admission.extra_limits if entry[0].key not in dropped]


async def count_pending(store: Store, admission: Admission) -> None:
    """Count the pending counters alone (one round trip), then raise the first trip; a store error
    is ``unreachable``."""
    groups, counters = pending(admission)
    if not counters:
        mark_counted(groups)
        return
    try:
        values = await store.count(counters)
    except StoreError:
        unreachable(admission)
        return
    mark_counted(groups)
    tripped = first_tripped(counters, values)
    if tripped is not None:
        raise trip(groups, tripped, values)
