"""One table of the call types the proxy serves: where each keeps its metadata, how its worst case
is bounded, whether the cache and the router may touch it.

Every LiteLLM ``CallType`` the 1.108.7 proxy routes is in ``ROWS`` under one endpoint label (a
bounded set: it is a metric label and a report grouping). Vocabulary:

- ``route``: the proxy path the call type is served on. The metadata dict the proxy fills there is
  LiteLLM's own answer (``metadata_variable_name_for_route``): ``litellm_metadata`` on /v1/responses,
  /v1/messages, batches and files, ``metadata`` elsewhere. A request's own URL, when the proxy
  recorded it, wins over the table's route (pass-through routes vary).
- ``bound``: how the worst case is computed before the call (see ``estimates``):
  ``tokens`` (every billable input field + the output cap), ``embedding`` (input tokens, no
  output), ``image`` (LiteLLM's per-image price x size x quality x n), ``speech`` (characters),
  ``transcription`` (seconds of audio, from the upload's size), ``rerank`` (search units from the
  documents), ``free`` (reads and management calls no provider bills: no hold), ``unbounded``
  (cannot be bounded before the call: ``budget_settings.unbounded_calls`` decides).
- ``output_cap``: the request field that caps the output, where ``pricing.output_bound:
  inject_default`` writes its default; ``output_caps``: every field the route honours as a cap
  (chat takes ``max_tokens`` and ``max_completion_tokens``). A cap sent in a field the route does
  not honour (``max_tokens`` on /v1/responses: LiteLLM drops it, the provider writes up to its
  maximum) bounds nothing and is not read.
- ``cacheable`` / ``routable``: the semantic cache and the tier router only see chat completions.

An unknown call type is ``other``, bounded ``unbounded``: never silently unlimited.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlsplit

from litellm.proxy.litellm_pre_call_utils import metadata_variable_name_for_route

from costkit_litellm.context import MetadataKey

Bound = Literal["tokens", "embedding", "image", "speech", "transcription", "rerank", "free", "unbounded"]


@dataclass(frozen=True, slots=True)
class CallType:
    """One kind of call the proxy serves."""

    endpoint: str
    """Label in events, metrics and reports."""
    names: tuple[str, ...]
    """LiteLLM call type values (sync and async) served as this endpoint."""
    route: str
    """The proxy route it is served on (decides the metadata dict)."""
    bound: Bound
    output_cap: str | None = None
    cacheable: bool = False
    routable: bool = False
    output_caps: tuple[str, ...] = ()
    """The request fields this route passes to the provider as an output cap."""

    @property
    def metadata_key(self) -> MetadataKey:
        """The dict the proxy fills with its metadata on this route."""
        return metadata_variable_name_for_route(self.route)

    @property
    def billable(self) -> bool:
        """A provider may bill this call."""
        return self.bound != "free"

    @property
    def priced_by_deployment(self) -> bool:
        """A deployment's model serves this call and LiteLLM prices it by that provider and model."""
        return self.bound not in ("free", "unbounded")


def _pair(*names: str) -> tuple[str, ...]:
    """Each name and its async twin (``a`` + name), as LiteLLM spells them."""
    return tuple(n for name in names for n in (name, f"a{name}"))


ROWS: tuple[CallType, ...] = (
    CallType(
        "chat",
        _pair("completion"),
        "/v1/chat/completions",
        "tokens",
        "max_tokens",
        True,
        True,
        output_caps=("max_completion_tokens", "max_tokens"),
    ),
    CallType(
        "text_completion",
        _pair("text_completion"),
        "/v1/completions",
        "tokens",
        "max_tokens",
        output_caps=("max_tokens",),
    ),
    CallType(
        "responses",
        _pair("responses"),
        "/v1/responses",
        "tokens",
        "max_output_tokens",
        output_caps=("max_output_tokens",),
    ),
    CallType(
        "messages", _pair("anthropic_messages"), "/v1/messages", "tokens", "max_tokens", output_caps=("max_tokens",)
    ),
    CallType("embeddings", _pair("embedding"), "/v1/embeddings", "embedding"),
    CallType("moderation", _pair("moderation"), "/v1/moderations", "embedding"),
    CallType("image_generation", _pair("image_generation"), "/v1/images/generations", "image"),
    CallType("image_edit", _pair("image_edit"), "/v1/images/edits", "image"),
    CallType("image_variation", _pair("image_variation"), "/v1/images/variations", "image"),
    CallType("speech", _pair("speech"), "/v1/audio/speech", "speech"),
    CallType("transcription", _pair("transcription"), "/v1/audio/transcriptions", "transcription"),
    CallType("rerank", _pair("rerank"), "/v1/rerank", "rerank"),
    CallType("batches", _pair("create_batch"), "/v1/batches", "unbounded"),
    CallType("batches_read", _pair("retrieve_batch", "cancel_batch", "list_batches"), "/v1/batches", "free"),
    CallType(
        "files",
        _pair("create_file", "file_retrieve", "file_delete", "file_list", "file_content"),
        "/v1/files",
        "free",
    ),
    CallType(
        "responses_read",
        (*_pair("get_responses", "delete_responses", "cancel_responses"), "alist_input_items"),
        "/v1/responses",
        "free",
    ),
    CallType("responses_compact", _pair("compact_responses"), "/v1/responses", "unbounded"),
    CallType("pass_through", ("pass_through_endpoint", *_pair("llm_passthrough_route")), "/", "unbounded"),
    CallType(
        "realtime",
        (
            "_arealtime",
            "_aresponses_websocket",
            "acreate_realtime_client_secret",
            "arealtime_calls",
            "acreate_realtime_transcription_session",
        ),
        "/v1/realtime",
        "unbounded",
    ),
    CallType("fine_tuning", _pair("create_fine_tuning_job"), "/v1/fine_tuning/jobs", "unbounded"),
    CallType(
        "fine_tuning_read",
        _pair("cancel_fine_tuning_job", "list_fine_tuning_jobs", "retrieve_fine_tuning_job"),
        "/v1/fine_tuning/jobs",
        "free",
    ),
    CallType(
        "video",
        _pair("video_generation", "video_remix", "video_edit", "video_extension", "create_video"),
        "/v1/videos",
        "unbounded",
    ),
    CallType("search", _pair("search", "vector_store_search"), "/v1/search", "unbounded"),
    CallType("ocr", _pair("ocr"), "/v1/ocr", "unbounded"),
    CallType("generate_content", _pair("generate_content", "generate_content_stream"), "/v1beta/models", "unbounded"),
    CallType("assistants", _pair("run_thread", "run_thread_stream"), "/v1/threads", "unbounded"),
    CallType(
        "video_read",
        _pair("video_content", "video_list", "video_status", "video_retrieve", "video_get_character")
        + _pair("video_create_character", "video_delete"),
        "/v1/videos",
        "free",
    ),
    CallType(
        "vector_stores",
        _pair("vector_store_create", "vector_store_retrieve", "vector_store_list", "vector_store_update")
        + _pair("vector_store_delete", "vector_store_file_create", "vector_store_file_list")
        + _pair("vector_store_file_retrieve", "vector_store_file_content", "vector_store_file_update")
        + _pair("vector_store_file_delete"),
        "/v1/vector_stores",
        "free",
    ),
    CallType("containers", _pair("create_container", "upload_container_file"), "/v1/containers", "unbounded"),
    CallType(
        "containers_read",
        _pair("list_containers", "retrieve_container", "delete_container", "list_container_files")
        + _pair("retrieve_container_file_content"),
        "/v1/containers",
        "free",
    ),
    CallType("evals", _pair("create_eval", "create_run"), "/v1/evals", "unbounded"),
    CallType(
        "evals_read",
        _pair("get_eval", "list_evals", "update_eval", "delete_eval", "cancel_eval")
        + _pair("get_run", "list_runs", "cancel_run", "delete_run"),
        "/v1/evals",
        "free",
    ),
    CallType("interactions", _pair("create_interaction"), "/v1beta/interactions", "unbounded"),
    CallType(
        "interactions_read",
        _pair("get_interaction", "delete_interaction", "cancel_interaction"),
        "/v1beta/interactions",
        "free",
    ),
    CallType("a2a", _pair("send_message"), "/a2a", "unbounded"),
    CallType(
        "agents_admin",
        _pair("create_agent", "get_agent", "delete_agent", "list_agents", "list_agent_versions"),
        "/v1/agents",
        "free",
    ),
    CallType("skills", _pair("create_skill", "list_skills", "get_skill", "delete_skill"), "/v1/skills", "free"),
    CallType("decisions", _pair("decisions", "systemone"), "/v1/decisions", "unbounded"),
    CallType("guardrails", ("apply_guardrail",), "/guardrails/apply_guardrail", "free"),
    CallType("mcp", ("call_mcp_tool", "list_mcp_tools"), "/mcp", "free"),
)
UNKNOWN = CallType("other", (), "/", "unbounded")
"""A call type the table does not know: held (or refused) under a budget like any unbounded call."""
_BY_NAME: Mapping[str, CallType] = {name: row for row in ROWS for name in row.names}
ENDPOINTS: tuple[str, ...] = (*dict.fromkeys(row.endpoint for row in ROWS), UNKNOWN.endpoint)
"""Every endpoint label (the bounded set a metric label takes)."""


def call_type(name: Any) -> CallType:
    """The row of a LiteLLM call type (a ``CallTypes`` member or its value); ``other`` when unknown."""
    value = getattr(name, "value", name)
    return _BY_NAME.get(str(value), UNKNOWN) if value is not None else UNKNOWN


def metadata_key(data: Mapping[str, Any], row: CallType) -> MetadataKey:
    """The metadata dict of this request: by the URL the proxy recorded, else by the row's route."""
    server = data.get("proxy_server_request")
    url = server.get("url") if isinstance(server, Mapping) else None
    if isinstance(url, str) and url:
        if len(url) > _REMEMBERED_URL_CHARS:  # a long URL (a client's query string) is not remembered
            return _metadata_key_of_url(url)
        return _metadata_key_for_url(url)
    return row.metadata_key


_REMEMBERED_URL_CHARS = 256
"""URLs up to this long are remembered (at most 1,024 of them: a quarter of a megabyte at worst)."""


def _metadata_key_of_url(url: str) -> MetadataKey:
    """LiteLLM's metadata dict for a request URL (by its path)."""
    return metadata_variable_name_for_route(urlsplit(url).path)


_metadata_key_for_url = functools.lru_cache(maxsize=1024)(_metadata_key_of_url)
"""``_metadata_key_of_url`` remembered: the same few URLs come with every request."""


CHAT = ROWS[0]
"""Chat completions: what the pack assumes outside the proxy (``Router.acompletion`` in application code)."""
