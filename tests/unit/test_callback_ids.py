"""Request ids in the logging callbacks: a client-written id is accounted, a kit's own id is never recorded twice."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from costkit_litellm.kit import CostKit
from costkit_litellm.litellm_adapter.callback import STASH_KEY, CostKitCallback, _cut_short
from costkit_litellm.litellm_adapter.costs import cost_nano
from costkit_litellm.money import Nano
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


class TestZeroCostOfAPricedAnswer:
    """LiteLLM's $0 for a billed answer of a priced deployment is taken as unknown (the hold is committed)."""

    @staticmethod
    def priced_callback(**litellm_params: Any) -> CostKitCallback:
        import litellm

        params = {"model": "openai/gpt-4o-mini", "api_key": "fake", **litellm_params}
        router = litellm.Router(model_list=[{"model_name": "gpt-4o-mini", "litellm_params": params}])
        return CostKitCallback(CostKit(store=MemoryStore(), registry=CollectorRegistry()), router=lambda: router)

    @staticmethod
    def success(**fields: Any) -> dict[str, Any]:
        sent = kwargs("client-made-this-up")
        sent["standard_logging_object"].update(fields)
        return sent

    def test_a_zero_cost_with_usage_on_a_priced_deployment_is_unknown(self) -> None:
        """response_cost 0 with 10 + 20 tokens on gpt-4o-mini is no cost (None: budgets commit the hold),
        whether the payload names the router's deployment or not."""
        cb = self.priced_callback()
        router = cb.prices._router()
        deployment_id = router.model_list[0]["model_info"]["id"]
        for model_id in ("unknown-id", deployment_id):
            outcome = cb.outcome("success", self.success(response_cost=0.0, model_id=model_id), None, None)
            assert outcome is not None and outcome.cost is None

    def test_a_priced_answer_keeps_litellms_cost(self) -> None:
        """A non-zero response_cost stands as LiteLLM computed it."""
        outcome = self.priced_callback().outcome("success", self.success(), None, None)
        assert outcome is not None and outcome.cost == 13_500

    def test_a_free_deployment_a_cache_hit_or_no_usage_stays_at_zero(self) -> None:
        """$0 stands for a deployment priced at $0, for LiteLLM's cache hits and for an answer without usage."""
        free = self.priced_callback(input_cost_per_token=0.0, output_cost_per_token=0.0)
        free_id = free.prices._router().model_list[0]["model_info"]["id"]
        cases = [
            (free, self.success(response_cost=0.0)),
            (free, self.success(response_cost=0.0, model_id=free_id)),
            (self.priced_callback(), self.success(response_cost=0.0, cache_hit=True)),
            (self.priced_callback(), self.success(response_cost=0.0, prompt_tokens=0, completion_tokens=0)),
        ]
        for cb, sent in cases:
            outcome = cb.outcome("success", sent, None, None)
            assert outcome is not None and outcome.cost == 0


class TestCutShort:
    """Which calls' usage is LiteLLM's rebuild from the chunks sent, not the provider's bill."""

    def test_a_stream_the_client_left_is_cut_short(self) -> None:
        """LiteLLM's client_disconnected flag, in litellm_params' metadata or the call's own, marks the
        success it logs for a stream the client left."""
        flagged = {"client_disconnected": True}
        assert _cut_short("success", {"litellm_params": {"metadata": flagged}}, None, 5) == "client"
        assert _cut_short("success", {"metadata": flagged}, None, 5) == "client"

    def test_a_failed_attempt_that_produced_output_is_cut_short(self) -> None:
        """A failure with a cost or output tokens (a stream broken off mid-way) is; one without is not."""
        assert _cut_short("failure", {}, Nano(52_000), 0) == "provider"
        assert _cut_short("failure", {}, Nano(0), 12) == "provider"
        assert _cut_short("failure", {}, Nano(0), 0) is None

    def test_a_finished_call_is_not(self) -> None:
        """A success without the flag (or with anything but True) is the provider's own usage."""
        assert _cut_short("success", {"litellm_params": {"metadata": {}}}, Nano(1), 5) is None
        assert _cut_short("success", {"metadata": {"client_disconnected": "yes"}}, Nano(1), 5) is None

    def test_an_unadmitted_call_keeps_litellms_cost(self) -> None:
        """With no hold to charge (a request this kit did not admit), LiteLLM's figure stands."""
        cb = CostKitCallback(CostKit(store=MemoryStore(), registry=CollectorRegistry()))
        sent = kwargs("client-made-this-up")
        sent["litellm_params"]["metadata"]["client_disconnected"] = True
        outcome = cb.outcome("success", sent, None, None)
        assert outcome is not None and outcome.cost == cost_nano(sent["standard_logging_object"]["response_cost"])
