"""Train the pair classifier of the cache verification stage (``pair_model.json``).

    python -m costkit_litellm.cache.pair_train \\
        --data ../shared/data/qqp-dev/pairs.jsonl --out costkit_litellm/cache/pair_model.json

Data: the labelled Quora question pairs in ``../shared/data/qqp-dev`` (outside the package; only
weights and summary figures are written, never qqp text). Each pair goes to the ``tune`` or the
``held`` split by a seeded hash of its two texts (:func:`split_of`, 50/50); everything here,
training and choosing the classifier threshold, uses the ``tune`` split only. ``held`` is for
``bench/cache_quality.py`` and the integration test.

Model: a one-hidden-layer MLP (8 ReLU units, Adam, L2 1e-2, seed 7) over
:func:`costkit_litellm.cache.verify.pair_features` (``|u-v|``, ``u*v`` and scalar features). The
number of epochs is the one with the lowest 5-fold out-of-fold log loss on ``tune``; the final
net is trained on all of ``tune`` for that many epochs. The thresholds shipped with it come from
the out-of-fold scores: for each wrong-hit target (:data:`OPERATING_TARGETS`), the lowest
classifier threshold keeping wrong hits under the target, at the highest similarity threshold
that costs at most a quarter point of hits. The default target is 0.75% (a margin under 1%).

Embeddings come from the local all-MiniLM-L6-v2 (the ``local-embeddings`` extra), computed once
and cached on disk under ``~/.cache/costkit/`` keyed by a hash of each text.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import numpy.typing as npt

from costkit_litellm.cache.verify import (
    MODEL_FORMAT,
    SCALAR_FEATURES,
    Floats,
    analyse,
    encode_array,
    guard_refusal,
    pair_features,
)
from costkit_litellm.embeddings import LOCAL_MINILM, Vectors

SPLIT_SEED = "costkit-qqp-split-v1"
"""The split salt: change it and every figure measured on ``held`` changes."""

EMBEDDING_CACHE = Path(os.environ.get("COSTKIT_CACHE_DIR", Path.home() / ".cache" / "costkit"))


@dataclass(frozen=True)
class Pair:
    """Two questions and whether they ask the same thing (serving one's answer for the other is right)."""

    a: str
    b: str
    duplicate: bool


def load_pairs(path: Path) -> list[Pair]:
    """Pairs from a JSON-lines file of ``{"a", "b", "duplicate"}`` objects."""
    pairs = []
    with path.open(encoding="utf-8") as lines:
        for line in lines:
            if line.strip():
                row = json.loads(line)
                pairs.append(Pair(str(row["a"]), str(row["b"]), bool(row["duplicate"])))
    return pairs


def split_of(pair: Pair, seed: str = SPLIT_SEED) -> str:
    """``"tune"`` or ``"held"``: a stable 50/50 split by a seeded hash of the pair's texts."""
    digest = hashlib.sha256(f"{seed}\0{pair.a}\0{pair.b}".encode()).digest()
    return "tune" if digest[0] % 2 == 0 else "held"


def embed_cached(texts: Sequence[str], cache_dir: Path = EMBEDDING_CACHE, runtime: str | None = None) -> Vectors:
    """MiniLM vectors of ``texts`` (one row each) from the local embedder on ``runtime`` (default: as
    ``LocalEmbedder`` picks it); each distinct text is embedded once, ever, per vector space.

    ``cache_dir`` holds ``minilm-*.npz`` files of ``digests`` (the first 16 bytes of each text's
    sha256, one uint8 row each) and ``vectors``; texts found in none of them are embedded and saved
    as a new file. fp32 vectors (onnx and torch, which agree) and int8 ones (``onnx-int8``) are kept
    apart by the digest.
    """
    from costkit_litellm.embeddings.local import LocalEmbedder

    embedder = LocalEmbedder(batch_size=128, runtime=runtime)
    space = embedder.vector_space()
    name = LOCAL_MINILM if space == "fp32" else f"{LOCAL_MINILM}@{space}"
    unique = sorted(set(texts))
    digests = {t: hashlib.sha256(f"{name}\0{t}".encode()).digest()[:16] for t in unique}
    known: dict[bytes, Vectors] = {}
    wanted = set(digests.values())
    for path in sorted(cache_dir.glob("minilm-*.npz")):
        with np.load(path) as stored:
            for row, vector in zip(stored["digests"], stored["vectors"], strict=True):
                if (digest := row.tobytes()) in wanted:
                    known[digest] = vector
    missing = [t for t in unique if digests[t] not in known]
    if missing:
        if space != "int8":
            _limit_threads()
        fresh = embedder.embed_sync(missing)
        new_digests = np.frombuffer(b"".join(digests[t] for t in missing), dtype=np.uint8).reshape(-1, 16)
        cache_dir.mkdir(parents=True, exist_ok=True)
        file_name = hashlib.sha256(new_digests.tobytes()).hexdigest()[:24]
        partial = cache_dir / f"partial-{file_name}.npz"
        np.savez(partial, digests=new_digests, vectors=fresh)
        partial.replace(cache_dir / f"minilm-{file_name}.npz")
        known.update(zip((digests[t] for t in missing), fresh, strict=True))
    return np.stack([known[digests[t]] for t in texts]).astype(np.float32)


def _limit_threads() -> None:
    # The machine is shared: torch would take every core.
    import importlib

    torch = importlib.import_module("torch")
    torch.set_num_threads(2)


def pair_vectors(pairs: Sequence[Pair]) -> tuple[Vectors, Vectors]:
    """The embeddings of every pair's ``a`` and ``b`` (one cached table for all the texts)."""
    texts = [p.a for p in pairs] + [p.b for p in pairs]
    vectors = embed_cached(texts)
    return vectors[: len(pairs)], vectors[len(pairs) :]


def labels(pairs: Sequence[Pair]) -> npt.NDArray[np.bool_]:
    """``duplicate`` as a boolean array."""
    return np.array([p.duplicate for p in pairs], dtype=bool)


def feature_matrix(pairs: Sequence[Pair], u: Vectors, v: Vectors) -> Floats:
    """One :func:`pair_features` row per pair."""
    return np.stack([pair_features(analyse(p.a), u[i], analyse(p.b), v[i]) for i, p in enumerate(pairs)]).astype(
        np.float32
    )


def guard_pass(pairs: Sequence[Pair]) -> npt.NDArray[np.bool_]:
    """Whether every guard lets each pair through."""
    return np.array([guard_refusal(analyse(p.a), analyse(p.b)) is None for p in pairs], dtype=bool)


# --------------------------------------------------------------------------- the MLP


@dataclass
class Mlp:
    """Weights of the one-hidden-layer MLP, on standardised inputs."""

    w1: Floats
    b1: Floats
    w2: Floats
    b2: Floats

    def logits(self, x: Floats) -> Floats:
        hidden = np.maximum(x @ self.w1 + self.b1, 0.0)
        result: Floats = hidden @ self.w2 + self.b2[0]
        return result


@dataclass(frozen=True)
class TrainSettings:
    """Hyper-parameters of the MLP (chosen by cross-validation on the tune split)."""

    hidden: int = 8
    epochs: int = 20
    batch: int = 128
    learning_rate: float = 1e-3
    weight_decay: float = 1e-2
    seed: int = 7


def _sigmoid(z: Floats) -> Floats:
    result: Floats = (1.0 / (1.0 + np.exp(-np.clip(z, -30, 30)))).astype(np.float32)
    return result


def train_mlp(
    x: Floats,
    y: npt.NDArray[np.bool_],
    settings: TrainSettings,
    x_val: Floats | None = None,
) -> tuple[Mlp, list[Floats]]:
    """Adam on binary cross-entropy with L2; returns the net and, per epoch, the scores of ``x_val``."""
    rng = np.random.default_rng(settings.seed)
    n, d = x.shape
    h = settings.hidden
    params = [
        (rng.standard_normal((d, h)) * np.sqrt(2.0 / d)).astype(np.float32),
        np.zeros(h, np.float32),
        (rng.standard_normal(h) * np.sqrt(1.0 / h)).astype(np.float32),
        np.zeros(1, np.float32),
    ]
    moments = [np.zeros_like(p) for p in params]
    squares = [np.zeros_like(p) for p in params]
    target = y.astype(np.float32)
    step = 0
    history: list[Floats] = []
    for _ in range(settings.epochs):
        order = rng.permutation(n)
        for start in range(0, n, settings.batch):
            idx = order[start : start + settings.batch]
            xb, yb = x[idx], target[idx]
            w1, b1, w2, b2 = params
            pre = xb @ w1 + b1
            hidden = np.maximum(pre, 0.0)
            prob = _sigmoid(hidden @ w2 + b2[0])
            grad_logit = (prob - yb) / len(idx)
            grad_hidden = np.outer(grad_logit, w2) * (pre > 0)
            grads = [
                xb.T @ grad_hidden + settings.weight_decay * w1,
                grad_hidden.sum(axis=0),
                hidden.T @ grad_logit + settings.weight_decay * w2,
                np.array([grad_logit.sum()], np.float32),
            ]
            step += 1
            for i, grad in enumerate(grads):
                moments[i] = 0.9 * moments[i] + 0.1 * grad
                squares[i] = 0.999 * squares[i] + 0.001 * grad * grad
                m_hat = moments[i] / (1 - 0.9**step)
                s_hat = squares[i] / (1 - 0.999**step)
                params[i] = (params[i] - settings.learning_rate * m_hat / (np.sqrt(s_hat) + 1e-8)).astype(np.float32)
        if x_val is not None:
            history.append(_sigmoid(Mlp(*params).logits(x_val)))
    return Mlp(*params), history


def standardiser(x: Floats) -> tuple[Floats, Floats]:
    """Per-column mean and scale (constant columns keep scale 1)."""
    mean = x.mean(axis=0).astype(np.float32)
    scale = x.std(axis=0).astype(np.float32)
    scale[scale < 1e-6] = 1.0
    return mean, scale


def folds_of(n: int, k: int, seed: int) -> npt.NDArray[np.int64]:
    """A seeded fold number for each of ``n`` rows."""
    rng = np.random.default_rng(seed)
    result: npt.NDArray[np.int64] = rng.permutation(np.arange(n) % k)
    return result


def out_of_fold_scores(x: Floats, y: npt.NDArray[np.bool_], settings: TrainSettings, k: int = 5) -> list[Floats]:
    """Per epoch, every row's score from the model of the fold that did not train on it."""
    fold = folds_of(len(y), k, settings.seed)
    per_epoch = [np.zeros(len(y), np.float32) for _ in range(settings.epochs)]
    for f in range(k):
        train, val = fold != f, fold == f
        mean, scale = standardiser(x[train])
        _, history = train_mlp((x[train] - mean) / scale, y[train], settings, (x[val] - mean) / scale)
        for epoch, scores in enumerate(history):
            per_epoch[epoch][val] = scores
    return per_epoch


def log_loss(scores: Floats, y: npt.NDArray[np.bool_]) -> float:
    """Mean binary cross-entropy."""
    p = np.clip(scores.astype(np.float64), 1e-7, 1 - 1e-7)
    return float(-np.mean(np.where(y, np.log(p), np.log(1 - p))))


# --------------------------------------------------------------------------- operating point


@dataclass(frozen=True)
class TunedPoint:
    """A similarity and a classifier threshold, with the rates they give on some pairs."""

    similarity_threshold: float
    classifier_threshold: float
    hit_rate: float
    """Share of duplicates served."""
    wrong_hit_rate: float
    """Share of non-duplicates served."""


def operating_point(
    similarity: Floats,
    passed_guards: npt.NDArray[np.bool_],
    scores: Floats,
    y: npt.NDArray[np.bool_],
    similarity_threshold: float,
    max_wrong_hit_rate: float,
) -> TunedPoint:
    """The lowest classifier threshold keeping wrong hits at or under ``max_wrong_hit_rate``."""
    eligible = passed_guards & (similarity >= similarity_threshold)
    negatives = int((~y).sum())
    allowed = int(np.floor(max_wrong_hit_rate * negatives))
    negative_scores = np.sort(scores[eligible & ~y])[::-1]
    if len(negative_scores) <= allowed:
        threshold = 0.0
    else:
        # Strictly above the (allowed+1)-th highest negative score.
        threshold = float(np.nextafter(negative_scores[allowed], np.float32(1.0)))
    served = eligible & (scores >= threshold)
    return TunedPoint(
        similarity_threshold,
        threshold,
        float(served[y].mean()),
        float(served[~y].sum() / max(negatives, 1)),
    )


OPERATING_TARGETS = (0.0075, 0.01, 0.02, 0.03, 0.05)
"""Wrong-hit targets (on tune, out-of-fold) for which thresholds ship; the first is the default."""

SIMILARITY_GRID = tuple(round(0.5 + 0.05 * i, 2) for i in range(9))


def best_operating_point(
    similarity: Floats,
    passed_guards: npt.NDArray[np.bool_],
    scores: Floats,
    y: npt.NDArray[np.bool_],
    max_wrong_hit_rate: float,
) -> tuple[TunedPoint, list[TunedPoint]]:
    """The highest similarity threshold on :data:`SIMILARITY_GRID` within a quarter point of the most hits.

    A higher similarity threshold costs (almost) no hits once the classifier decides, and it lets
    the vector search return fewer candidates to verify.
    """
    points = [operating_point(similarity, passed_guards, scores, y, s, max_wrong_hit_rate) for s in SIMILARITY_GRID]
    best = max(p.hit_rate for p in points)
    return max((p for p in points if p.hit_rate >= best - 0.0025), key=lambda p: p.similarity_threshold), points


# --------------------------------------------------------------------------- the command


def train(
    pairs: Sequence[Pair], settings: TrainSettings, max_wrong_hit_rate: float, log: TextIO = sys.stderr
) -> dict[str, Any]:
    """Train on the ``tune`` split of ``pairs`` and return the ``pair_model.json`` document."""
    tune = [p for p in pairs if split_of(p) == "tune"]
    u, v = pair_vectors(tune)
    x = feature_matrix(tune, u, v)
    y = labels(tune)
    similarity = np.einsum("ij,ij->i", u, v).astype(np.float32)
    passed = guard_pass(tune)
    print(f"tune split: {len(tune)} pairs, {int(y.sum())} duplicates", file=log)

    per_epoch = out_of_fold_scores(x, y, settings)
    losses = [log_loss(scores, y) for scores in per_epoch]
    best_epoch = int(np.argmin(losses)) + 1
    print(f"5-fold log loss by epoch: best {losses[best_epoch - 1]:.4f} at epoch {best_epoch}", file=log)
    oof = per_epoch[best_epoch - 1]
    point, curve = best_operating_point(similarity, passed, oof, y, max_wrong_hit_rate)
    for p in curve:
        print(
            f"  similarity >= {p.similarity_threshold:.2f}: classifier >= {p.classifier_threshold:.3f} "
            f"hits {p.hit_rate:.1%} of duplicates, {p.wrong_hit_rate:.2%} wrong",
            file=log,
        )

    points = [best_operating_point(similarity, passed, oof, y, target)[0] for target in OPERATING_TARGETS]
    final_settings = TrainSettings(**{**settings.__dict__, "epochs": best_epoch})
    mean, scale = standardiser(x)
    net, _ = train_mlp((x - mean) / scale, y, final_settings)
    return {
        "format": MODEL_FORMAT,
        "embedding_model": LOCAL_MINILM,
        "scalar_features": list(SCALAR_FEATURES),
        "similarity_threshold": point.similarity_threshold,
        "threshold": point.classifier_threshold,
        "operating_points": [
            {
                "max_wrong_hit_rate": target,
                "similarity_threshold": p.similarity_threshold,
                "classifier_threshold": p.classifier_threshold,
                "tune_hit_rate": round(p.hit_rate, 4),
            }
            for target, p in zip(OPERATING_TARGETS, points, strict=True)
        ],
        "arrays": {
            "mean": encode_array(mean),
            "scale": encode_array(scale),
            "w1": encode_array(net.w1),
            "b1": encode_array(net.b1),
            "w2": encode_array(net.w2),
            "b2": encode_array(net.b2),
        },
        "meta": {
            "trained_on": "qqp-dev pairs.jsonl (Quora Question Pairs via GPTCache), split 'tune' "
            f"(sha256 of '{SPLIT_SEED}\\0a\\0b', first byte even): {len(tune)} pairs, {int(y.sum())} duplicates",
            "trainer": "python -m costkit_litellm.cache.pair_train",
            "settings": {**final_settings.__dict__},
            "threshold_from": f"5-fold out-of-fold scores on the tune split, wrong hits <= {max_wrong_hit_rate:.2%}",
            "tune_out_of_fold": {
                "hit_rate": round(point.hit_rate, 4),
                "wrong_hit_rate": round(point.wrong_hit_rate, 4),
            },
        },
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="qqp-dev pairs.jsonl")
    parser.add_argument("--out", type=Path, help="where to write pair_model.json")
    parser.add_argument("--embed-only", action="store_true", help="fill the embedding cache and stop")
    parser.add_argument("--hidden", type=int, default=TrainSettings.hidden)
    parser.add_argument("--epochs", type=int, default=TrainSettings.epochs, help="most epochs (CV picks fewer)")
    parser.add_argument("--weight-decay", type=float, default=TrainSettings.weight_decay)
    parser.add_argument("--seed", type=int, default=TrainSettings.seed)
    parser.add_argument(
        "--max-wrong-hit-rate",
        type=float,
        default=0.0075,
        help="calibration target on the tune split (margin under 1%%)",
    )
    args = parser.parse_args(argv)
    pairs = load_pairs(args.data)
    if args.embed_only:
        pair_vectors(pairs)
        return 0
    settings = TrainSettings(hidden=args.hidden, epochs=args.epochs, weight_decay=args.weight_decay, seed=args.seed)
    document = train(pairs, settings, args.max_wrong_hit_rate)
    if args.out:
        args.out.write_text(json.dumps(document, indent=1) + "\n", encoding="utf-8")
        print(f"wrote {args.out} ({args.out.stat().st_size // 1024} KiB)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
