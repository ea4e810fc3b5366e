"""py3langid's classifier, loaded once per process from a decompressed copy of its model."""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

__all__ = ["identifier"]

log = logging.getLogger(__name__)

_classifier: Any = None  # loaded once per process, then only read
_lock = threading.Lock()


def identifier(cache_dir: Path | None = None) -> Any:
    """py3langid's classifier, loaded on first use (about 100 MB), then shared: rank() only reads it.

    `cache_dir` is `Settings.cache_dir`, where the decompressed copy of its model lives (see
    `_unpacked_model`); callers that hold the settings pass it (the engine does, before its first
    question). A first call without it reads the settings from the environment.
    """
    global _classifier
    if _classifier is None:
        with _lock:
            if _classifier is None:
                _classifier = _load(cache_dir)
    return _classifier


def _load(cache_dir: Path | None) -> Any:
    from py3langid.langid import MODEL_DIR, MODEL_FILE, LanguageIdentifier

    if cache_dir is None:
        from qa.config import Settings

        cache_dir = Settings().cache_dir
    try:
        ptc, pc, classes, nextmove, row, output = _unpacked_model(MODEL_DIR / MODEL_FILE, Path(cache_dir))
        return LanguageIdentifier(ptc, pc, classes, nextmove, output, norm_probs=False, tk_row=row)
    except Exception:  # noqa: BLE001 -- no cache folder, another py3langid: its own (slower) loader
        return LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=False)


def _unpacked_model(packed: Any, cache_dir: Path) -> tuple:
    """py3langid's model as its `modelio.load_model` returns it, read from a decompressed copy.

    The shipped model is LZMA-compressed: decompressing it took 0.4 s of CPU on every first
    question of a process (most of a `qa ask`). The copy (about 40 MB) is made once, in the
    cache folder (`cache_dir`, QA_CACHE_DIR), named after the packed file's size and time.
    """
    import hashlib
    import os

    import numpy as np
    from py3langid.modelio import _to_array

    packed = Path(packed)
    info = packed.stat()
    folder = cache_dir / "langid"
    # Named after the packed file's place (a short hash: several installations may share the
    # cache), then its size and time: a reinstall writes a new copy and removes its own old ones.
    place = hashlib.sha256(str(packed.resolve()).encode()).hexdigest()[:8]
    stem = packed.name.split(".")[0]
    plain = folder / f"{stem}-{place}-{info.st_size}-{info.st_mtime_ns}.npz"
    if not plain.exists():
        import lzma
        import shutil
        import uuid

        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".{plain.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}"
        try:
            with lzma.open(packed) as src, tmp.open("wb") as dst:
                shutil.copyfileobj(src, dst, length=1 << 20)
            os.replace(tmp, plain)  # whole or absent, whoever writes it at the same time
        finally:
            tmp.unlink(missing_ok=True)
        _remove_superseded(folder, stem, place, plain)
    with np.load(plain, allow_pickle=False) as data:
        return (
            data["ptc"],
            data["pc"],
            data["classes"].tolist(),
            _to_array(data["nextmove"]),
            _to_array(data["nextmove_row"]),
            data["out_feat"].tolist(),
        )


def _remove_superseded(folder: Path, stem: str, place: str, current: Path) -> None:
    """Delete the copies this installation can never read again: its own of an earlier packed
    file (same place, another size or time) and those named as before the place was part of the
    name; never one written in the last 15 minutes (see qa.embed.cache). One info line."""
    import re
    import time

    from qa.embed.cache import GRACE_S

    ours = re.compile(rf"{re.escape(stem)}-{place}-\d+-\d+\.npz")
    earlier = re.compile(rf"{re.escape(stem)}-\d+-\d+\.npz")  # size-time only: an earlier version
    freed, removed = 0, 0
    for copy in folder.glob(f"{stem}-*.npz"):
        if copy == current or not (ours.fullmatch(copy.name) or earlier.fullmatch(copy.name)):
            continue
        try:
            info = copy.lstat()
            if time.time() - info.st_mtime < GRACE_S:
                continue
            copy.unlink()  # a process reading it keeps its data: np.load read it whole
        except OSError:
            continue
        freed, removed = freed + info.st_size, removed + 1
    if removed:
        log.info("language model cache: removed %d superseded copies from %s, %.1f MB freed", removed, folder, freed / 1e6)
