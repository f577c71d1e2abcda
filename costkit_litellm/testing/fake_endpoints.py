"""The fake provider's endpoints beyond chat and embeddings: what a proxy routes to a provider.

Each answers in the shape the real API uses and records what it billed (``RecordedRequest.usage``):
text completions and Responses (tokens), images (count, size, quality, image tokens),
speech (characters, whitespace aside, as LiteLLM prices them), transcription (seconds of
audio), moderation (free), rerank (Cohere search units).
"""

from __future__ import annotations

import base64
import json
import math
import time
import uuid
from typing import TYPE_CHECKING, Any

from aiohttp import web

from costkit_litellm.testing.fake_billing import estimate_tokens

if TYPE_CHECKING:
    from costkit_litellm.testing.fake_provider import FakeProvider

# A 1x1 transparent PNG: what every generated image looks like.
_PNG = base64.b64encode(
    bytes.fromhex(
        "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
        "1f15c4890000000d49444154789c6360000002000154a24f5d0000000049454e44ae426082"
    )
).decode()
AUDIO_BYTES_PER_SECOND = 16_000
"""Transcription bills this many bytes of uploaded audio as one second (16 kHz, 8-bit mono)."""
IMAGE_OUTPUT_TOKENS = {"low": 272, "medium": 1056, "high": 4160}
"""Output image tokens of one square image by quality, as OpenAI's gpt-image models report them
(non-square sizes take 1.5x); ``auto`` and unknown qualities are billed as ``high``."""
RERANK_DOCUMENTS_PER_SEARCH = 100
"""Cohere bills one search unit per query and up to 100 documents."""


def _sse(event: dict[str, Any]) -> bytes:
    return f"event: {event['type']}\ndata: {json.dumps(event)}\n\n".encode()


class FakeEndpoints:
    """Handlers bound to one ``FakeProvider`` (its latency, failures, billing and records)."""

    def __init__(self, provider: FakeProvider) -> None:
        self.provider = provider

    async def completions(self, request: web.Request) -> web.Response:
        """``POST /v1/completions``: a legacy text completion."""
        body, error = await self.provider._begin(request)
        if error is not None:
            return error
        reply = self.provider._reply_text(request, body)
        usage, finish_reason, billed = self.provider._usage(body, reply)
        self.provider._record(request, body, 200, billed)
        choice = {"text": reply, "index": 0, "logprobs": None, "finish_reason": finish_reason}
        return web.json_response(
            {
                "id": f"cmpl-fake-{uuid.uuid4().hex[:24]}",
                "object": "text_completion",
                "created": int(time.time()),
                "model": str(body.get("model", "fake")),
                "choices": [choice],
                "usage": usage,
            }
        )

    async def responses(self, request: web.Request) -> web.StreamResponse:
        """``POST /v1/responses``: the Responses API (JSON, or its SSE events with ``stream: true``)."""
        body, error = await self.provider._begin(request)
        if error is not None:
            return error
        reply = self.provider._reply_text(request, body)
        billed, finish_reason = self.provider._bill(body, reply)
        self.provider._record(request, body, 200, billed)
        item_id = f"msg_{uuid.uuid4().hex[:24]}"
        tool = self.provider._tool_call(request, body)
        if tool is not None:
            item: dict[str, Any] = {
                "id": f"fc_{uuid.uuid4().hex[:24]}",
                "type": "function_call",
                "status": "completed",
                "call_id": f"call_{uuid.uuid4().hex[:12]}",
                "name": tool[0],
                "arguments": tool[1],
            }
        else:
            text = {"type": "output_text", "text": reply, "annotations": []}
            item = {"id": item_id, "type": "message", "status": "completed", "role": "assistant", "content": [text]}
        usage = {
            "input_tokens": billed["prompt_tokens"],
            "output_tokens": billed["completion_tokens"],
            "total_tokens": billed["prompt_tokens"] + billed["completion_tokens"],
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens_details": {"reasoning_tokens": billed["reasoning_tokens"]},
        }
        response: dict[str, Any] = {
            "id": f"resp_{uuid.uuid4().hex[:24]}",
            "object": "response",
            "created_at": int(time.time()),
            "status": "completed" if finish_reason == "stop" else "incomplete",
            "incomplete_details": None if finish_reason == "stop" else {"reason": "max_output_tokens"},
            "error": None,
            "model": str(body.get("model", "fake")),
            "output": [item],
            "parallel_tool_calls": True,
            "tool_choice": body.get("tool_choice", "auto"),
            "tools": body.get("tools") or [],
            "temperature": body.get("temperature", 1.0),
            "top_p": body.get("top_p", 1.0),
            "max_output_tokens": body.get("max_output_tokens"),
            "usage": usage,
            "metadata": {},
        }
        if "service_tier" in billed:
            response["service_tier"] = billed["service_tier"]
        if not body.get("stream"):
            return web.json_response(response)
        return await self._stream_response(request, response, item, reply)

    async def _stream_response(
        self, request: web.Request, response: dict[str, Any], item: dict[str, Any], reply: str
    ) -> web.StreamResponse:
        stream = web.StreamResponse(headers={"content-type": "text/event-stream", "cache-control": "no-cache"})
        await stream.prepare(request)
        started = {**response, "status": "in_progress", "output": [], "usage": None}
        events: list[dict[str, Any]] = [{"type": "response.created", "response": started}]
        if item["type"] == "message":
            empty = {"type": "output_text", "text": "", "annotations": []}
            where = {"item_id": item["id"], "output_index": 0, "content_index": 0}
            events.append({"type": "response.output_item.added", "output_index": 0, "item": {**item, "content": []}})
            events.append({"type": "response.content_part.added", **where, "part": empty})
            events += [{"type": "response.output_text.delta", **where, "delta": w + " "} for w in reply.split(" ")]
            events.append({"type": "response.output_text.done", **where, "text": reply})
            events.append({"type": "response.content_part.done", **where, "part": item["content"][0]})
        else:
            events.append({"type": "response.output_item.added", "output_index": 0, "item": item})
        events.append({"type": "response.output_item.done", "output_index": 0, "item": item})
        events.append({"type": "response.completed", "response": response})
        for number, event in enumerate(events):
            await stream.write(_sse({**event, "sequence_number": number}))
        await stream.write_eof()
        return stream

    async def images(self, request: web.Request) -> web.Response:
        """``POST /v1/images/generations``: ``n`` images (each a 1x1 PNG), billed per image."""
        body, error = await self.provider._begin(request)
        if error is not None:
            return error
        count = body.get("n") if isinstance(body.get("n"), int) and body["n"] > 0 else 1
        size = str(body.get("size") or "1024x1024")
        quality = str(body.get("quality") or "auto")
        per_image = IMAGE_OUTPUT_TOKENS.get(quality, IMAGE_OUTPUT_TOKENS["high"])
        if size not in ("1024x1024", "auto"):
            per_image = math.ceil(per_image * 1.5)
        prompt = estimate_tokens(str(body.get("prompt") or ""))
        billed = {"images": count, "size": size, "quality": quality}
        billed.update(prompt_tokens=prompt, completion_tokens=per_image * count)
        self.provider._record(request, body, 200, billed)
        data = [{"b64_json": _PNG, "revised_prompt": None} for _ in range(count)]
        usage = {
            "input_tokens": prompt,
            "output_tokens": per_image * count,
            "total_tokens": prompt + per_image * count,
            "input_tokens_details": {"text_tokens": prompt, "image_tokens": 0},
        }
        return web.json_response({"created": int(time.time()), "data": data, "usage": usage})

    async def speech(self, request: web.Request) -> web.Response:
        """``POST /v1/audio/speech``: audio bytes for ``input``, billed per character."""
        body, error = await self.provider._begin(request)
        if error is not None:
            return error
        text = str(body.get("input") or "")
        # Characters other than whitespace: the unit LiteLLM's price map prices speech in.
        characters = sum(1 for c in text if not c.isspace())
        self.provider._record(request, body, 200, {"characters": characters})
        return web.Response(body=b"ID3" + text.encode()[:64], content_type="audio/mpeg")

    async def transcription(self, request: web.Request) -> web.Response:
        """``POST /v1/audio/transcriptions`` (multipart): a transcript, billed per second of audio."""
        form = await request.post()
        upload = form.get("file")
        size = len(upload.file.read()) if isinstance(upload, web.FileField) else 0
        body = {k: v for k, v in form.items() if isinstance(v, str)}
        error = await self.provider._gate(request, body)
        if error is not None:
            return error
        seconds = max(1.0, math.ceil(size / AUDIO_BYTES_PER_SECOND))
        self.provider._record(request, body, 200, {"seconds": seconds})
        text = self.provider.reply or "fake transcript"
        return web.json_response({"task": "transcribe", "language": "english", "duration": seconds, "text": text})

    async def moderation(self, request: web.Request) -> web.Response:
        """``POST /v1/moderations``: nothing flagged, free."""
        body, error = await self.provider._begin(request)
        if error is not None:
            return error
        raw = body.get("input")
        texts = raw if isinstance(raw, list) else [raw]
        prompt = sum(estimate_tokens(str(t)) for t in texts)
        self.provider._record(request, body, 200, {"prompt_tokens": prompt, "completion_tokens": 0})
        result = {"flagged": False, "categories": {}, "category_scores": {}}
        return web.json_response(
            {"id": f"modr-{uuid.uuid4().hex[:12]}", "model": body.get("model"), "results": [result for _ in texts]}
        )

    async def rerank(self, request: web.Request) -> web.Response:
        """``POST /v1/rerank`` (Cohere's shape): documents scored, billed in search units."""
        body, error = await self.provider._begin(request)
        if error is not None:
            return error
        documents = body.get("documents") if isinstance(body.get("documents"), list) else []
        searches = max(1, math.ceil(len(documents) / RERANK_DOCUMENTS_PER_SEARCH))
        self.provider._record(request, body, 200, {"searches": searches})
        results = [{"index": i, "relevance_score": 1.0 / (i + 1)} for i in range(len(documents))]
        top_n = body.get("top_n")
        if isinstance(top_n, int) and top_n > 0:
            results = results[:top_n]
        meta = {"api_version": {"version": "1"}, "billed_units": {"search_units": searches}}
        return web.json_response({"id": f"rerank-{uuid.uuid4().hex[:12]}", "results": results, "meta": meta})
