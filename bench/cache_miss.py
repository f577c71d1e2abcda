"""What a semantic-cache miss costs: CPU per miss, event-loop blocking, and proxy throughput, in one table.

In process (the cache stage on a real Redis with vector search, a scope of 50 unrelated entries,
short questions such as "How do I reset my password (#17)?"), per miss:

- **old path**: the stage as it was: exact get, then the embedding on sentence-transformers (torch,
  ``asyncio.to_thread``) for every miss, then the top-3 vector query and verification;
- **new, scope with entries**: the same steps with MiniLM on onnxruntime in the embedder's worker,
  once per runtime (``--runtimes``, default ``onnx,onnx-int8``: the fp32 file and the int8 one);
- **new, empty scope** (a new tenant, conversation or parameter set: the common miss): the exact
  get tells the scope is empty, so nothing is embedded before the call; the vector for storing the
  answer is computed in the background (its CPU is shown apart), per runtime too.

CPU is the process's CPU time (every thread) around ``on_request``, and apart the CPU of the
event-loop thread itself (what the loop could not spend on other requests). Loop blocking: a ticker task
sleeping 1 ms on the same loop, the largest lag it saw during each miss (p50 and worst), next to
the same figure for an idle loop (what the machine's scheduling alone costs).

Through a real ``litellm --config`` proxy (mock deployment, so the proxy is the only thing working;
one Redis with search for every arm): ``wrk`` with every request a distinct question (every
request a miss, stored after the answer), cache off against cache on, side by side. CPU per
request is the proxy's process group plus Redis, from /proc.

    LITELLM_LOCAL_MODEL_COST_MAP=True HF_HUB_OFFLINE=1 python bench/cache_miss.py
    ... --misses 200 --duration 10 --concurrency 16 [--skip-proxy] [--runtimes onnx,onnx-int8]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/ is not a package: reuse pack_overhead.py
from pack_overhead import ArmResult, run_wrk

from costkit_litellm.cache.config import CacheConfig
from costkit_litellm.cache.redis_backend import RedisCache
from costkit_litellm.cache.scope import CacheEntry, decide
from costkit_litellm.cache.stage import CacheStage
from costkit_litellm.context import RequestContext, SamplingParams
from costkit_litellm.embeddings import LOCAL_MINILM, Vectors, normalise
from costkit_litellm.embeddings.local import LocalEmbedder
from costkit_litellm.pipeline import Admission
from costkit_litellm.pricing import CostEstimate
from costkit_litellm.testing.proxy_server import ProxyServer, base_config, enable_costkit, mock_deployment, write_config
from costkit_litellm.testing.redis_server import RedisServer

MODEL = "bench-model"
TASKS = [
    "reset my password", "change my email address", "cancel my subscription", "update my billing address",
    "download my invoices", "delete my account", "enable two-factor authentication", "export my data",
]  # fmt: skip
OFF: dict[str, Any] = {"breaker": {"enabled": False}, "ledger": {"enabled": False}, "metrics": {"enabled": False}}


def pct(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return 1000 * ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


# --------------------------------------------------------------------------- in process


class OldEmbedder:
    """The embedding path before: sentence-transformers (torch) through ``asyncio.to_thread``."""

    name = LOCAL_MINILM

    def __init__(self) -> None:
        self.inner = LocalEmbedder(runtime="torch")

    async def embed(self, texts: Sequence[str]) -> Vectors:
        return await asyncio.to_thread(self.inner.embed_sync, texts)


class AlwaysSearch(RedisCache):
    """The lookup before: no scope marker, so every miss embeds and searches."""

    async def lookup(self, entry_id: str, scope: str) -> tuple[CacheEntry | None, bool]:
        return await self.get(entry_id), True


@dataclass
class Arm:
    name: str
    cpu: list[float] = field(default_factory=list)
    background: list[float] = field(default_factory=list)
    loop_cpu: list[float] = field(default_factory=list)
    lag: list[float] = field(default_factory=list)


def request(i: int, scope_tag: str) -> tuple[RequestContext, list[dict[str, str]]]:
    context = RequestContext(
        call_id=uuid.uuid4().hex,
        model=MODEL,
        api_key_hash="bench-key",
        params=SamplingParams(temperature=0.0, max_tokens=64),
    )
    messages = [
        {"role": "system", "content": f"You are a support assistant ({scope_tag})."},
        {"role": "user", "content": f"How do I {TASKS[i % len(TASKS)]} (#{i})?"},
    ]
    return context, messages


class Ticker:
    """Sleeps 1 ms in a loop on the event loop; records the largest lag since the last reset."""

    def __init__(self) -> None:
        self.max_lag = 0.0
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            started = time.perf_counter()
            await asyncio.sleep(0.001)
            self.max_lag = max(self.max_lag, time.perf_counter() - started - 0.001)

    def __enter__(self) -> Ticker:
        self._task = asyncio.ensure_future(self._run())
        return self

    def __exit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()


async def one_arm(name: str, stage: CacheStage, tag: str, empty: bool, misses: int, ticker: bool) -> Arm:
    arm = Arm(name)
    for i in range(10):  # warm: connections, index, model
        context, messages = request(i, f"{tag}-{i}" if empty else tag)
        await stage.on_request(Admission(context, CostEstimate(None, 0, 0, None), messages=messages))
        await asyncio.sleep(0.02)
    clock = Ticker() if ticker else None
    with clock or _Null():
        for i in range(10, 10 + misses):
            context, messages = request(i, f"{tag}-{i}" if empty else tag)
            admission = Admission(context, CostEstimate(None, 0, 0, None), messages=messages)
            await asyncio.sleep(0.003)  # let the ticker run between misses
            if clock is not None:
                clock.max_lag = 0.0
            started = time.process_time()
            on_loop = time.thread_time()
            await stage.on_request(admission)
            arm.loop_cpu.append(time.thread_time() - on_loop)
            arm.cpu.append(time.process_time() - started)
            if clock is not None:
                arm.lag.append(clock.max_lag)
            assert admission.state["cache"]["status"] == "miss", admission.state
            pending = stage._pending.get(context.call_id or "")
            if pending is not None and pending.embedding is not None:
                await pending.embedding
                arm.background.append(time.process_time() - started)
    return arm


class _Null:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


async def fill(stage: CacheStage, embedder: LocalEmbedder, tag: str) -> None:
    """50 unrelated entries in the non-empty scope, with real vectors."""
    context, messages = request(0, tag)
    keys = decide(context, messages, MODEL, stage.config, stage.config.embedding_model).keys
    assert keys is not None
    texts = [f"What is the weather like in city number {j}?" for j in range(50)]
    vectors = embedder.embed_sync(texts)
    response = {"choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "x"}}]}
    for j, (text, vector) in enumerate(zip(texts, vectors, strict=True)):
        entry = CacheEntry(f"fill-{tag}-{j}", keys.scope, keys.tenant, text, response, 1000, MODEL, time.time(), vector)
        await stage.backend.put(entry)


async def idle_lag(samples: int) -> Arm:
    """The ticker's lag with nothing else on the loop, over windows as long as a miss: the noise floor."""
    arm = Arm("idle loop, no request, 3 ms windows (noise floor of the lag column)")
    with Ticker() as clock:
        for _ in range(samples):
            await asyncio.sleep(0.003)
            clock.max_lag = 0.0
            await asyncio.sleep(0.003)
            arm.lag.append(clock.max_lag)
    return arm


async def in_process(redis_url: str, misses: int, runtimes: Sequence[str]) -> list[tuple[str, Arm]]:
    config = CacheConfig(enabled=True)
    embedders = {runtime: LocalEmbedder(runtime=runtime) for runtime in runtimes}
    old = OldEmbedder()
    for embedder in embedders.values():
        embedder.embed_sync(["warm up"])
    old.inner.embed_sync(["warm up"])
    arms: list[tuple[str, Arm]] = [("idle", await idle_lag(max(20, misses // 2)))]
    plans: list[tuple[str, Any, LocalEmbedder, bool, bool]] = [
        ("old path: torch, every miss embeds + searches", old, old.inner, True, False)
    ]
    for runtime, embedder in embedders.items():
        plans.append((f"new: {runtime}, scope with entries (embed + search)", embedder, embedder, False, False))
    for runtime, embedder in embedders.items():
        plans.append((f"new: {runtime}, empty scope (no embedding before the call)", embedder, embedder, False, True))
    for name, embedder, filler, always, empty in plans:
        prefix = f"bench-miss-{uuid.uuid4().hex[:6]}"
        backend_type = AlwaysSearch if always else RedisCache
        backend = backend_type(redis_url, prefix=prefix, ttl_s=3600, max_entries=100_000, timeout_s=5.0)
        stage = CacheStage(config, store_url=redis_url, prefix=prefix, embedder=lambda e=embedder: e, backend=backend)
        tag = uuid.uuid4().hex[:8]
        if not empty:
            await fill(stage, filler, tag)  # entries' vectors from the arm's own runtime, as its replicas would store
        cpu_arm = await one_arm(name, stage, tag, empty, misses, ticker=False)
        lag_arm = await one_arm(name, stage, tag, empty, max(20, misses // 2), ticker=True)
        cpu_arm.lag = lag_arm.lag
        arms.append((name, cpu_arm))
        print(f"  {name}: CPU p50 {pct(cpu_arm.cpu, 0.5):.2f} ms", file=sys.stderr)
        await stage.close()
    return arms


async def breakdown(redis_url: str, runtimes: Sequence[str], repeat: int) -> list[list[str]]:
    """CPU of each step of a miss in a scope with entries, timed apart (ms, p50 over ``repeat`` misses)."""
    from costkit_litellm.embeddings.onnx_minilm import OnnxMiniLM

    rows: list[list[str]] = []
    config = CacheConfig(enabled=True)
    for runtime in runtimes:
        embedder = LocalEmbedder(runtime=runtime)
        embedder.embed_sync(["warm up"])
        prefix = f"bench-miss-{uuid.uuid4().hex[:6]}"
        backend = RedisCache(redis_url, prefix=prefix, ttl_s=3600, max_entries=100_000, timeout_s=5.0)
        stage = CacheStage(config, store_url=redis_url, prefix=prefix, embedder=lambda e=embedder: e, backend=backend)
        tag = uuid.uuid4().hex[:8]
        await fill(stage, embedder, tag)
        model: OnnxMiniLM | None = None
        if runtime.startswith("onnx"):
            from costkit_litellm.embeddings.local import local_model_path
            from costkit_litellm.embeddings.onnx_minilm import exported_path

            precision = "int8" if runtime == "onnx-int8" else "fp32"
            model = OnnxMiniLM(local_model_path(), exported_path(local_model_path(), precision=precision))
        steps: dict[str, list[float]] = {}

        def timed(name: str, started: float, steps: dict[str, list[float]] = steps) -> None:
            steps.setdefault(name, []).append(time.process_time() - started)

        for i in range(repeat + 10):
            context, messages = request(i, tag)
            keys = decide(context, messages, MODEL, config, config.embedding_model).keys
            assert keys is not None
            text = messages[-1]["content"]
            started = time.process_time()
            await backend.lookup(keys.entry_id, keys.scope)
            timed("exact get + scope marker (one round trip)", started)
            if model is not None:
                started = time.process_time()
                encodings = model._tokenizer.encode_batch([text])
                timed("  tokenizer (tokenizers, Rust)", started)
                ids = np.array([encodings[0].ids], dtype=np.int64)
                mask = np.ones_like(ids)
                feed = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
                started = time.process_time()
                (states,) = model._session.run(["last_hidden_state"], feed)
                timed("  session.run (the transformer)", started)
                started = time.process_time()
                normalise(states.mean(axis=1))
                timed("  mean pooling + L2 normalise", started)
            started = time.process_time()
            embedder.embed_sync([text])
            timed("embedding, in the calling thread", started)
            started = time.process_time()
            vector = (await embedder.embed([text]))[0]
            timed("embedding, through the worker thread", started)
            started = time.process_time()
            candidates = await backend.search(keys.scope, vector, config.top_k, stage.min_similarity)
            timed("top-3 vector query", started)
            started = time.process_time()
            for candidate in candidates:
                if candidate.entry.vector is not None:
                    stage.verifier.verify(text, vector, candidate.entry.text, candidate.entry.vector)
            timed(f"verification ({len(candidates)} candidates)", started)
        await stage.close()
        for name, values in steps.items():
            rows.append([runtime, name, f"{pct(values[10:], 0.5):.3f}", f"{pct(values[10:], 0.99):.3f}"])
    return rows


# --------------------------------------------------------------------------- proxy

WRK_SCRIPT = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer %(key)s"
local threads = 0
setup = function(thread)
  threads = threads + 1
  thread:set("tid", threads)
end
local n = 0
local tasks = {%(tasks)s}
request = function()
  n = n + 1
  local run = tostring(tid) .. "-" .. tostring(os.time())
  local system = %(system)s
  local body = '{"model":"%(model)s","temperature":0,"max_tokens":32,"messages":['
    .. '{"role":"system","content":"' .. system .. '"},'
    .. '{"role":"user","content":"How do I ' .. tasks[(n %% #tasks) + 1] .. ' (#' .. run .. '-' .. n .. ')?"}]}'
  return wrk.format(nil, "/v1/chat/completions", nil, body)
end
"""
SYSTEM_SHARED = '"You are a support assistant."'
SYSTEM_UNIQUE = '"You are a support assistant (session " .. run .. "-" .. n .. ")."'


def proxy_arms(runtimes: Sequence[str]) -> dict[str, tuple[bool, str | None, str]]:
    """Cache off, the torch runtime, then each runtime in a shared scope and with empty scopes."""
    arms: dict[str, tuple[bool, str | None, str]] = {
        "proxy, cache off": (False, None, SYSTEM_SHARED),
        "proxy, cache on, torch runtime (old embedding path), scope with entries": (True, "torch", SYSTEM_SHARED),
    }
    for runtime in runtimes:
        arms[f"proxy, cache on, {runtime}, scope with entries"] = (True, runtime, SYSTEM_SHARED)
    for runtime in runtimes:
        arms[f"proxy, cache on, {runtime}, empty scope (each request a new conversation)"] = (
            True,
            runtime,
            SYSTEM_UNIQUE,
        )
    return arms


def bench_proxy(args: argparse.Namespace, server: RedisServer) -> list[tuple[str, ArmResult, int]]:
    results: list[tuple[str, ArmResult, int]] = []
    folder = Path(tempfile.mkdtemp(prefix="costkit-bench-miss-"))
    redis_pid = server._proc.pid if server._proc is not None else 0
    for index, (name, (cache_on, runtime, system)) in enumerate(proxy_arms(args.runtimes).items()):
        prefix = f"bench-miss-proxy{index}-{uuid.uuid4().hex[:6]}"
        # Distinct questions that differ only in an id can pass as paraphrases; a threshold of 0.9999
        # keeps every request a miss while each still embeds, searches and stores.
        cache: dict[str, Any] = {"enabled": cache_on, "similarity_threshold": 0.9999} if cache_on else {}
        section = {**OFF, "redis_url": server.url, "key_prefix": prefix, "cache": cache or {"enabled": False}}
        path = write_config(folder / f"arm{index}.yaml", enable_costkit(base_config([mock_deployment(MODEL)]), section))
        env = {"COSTKIT_EMBEDDINGS_RUNTIME": runtime} if runtime else {}
        with ProxyServer(path, env=env) as proxy:
            script = folder / f"load{index}.lua"
            tasks = ",".join(f'"{t}"' for t in TASKS)
            script.write_text(WRK_SCRIPT % {"key": proxy.master_key, "model": MODEL, "tasks": tasks, "system": system})
            run_wrk(proxy, script, args, redis_pid, args.warmup)
            result = ArmResult()
            result.runs.append(run_wrk(proxy, script, args, redis_pid, args.duration))
            hits = asyncio.run(_hits(server.url, prefix)) if cache_on else 0
            results.append((name, result, hits))
            print(f"  {name}: {result.rate():.1f} req/s, hits {hits}", file=sys.stderr)
    return results


async def _hits(url: str, prefix: str) -> int:
    backend = RedisCache(url, prefix=prefix, ttl_s=3600, max_entries=100_000)
    try:
        return (await backend.stats()).hits
    finally:
        await backend.close()


# --------------------------------------------------------------------------- table


def table(arms: list[tuple[str, Arm]], proxy: list[tuple[str, ArmResult, int]], args: argparse.Namespace) -> str:
    lines = [
        "| arm | CPU ms per miss p50 | p99 | incl. background embedding p50 | on the loop thread p50 "
        "| loop blocked per miss p50 / max ms "
        "| req/s (wrk) | proxy+Redis CPU ms/req | wrk p50 / p99 ms | errors | cache hits |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, arm in arms:
        if not arm.cpu:
            lines.append(f"| {arm.name} | | | | | {pct(arm.lag, 0.5):.2f} / {pct(arm.lag, 1.0):.2f} | | | | | |")
            continue
        background = f"{pct(arm.background, 0.5):.2f}" if arm.background else "none"
        lag = f"{pct(arm.lag, 0.5):.2f} / {pct(arm.lag, 1.0):.2f}" if arm.lag else ""
        lines.append(
            f"| {name} | {pct(arm.cpu, 0.5):.2f} | {pct(arm.cpu, 0.99):.2f} | {background} | "
            f"{pct(arm.loop_cpu, 0.5):.2f} | {lag} | | | | | |"
        )
    for name, result, hits in proxy:
        lines.append(
            f"| {name} | | | | | | {result.rate():.1f} | {result.cpu_ms_per_request():.2f} | "
            f"{result.p50():.0f} / {result.p99():.0f} | {result.errors()} | {hits} |"
        )
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--misses", type=int, default=200, help="misses timed per in-process arm")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of wrk load per proxy arm")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds of untimed load per proxy arm first")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--skip-proxy", action="store_true")
    parser.add_argument("--breakdown", type=int, default=0, help="also time each step of a miss apart, N times")
    parser.add_argument(
        "--runtimes",
        type=lambda value: [r.strip() for r in value.split(",") if r.strip()],
        default=["onnx", "onnx-int8"],
        help="local embedder runtimes measured side by side (comma-separated; the torch arm always runs)",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    args = parse_args(argv)
    if not args.skip_proxy and shutil.which("wrk") is None:
        raise SystemExit("wrk not found on PATH (Debian: apt-get install wrk), or pass --skip-proxy")
    with RedisServer(search=True) as server:
        steps = asyncio.run(breakdown(server.url, args.runtimes, args.breakdown)) if args.breakdown else []
        arms = asyncio.run(in_process(server.url, args.misses, args.runtimes))
        proxy = [] if args.skip_proxy else bench_proxy(args, server)
    print(
        f"\n## cache miss cost ({os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at the end; "
        f"in process: {args.misses} misses per arm; proxy: wrk -c{args.concurrency} for {args.duration:g} s, "
        "mock deployment, every request a distinct question)\n"
    )
    print(table(arms, proxy, args))
    if steps:
        print("\n### where a miss in a scope with entries spends its CPU (each step timed apart, process CPU ms)\n")
        print("| runtime | step | p50 | p99 |\n|---|---|---:|---:|")
        print("\n".join(f"| {' | '.join(row)} |" for row in steps))


if __name__ == "__main__":
    main()
