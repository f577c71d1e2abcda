"""Request ids in the logging callbacks: a client-written id is accounted, a kit's own id is never recorded twice."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from costkit_litellm.kit import CostKit
from costkit_litellm.litellm_adapter.callback import STASH_KEY, CostKitCallback
from costkit_litellm.store import MemoryStore

RECORDED = Path(__file__).resolve().parents[1] / "fixtures" / "recorded"


def payload() -> dict[str, Any]:
    slo: dict[str, Any] = json.loads((RECORDED / "success.json").read_text())[0]["slo"]
    return slo


def kwargs(request_id: object) -> dict[str, Any]:
    return {"standard_logging_object": payload(), "litellm_params": {"metadata": {STASH_KEY: {"id": request_id}}}}


def callback() -> CostKitCallback:
    return CostKitCallback(CostKit(store=MemoryStore(), registry=CollectorRegistry()))


class TestOutcomeIds:
    def test_client_written_id_is_accounted_as_not_admitted(self) -> None:
        """An id no kit issued (a client's, on a route the pre-call hook did not see) is accounted with a fresh id."""
        outcome = callback().outcome("success", kwargs("client-made-this-up"), None, None)
        assert outcome is not None
        assert outcome.state == {}
        assert outcome.context.call_id != "client-made-this-up"

    def test_another_kits_id_is_left_to_that_kit(self) -> None:
        """An id issued by another kit in this process is recorded by that kit only."""
        other = callback()
        assert callback().outcome("success", kwargs(other.new_request_id()), None, None) is None

    def test_own_finished_or_unknown_id_is_not_recorded_again(self) -> None:
        """An id of this kit that holds no state (finished or dropped) records nothing."""
        kit = callback()
        assert kit.outcome("success", kwargs(kit.new_request_id()), None, None) is None
