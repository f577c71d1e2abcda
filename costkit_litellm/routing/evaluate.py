"""RouteLLM's router metrics, computed the way its ``routellm/evals/evaluate.py`` computes them.

What RouteLLM does (read from lm-sys/RouteLLM, ``routellm/evals/benchmarks.py`` and
``routellm/evals/evaluate.py``):

- **Threshold sweep.** A router gives every prompt a score ("strong win rate"). The thresholds
  are the bin edges of ``pd.qcut(scores, num_results, retbins=True)`` with ``num_results=10``:
  the 0%, 10%, ..., 100% quantiles of the scores (pandas' linear interpolation, as
  ``np.quantile``), 11 points. At edge ``i`` a prompt goes to the strong model when
  ``score >= threshold``, except at the last edge where it is ``score > threshold`` (so the sweep
  runs from 100% to 0% strong calls). Each point is (strong share, accuracy of the mix).
  RouteLLM's comment says the bins include duplicates; ``pd.qcut`` itself would refuse duplicate
  edges, so a router with few distinct scores (LiteLLM's tiers) could not be evaluated there. We
  keep duplicate edges: they repeat a point, which adds nothing to the area.
- **AUC / APGR.** Points sorted by strong share; ``AUC = trapz(accuracy, share)``; the weak and
  strong references are ``trapz`` of their constant accuracies over the same shares, and
  ``APGR = (AUC - weak_auc) / (strong_auc - weak_auc)``. Random routing gives ~0.5; the oracle
  exceeds 1, since it beats the strong model with few strong calls.
- **CPT(x%).** ``np.interp(weak + x * (strong - weak), accuracies, shares)`` on the sorted points:
  the strong share at which the curve first recovers x% of the quality gap (RouteLLM prints 20%,
  50% and 80%). ``np.interp`` assumes increasing accuracies; RouteLLM passes the curve as it is,
  and so do we, so a non-monotone curve is read the same way.
- **Premium share for 95% of premium quality**: the same interpolation at ``0.95 * strong``
  (the figure the issue quotes: 44.7% for the logistic baseline, 8.5% for the oracle).
- **Oracle** (``get_optimal_accuracy``): at strong share ``p`` in 0%, 10%, ..., 100%, the weak
  model's correct answers plus ``min(p * n, #(strong right and weak wrong))``.
- **Random router**: uniform scores, seeded (RouteLLM seeds Python's ``random`` with 0 per router).

Shares and accuracies here are fractions (RouteLLM prints percent); the ratios are the same.
Weak and strong accuracies are those of the evaluated rows (a test fold), as RouteLLM computes
them on the set it evaluates.

Cross-validation: random K-fold over *distinct* prompts (a prompt repeated in the data, which MMLU
has ~100 times, never sits on both sides), and grouped folds (whole groups held out: MMLU
subjects), both deterministic given a seed. Metrics are computed per test fold and averaged.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from costkit_litellm.routing.data import BoolArray, IndexArray, Outcomes

FloatArray = npt.NDArray[np.float64]
NUM_RESULTS = 10
"""RouteLLM's ``--num-results`` default: 10 quantile bins, 11 thresholds."""


@dataclass(frozen=True)
class Curve:
    """A cost-quality curve: points sorted by premium share (ties keep sweep order)."""

    shares: FloatArray
    accuracies: FloatArray
    thresholds: FloatArray


def sweep(scores: npt.ArrayLike, weak: BoolArray, strong: BoolArray, num_results: int = NUM_RESULTS) -> Curve:
    """RouteLLM's threshold sweep over a router's scores (see the module docstring)."""
    values = np.asarray(scores, dtype=np.float64)
    if values.shape != weak.shape or values.shape != strong.shape or values.size == 0:
        raise ValueError("scores, weak and strong must be non-empty and of the same length")
    thresholds = np.quantile(values, np.linspace(0.0, 1.0, num_results + 1))
    last = len(thresholds) - 1
    shares, accuracies = [], []
    for i, threshold in enumerate(thresholds):
        premium = values >= threshold if i != last else values > threshold
        shares.append(premium.mean())
        accuracies.append(np.where(premium, strong, weak).mean())
    order = np.argsort(np.asarray(shares), kind="stable")
    return Curve(np.asarray(shares)[order], np.asarray(accuracies)[order], thresholds[order])


def oracle_curve(weak: BoolArray, strong: BoolArray, num_results: int = NUM_RESULTS) -> Curve:
    """RouteLLM's optimal router: premium calls spent only where the premium model alone is right."""
    n = len(weak)
    shares = np.linspace(0.0, 1.0, num_results + 1)
    gain = float(np.count_nonzero(strong & ~weak))
    accuracies = (np.count_nonzero(weak) + np.minimum(shares * n, gain)) / n
    return Curve(shares, accuracies, np.full_like(shares, np.nan))


def random_scores(n: int, seed: int) -> FloatArray:
    """The random router's scores: uniform on [0, 1), reproducible from the seed."""
    return np.random.default_rng(seed).random(n)


@dataclass(frozen=True)
class Metrics:
    """RouteLLM's summary of one curve."""

    apgr: float
    auc: float
    cpt50: float
    """Premium share that recovers 50% of the quality gap (fraction)."""
    cpt80: float
    share_for_95: float
    """Premium share that reaches 95% of the premium model's accuracy (fraction)."""
    weak_accuracy: float
    strong_accuracy: float


def _trapezoid(y: FloatArray, x: FloatArray) -> float:
    return float(np.sum((x[1:] - x[:-1]) * (y[1:] + y[:-1]) / 2.0))


def metrics(curve: Curve, weak_accuracy: float, strong_accuracy: float) -> Metrics:
    """APGR, AUC, CPT(50%), CPT(80%) and the share for 95% of premium quality of a curve."""
    x, y = curve.shares, curve.accuracies
    auc = _trapezoid(y, x)
    weak_auc = _trapezoid(np.full_like(x, weak_accuracy), x)
    strong_auc = _trapezoid(np.full_like(x, strong_accuracy), x)
    gap = strong_accuracy - weak_accuracy

    def cpt(target: float) -> float:
        return float(np.interp(target, y, x))

    return Metrics(
        apgr=float((auc - weak_auc) / (strong_auc - weak_auc)) if strong_auc != weak_auc else float("nan"),
        auc=auc,
        cpt50=cpt(weak_accuracy + 0.5 * gap),
        cpt80=cpt(weak_accuracy + 0.8 * gap),
        share_for_95=cpt(0.95 * strong_accuracy),
        weak_accuracy=float(weak_accuracy),
        strong_accuracy=float(strong_accuracy),
    )


def evaluate_scores(scores: npt.ArrayLike, data: Outcomes, num_results: int = NUM_RESULTS) -> tuple[Metrics, Curve]:
    """Sweep one router's scores over outcome data and summarise the curve."""
    curve = sweep(scores, data.weak_correct, data.strong_correct, num_results)
    return metrics(curve, float(data.weak_correct.mean()), float(data.strong_correct.mean())), curve


# -- cross-validation ---------------------------------------------------------------------------

Fold = tuple[IndexArray, IndexArray]
"""(train rows, test rows)."""


def random_folds(prompts: Sequence[str], k: int, seed: int) -> list[Fold]:
    """K folds over distinct prompts (repeats of a prompt share a fold), shuffled by the seed."""
    if k < 2:
        raise ValueError("cross-validation needs at least 2 folds")
    distinct, inverse = np.unique(np.asarray(prompts, dtype=object).astype(str), return_inverse=True)
    order = np.random.default_rng(seed).permutation(len(distinct))
    fold_of_distinct = np.empty(len(distinct), dtype=np.intp)
    fold_of_distinct[order] = np.arange(len(distinct)) % k
    fold_of_row = fold_of_distinct[inverse]
    rows = np.arange(len(prompts))
    return [(rows[fold_of_row != f], rows[fold_of_row == f]) for f in range(k)]


def group_folds(groups: Sequence[str], k: int, seed: int) -> list[Fold]:
    """K folds of whole groups (leave-groups-out), shuffled by the seed, balanced by row count."""
    names, inverse, counts = np.unique(
        np.asarray(groups, dtype=object).astype(str), return_inverse=True, return_counts=True
    )
    if len(names) < k or k < 2:
        raise ValueError(f"grouped folds need at least 2 folds and {k} groups; the data has {len(names)}")
    order = np.random.default_rng(seed).permutation(len(names))
    sizes = np.zeros(k, dtype=np.int64)
    fold_of_group = np.empty(len(names), dtype=np.intp)
    for g in order:  # the next shuffled group joins the smallest fold so far
        f = int(np.argmin(sizes))
        fold_of_group[g] = f
        sizes[f] += counts[g]
    fold_of_row = fold_of_group[inverse]
    rows = np.arange(len(groups))
    return [(rows[fold_of_row != f], rows[fold_of_row == f]) for f in range(k)]


ScoreFunction = Callable[[Outcomes, IndexArray, IndexArray, int], FloatArray]
"""``(data, train rows, test rows, fold seed) -> scores of the test rows``; may train on the train rows."""


def fixed(scores: npt.ArrayLike) -> ScoreFunction:
    """A router that needs no training: its precomputed scores for every row."""
    values = np.asarray(scores, dtype=np.float64)

    def score(data: Outcomes, train: IndexArray, test: IndexArray, seed: int) -> FloatArray:
        return values[test]

    return score


def random_router(data: Outcomes, train: IndexArray, test: IndexArray, seed: int) -> FloatArray:
    """The random reference router."""
    return random_scores(len(test), seed)


@dataclass
class CvResult:
    """One router's metrics per test fold, and its curve averaged point by point."""

    name: str
    folds: list[Metrics] = field(default_factory=list)
    curves: list[Curve] = field(default_factory=list)

    def mean(self, attribute: str) -> float:
        """The mean over folds of one ``Metrics`` attribute."""
        return float(np.mean([getattr(m, attribute) for m in self.folds]))

    def std(self, attribute: str) -> float:
        """The standard deviation over folds of one ``Metrics`` attribute."""
        return float(np.std([getattr(m, attribute) for m in self.folds]))

    def mean_curve(self) -> Curve:
        """Shares and accuracies averaged over folds, point by point."""
        return Curve(
            np.mean([c.shares for c in self.curves], axis=0),
            np.mean([c.accuracies for c in self.curves], axis=0),
            np.full(len(self.curves[0].shares), np.nan),
        )


def cross_validate(
    data: Outcomes,
    routers: dict[str, ScoreFunction],
    folds: Sequence[Fold],
    seed: int = 0,
    num_results: int = NUM_RESULTS,
    with_oracle: bool = True,
) -> list[CvResult]:
    """Every router scored on every test fold; learned routers train on that fold's train rows only."""
    results = {name: CvResult(name) for name in (*routers, *(["oracle"] if with_oracle else []))}
    for number, (train, test) in enumerate(folds):
        held_out = data.subset(test)
        for name, score in routers.items():
            fold_metrics, curve = evaluate_scores(score(data, train, test, seed + number), held_out, num_results)
            results[name].folds.append(fold_metrics)
            results[name].curves.append(curve)
        if with_oracle:
            curve = oracle_curve(held_out.weak_correct, held_out.strong_correct, num_results)
            weak, strong = float(held_out.weak_correct.mean()), float(held_out.strong_correct.mean())
            results["oracle"].folds.append(metrics(curve, weak, strong))
            results["oracle"].curves.append(curve)
    return list(results.values())


def markdown_table(results: Sequence[CvResult]) -> str:
    """``| router | APGR | CPT(50%) | CPT(80%) | premium share for 95% |`` (mean over folds, ± std)."""
    several = any(len(r.folds) > 1 for r in results)
    lines = [
        "| router | APGR | CPT(50%) | CPT(80%) | premium share for 95% of premium quality |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in results:
        spread = f" ± {r.std('apgr'):.3f}" if several else ""
        lines.append(
            f"| {r.name} | {r.mean('apgr'):.3f}{spread} | {r.mean('cpt50'):.1%} | {r.mean('cpt80'):.1%} "
            f"| {r.mean('share_for_95'):.1%} |"
        )
    return "\n".join(lines)
