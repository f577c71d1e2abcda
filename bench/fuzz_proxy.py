"""A long run of the proxy fuzzer (tests/e2e/test_fuzz_proxy.py): the same property, SCALE times the examples.

    python bench/fuzz_proxy.py --scale 20 --report bench/results/fuzz_proxy.json

Prints the statuses seen with and without the pack per route, and the time per route.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=20.0, help="times the test's examples per route")
    parser.add_argument("--report", default=str(ROOT / "bench" / "results" / "fuzz_proxy.json"))
    args = parser.parse_args()
    env = {**os.environ, "COSTKIT_FUZZ_SCALE": str(args.scale), "COSTKIT_FUZZ_REPORT": args.report}
    command = [sys.executable, "-m", "pytest", "tests/e2e/test_fuzz_proxy.py", "-q", "-p", "no:cacheprovider"]
    code = subprocess.call(command, cwd=ROOT, env=env)
    report = json.loads(Path(args.report).read_text())
    print("| route | vanilla | pack | pack error type | bodies |\n| --- | ---: | ---: | --- | ---: |")
    for row in report["statuses"]:
        print(f"| {row['route']} | {row['vanilla']} | {row['pack']} | {row['type'] or '-'} | {row['count']} |")
    for route, seconds in report["seconds"].items():
        print(f"{route}: {seconds:.1f} s")
    return code


if __name__ == "__main__":
    raise SystemExit(main())
