"""What one budgeted request costs the Redis server: inner commands per request, usec per EVALSHA, CPU.

Runs the production-shaped pack of ``hot_path.py`` (a global and a per-user day budget, the breaker
with its session spend cap and two session counters, the Redis ledger) inside one process around
``litellm.Router(...).acompletion`` on a mock deployment, against one local Redis, with two arms
interleaved over ``--rounds``:

- **old scripts**: the Lua scripts of a git revision (``--old-rev``, default ``main``), read with
  ``git show`` and loaded in place of the working tree's;
- **new scripts**: the working tree's scripts.

Each run resets ``INFO commandstats`` (``CONFIG RESETSTAT``) after its warm-up and reads it after
``--requests`` requests; the server CPU from ``INFO cpu``. The table gives, per request, the
script calls (EVALSHA), the commands the scripts ran inside them (``redis.call``), the usec per
EVALSHA (its own time, inner commands included), the total command usec and the server CPU;
``--commands`` adds each inner command's calls per request.

``--store`` skips LiteLLM and the pack: each arm is a ``RedisStore`` running the same cycle directly
(``reserve`` with the two session counters against the global, user and session limits, the session
limit's window end moving with each request as the breaker's does, then ``commit_and_release``),
``--tasks`` at a time, in short batches interleaved over ``--rounds``; less noise on a busy machine
(the median batch is reported beside the total).

    LITELLM_LOCAL_MODEL_COST_MAP=True python bench/redis_commands.py --requests 2000 --rounds 2
    python bench/redis_commands.py --store --requests 500 --rounds 10 --commands
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis
from prometheus_client import CollectorRegistry

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/ is not a package: reuse hot_path.py
import hot_path

from costkit_litellm import CostKit
from costkit_litellm.config import parse_config
from costkit_litellm.store import Counter, Limit
from costkit_litellm.store.redis import RedisStore
from costkit_litellm.testing.redis_server import RedisServer

ARMS = ("old scripts", "new scripts")
LUA_DIR = "costkit_litellm/store/lua"
_NOT_INNER = {"evalsha", "eval", "config|resetstat", "script|load", "ping", "info"}
"""Commands the client sends itself (on this path the store sends nothing but scripts)."""


def scripts_at(rev: str) -> dict[str, str]:
    """Every script's source (``common.lua`` prepended) at git revision ``rev``."""
    root = Path(__file__).resolve().parent.parent

    def show(name: str) -> str:
        return subprocess.run(
            ["git", "show", f"{rev}:{LUA_DIR}/{name}.lua"], cwd=root, check=True, capture_output=True, text=True
        ).stdout

    common = show("common")
    names = [
        Path(line).stem
        for line in subprocess.run(
            ["git", "ls-tree", "--name-only", f"{rev}:{LUA_DIR}"], cwd=root, check=True, capture_output=True, text=True
        ).stdout.split()
        if line.endswith(".lua") and line != "common.lua"
    ]
    return {name: common + "\n" + show(name) for name in names}


@dataclass
class Run:
    """One arm's run: per-command stats and the server CPU."""

    requests: int
    cpu_s: float
    commands: dict[str, tuple[int, int]] = field(default_factory=dict)
    """command -> (calls, usec)."""

    def per_request(self, name: str) -> float:
        return self.commands.get(name, (0, 0))[0] / self.requests

    @property
    def inner_calls(self) -> int:
        return sum(calls for name, (calls, _) in self.commands.items() if name not in _NOT_INNER)


def server_cpu_s(client: redis.Redis) -> float:
    """The server's CPU so far (``INFO cpu``: getrusage, finer than /proc's clock ticks)."""
    cpu: dict[str, Any] = client.info("cpu")
    return float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"])


def command_stats(client: redis.Redis) -> dict[str, tuple[int, int]]:
    info: dict[str, Any] = client.info("commandstats")
    return {name.removeprefix("cmdstat_"): (int(v["calls"]), int(v["usec"])) for name, v in info.items()}


async def one_run(router: Any, client: redis.Redis, args: argparse.Namespace, offset: int) -> Run:
    await hot_path.run_load(router, args.warmup, args.concurrency, offset)
    await asyncio.sleep(0.5)  # the ledger's batched appends of the warm-up
    client.config_resetstat()
    before = server_cpu_s(client)
    await hot_path.run_load(router, args.requests, args.concurrency, offset + args.warmup)
    await asyncio.sleep(1.0)  # this run's batched ledger appends
    cpu = server_cpu_s(client) - before
    return Run(args.requests, cpu, command_stats(client))


async def main_async(args: argparse.Namespace, server: RedisServer) -> None:
    import litellm

    from costkit_litellm.litellm_adapter.app import install

    litellm.suppress_debug_info = True
    sources = {"old scripts": scripts_at(args.old_rev), "new scripts": None}
    own_source = RedisStore._source
    routers: dict[str, Any] = {}
    callbacks: dict[str, Any] = {}
    kits = []
    for arm in ARMS:
        old = sources[arm]
        # The kit builds its RedisStore inside; the scripts are read when it starts (first request).
        RedisStore._source = staticmethod(own_source if old is None else old.__getitem__)  # type: ignore[method-assign]
        router = hot_path.make_router()
        kit = CostKit(parse_config(hot_path.pack_section(server.url)), registry=CollectorRegistry())
        callbacks[arm] = install(kit, router)
        hot_path.only(callbacks[arm], list(callbacks.values()))  # LiteLLM's callback lists are global
        await hot_path.run_load(router, 20, 4, 0)  # start the store with this arm's scripts
        routers[arm] = router
        kits.append(kit)
    RedisStore._source = staticmethod(own_source)  # type: ignore[method-assign]
    client = redis.Redis.from_url(server.url, decode_responses=True)
    runs: dict[str, list[Run]] = {arm: [] for arm in ARMS}
    offset = 1_000_000
    for round_no in range(args.rounds):
        order = ARMS if round_no % 2 == 0 else ARMS[::-1]
        for arm in order:
            hot_path.only(callbacks[arm], list(callbacks.values()))  # this arm's kit alone
            run = await one_run(routers[arm], client, args, offset)
            offset += args.warmup + args.requests
            runs[arm].append(run)
            print(
                f"  round {round_no + 1} {arm}: {run.inner_calls / run.requests:.1f} inner calls/req, "
                f"{run.cpu_s * 1e6 / run.requests:.0f} us CPU/req",
                file=sys.stderr,
            )
    client.close()
    for kit in kits:
        await kit.close()
    print_tables(runs, args)


USERS, SESSIONS, WORST, ACTUAL = 100, 400, 25_200, 12_750
HUGE_CAP = 10**15
DAY_END = float((int(time.time()) // 86_400 + 2) * 86_400)


async def store_cycle(store: RedisStore, tag: str, n: int) -> None:
    """One budgeted request as the pack makes it: reserve (counters and three limits), then commit and release."""
    session = f"{tag}:session:s{n // 10 % SESSIONS}"  # an agent session of 10 calls, as hot_path's load
    limits = [
        Limit(f"{tag}:global:day", HUGE_CAP, expires_at=DAY_END),
        Limit(f"{tag}:user:day:u{n % USERS}", HUGE_CAP, expires_at=DAY_END),
        Limit(f"{session}:spend", HUGE_CAP, expires_at=time.time() + 1800),
    ]
    counters = [
        Counter(f"{session}:steps", ttl_s=1800, extend=True, trip_above=10**12),
        Counter(f"{session}:req:{n:016x}", ttl_s=1800, extend=True, trip_above=10**12),
    ]
    result = await store.reserve(f"{tag}-{n}", WORST, limits, 600.0, counters=counters)
    if not result.ok:
        raise SystemExit(f"refused: {result}")
    await store.commit_and_release(f"{tag}-{n}", ACTUAL, limits)


async def store_batch(store: RedisStore, tag: str, start: int, count: int, tasks: int) -> None:
    todo = iter(range(start, start + count))

    async def task() -> None:
        for n in todo:
            await store_cycle(store, tag, n)

    await asyncio.gather(*(task() for _ in range(tasks)))


async def store_main(args: argparse.Namespace, server: RedisServer) -> None:
    stores = {}
    for arm in ARMS:
        store = RedisStore(server.url, prefix=f"cmd-{uuid.uuid4().hex[:6]}")
        if arm == "old scripts":
            store._sources = scripts_at(args.old_rev)
        await store.start()
        await store_batch(store, arm[:3], 0, args.warmup, args.tasks)
        stores[arm] = store
    client = redis.Redis.from_url(server.url, decode_responses=True)
    runs: dict[str, list[Run]] = {arm: [] for arm in ARMS}
    offset = args.warmup
    for round_no in range(args.rounds):
        for arm in ARMS if round_no % 2 == 0 else ARMS[::-1]:
            client.config_resetstat()
            before = server_cpu_s(client)
            await store_batch(stores[arm], arm[:3], offset, args.requests, args.tasks)
            runs[arm].append(Run(args.requests, server_cpu_s(client) - before, command_stats(client)))
        offset += args.requests
    client.close()
    for store in stores.values():
        await store.close()
    print_tables(runs, args)


def print_tables(runs: dict[str, list[Run]], args: argparse.Namespace) -> None:
    def total(arm: str, name: str, index: int) -> float:
        return sum(r.commands.get(name, (0, 0))[index] for r in runs[arm])

    def requests(arm: str) -> int:
        return sum(r.requests for r in runs[arm])

    what = f"RedisStore cycles, {args.tasks} tasks"
    if not args.store:
        what = f"hot_path's pack, concurrency {args.concurrency}"
    print(
        f"\nRedis server cost per request: {what}, {args.requests} requests x {args.rounds} rounds per arm, "
        f"interleaved; old = {args.old_rev}; load average {os.getloadavg()[0]:.1f}.\n"
    )
    print(
        "| arm | EVALSHA/req | inner calls/req | usec/EVALSHA | median batch usec/EVALSHA | command usec/req "
        "| Redis CPU us/req | median batch CPU us/req |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    figures = {}
    for arm in ARMS:
        n = requests(arm)
        evalsha_calls, evalsha_usec = total(arm, "evalsha", 0), total(arm, "evalsha", 1)
        inner = sum(r.inner_calls for r in runs[arm]) / n
        usec = sum(u for r in runs[arm] for _, u in r.commands.values()) / n
        cpu = sum(r.cpu_s for r in runs[arm]) * 1e6 / n
        batch_usec = statistics.median(
            r.commands.get("evalsha", (0, 0))[1] / max(r.commands.get("evalsha", (0, 0))[0], 1) for r in runs[arm]
        )
        batch_cpu = statistics.median(r.cpu_s * 1e6 / r.requests for r in runs[arm])
        figures[arm] = (inner, evalsha_usec / max(evalsha_calls, 1), batch_usec, cpu, batch_cpu)
        print(
            f"| {arm} | {evalsha_calls / n:.2f} | {inner:.1f} | {figures[arm][1]:.1f} | {batch_usec:.1f} | "
            f"{usec:.0f} | {cpu:.0f} | {batch_cpu:.0f} |"
        )
    old, new = figures["old scripts"], figures["new scripts"]
    if all(old):
        ratios = [f"{b / a:.2f}" for a, b in zip(old, new, strict=True)]
        print(f"| new/old | | {ratios[0]} | {ratios[1]} | {ratios[2]} | | {ratios[3]} | {ratios[4]} |")
    if args.commands:
        names = sorted(
            {name for arm in ARMS for r in runs[arm] for name in r.commands if name not in _NOT_INNER},
            key=lambda name: -total("old scripts", name, 0),
        )
        print("\n| inner command | old calls/req | new calls/req |")
        print("|---|---:|---:|")
        for name in names:
            print(
                f"| {name.upper()} | {total('old scripts', name, 0) / requests('old scripts'):.2f} | "
                f"{total('new scripts', name, 0) / requests('new scripts'):.2f} |"
            )


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--requests", type=int, default=2000, help="requests per arm per round")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--warmup", type=int, default=300, help="untimed requests before each run")
    parser.add_argument("--old-rev", default="main", help="git revision of the old scripts")
    parser.add_argument("--commands", action="store_true", help="also each inner command's calls per request")
    parser.add_argument("--store", action="store_true", help="RedisStore cycles directly, without LiteLLM")
    parser.add_argument("--tasks", type=int, default=32, help="--store: concurrent cycles")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    logging.getLogger("LiteLLM").setLevel(logging.ERROR)
    args = parse_args(argv)
    with RedisServer(search=False) as server:
        asyncio.run(store_main(args, server) if args.store else main_async(args, server))


if __name__ == "__main__":
    main()
