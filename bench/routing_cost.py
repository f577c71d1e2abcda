"""What the routing stage adds to a request: ``RoutingStage.on_request`` timed alone, per prompt size.

The rules classifier reads the last user message (length, code, math, reasoning and extraction
cues) and re-estimates the worst case for the chosen tier. This times the stage on the same
``Admission`` the pipeline builds, for short, medium and long prompts, and prints p50/p99 in
microseconds of CPU (``time.thread_time_ns``, so other processes do not count). The target is
<= 100 us for a short prompt.

    LITELLM_LOCAL_MODEL_COST_MAP=True python bench/routing_cost.py --repeat 5000
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Sequence

from costkit_litellm.config import parse_config
from costkit_litellm.context import RequestContext
from costkit_litellm.kit import CostKit
from costkit_litellm.pipeline import Admission
from costkit_litellm.routing.stage import RoutingStage

PROMPTS = {
    "short (60 chars)": "Summarise the benefits of caching in one line, for a manager.",
    "medium (2k chars, code)": "Why does this fail?\n```python\n"
    + "def f(x):\n    return sorted(x, key=lambda v: v.score)[::-1]\n" * 30
    + "```\nExplain step by step, then fix it.",
    "long (20k chars)": "Please analyse the following report and list the three main risks.\n"
    + "The quarterly figures show revenue growth in every region except the north. " * 260,
}


def routing_kit() -> CostKit:
    """A kit with routing (rules classifier, two tiers) and no other stage."""
    section = {
        "breaker": {"enabled": False},
        "ledger": {"enabled": False},
        "metrics": {"enabled": False},
        "routing": {
            "enabled": True,
            "virtual_model": "auto",
            "classifier": "rules",
            "tiers": [{"name": "economy", "model": "gpt-4o-mini"}, {"name": "premium", "model": "gpt-4o"}],
        },
    }
    return CostKit(parse_config(section), registry=None)


async def time_stage(stage: RoutingStage, kit: CostKit, prompt: str, repeat: int) -> list[float]:
    """CPU microseconds of ``stage.on_request`` per call, ``repeat`` calls on fresh admissions."""
    messages = [{"role": "user", "content": prompt}]
    context = RequestContext(model="auto", call_id="bench")
    tokens = len(prompt) // 4
    samples = []
    for _ in range(repeat):
        estimate = kit.pricing.worst_case("gpt-4o-mini", tokens, None, 1)
        admission = Admission(context=context, estimate=estimate, messages=messages)
        start = time.thread_time_ns()
        await stage.on_request(admission)
        samples.append((time.thread_time_ns() - start) / 1000)
    return samples


async def main_async(args: argparse.Namespace) -> None:
    kit = routing_kit()
    stage = next(s for s in kit.stages if isinstance(s, RoutingStage))
    print(f"\nRouting stage (rules classifier, 2 tiers), {args.repeat} calls per prompt, CPU time per call:\n")
    print("| prompt | p50 us | p99 us | tier chosen |")
    print("|---|---:|---:|---|")
    for name, prompt in PROMPTS.items():
        await time_stage(stage, kit, prompt, 50)  # warm-up
        samples = sorted(await time_stage(stage, kit, prompt, args.repeat))
        probe = Admission(
            context=RequestContext(model="auto", call_id="probe"),
            estimate=kit.pricing.worst_case("gpt-4o-mini", len(prompt) // 4, None, 1),
            messages=[{"role": "user", "content": prompt}],
        )
        await stage.on_request(probe)
        p99 = samples[int(len(samples) * 0.99) - 1]
        print(f"| {name} | {statistics.median(samples):.1f} | {p99:.1f} | {probe.state['routing']['tier']} |")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--repeat", type=int, default=5000)
    asyncio.run(main_async(parser.parse_args(argv)))


if __name__ == "__main__":
    main()
