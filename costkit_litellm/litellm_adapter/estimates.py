"""The worst case of one request before it is sent, per call type, with LiteLLM's own rules.

``worst_case(row, data, ...)`` reads the request body the proxy hands the pre-call hook and returns
a ``CostEstimate``:

- ``tokens`` (chat, text completions, Responses, Anthropic messages): input tokens over *every*
  billable field (messages with their tool calls, ``prompt``, ``input``, ``instructions``,
  ``system``, ``tools``, ``response_format`` / ``text``), by LiteLLM's tokenizer for the model and
  never fewer than one token per 4 characters of the fields' JSON (each image part, wherever it
  is, holds ``pricing.image_input_tokens``, by default LiteLLM's high-detail upper bound of 1,445
  tokens, never its base64); audio and reasoning output at the dearest output price; output at
  the request's cap, else per ``pricing.output_bound``; ``n`` and ``best_of`` multiply the output;
  priced at the dearest deployment or fallback, at the requested ``service_tier``.
- ``embedding`` (embeddings, moderation): input tokens, no output.
- ``image``: LiteLLM's image cost function at the requested size and quality (the dearest it
  prices for the model when either is left out) x ``n``, plus the prompt's tokens.
- ``speech``: characters x ``input_cost_per_character``.
- ``transcription``: seconds x ``input_cost_per_second``, the seconds bounded by the upload's size
  (``pricing.transcription_bytes_per_second``).
- ``rerank``: search units (one per query and 100 document chunks of 500 tokens) x
  ``input_cost_per_query``.

A model LiteLLM has no price for is ``unknown`` (``budget_settings.unknown_price`` decides); a call
type that cannot be bounded is ``unbounded`` (``budget_settings.unbounded_calls`` decides).
"""

from __future__ import annotations

import io
import json
import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import litellm
from litellm.cost_calculator import default_image_cost_calculator
from litellm.litellm_core_utils.token_counter import high_detail_image_token_upper_bound

from costkit_litellm.context import output_cap
from costkit_litellm.litellm_adapter.call_types import CallType
from costkit_litellm.litellm_adapter.prices import FALLBACK_KINDS, LiteLLMPriceSource
from costkit_litellm.litellm_adapter.token_count import TokenCounter
from costkit_litellm.money import Nano
from costkit_litellm.pricing import CostEstimate, Pricing, usd_to_nano_ceil

log = logging.getLogger(__name__)

_TEXT_FIELDS = ("prompt", "input", "instructions", "system", "tools", "functions", "response_format", "text")
"""Billable request fields besides ``messages`` (each counted once, as JSON when structured)."""
_CHARS_PER_TOKEN = 4
_RESPONSES_MIN_OUTPUT = 16
"""The Responses API's least output cap: LiteLLM raises a smaller one to it where it sends a route
there (/v1/messages to a non-Anthropic model, chat to an ``openai/responses/...`` deployment)."""
_TOKENS = TokenCounter()
_RERANK_DOCS_PER_SEARCH = 100
_RERANK_CHUNK_TOKENS = 500
_IMAGE_QUALITIES = ("low", "medium", "high", "standard", "hd", "auto")


def _json_len(value: Any) -> int:
    try:
        return len(json.dumps(value, ensure_ascii=False, default=str))
    except (TypeError, ValueError):
        return len(str(value))


_IMAGE_PARTS = frozenset({"image_url", "input_image", "image"})


def _is_image_part(part: Mapping[str, Any]) -> bool:
    """True for an image content part; a part whose ``type`` is not a string (a malformed request) is text."""
    kind = part.get("type")
    return isinstance(kind, str) and kind in _IMAGE_PARTS


def _without_images(value: Any) -> tuple[Any, int]:
    """``value`` with its image parts taken out (their base64 is not text), and how many there were."""
    if isinstance(value, list):
        kept, count = [], 0
        for item in value:
            if isinstance(item, Mapping) and _is_image_part(item):
                count += 1
                continue
            inner, found = _without_images(item)
            kept.append(inner)
            count += found
        return kept, count
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        count = 0
        for key, item in value.items():
            out[key], found = _without_images(item)
            count += found
        return out, count
    return value, 0


def _chars_bound(values: Iterable[Any]) -> int:
    """At least one token per 4 characters of each billable field's JSON (``values``: the fields,
    images already taken out): a tokenizer-free floor."""
    return sum(math.ceil(_json_len(value) / _CHARS_PER_TOKEN) for value in values)


def image_tokens(configured: int | None = None) -> int:
    """Input tokens held for one image: the configured allowance, else LiteLLM's upper bound for a
    high-detail image at any size (OpenAI's rule: 85 + 170 per 512-px tile of the largest image)."""
    if configured is not None:
        return configured
    try:
        return int(high_detail_image_token_upper_bound())
    except Exception:
        return 1_445  # 85 + 8 tiles x 170: the same bound, should LiteLLM's helper move


def _text_of(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)


def input_tokens(model: str | None, data: Mapping[str, Any], image_allowance: int | None = None) -> int:
    """Input tokens of every billable field of a request (see the module docstring); each image
    part, wherever it is, holds ``image_tokens(image_allowance)``."""
    counted = 0
    name = model or "gpt-4o"
    messages = data.get("messages")
    images = 0
    floor: list[Any] = []  # every billable field, images out, for the character floor
    if messages not in (None, "", []):
        text_only, found = _without_images(messages)
        floor.append(text_only)
        if isinstance(messages, list):
            images = found
            try:
                counted += _TOKENS.messages(name, text_only)
            except Exception:  # a message LiteLLM cannot read: the character floor below still counts it
                counted += 0
    others = [f for f in _TEXT_FIELDS if data.get(f) not in (None, "", [])]
    if others:
        stripped = [_without_images(data[f]) for f in others]
        images += sum(found for _, found in stripped)
        floor.extend(value for value, _ in stripped)
        text = "\n".join(_text_of(value) for value, _ in stripped)
        try:
            counted += _TOKENS.text(name, text)
        except Exception:
            counted += 0
    allowance = images * image_tokens(image_allowance) if images else 0
    return max(counted, _chars_bound(floor)) + allowance


def _embedding_tokens(model: str | None, data: Mapping[str, Any]) -> int:
    raw = data.get("input")
    items = raw if isinstance(raw, list) else [raw]
    if items and all(isinstance(i, int) for i in items):  # one input given as token ids
        return len(items)
    total = 0
    for item in items:
        if isinstance(item, list):  # token ids
            total += len(item)
        elif item is not None:
            text = _text_of(item)
            try:
                counted = int(litellm.token_counter(model=model or "text-embedding-3-small", text=text))
            except Exception:
                counted = 0
            total += max(counted, math.ceil(len(text) / _CHARS_PER_TOKEN))
    return total


def _positive_int(value: Any, default: int = 1) -> int:
    """A count (``n``, ``best_of``) as a lenient provider reads it: ``8``, ``8.0`` and ``"8"`` are 8 (a
    fraction rounds up); anything else, or a count below 1, is ``default``."""
    if isinstance(value, bool):
        return default
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            return default
    if isinstance(value, float):
        if not math.isfinite(value):
            return default
        value = math.ceil(value)
    return value if isinstance(value, int) and value > 0 else default


def _prompts(data: Mapping[str, Any]) -> int:
    """How many completions a legacy ``prompt`` asks for: one per prompt of a batch (a list of
    strings or of token lists), else one (a string, or one prompt as a list of token ids)."""
    prompt = data.get("prompt")
    if isinstance(prompt, list) and prompt and all(isinstance(p, (str, list)) for p in prompt):
        return len(prompt)
    return 1


def _request_fallbacks(data: Mapping[str, Any]) -> list[Any]:
    """The request's own fallbacks of every kind the router honours (each replaces the router's
    setting of its kind for this call)."""
    found: list[Any] = []
    for field in FALLBACK_KINDS:
        value = data.get(field)
        if isinstance(value, (list, tuple)):
            found.extend(value)
        elif value is not None:
            found.append(value)
    return found


def _model_info(model: str) -> Mapping[str, Any]:
    try:
        info = litellm.get_model_info(model=model)
    except Exception:
        return {}
    return info if isinstance(info, Mapping) else {}


class Estimator:
    """Worst cases of requests, by call type, from LiteLLM's price map and the router's deployments."""

    def __init__(self, pricing: Pricing, prices: LiteLLMPriceSource) -> None:
        self.pricing = pricing
        self.prices = prices

    def reachable_models(self, group: str, data: Mapping[str, Any]) -> list[str]:
        """The provider models a request for ``group`` can be served by (deployments of the group
        and of every fallback); the group name itself when the router knows none."""
        models: list[str] = []
        for name in [group, *self.prices.fallbacks(group, _request_fallbacks(data))]:
            found = [str(p["model"]) for p in self.prices.deployments(name) if isinstance(p.get("model"), str)]
            models.extend(found or [name])
        return list(dict.fromkeys(models))

    def worst_case(self, row: CallType, data: Mapping[str, Any], group: str, deployment: str | None) -> CostEstimate:
        """The worst case of ``data`` served as ``row`` for model group ``group``."""
        if row.bound == "free":
            return CostEstimate(Nano(0), 0, 0, None)
        if row.bound == "unbounded":
            return CostEstimate(None, 0, 0, None, unbounded=row.endpoint)
        if row.bound in ("tokens", "embedding"):
            return self._tokens(row, data, group, deployment)
        models = self.reachable_models(group, data)
        amounts = [self._fixed(row, data, model) for model in models]
        if not amounts or any(a is None for a in amounts):
            return CostEstimate(None, 0, 0, None)
        return CostEstimate(Nano(max(a for a in amounts if a is not None)), 0, 0, None)

    def _tokens(self, row: CallType, data: Mapping[str, Any], group: str, deployment: str | None) -> CostEstimate:
        output = row.bound == "tokens"
        prompt = (
            input_tokens(deployment or group, data, self.pricing.image_input_tokens)
            if output
            else _embedding_tokens(deployment or group, data)
        )
        params_n = max(_positive_int(data.get("n")), _positive_int(data.get("best_of")))
        if row.endpoint == "text_completion":
            params_n *= _prompts(data)  # a batch of prompts: n completions of each
        cap = output_cap(data, row.output_caps)  # a cap in a field the route drops bounds nothing
        if cap is not None:
            cap = max(cap, _RESPONSES_MIN_OUTPUT)  # LiteLLM raises a smaller one where it bridges to Responses
        tier = data.get("service_tier") if isinstance(data.get("service_tier"), str) else None
        return self.pricing.worst_case(
            group,
            prompt,
            cap,
            params_n,
            deployment,
            fallbacks=self.prices.fallbacks(group, _request_fallbacks(data)),
            service_tier=tier,
            output=output,
        )

    def _fixed(self, row: CallType, data: Mapping[str, Any], model: str) -> int | None:
        """The worst case of a call not priced per token, for one provider model; None when unknown."""
        info = _model_info(model)
        if row.bound == "speech":
            per_char = info.get("input_cost_per_character")
            text = data.get("input")
            if per_char is None or not isinstance(text, str):
                return None
            return usd_to_nano_ceil(float(per_char) * len(text))
        if row.bound == "transcription":
            per_second = info.get("input_cost_per_second")
            if per_second is None:
                return None
            seconds = math.ceil(_upload_bytes(data) / self.pricing.transcription_bytes_per_second)
            return usd_to_nano_ceil(float(per_second) * max(1, seconds))
        if row.bound == "rerank":
            per_query = info.get("input_cost_per_query")
            if per_query is None:
                return None
            return usd_to_nano_ceil(float(per_query) * _search_units(data))
        if row.bound == "image":
            return self._image(data, model, info)
        return None

    def _image(self, data: Mapping[str, Any], model: str, info: Mapping[str, Any]) -> int | None:
        n = _positive_int(data.get("n"))
        quality = data.get("quality") if isinstance(data.get("quality"), str) else None
        size = data.get("size") if isinstance(data.get("size"), str) else None
        qualities: Sequence[str | None] = [quality] if quality and quality != "auto" else [None, *_IMAGE_QUALITIES]
        sizes: Sequence[str | None] = [size] if size and size != "auto" else _priced_sizes(model)
        found: list[float] = []
        for q in qualities:
            for s in sizes:
                try:
                    found.append(float(default_image_cost_calculator(model=model, quality=q, n=n, size=s)))
                except Exception:  # no price for this size and quality
                    continue
        if not found:
            return None
        prompt = math.ceil(_json_len(data.get("prompt") or "") / _CHARS_PER_TOKEN)
        text_price = float(info.get("input_cost_per_token") or 0.0)
        return usd_to_nano_ceil(max(found) + prompt * text_price)


def _priced_sizes(model: str) -> list[str | None]:
    """The sizes LiteLLM's price map lists for an image model (``1024-x-1536``...), or the default."""
    base = model.split("/")[-1]
    sizes = {key.split("/")[-2] for key in litellm.model_cost if key.endswith(f"/{base}") and "-x-" in key}
    return [s.replace("-x-", "x") for s in sorted(sizes)] or [None]


def _upload_bytes(data: Mapping[str, Any]) -> int:
    """Size of a transcription's uploaded file (the proxy hands it over as a file object)."""
    upload = data.get("file")
    if isinstance(upload, io.BytesIO):
        return upload.getbuffer().nbytes
    if isinstance(upload, (bytes, bytearray)):
        return len(upload)
    metadata = data.get("metadata")
    size_mb = metadata.get("file_size_in_mb") if isinstance(metadata, Mapping) else None
    return math.ceil(float(size_mb) * 1024 * 1024) if isinstance(size_mb, (int, float)) else 25 * 1024 * 1024


def _search_units(data: Mapping[str, Any]) -> int:
    raw = data.get("documents")
    documents: list[Any] = raw if isinstance(raw, list) else []
    chunks: int = sum(max(1, math.ceil(_json_len(d) / _CHARS_PER_TOKEN / _RERANK_CHUNK_TOKENS)) for d in documents)
    return max(1, math.ceil(chunks / _RERANK_DOCS_PER_SEARCH))


def conversation(data: Mapping[str, Any]) -> Sequence[Any]:
    """The request as the stages see it: its ``messages``, or, for a call without them (embeddings,
    speech, rerank...), one user message holding its inputs, so the breaker tells requests apart."""
    messages = data.get("messages")
    if isinstance(messages, list):
        return messages
    inputs = {k: data[k] for k in (*_TEXT_FIELDS, "query", "documents") if data.get(k) not in (None, "", [])}
    return [{"role": "user", "content": _text_of(inputs)}] if inputs else ()
