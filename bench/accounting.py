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
from collections.abc import Awaitable, Callable, Mapping, Sequence
from importlib import resources
from pathlib import Path
from types import MappingProxyType

import httpx

# Run as a script, bench/ is on sys.path: reuse overhead.py's harness.
from overhead import Arm, comparison_table, fake_provider_process, interleaved, request_body
from prometheus_client import CollectorRegistry

from costkit_litellm.accounting.batch import MAX_BATCH
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


class PerEntryScriptStore(RedisStore):
    """The ledger path before the batch script, kept here to compare against: ``ledger_append_many`` as a
    pipeline of one EVALSHA of the per-entry script (``bench/ledger_append_per_entry.lua``, exact
    ``MAXLEN`` on every XADD and ``XTRIM MINID`` on every entry) per entry."""

    _legacy_sha = ""

    async def start(self) -> None:
        await super().start()
        lua = resources.files("costkit_litellm.store").joinpath("lua")
        common = lua.joinpath("common.lua").read_text(encoding="utf-8")
        script = (Path(__file__).parent / "ledger_append_per_entry.lua").read_text(encoding="utf-8")
        self._legacy_sha = await self._conn().script_load(common + "\n" + script)

    async def ledger_append_many(self, entries: Sequence[tuple[str, Mapping[str, str]]]) -> list[bool]:
        stream = f"{self._prefix}:{{ledger}}"
        async with self._in_flight:
            pipe = self._conn().pipeline(transaction=False)
            for entry_id, fields in entries:
                args = [self._now(), entry_id, self._dedupe_ms, self._ledger_max_len, self._ledger_max_age]
                for name, value in fields.items():
                    args += [name, value]
                pipe.evalsha(self._legacy_sha, 2, stream, f"{stream}:id:{entry_id}", *args)
            replies = await pipe.execute(raise_on_error=True)
        return [int(r) == 1 for r in replies]


class CpuMeter:
    """CPU seconds of this process (``time.process_time``) and of the Redis server (``/proc/<pid>/stat``)."""

    _TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100

    def __init__(self, server: RedisServer | None) -> None:
        self._server = server

    def _server_cpu(self) -> float:
        if self._server is None:
            return 0.0
        fields = Path(f"/proc/{self._server.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / self._TICK  # utime + stime

    def __enter__(self) -> CpuMeter:
        self.client, self.server = time.process_time(), self._server_cpu()
        return self

    def __exit__(self, *_: object) -> None:
        self.client, self.server = time.process_time() - self.client, self._server_cpu() - self.server


HEADER = [
    "| operation | store | callers | events | events/s | client CPU µs/event | Redis CPU µs/event | p50 µs | p99 µs |",
    "|---|---|---:|---:|---:|---:|---:|---:|---:|",
]


def _row(
    name: str, store: str, callers: str, events: int, wall: float, latencies: list[float], cpu: CpuMeter | None
) -> tuple[str, float]:
    ordered = sorted(latencies)
    p50 = statistics.median(ordered) * 1e6
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))] * 1e6
    client = f"{cpu.client / events * 1e6:,.1f}" if cpu else "-"
    server = f"{cpu.server / events * 1e6:,.1f}" if cpu and store.startswith("Redis") else "-"
    rate = events / wall
    return (
        f"| {name} | {store} | {callers} | {events} | {rate:,.0f} | {client} | {server} | {p50:,.0f} | {p99:,.0f} |",
        rate,
    )


async def ledger_count(store: Store) -> int:
    return len(await store.ledger_read())


async def bench_ledger_path(
    name: str, store: RedisStore, server: RedisServer, args: argparse.Namespace, cap: int | None
) -> tuple[str, float]:
    """``ledger_append_many`` in batches of ``--batch`` from one task (as ``LedgerBatcher`` calls it)."""
    await store.start()
    try:
        fields = [UsageEvent.from_outcome(sample_outcome(i)).to_fields() for i in range(args.events)]
        entries = [(f"{uuid.uuid4()}:success", f) for f in fields]
        warm = [(f"{uuid.uuid4()}:warm", fields[0]) for _ in range(cap or args.batch)]
        for start in range(0, len(warm), args.batch):  # scripts loaded; at capacity: the stream is full
            await store.ledger_append_many(warm[start : start + args.batch])
        before = await ledger_count(store)
        print(f"  {name}: ledger_append_many x {args.events}", file=sys.stderr)
        latencies = []
        with CpuMeter(server) as cpu:
            started = time.perf_counter()
            for start in range(0, args.events, args.batch):
                t0 = time.perf_counter()
                flags = await store.ledger_append_many(entries[start : start + args.batch])
                latencies.append(time.perf_counter() - t0)
                if not all(flags):
                    raise SystemExit(f"{name}: a new entry was answered as a repeat")
            wall = time.perf_counter() - started
        after = await ledger_count(store)
        expected = cap if cap is not None else before + args.events
        if after != expected:
            raise SystemExit(f"{name}: the ledger holds {after} entries, expected {expected}")
    finally:
        await store.close()
    store_name = "Redis" if cap is None else f"Redis, full (max_entries {cap:,})"
    return _row(name, store_name, f"1 (x{args.batch})", args.events, wall, latencies, cpu)


async def bench_stage(
    name: str, store: Store, server: RedisServer | None, args: argparse.Namespace, callers: int
) -> tuple[str, float]:
    """The whole ``AccountingStage.on_outcome`` (metrics on) from ``callers`` concurrent tasks."""
    await store.start()
    try:
        for i in range(200):  # warm: scripts loaded, pool filled
            await store.ledger_append(f"{uuid.uuid4()}:warm", {"costkit.cost_nano": str(i)})
        before = await ledger_count(store)
        print(f"  {name}: AccountingStage.on_outcome x {args.events}, {callers} callers", file=sys.stderr)
        metrics = CostKitMetrics(("feature", "team"), registry=CollectorRegistry())
        stage = AccountingStage(store, metrics)
        fresh = [sample_outcome(i) for i in range(args.events)]

        async def account(i: int) -> None:
            await stage.on_outcome(fresh[i])

        with CpuMeter(server) as cpu:
            wall, latencies = await timed(args.events, callers, account)
            await stage.flush()
        if await ledger_count(store) - before != args.events:
            raise SystemExit(f"{name}: the stage did not append every event once")
        counted = metrics.requests.labels(
            "gpt-4o-mini", "simple", "success", "chat", "email_writer", "growth"
        )._value.get()
        if counted != args.events:
            raise SystemExit(f"{name}: metrics counted {counted}, expected {args.events}")
    finally:
        await store.close()
    kind = "memory" if isinstance(store, MemoryStore) else "Redis"
    return _row(name, kind, str(callers), args.events, wall, latencies, cpu if server or kind == "memory" else None)


async def bench_single_appends(store: RedisStore, server: RedisServer, args: argparse.Namespace) -> str:
    """``ledger_append`` one call per event from ``--tasks`` concurrent tasks (no batcher)."""
    await store.start()
    try:
        fields = UsageEvent.from_outcome(sample_outcome(0)).to_fields()
        for _ in range(200):
            await store.ledger_append(f"{uuid.uuid4()}:warm", fields)
        ids = [f"{uuid.uuid4()}:success" for _ in range(args.events)]
        print(f"  ledger_append x {args.events}", file=sys.stderr)
        with CpuMeter(server) as cpu:
            wall, latencies = await timed(args.events, args.tasks, lambda i: store.ledger_append(ids[i], fields))
    finally:
        await store.close()
    return _row("ledger_append (one call per event)", "Redis", str(args.tasks), args.events, wall, latencies, cpu)[0]


def bench_metrics_only(args: argparse.Namespace) -> str:
    metrics = CostKitMetrics(("feature", "team"), registry=CollectorRegistry())
    events = [UsageEvent.from_outcome(sample_outcome(i)) for i in range(args.events)]
    latencies = []
    with CpuMeter(None) as cpu:
        start = time.perf_counter()
        for event in events:
            t0 = time.perf_counter()
            metrics.record(event)
            latencies.append(time.perf_counter() - t0)
        wall = time.perf_counter() - start
    return _row("CostKitMetrics.record", "-", "1", args.events, wall, latencies, cpu)[0]


def bench_ledger(args: argparse.Namespace) -> str:
    rows = list(HEADER)
    notes = []

    def store(server: RedisServer, cls: type[RedisStore] = RedisStore, cap: int | None = None) -> RedisStore:
        # A long socket timeout: the checks read the whole ledger back in one call.
        prefix = f"bench{uuid.uuid4().hex[:8]}"
        return cls(server.url, prefix=prefix, socket_timeout_s=60, ledger_max_entries=cap or 10_000_000)

    with RedisServer(search=False) as server:
        for cap in (None, args.full_at):
            old, old_rate = asyncio.run(
                bench_ledger_path(
                    "per-entry script, pipelined (before)", store(server, PerEntryScriptStore, cap), server, args, cap
                )
            )
            new, new_rate = asyncio.run(
                bench_ledger_path("batch script `ledger_append_many`", store(server, cap=cap), server, args, cap)
            )
            rows += [old, new]
            notes.append(
                f"{'full stream' if cap else 'growing stream'}: batch script / before = {new_rate / old_rate:.2f}x"
            )
        rows.append(asyncio.run(bench_single_appends(store(server), server, args)))
        for callers in args.callers:
            before, before_rate = asyncio.run(
                bench_stage(
                    "AccountingStage.on_outcome, ledger before",
                    store(server, PerEntryScriptStore),
                    server,
                    args,
                    callers,
                )
            )
            after, after_rate = asyncio.run(
                bench_stage("AccountingStage.on_outcome", store(server), server, args, callers)
            )
            rows += [before, after]
            notes.append(f"stage, {callers} callers: batch script / before = {after_rate / before_rate:.2f}x")
    for callers in args.callers:
        rows.append(asyncio.run(bench_stage("AccountingStage.on_outcome", MemoryStore(), None, args, callers))[0])
    rows.append(bench_metrics_only(args))
    fields = len(UsageEvent.from_outcome(sample_outcome(0)).to_fields())
    return (
        f"(a) Usage events from one process; {fields} fields per event; the ledger rows call "
        f"`ledger_append_many` with batches of {args.batch} from one task (as `LedgerBatcher` does); "
        f"the stage rows run `AccountingStage.on_outcome` (ledger + metrics by feature and team) from "
        f"that many concurrent callers. Client CPU is this process, Redis CPU the server's (from /proc, "
        f"10 ms ticks); p50/p99 per call (per batch for the ledger rows), queueing included.\n\n"
        + "\n".join(rows)
        + "\n\n"
        + "; ".join(notes)
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
    parser.add_argument("--tasks", type=int, default=32, help="concurrent tasks calling ledger_append one by one")
    parser.add_argument("--callers", default="32,256", help="comma-separated concurrent callers of the stage")
    parser.add_argument("--batch", type=int, default=MAX_BATCH, help="entries per ledger_append_many call")
    parser.add_argument("--full-at", type=int, default=10_000, help="max_entries of the full-stream ledger runs")
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
    args.callers = [int(c) for c in args.callers.split(",")]
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
