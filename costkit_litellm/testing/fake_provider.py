"""A small local OpenAI-compatible provider for tests, demos and benchmarks.

It stands in for what no test can reach (an LLM provider on the internet) and
nothing else: it answers ``POST /v1/chat/completions`` (JSON, or SSE when
``stream: true``), ``/v1/completions``, ``/v1/responses`` (JSON or SSE),
``/v1/embeddings``, ``/v1/images/generations``, ``/v1/audio/speech``,
``/v1/audio/transcriptions``, ``/v1/moderations``, ``/v1/rerank`` (Cohere's
shape) and ``GET /v1/models`` with deterministic content, configurable latency,
token counts and failures, and it counts what it served (``GET /_stats``, reset
with ``POST /_stats/reset``).

It bills like a real provider (see ``fake_billing``): input tokens from every
billable field, output up to the request's cap (all of it with
``fill_output=True``, and then up to ``max_output_tokens`` when the request sets
no cap), reasoning tokens as output, and the ``service_tier`` asked for echoed
back. Each answered request's usage is kept in ``RecordedRequest.usage``.

Per-request overrides (headers, e.g. set through a deployment's
``litellm_params.extra_headers``):

- ``x-fake-latency-ms``: latency of this request, in milliseconds.
- ``x-fake-chunk-delay-ms``: pause between the chunks of a streamed chat answer (a slow stream).
- ``x-fake-abort-after-chunks``: break a streamed chat answer off after this many content chunks
  (the connection is dropped: no finish reason, no usage, no ``[DONE]``); the whole answer is still
  billed, as a provider bills what it generated.
- ``x-fake-fail``: answer with this HTTP status (429, 500, or 400: OpenAI's context-length error) instead.
- ``x-fake-reply``: reply with this content.
- ``x-fake-tool-call``: answer a request that offers tools with a call to its
  first tool with these JSON arguments (what a looping agent sees).

It does not import litellm. Use it from sync or async tests alike, since it
serves from a background thread with its own event loop::

    with FakeProvider(latency_s=0.05, failure_rate=0.1, seed=7) as provider:
        ...  # point a deployment's api_base at provider.base_url

Or run it by hand: ``python -m costkit_litellm.testing.fake_provider --port 8099``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import collections
import hashlib
import json
import math
import random
import signal
import socket
import struct
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from aiohttp import web

from costkit_litellm.testing.fake_billing import estimate_tokens, output_cap, prompt_tokens
from costkit_litellm.testing.fake_endpoints import FakeEndpoints

_LATENCY_KEY = web.RequestKey("fake_latency_s", float)

__all__ = ["FakeProvider", "RecordedRequest"]

DEFAULT_MODELS = ("gpt-4o-mini", "gpt-4o", "text-embedding-3-small")

_ERROR_BODIES: dict[int, dict[str, Any]] = {
    400: {  # what LiteLLM maps to ContextWindowExceededError (context_window_fallbacks then apply)
        "message": "This model's maximum context length is 128000 tokens. However, your messages resulted in "
        "130000 tokens. Please reduce the length of the messages.",
        "type": "invalid_request_error",
        "param": "messages",
        "code": "context_length_exceeded",
    },
    429: {
        "message": "Rate limit reached for requests (fake provider).",
        "type": "requests",
        "param": None,
        "code": "rate_limit_exceeded",
    },
    500: {
        "message": "The server had an error while processing your request (fake provider).",
        "type": "server_error",
        "param": None,
        "code": None,
    },
}


@dataclass(frozen=True)
class RecordedRequest:
    """One request the fake provider received."""

    path: str
    """URL path, e.g. ``/v1/chat/completions``."""
    headers: Mapping[str, str]
    """Request headers, names lower-cased."""
    body: Any
    """Parsed JSON body (``None`` for GET)."""
    status: int
    """HTTP status the provider answered with."""
    latency_s: float
    """Latency applied before answering (configured, or from ``x-fake-latency-ms``)."""
    usage: Mapping[str, Any] | None = None
    """What this request was billed: ``prompt_tokens``, ``completion_tokens``, ``reasoning_tokens``,
    ``service_tier``, ``characters`` (speech), ``seconds`` (transcription), ``images``, ``searches``
    (rerank); None for failures and GETs."""


@dataclass
class _Stats:
    """Counters, guarded by ``FakeProvider._lock`` (read from other threads)."""

    by_path: collections.Counter[str] = field(default_factory=collections.Counter)
    by_status: collections.Counter[int] = field(default_factory=collections.Counter)
    streams: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0

    def as_json(self) -> dict[str, Any]:
        return {
            "requests": sum(self.by_path.values()),
            "by_path": dict(self.by_path),
            "by_status": {str(k): v for k, v in sorted(self.by_status.items())},
            "chat_completions": self.by_path["/v1/chat/completions"],
            "embeddings": self.by_path["/v1/embeddings"],
            "streams": self.streams,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
        }


def fake_embedding(text: str, dimensions: int) -> list[float]:
    """A deterministic unit vector derived from a hash of ``text``."""
    values: list[float] = []
    block = 0
    while len(values) < dimensions:
        digest = hashlib.sha256(f"{block}:{text}".encode()).digest()
        values.extend((b / 127.5) - 1.0 for b in digest)
        block += 1
    values = values[:dimensions]
    norm = math.sqrt(sum(v * v for v in values)) or 1.0
    return [v / norm for v in values]


def _message_text(messages: Any) -> str:
    """All text of a chat request's messages, joined (content parts included)."""
    parts: list[str] = []
    for message in messages if isinstance(messages, list) else []:
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, str):
            parts.append(content)
        elif isinstance(content, list):
            parts.extend(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return "\n".join(parts)


def _last_user_text(messages: Any) -> str:
    for message in reversed(messages if isinstance(messages, list) else []):
        if isinstance(message, dict) and message.get("role") == "user":
            return _message_text([message])
    return ""


class FakeProvider:
    """An OpenAI-compatible HTTP server on 127.0.0.1, in a background thread."""

    def __init__(
        self,
        *,
        port: int = 0,
        latency_s: float = 0.0,
        failure_rate: float = 0.0,
        failure_statuses: Sequence[int] = (429, 500),
        seed: int = 0,
        prompt_tokens: int | None = None,
        completion_tokens: int | None = None,
        reply: str | None = None,
        reply_json: Any = None,
        embedding_dim: int = 16,
        models: Sequence[str] = DEFAULT_MODELS,
        record_limit: int = 1000,
        fill_output: bool = False,
        max_output_tokens: int = 16_384,
        reasoning_tokens: int = 0,
        image_tokens: int = 765,
        tool_arguments: Any = None,
    ) -> None:
        """Configure the provider; nothing runs until :meth:`start`.

        ``reply`` fixes the content; ``reply_json`` replies with that value
        serialised as JSON; with neither, the reply echoes a summary of the
        last user message. Token counts are estimated (~len/4) unless fixed.
        ``failure_rate`` of the POST requests fail with a status drawn from
        ``failure_statuses``; the draws come from ``random.Random(seed)``, so N
        requests always produce the same failure counts.

        Billing: input tokens are counted over every billable field
        (``image_tokens`` per image part) unless ``prompt_tokens`` fixes them.
        ``fill_output`` writes the whole output cap, or ``max_output_tokens``
        (the model's own maximum) when the request sets no cap; otherwise the
        output is the reply's tokens (or ``completion_tokens``) plus
        ``reasoning_tokens``, cut at the cap. ``tool_arguments`` (JSON-able)
        makes every request that offers tools answer with a call to its first
        tool with these arguments.
        """
        if not 0.0 <= failure_rate <= 1.0:
            raise ValueError(f"failure_rate must be within [0, 1], got {failure_rate}")
        if unknown := set(failure_statuses) - set(_ERROR_BODIES):
            raise ValueError(f"unsupported failure statuses: {sorted(unknown)}")
        self._port = port
        self.latency_s = latency_s
        self.failure_rate = failure_rate
        self.failure_statuses = tuple(failure_statuses)
        self.seed = seed
        self.prompt_tokens = prompt_tokens
        self.completion_tokens = completion_tokens
        self.reply = reply
        self.reply_json = reply_json
        self.embedding_dim = embedding_dim
        self.models = tuple(models)
        self.fill_output = fill_output
        self.max_output_tokens = max_output_tokens
        self.reasoning_tokens = reasoning_tokens
        self.image_tokens = image_tokens
        self.tool_arguments = tool_arguments
        self._lock = threading.Lock()
        self._rng = random.Random(seed)
        self._stats = _Stats()
        self._recorded: collections.deque[RecordedRequest] = collections.deque(maxlen=record_limit)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None

    # -- lifecycle ---------------------------------------------------------

    @property
    def port(self) -> int:
        """The bound port (after :meth:`start`)."""
        if self._runner is None:
            raise RuntimeError("FakeProvider is not started")
        return self._port

    @property
    def root_url(self) -> str:
        """``http://127.0.0.1:PORT``, where ``/_stats`` lives."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        """OpenAI-style base URL, ``http://127.0.0.1:PORT/v1``."""
        return f"{self.root_url}/v1"

    def start(self, timeout_s: float = 10.0) -> FakeProvider:
        """Bind the port and serve from a background thread; returns self."""
        if self._thread is not None:
            raise RuntimeError("FakeProvider already started")
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, name="fake-provider", daemon=True)
        thread.start()
        self._loop, self._thread = loop, thread
        try:
            asyncio.run_coroutine_threadsafe(self._serve(), loop).result(timeout_s)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop serving and join the thread; safe to call twice."""
        loop, thread, runner = self._loop, self._thread, self._runner
        self._loop = self._thread = self._runner = None
        if loop is None or thread is None:
            return
        try:
            if runner is not None:
                asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(timeout_s)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout_s)
            if not thread.is_alive():
                loop.close()

    def __enter__(self) -> FakeProvider:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    async def _serve(self) -> None:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_post("/v1/embeddings", self._embeddings)
        extra = FakeEndpoints(self)
        app.router.add_post("/v1/completions", extra.completions)
        app.router.add_post("/v1/responses", extra.responses)
        app.router.add_post("/v1/images/generations", extra.images)
        app.router.add_post("/v1/audio/speech", extra.speech)
        app.router.add_post("/v1/audio/transcriptions", extra.transcription)
        app.router.add_post("/v1/moderations", extra.moderation)
        app.router.add_post("/v1/rerank", extra.rerank)
        app.router.add_post("/v2/rerank", extra.rerank)
        app.router.add_get("/v1/models", self._models)
        app.router.add_get("/_stats", self._get_stats)
        app.router.add_post("/_stats/reset", self._reset_stats)
        # Cancel handlers whose client went away, and do not wait long for
        # sleeping ones at shutdown: a latency must never delay stop().
        runner = web.AppRunner(app, access_log=None, handler_cancellation=True, shutdown_timeout=0.5)
        await runner.setup()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self._port))
        self._port = sock.getsockname()[1]
        await web.SockSite(runner, sock).start()
        self._runner = runner

    # -- stats -------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """Counts served so far (same shape as ``GET /_stats``)."""
        with self._lock:
            return self._stats.as_json()

    def reset(self) -> None:
        """Zero the counters, forget recorded requests and re-seed the failure draws."""
        with self._lock:
            self._stats = _Stats()
            self._recorded.clear()
            self._rng = random.Random(self.seed)

    def recorded(self) -> list[RecordedRequest]:
        """The most recent requests received (up to ``record_limit``), oldest first."""
        with self._lock:
            return list(self._recorded)

    def _record(self, request: web.Request, body: Any, status: int, usage: Mapping[str, Any] | None = None) -> None:
        headers = {k.lower(): v for k, v in request.headers.items()}
        latency = float(request.get(_LATENCY_KEY, 0.0))
        with self._lock:
            self._stats.by_path[request.path] += 1
            self._stats.by_status[status] += 1
            self._recorded.append(RecordedRequest(request.path, headers, body, status, latency, usage))

    async def _get_stats(self, request: web.Request) -> web.Response:
        return web.json_response(self.stats())

    async def _reset_stats(self, request: web.Request) -> web.Response:
        self.reset()
        return web.json_response(self.stats())

    # -- shared request handling ------------------------------------------

    async def _begin(self, request: web.Request) -> tuple[Any, web.Response | None]:
        """Parse the body, wait the latency and decide on a failure.

        Returns the body and, when the request must fail, the error response.
        """
        try:
            body = await request.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            error = {"message": "Request body must be a JSON object.", "type": "invalid_request_error"}
            return body, self._error_response(request, body, 400, {**error, "param": None, "code": None})
        return body, await self._gate(request, body)

    async def _gate(self, request: web.Request, body: Any) -> web.Response | None:
        """Wait the latency and decide on a failure: the error response, or None to answer."""
        latency_ms = request.headers.get("x-fake-latency-ms")
        latency = float(latency_ms) / 1000 if latency_ms is not None else self.latency_s
        request[_LATENCY_KEY] = latency
        if latency > 0:
            await asyncio.sleep(latency)
        forced = request.headers.get("x-fake-fail")
        status = int(forced) if forced else self._draw_failure()
        if status:
            error = _ERROR_BODIES.get(status, {**_ERROR_BODIES[500], "message": f"Fake HTTP {status}."})
            return self._error_response(request, body, status, error)
        return None

    def _draw_failure(self) -> int:
        with self._lock:
            if self.failure_rate and self._rng.random() < self.failure_rate:
                return self._rng.choice(self.failure_statuses)
        return 0

    def _error_response(self, request: web.Request, body: Any, status: int, error: Any) -> web.Response:
        self._record(request, body, status)
        headers = {"retry-after": "1"} if status == 429 else {}
        return web.json_response({"error": error}, status=status, headers=headers)

    # -- endpoints ---------------------------------------------------------

    def _reply_text(self, request: web.Request, body: dict[str, Any]) -> str:
        if (override := request.headers.get("x-fake-reply")) is not None:
            return override
        if self.reply is not None:
            return self.reply
        if self.reply_json is not None:
            return json.dumps(self.reply_json)
        last = " ".join(_last_user_text(body.get("messages")).split())
        return f"Fake reply from {body.get('model', '?')} to: {last[:80]}"

    def _bill(self, body: dict[str, Any], reply: str) -> tuple[dict[str, Any], str]:
        """Billed usage (``prompt_tokens``, ``completion_tokens``, ``reasoning_tokens``) and the finish reason."""
        prompt = self.prompt_tokens or prompt_tokens(body, self.image_tokens)
        cap = output_cap(body)
        reasoning = self.reasoning_tokens
        if self.fill_output:
            completion = cap or self.max_output_tokens
        else:
            completion = (self.completion_tokens or estimate_tokens(reply)) + reasoning
        finish_reason = "stop"
        if cap is not None and cap < completion:
            completion, finish_reason = cap, "length"
        reasoning = min(reasoning, completion)
        with self._lock:
            self._stats.prompt_tokens += prompt
            self._stats.completion_tokens += completion
        billed: dict[str, Any] = {"prompt_tokens": prompt, "completion_tokens": completion}
        billed["reasoning_tokens"] = reasoning
        if isinstance(body.get("service_tier"), str):
            billed["service_tier"] = body["service_tier"]
        return billed, finish_reason

    def _usage(self, body: dict[str, Any], reply: str) -> tuple[dict[str, Any], str, dict[str, Any]]:
        """Chat-shaped usage, the finish reason and what was billed."""
        billed, finish_reason = self._bill(body, reply)
        prompt, completion = billed["prompt_tokens"], billed["completion_tokens"]
        usage: dict[str, Any] = {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        }
        if billed["reasoning_tokens"]:
            usage["completion_tokens_details"] = {"reasoning_tokens": billed["reasoning_tokens"]}
        return usage, finish_reason, billed

    def _tool_call(self, request: web.Request, body: dict[str, Any]) -> tuple[str, str] | None:
        """(tool name, JSON arguments) when this request must answer with a tool call."""
        raw = request.headers.get("x-fake-tool-call")
        arguments = raw if raw is not None else None
        if arguments is None and self.tool_arguments is not None:
            arguments = json.dumps(self.tool_arguments)
        tools = body.get("tools")
        if arguments is None or not isinstance(tools, list) or not tools or not isinstance(tools[0], dict):
            return None
        first: dict[str, Any] = tools[0]
        nested = first.get("function")
        function: dict[str, Any] = nested if isinstance(nested, dict) else first
        return str(function.get("name") or "tool"), arguments

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body, error = await self._begin(request)
        if error is not None:
            return error
        reply = self._reply_text(request, body)
        usage, finish_reason, billed = self._usage(body, reply)
        base: dict[str, Any] = {
            "id": f"chatcmpl-fake-{uuid.uuid4().hex[:24]}",
            "created": int(time.time()),
            "model": str(body.get("model", "fake")),
            "system_fingerprint": "fp_fake",
        }
        if "service_tier" in billed:
            base["service_tier"] = billed["service_tier"]
        self._record(request, body, 200, billed)
        tool = self._tool_call(request, body)
        if body.get("stream") and tool is None:
            with self._lock:
                self._stats.streams += 1
            include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            return await self._stream(request, base, reply, usage, finish_reason, include_usage)
        message: dict[str, Any] = {"role": "assistant", "content": reply, "refusal": None}
        if tool is not None:
            function = {"name": tool[0], "arguments": tool[1]}
            call = {"id": f"call_{uuid.uuid4().hex[:12]}", "type": "function", "function": function}
            message, finish_reason = {"role": "assistant", "content": None, "tool_calls": [call]}, "tool_calls"
        choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": finish_reason}
        return web.json_response({**base, "object": "chat.completion", "choices": [choice], "usage": usage})

    async def _stream(
        self,
        request: web.Request,
        base: dict[str, Any],
        reply: str,
        usage: dict[str, int],
        finish_reason: str,
        include_usage: bool,
    ) -> web.StreamResponse:
        response = web.StreamResponse(headers={"content-type": "text/event-stream", "cache-control": "no-cache"})
        await response.prepare(request)
        extra = {"usage": None} if include_usage else {}

        async def send(choices: list[dict[str, Any]], **fields: Any) -> None:
            chunk = {**base, "object": "chat.completion.chunk", "choices": choices, **extra, **fields}
            await response.write(f"data: {json.dumps(chunk)}\n\n".encode())

        raw_delay = request.headers.get("x-fake-chunk-delay-ms")
        delay_s = float(raw_delay) / 1000 if raw_delay else 0.0
        await send([{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}])
        raw_abort = request.headers.get("x-fake-abort-after-chunks")
        abort_after = int(raw_abort) if raw_abort else None
        words = reply.split(" ")
        for i, word in enumerate(words):
            if abort_after is not None and i >= abort_after:
                await asyncio.sleep(0.05)  # what was sent reaches the client first
                if request.transport is not None:
                    request.transport.abort()
                return response
            piece = word if i == len(words) - 1 else word + " "
            if delay_s:
                await asyncio.sleep(delay_s)
            await send([{"index": 0, "delta": {"content": piece}, "finish_reason": None}])
        await send([{"index": 0, "delta": {}, "finish_reason": finish_reason}])
        if include_usage:
            await send([], usage=usage)
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response

    async def _embeddings(self, request: web.Request) -> web.Response:
        body, error = await self._begin(request)
        if error is not None:
            return error
        raw = body.get("input", "")
        inputs = [raw] if isinstance(raw, str) or (raw and isinstance(raw[0], int)) else list(raw)
        texts = [item if isinstance(item, str) else json.dumps(item) for item in inputs]
        dimensions = int(body.get("dimensions") or self.embedding_dim)
        as_base64 = body.get("encoding_format") == "base64"
        data = []
        for index, text in enumerate(texts):
            vector = fake_embedding(text, dimensions)
            encoded: Any = vector
            if as_base64:  # the OpenAI SDK asks for this unless told otherwise
                encoded = base64.b64encode(struct.pack(f"<{dimensions}f", *vector)).decode()
            data.append({"object": "embedding", "index": index, "embedding": encoded})
        prompt = self.prompt_tokens or sum(estimate_tokens(t) for t in texts)
        with self._lock:
            self._stats.prompt_tokens += prompt
        self._record(request, body, 200, {"prompt_tokens": prompt, "completion_tokens": 0})
        usage = {"prompt_tokens": prompt, "total_tokens": prompt}
        model = str(body.get("model", "fake-embedding"))
        return web.json_response({"object": "list", "data": data, "model": model, "usage": usage})

    async def _models(self, request: web.Request) -> web.Response:
        self._record(request, None, 200)
        data = [{"id": m, "object": "model", "created": 0, "owned_by": "fake"} for m in self.models]
        return web.json_response({"object": "list", "data": data})


def main(argv: Sequence[str] | None = None) -> None:
    """Run a FakeProvider in the foreground until SIGINT/SIGTERM."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--port", type=int, default=8099)
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument("--failure-rate", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--completion-tokens", type=int, default=None)
    parser.add_argument("--prompt-tokens", type=int, default=None)
    parser.add_argument("--reply", default=None, help="fixed reply content (default: echo a summary)")
    parser.add_argument("--embedding-dim", type=int, default=16)
    args = parser.parse_args(argv)
    provider = FakeProvider(
        port=args.port,
        latency_s=args.latency_ms / 1000,
        failure_rate=args.failure_rate,
        seed=args.seed,
        completion_tokens=args.completion_tokens,
        prompt_tokens=args.prompt_tokens,
        reply=args.reply,
        embedding_dim=args.embedding_dim,
    )
    done = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: done.set())
    with provider:
        print(f"fake provider listening on {provider.base_url}", flush=True)
        done.wait()


if __name__ == "__main__":
    main()
