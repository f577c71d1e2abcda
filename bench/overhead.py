"""Proxy overhead of the costkit pack: the same proxy config with the pack enabled and disabled.

Both proxies run side by side against one fake provider (a separate process with a fixed
latency). Runs are interleaved (disabled, enabled, disabled, enabled, ...) so drift on a
shared machine hits both arms alike; the table reports throughput and p50/p99 latency per
concurrency and the enabled/disabled ratio.

    LITELLM_LOCAL_MODEL_COST_MAP=True python bench/overhead.py --requests 300 --concurrency 1,32
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

from costkit_litellm.testing.proxy_server import (
    COSTKIT_CALLBACK,
    ProxyServer,
    base_config,
    enable_costkit,
    free_port,
    openai_deployment,
    write_config,
)

MODEL = "bench-model"
ARMS = ("disabled", "enabled")


@dataclass
class Run:
    """One timed batch of requests against one arm."""

    latencies_s: list[float]
    wall_s: float
    errors: int


@dataclass
class Arm:
    """All runs of one arm at one concurrency."""

    runs: list[Run] = field(default_factory=list)

    @property
    def latencies_ms(self) -> list[float]:
        return sorted(x * 1000 for run in self.runs for x in run.latencies_s)

    def throughput(self) -> float:
        """Median over rounds of requests per second."""
        return statistics.median(len(r.latencies_s) / r.wall_s for r in self.runs)

    def percentile_ms(self, q: float) -> float:
        values = self.latencies_ms
        return values[min(len(values) - 1, round(q * (len(values) - 1)))]

    def errors(self) -> int:
        return sum(r.errors for r in self.runs)


@contextlib.contextmanager
def fake_provider_process(latency_ms: float) -> Iterator[str]:
    """A FakeProvider in its own process (so it does not share the client's GIL); yields base_url."""
    port = free_port()
    command = [sys.executable, "-m", "costkit_litellm.testing.fake_provider"]
    command += ["--port", str(port), "--latency-ms", str(latency_ms)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"fake provider exited with code {process.returncode}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=1):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def request_body(tag: str) -> dict[str, Any]:
    return {
        "model": MODEL,
        "messages": [{"role": "user", "content": "Summarise the benefits of caching in one line."}],
        "max_tokens": 32,
        "metadata": {"tags": [tag]},
    }


BodyFor = Callable[[int], dict[str, Any]]
"""The request body for the n-th request of a batch."""


async def run_batch(proxy: ProxyServer, requests: int, concurrency: int, body_for: BodyFor) -> Run:
    """Send ``requests`` chat completions with ``concurrency`` workers; time each one."""
    latencies: list[float] = []
    errors = 0
    remaining = iter(range(requests))
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(
        base_url=proxy.base_url, headers=proxy.auth_headers, limits=limits, timeout=60
    ) as client:

        async def worker() -> None:
            nonlocal errors
            for index in remaining:
                start = time.perf_counter()
                response = await client.post("/v1/chat/completions", json=body_for(index))
                latencies.append(time.perf_counter() - start)
                errors += response.status_code != 200

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - start
    return Run(latencies, wall, errors)


async def interleaved(
    proxies: dict[str, ProxyServer],
    arms: Sequence[str],
    args: argparse.Namespace,
    body_for: BodyFor,
    requests_for: Callable[[int], int],
) -> dict[int, dict[str, Arm]]:
    """Warm every arm, then run them in alternating order (A B, B A, ...) at each concurrency."""
    for arm in arms:  # warm (lazy imports, connection pools, first-request caches)
        await run_batch(proxies[arm], args.warmup, max(args.concurrency), body_for)
    width = max(len(arm) for arm in arms)
    results: dict[int, dict[str, Arm]] = {}
    for concurrency in args.concurrency:
        results[concurrency] = {arm: Arm() for arm in arms}
        for round_no in range(args.rounds):
            for arm in arms if round_no % 2 == 0 else arms[::-1]:
                run = await run_batch(proxies[arm], requests_for(concurrency), concurrency, body_for)
                results[concurrency][arm].runs.append(run)
                rate = len(run.latencies_s) / run.wall_s
                print(f"  c={concurrency} round {round_no + 1} {arm:{width}}: {rate:7.1f} req/s", file=sys.stderr)
    return results


def build_configs(args: argparse.Namespace, api_base: str, folder: Path) -> dict[str, Path]:
    base = base_config([openai_deployment(MODEL, api_base)])
    enabled = base
    if not args.pack_less:
        enabled = enable_costkit(base, yaml.safe_load(args.costkit_section) or {}, callback=args.callback)
    return {
        "disabled": write_config(folder / "disabled.yaml", base),
        "enabled": write_config(folder / "enabled.yaml", enabled),
    }


def comparison_table(results: dict[int, dict[str, Arm]], off: str, on: str, ratio: str) -> str:
    """Throughput, p50 and p99 of two arms side by side, with the ratio ``on / off``."""
    rows = [f"| concurrency | metric | {off} | {on} | {ratio} |", "|---:|---|---:|---:|---:|"]
    for concurrency, arms in results.items():
        a_arm, b_arm = arms[off], arms[on]
        for name, a, b in (
            ("req/s", a_arm.throughput(), b_arm.throughput()),
            ("p50 ms", a_arm.percentile_ms(0.50), b_arm.percentile_ms(0.50)),
            ("p99 ms", a_arm.percentile_ms(0.99), b_arm.percentile_ms(0.99)),
        ):
            rows.append(f"| {concurrency} | {name} | {a:.1f} | {b:.1f} | {b / a:.3f} |")
        rows.append(f"| {concurrency} | errors | {a_arm.errors()} | {b_arm.errors()} | |")
    return "\n".join(rows)


async def check_arms(proxies: dict[str, ProxyServer], tag: str, pack_less: bool) -> None:
    """Refuse to measure unless only the enabled arm answers with x-costkit-* headers."""
    for arm, proxy in proxies.items():
        async with httpx.AsyncClient(base_url=proxy.base_url, headers=proxy.auth_headers, timeout=60) as client:
            response = await client.post("/v1/chat/completions", json=request_body(tag))
        response.raise_for_status()
        has_pack = any(name.startswith("x-costkit-") for name in response.headers)
        expected = arm == "enabled" and not pack_less
        if has_pack != expected:
            raise SystemExit(f"{arm} arm: x-costkit-* headers {'present' if has_pack else 'absent'}")


async def bench(args: argparse.Namespace, proxies: dict[str, ProxyServer]) -> dict[int, dict[str, Arm]]:
    await check_arms(proxies, args.tag, args.pack_less)
    body = request_body(args.tag)
    return await interleaved(proxies, ARMS, args, lambda _: body, lambda _: args.requests)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--requests", type=int, default=300, help="requests per run")
    parser.add_argument("--concurrency", default="1,32", help="comma-separated concurrency levels")
    parser.add_argument("--rounds", type=int, default=3, help="runs per arm and concurrency")
    parser.add_argument("--latency-ms", type=float, default=50.0, help="fake provider latency")
    parser.add_argument("--warmup", type=int, default=50, help="untimed requests per arm first")
    parser.add_argument("--callback", default=COSTKIT_CALLBACK, help="litellm_settings.callbacks entry")
    parser.add_argument(
        "--costkit-section",
        default="{metrics: {tag_labels: [feature]}}",
        help="YAML of the top-level costkit: section of the enabled arm",
    )
    parser.add_argument("--tag", default="feature:bench", help="request tag sent with every request")
    parser.add_argument(
        "--pack-less", action="store_true", help="both arms without the pack (checks the harness itself)"
    )
    args = parser.parse_args(argv)
    args.concurrency = [int(c) for c in args.concurrency.split(",")]
    return args


def main(argv: Sequence[str] | None = None) -> None:
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    args = parse_args(argv)
    with (
        tempfile.TemporaryDirectory(prefix="costkit-bench-") as tmp,
        fake_provider_process(args.latency_ms) as api_base,
        contextlib.ExitStack() as stack,
    ):
        configs = build_configs(args, api_base, Path(tmp))
        proxies = {arm: stack.enter_context(ProxyServer(path)) for arm, path in configs.items()}
        print(f"proxies up: {', '.join(f'{a}={p.base_url}' for a, p in proxies.items())}", file=sys.stderr)
        results = asyncio.run(bench(args, proxies))
    label = "pack-less (both arms without the pack)" if args.pack_less else f"pack: {args.callback}"
    print(
        f"\nProxy overhead, {label}; fake provider latency {args.latency_ms:g} ms; "
        f"{args.requests} requests x {args.rounds} rounds per cell, interleaved.\n"
    )
    print(comparison_table(results, "disabled", "enabled", "enabled/disabled"))


if __name__ == "__main__":
    main()
