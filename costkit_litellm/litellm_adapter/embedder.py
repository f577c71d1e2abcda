"""A LiteLLM embedding model as an ``Embedder``: called through the router, so its spend is accounted too."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import litellm

from costkit_litellm.embeddings import Vectors, normalise


class LiteLLMEmbedder:
    """``router.aembedding`` (or ``litellm.aembedding`` without a router) for a model group."""

    def __init__(self, name: str, router: Callable[[], Any]) -> None:
        self.name = name
        self._router = router

    async def embed(self, texts: Sequence[str]) -> Vectors:
        """One normalised row per text, in order."""
        router = self._router()
        call = router.aembedding if router is not None else litellm.aembedding
        response = await call(model=self.name, input=list(texts), metadata={"costkit": {"purpose": "embedding"}})
        rows = sorted(response.data, key=lambda item: item["index"] if isinstance(item, dict) else item.index)
        return normalise([row["embedding"] if isinstance(row, dict) else row.embedding for row in rows])
