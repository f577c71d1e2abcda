"""The pack's per-request helpers timed alone, this tree against an older checkout, in one run.

The proxy benches cannot resolve a few microseconds; this times the helpers a request goes through
(best of 5 runs of a tight loop each, ``time.perf_counter``), each tree in its own interpreter
(``PYTHONPATH`` = the tree), alternating trees ``--rounds`` times, and prints the best per tree:

- ``input_tokens``: the estimate's input tokens (LiteLLM's tokenizer, with the pack's memo of long
  messages, and the 4-characters-per-token floor) for a short prompt and for a 21-message agent
  conversation with a tool;
- ``budget_remaining``: one remaining-budget gauge update (twice per budgeted request);
- ``metadata_key``: which metadata dict a proxy request uses (three times per request).

    git worktree add /tmp/before aaee4b8
    LITELLM_LOCAL_MODEL_COST_MAP=True python bench/hot_functions.py --baseline /tmp/before
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

SHORT = {"messages": [{"role": "user", "content": "Summarise the benefits of caching in one line (123)."}]}
AGENT = {
    "messages": [{"role": "system", "content": "You are a helpful agent. " * 20}]
    + [
        {"role": "user" if i % 2 else "assistant", "content": f"step {i}: " + "observation text " * 30}
        for i in range(20)
    ],
    "tools": [{"type": "function", "function": {"name": "search", "description": "web search", "parameters": {}}}],
}
URL = {"proxy_server_request": {"url": "http://127.0.0.1:4000/v1/chat/completions"}}


def best_us(fn: Callable[[], Any], n: int) -> float:
    """Best of 5 loops of ``n`` calls, in microseconds per call (after one warm-up call)."""
    fn()
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(n):
            fn()
        best = min(best, (time.perf_counter() - start) / n)
    return best * 1e6


def measure() -> dict[str, float]:
    """Time the helpers of the tree on ``sys.path`` (run in a child interpreter)."""
    from costkit_litellm.accounting.metrics import CostKitMetrics
    from costkit_litellm.litellm_adapter import call_types, estimates

    metrics = CostKitMetrics.for_registry((), registry=None)
    model = "openai/gpt-4o-mini"
    return {
        "input_tokens, short prompt": best_us(lambda: estimates.input_tokens(model, SHORT), 20_000),
        "input_tokens, 21-message agent": best_us(lambda: estimates.input_tokens(model, AGENT), 3_000),
        "budget_remaining": best_us(lambda: metrics.budget_remaining("global_day", "all", 123_456), 20_000),
        "metadata_key": best_us(lambda: call_types.metadata_key(URL, call_types.CHAT), 20_000),
    }


def run_tree(tree: Path) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": str(tree), "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    code = f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); import hot_functions as h, json; "
    code += "import costkit_litellm as c; assert c.__file__.startswith(sys.argv[1]), c.__file__; "
    code += "print(json.dumps(h.measure()))"
    # cwd: the tree (``python -c`` puts the working directory first on sys.path)
    out = subprocess.run(
        [sys.executable, "-c", code, str(tree)], env=env, cwd=tree, capture_output=True, text=True, check=True
    )
    result: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--baseline", metavar="DIR", required=True, help="a checkout of an older commit")
    parser.add_argument("--rounds", type=int, default=3, help="alternations of the two trees")
    args = parser.parse_args(argv)
    trees = {"baseline": Path(args.baseline).resolve(), "this tree": Path(__file__).resolve().parents[1]}
    best: dict[str, dict[str, float]] = {name: {} for name in trees}
    for _ in range(args.rounds):
        for name, tree in trees.items():
            for key, value in run_tree(tree).items():
                best[name][key] = min(value, best[name].get(key, value))
    print(f"\nbest of {args.rounds} alternations x 5 loops, us per call; baseline = {trees['baseline']}\n")
    print("| helper | baseline | this tree | ratio |")
    print("|---|---:|---:|---:|")
    for key, before in best["baseline"].items():
        after = best["this tree"][key]
        print(f"| {key} | {before:.2f} | {after:.2f} | {after / before:.2f} |")


if __name__ == "__main__":
    main()
