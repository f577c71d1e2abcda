"""``costkit router train`` and ``costkit router eval``.

::

    costkit router train --data FILE_OR_DIR --out MODEL [--seed N] [--target-premium-share S | --threshold T]
    costkit router eval  --data FILE_OR_DIR [--router rules|length|learned|learned:PATH|litellm|all ...]
                         [--cv none|random|subjects] [--folds K] [--seed N] [--plot out.png] [--exclude FILE]

Outcome data is RouteLLM's CSV (a file or a directory of ``mmlu_*.csv``) or JSONL (see
``costkit_litellm.routing.data``). A ``contaminated_prompts.jsonl`` beside the data is applied
automatically (RouteLLM's evaluation does the same); ``--exclude`` names another list,
``--exclude none`` turns it off.

``eval`` prints a markdown table (mean over the test folds): APGR, CPT(50%), CPT(80%) and the
premium share needed for 95% of premium quality, with the random router and the oracle as
references. ``learned`` trains a model on each fold's training rows (cross-validation);
``learned:PATH`` scores with a saved model file as it is (evaluate it on data it was not trained
on: the table cannot tell). ``litellm`` is LiteLLM's own
``complexity_router``, read both by its raw score and by its tiers.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from costkit_litellm.embeddings import EmbedderUnavailable, Vectors
from costkit_litellm.routing.classifiers import RoutingError
from costkit_litellm.routing.data import IndexArray, Outcomes, default_exclusion, load_outcomes
from costkit_litellm.routing.evaluate import (
    FloatArray,
    Fold,
    ScoreFunction,
    cross_validate,
    fixed,
    group_folds,
    markdown_table,
    random_folds,
    random_router,
)

ROUTER_CHOICES = ("rules", "length", "learned", "litellm", "all")
ALL_ROUTERS = ("rules", "length", "litellm", "learned")


def add_router_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``router train`` and ``router eval`` to the ``costkit`` command's subparsers."""
    router = subparsers.add_parser("router", help="train and evaluate the learned tier router")
    sub = router.add_subparsers(dest="router_command", required=True)
    train = sub.add_parser("train", help="train a learned router from outcome data (CSV or JSONL)")
    train.add_argument("--data", required=True, help="outcome file or directory (RouteLLM CSV or JSONL)")
    train.add_argument("--out", required=True, help="model file to write (JSON)")
    train.add_argument("--seed", type=int, default=0, help="random seed (training is deterministic given it)")
    goal = train.add_mutually_exclusive_group()
    goal.add_argument(
        "--target-premium-share",
        type=float,
        default=None,
        help="e.g. 0.3: threshold for 30%% premium (default: the calibrated threshold)",
    )
    goal.add_argument(
        "--threshold", type=float, default=None, help="decision threshold on the score, in [0, 1] (default: calibrated)"
    )
    train.add_argument(
        "--exclude",
        default=None,
        help="prompts to leave out (JSONL); 'none' to disable (default: RouteLLM's contaminated prompts)",
    )
    train.add_argument("--no-cache", action="store_true", help="do not keep embeddings in ~/.cache/costkit")
    ev = sub.add_parser("eval", help="APGR, CPT(50%%), CPT(80%%) of routers on outcome data")
    ev.add_argument("--data", required=True, help="outcome file or directory (RouteLLM CSV or JSONL)")
    ev.add_argument(
        "--router",
        action="append",
        default=None,
        help="rules, length, learned, learned:PATH, litellm or all (repeatable; default all)",
    )
    ev.add_argument("--cv", choices=("none", "random", "subjects"), default="random", help="cross-validation split")
    ev.add_argument("--folds", type=int, default=5, help="cross-validation folds")
    ev.add_argument("--seed", type=int, default=0, help="random seed of the folds")
    ev.add_argument("--plot", default=None, help="write the cost-quality curve to this PNG (default: no plot)")
    ev.add_argument(
        "--exclude",
        default=None,
        help="prompts to leave out (JSONL); 'none' to disable (default: RouteLLM's contaminated prompts)",
    )
    ev.add_argument("--no-cache", action="store_true", help="do not keep embeddings in ~/.cache/costkit")
    return router  # type: ignore[no-any-return]


def _load(args: argparse.Namespace) -> Outcomes:
    exclude = None if args.exclude == "none" else (args.exclude or default_exclusion(args.data))
    data = load_outcomes(args.data, exclude=exclude)
    note = f", excluding the prompts listed in {exclude}" if exclude else ""
    print(f"{len(data):,} prompts in {len(set(data.groups))} groups from {args.data}{note}", file=sys.stderr)
    return data


class EmbeddingSource:
    """The local embedder and its on-disk cache, started only when a learned router needs it."""

    def __init__(self, cache: bool = True) -> None:
        self._cache = cache
        self._vectors: Vectors | None = None

    def embedder(self) -> Any:
        """The shared local all-MiniLM-L6-v2 embedder."""
        from costkit_litellm.embeddings.local import LocalEmbedder

        return LocalEmbedder()

    def vectors(self, data: Outcomes) -> Vectors:
        """One embedding per row of ``data`` (computed once, then read from the cache)."""
        if self._vectors is None or len(self._vectors) != len(data):
            from costkit_litellm.routing.train import default_cache_dir, embed_prompts

            started = time.perf_counter()
            self._vectors = embed_prompts(self.embedder(), data.prompts, default_cache_dir() if self._cache else None)
            print(f"embeddings ready in {time.perf_counter() - started:.1f}s", file=sys.stderr)
        return self._vectors


def learned_cv_router(vectors: Callable[[], Vectors], **options: Any) -> ScoreFunction:
    """A learned router trained on each fold's training rows, scoring its test rows."""
    from costkit_litellm.routing.train import train

    def score(data: Outcomes, train_rows: IndexArray, test_rows: IndexArray, seed: int) -> FloatArray:
        all_vectors = vectors()
        model = train(data.subset(train_rows), embeddings=all_vectors[train_rows], seed=seed, **options)
        return model.scores([data.prompts[i] for i in test_rows], all_vectors[test_rows])

    return score


def build_routers(data: Outcomes, specs: Sequence[str], embeddings: EmbeddingSource) -> dict[str, ScoreFunction]:
    """Score functions by router name, for ``cross_validate`` (random first, as a reference)."""
    names: list[str] = []
    for spec in specs:
        names.extend(ALL_ROUTERS if spec == "all" else [spec])
    routers: dict[str, ScoreFunction] = {"random": random_router}
    for name in dict.fromkeys(names):
        if name == "rules":
            from costkit_litellm.routing.rules import RuleClassifier

            classifier = RuleClassifier()
            routers["rules"] = fixed([classifier.score(p).score for p in data.prompts])
        elif name == "length":
            routers["prompt length"] = fixed([len(p) for p in data.prompts])
        elif name == "litellm":
            try:
                from costkit_litellm.litellm_adapter.complexity_anchor import score_prompts
            except ImportError as exc:
                print(f"skipping litellm: {exc}", file=sys.stderr)
                continue
            raw, tiers = score_prompts(data.prompts)
            routers["litellm complexity (score)"] = fixed(raw)
            routers["litellm complexity (tiers)"] = fixed(tiers)
        elif name == "learned":
            routers["learned (trained per fold)"] = learned_cv_router(lambda: embeddings.vectors(data))
        elif name.startswith("learned:"):
            from costkit_litellm.routing.learned import load_model

            path = name.split(":", 1)[1]
            model = load_model(path)
            routers[f"learned ({Path(path).name})"] = fixed(model.scores(data.prompts, embeddings.vectors(data)))
        else:
            raise RoutingError(f"unknown router {name!r}; choose from {', '.join(ROUTER_CHOICES)} or learned:PATH")
    return routers


def folds_for(data: Outcomes, cv: str, k: int, seed: int) -> list[Fold]:
    """The test folds of a cross-validation mode (``none``: every row is a test row, once)."""
    if cv == "random":
        return random_folds(data.prompts, k, seed)
    if cv == "subjects":
        return group_folds(data.groups, k, seed)
    rows = np.arange(len(data))
    return [(rows[:0], rows)]


def _eval(args: argparse.Namespace) -> int:
    data = _load(args)
    specs = args.router or ["all"]
    if args.cv == "none" and any(s in ("learned", "all") for s in specs):
        print("note: --cv none cannot train 'learned' without leaking; use learned:PATH", file=sys.stderr)
        specs = [s for s in specs if s != "learned"] + (["rules", "length", "litellm"] if "all" in specs else [])
        specs = [s for s in specs if s != "all"]
    routers = build_routers(data, specs, EmbeddingSource(cache=not args.no_cache))
    folds = folds_for(data, args.cv, args.folds, args.seed)
    started = time.perf_counter()
    results = cross_validate(data, routers, folds, seed=args.seed)
    how = {
        "none": "all rows, no cross-validation",
        "random": f"random {args.folds}-fold cross-validation",
        "subjects": f"leave-groups-out cross-validation ({args.folds} folds of whole groups)",
    }
    print(f"\n{how[args.cv]}, seed {args.seed} ({time.perf_counter() - started:.0f}s)\n")
    print(markdown_table(results))
    if args.plot:
        from costkit_litellm.routing.plot import plot_curves

        print(f"\ncurve: {plot_curves(results, args.plot, title=f'{Path(args.data).name}: {how[args.cv]}')}")
    return 0


def _train(args: argparse.Namespace) -> int:
    from costkit_litellm.routing.train import default_cache_dir, train

    data = _load(args)
    embeddings = EmbeddingSource(cache=not args.no_cache)
    model = train(
        data,
        embeddings.embedder(),
        seed=args.seed,
        target_premium_share=args.target_premium_share,
        threshold=args.threshold,
        cache_dir=None if args.no_cache else default_cache_dir(),
        source=Path(args.data).name,
    )
    model.save(args.out)
    info, thresholds = model.training, model.thresholds
    print(
        f"wrote {args.out}: logistic regression on {model.embedder} (+ {', '.join(model.extra_features) or 'nothing'})"
    )
    print(f"  rows {info['rows']:,}, L2 {info['l2']:g} (inner CV APGR {info['inner_cv_apgr']:.3f})")
    print(
        f"  threshold {thresholds['default']:.4f}; 95% of premium quality took "
        f"{thresholds['quality_95_premium_share']:.1%} premium calls in inner CV"
    )
    return 0


def run_router(args: argparse.Namespace) -> int:
    """Run ``costkit router train|eval``; errors print a message and exit 1."""
    try:
        return _train(args) if args.router_command == "train" else _eval(args)
    except (RoutingError, EmbedderUnavailable, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
