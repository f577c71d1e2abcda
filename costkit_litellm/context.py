"""``RequestContext``: who asked, for what, with which parameters; parsed once per request.

Two entry points share one builder: ``from_request`` reads LiteLLM's pre-call ``data`` (proxy
hook, or the kwargs of ``Router.acompletion`` in application code) and is strict (malformed
metadata raises ``BadRequestMetadata``, a 400); ``from_logging_payload`` reads the
``standard_logging_object`` of a success/failure callback and is lenient (the call already
happened: bad values are dropped, never raised). Neither imports litellm: they read plain dicts.

Identity fields come from the authenticated API key (``user_api_key_*`` set by the proxy); the
client-declared ``user_id`` metadata overrides the key's user; team is taken from the key only,
so a client cannot claim another team's scope.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal

from costkit_litellm.config import RequestConfig
from costkit_litellm.errors import BadRequestMetadata

log = logging.getLogger(__name__)

_EMPTY: Mapping[str, str] = MappingProxyType({})
# LiteLLM's placeholder user for the master key: not a real user.
_PLACEHOLDER_USERS = frozenset({"default_user_id", ""})
# Client metadata keys that are structure, not attributes.
_NOT_ATTRIBUTES = frozenset(
    {"tags", "headers", "session_id", "requester_metadata", "used_client_oauth_token", "costkit", "cache"}
)


OUTPUT_CAPS = ("max_completion_tokens", "max_output_tokens", "max_tokens")
"""Request fields that cap the output (chat's two, the Responses API's)."""


@dataclass(frozen=True, slots=True)
class SamplingParams:
    """The request parameters that change what an answer can be (cache scope, cost estimate)."""

    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = None
    """The request's output cap: ``max_completion_tokens``, ``max_output_tokens`` or ``max_tokens``."""
    n: int = 1
    stop: tuple[str, ...] = ()
    seed: int | None = None
    response_format: str | None = None
    """Canonical JSON of ``response_format``."""
    tools: str | None = None
    """Canonical JSON of ``tools`` / ``functions`` (None when the request has none)."""
    tool_choice: str | None = None
    stream: bool = False


@dataclass(frozen=True, slots=True)
class RequestContext:
    """Everything the pipeline needs to know about one request, as small typed values."""

    call_id: str | None
    """The pack's own request id (uuid4, assigned in the pre-call step): reservations, ledger
    entries and cache entries use it. Never the client's."""
    model: str
    """The model the client asked for (a model group name, or the virtual model)."""
    api_key_hash: str | None = None
    api_key_alias: str | None = None
    user_id: str | None = None
    """The key's user, unless the client sent ``metadata.user_id`` (which overrides it)."""
    key_user_id: str | None = None
    """The authenticated key's user only (LiteLLM's ``user_api_key_user_id``): what ``identity:
    authenticated`` budgets on ``user`` use; a client cannot set it."""
    team_id: str | None = None
    end_user: str | None = None
    """OpenAI's ``user`` field: the application's end user."""
    tags: tuple[str, ...] = ()
    attributes: Mapping[str, str] = field(default_factory=lambda: _EMPTY)
    """``key:value`` tags and plain client metadata keys (``feature`` -> ``email_writer``)."""
    session_id: str | None = None
    params: SamplingParams = field(default_factory=SamplingParams)
    client_call_id: str | None = None
    """The client's ``litellm_call_id`` / ``x-litellm-call-id``: a label of the usage event only."""
    no_cache: bool = False
    """The client asked not to use the cache (``Cache-Control: no-cache``/``no-store``, header
    ``x-costkit-cache: off``, or metadata ``cache: false``)."""
    endpoint: str = "chat"
    """What kind of call this is (a bounded label from the adapter's table of call types:
    ``chat``, ``text_completion``, ``responses``, ``messages``, ``embeddings``, ``other``...)."""
    request_params: Mapping[str, Any] = field(default_factory=lambda: _EMPTY, compare=False, repr=False)
    """The request's top-level parameters as sent, read-only, ``messages`` aside (the cache keys on every
    one but a short allow-list); empty when rebuilt after the call."""

    def scope_value(self, scope: str, identity: str = "any") -> str | None:
        """The value of a scope (``global``, ``api_key``, ``user``, ``team``, ``end_user``,
        ``tag:<key>``) for this request, or None when the request has none. With ``identity``
        ``authenticated`` only what the key carries counts: ``user`` is the key's user, never the
        client's ``metadata.user_id``, and the client-asserted ``end_user`` and tags have no value."""
        authenticated = identity == "authenticated"
        if scope == "global":
            return "*"
        if scope == "api_key":
            return self.api_key_hash
        if scope == "user":
            return self.key_user_id if authenticated else self.user_id
        if authenticated and (scope == "end_user" or scope.startswith("tag:")):
            return None
        if scope == "team":
            return self.team_id
        if scope == "end_user":
            return self.end_user
        if scope.startswith("tag:"):
            return self.attributes.get(scope[4:])
        raise ValueError(f"unknown scope {scope!r}")

    def to_json(self) -> dict[str, Any]:
        """A JSON-safe dict (stashed in request metadata to reach the logging callbacks)."""
        return {
            "call_id": self.call_id,
            "model": self.model,
            "api_key_hash": self.api_key_hash,
            "api_key_alias": self.api_key_alias,
            "user_id": self.user_id,
            "key_user_id": self.key_user_id,
            "team_id": self.team_id,
            "end_user": self.end_user,
            "tags": list(self.tags),
            "attributes": dict(self.attributes),
            "session_id": self.session_id,
            "endpoint": self.endpoint,
            "client_call_id": self.client_call_id,
        }


class _Reader:
    """Collects values under the request limits; strict mode raises, lenient mode drops."""

    def __init__(self, limits: RequestConfig, strict: bool) -> None:
        self.limits = limits
        self.strict = strict

    def fail(self, message: str) -> None:
        if self.strict:
            raise BadRequestMetadata(message)
        log.warning("costkit: ignoring malformed request metadata: %s", message)

    def text(self, value: Any, where: str) -> str | None:
        """A short identifier-like string (ids, session ids, attribute values)."""
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            self.fail(f"{where} must be a string, got {type(value).__name__}")
            return None
        text = str(value)
        if len(text) > self.limits.max_value_length:
            self.fail(f"{where} is {len(text)} characters long (the limit is {self.limits.max_value_length})")
            return None
        return text or None

    def tags(self, sources: Iterable[tuple[str, Any]]) -> tuple[str, ...]:
        seen: dict[str, None] = {}
        for where, value in sources:
            if value is None:
                continue
            if isinstance(value, str):
                items: Sequence[Any] = [t.strip() for t in value.split(",") if t.strip()]
            elif isinstance(value, (list, tuple)):
                items = value
            else:
                self.fail(f"{where} must be a list of strings, got {type(value).__name__}")
                continue
            if len(items) > self.limits.max_tags:
                self.fail(f"{where} has {len(items)} tags (the limit is {self.limits.max_tags})")
                items = items[: self.limits.max_tags]
            for i, tag in enumerate(items):
                if not isinstance(tag, str):
                    self.fail(f"{where}[{i}] must be a string, got {type(tag).__name__}")
                    continue
                text = self.text(tag, f"{where}[{i}]")
                if text is not None:
                    seen[text] = None
        tags = tuple(seen)
        if len(tags) > self.limits.max_tags:
            self.fail(f"the request has {len(tags)} distinct tags (the limit is {self.limits.max_tags})")
            tags = tags[: self.limits.max_tags]
        return tags

    def attributes(self, tags: Sequence[str], metadata: Mapping[str, Any]) -> Mapping[str, str]:
        found: dict[str, str] = {}
        for tag in tags:
            key, sep, value = tag.partition(":")
            if sep and key and value:
                found[key.strip()] = value.strip()
        extra = 0
        for key, value in metadata.items():
            if not isinstance(key, str) or key in _NOT_ATTRIBUTES or key.startswith("user_api_key"):
                continue
            if value is None or isinstance(value, (dict, list, tuple, bool)):
                continue
            if len(found) >= self.limits.max_attributes and key not in found:
                extra += 1
                continue
            text = self.text(value, f"metadata.{key}")
            if text is not None:
                found[key] = text
        if extra:
            log.warning("costkit: ignored %d metadata keys beyond max_attributes", extra)
        return MappingProxyType(found)


def _canonical(value: Any) -> str | None:
    if value is None:
        return None
    try:
        return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    except (TypeError, ValueError):
        return repr(value)


def _int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():  # inf and nan are not integers
        return int(value)
    return None


def _float(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


MAX_INT_PARAM = 2**31 - 1
"""The largest ``max_tokens`` / ``n`` the pack accepts: the int32 range of the providers' APIs (none bills more)."""
_BOUNDED_INTS = ("max_tokens", "max_completion_tokens", "max_output_tokens", "n")


def check_params(data: Mapping[str, Any]) -> None:
    """Raise ``BadRequestMetadata`` naming a count parameter too large to estimate a cost for.

    Odd values of other types are accepted as the proxy accepts them (a string ``max_tokens`` is
    read as no limit, a ``stop`` that is not a string or a list of strings as no stop sequence):
    the estimate then assumes the largest output, and the raw value is still part of the cache key.
    """
    for name in _BOUNDED_INTS:
        value = _int(data.get(name))
        if value is not None and value > MAX_INT_PARAM:
            raise BadRequestMetadata(f"{name} must be at most {MAX_INT_PARAM}, got {value}")


def _stops(stop: Any) -> tuple[str, ...]:
    if isinstance(stop, str):
        return (stop,)
    if isinstance(stop, (list, tuple)):
        return tuple(s for s in stop if isinstance(s, str))
    return ()  # a number, a boolean or an object is not a stop sequence


def output_cap(data: Mapping[str, Any], honoured: Sequence[str] = OUTPUT_CAPS) -> int | None:
    """The output cap a request bounds its answer by, or None (unbounded).

    A cap counts only when the route passes it on: one of ``honoured`` at the top level, or any cap in
    ``extra_body`` (the SDKs merge it into the body over the top-level keys, and LiteLLM's Responses
    bridge lifts it there). Then every cap the request sets, wherever, is a candidate and the largest
    is the bound (a bridged deployment honours ``max_output_tokens`` on chat, for one); one that is
    not a positive whole number (``"4000"``, ``0``, ``2.5``) leaves the request unbounded, since a
    lenient provider may read it as something larger."""
    extra = data.get("extra_body")
    extra = extra if isinstance(extra, Mapping) else _EMPTY
    present = [v for v in (*(data.get(k) for k in OUTPUT_CAPS), *(extra.get(k) for k in OUTPUT_CAPS)) if v is not None]
    if not present:
        return None
    values = [_int(v) for v in present]
    if any(v is None or v <= 0 for v in values):
        return None
    if not any(data.get(k) is not None for k in honoured) and not any(extra.get(k) is not None for k in OUTPUT_CAPS):
        return None
    return max(v for v in values if v is not None)


def sampling_params(data: Mapping[str, Any], output_caps: Sequence[str] = OUTPUT_CAPS) -> SamplingParams:
    """The sampling parameters of an OpenAI-style request body (lenient: odd values are dropped, never raised);
    ``output_caps``: the fields the route honours as an output cap (the others cap nothing)."""
    stops = _stops(data.get("stop"))
    tools = data.get("tools") or data.get("functions")
    max_tokens = output_cap(data, output_caps)
    return SamplingParams(
        temperature=_float(data.get("temperature")),
        top_p=_float(data.get("top_p")),
        max_tokens=max_tokens,
        n=max(1, _int(data.get("n")) or 1),
        stop=stops,
        seed=_int(data.get("seed")),
        response_format=_canonical(data.get("response_format")),
        tools=_canonical(tools) if tools else None,
        tool_choice=_canonical(data.get("tool_choice")),
        stream=data.get("stream") is True,
    )


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else _EMPTY


MetadataKey = Literal["metadata", "litellm_metadata"]


def request_metadata(data: Mapping[str, Any], key: MetadataKey = "metadata") -> Mapping[str, Any]:
    """The dict the proxy keeps its own metadata in for this route (``metadata``, or
    ``litellm_metadata`` on /v1/responses, /v1/messages, batches, files: the adapter's table of
    call types says which); empty if none. Never guessed: on ``litellm_metadata`` routes
    ``metadata`` is the client's own (forwarded to the provider)."""
    value = data.get(key)
    return value if isinstance(value, Mapping) else _EMPTY


def client_metadata(data: Mapping[str, Any], key: MetadataKey = "metadata") -> Mapping[str, Any]:
    """What the client sent as metadata: the proxy's copy (``requester_metadata``) when it kept
    one, else the request's own ``metadata`` on routes where the proxy keeps its metadata apart."""
    metadata = request_metadata(data, key)
    if "requester_metadata" in metadata:
        return _mapping(metadata.get("requester_metadata"))
    if key == "litellm_metadata":
        return _mapping(data.get("metadata"))
    return metadata


def _header(headers: Mapping[str, Any], name: str) -> Any:
    wanted = name.lower()
    for key, value in headers.items():
        if isinstance(key, str) and key.lower() == wanted:
            return value
    return None


def _user(reader: _Reader, client: Mapping[str, Any], key_user: Any) -> str | None:
    declared = reader.text(client.get("user_id"), "metadata.user_id")
    if declared is not None:
        return declared
    return _key_user(key_user)


def _key_user(key_user: Any) -> str | None:
    """The authenticated key's user id (LiteLLM's placeholder for keys without one is no user)."""
    if isinstance(key_user, str) and key_user not in _PLACEHOLDER_USERS:
        return key_user
    return None


def from_request(
    data: Mapping[str, Any],
    limits: RequestConfig | None = None,
    metadata_key: MetadataKey = "metadata",
    endpoint: str = "chat",
    output_caps: Sequence[str] = OUTPUT_CAPS,
) -> RequestContext:
    """Parse LiteLLM's pre-call request ``data``; raises ``BadRequestMetadata`` on bad metadata.

    ``metadata_key`` names the dict the proxy fills on this route; ``endpoint`` is the call type's
    label (``chat``, ``responses``, ``embeddings``...); ``output_caps`` the fields the route honours
    as an output cap; all from the adapter's table of call types.
    """
    reader = _Reader(limits or RequestConfig(), strict=True)
    check_params(data)
    metadata = request_metadata(data, metadata_key)
    # On the proxy, what the client sent is kept apart from what the proxy added.
    client = client_metadata(data, metadata_key)
    headers = _mapping(metadata.get("headers")) or _mapping(_mapping(data.get("proxy_server_request")).get("headers"))
    tag_header = _header(headers, "x-litellm-tags")
    tags = reader.tags(
        [  # the proxy copies the x-litellm-tags header into metadata.tags: name both
            ("metadata.tags" if tag_header is None else "metadata.tags (or x-litellm-tags)", metadata.get("tags")),
            ("tags", data.get("tags")),
            ("x-litellm-tags", tag_header),
        ]
    )
    session = (
        reader.text(_header(headers, reader.limits.session_header), reader.limits.session_header)
        or reader.text(data.get("litellm_session_id"), "litellm_session_id")
        or reader.text(data.get("session_id"), "session_id")
        or reader.text(client.get("session_id"), "metadata.session_id")
    )
    end_user = reader.text(data.get("user"), "user") or reader.text(
        metadata.get("user_api_key_end_user_id"), "the end user id (user, or metadata.user_id)"
    )
    call_id = data.get("litellm_call_id")
    return RequestContext(
        call_id=call_id if isinstance(call_id, str) else None,
        model=str(data.get("model") or ""),
        api_key_hash=reader.text(metadata.get("user_api_key_hash"), "api key hash"),
        api_key_alias=reader.text(metadata.get("user_api_key_alias"), "api key alias"),
        user_id=_user(reader, client, metadata.get("user_api_key_user_id")),
        key_user_id=_key_user(metadata.get("user_api_key_user_id")),
        team_id=reader.text(metadata.get("user_api_key_team_id"), "team id"),
        end_user=end_user,
        tags=tags,
        attributes=reader.attributes(tags, client),
        session_id=session,
        params=sampling_params(data, output_caps),
        no_cache=_no_cache(headers, client),
        endpoint=endpoint,
        request_params=MappingProxyType({k: v for k, v in data.items() if k != "messages"}),
    )


def _no_cache(headers: Mapping[str, Any], metadata: Mapping[str, Any]) -> bool:
    control = str(_header(headers, "cache-control") or "").lower()
    if "no-cache" in control or "no-store" in control:
        return True
    if str(_header(headers, "x-costkit-cache") or "").lower() in ("off", "no", "false", "0"):
        return True
    flag = metadata.get("cache")
    return flag is False or (isinstance(flag, str) and flag.lower() in ("false", "off", "no"))


def from_logging_payload(
    payload: Mapping[str, Any], limits: RequestConfig | None = None, endpoint: str = "chat"
) -> RequestContext:
    """Parse a ``standard_logging_object``; lenient, never raises on bad metadata."""
    reader = _Reader(limits or RequestConfig(), strict=False)
    metadata = _mapping(payload.get("metadata"))
    client = _mapping(metadata.get("requester_metadata"))
    custom_headers = _mapping(metadata.get("requester_custom_headers")) or _mapping(client.get("headers"))
    tags = reader.tags([("request_tags", payload.get("request_tags"))])
    session = (
        reader.text(_header(custom_headers, reader.limits.session_header), "session header")
        or reader.text(payload.get("session_id"), "session_id")
        or reader.text(client.get("session_id"), "metadata.session_id")
    )
    params = _mapping(payload.get("model_parameters"))
    call_id = payload.get("litellm_call_id")
    return RequestContext(
        call_id=call_id if isinstance(call_id, str) else None,
        model=str(payload.get("model_group") or payload.get("model") or ""),
        api_key_hash=reader.text(metadata.get("user_api_key_hash"), "api key hash"),
        api_key_alias=reader.text(metadata.get("user_api_key_alias"), "api key alias"),
        user_id=_user(reader, client, metadata.get("user_api_key_user_id")),
        key_user_id=_key_user(metadata.get("user_api_key_user_id")),
        team_id=reader.text(metadata.get("user_api_key_team_id"), "team id"),
        end_user=reader.text(payload.get("end_user"), "end_user"),
        tags=tags,
        attributes=reader.attributes(tags, client),
        session_id=session,
        params=sampling_params(params),
        endpoint=endpoint,
    )


def from_json(raw: Mapping[str, Any], params: SamplingParams | None = None) -> RequestContext:
    """Rebuild a context stashed with ``RequestContext.to_json``."""
    attributes = raw.get("attributes")
    return RequestContext(
        call_id=raw.get("call_id"),
        model=str(raw.get("model") or ""),
        api_key_hash=raw.get("api_key_hash"),
        api_key_alias=raw.get("api_key_alias"),
        user_id=raw.get("user_id"),
        key_user_id=raw.get("key_user_id"),
        team_id=raw.get("team_id"),
        end_user=raw.get("end_user"),
        tags=tuple(raw.get("tags") or ()),
        attributes=MappingProxyType(dict(attributes) if isinstance(attributes, Mapping) else {}),
        session_id=raw.get("session_id"),
        client_call_id=raw.get("client_call_id"),
        params=params or SamplingParams(),
        endpoint=str(raw.get("endpoint") or "chat"),
    )
