"""What each stage of the pack costs the proxy, measured from outside with wrk and /proc.

One run, side by side: a vanilla LiteLLM proxy, the pack with each stage alone, and the full
production-shaped pack (two budgets, the breaker with its session spend cap, accounting with the
Redis ledger, metrics by feature; every request names a user, a feature and an agent session of
ten calls, new sessions every run), all on mock deployments (``mock_response``: no provider process, so the proxy is the
only thing doing work) and a real Redis per pack arm from the harness. Runs are interleaved (every arm once
per round, the order reversed every other round) so drift on a shared machine hits every arm.

Per run: ``wrk`` (C, so the load generator is not the bottleneck) at the given concurrency for
``--duration`` seconds, and the CPU time (utime + stime from ``/proc``) of the proxy's process
group plus its Redis server over that run. The table: req/s (median over rounds), CPU ms per
request (proxy tree + Redis, over all rounds), p50/p99 (median over rounds of wrk's
percentiles), errors, and each arm's ratio to vanilla.

    LITELLM_LOCAL_MODEL_COST_MAP=True python bench/pack_overhead.py --duration 10 --rounds 3

``--together`` loads every arm at once in each round instead, each with its own wrk: on a shared
machine whose speed drifts by 20% between rounds (steal, neighbours) the arms then see the same
machine, and the differences between them hold from round to round. Every pack arm has a Redis
server of its own, so each arm's Redis CPU is its own. The default interleaved rounds give each arm
the whole machine.

The ``+ gc freeze`` arms (not run by default) freeze each proxy's start-up heap out of the garbage
collector: the pack's by its ``performance.gc_freeze_after_s`` setting, vanilla by a ``sitecustomize``
doing the same, so the pack's overhead can be read with and without it:

    python bench/pack_overhead.py --arms "vanilla,full pack,vanilla + gc freeze,full pack + gc freeze"

Before and after in one run: check an older commit out (``git worktree add /tmp/before <commit>``)
and add arms named ``<arm> @ baseline`` with ``--baseline /tmp/before``; those proxies import
the pack from there.

Needs ``wrk`` on the PATH (Debian: ``apt-get install wrk``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from costkit_litellm.testing.proxy_server import (
    ProxyServer,
    base_config,
    enable_costkit,
    mock_deployment,
    write_config,
)
from costkit_litellm.testing.redis_server import RedisServer

MODEL = "bench-model"
HUGE_USD = 1_000_000
USERS = 100
FEATURES = ("search", "chat", "summary", "support")

OFF: dict[str, Any] = {"breaker": {"enabled": False}, "ledger": {"enabled": False}, "metrics": {"enabled": False}}
BUDGETS = [
    {"name": "global_day", "scope": "global", "limit_usd": HUGE_USD, "window": "day"},
    {"name": "user_day", "scope": "user", "limit_usd": HUGE_USD, "window": "day"},
]
ARM_SECTIONS: dict[str, dict[str, Any] | None] = {
    "vanilla": None,
    "pack (no stage)": OFF,
    "budgets": {**OFF, "budgets": BUDGETS},
    "breaker": {**OFF, "breaker": {"enabled": True}},
    "ledger (Redis)": {**OFF, "ledger": {"enabled": True}},
    "metrics by feature": {**OFF, "metrics": {"enabled": True, "tag_labels": ["feature"]}},
    "full pack": {"budgets": BUDGETS, "breaker": {"enabled": True}, "metrics": {"tag_labels": ["feature"]}},
    "vanilla + gc freeze": None,
    "full pack + gc freeze": {
        "budgets": BUDGETS,
        "breaker": {"enabled": True},
        "metrics": {"tag_labels": ["feature"]},
        "performance": {"gc_freeze_after_s": 5},
    },
}
DEFAULT_ARMS = [arm for arm in ARM_SECTIONS if not arm.endswith(" + gc freeze")]
FREEZE = " + gc freeze"
"""Arms whose proxy freezes its start-up heap (``performance.gc_freeze_after_s``): the pack's arm by its
own setting, the vanilla one by a ``sitecustomize`` the bench puts on its PYTHONPATH that does the same
(``gc.collect(); gc.freeze()``) once LiteLLM has started, so the two compare like for like."""
PROBE = """
# The bench's sitecustomize, on every arm's PYTHONPATH: the garbage collector's CPU (the collecting
# thread's, around each collection) and collections per generation, written every 0.25 s to
# $COSTKIT_BENCH_GC_DIR/<pid>.json; with $COSTKIT_BENCH_FREEZE_AFTER_S, a vanilla proxy's start-up
# heap frozen as the pack's performance.gc_freeze_after_s does.
import gc, json, os, sys, threading, time

_stats = {"seconds": 0.0, "collections": [0, 0, 0]}
_started = [0.0]


def _callback(phase, info):
    if phase == "start":
        _started[0] = time.thread_time()
    else:
        _stats["seconds"] += time.thread_time() - _started[0]
        _stats["collections"][info["generation"]] += 1


def _dump(folder):
    path, tmp = f"{folder}/{os.getpid()}.json", f"{folder}/{os.getpid()}.tmp"
    while True:
        time.sleep(0.25)
        with open(tmp, "w") as out:
            json.dump(_stats, out)
        os.replace(tmp, path)


def _freeze():
    gc.collect()
    gc.freeze()
    print(f"froze the start-up heap ({gc.get_freeze_count()} objects)", file=sys.stderr, flush=True)


if os.environ.get("COSTKIT_BENCH_GC_DIR"):
    gc.callbacks.append(_callback)
    threading.Thread(target=_dump, args=(os.environ["COSTKIT_BENCH_GC_DIR"],), daemon=True).start()
if os.environ.get("COSTKIT_BENCH_FREEZE_AFTER_S"):
    _timer = threading.Timer(float(os.environ["COSTKIT_BENCH_FREEZE_AFTER_S"]), _freeze)
    _timer.daemon = True
    _timer.start()
"""
FROZE = re.compile(r"froze the start-up heap \((\d+) objects\)")
"""The line both kinds of freezing arm log (the pack's ``costkit.heap``, the bench's ``sitecustomize``)."""


def wait_frozen(started: dict[str, ProxyServer], timeout_s: float = 90.0) -> None:
    """Wait until every freezing arm has logged its freeze (measuring one before would mix both states)."""
    deadline = time.monotonic() + timeout_s
    for arm, proxy in started.items():
        if FREEZE not in arm:
            continue
        while not (found := FROZE.findall(proxy.log_text())):
            if time.monotonic() > deadline:
                raise SystemExit(f"{arm}: no freeze logged after {timeout_s:g} s:\n{proxy.log_tail()}")
            time.sleep(0.5)
        print(f"  {arm}: froze {found[0]} objects", file=sys.stderr)


BASELINE = " @ baseline"
"""Suffix of an arm run with ``--baseline``'s checkout of the pack (an older commit) on its PYTHONPATH."""
"""Each arm's ``costkit:`` section (``None``: no pack); every pack arm gets the same Redis."""

WRK_SCRIPT = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer %(key)s"
local features = {%(features)s}
local threads = 0
math.randomseed(os.time())
local run_id = os.time() .. "." .. math.random(1000000)
function setup(thread)
  thread:set("tid", run_id .. "." .. threads)
  threads = threads + 1
end
local n = 0
request = function()
  n = n + 1
  local who = tid .. "-" .. n
  local body = '{"model":"%(model)s","max_tokens":32,'
    .. '"messages":[{"role":"user","content":"Summarise the benefits of caching in one line (' .. who .. ')."}],'
    .. '"metadata":{"user_id":"user-' .. (n %% %(users)d) .. '",'
    .. '"session_id":"session-' .. tid .. '-' .. math.floor(n / 10) .. '",'
    .. '"tags":["feature:' .. features[(n %% #features) + 1] .. '"]}}'
  return wrk.format(nil, "/v1/chat/completions", nil, body)
end
"""


@dataclass
class WrkRun:
    """One wrk run against one arm, with the CPU the arm's processes used meanwhile."""

    requests: int
    wall_s: float
    p50_ms: float
    p99_ms: float
    errors: int
    cpu_s: float
    """Proxy process group plus Redis."""
    redis_cpu_s: float = 0.0
    gc_s: float = 0.0
    """The proxy's CPU in its garbage collector (the bench's probe)."""
    full_collections: int = 0

    @property
    def rate(self) -> float:
        return self.requests / self.wall_s


@dataclass
class ArmResult:
    runs: list[WrkRun] = field(default_factory=list)

    def rate(self) -> float:
        return statistics.median(r.rate for r in self.runs)

    def cpu_ms_per_request(self) -> float:
        return 1000 * sum(r.cpu_s for r in self.runs) / max(1, sum(r.requests for r in self.runs))

    def cpu_ms_median(self) -> float:
        """The median over rounds of CPU ms per request: the proxy's CPU jumps between rounds of the
        same arm (LiteLLM's periodic background work falls in some rounds), so a single slow round
        moves the total but not the median."""
        return statistics.median(1000 * r.cpu_s / max(1, r.requests) for r in self.runs)

    def redis_ms_per_request(self) -> float:
        return 1000 * sum(r.redis_cpu_s for r in self.runs) / max(1, sum(r.requests for r in self.runs))

    def gc_ms_per_request(self) -> float:
        return 1000 * sum(r.gc_s for r in self.runs) / max(1, sum(r.requests for r in self.runs))

    def full_per_1k(self) -> float:
        return 1000 * sum(r.full_collections for r in self.runs) / max(1, sum(r.requests for r in self.runs))

    def p50(self) -> float:
        return statistics.median(r.p50_ms for r in self.runs)

    def p99(self) -> float:
        return statistics.median(r.p99_ms for r in self.runs)

    def errors(self) -> int:
        return sum(r.errors for r in self.runs)


_TICK = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2 :].split()  # fields from 3 (state) on


def group_cpu_s(pgids: Sequence[int], pids: Sequence[int] = ()) -> float:
    """utime + stime (seconds) of every live process in the process groups ``pgids`` and of ``pids``."""
    total = 0
    wanted = set(pgids)
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        fields = _stat_fields(int(entry.name))
        if fields is None:
            continue
        if int(fields[2]) in wanted or int(entry.name) in pids:  # fields[2] is pgrp (field 5)
            total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15)
    return total / _TICK


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


def _ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if match is None:
        raise ValueError(f"unexpected wrk latency {text!r}")
    return float(match.group(1)) * _UNITS[match.group(2)]


def parse_wrk(output: str) -> tuple[int, float, float, float, int]:
    """``(requests, wall_s, p50_ms, p99_ms, errors)`` from ``wrk --latency`` output."""
    done = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m)", output)
    p50 = re.search(r"^\s+50%\s+(\S+)", output, re.M)
    p99 = re.search(r"^\s+99%\s+(\S+)", output, re.M)
    if not (done and p50 and p99):
        raise RuntimeError(f"cannot read wrk output:\n{output}")
    errors = 0
    if non2xx := re.search(r"Non-2xx or 3xx responses: (\d+)", output):
        errors += int(non2xx.group(1))
    if socket := re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output):
        errors += sum(int(x) for x in socket.groups())
    wall_s = _ms(done.group(2) + done.group(3)) / 1000
    return int(done.group(1)), wall_s, _ms(p50.group(1)), _ms(p99.group(1)), errors


def wrk_command(proxy: ProxyServer, script: Path, args: argparse.Namespace, duration: float) -> list[str]:
    """wrk at ``--concurrency`` (two threads) for ``duration`` seconds against one arm."""
    threads = min(2, args.concurrency)
    command = ["wrk", "--latency", f"-t{threads}", f"-c{args.concurrency}", f"-d{duration:g}s", "--timeout", "30s"]
    return [*command, "-s", str(script), proxy.base_url]


GC_DIR_ENV = "COSTKIT_BENCH_GC_DIR"


def gc_reading(proxy: ProxyServer) -> tuple[float, int]:
    """(seconds in the collector, full collections) so far, from the arm's probe (zeros without one)."""
    folder = proxy.env.get(GC_DIR_ENV)
    try:
        data = json.loads((Path(folder) / f"{proxy.pid}.json").read_text()) if folder else None
    except (OSError, ValueError):
        data = None
    return (float(data["seconds"]), int(data["collections"][2])) if data else (0.0, 0)


def gc_readings(arms: Iterable[ProxyServer]) -> list[tuple[float, int]]:
    """Every arm's ``gc_reading`` once the probes have written what happened until now."""
    time.sleep(0.3)  # the probes write every 0.25 s
    return [gc_reading(proxy) for proxy in arms]


def run_wrk(proxy: ProxyServer, script: Path, args: argparse.Namespace, redis_pid: int, duration: float) -> WrkRun:
    command = wrk_command(proxy, script, args, duration)
    assert proxy.pid is not None
    [gc_before] = gc_readings([proxy])
    before, redis_before = group_cpu_s([proxy.pid], [redis_pid]), group_cpu_s([], [redis_pid])
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    cpu = group_cpu_s([proxy.pid], [redis_pid]) - before
    redis_cpu = group_cpu_s([], [redis_pid]) - redis_before
    [gc_after] = gc_readings([proxy])
    requests, wall_s, p50, p99, errors = parse_wrk(output)
    return WrkRun(
        requests, wall_s, p50, p99, errors, cpu, redis_cpu, gc_after[0] - gc_before[0], gc_after[1] - gc_before[1]
    )


def run_together(
    arms: dict[str, ProxyServer], scripts: dict[str, Path], args: argparse.Namespace, redis_pids: Mapping[str, int]
) -> dict[str, WrkRun]:
    """One round with every arm under load at once (``--together``): one wrk per arm, started together.

    Each arm's CPU is its own process group's plus its own Redis's (``redis_pids``: every pack arm
    has a Redis server of its own, so none is charged another's commands)."""
    gc_before = dict(zip(arms, gc_readings(arms.values()), strict=True))
    before = {arm: group_cpu_s([p.pid or 0]) for arm, p in arms.items()}
    redis_before = {arm: group_cpu_s([], [redis_pids.get(arm, 0)]) for arm in arms}
    running = {
        arm: subprocess.Popen(wrk_command(proxy, scripts[arm], args, args.duration), stdout=subprocess.PIPE, text=True)
        for arm, proxy in arms.items()
    }
    outputs = {arm: process.communicate()[0] for arm, process in running.items()}
    cpu = {arm: group_cpu_s([p.pid or 0]) - before[arm] for arm, p in arms.items()}
    redis_cpu = {arm: group_cpu_s([], [redis_pids.get(arm, 0)]) - redis_before[arm] for arm in arms}
    gc_after = dict(zip(arms, gc_readings(arms.values()), strict=True))
    runs = {}
    for arm, out in outputs.items():
        requests, wall_s, p50, p99, errors = parse_wrk(out)
        gc_s, full = (a - b for a, b in zip(gc_after[arm], gc_before[arm], strict=True))
        runs[arm] = WrkRun(
            requests, wall_s, p50, p99, errors, cpu[arm] + redis_cpu[arm], redis_cpu[arm], gc_s, int(full)
        )
    return runs


def uses_redis(arm: str) -> bool:
    """True for an arm with a pack (every arm but the vanilla ones): it gets a Redis of its own."""
    return ARM_SECTIONS[arm.removesuffix(BASELINE)] is not None


def check_arm(proxy: ProxyServer, pack: bool) -> None:
    """Refuse to measure an arm that does not answer 200, or whose x-costkit-* headers say the wrong thing."""
    body = json.dumps(
        {
            "model": MODEL,
            "messages": [{"role": "user", "content": "hi"}],
            "metadata": {"user_id": "user-1"},
            "max_tokens": 8,
        }
    ).encode()
    request = urllib.request.Request(
        f"{proxy.base_url}/v1/chat/completions",
        data=body,
        headers={**proxy.auth_headers, "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        has_pack = any(name.lower().startswith("x-costkit-") for name in response.headers)
    if has_pack != pack:
        raise SystemExit(f"{proxy!r}: x-costkit-* headers {'present' if has_pack else 'absent'}")


def configs(folder: Path, redis_url: str | Mapping[str, str], arms: Sequence[str]) -> dict[str, Path]:
    """Each arm's proxy config; ``redis_url`` is every pack arm's Redis, or each arm's own by name."""
    base = base_config([mock_deployment(MODEL)])
    result = {}
    for index, arm in enumerate(arms):
        section = ARM_SECTIONS[arm.removesuffix(BASELINE)]
        config = base
        if section is not None:
            prefix = f"bench{index}-{uuid.uuid4().hex[:6]}"
            url = redis_url if isinstance(redis_url, str) else redis_url[arm]
            config = enable_costkit(base, {"redis_url": url, "key_prefix": prefix, **section})
        result[arm] = write_config(folder / f"arm{index}.yaml", config)
    return result


def table(results: dict[str, ArmResult], args: argparse.Namespace) -> str:
    vanilla = results["vanilla"]
    rows = [
        "| arm | req/s | CPU ms/req | median of rounds | of which Redis | of which GC | full GCs per 1k req "
        "| p50 ms | p99 ms | errors | req/s vs vanilla | CPU vs vanilla | median vs vanilla |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for arm, result in results.items():
        added = result.cpu_ms_per_request() - vanilla.cpu_ms_per_request()
        added_median = result.cpu_ms_median() - vanilla.cpu_ms_median()
        cpu_note = "" if arm == "vanilla" else f"{added:+.2f} ms ({added / vanilla.cpu_ms_per_request():+.0%})"
        median_note = (
            "" if arm == "vanilla" else f"{added_median:+.2f} ms ({added_median / vanilla.cpu_ms_median():+.0%})"
        )
        rows.append(
            f"| {arm} | {result.rate():.1f} | {result.cpu_ms_per_request():.2f} | {result.cpu_ms_median():.2f} | "
            f"{result.redis_ms_per_request():.2f} | {result.gc_ms_per_request():.2f} | {result.full_per_1k():.1f} | "
            f"{result.p50():.0f} | "
            f"{result.p99():.0f} | {result.errors()} | {result.rate() / vanilla.rate():.3f} | {cpu_note} | "
            f"{median_note} |"
        )
    return "\n".join(rows)


def _probe_dir(folder: Path) -> Path:
    """A folder whose ``sitecustomize`` is the bench's probe (``PROBE``), and one for its readings."""
    target = folder / "probe"
    (target / "readings").mkdir(parents=True, exist_ok=True)
    (target / "sitecustomize.py").write_text(PROBE)
    return target


@contextlib.contextmanager
def proxies(paths: dict[str, Path], baseline: str | None = None) -> Iterator[dict[str, ProxyServer]]:
    with contextlib.ExitStack() as stack:
        started = {}
        for arm, path in paths.items():
            probe = _probe_dir(path.parent)
            pythonpath = [baseline] if baseline and arm.endswith(BASELINE) else []
            env = {"PYTHONPATH": os.pathsep.join([*pythonpath, str(probe)]), GC_DIR_ENV: str(probe / "readings")}
            if arm.removesuffix(BASELINE) == "vanilla" + FREEZE:
                env["COSTKIT_BENCH_FREEZE_AFTER_S"] = "30"
            started[arm] = stack.enter_context(ProxyServer(path, env=env))
            print(f"  {arm}: {started[arm].base_url} pid {started[arm].pid}", file=sys.stderr)
        yield started


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of load per run")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds of untimed load per arm first")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--arms",
        default=",".join(DEFAULT_ARMS),
        help=f"comma-separated subset of: {', '.join(ARM_SECTIONS)} (default: all but the gc freeze arms)",
    )
    parser.add_argument("--hold", action="store_true", help="start the arms and wait (for py-spy), no load")
    parser.add_argument(
        "--together",
        action="store_true",
        help="load every arm at once in each round (paired: the machine's drift hits all arms alike); "
        "each arm gets its own wrk at --concurrency",
    )
    parser.add_argument(
        "--baseline",
        metavar="DIR",
        help=f"a checkout of an older commit of the pack: arms named '<arm>{BASELINE}' run it (PYTHONPATH=DIR), "
        "side by side with this tree's arms",
    )
    args = parser.parse_args(argv)
    args.arms = [a.strip() for a in args.arms.split(",")]
    unknown = [a for a in args.arms if a.removesuffix(BASELINE) not in ARM_SECTIONS]
    if any(a.endswith(BASELINE) for a in args.arms) and not args.baseline:
        parser.error(f"arms ending in {BASELINE!r} need --baseline DIR")
    if unknown or "vanilla" not in args.arms:
        parser.error(f"--arms: unknown {unknown} (vanilla is required)" if unknown else "--arms must include vanilla")
    return args


def main(argv: Sequence[str] | None = None) -> None:
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    args = parse_args(argv)
    if shutil.which("wrk") is None:
        raise SystemExit("wrk not found on PATH (Debian: apt-get install wrk)")
    with tempfile.TemporaryDirectory(prefix="costkit-bench-") as tmp, contextlib.ExitStack() as servers:
        redis = {arm: servers.enter_context(RedisServer(search=False)) for arm in args.arms if uses_redis(arm)}
        redis_pids = {arm: server._proc.pid if server._proc is not None else 0 for arm, server in redis.items()}
        for arm, server in redis.items():
            print(f"  {arm}: redis {server.url} pid {redis_pids[arm]}", file=sys.stderr)
        urls = {arm: server.url for arm, server in redis.items()}
        with proxies(configs(Path(tmp), urls, args.arms), args.baseline) as started:
            features = ",".join(f'"{f}"' for f in FEATURES)
            for arm, proxy in started.items():
                check_arm(proxy, ARM_SECTIONS[arm.removesuffix(BASELINE)] is not None)
            results = {arm: ArmResult() for arm in args.arms}
            for arm, proxy in started.items():
                arm_script = Path(tmp) / f"load-{abs(hash(arm))}.lua"
                text = WRK_SCRIPT % {"key": proxy.master_key, "features": features, "model": MODEL, "users": USERS}
                arm_script.write_text(text)
                if args.hold:
                    continue
                run_wrk(proxy, arm_script, args, redis_pids.get(arm, 0), args.warmup)
            wait_frozen(started)
            if args.hold:
                print("holding; Ctrl-C or SIGTERM to stop", file=sys.stderr)
                signal.signal(signal.SIGTERM, signal.default_int_handler)  # SIGTERM too stops every arm
                with contextlib.suppress(KeyboardInterrupt):
                    time.sleep(3600)
                return
            scripts = {arm: Path(tmp) / f"load-{abs(hash(arm))}.lua" for arm in started}
            for round_no in range(args.rounds if args.together else 0):
                for arm, run in run_together(started, scripts, args, redis_pids).items():
                    results[arm].runs.append(run)
                    print(
                        f"  round {round_no + 1} {arm:20}: {run.rate:6.1f} req/s, "
                        f"{1000 * run.cpu_s / max(1, run.requests):5.2f} CPU ms/req (all arms at once)",
                        file=sys.stderr,
                    )
            for round_no in range(0 if args.together else args.rounds):
                order = list(started.items()) if round_no % 2 == 0 else list(started.items())[::-1]
                for arm, proxy in order:
                    arm_script = Path(tmp) / f"load-{abs(hash(arm))}.lua"
                    run = run_wrk(proxy, arm_script, args, redis_pids.get(arm, 0), args.duration)
                    results[arm].runs.append(run)
                    print(
                        f"  round {round_no + 1} {arm:20}: {run.rate:6.1f} req/s, "
                        f"{1000 * run.cpu_s / max(1, run.requests):5.2f} CPU ms/req, p50 {run.p50_ms:.0f} ms, "
                        f"errors {run.errors}",
                        file=sys.stderr,
                    )
    how = "every arm under load at once, each pack arm with a Redis of its own" if args.together else "interleaved"
    print(
        f"\nProxy overhead per stage: wrk -c{args.concurrency}, {args.duration:g} s x {args.rounds} rounds per arm, "
        f"{how}; mock deployments; CPU = proxy process group + Redis (from /proc); "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at the end.\n"
    )
    print(table(results, args))


if __name__ == "__main__":
    main()
