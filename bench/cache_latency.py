"""What a semantic-cache lookup costs, and what a hit saves end to end.

(a) Lookup: N entries (random unit vectors, 384 dimensions like MiniLM, all in one scope: the
worst case of one large tenant) in the in-process backend and in Redis with a FLAT and an HNSW
index (both indexes over the same entries, one local Redis with the search module). One lookup is
what the stage does on a miss: the exact ``get`` (a miss) plus the top-3 vector search. Timed
*excluding* the embedding (a ready vector), and *including* it (MiniLM embeds a question first, in
its worker thread, as in the proxy).

(b) End to end: two real ``litellm`` proxies on one Redis and one fake provider answering after
``--latency-ms`` (300 ms): **cache off** and **cache on** (local MiniLM, shipped verifier).
Per question, cache on: first ask (miss: embedding + lookup + provider call), the same again
(exact hit), a rewording (semantic hit when the verifier accepts it); cache off: the question once.

    LITELLM_LOCAL_MODEL_COST_MAP=True HF_HUB_OFFLINE=1 python bench/cache_latency.py
    ... --sizes 1000,10000 --queries 100 --skip-proxy
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/ is not a package: reuse overhead.py
from overhead import fake_provider_process

from costkit_litellm.cache.memory import MemoryCache
from costkit_litellm.cache.redis_backend import RedisCache
from costkit_litellm.cache.scope import CacheBackend, CacheEntry
from costkit_litellm.embeddings import Vectors, normalise
from costkit_litellm.embeddings.local import LocalEmbedder
from costkit_litellm.testing.proxy_server import (
    ProxyServer,
    base_config,
    enable_costkit,
    openai_deployment,
    write_config,
)
from costkit_litellm.testing.redis_server import RedisServer

DIMS = 384
SCOPE = "bench-scope"
RESPONSE = {
    "object": "chat.completion",
    "model": "gpt-4o-mini",
    "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "x" * 200}}],
}
TASKS = [
    "reset my password", "change my email address", "cancel my subscription", "update my billing address",
    "download my invoices", "delete my account", "enable two-factor authentication", "export my data",
    "invite a colleague to my workspace", "change the language of the app", "contact customer support",
    "upgrade my plan", "turn off email notifications", "recover a deleted file", "share a folder",
    "connect my calendar", "change my username", "set up single sign-on", "add a payment method",
    "see my order history", "track my parcel", "return a damaged item", "apply a discount code",
    "merge two accounts", "change my time zone", "print a receipt", "verify my phone number",
    "unsubscribe from the newsletter", "report a bug", "request a refund",
]  # fmt: skip


def ms(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return 1000 * ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def random_units(count: int, seed: int) -> Vectors:
    return normalise(np.random.default_rng(seed).normal(size=(count, DIMS)))


# --- (a) lookups ---------------------------------------------------------------------------


async def fill(backends: Sequence[CacheBackend], size: int, batch: int = 64) -> float:
    """Store ``size`` entries in each backend (Redis backends share one prefix: stored once)."""
    vectors = random_units(size, seed=size)
    started = time.perf_counter()
    for backend in backends:
        for start in range(0, size, batch):
            entries = [
                CacheEntry(f"e{i}", SCOPE, "tenant", f"question {i}", RESPONSE, 12_750, "mini", time.time(), vectors[i])
                for i in range(start, min(size, start + batch))
            ]
            await asyncio.gather(*(backend.put(e) for e in entries))
    return time.perf_counter() - started


async def lookups(backend: CacheBackend, queries: Vectors, embedder: LocalEmbedder | None) -> list[float]:
    """Seconds per lookup (exact miss + top-3 search), optionally embedding a question first."""
    times = []
    for i, query in enumerate(queries):
        started = time.perf_counter()
        vector = (await embedder.embed([f"How do I {TASKS[i % len(TASKS)]} (#{i})?"]))[0] if embedder else query
        await backend.get(f"absent-{i}")
        await backend.search(SCOPE, vector, 3, 0.0)
        times.append(time.perf_counter() - started)
    return times


async def bench_lookups(args: argparse.Namespace) -> str:
    embedder = LocalEmbedder()
    await embedder.embed(["warm up"])
    rows = []
    with RedisServer(search=True) as server:
        for size in args.sizes:
            prefix = f"bench-{uuid.uuid4().hex[:8]}"
            memory = MemoryCache(ttl_s=86_400, max_entries=10 * size)
            slow = {"timeout_s": 10.0}  # the bulk fill queues behind HNSW inserts; lookups are timed, not capped
            flat = RedisCache(server.url, prefix=prefix, ttl_s=86_400, max_entries=10 * size, algorithm="flat", **slow)
            hnsw = RedisCache(server.url, prefix=prefix, ttl_s=86_400, max_entries=10 * size, algorithm="hnsw", **slow)
            await hnsw.search(SCOPE, random_units(1, 0)[0], 1, 0.0)  # both indexes exist before the fill
            filled = await fill([memory, flat], size)
            print(f"{size:,} entries stored in {filled:.1f}s", file=sys.stderr)
            await asyncio.sleep(1.0)  # let the HNSW graph catch up with the writes
            queries = random_units(args.queries, seed=7)
            for name, backend in (("memory (numpy)", memory), ("redis FLAT", flat), ("redis HNSW", hnsw)):
                await lookups(backend, queries[:10], None)  # warm connections
                bare = await lookups(backend, queries, None)
                embedded = await lookups(backend, queries[: max(10, args.queries // 2)], embedder)
                rows.append((size, name, bare, embedded))
                print(f"  {name}: p50 {ms(bare, 0.5):.2f} ms", file=sys.stderr)
            await flat.clear()
            for backend in (flat, hnsw):
                await backend.close()
    lines = [
        "| entries | backend | lookup p50 ms | lookup p99 ms | with embedding p50 ms | with embedding p99 ms |",
        "|---:|---|---:|---:|---:|---:|",
    ]
    for size, name, bare, embedded in rows:
        lines.append(
            f"| {size:,} | {name} | {ms(bare, 0.5):.2f} | {ms(bare, 0.99):.2f} | "
            f"{ms(embedded, 0.5):.2f} | {ms(embedded, 0.99):.2f} |"
        )
    return "\n".join(lines)


# --- (b) end to end ------------------------------------------------------------------------


async def ask(client: httpx.AsyncClient, proxy: ProxyServer, content: str) -> tuple[float, str, str]:
    body = {"model": "mini", "temperature": 0, "messages": [{"role": "user", "content": content}]}
    started = time.perf_counter()
    response = await client.post(f"{proxy.base_url}/v1/chat/completions", headers=proxy.auth_headers, json=body)
    elapsed = time.perf_counter() - started
    response.raise_for_status()
    status = response.headers.get("x-costkit-cache", "off")
    match = response.headers.get("x-costkit-cache-match", "")
    return elapsed, status, match


async def end_to_end(proxies: dict[str, ProxyServer], rounds: int) -> dict[str, list[float]]:
    kinds: dict[str, list[float]] = {}
    run = uuid.uuid4().hex[:6]
    async with httpx.AsyncClient(timeout=60) as client:
        for proxy in proxies.values():  # warm: MiniLM loaded, connections open
            await ask(client, proxy, f"warm up {run}")
        for r in range(rounds):
            for task in TASKS:
                question = f"How do I {task}? ({run}-{r})"
                elapsed, _, _ = await ask(client, proxies["off"], question)
                kinds.setdefault("cache off: provider call", []).append(elapsed)
                elapsed, status, _ = await ask(client, proxies["on"], question)
                kinds.setdefault(f"cache on: {status} (embed + lookup + provider call)", []).append(elapsed)
                await asyncio.sleep(0.05)  # the miss is stored by the success callback
                for kind, content in (("repeat", question), ("rewording", f"How can I {task}? ({run}-{r})")):
                    elapsed, status, match = await ask(client, proxies["on"], content)
                    label = f"cache on: hit ({match})" if status == "hit" else f"cache on: {status} ({kind})"
                    kinds.setdefault(label, []).append(elapsed)
    return kinds


def bench_proxy(args: argparse.Namespace) -> str:
    folder = Path(tempfile.mkdtemp(prefix="costkit-bench-cache-"))
    with RedisServer(search=True) as server, fake_provider_process(args.latency_ms) as api_base:
        model = [openai_deployment("mini", api_base)]
        configs = {}
        on: dict[str, Any] = {"enabled": True}
        if args.verify_model:
            on["verify"] = {"model_path": args.verify_model}
        for arm, cache in (("off", {"enabled": False}), ("on", on)):
            costkit = {"redis_url": server.url, "key_prefix": f"bench-{arm}", "cache": cache}
            configs[arm] = write_config(folder / f"{arm}.yaml", enable_costkit(base_config(model), costkit))
        proxies = {arm: ProxyServer(path) for arm, path in configs.items()}
        try:
            for proxy in proxies.values():
                proxy.start()
            kinds = asyncio.run(end_to_end(proxies, args.rounds))
        finally:
            for proxy in proxies.values():
                proxy.stop()
    baseline = statistics.median(kinds["cache off: provider call"])
    lines = ["| request | n | p50 ms | p99 ms | p50 vs provider call |", "|---|---:|---:|---:|---:|"]
    for label, values in sorted(kinds.items(), key=lambda kv: -statistics.median(kv[1])):
        ratio = statistics.median(values) / baseline
        lines.append(f"| {label} | {len(values)} | {ms(values, 0.5):.1f} | {ms(values, 0.99):.1f} | {ratio:.3f}x |")
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=lambda s: [int(x) for x in s.split(",")], default=[1000, 10_000, 100_000])
    parser.add_argument("--queries", type=int, default=200, help="lookups timed per backend and size")
    parser.add_argument("--latency-ms", type=float, default=300.0, help="the fake provider's latency")
    parser.add_argument("--rounds", type=int, default=1, help="passes over the 30 questions end to end")
    parser.add_argument("--verify-model", default=None, help="another pair_model.json for the verifier")
    parser.add_argument("--skip-lookups", action="store_true")
    parser.add_argument("--skip-proxy", action="store_true")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    print(f"# cache latency ({os.cpu_count()} CPUs)\n")
    if not args.skip_lookups:
        print("## (a) lookup: exact get + top-3 vector search in one scope, 384 dimensions\n")
        print(asyncio.run(bench_lookups(args)) + "\n")
    if not args.skip_proxy:
        print(f"## (b) end to end through the proxy, provider latency {args.latency_ms:.0f} ms\n")
        print(bench_proxy(args) + "\n")


if __name__ == "__main__":
    main()
