"""What budgets cost: store throughput of a reservation cycle, and proxy latency with budgets on vs off.

(a) Store: one *cycle* is what the budget stage does per admitted request: ``reserve`` the worst
case against two limits (a global day budget and a per-user day budget), then ``commit`` the
actual cost and ``release`` the hold. Measured on one local Redis (``RedisServer(search=False)``)
from 1 process and from N processes (multiprocessing spawn: each its own event loop and
``RedisStore``), each with ``--tasks`` concurrent tasks; and on ``MemoryStore`` in 1 process as a
reference. The caps are far above what the run spends, so nothing is refused; after each run the
global limit must hold exactly cycles x actual committed and nothing reserved.

(b) Proxy: two real ``litellm`` proxies with the pack on the same Redis and the same fake provider
(a separate process with a fixed latency): **budgets off** (no budgets) and **budgets on** (a
global day budget and a per-user day budget, too large to refuse). Runs are interleaved
(off, on, on, off, ...) at each concurrency; the table reports req/s and p50/p99 latency.

    LITELLM_LOCAL_MODEL_COST_MAP=True python bench/budgets.py
    LITELLM_LOCAL_MODEL_COST_MAP=True python bench/budgets.py --cycles 5000 --requests 300 --skip-proxy
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/ is not a package: reuse overhead.py
from overhead import Arm, comparison_table, fake_provider_process, interleaved

from costkit_litellm.store import Limit, MemoryStore, RedisStore, Store
from costkit_litellm.testing.proxy_server import (
    ProxyServer,
    base_config,
    enable_costkit,
    openai_deployment,
    write_config,
)
from costkit_litellm.testing.redis_server import RedisServer

MODEL = "bench-model"
ARMS = ("budgets off", "budgets on")
WORST, ACTUAL = 25_200, 12_750  # nano-dollars: a gpt-4o-mini call's worst case and actual cost
HUGE_CAP = 10**15  # $1,000,000: never refuses
USERS = 100


# --- (a) store throughput -------------------------------------------------------------------


@dataclass
class CycleResult:
    """One process's share of a store run."""

    cycles: int
    wall_s: float
    latencies_s: list[float]


def limits_for(cycle: int, tag: str) -> list[Limit]:
    """A global day limit and the per-user day limit of one of USERS users."""
    expires = time.time() + 86_400
    return [
        Limit(f"budget:{tag}:global:day:all", HUGE_CAP, expires_at=expires),
        Limit(f"budget:{tag}:user:day:u{cycle % USERS}", HUGE_CAP, expires_at=expires),
    ]


async def run_cycles(store: Store, worker: int, cycles: int, tasks: int, tag: str) -> CycleResult:
    """``cycles`` reserve + commit + release cycles with ``tasks`` concurrent tasks."""
    latencies: list[float] = []
    todo = iter(range(cycles))

    async def task() -> None:
        for cycle in todo:
            call_id = f"{tag}-{worker}-{cycle}"
            limits = limits_for(cycle, tag)
            start = time.perf_counter()
            result = await store.reserve(call_id, WORST, limits, 600.0)
            if not result.ok:
                raise RuntimeError(f"refused: {result.denied}")
            await store.commit(call_id, ACTUAL, limits)
            await store.release(call_id)
            latencies.append(time.perf_counter() - start)

    start = time.perf_counter()
    await asyncio.gather(*(task() for _ in range(tasks)))
    return CycleResult(cycles, time.perf_counter() - start, latencies)


def redis_worker(url: str, prefix: str, worker: int, cycles: int, tasks: int, tag: str, barrier: Any) -> CycleResult:
    """One spawned process: its own loop and RedisStore; starts with the others at the barrier."""

    async def main() -> CycleResult:
        store = RedisStore(url, prefix=prefix)
        await store.start()
        try:
            await run_cycles(store, worker, min(200, cycles), tasks, f"{tag}-warm")  # scripts, pool
            barrier.wait()
            return await run_cycles(store, worker, cycles, tasks, tag)
        finally:
            await store.close()

    return asyncio.run(main())


async def check_spent(store: Store, tag: str, cycles: int) -> None:
    """Every cycle committed its actual cost once and released its hold."""
    usage = (await store.usage([limits_for(0, tag)[0]]))[0]
    if usage.committed != cycles * ACTUAL or usage.reserved != 0:
        raise SystemExit(f"store run {tag}: expected {cycles * ACTUAL} committed and 0 held, got {usage}")


def redis_run(url: str, prefix: str, processes: int, cycles: int, tasks: int) -> list[CycleResult]:
    tag = f"r{processes}-{uuid.uuid4().hex[:6]}"
    context = multiprocessing.get_context("spawn")
    with context.Manager() as manager:
        barrier = manager.Barrier(processes)
        with context.Pool(processes) as pool:
            jobs = [
                pool.apply_async(redis_worker, (url, prefix, w, cycles, tasks, tag, barrier)) for w in range(processes)
            ]
            results = [job.get(timeout=600) for job in jobs]

    async def check() -> None:
        store = RedisStore(url, prefix=prefix)
        await store.start()
        try:
            await check_spent(store, tag, processes * cycles)
        finally:
            await store.close()

    asyncio.run(check())
    return results


def memory_run(cycles: int, tasks: int) -> list[CycleResult]:
    async def main() -> CycleResult:
        store = MemoryStore()
        await store.start()
        await run_cycles(store, 0, min(200, cycles), tasks, "warm")
        result = await run_cycles(store, 0, cycles, tasks, "m")
        await check_spent(store, "m", cycles)
        return result

    return [asyncio.run(main())]


def percentile_ms(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] * 1000


def store_table(rows: list[tuple[str, int, int, list[CycleResult]]]) -> str:
    lines = [
        "| store | processes | tasks/process | cycles | cycles/s | store calls/s | p50 ms | p99 ms |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for store, processes, tasks, results in rows:
        cycles = sum(r.cycles for r in results)
        rate = cycles / max(r.wall_s for r in results)  # all started together at the barrier
        latencies = [x for r in results for x in r.latencies_s]
        lines.append(
            f"| {store} | {processes} | {tasks} | {cycles} | {rate:,.0f} | {3 * rate:,.0f} | "
            f"{percentile_ms(latencies, 0.5):.2f} | {percentile_ms(latencies, 0.99):.2f} |"
        )
    return "\n".join(lines)


def bench_store(args: argparse.Namespace) -> str:
    rows: list[tuple[str, int, int, list[CycleResult]]] = []
    with RedisServer(search=False) as server:
        prefix = f"bench-{uuid.uuid4().hex[:6]}"
        print(f"redis up: {server.url}", file=sys.stderr)
        for processes in args.processes:
            results = redis_run(server.url, prefix, processes, args.cycles, args.tasks)
            rate = sum(r.cycles for r in results) / max(r.wall_s for r in results)
            print(f"  redis x{processes}: {rate:,.0f} cycles/s", file=sys.stderr)
            rows.append(("Redis", processes, args.tasks, results))
    memory = memory_run(args.memory_cycles, args.tasks)
    print(f"  memory: {memory[0].cycles / memory[0].wall_s:,.0f} cycles/s", file=sys.stderr)
    rows.append(("MemoryStore", 1, args.tasks, memory))
    return store_table(rows)


# --- (b) proxy with budgets on vs off -------------------------------------------------------


def request_body(index: int) -> dict[str, Any]:
    return {
        "model": MODEL,
        "messages": [{"role": "user", "content": "Summarise the benefits of caching in one line."}],
        "max_tokens": 32,
        "metadata": {"user_id": f"user-{index % USERS}"},
    }


def proxy_configs(api_base: str, redis_url: str, folder: Path) -> dict[str, Path]:
    base = base_config([openai_deployment(MODEL, api_base)])
    common = {"redis_url": redis_url, "key_prefix": f"bench-{uuid.uuid4().hex[:6]}"}
    huge = str(HUGE_CAP / 10**9)
    budgets = [
        {"name": "global_day", "scope": "global", "limit_usd": huge, "window": "day"},
        {"name": "user_day", "scope": "user", "limit_usd": huge, "window": "day"},
    ]
    return {
        "budgets off": write_config(folder / "off.yaml", enable_costkit(base, common)),
        "budgets on": write_config(folder / "on.yaml", enable_costkit(base, {**common, "budgets": budgets})),
    }


async def check_arms(proxies: dict[str, ProxyServer]) -> None:
    """Refuse to measure unless only the budgets-on arm reports a remaining budget."""
    for arm, proxy in proxies.items():
        async with httpx.AsyncClient(base_url=proxy.base_url, headers=proxy.auth_headers, timeout=60) as client:
            response = await client.post("/v1/chat/completions", json=request_body(0))
        response.raise_for_status()
        has_budget = "x-costkit-budget-remaining-usd" in response.headers
        if has_budget != (arm == "budgets on"):
            raise SystemExit(f"{arm} arm: budget header {'present' if has_budget else 'absent'}")


async def bench_proxy_arms(args: argparse.Namespace, proxies: dict[str, ProxyServer]) -> dict[int, dict[str, Arm]]:
    await check_arms(proxies)
    return await interleaved(
        proxies, ARMS, args, request_body, lambda c: args.requests if c > 1 else args.serial_requests
    )


def bench_proxy(args: argparse.Namespace) -> str:
    with (
        tempfile.TemporaryDirectory(prefix="costkit-bench-") as tmp,
        RedisServer(search=False) as server,
        fake_provider_process(args.latency_ms) as api_base,
        contextlib.ExitStack() as stack,
    ):
        configs = proxy_configs(api_base, server.url, Path(tmp))
        proxies = {arm: stack.enter_context(ProxyServer(path)) for arm, path in configs.items()}
        print(f"proxies up: {', '.join(f'{a}={p.base_url}' for a, p in proxies.items())}", file=sys.stderr)
        results = asyncio.run(bench_proxy_arms(args, proxies))
    return comparison_table(results, "budgets off", "budgets on", "on/off")


# --- main -----------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--cycles", type=int, default=4000, help="store cycles per process (Redis)")
    parser.add_argument("--memory-cycles", type=int, default=20000, help="store cycles on MemoryStore")
    parser.add_argument("--tasks", type=int, default=32, help="concurrent tasks per process")
    parser.add_argument("--processes", default="1,4", help="comma-separated process counts on Redis")
    parser.add_argument("--requests", type=int, default=300, help="proxy requests per run at concurrency > 1")
    parser.add_argument("--serial-requests", type=int, default=100, help="proxy requests per run at concurrency 1")
    parser.add_argument("--concurrency", default="1,32", help="comma-separated proxy concurrency levels")
    parser.add_argument("--rounds", type=int, default=3, help="runs per arm and concurrency")
    parser.add_argument("--latency-ms", type=float, default=50.0, help="fake provider latency")
    parser.add_argument("--warmup", type=int, default=50, help="untimed requests per arm first")
    parser.add_argument("--skip-store", action="store_true", help="only the proxy table")
    parser.add_argument("--skip-proxy", action="store_true", help="only the store table")
    args = parser.parse_args(argv)
    args.processes = [int(p) for p in args.processes.split(",")]
    args.concurrency = [int(c) for c in args.concurrency.split(",")]
    return args


def main(argv: Sequence[str] | None = None) -> None:
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    args = parse_args(argv)
    started = time.monotonic()
    if not args.skip_store:
        table = bench_store(args)
        print(
            f"\nBudget store: one cycle = reserve (2 limits) + commit + release; {args.cycles} cycles per "
            f"Redis process, {args.memory_cycles} on MemoryStore; {os.cpu_count()} CPUs.\n"
        )
        print(table, flush=True)
    if not args.skip_proxy:
        table = bench_proxy(args)
        print(
            f"\nProxy with budgets (Redis, global day + per-user day) vs without; fake provider latency "
            f"{args.latency_ms:g} ms; {args.serial_requests} (c=1) / {args.requests} requests x {args.rounds} "
            "rounds per cell, interleaved.\n"
        )
        print(table)
    print(f"\n(total {time.monotonic() - started:.0f}s)", file=sys.stderr)


if __name__ == "__main__":
    main()
