"""Where the pack's CPU goes inside a real proxy: py-spy on a vanilla and a full-pack proxy under the same wrk load.

``pack_overhead.py`` says how much CPU the pack adds per request; this says where. It starts the two
``+ gc freeze`` arms of ``pack_overhead.py`` (vanilla LiteLLM and the production-shaped pack, each with
its start-up heap frozen out of the collector once it has started: otherwise a full collection of
300-500 ms lands in whatever frame allocated last and drowns the differences), then for each arm in
turn runs wrk and ``py-spy record --format raw`` on the proxy's process for ``--duration`` seconds.
Samples of idle threads (the thread pool waiting for work, the event loop in ``select``) are dropped;
each remaining sample is ``1000 / --rate`` ms of a thread running Python. It prints, per request:

- each arm's busy time, and the pack's own frames (every sample with a ``costkit_litellm`` frame) by
  the LiteLLM hook that entered the pack;
- the pack's top functions (inclusive, counted once per sample);
- outside the pack's frames (samples without one), the LiteLLM and library functions whose inclusive
  time per request differs most between the arms: what the pack makes LiteLLM itself do more or less.

The arms are sampled one after the other, so a machine whose speed drifts between runs moves the
busy totals; the pack's own frames are measured within one run and hold better.

A sample is 10 ms at the default rate, so over a 40 s run of ~3,000 requests one sample is 0.003
ms/req: figures under ~0.03 ms/req are noise. Needs ``wrk`` and ``py-spy`` (``pip install py-spy``;
root or ptrace rights).

    LITELLM_LOCAL_MODEL_COST_MAP=True python bench/pack_profile.py --duration 40
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pack_overhead import (  # a sibling: ``python bench/pack_profile.py`` puts bench/ on the path
    FEATURES,
    MODEL,
    USERS,
    WRK_SCRIPT,
    check_arm,
    configs,
    parse_wrk,
    proxies,
    wait_frozen,
)

from costkit_litellm.testing.redis_server import RedisServer

ARMS = ("vanilla + gc freeze", "full pack + gc freeze")
PACK = "costkit_litellm"
IDLE_LEAVES = ("_worker (concurrent/futures/thread.py", "select (selectors.py", "wait (threading.py")
"""Leaf frames of a thread waiting for work (py-spy counts a thread blocked on a lock as active)."""
_LINE = re.compile(r":\d+\)$")


@dataclass
class Profile:
    """One arm's py-spy samples, by function (file and name, line numbers dropped)."""

    requests: int
    ms_per_sample: float
    busy: int = 0
    inclusive: collections.Counter[str] = field(default_factory=collections.Counter)
    """Samples without a frame of the pack, by function (inclusive: counted once per sample)."""
    pack: int = 0
    pack_entries: collections.Counter[str] = field(default_factory=collections.Counter)
    pack_inclusive: collections.Counter[str] = field(default_factory=collections.Counter)

    def per_request(self, samples: int) -> float:
        """Samples as ms per request."""
        return samples * self.ms_per_sample / max(1, self.requests)


def read_raw(text: str, requests: int, ms_per_sample: float) -> Profile:
    """A profile from py-spy's raw (collapsed) output: ``frame;frame;... count`` per line."""
    profile = Profile(requests, ms_per_sample)
    for line in text.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = [_LINE.sub(")", f) for f in stack.split(";")]
        if frames[-1].startswith(IDLE_LEAVES):
            continue
        profile.busy += n
        first = next((i for i, f in enumerate(frames) if PACK in f), None)
        if first is None:
            for name in set(frames):
                profile.inclusive[name] += n
            continue
        profile.pack += n
        caller = frames[first - 1] if first > 0 else "?"
        profile.pack_entries[f"{frames[first]}  <-  {caller}"] += n
        for name in set(frames[first:]):
            profile.pack_inclusive[name] += n
    return profile


def py_spy() -> str | None:
    """py-spy on the PATH, else beside this interpreter (a virtualenv's ``bin`` need not be on the PATH)."""
    beside = Path(sys.executable).parent / "py-spy"
    return shutil.which("py-spy") or (str(beside) if beside.is_file() else None)


def record(proxy_pid: int, url: str, script: Path, args: argparse.Namespace, out: Path) -> Profile:
    """wrk against one arm for ``--duration`` + 4 s, py-spy on it for ``--duration`` s in the middle."""
    wrk = subprocess.Popen(
        ["wrk", "--latency", "-t2", f"-c{args.concurrency}", f"-d{args.duration + 4:g}s", "-s", str(script), url],
        stdout=subprocess.PIPE,
        text=True,
    )
    time.sleep(2)
    spy = [py_spy() or "py-spy", "record", "-p", str(proxy_pid), "-d", f"{args.duration:g}", "-r", str(args.rate)]
    if args.gil:
        spy.append("--gil")
    subprocess.run([*spy, "-f", "raw", "-o", str(out)], check=True, capture_output=True)
    output, _ = wrk.communicate()
    requests, wall_s, _, _, errors = parse_wrk(output)
    if errors:
        raise SystemExit(f"{url}: {errors} errors under load")
    sampled = round(requests / wall_s * args.duration)  # requests while py-spy sampled
    return read_raw(out.read_text(), sampled, 1000 / args.rate)


def report(vanilla: Profile, pack: Profile, top: int) -> str:
    """The tables (markdown)."""
    lines = [
        "| arm | requests sampled | busy ms/req | the pack's frames ms/req |",
        "|---|---:|---:|---:|",
        f"| vanilla | {vanilla.requests} | {vanilla.per_request(vanilla.busy):.2f} | |",
        f"| full pack | {pack.requests} | {pack.per_request(pack.busy):.2f} | {pack.per_request(pack.pack):.2f} |",
        "",
        "| the pack entered from | ms/req |",
        "|---|---:|",
        *(f"| `{k}` | {pack.per_request(v):.3f} |" for k, v in pack.pack_entries.most_common(8)),
        "",
        "| the pack's functions (inclusive) | ms/req |",
        "|---|---:|",
        *(f"| `{k}` | {pack.per_request(v):.3f} |" for k, v in pack.pack_inclusive.most_common(top)),
        "",
        "| outside the pack's frames: function (inclusive) | vanilla ms/req | full pack ms/req | difference |",
        "|---|---:|---:|---:|",
        f"| all of it | {vanilla.per_request(vanilla.busy):.3f} | {pack.per_request(pack.busy - pack.pack):.3f} "
        f"| {pack.per_request(pack.busy - pack.pack) - vanilla.per_request(vanilla.busy):+.3f} |",
    ]
    # the event loop's and the server's own frames hold nearly every sample: they only repeat "all of it"
    roots = {k for k, v in vanilla.inclusive.items() if v > 0.5 * vanilla.busy}
    outside = (set(vanilla.inclusive) | set(pack.inclusive)) - roots
    diffs = sorted(
        ((pack.per_request(pack.inclusive[k]) - vanilla.per_request(vanilla.inclusive[k]), k) for k in outside),
        key=lambda item: -abs(item[0]),
    )
    for diff, name in diffs[:top]:
        before, after = vanilla.per_request(vanilla.inclusive[name]), pack.per_request(pack.inclusive[name])
        lines.append(f"| `{name}` | {before:.3f} | {after:.3f} | {diff:+.3f} |")
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--duration", type=float, default=40.0, help="seconds of sampling per arm")
    parser.add_argument("--rate", type=int, default=100, help="py-spy samples per second")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--warmup", type=float, default=5.0, help="seconds of untimed load per arm first")
    parser.add_argument("--top", type=int, default=25, help="rows of the function tables")
    parser.add_argument("--keep", metavar="DIR", help="also keep py-spy's raw profiles here")
    parser.add_argument("--gil", action="store_true", help="sample only the thread holding the GIL (py-spy --gil)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    args = parse_args(argv)
    if shutil.which("wrk") is None or py_spy() is None:
        raise SystemExit("needs wrk (apt-get install wrk) and py-spy (pip install py-spy)")
    with (
        tempfile.TemporaryDirectory(prefix="costkit-profile-") as tmp,
        RedisServer(search=False) as redis,
        proxies(configs(Path(tmp), redis.url, list(ARMS))) as started,
    ):
        features = ",".join(f'"{f}"' for f in FEATURES)
        profiles: dict[str, Profile] = {}
        wait_frozen(started)
        for arm, proxy in started.items():
            check_arm(proxy, arm != ARMS[0])
            script = Path(tmp) / f"load-{len(profiles)}.lua"
            values = {"key": proxy.master_key, "features": features, "model": MODEL, "users": USERS}
            script.write_text(WRK_SCRIPT % values)
            subprocess.run(
                ["wrk", "-t2", f"-c{args.concurrency}", f"-d{args.warmup:g}s", "-s", str(script), proxy.base_url],
                check=True,
                capture_output=True,
            )
            assert proxy.pid is not None
            out = Path(args.keep or tmp) / f"py-spy-{'pack' if profiles else 'vanilla'}.txt"
            out.parent.mkdir(parents=True, exist_ok=True)
            profiles[arm] = record(proxy.pid, proxy.base_url, script, args, out)
            print(f"  {arm}: {profiles[arm].requests} requests sampled", file=sys.stderr)
    print(
        f"\npy-spy at {args.rate} Hz for {args.duration:g} s per arm, wrk -c{args.concurrency}, "
        f"start-up heaps frozen; {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}.\n"
    )
    print(report(profiles[ARMS[0]], profiles[ARMS[1]], args.top))


if __name__ == "__main__":
    main()
