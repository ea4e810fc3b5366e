"""The query bundle's layout: its format number, the names of its files, and where the bundle of
this model file and OpenVINO version lives (found by the model file's stamp, nothing hashed)."""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
from pathlib import Path

__all__ = ["QUICK_FORMAT", "bin_file_stamp", "quick_folder"]

# Bump when the bundle's files or their meaning change: an older bundle is then not used.
QUICK_FORMAT = 2  # 2: checksums of the files the path reads
_META = "quick.json"  # written last: the bundle is complete once it is there
_VOCAB = "vocab.bin"  # the sorted pieces' UTF-8 bytes, concatenated
_ARRAYS = ("offsets", "ids", "scores")  # .npy files beside it
_STAMPS = "verified.json"  # the stamps of the files whose checksums last matched; compiled models' checksums
_COMPILED = "compiled"  # OpenVINO's model cache of the quick path, inside the bundle
_OPENVINO_FILES = ("model.xml", "model.bin")  # of the OpenVINO copy, recorded as "openvino/<name>"


def bin_file_stamp(bin_path: Path) -> str:
    """The model file's resolved path, size and modification time as one string: what a bundle
    records of the file it was made from (a changed file makes a new bundle)."""
    info = bin_path.stat()
    return f"{bin_path.resolve()}|{info.st_size}|{info.st_mtime_ns}"


def quick_folder(cache_dir: Path, bin_path: Path, ov_version: str) -> Path:
    """Where the bundle for this model file and OpenVINO version lives (no hashing of the file)."""
    key = f"{bin_file_stamp(bin_path)}|{ov_version}|{QUICK_FORMAT}"
    return Path(cache_dir) / f"quick-{hashlib.sha256(key.encode()).hexdigest()[:16]}"


def _openvino_version() -> str | None:
    """OpenVINO's version without importing it (its import costs ~0.3 s; needed only to compile)."""
    if importlib.util.find_spec("openvino") is None:
        return None
    try:
        return importlib.metadata.version("openvino")
    except importlib.metadata.PackageNotFoundError:
        return None
