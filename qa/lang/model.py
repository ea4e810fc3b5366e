"""py3langid's classifier, loaded once per process from a decompressed copy of its model."""

from __future__ import annotations

import functools
from typing import Any

__all__ = ["identifier"]


@functools.cache
def identifier() -> Any:
    """py3langid's classifier, loaded on first use (about 100 MB), then shared: rank() only reads it."""
    from py3langid.langid import MODEL_DIR, MODEL_FILE, LanguageIdentifier

    try:
        ptc, pc, classes, nextmove, row, output = _unpacked_model(MODEL_DIR / MODEL_FILE)
        return LanguageIdentifier(ptc, pc, classes, nextmove, output, norm_probs=False, tk_row=row)
    except Exception:  # noqa: BLE001 -- no cache folder, another py3langid: its own (slower) loader
        return LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=False)


def _unpacked_model(packed: Any) -> tuple:
    """py3langid's model as its `modelio.load_model` returns it, read from a decompressed copy.

    The shipped model is LZMA-compressed: decompressing it took 0.4 s of CPU on every first
    question of a process (most of a `qa ask`). The copy (about 40 MB) is made once, in the
    cache folder (QA_CACHE_DIR), named after the packed file's size and time.
    """
    import os
    from pathlib import Path

    import numpy as np
    from py3langid.modelio import _to_array

    from qa.config import _default_cache_dir

    packed = Path(packed)
    info = packed.stat()
    folder = Path(os.environ.get("QA_CACHE_DIR") or _default_cache_dir()) / "langid"
    plain = folder / f"{packed.name.split('.')[0]}-{info.st_size}-{info.st_mtime_ns}.npz"
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
    with np.load(plain, allow_pickle=False) as data:
        return (
            data["ptc"],
            data["pc"],
            data["classes"].tolist(),
            _to_array(data["nextmove"]),
            _to_array(data["nextmove_row"]),
            data["out_feat"].tolist(),
        )
