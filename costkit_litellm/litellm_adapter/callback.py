"""``CostKitCallback``: LiteLLM's ``CustomLogger`` hooks, translated into ``CostKit`` calls.

Every hook the proxy should run is defined on this class itself: the proxy only runs
``async_pre_call_hook`` when it is defined on the instance's own class.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterator, Mapping
from dataclasses import replace
from typing import Any, cast

import litellm
from litellm import EmbeddingResponse, ModelResponse, TextCompletionResponse
from litellm.integrations.custom_logger import CustomLogger
from litellm.proxy._types import ProxyException
from litellm.types.llms.openai import ResponsesAPIResponse

from costkit_litellm.context import (
    OUTPUT_CAPS,
    MetadataKey,
    RequestContext,
    from_logging_payload,
    from_request,
    request_metadata,
)
from costkit_litellm.errors import RequestAnswered, RequestRejected
from costkit_litellm.failsafe import InternalError, failed_at
from costkit_litellm.inflight import Admitted, InFlight, Settled
from costkit_litellm.kit import HEADER_COST, CostKit
from costkit_litellm.litellm_adapter.call_types import CHAT, CallType, metadata_key
from costkit_litellm.litellm_adapter.call_types import call_type as _call_type
from costkit_litellm.litellm_adapter.cascade import Cascade
from costkit_litellm.litellm_adapter.costs import cost_nano, response_cost, usage_tokens
from costkit_litellm.litellm_adapter.embedder import LiteLLMEmbedder
from costkit_litellm.litellm_adapter.estimates import Estimator, conversation
from costkit_litellm.litellm_adapter.prices import LiteLLMModelCatalog, LiteLLMPriceSource, RouterGetter
from costkit_litellm.money import Nano, format_usd
from costkit_litellm.pipeline import Admission, Outcome
from costkit_litellm.pricing import CostEstimate
from costkit_litellm.routing.stage import STATE_KEY as ROUTING_STATE

log = logging.getLogger(__name__)

STASH_KEY = "costkit"
SHUTTING_DOWN = RequestRejected(
    "This costkit replica is shutting down and admits no new requests; retry (another replica will answer).",
    status=503,
    error_type="costkit_shutting_down",
    headers={"Retry-After": "1"},
)
"""Request metadata key carrying the pack's request id (``{"id": ...}``) to the logging callbacks."""
INFLIGHT_MARGIN_S = 60.0
"""How long past the lease the server-side state of a request with no outcome is kept."""
_TOKEN_BOUNDS = frozenset({"tokens", "embedding"})
"""Call types whose worst case ``pricing.models`` prices (per token): their actual cost does too."""
_TOKEN_RESPONSES = (ModelResponse, TextCompletionResponse, EmbeddingResponse, ResponsesAPIResponse, Mapping)
"""Responses of those calls (Anthropic's ``/v1/messages`` answers a dict)."""


_ID_PREFIXES: set[str] = set()
"""The request-id prefixes of every kit built in this process (two kits never record each other's calls)."""


def _proxy_router() -> Any:
    """The proxy's router (a module global of LiteLLM's proxy server), None outside the proxy."""
    try:
        from litellm.proxy import proxy_server
    except Exception:  # proxy extras not importable: application code without the proxy
        return None
    return getattr(proxy_server, "llm_router", None)


def as_http_exception(exc: RequestRejected) -> ProxyException:
    """The proxy answers a refusal with this: status, OpenAI-shaped error with our ``type``, extra headers.

    A ``ProxyException`` keeps its ``type``; an ``HTTPException(429)`` would be retyped ``rate_limit_error``.
    """
    error = ProxyException(
        message=exc.message, type=exc.error_type, param=None, code=exc.status, headers=dict(exc.headers) or None
    )
    error.status_code = exc.status  # type: ignore[attr-defined]  # audio routes read status_code, else 500
    return error


def final_answer(model: str, answer: RequestAnswered) -> ModelResponse:
    """The answer as a response with zero usage (LiteLLM then prices it at $0): a stored response, or a message."""
    zero = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
    if answer.response is not None:
        stored = {k: v for k, v in answer.response.items() if k not in ("usage", "id", "created")}
        response = ModelResponse(**{**stored, "model": stored.get("model") or model, "usage": zero})
    else:
        message = {"role": "assistant", "content": answer.content}
        response = ModelResponse(
            model=model, choices=[{"index": 0, "finish_reason": "stop", "message": message}], usage=zero
        )
    response._hidden_params["additional_headers"] = dict(answer.headers)
    return response


class _ResponseDict(Mapping[str, Any]):
    """A chat completion read as a plain dict, dumped only when a stage first reads it (the cache
    stores it; a kit without one never pays for ``model_dump``)."""

    __slots__ = ("_dumped", "_response")

    def __init__(self, response: ModelResponse) -> None:
        self._response = response
        self._dumped: dict[str, Any] | None = None

    def _data(self) -> dict[str, Any]:
        if self._dumped is None:
            dumped = self._response.model_dump()
            self._dumped = dumped if isinstance(dumped, dict) else {}
        return self._dumped

    def __getitem__(self, key: str) -> Any:
        return self._data()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data())

    def __len__(self) -> int:
        return len(self._data())


def _response_dict(response: Any) -> Mapping[str, Any] | None:
    """A non-streaming chat completion as a mapping (None for streams and other objects)."""
    if isinstance(response, ModelResponse) and hasattr(response, "model_dump"):
        return _ResponseDict(response)
    return None


def strip_client_state(data: Mapping[str, Any]) -> None:
    """Drop any client-supplied ``costkit`` key from the request's metadata dicts (and the copies
    LiteLLM keeps of the client's own metadata): only the pack writes it."""
    for name in ("metadata", "litellm_metadata"):
        metadata = data.get(name)
        if not isinstance(metadata, dict):
            continue
        metadata.pop(STASH_KEY, None)
        requester = metadata.get("requester_metadata")
        if isinstance(requester, dict):
            requester.pop(STASH_KEY, None)


def _request_id(metadata: Mapping[str, Any]) -> object:
    raw = metadata.get(STASH_KEY)
    return raw.get("id") if isinstance(raw, Mapping) else None


def _detail(payload: Mapping[str, Any], section: str, name: str) -> int:
    """A token count from the usage details LiteLLM keeps in the payload's metadata (0 when absent)."""
    usage = request_metadata(payload).get("usage_object")  # the logging payload's own "metadata"
    details = usage.get(section) if isinstance(usage, Mapping) else None
    value = details.get(name) if isinstance(details, Mapping) else None
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _stash_of(params: Mapping[str, Any]) -> Any:
    """The pack's stash as LiteLLM hands it to the logging callbacks (it merges the route's dict into ``metadata``)."""
    for key in ("metadata", "litellm_metadata"):
        raw = request_metadata(params, key).get(STASH_KEY)
        if raw is not None:
            return raw
    return None


def _refuse_fan_out(data: Mapping[str, Any], row: CallType) -> None:
    """Refuse a chat request whose ``model`` lists several models (``"a,b"``): the proxy fans it out
    into one call per model (``abatch_completion``, or the fastest of them), which one hold and one
    outcome cannot bound or account for."""
    model = data.get("model")
    if row.endpoint == CHAT.endpoint and isinstance(model, str) and "," in model:
        raise RequestRejected(
            f"model {model[:200]!r} lists several models: the proxy would call each of them, which costkit "
            "cannot hold or account for as one request. Send one request per model.",
            status=400,
            error_type="model_fan_out_unsupported",
        )


def _refuse_provider_override(data: Mapping[str, Any], row: CallType) -> None:
    """Refuse a call to a deployment's model that names its own ``custom_llm_provider``: LiteLLM would
    send it to the deployment (its ``api_base`` and key) but price it as the named provider's model,
    which it often does not know (``hosted_vllm``, ``lm_studio``: $0), so every answer would be
    committed at $0 and no budget would cap it. The deployment says which provider serves it; the
    routes that take a provider as an argument (files, batches, vector stores) are not priced so."""
    if row.priced_by_deployment and data.get("custom_llm_provider") is not None:
        raise RequestRejected(
            "custom_llm_provider is set by the proxy's deployment, not by a request: naming another provider "
            "would make LiteLLM price the call as that provider's model (often at $0) while the deployment "
            "still serves and bills it. Remove the field.",
            status=400,
            error_type="provider_override_not_allowed",
        )


_CUT_CHARGED = "cut_short_charged"
"""``Admission.state`` key: a failed attempt of this request was charged its hold as cut short."""


def _cut_short(kind: str, kwargs: Mapping[str, Any], cost: Nano | None, completion_tokens: int) -> str | None:
    """Why a call's usage is LiteLLM's reconstruction rather than the provider's: ``client`` (the
    client left a stream: LiteLLM bills the chunks sent so far, 1.108.7
    ``_bill_partial_streamed_spend_on_disconnect``), ``provider`` (an attempt that failed after
    producing output: a stream broken off mid-way); None for a call the provider finished."""
    if kind == "failure":
        return "provider" if (cost or completion_tokens) else None
    params = kwargs.get("litellm_params")
    for metadata in (params.get("metadata") if isinstance(params, Mapping) else None, kwargs.get("metadata")):
        if isinstance(metadata, Mapping) and metadata.get("client_disconnected") is True:
            return "client"
    return None


class CostKitCallback(CustomLogger):
    """Runs the costkit pipeline inside LiteLLM (proxy hooks and logging callbacks)."""

    def __init__(self, kit: CostKit, router: RouterGetter | None = None) -> None:
        super().__init__()
        # LiteLLM keeps one CustomLogger per class and public scalar attributes: a unique public
        # id keeps two kits in one process (or a re-installed one) from being dropped as duplicates.
        self.instance_id = uuid.uuid4().hex
        self._id_prefix = self.instance_id[:12] + "-"
        _ID_PREFIXES.add(self._id_prefix)
        self.kit = kit
        self._router = router or _proxy_router
        self.prices = LiteLLMPriceSource(self._router)
        self.lease_s = kit.config.budget_settings.lease_s
        metrics = kit.metrics
        self.inflight = InFlight(
            self.lease_s + INFLIGHT_MARGIN_S, on_drop=metrics.inflight_dropped if metrics is not None else None
        )
        kit.set_price_source(self.prices)
        kit.set_model_catalog(LiteLLMModelCatalog(self._router))  # the model label: configured models only
        kit.set_embedder_factory(lambda name: LiteLLMEmbedder(name, self._router))

    def new_request_id(self) -> str:
        """A fresh request id of this kit: its prefix names the kit, the rest is a uuid4 (unguessable)."""
        return self._id_prefix + uuid.uuid4().hex

    def _issued_by_a_kit(self, request_id: object) -> bool:
        """True for an id this kit or another kit in this process could have issued (by its prefix)."""
        return isinstance(request_id, str) and request_id[:13] in _ID_PREFIXES

    # --- before the call ----------------------------------------------------------------
    async def admit(self, data: dict[str, Any], row: CallType = CHAT) -> Admission:
        """Parse, estimate and run the pre-call stages for a request dict of call type ``row``; keep the
        result server-side.

        The request gets the pack's own id (uuid4); its state stays in ``self.inflight`` and only
        the id travels in the metadata. A refusal or a policy's own answer is recorded here, once
        (its entry is marked so LiteLLM's failure or success callback for the call skips it).
        """
        key = metadata_key(data, row)
        strip_client_state(data)
        request_id = self.new_request_id()
        client_call_id = data.get("litellm_call_id")
        try:
            _refuse_fan_out(data, row)
            _refuse_provider_override(data, row)
            context = from_request(data, self.kit.config.request, key, row.endpoint, row.output_caps)
        except RequestRejected as exc:
            fallback = from_logging_payload(
                {"litellm_call_id": client_call_id, "model_group": data.get("model")}, endpoint=row.endpoint
            )
            fallback = replace(fallback, call_id=request_id, client_call_id=fallback.call_id)
            await self._record_stop(data, fallback, "rejected", exc.error_type, 0)
            raise
        context = replace(context, call_id=request_id, client_call_id=context.call_id)
        deployment = self.prices.deployment_model(context.model)
        estimate = Estimator(self.kit.pricing, self.prices).worst_case(row, data, context.model, deployment)
        tokens = estimate.prompt_tokens
        try:
            admission = await self.kit.admit(context, tokens, deployment, conversation(data), estimate=estimate)
        except RequestRejected as exc:
            await self._record_stop(data, context, "rejected", exc.error_type, tokens)
            raise
        except RequestAnswered as answer:
            await self._record_stop(data, context, "answered", answer.reason, tokens, answer)
            raise
        if admission.model is not None:
            data["model"] = admission.model
        inject = admission.estimate.inject_max_tokens  # of the final estimate (after routing or a downgrade)
        if inject is not None and row.output_cap is not None and context.params.max_tokens is None:
            data[row.output_cap] = inject  # the hold is a bound only if the provider stops there
            extra = data.get("extra_body")
            if isinstance(extra, dict):  # it goes over the top-level caps: an odd value there caps nothing
                for field in OUTPUT_CAPS:
                    if field in extra:
                        extra[field] = inject
        if row.routable and admission.state.get(ROUTING_STATE, {}).get("cascade_from"):
            cheap_id = self.new_request_id()
            self.inflight.add(cheap_id, Admitted(admission, recorded="cascade"))
            await Cascade(self.kit, self._cheap_call(), {"id": cheap_id}, self._answer_cost).run(data, admission)
        self._stash(data, Admitted(admission))
        return admission

    def _cheap_call(self) -> Callable[..., Awaitable[Any]]:
        """How a cascade calls the cheap tier: the router's own acompletion (not our wrapper)."""
        router = self._router()
        if router is None:
            return cast(Callable[..., Awaitable[Any]], litellm.acompletion)
        call = router.acompletion
        return cast(Callable[..., Awaitable[Any]], getattr(call, "__wrapped__", call))

    async def _record_stop(
        self,
        data: dict[str, Any],
        context: RequestContext,
        kind: str,
        reason: str,
        tokens: int,
        answer: RequestAnswered | None = None,
    ) -> None:
        stopped = Admission(context=context, estimate=CostEstimate(Nano(0), tokens, 0, None))
        cache_hit = answer is not None and answer.cache_hit
        if answer is not None:
            stopped.headers.update(answer.headers)
        self._stash(data, Admitted(stopped, recorded=kind))
        saved = answer.saved_nano if answer is not None else None
        await self.kit.record(
            Outcome(
                kind="rejected" if kind == "rejected" else "success" if cache_hit else "answered",
                context=context,
                model=context.model,
                deployment_model=None,
                cost=Nano(0),
                cache_hit=cache_hit,
                cache_status="hit" if cache_hit else None,
                saved=Nano(saved) if saved else None,
                saved_source="cache" if saved else None,
                reason=None if cache_hit else reason,
                timestamp=time.time(),
            )
        )

    def _stash(self, data: dict[str, Any], entry: Admitted) -> None:
        request_id = entry.admission.context.call_id or self.new_request_id()
        self.inflight.add(request_id, entry)
        key: MetadataKey = metadata_key(data, CHAT)  # the proxy's own dict on this route, never the client's
        metadata = data.get(key)
        if metadata is None:
            metadata = data[key] = {}
        if isinstance(metadata, dict):  # a client's malformed non-dict metadata is left as it is
            metadata[STASH_KEY] = {"id": request_id}

    async def async_pre_call_hook(
        self, user_api_key_dict: Any, cache: Any, data: dict[str, Any], call_type: Any
    ) -> dict[str, Any] | None:
        """Proxy hook: admit the request or refuse it with an OpenAI-shaped HTTP error.

        Every route first loses any client-written ``costkit`` metadata (only the pack writes it)."""
        strip_client_state(data)
        row = _call_type(call_type)
        if not self.kit.config.enabled or not row.billable:
            return data
        if self.kit.closing:
            raise as_http_exception(SHUTTING_DOWN)
        try:
            try:
                await self.admit(data, row)
            except RequestAnswered as answer:
                # The proxy answers a request whose mock_response is a ModelResponse itself, at $0.
                data["mock_response"] = final_answer(str(data.get("model", "")), answer)
        except RequestRejected as exc:
            raise as_http_exception(exc) from None
        except Exception as exc:  # a bug in the pack: never a 500 (costkit.request.on_internal_error)
            self._internal_error(exc)
        return data

    def _internal_error(self, exc: Exception) -> None:
        """Log and count an unexpected error; refuse with a 422 (fail_closed) or return to admit (fail_open)."""
        where = failed_at(exc)
        closed = self.kit.config.request.on_internal_error == "fail_closed"
        log.error(
            "costkit: unexpected %s in %s; request %s (costkit.request.on_internal_error)",
            type(exc).__name__,
            where,
            "refused" if closed else "admitted without the pack",
            exc_info=exc,
        )
        if self.kit.metrics is not None:
            self.kit.metrics.internal_error(where, "refused" if closed else "admitted")
        if closed:
            raise as_http_exception(InternalError(exc, where)) from None

    # --- response headers ---------------------------------------------------------------
    def headers_for(self, data: Mapping[str, Any], response: Any) -> dict[str, str]:
        """The ``x-costkit-*`` headers for a finished request."""
        entry = self.inflight.get(_request_id(request_metadata(data, metadata_key(data, CHAT))))
        if entry is None:
            return {}
        headers = dict(entry.headers)
        if response is None:
            headers[HEADER_COST] = format_usd(0)
        elif hasattr(response, "__aiter__") or data.get("stream") is True:
            pass  # a stream's headers leave before its cost is known: no cost header (the max-cost one stays)
        else:
            cost = self._configured_response_cost(data, response, entry)
            if cost is None:
                cost = response_cost(response)
            if cost is not None:
                headers[HEADER_COST] = format_usd(cost)
        return headers

    def configured_cost(
        self, group: str, model_id: object, prompt_tokens: int, completion_tokens: int, hold: Nano | None
    ) -> Nano | None:
        """A finished call's cost at the price ``pricing.models`` sets for the group or provider model
        that served it (``model_id``: the router's deployment), from its usage; the hold when it
        reports no usage. None when the config does not price it: LiteLLM's ``response_cost`` stands."""
        pricing = self.kit.pricing
        if not pricing.configures_prices:
            return None
        served, deployment = self.prices.served_by(group, model_id)
        return pricing.actual_cost(served, deployment, prompt_tokens, completion_tokens, hold=hold)

    def _priced(self, group: str, model_id: object) -> bool:
        """True when the deployment that served a call of ``group`` has a price above $0."""
        price = self.prices.served_price(group, model_id)
        return price is not None and (price.input_nano_per_mtok > 0 or price.output_nano_per_mtok > 0)

    def _configured_answer_cost(self, group: str, response: Any, hold: Nano | None) -> Nano | None:
        """``configured_cost`` of a response object: its deployment (``model_id``) and usage."""
        hidden = getattr(response, "_hidden_params", None)
        model_id = hidden.get("model_id") if isinstance(hidden, Mapping) else None
        prompt, completion = usage_tokens(response)
        return self.configured_cost(group, model_id, prompt, completion, hold)

    def _answer_cost(self, group: str, response: Any, hold: Nano | None) -> Nano | None:
        """What an answer of ``group`` cost: at its ``pricing.models`` price where one applies (the
        hold when it reports no usage), else LiteLLM's ``response_cost`` (the cascade's cheap call)."""
        configured = self._configured_answer_cost(group, response, hold)
        return configured if configured is not None else response_cost(response)

    def _configured_response_cost(
        self, data: Mapping[str, Any], response: Any, entry: Admitted | Settled
    ) -> Nano | None:
        """``configured_cost`` of a non-streaming answer, for its cost header (a policy's own answer,
        settled before the call with no usage, and a hit of LiteLLM's cache keep LiteLLM's figure)."""
        if not self.kit.pricing.configures_prices or not isinstance(response, _TOKEN_RESPONSES):
            return None
        hidden = getattr(response, "_hidden_params", None)
        if isinstance(hidden, Mapping) and hidden.get("cache_hit"):
            return None
        group = data.get("model")
        if not isinstance(group, str) or not group:
            return None
        hold = entry.admission.estimate.amount if isinstance(entry, Admitted) and entry.recorded is None else None
        return self._configured_answer_cost(group, response, hold)

    async def async_post_call_response_headers_hook(
        self,
        data: dict[str, Any],
        user_api_key_dict: Any,
        response: Any,
        request_headers: dict[str, str] | None = None,
        litellm_call_info: dict[str, object] | None = None,
    ) -> dict[str, str] | None:
        """Proxy hook: add ``x-costkit-*`` headers (cost is known for non-streaming answers)."""
        if not self.kit.config.enabled or not self.kit.config.headers.enabled:
            return None
        try:
            return self.headers_for(data, response) or None
        except Exception:  # headers are informative: a bug here must not fail an answered request
            log.exception("costkit: could not build the x-costkit-* headers")
            return None

    # --- during a stream ----------------------------------------------------------------
    async def async_post_call_streaming_iterator_hook(
        self, user_api_key_dict: Any, response: Any, request_data: dict[str, Any]
    ) -> AsyncGenerator[Any, None]:
        """Proxy hook over a stream's chunks: renew the request's leases while it streams (at most
        every ``lease_s / 3``), so a live stream's hold never expires into spent money early."""
        request_id = _request_id(request_metadata(request_data, metadata_key(request_data, CHAT)))
        async for chunk in response:
            entry = self.inflight.live(request_id)
            if entry is not None and isinstance(request_id, str) and self.kit.config.enabled:
                now = time.monotonic()
                if now - entry.renewed_at >= self.lease_s / 3:
                    entry.renewed_at = now
                    self.inflight.touch(request_id)
                    await self.kit.renew(request_id, entry.admission)
            yield chunk

    # --- after the call -----------------------------------------------------------------
    def outcome(
        self, kind: str, kwargs: Mapping[str, Any], start_time: Any, end_time: Any, response_obj: Any = None
    ) -> Outcome | None:
        """Translate a logging callback's kwargs into an ``Outcome``."""
        payload = kwargs.get("standard_logging_object")
        if not isinstance(payload, Mapping):
            return None
        params = kwargs.get("litellm_params")
        row = _call_type(kwargs.get("call_type") or payload.get("call_type"))
        raw = _stash_of(params) if isinstance(params, Mapping) else None
        request_id = raw.get("id") if isinstance(raw, Mapping) else None
        entry = self.inflight.take(request_id, final=kind == "success")
        if entry is None and self._issued_by_a_kit(request_id):
            # Another kit's request in this process, a repeated success callback of ours, or a
            # request recorded when it happened (refused, answered by a policy, a cascade's cheap
            # call: settled at once): nothing more to record. Any other id was written by a client
            # on a route the hook did not see: it is accounted below as not admitted, never dropped.
            return None
        admission = entry.admission if entry is not None else None
        if admission is None:
            # Not admitted by this kit (a route the hook skips, another kit's call, a forged or
            # repeated id): identity from the authenticated payload, a fresh id, no budget state.
            context = from_logging_payload(payload, self.kit.config.request, endpoint=row.endpoint)
            context = replace(context, call_id=uuid.uuid4().hex, client_call_id=context.call_id)
        else:
            context = admission.context
        cost = cost_nano(payload.get("response_cost"))
        if kind == "failure" and cost is None:
            cost = Nano(0)
        model = str(payload.get("model_group") or context.model or payload.get("model") or "")
        prompt_tokens = int(payload.get("prompt_tokens") or 0)
        completion_tokens = int(payload.get("completion_tokens") or 0)
        hold = admission.estimate.amount if admission is not None else None
        cut = _cut_short(kind, kwargs, cost, completion_tokens)
        if cut is not None and hold is not None and admission is not None:
            # LiteLLM's usage is rebuilt from the chunks the proxy forwarded, not the provider's bill:
            # reasoning tokens, and output generated after the last chunk, are in the bill but not in
            # those chunks. Unknown, so the hold (the worst case) is what it cost. A stream that both
            # broke off and lost its client is one attempt (LiteLLM falls back from no stream that
            # sent content): LiteLLM logs its failure, then the disconnect's success; charged once.
            if cut == "client" and admission.state.get(_CUT_CHARGED):
                log.info("costkit: %s's stream lost its client after breaking off; charged already", context.call_id)
                cost = Nano(0)
            else:
                log.info("costkit: %s's stream was cut short (%s); charging its hold", context.call_id, cut)
                cost = Nano(hold)
                if cut == "provider":
                    admission.state[_CUT_CHARGED] = True
        elif kind == "success" and row.bound in _TOKEN_BOUNDS and not payload.get("cache_hit"):
            configured = self.configured_cost(model, payload.get("model_id"), prompt_tokens, completion_tokens, hold)
            if configured is not None:
                cost = configured
            elif cost == 0 and (prompt_tokens or completion_tokens) and self._priced(model, payload.get("model_id")):
                # A billed answer of a deployment whose model has a price, priced at $0: LiteLLM priced it
                # as something else (a request field it honours, as custom_llm_provider was). Unknown, not
                # free: the budgets commit the hold.
                log.warning(
                    "costkit: LiteLLM priced a %s answer with %d+%d tokens at $0; committing its hold instead",
                    model,
                    prompt_tokens,
                    completion_tokens,
                )
                cost = None
        latency = None
        try:
            latency = (end_time - start_time).total_seconds()
        except Exception:
            latency = None
        return Outcome(
            kind="success" if kind == "success" else "failure",
            context=context,
            model=model,
            deployment_model=str(payload.get("model") or "") or None,
            cost=cost,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            cached_tokens=_detail(payload, "prompt_tokens_details", "cached_tokens"),
            reasoning_tokens=_detail(payload, "completion_tokens_details", "reasoning_tokens"),
            estimate=Nano(admission.estimate.amount)
            if admission is not None and admission.estimate.amount is not None
            else None,
            cache_hit=bool(payload.get("cache_hit")),
            error=str(payload.get("error_str") or "") or None,
            latency_s=latency,
            timestamp=time.time(),
            state=admission.state if admission is not None else {},
            response=_response_dict(response_obj) if kind == "success" else None,
            final=kind != "failure",  # LiteLLM logs every failed attempt; a retry or fallback may follow
        )

    async def request_failed(self, data: Mapping[str, Any]) -> None:
        """The request failed for good (after LiteLLM's retries and fallbacks): settle what it holds.

        LiteLLM's failure callback fires for every failed attempt, and a retry or a fallback may then
        run on the same hold, so those release nothing; this is the request's end. Its entry stays
        live (the attempts' failure callbacks may still arrive and are accounted as before); a success
        that already took it, a second call, or an id this kit did not admit change nothing."""
        request_id = _request_id(request_metadata(data, metadata_key(data, CHAT)))
        entry = self.inflight.live(request_id)
        if entry is None or entry.finished or entry.failed:
            return
        admission = entry.admission
        call_id = data.get("litellm_call_id")
        if admission.context.client_call_id != (call_id if isinstance(call_id, str) else None):
            return  # not the request admitted under this id (a body the pre-call hook never cleaned)
        entry.failed = True
        await self.kit.record(
            Outcome(
                kind="failure",
                context=admission.context,
                model=admission.context.model,
                deployment_model=None,
                cost=Nano(0),
                timestamp=time.time(),
                state=admission.state,
                settle_only=True,
            )
        )

    async def async_post_call_failure_hook(
        self,
        request_data: dict[str, Any],
        original_exception: Exception,
        user_api_key_dict: Any,
        traceback_str: str | None = None,
    ) -> Any:
        """Proxy hook, once per request the client gets an error for: settle what it still holds
        (``request_failed``). The error itself is left as it is."""
        if not self.kit.config.enabled or not isinstance(request_data, Mapping):
            return None
        try:
            await self.request_failed(request_data)
        except Exception:  # the error response must go out whatever happens here
            log.exception("costkit: could not settle a failed request's holds")
        return None

    async def async_log_success_event(self, kwargs: Any, response_obj: Any, start_time: Any, end_time: Any) -> None:
        """Record a successful call (streaming calls arrive once, when the stream ends)."""
        await self._record("success", kwargs, start_time, end_time, response_obj)

    async def async_log_failure_event(self, kwargs: Any, response_obj: Any, start_time: Any, end_time: Any) -> None:
        """Record a failed call (its cost is what LiteLLM says, usually 0)."""
        await self._record("failure", kwargs, start_time, end_time, None)

    async def _record(self, kind: str, kwargs: Any, start_time: Any, end_time: Any, response_obj: Any) -> None:
        if not self.kit.config.enabled or not isinstance(kwargs, Mapping):
            return
        try:
            outcome = self.outcome(kind, kwargs, start_time, end_time, response_obj)
        except Exception:
            log.exception("costkit: could not read LiteLLM's logging payload")
            return
        if outcome is not None:
            await self.kit.record(outcome)


# A request sent with "no-log": true makes LiteLLM skip every logging callback except its own spend
# tracking, which it recognises by "_PROXY_" in the callback's class name (1.108.7:
# Logging.should_run_callback). The pack's success and failure callbacks are spend tracking too:
# without them a served no-log request commits nothing, leaves no ledger event, and its worst-case
# hold expires into spend after lease_s. So the class answers to that test; the ledger never holds
# a request's content, which is what no-log keeps out of the other loggers.
CostKitCallback.__name__ = "_PROXY_CostKitCallback"
