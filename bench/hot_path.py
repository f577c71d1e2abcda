"""The pack's own CPU per request, measured in process around a LiteLLM ``Router``.

The proxy bench (``pack_overhead.py``) measures from outside and is the figure that counts, but
on a shared 2-core machine its CPU per request drifts by +-10%, more than the pack costs. This one
runs the same production-shaped pack (two budgets, the breaker (its session spend cap held with the budgets),
accounting with the Redis ledger, metrics by feature) inside one process around
``litellm.Router(...).acompletion`` on a mock deployment, and times the process CPU
(``time.process_time``) and the Redis server's CPU (``/proc``) per request, for arms interleaved
over several rounds:

- ``router``: the bare Router (no pack);
- ``router + pack``: the same Router with ``install(kit, router)``.

The difference is the pack's cost per request, including LiteLLM's work for a registered
callback. ``--profile`` adds a cProfile of the pack arm and prints the pack's top functions
(``--profile-sort tottime`` for their own time, ``--profile-filter ''`` for LiteLLM's too; cProfile
counts every resumption of a coroutine as a call, so an ``async def`` shows about two calls per request;
``--profile-dump FILE`` keeps the stats for ``pstats``' ``print_callees``). cProfile inflates deep
call trees (LiteLLM's tokenizer reads several times its unprofiled cost): read its shares, not its times.
Each arm's garbage collection is reported too (wall time in collections, collections per 1,000
requests by generation); ``--gc-freeze`` freezes the warmed-up heap out of the collector first.

    LITELLM_LOCAL_MODEL_COST_MAP=True python bench/hot_path.py --requests 2000 --rounds 3
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import io
import logging
import os
import pstats
import statistics
import sys
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from costkit_litellm import CostKit
from costkit_litellm.config import parse_config
from costkit_litellm.testing.redis_server import RedisServer

MODEL = "bench-model"
FEATURES = ("search", "chat", "summary", "support")
USERS = 100
HUGE_USD = 1_000_000


def pack_section(redis_url: str) -> dict[str, Any]:
    """The production-shaped ``costkit:`` section (the same as ``pack_overhead.py``'s full pack)."""
    return {
        "redis_url": redis_url,
        "key_prefix": f"hot-{uuid.uuid4().hex[:6]}",
        "budgets": [
            {"name": "global_day", "scope": "global", "limit_usd": HUGE_USD, "window": "day"},
            {"name": "user_day", "scope": "user", "limit_usd": HUGE_USD, "window": "day"},
        ],
        "breaker": {"enabled": True},
        "metrics": {"tag_labels": ["feature"]},
    }


class GcTimer:
    """Wall time spent in the garbage collector (``gc.callbacks``), and collections per generation: in one
    thread doing only this work, the collector's CPU, which lands in whatever frame allocated last."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.collections = [0, 0, 0]
        self._started = 0.0
        gc.callbacks.append(self._callback)

    def _callback(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.seconds += time.perf_counter() - self._started
            self.collections[info["generation"]] += 1

    def snapshot(self) -> tuple[float, int, int, int]:
        young, middle, old = self.collections
        return self.seconds, young, middle, old


GC = GcTimer()


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def request(n: int) -> dict[str, Any]:
    """The n-th request of the load: 100 users, 4 features, an agent session of 10 calls."""
    return {
        "model": MODEL,
        "max_tokens": 32,
        "messages": [{"role": "user", "content": f"Summarise the benefits of caching in one line ({n})."}],
        "metadata": {
            "user_id": f"user-{n % USERS}",
            "session_id": f"session-{n // 10}",
            "tags": [f"feature:{FEATURES[n % len(FEATURES)]}"],
        },
    }


async def run_load(router: Any, requests: int, concurrency: int, offset: int) -> tuple[float, float]:
    """Send ``requests`` requests with ``concurrency`` workers and wait for LiteLLM's logging worker
    to run their success callbacks (their CPU belongs to this run); (wall s, process CPU s)."""
    from costkit_litellm.litellm_adapter.lifecycle import wait_for_logging_callbacks

    queue = iter(range(offset, offset + requests))

    async def worker() -> None:
        for n in queue:
            await router.acompletion(**request(n))

    cpu, wall = time.process_time(), time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    await wait_for_logging_callbacks(30.0)
    return time.perf_counter() - wall, time.process_time() - cpu


def only(callback: Any | None, callbacks: Sequence[Any]) -> None:
    """Leave ``callback`` (None: none) as the only pack registered with LiteLLM.

    LiteLLM's callback lists are global: a kit installed on one router sees every router's calls.
    Each arm runs with its own kit alone, so the bare Router arm runs no pack callback at all."""
    import litellm

    for each in callbacks:
        litellm.logging_callback_manager.remove_callback_from_all_lists(each)
    if callback is not None:
        litellm.callbacks.append(callback)


def make_router() -> Any:
    import litellm

    deployment = {"model_name": MODEL, "litellm_params": {"model": "openai/gpt-4o-mini", "mock_response": "ok"}}
    return litellm.Router(model_list=[deployment])


async def main_async(args: argparse.Namespace, redis: RedisServer) -> None:
    import litellm

    from costkit_litellm.litellm_adapter.app import install

    litellm.suppress_debug_info = True
    bare = make_router()
    packed = make_router()
    kit = CostKit(parse_config(pack_section(redis.url)), registry=CollectorRegistry())
    callbacks: dict[str, Any] = {"router": None, "router + pack": install(kit, packed)}
    arms = {"router": bare, "router + pack": packed}
    kits = [kit]
    if args.memory_arm:  # the same pack on the in-process store: the pack's Python alone
        in_process = make_router()
        section = {k: v for k, v in pack_section(redis.url).items() if k != "redis_url"}
        kits.append(CostKit(parse_config(section), registry=CollectorRegistry()))
        callbacks["router + pack (in-process store)"] = install(kits[-1], in_process)
        arms["router + pack (in-process store)"] = in_process
    registered = [cb for cb in callbacks.values() if cb is not None]
    results: dict[str, list[tuple[int, float, float, float]]] = {arm: [] for arm in arms}
    gc_runs: dict[str, list[tuple[float, ...]]] = {arm: [] for arm in arms}
    assert redis._proc is not None
    redis_pid = redis._proc.pid
    offset = 0
    for arm, router in arms.items():  # warm-up: imports, scripts, label children
        only(callbacks[arm], registered)
        await run_load(router, args.warmup, args.concurrency, offset)
        offset += args.warmup
    await asyncio.sleep(0.5)
    if args.gc_freeze:
        gc.collect()
        gc.freeze()
    for round_no in range(args.rounds):
        order = list(arms.items()) if round_no % 2 == 0 else list(arms.items())[::-1]
        for arm, router in order:
            only(callbacks[arm], registered)
            redis_before = _cpu_s(redis_pid)
            gc_before = GC.snapshot()
            wall, cpu = await run_load(router, args.requests, args.concurrency, offset)
            offset += args.requests
            gc_after = GC.snapshot()
            results[arm].append((args.requests, wall, cpu, _cpu_s(redis_pid) - redis_before))
            gc_runs[arm].append(tuple(a - b for a, b in zip(gc_after, gc_before, strict=True)))
            print(f"  round {round_no + 1} {arm:34}: {1000 * cpu / args.requests:.3f} CPU ms/req", file=sys.stderr)
    if args.profile:
        only(callbacks["router + pack"], registered)
        profiler = cProfile.Profile()
        profiler.enable()
        await run_load(packed, args.requests, args.concurrency, offset)
        profiler.disable()
        if args.profile_dump:
            profiler.dump_stats(args.profile_dump)
        out = io.StringIO()
        stats = pstats.Stats(profiler, stream=out)
        stats.sort_stats(args.profile_sort).print_stats(args.profile_filter, 40)
        print(out.getvalue(), file=sys.stderr)
    await asyncio.sleep(1.0)  # the last logging callbacks
    for each in kits:
        await each.close()
    print_table(results, gc_runs, args)


def print_table(
    results: dict[str, list[tuple[int, float, float, float]]],
    gc_runs: dict[str, list[tuple[float, ...]]],
    args: argparse.Namespace,
) -> None:
    def per_req(runs: Sequence[tuple[int, float, float, float]], index: int) -> float:
        return 1000 * sum(r[index] for r in runs) / sum(r[0] for r in runs)

    base = results["router"]
    print(
        f"\nIn-process hot path: Router on a mock deployment, {args.requests} requests x {args.rounds} rounds "
        f"per arm at concurrency {args.concurrency}, interleaved; {os.cpu_count()} CPUs, "
        f"load average {os.getloadavg()[0]:.1f}.\n"
    )
    print(
        "| arm | req/s | process CPU ms/req | of which GC ms/req | collections per 1,000 req (gen 0/1/2) "
        "| Redis CPU ms/req | added CPU ms/req (process + Redis) |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for arm, runs in results.items():
        rate = statistics.median(r[0] / r[1] for r in runs)
        added = per_req(runs, 2) + per_req(runs, 3) - per_req(base, 2) - per_req(base, 3)
        note = "" if arm == "router" else f"{added:+.3f}"
        total = sum(r[0] for r in runs)
        gc_ms = 1000 * sum(g[0] for g in gc_runs[arm]) / total
        gens = "/".join(f"{1000 * sum(g[i] for g in gc_runs[arm]) / total:.0f}" for i in (1, 2, 3))
        print(
            f"| {arm} | {rate:.0f} | {per_req(runs, 2):.3f} | {gc_ms:.3f} | {gens} | {per_req(runs, 3):.3f} | {note} |"
        )


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--requests", type=int, default=2000, help="requests per arm per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--warmup", type=int, default=300)
    parser.add_argument("--memory-arm", action="store_true", help="add the pack on the in-process store")
    parser.add_argument(
        "--gc-freeze",
        action="store_true",
        help="after the warm-up, gc.collect() and gc.freeze() (what performance.gc_freeze_after_s does in a proxy)",
    )
    parser.add_argument("--profile", action="store_true", help="cProfile one more pack run; print the pack's top")
    parser.add_argument("--profile-dump", help="also write the cProfile stats to this file (for pstats or snakeviz)")
    parser.add_argument("--profile-sort", default="cumulative", help="pstats order: cumulative, tottime, ncalls...")
    parser.add_argument(
        "--profile-filter", default="costkit_litellm", help="only functions whose path matches ('' = everything)"
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    logging.getLogger("LiteLLM").setLevel(logging.ERROR)
    args = parse_args(argv)
    with RedisServer(search=False) as redis:
        asyncio.run(main_async(args, redis))


if __name__ == "__main__":
    main()
