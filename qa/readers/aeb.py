"""The article-extraction benchmark's data (HTML pages and hand-written bodies), found like XQuAD."""

from __future__ import annotations

from pathlib import Path

__all__ = ["find_aeb"]


def find_aeb(start: Path | None = None) -> Path | None:
    """The folder with `ground-truth.json` and `html/`: ./data/aeb or a `shared/data/aeb` above."""
    start = (start or Path.cwd()).resolve()
    for base in [start, *start.parents]:
        for candidate in (base / "data" / "aeb", base / "shared" / "data" / "aeb"):
            if (candidate / "ground-truth.json").is_file() and (candidate / "html").is_dir():
                return candidate
    return None
