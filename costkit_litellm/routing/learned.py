"""The learned classifier: a sentence embedding (plus a few cheap features) into a small model.

**Features.** The request's L2-normalised embedding (``local/all-MiniLM-L6-v2`` by default, the
same vector the semantic cache uses, so one embedding per request) followed by optional cheap
features of the text (``log_chars``: log of the prompt length), standardised with the training
mean and scale stored in the model file.

**Model.** A stack of dense layers read from JSON; the output is the score that the premium
tier is needed, in [0, 1]. One sigmoid layer is a logistic regression; ``train`` writes two
logistic heads (P(premium right), P(economy right)) as a hidden layer of two sigmoid units and a
sigmoid output on their difference. A hidden ReLU layer would make a small MLP.

**Model file.** JSON, never pickle::

    {"format": "costkit-router-model", "version": 1,
     "embedder": "local/all-MiniLM-L6-v2", "dimensions": 384,
     "extra_features": ["log_chars"], "extra_mean": [...], "extra_scale": [...],
     "layers": [{"weights": [[...], ...], "bias": [...], "activation": "sigmoid"}, ...],
     "thresholds": {"default": 0.41, "target_premium_share": null,
                    "quality_95": 0.41, "by_premium_share": {"0.10": 0.62, ...}},
     "training": {...metadata: rows, seed, label, l2, inner-CV APGR, created...}}

``load_model`` validates all of it and raises ``ModelFileError`` naming the file for a missing,
unreadable, corrupt or incompatible file (unknown format or version, inconsistent shapes,
non-finite numbers), so a proxy fails at start-up with the path in the message.

**Without torch.** The model itself is plain numpy. ``score(prompt, embedding)`` with a precomputed
embedding (the one the semantic cache computed, or one from an embedding API) needs nothing else.
Without an embedding, the classifier asks its embedder for one; when it has none, or the local
embedder cannot run here (no torch / sentence-transformers), it raises ``EmbeddingRequired``. In the
proxy (``embed_inline=False``) it never embeds itself: the routing stage passes the request's
vector, computed once in the embedder's worker thread; without one (the embedder failed) it falls
back instead of blocking the event loop on a second try. ``FallbackClassifier`` turns that into the
rule-based decision with one logged warning, which is what the proxy uses: routing keeps working,
just less well.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from costkit_litellm.embeddings import Embedder, EmbedderUnavailable, Vectors, normalise
from costkit_litellm.routing.classifiers import Classifier, Decision, EmbeddingRequired, ModelFileError

log = logging.getLogger(__name__)

FORMAT = "costkit-router-model"
VERSION = 1
FloatMatrix = npt.NDArray[np.float64]

EXTRA_FEATURES: Mapping[str, Callable[[str], float]] = {
    "log_chars": lambda prompt: math.log1p(len(prompt)),
    "log_lines": lambda prompt: math.log1p(prompt.count("\n")),
    "digit_share": lambda prompt: sum(c.isdigit() for c in prompt) / max(1, len(prompt)),
}
"""Cheap text features a model may use beside the embedding, by name."""

ACTIVATIONS: Mapping[str, Callable[[FloatMatrix], FloatMatrix]] = {
    "relu": lambda z: np.maximum(z, 0.0),
    "sigmoid": lambda z: 0.5 * (1.0 + np.tanh(0.5 * z)),
}


@dataclass(frozen=True, eq=False)
class Layer:
    """A dense layer: ``activation(x @ weights + bias)``."""

    weights: FloatMatrix
    bias: FloatMatrix
    activation: str


@dataclass(frozen=True, eq=False)
class LearnedModel:
    """A trained router model: the feature spec, the layers, thresholds and training metadata."""

    embedder: str
    dimensions: int
    layers: tuple[Layer, ...]
    extra_features: tuple[str, ...] = ()
    extra_mean: tuple[float, ...] = ()
    extra_scale: tuple[float, ...] = ()
    thresholds: Mapping[str, Any] = field(default_factory=dict)
    training: Mapping[str, Any] = field(default_factory=dict)

    @property
    def threshold(self) -> float:
        """The decision threshold: premium when the score is at or above it."""
        return float(self.thresholds.get("default", 0.5))

    def features(self, prompts: Sequence[str], embeddings: npt.ArrayLike) -> FloatMatrix:
        """The model's input rows: normalised embeddings, then the standardised extra features."""
        vectors = normalise(embeddings).astype(np.float64)
        if vectors.shape != (len(prompts), self.dimensions):
            raise ValueError(f"expected {len(prompts)} embeddings of {self.dimensions} dimensions, got {vectors.shape}")
        if not self.extra_features:
            return vectors
        extras = np.array([[EXTRA_FEATURES[name](p) for name in self.extra_features] for p in prompts])
        extras = (extras - np.asarray(self.extra_mean)) / np.asarray(self.extra_scale)
        return np.hstack([vectors, extras])

    def predict(self, features: FloatMatrix) -> FloatMatrix:
        """The score of each feature row."""
        hidden = features
        for layer in self.layers:
            hidden = ACTIVATIONS[layer.activation](hidden @ layer.weights + layer.bias)
        out: FloatMatrix = hidden[:, 0]
        return out

    def scores(self, prompts: Sequence[str], embeddings: npt.ArrayLike) -> FloatMatrix:
        """The score of each prompt given its embedding."""
        return self.predict(self.features(prompts, embeddings))

    def to_json(self) -> dict[str, Any]:
        """The model file's content."""
        return {
            "format": FORMAT,
            "version": VERSION,
            "embedder": self.embedder,
            "dimensions": self.dimensions,
            "extra_features": list(self.extra_features),
            "extra_mean": list(self.extra_mean),
            "extra_scale": list(self.extra_scale),
            "layers": [
                {"weights": layer.weights.tolist(), "bias": layer.bias.tolist(), "activation": layer.activation}
                for layer in self.layers
            ],
            "thresholds": dict(self.thresholds),
            "training": dict(self.training),
        }

    def save(self, path: str | Path) -> None:
        """Write the model file (JSON), replacing it atomically."""
        target = Path(path)
        partial = target.with_name(target.name + ".tmp")
        partial.write_text(json.dumps(self.to_json(), indent=1, allow_nan=False) + "\n", encoding="utf-8")
        partial.replace(target)


def _matrix(value: Any, what: str, path: Path, ndim: int) -> FloatMatrix:
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise ModelFileError(path, f"{what} is not a numeric array") from None
    if array.ndim != ndim or array.size == 0:
        raise ModelFileError(path, f"{what} must be a non-empty {ndim}-dimensional array, got shape {array.shape}")
    if not np.all(np.isfinite(array)):
        raise ModelFileError(path, f"{what} holds non-finite numbers")
    return array


def model_from_json(document: Any, path: str | Path = "<memory>") -> LearnedModel:
    """Validate a parsed model file; ``ModelFileError`` names ``path`` and what is wrong."""
    where = Path(path)
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise ModelFileError(where, f'not a costkit router model (expected "format": "{FORMAT}")')
    if document.get("version") != VERSION:
        raise ModelFileError(where, f"model format version {document.get('version')!r}; this costkit reads {VERSION}")
    embedder, dimensions = document.get("embedder"), document.get("dimensions")
    if not isinstance(embedder, str) or not isinstance(dimensions, int) or dimensions <= 0:
        raise ModelFileError(where, "needs an 'embedder' name and a positive integer 'dimensions'")
    extras = document.get("extra_features", [])
    unknown = [name for name in extras if name not in EXTRA_FEATURES] if isinstance(extras, list) else ["?"]
    if unknown:
        raise ModelFileError(where, f"unknown extra features {unknown}; known: {sorted(EXTRA_FEATURES)}")
    mean = document.get("extra_mean", [])
    scale = document.get("extra_scale", [])
    if not (isinstance(mean, list) and isinstance(scale, list) and len(mean) == len(scale) == len(extras)):
        raise ModelFileError(where, "extra_mean and extra_scale must list one number per extra feature")
    if extras and (_matrix(scale, "extra_scale", where, 1) <= 0).any():
        raise ModelFileError(where, "extra_scale must be positive")
    if extras:
        _matrix(mean, "extra_mean", where, 1)
    raw_layers = document.get("layers")
    if not isinstance(raw_layers, list) or not raw_layers:
        raise ModelFileError(where, "no layers")
    layers: list[Layer] = []
    width = dimensions + len(extras)
    for number, raw in enumerate(raw_layers):
        if not isinstance(raw, dict) or raw.get("activation") not in ACTIVATIONS:
            raise ModelFileError(
                where, f"layer {number}: needs weights, bias and an activation in {sorted(ACTIVATIONS)}"
            )
        weights = _matrix(raw.get("weights"), f"layer {number} weights", where, 2)
        bias = _matrix(raw.get("bias"), f"layer {number} bias", where, 1)
        if weights.shape[0] != width or bias.shape != (weights.shape[1],):
            raise ModelFileError(
                where,
                f"layer {number}: weights {weights.shape[0]}x{weights.shape[1]} and bias {bias.shape[0]} "
                f"do not fit its {width} inputs",
            )
        layers.append(Layer(weights, bias, str(raw["activation"])))
        width = weights.shape[1]
    if width != 1 or layers[-1].activation != "sigmoid":
        raise ModelFileError(where, "the last layer must have one sigmoid output")
    thresholds = document.get("thresholds", {})
    default = thresholds.get("default", 0.5) if isinstance(thresholds, dict) else None
    if not isinstance(default, (int, float)) or not 0.0 <= default <= 1.0:
        raise ModelFileError(where, "thresholds.default must be a number in [0, 1]")
    training = document.get("training", {})
    return LearnedModel(
        embedder=embedder,
        dimensions=dimensions,
        layers=tuple(layers),
        extra_features=tuple(extras),
        extra_mean=tuple(float(v) for v in mean),
        extra_scale=tuple(float(v) for v in scale),
        thresholds=thresholds,
        training=training if isinstance(training, dict) else {},
    )


def load_model(path: str | Path) -> LearnedModel:
    """Read and validate a model file; ``ModelFileError`` (naming the file) if it cannot be used."""
    where = Path(path)
    try:
        text = where.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ModelFileError(where, "no such file (train one with: costkit router train)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ModelFileError(where, f"cannot read: {exc}") from exc
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ModelFileError(where, f"not valid JSON (line {exc.lineno}: {exc.msg})") from None
    return model_from_json(document, where)


class LearnedClassifier:
    """Scores prompts with a ``LearnedModel``; wants the request's embedding."""

    name = "learned"
    needs_embedding = True

    def __init__(
        self,
        model: LearnedModel,
        embedder: Embedder | None = None,
        source: str = "<memory>",
        *,
        embed_inline: bool = True,
    ) -> None:
        if embedder is not None and embedder.name != model.embedder:
            raise ModelFileError(
                source, f"trained on {model.embedder} embeddings, but the configured embedder is {embedder.name}"
            )
        self.model = model
        self._embedder = embedder
        self._embed_inline = embed_inline
        self._threshold = model.threshold

    @classmethod
    def load(cls, path: str | Path, embedder: Embedder | None = None) -> LearnedClassifier:
        """A classifier for the model file at ``path`` (validated now, so errors surface at start-up)."""
        return cls(load_model(path), embedder, source=str(path))

    def _embed(self, prompt: str) -> Vectors:
        """Embed in the calling thread (offline use); off with ``embed_inline=False`` (the proxy's stage)."""
        sync: Any = getattr(self._embedder, "embed_sync", None) if self._embed_inline else None
        if not callable(sync):
            raise EmbeddingRequired(
                f"the learned router needs the request's {self.model.embedder} embedding and has no local embedder"
            )
        try:
            return normalise(sync([prompt]))
        except EmbedderUnavailable as exc:
            raise EmbeddingRequired(f"the learned router cannot embed here: {exc}") from exc

    def score(self, prompt: str, embedding: Vectors | None = None) -> Decision:
        """The decision for one prompt; embeds it with the local embedder when no embedding is given."""
        vector = self._embed(prompt) if embedding is None else embedding
        probability = float(self.model.scores([prompt], vector)[0])
        side = "premium" if probability >= self._threshold else "economy"
        return Decision(probability, f"learned: {probability:.2f} vs threshold {self._threshold:.2f} ({side})")


class FallbackClassifier:
    """A learned classifier that falls back to another (the rules) when it cannot get an embedding.

    The first fallback logs a warning naming the reason; later ones are silent, so a proxy
    without torch logs once instead of once per request.
    """

    needs_embedding = True

    def __init__(self, primary: Classifier, fallback: Classifier, logger: logging.Logger = log) -> None:
        self.name = primary.name
        self._primary = primary
        self._fallback = fallback
        self._log = logger
        self._warned = False

    def score(self, prompt: str, embedding: Vectors | None = None) -> Decision:
        """The primary's decision, or the fallback's when the primary needs an embedding it cannot get."""
        try:
            return self._primary.score(prompt, embedding)
        except EmbeddingRequired as exc:
            if not self._warned:
                self._warned = True
                self._log.warning("%s; routing with the %s classifier instead", exc, self._fallback.name)
            decision = self._fallback.score(prompt, embedding)
            return Decision(decision.score, f"{decision.reason} (fallback: no embedding)")
