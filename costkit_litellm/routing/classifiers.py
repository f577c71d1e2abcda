"""The classifier interface and the routing errors.

A classifier answers one question per request: how likely is it that the premium tier is needed?
``Decision.score`` is that probability-like score in [0, 1] (higher = premium), ``reason`` says
why in a few words (it ends up in ``x-costkit-tier``). The tier follows from comparing the score
with a threshold, which the router configuration (or a learned model file) sets.

::

    CostKitError
    └── RoutingError             routing could not run as configured
        ├── ModelFileError       a learned model file is missing, corrupt or incompatible;
        │                        names the file (``path``)
        ├── OutcomeDataError     outcome data for training or evaluation cannot be read;
        │                        names the file
        └── EmbeddingRequired    a learned classifier got no embedding and cannot compute one
                                 (no local embedder here): fall back to rules, with a warning
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

from costkit_litellm.embeddings import Vectors
from costkit_litellm.errors import CostKitError


@dataclass(frozen=True, slots=True)
class Decision:
    """A classifier's answer for one prompt."""

    score: float
    """Probability-like score that the premium tier is needed, in [0, 1]."""
    reason: str
    """Short human-readable explanation, e.g. ``"code block; 3 reasoning cues"``."""


@runtime_checkable
class Classifier(Protocol):
    """Scores a prompt for the premium tier."""

    name: str
    """A short name for tables and headers (``rules``, ``learned``...)."""

    needs_embedding: bool
    """True when ``score`` wants the request's sentence embedding (shared with the semantic cache)."""

    def score(self, prompt: str, embedding: Vectors | None = None) -> Decision:
        """The decision for one prompt; ``embedding`` is its L2-normalised vector when available."""


class RoutingError(CostKitError):
    """Base class of the routing errors."""


class ModelFileError(RoutingError, ValueError):
    """A learned model file is missing, unreadable, corrupt or made for another embedder."""

    def __init__(self, path: str | Path, problem: str) -> None:
        self.path = str(path)
        self.problem = problem
        super().__init__(f"router model file {self.path}: {problem}")


class OutcomeDataError(RoutingError, ValueError):
    """Outcome data (CSV or JSONL) cannot be read; the message names the file and line."""

    def __init__(self, path: str | Path, problem: str) -> None:
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class EmbeddingRequired(RoutingError):
    """A learned classifier needs an embedding and none was given nor can be computed here."""
