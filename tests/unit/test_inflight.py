"""The server-side per-request map: only ids the pack admitted are found, once, and it stays bounded."""

from __future__ import annotations

import gc
import weakref
from types import MappingProxyType

import pytest

from costkit_litellm.context import RequestContext
from costkit_litellm.inflight import Admitted, InFlight, Settled
from costkit_litellm.money import Nano
from costkit_litellm.pipeline import Admission
from costkit_litellm.pricing import CostEstimate


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def entry() -> Admitted:
    return Admitted(Admission(RequestContext(call_id="r", model="m"), CostEstimate(Nano(1), 1, 1, None)))


class TestInFlight:
    def test_unknown_and_non_string_ids_find_nothing(self) -> None:
        """A forged id, another kit's id or a non-string finds no state."""
        inflight = InFlight(10, clock=Clock())
        inflight.add("mine", entry())
        assert inflight.get("forged") is None
        assert inflight.get({"id": "mine"}) is None
        assert inflight.take("forged", final=True) is None

    def test_a_success_takes_the_entry_once_failures_may_repeat(self) -> None:
        """A failure (a fallback attempt) leaves the entry for the success; a second success finds nothing."""
        inflight = InFlight(10, clock=Clock())
        inflight.add("r", entry())
        assert inflight.take("r", final=False) is not None
        assert inflight.take("r", final=True) is not None
        assert inflight.take("r", final=True) is None
        assert inflight.get("r") is not None  # still readable for the response headers

    def test_entries_expire_and_drops_without_outcome_are_counted(self) -> None:
        """An entry with no outcome is dropped after ttl_s and counted; one that saw an outcome is not counted."""
        clock, drops = Clock(), []
        inflight = InFlight(10, clock=clock, on_drop=lambda: drops.append(1))
        inflight.add("lost", entry())
        inflight.add("done", entry())
        inflight.take("done", final=True)
        clock.now += 11
        assert inflight.get("lost") is None
        inflight.add("new", entry())
        assert len(inflight) == 1 and inflight.dropped == 1 and drops == [1]

    def test_size_is_bounded(self) -> None:
        """Past max_entries the oldest entries are dropped."""
        inflight = InFlight(1000, clock=Clock(), max_entries=3)
        for i in range(10):
            inflight.add(str(i), entry())
        assert len(inflight) == 3 and inflight.get("9") is not None and inflight.get("0") is None

    def test_a_settled_entry_is_slim_and_short_lived(self) -> None:
        """After the final outcome only the headers stay, for settled_ttl_s; the caller gets the whole entry."""
        clock = Clock()
        inflight = InFlight(600, clock=clock, settled_ttl_s=60)
        full = entry()
        full.admission.messages = [{"role": "user", "content": "x" * 10_000}]
        full.admission.state["budgets"] = {"held": True}
        full.admission.headers["x-costkit-max-cost-usd"] = "0.01"
        inflight.add("r", full)
        taken = inflight.take("r", final=True)
        assert taken is full and taken.admission.state == {"budgets": {"held": True}}
        kept = inflight.get("r")
        assert isinstance(kept, Settled) and kept.headers == {"x-costkit-max-cost-usd": "0.01"}
        assert inflight.live("r") is None and inflight.take("r", final=True) is None
        clock.now += 61
        assert inflight.get("r") is None
        inflight.add("next", entry())
        assert len(inflight) == 1 and inflight.dropped == 0

    @pytest.mark.parametrize("recorded", [None, "answered"])
    def test_a_settled_entry_keeps_no_request_object_alive(self, recorded: str | None) -> None:
        """Settled (after a success, or recorded before the call), nothing of the admission stays:
        LiteLLM's per-request objects (its logging object) are freed at once, not after settled_ttl_s."""

        class LoggingObject:  # stands for litellm's Logging, reachable from the request's parameters
            pass

        logging_obj = LoggingObject()
        alive = weakref.ref(logging_obj)
        context = RequestContext(
            call_id="r", model="m", request_params=MappingProxyType({"litellm_logging_obj": logging_obj})
        )
        full = Admitted(Admission(context, CostEstimate(Nano(1), 1, 1, None)), recorded=recorded)
        full.admission.headers["x-costkit-max-cost-usd"] = "0.01"
        inflight = InFlight(600, clock=Clock(), settled_ttl_s=60)
        inflight.add("r", full)
        if recorded is None:
            assert inflight.get("r") is full  # live: the stages still read the parameters after the call
            assert inflight.take("r", final=True) is full
        del full, context, logging_obj  # no cycle holds them: freed by reference counting, or never
        kept = inflight.get("r")
        assert alive() is None
        assert kept is not None and kept.headers == {"x-costkit-max-cost-usd": "0.01"}

    def test_the_collector_stops_tracking_a_settled_entry(self) -> None:
        """A settled entry holds only atomic values: after one collection the garbage collector no
        longer tracks it (a minute of settled requests costs later collections nothing)."""
        inflight = InFlight(600, clock=Clock(), settled_ttl_s=60)
        full = entry()
        full.admission.headers["x-costkit-max-cost-usd"] = "0.01"
        inflight.add("r", full)
        inflight.take("r", final=True)
        assert inflight.get("r") == Settled(160.0, {"x-costkit-max-cost-usd": "0.01"})
        gc.collect(0)  # the youngest generation's pass, the first one a new object meets
        stored = inflight._settled["r"]  # what the map keeps (get() answers a view of it)
        assert not gc.is_tracked(stored)

    def test_an_entry_recorded_before_the_call_is_settled_at_once(self) -> None:
        """A refusal's or an answer's entry lives settled_ttl_s, is never counted as dropped, and an
        outcome for it finds nothing (it was recorded when it happened)."""
        clock = Clock()
        inflight = InFlight(600, clock=clock, settled_ttl_s=60)
        inflight.add("answered", Admitted(entry().admission, recorded="answered"))
        assert inflight.take("answered", final=False) is None and inflight.take("answered", final=True) is None
        assert isinstance(inflight.get("answered"), Settled)
        clock.now += 61
        inflight.add("next", entry())
        assert inflight.get("answered") is None and inflight.dropped == 0 and len(inflight) == 1

    def test_a_failure_keeps_the_whole_entry_for_a_later_success(self) -> None:
        """A failed attempt (a fallback follows) leaves the full entry live for ttl_s; renewing it keeps it."""
        clock = Clock()
        inflight = InFlight(600, clock=clock, settled_ttl_s=60)
        full = entry()
        full.admission.state["budgets"] = {"held": True}
        inflight.add("r", full)
        assert inflight.take("r", final=False) is full
        clock.now += 500
        inflight.touch("r")
        clock.now += 500
        assert inflight.take("r", final=True) is full
