"""Training the learned router from outcome data, deterministically.

``train(data, embedder, seed)``:

1. embeds every prompt once (``embed_prompts``: vectors cached on disk by prompt hash, so a
   second run, or an evaluation of the same data, embeds nothing);
2. builds the features (embedding + cheap extras, standardised on the training rows);
3. picks the L2 strength by inner K-fold cross-validation on the training rows only (APGR of
   each candidate, averaged over the inner folds; ties go to the stronger regularisation);
4. fits the chosen model on all training rows;
5. calibrates thresholds: the premium share needed for 95% of premium quality is read from the
   inner folds' out-of-fold scores (never from rows a model was fitted on); shares are turned
   into thresholds with quantiles of the final model's scores on the training prompts. The
   default threshold is ``threshold`` if given, else the one for ``target_premium_share`` if
   given, else the one for 95% of premium quality.

The model ranks prompts by the expected gain of the premium model, ``E[strong_correct -
weak_correct | prompt]``, which is exactly what a router sorting by score needs: two L2-regularised
logistic heads on the same features, one for P(premium right) and one for P(economy right), and
the score ``sigmoid(4 * (P(premium right) - P(economy right)))`` (0.5 where both are equally
likely to be right). In the model file that is a hidden layer of two sigmoid units and a
sigmoid output with weights (+4, -4). On RouteLLM's MMLU outcomes this ranked better, in inner
cross-validation, than one logistic regression on "only premium is right" (the issue's 0.666
baseline), on "economy is wrong", or on the soft label ``(1 + strong - weak) / 2``.

The solver is Newton's method (IRLS) in plain numpy: no random start, so the same data, seed
and options give the same weights and thresholds (only ``training.created`` differs).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from costkit_litellm.embeddings import LOCAL_MINILM, Embedder, Vectors, normalise
from costkit_litellm.routing.data import IndexArray, Outcomes
from costkit_litellm.routing.evaluate import evaluate_scores, random_folds
from costkit_litellm.routing.learned import EXTRA_FEATURES, Layer, LearnedModel


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/costkit/embeddings`` (``~/.cache/costkit/embeddings``)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "costkit" / "embeddings"


def prompt_digest(prompt: str) -> bytes:
    """The 32-byte SHA-256 of a prompt: the key of its cached vector."""
    return hashlib.sha256(prompt.encode("utf-8", "surrogatepass")).digest()


def _embed(embedder: Embedder, prompts: Sequence[str]) -> Vectors:
    sync: Any = getattr(embedder, "embed_sync", None)
    if callable(sync):
        return normalise(sync(prompts))
    return normalise(asyncio.run(embedder.embed(prompts)))


def _load_cache(folder: Path) -> dict[bytes, Vectors]:
    found: dict[bytes, Vectors] = {}
    for chunk in sorted(folder.glob("*.npz")):
        try:
            with np.load(chunk, allow_pickle=False) as data:
                keys, vectors = data["keys"], data["vectors"]
        except (OSError, ValueError, KeyError):
            continue  # a torn or foreign file: recompute what it held
        if keys.ndim == 2 and keys.shape[1] == 32 and len(keys) == len(vectors):
            found.update(zip((row.tobytes() for row in keys), vectors, strict=True))
    return found


def embed_prompts(embedder: Embedder, prompts: Sequence[str], cache_dir: Path | None = None) -> Vectors:
    """Embed prompts, each at most once per machine.

    Vectors are kept in ``cache_dir/<embedder name>/`` as ``.npz`` chunks (prompt SHA-256 ->
    float32 vector, no pickle); only prompts not in the cache are embedded, then saved as a new
    chunk. ``cache_dir=None`` embeds everything and keeps nothing.
    """
    if cache_dir is None:
        return _embed(embedder, prompts)
    folder = cache_dir / hashlib.sha256(embedder.name.encode()).hexdigest()[:16]
    cached = _load_cache(folder) if folder.is_dir() else {}
    digests = [prompt_digest(p) for p in prompts]
    missing = sorted({d: p for d, p in zip(digests, prompts, strict=True) if d not in cached}.items())
    if missing:
        vectors = _embed(embedder, [p for _, p in missing])
        folder.mkdir(parents=True, exist_ok=True)
        keys = np.frombuffer(b"".join(d for d, _ in missing), dtype=np.uint8).reshape(-1, 32)
        name = hashlib.sha256(keys.tobytes()).hexdigest()[:16]
        partial = folder / f"{name}.{os.getpid()}.tmp"
        with partial.open("wb") as handle:
            np.savez(handle, keys=keys, vectors=vectors)
        partial.replace(folder / f"{name}.npz")
        cached.update(zip((d for d, _ in missing), vectors, strict=True))
    if not prompts:
        return np.zeros((0, 0), dtype=np.float32)
    return normalise(np.stack([cached[d] for d in digests]))


# -- logistic regression (plain numpy, deterministic) -------------------------------------------

FloatMatrix = npt.NDArray[np.float64]


def _sigmoid(z: FloatMatrix) -> FloatMatrix:
    out: FloatMatrix = 0.5 * (1.0 + np.tanh(0.5 * z))  # stable for any z
    return out


def fit_logistic(
    features: npt.ArrayLike,
    targets: npt.ArrayLike,
    l2: float,
    sample_weight: npt.ArrayLike | None = None,
    max_iter: int = 50,
    tol: float = 1e-8,
) -> tuple[FloatMatrix, float]:
    """L2-regularised logistic regression by Newton's method (IRLS); the bias is not penalised.

    Minimises ``sum_i s_i * logloss(t_i, sigmoid(x_i . w + b)) + l2 / 2 * |w|^2`` where targets
    ``t_i`` may be soft (in [0, 1]). Deterministic: no random start, no sampling.
    """
    x = np.asarray(features, dtype=np.float64)
    t = np.asarray(targets, dtype=np.float64)
    s = np.ones(len(t)) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
    n, d = x.shape
    design = np.hstack([x, np.ones((n, 1))])
    penalty = np.full(d + 1, l2)
    penalty[-1] = 0.0
    w = np.zeros(d + 1)
    mean = float(np.average(t, weights=s))
    w[-1] = np.log(max(mean, 1e-6) / max(1 - mean, 1e-6))
    for _ in range(max_iter):
        p = _sigmoid(design @ w)
        gradient = design.T @ (s * (p - t)) + penalty * w
        curvature = s * p * (1 - p) + 1e-12
        hessian = (design * curvature[:, None]).T @ design + np.diag(penalty)
        step = np.linalg.solve(hessian, gradient)
        w -= step
        if float(np.max(np.abs(step))) < tol:
            break
    return w[:-1].copy(), float(w[-1])


# -- training ----------------------------------------------------------------------------------

L2_GRID = (3.0, 10.0, 30.0)
SHARE_GRID = tuple(round(0.05 * i, 2) for i in range(1, 20))


GAIN_SCALE = 4.0
"""The output layer's weight on P(premium right) - P(economy right)."""


def _heads(
    features: FloatMatrix, data: Outcomes, l2: float
) -> tuple[tuple[FloatMatrix, float], tuple[FloatMatrix, float]]:
    strong = fit_logistic(features, data.strong_correct.astype(np.float64), l2)
    weak = fit_logistic(features, data.weak_correct.astype(np.float64), l2)
    return strong, weak


def _gain(features: FloatMatrix, strong: tuple[FloatMatrix, float], weak: tuple[FloatMatrix, float]) -> FloatMatrix:
    gain: FloatMatrix = _sigmoid(features @ strong[0] + strong[1]) - _sigmoid(features @ weak[0] + weak[1])
    return gain


def _extras(prompts: Sequence[str], names: Sequence[str]) -> FloatMatrix:
    return np.array([[EXTRA_FEATURES[name](p) for name in names] for p in prompts], dtype=np.float64).reshape(
        len(prompts), len(names)
    )


def _inner_cv(
    features: FloatMatrix, data: Outcomes, l2: float, folds: Sequence[tuple[IndexArray, IndexArray]]
) -> tuple[float, FloatMatrix]:
    oof = np.zeros(len(data))
    apgrs = []
    for fit_rows, held_rows in folds:
        strong, weak = _heads(features[fit_rows], data.subset(fit_rows), l2)
        oof[held_rows] = _gain(features[held_rows], strong, weak)
        apgrs.append(evaluate_scores(oof[held_rows], data.subset(held_rows))[0].apgr)
    return float(np.mean(apgrs)), oof


def train(
    data: Outcomes,
    embedder: Embedder | None = None,
    seed: int = 0,
    *,
    target_premium_share: float | None = None,
    threshold: float | None = None,
    embeddings: npt.ArrayLike | None = None,
    extra_features: Sequence[str] = ("log_chars",),
    l2_grid: Sequence[float] = L2_GRID,
    inner_folds: int = 5,
    cache_dir: Path | None = None,
    source: str | None = None,
) -> LearnedModel:
    """Train a learned router on outcome data (see the module docstring for every step).

    Give ``embeddings`` (one row per prompt) to skip embedding; otherwise ``embedder`` embeds
    the prompts, through the on-disk cache in ``cache_dir`` when one is given.
    """
    if target_premium_share is not None and not 0.0 < target_premium_share < 1.0:
        raise ValueError("target_premium_share must be between 0 and 1")
    if threshold is not None and not 0.0 <= threshold <= 1.0:
        raise ValueError("threshold must be between 0 and 1")
    unknown = [name for name in extra_features if name not in EXTRA_FEATURES]
    if unknown:
        raise ValueError(f"unknown extra features {unknown}; known: {sorted(EXTRA_FEATURES)}")
    if embeddings is None:
        if embedder is None:
            raise ValueError("train() needs an embedder or precomputed embeddings")
        embeddings = embed_prompts(embedder, data.prompts, cache_dir)
        embedder_name = embedder.name
    else:
        embedder_name = embedder.name if embedder is not None else LOCAL_MINILM
    vectors = normalise(embeddings).astype(np.float64)
    if len(vectors) != len(data):
        raise ValueError(f"{len(vectors)} embeddings for {len(data)} prompts")
    extras = _extras(data.prompts, extra_features)
    mean = extras.mean(axis=0) if extra_features else np.zeros(0)
    scale = extras.std(axis=0) if extra_features else np.zeros(0)
    scale[scale == 0] = 1.0
    features = np.hstack([vectors, (extras - mean) / scale])

    folds = random_folds(data.prompts, inner_folds, seed)
    search = {l2: _inner_cv(features, data, l2, folds) for l2 in l2_grid}
    best_l2 = max(l2_grid, key=lambda l2: (round(search[l2][0], 4), l2))
    inner_apgr, oof = search[best_l2]
    inner_metrics = evaluate_scores(oof, data)[0]

    strong, weak = _heads(features, data, best_l2)
    layers = (
        Layer(np.column_stack([strong[0], weak[0]]), np.array([strong[1], weak[1]]), "sigmoid"),
        Layer(np.array([[GAIN_SCALE], [-GAIN_SCALE]]), np.array([0.0]), "sigmoid"),
    )
    fitted = LearnedModel(embedder_name, vectors.shape[1], layers, tuple(extra_features))
    train_scores = fitted.predict(features)

    def threshold_for(share: float) -> float:
        return float(np.quantile(train_scores, 1.0 - share))

    share_95 = float(np.clip(inner_metrics.share_for_95, 0.0, 1.0))
    thresholds: dict[str, Any] = {
        "quality_95": threshold_for(share_95),
        "quality_95_premium_share": round(share_95, 4),
        "target_premium_share": target_premium_share,
        "by_premium_share": {f"{share:.2f}": threshold_for(share) for share in SHARE_GRID},
    }
    if threshold is not None:
        thresholds["default"] = threshold
    elif target_premium_share is not None:
        thresholds["default"] = threshold_for(target_premium_share)
    else:
        thresholds["default"] = thresholds["quality_95"]
    training = {
        "rows": len(data),
        "groups": len(set(data.groups)),
        "source": source,
        "seed": seed,
        "target": "expected gain E[strong_correct - weak_correct]",
        "model": "two logistic heads (Newton/IRLS): sigmoid(4 * (P(strong right) - P(weak right)))",
        "l2": best_l2,
        "l2_search": {f"{l2:g}": round(search[l2][0], 4) for l2 in l2_grid},
        "inner_folds": inner_folds,
        "inner_cv_apgr": round(inner_apgr, 4),
        "inner_cv_cpt50": round(inner_metrics.cpt50, 4),
        "inner_cv_cpt80": round(inner_metrics.cpt80, 4),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    return LearnedModel(
        embedder=embedder_name,
        dimensions=vectors.shape[1],
        layers=layers,
        extra_features=tuple(extra_features),
        extra_mean=tuple(float(v) for v in mean),
        extra_scale=tuple(float(v) for v in scale),
        thresholds=thresholds,
        training=training,
    )
