"""Router evaluation on RouteLLM's MMLU outcomes, and classification time per prompt.

Scores, side by side on the same folds: the random router and the oracle (references), prompt
length, LiteLLM 1.108.7's ``complexity_router`` (its raw score and its tiers), our rule-based
classifier and the learned router (trained on each fold's training rows only). Two
cross-validations: random 5-fold (each fold an 80/20 split of distinct prompts) and
leave-subjects-out (5 folds of whole MMLU subjects: traffic the router was not trained on).
RouteLLM's contaminated prompts are excluded.

Then times one classification per prompt: rules, LiteLLM's complexity router, the learned model
given a precomputed (shared) embedding, and the learned router including its own embedding, with
a pure-Python reference loop so runs on a busy machine can be compared by ratio.

    LITELLM_LOCAL_MODEL_COST_MAP=True HF_HUB_OFFLINE=1 python bench/router_eval.py [--plot]

Needs ``../shared/data/routellm-mmlu`` beside the project; without it, says so and exits 0.
Embeddings are computed once and kept in ``~/.cache/costkit/embeddings``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from costkit_litellm.routing.data import Outcomes

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "routellm-mmlu"
PLOT = ROOT / "bench" / "results" / "router_curve.png"


def _per_call_us(function: Callable[[str], object], prompts: Sequence[str], rounds: int = 3) -> float:
    """Median over rounds of the mean time per call, in microseconds."""
    means = []
    for _ in range(rounds):
        started = time.perf_counter()
        for prompt in prompts:
            function(prompt)
        means.append((time.perf_counter() - started) / len(prompts) * 1e6)
    return statistics.median(means)


def timing_table(data: Outcomes, vectors: np.ndarray) -> str:
    """Classification time per prompt for each classifier, and its ratio to the rules."""
    from costkit_litellm.embeddings.local import LocalEmbedder
    from costkit_litellm.routing.learned import LearnedClassifier
    from costkit_litellm.routing.rules import RuleClassifier
    from costkit_litellm.routing.train import train

    sample = list(data.prompts[:400])
    rules = RuleClassifier()
    model = train(data, embeddings=vectors, seed=0, l2_grid=(30.0,))
    embedder = LocalEmbedder()
    learned = LearnedClassifier(model, embedder)
    shared = {p: vectors[i] for i, p in enumerate(sample)}
    learned.score(sample[0])  # load the local model before timing
    rows = [("python reference loop (sum(range(1000)))", _per_call_us(lambda _: sum(range(1000)), sample))]
    rows.append(("rules", _per_call_us(rules.score, sample)))
    try:
        from costkit_litellm.litellm_adapter.complexity_anchor import classify

        rows.append(("LiteLLM complexity_router (classify)", _per_call_us(classify, sample)))
    except ImportError as exc:
        print(f"skipping LiteLLM timing: {exc}", file=sys.stderr)
    rows.append(("learned, shared embedding given", _per_call_us(lambda p: learned.score(p, shared[p]), sample)))
    rows.append(("learned, embedding computed (MiniLM, 1 prompt)", _per_call_us(learned.score, sample[:100], rounds=1)))
    base = rows[1][1]
    lines = ["| classifier | µs per prompt | vs rules |", "|---|---:|---:|"]
    lines += [f"| {name} | {us:,.1f} | {us / base:,.1f}x |" for name, us in rows]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--plot", action="store_true", help=f"save the random-split curve to {PLOT}")
    parser.add_argument("--no-timing", action="store_true")
    args = parser.parse_args(argv)
    if not args.data.is_dir():
        print(f"skipping: no outcome data at {args.data} (the shared data sits beside the project)")
        return 0
    try:
        import torch

        torch.set_num_threads(2)
    except ImportError:
        pass
    from costkit_litellm.routing.cli import EmbeddingSource, build_routers
    from costkit_litellm.routing.data import default_exclusion, load_outcomes
    from costkit_litellm.routing.evaluate import cross_validate, group_folds, markdown_table, random_folds

    exclude = default_exclusion(args.data)
    data = load_outcomes(args.data, exclude=exclude)
    print(f"{len(data):,} prompts, {len(set(data.groups))} subjects; excluded: {exclude}", file=sys.stderr)
    embeddings = EmbeddingSource()
    started = time.perf_counter()
    routers = build_routers(data, ["length", "litellm", "rules", "learned"], embeddings)
    print(f"fixed routers scored in {time.perf_counter() - started:.1f}s", file=sys.stderr)
    modes = [
        (
            "random",
            f"Random {args.folds}-fold (each an 80/20 split of distinct prompts)",
            random_folds(data.prompts, args.folds, args.seed),
        ),
        (
            "subjects",
            f"Leave-subjects-out ({args.folds} folds of whole subjects)",
            group_folds(data.groups, args.folds, args.seed),
        ),
    ]
    for mode, title, folds in modes:
        started = time.perf_counter()
        results = cross_validate(data, routers, folds, seed=args.seed)
        print(f"\n### {title}, seed {args.seed} ({time.perf_counter() - started:.0f}s)\n")
        print(markdown_table(results))
        if args.plot and mode == "random":
            from costkit_litellm.routing.plot import plot_curves

            print(f"\ncurve: {plot_curves(results, PLOT, title='MMLU (RouteLLM outcomes): random 80/20 folds')}")
        sys.stdout.flush()
    if not args.no_timing:
        vectors = embeddings.vectors(data)
        rows = np.arange(3_000)
        print("\n### Classification time per prompt\n")
        print(timing_table(data.subset(rows), vectors[rows]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
