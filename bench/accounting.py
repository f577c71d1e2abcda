"""What accounting costs: usage events into the ledger, and the proxy with accounting on vs off.

(a) **Ledger / stage**, in one process: ``--events`` usage events with realistic fields
(``UsageEvent.to_fields()`` of a tagged gpt-4o-mini success: 20 fields) with ``--tasks``
concurrent tasks, through (1) ``store.ledger_append`` alone and (2) the whole
``AccountingStage.on_outcome`` (event built from the outcome, idempotent ledger append, metrics
on a private registry), on a local Redis (``RedisServer(search=False)``) and on ``MemoryStore``;
plus (3) ``CostKitMetrics.record`` alone. After each ledger run it checks that the ledger holds
exactly the events appended.

(b) **Proxy**: a fake provider in its own process and two real ``litellm`` proxies with the
pack, run side by side and interleaved like ``overhead.py``: **accounting off**
(``metrics: {enabled: false}``, ``ledger: {enabled: false}``) and **accounting on** (the
default: ledger + metrics with ``tag_labels: [feature]``). ``--redis`` puts both arms' state
in a local Redis (the on arm's ledger is then a Redis Stream).

    LITELLM_LOCAL_MODEL_COST_MAP=True python bench/accounting.py --events 20000 --requests 300
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from types import MappingProxyType

import httpx

# Run as a script, bench/ is on sys.path: reuse overhead.py's harness.
from overhead import Arm, comparison_table, fake_provider_process, interleaved, request_body
from prometheus_client import CollectorRegistry

from costkit_litellm.accounting.events import UsageEvent
from costkit_litellm.accounting.metrics import CostKitMetrics
from costkit_litellm.accounting.recorder import AccountingStage
from costkit_litellm.context import RequestContext
from costkit_litellm.money import Nano
from costkit_litellm.pipeline import Outcome
from costkit_litellm.store import MemoryStore, RedisStore, Store
from costkit_litellm.testing.proxy_server import (
    ProxyServer,
    base_config,
    enable_costkit,
    openai_deployment,
    write_config,
)
from costkit_litellm.testing.redis_server import RedisServer

MODEL = "bench-model"
ARMS = ("accounting off", "accounting on")
TAG = "feature:bench"


# --- (a) ledger and stage -------------------------------------------------------------------


def sample_outcome(i: int) -> Outcome:
    """A tagged gpt-4o-mini success like the proxy records (cost 13,500 n$)."""
    context = RequestContext(
        call_id=f"{uuid.uuid4()}",
        model="gpt-4o-mini",
        api_key_hash="3f2a9c0d1e7b4a58",
        user_id=f"user-{i % 100}",
        team_id="growth",
        end_user=f"end-{i % 1000}",
        tags=("feature:email_writer", "team:growth"),
        attributes=MappingProxyType({"feature": "email_writer", "team": "growth"}),
        session_id=f"session-{i % 50}",
    )
    return Outcome(
        kind="success",
        context=context,
        model="gpt-4o-mini",
        deployment_model="openai/gpt-4o-mini",
        cost=Nano(13_500),
        prompt_tokens=42,
        completion_tokens=12,
        estimate=Nano(25_200),
        tier="simple",
        cache_status="miss",
        latency_s=0.412,
        timestamp=time.time(),
    )


async def timed(events: int, tasks: int, one: Callable[[int], Awaitable[object]]) -> tuple[float, list[float]]:
    """Run ``one(i)`` for i in range(events) with ``tasks`` workers; (wall s, per-call latencies s)."""
    latencies: list[float] = []
    indices = iter(range(events))

    async def worker() -> None:
        for i in indices:
            start = time.perf_counter()
            await one(i)
            latencies.append(time.perf_counter() - start)

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(tasks)))
    return time.perf_counter() - start, latencies


def _row(name: str, store: str, events: int, wall: float, latencies: list[float]) -> str:
    ordered = sorted(latencies)
    p50 = statistics.median(ordered) * 1e6
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))] * 1e6
    return f"| {name} | {store} | {events} | {events / wall:,.0f} | {p50:,.0f} | {p99:,.0f} |"


async def bench_store_kind(name: str, store: Store, args: argparse.Namespace) -> list[str]:
    await store.start()
    rows = []
    try:
        outcomes = [sample_outcome(i) for i in range(args.events)]
        fields = [UsageEvent.from_outcome(o).to_fields() for o in outcomes]
        for outcome in (sample_outcome(i) for i in range(200)):  # warm: scripts loaded, pool filled
            await store.ledger_append(f"{outcome.context.call_id}:warm", {"costkit.cost_nano": "1"})
        print(f"  {name}: ledger_append x {args.events}", file=sys.stderr)
        before = len(await store.ledger_read())

        async def append(i: int) -> object:
            return await store.ledger_append(f"{outcomes[i].context.call_id}:success", fields[i])

        wall, latencies = await timed(args.events, args.tasks, append)
        rows.append(_row("ledger_append", name, args.events, wall, latencies))
        after = len(await store.ledger_read())
        if after - before != args.events:
            raise SystemExit(f"{name}: ledger grew by {after - before}, expected {args.events}")

        print(f"  {name}: AccountingStage.on_outcome x {args.events}", file=sys.stderr)
        metrics = CostKitMetrics(("feature", "team"), registry=CollectorRegistry())
        stage = AccountingStage(store, metrics)
        fresh = [sample_outcome(i) for i in range(args.events)]

        async def account(i: int) -> None:
            await stage.on_outcome(fresh[i])

        wall, latencies = await timed(args.events, args.tasks, account)
        rows.append(_row("AccountingStage.on_outcome", name, args.events, wall, latencies))
        if len(await store.ledger_read()) - after != args.events:
            raise SystemExit(f"{name}: the stage did not append every event once")
        counted = metrics.requests.labels("gpt-4o-mini", "simple", "success", "email_writer", "growth")._value.get()
        if counted != args.events:
            raise SystemExit(f"{name}: metrics counted {counted}, expected {args.events}")
    finally:
        await store.close()
    return rows


def bench_metrics_only(args: argparse.Namespace) -> str:
    metrics = CostKitMetrics(("feature", "team"), registry=CollectorRegistry())
    events = [UsageEvent.from_outcome(sample_outcome(i)) for i in range(args.events)]
    latencies = []
    start = time.perf_counter()
    for event in events:
        t0 = time.perf_counter()
        metrics.record(event)
        latencies.append(time.perf_counter() - t0)
    wall = time.perf_counter() - start
    return _row("CostKitMetrics.record", "-", args.events, wall, latencies)


def bench_ledger(args: argparse.Namespace) -> str:
    rows = [
        "| operation | store | events | events/s | p50 µs | p99 µs |",
        "|---|---|---:|---:|---:|---:|",
    ]
    with RedisServer(search=False) as server:
        prefix = f"bench{uuid.uuid4().hex[:8]}"
        # A long socket timeout: the checks read the whole ledger back in one call.
        store = RedisStore(server.url, prefix=prefix, socket_timeout_s=60)
        rows += asyncio.run(bench_store_kind("Redis", store, args))
    rows += asyncio.run(bench_store_kind("memory", MemoryStore(), args))
    rows.append(bench_metrics_only(args))
    fields = len(UsageEvent.from_outcome(sample_outcome(0)).to_fields())
    return (
        f"(a) Usage events from one process, {args.tasks} concurrent tasks; {fields} fields per event; "
        f"p50/p99 per call under that concurrency (queueing included).\n\n" + "\n".join(rows)
    )


# --- (b) proxy ---------------------------------------------------------------------------------


def proxy_configs(api_base: str, redis_url: str | None, folder: Path) -> dict[str, Path]:
    base = base_config([openai_deployment(MODEL, api_base)])
    shared = {"redis_url": redis_url, "key_prefix": f"bench{uuid.uuid4().hex[:8]}"} if redis_url else {}
    off = enable_costkit(base, {**shared, "metrics": {"enabled": False}, "ledger": {"enabled": False}})
    on = enable_costkit(base, {**shared, "metrics": {"tag_labels": ["feature"]}})
    return {
        "accounting off": write_config(folder / "accounting-off.yaml", off),
        "accounting on": write_config(folder / "accounting-on.yaml", on),
    }


async def bench_proxy_arms(args: argparse.Namespace, proxies: dict[str, ProxyServer]) -> dict[int, dict[str, Arm]]:
    for arm, proxy in proxies.items():  # both arms run the pack (the cost header is there)
        async with httpx.AsyncClient(base_url=proxy.base_url, headers=proxy.auth_headers, timeout=60) as client:
            response = await client.post("/v1/chat/completions", json=request_body(TAG))
        response.raise_for_status()
        if "x-costkit-cost-usd" not in response.headers:
            raise SystemExit(f"{arm} arm: no x-costkit-cost-usd header")
    body = request_body(TAG)
    return await interleaved(
        proxies, ARMS, args, lambda _: body, lambda c: args.requests if c > 1 else args.serial_requests
    )


def bench_proxy(args: argparse.Namespace) -> str:
    with (
        tempfile.TemporaryDirectory(prefix="costkit-bench-") as tmp,
        contextlib.ExitStack() as stack,
    ):
        redis_url = stack.enter_context(RedisServer(search=False)).url if args.redis else None
        api_base = stack.enter_context(fake_provider_process(args.latency_ms))
        configs = proxy_configs(api_base, redis_url, Path(tmp))
        proxies = {arm: stack.enter_context(ProxyServer(path)) for arm, path in configs.items()}
        print(f"proxies up: {', '.join(f'{a}={p.base_url}' for a, p in proxies.items())}", file=sys.stderr)
        results = asyncio.run(bench_proxy_arms(args, proxies))
    state = "Redis" if args.redis else "in process"
    return (
        f"(b) Proxy with the pack, accounting off vs on (state {state}); fake provider latency "
        f"{args.latency_ms:g} ms; interleaved rounds.\n\n"
        + comparison_table(results, "accounting off", "accounting on", "on/off")
    )


# --- main ----------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--events", type=int, default=20000, help="usage events per ledger run")
    parser.add_argument("--tasks", type=int, default=32, help="concurrent tasks appending events")
    parser.add_argument("--requests", type=int, default=300, help="proxy requests per run at concurrency > 1")
    parser.add_argument("--serial-requests", type=int, default=100, help="proxy requests per run at concurrency 1")
    parser.add_argument("--concurrency", default="1,32", help="comma-separated proxy concurrency levels")
    parser.add_argument("--rounds", type=int, default=3, help="runs per arm and concurrency")
    parser.add_argument("--latency-ms", type=float, default=50.0, help="fake provider latency")
    parser.add_argument("--warmup", type=int, default=50, help="untimed requests per arm first")
    parser.add_argument("--redis", action="store_true", help="proxy arms keep state (and the ledger) in a local Redis")
    parser.add_argument("--skip-ledger", action="store_true", help="only the proxy table")
    parser.add_argument("--skip-proxy", action="store_true", help="only the ledger table")
    args = parser.parse_args(argv)
    args.concurrency = [int(c) for c in args.concurrency.split(",")]
    return args


def main(argv: Sequence[str] | None = None) -> None:
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    args = parse_args(argv)
    started = time.monotonic()
    print(f"Accounting benchmark; os.cpu_count() = {os.cpu_count()}\n")
    if not args.skip_ledger:
        print(bench_ledger(args) + "\n", flush=True)
    if not args.skip_proxy:
        print(bench_proxy(args) + "\n", flush=True)
    print(f"({time.monotonic() - started:.0f} s)")


if __name__ == "__main__":
    main()
