"""Segmented index versions: adding to a large index writes a new segment, not a new index.

A version is either one complete layout (`qa.index.write`) or *segmented*::

    v-20261206T031500-1a2b3c/
      manifest.json          the whole: model, chunking, live articles and passages, and the
                             sizes and checksums of the files of this folder (not the segments')
      segments.json          the segments in order, with their passage, article and sentence counts
      segments/<name>/       one complete version layout each (its own manifest and checksums),
                             written by the ordinary writer for its own articles, never changed
      segments/<name>.deleted.npy   the segment's deleted passage rows (tombstones), sorted
      deleted_sums.npz, deleted_sentence_sums.npz   the sums (`LanguageSums`) of the vectors of
                             every tombstoned passage and sentence, subtracted at load
      group_links.npy        translation links (pairs of rows) found at the adds between the
                             new passages and the live ones (`qa.index.segments.groups`)

An add (`add_segment`) makes a new version whose older segments are hard links to the previous
version's files (no byte of them is written, and either version can be loaded or removed on its
own), plus the new segment and the new tombstones; `CURRENT` is swapped as for any build.
Segments merge as they pile up (`qa.index.segments.merge`); a full build writes an ordinary
version again. Passages are numbered across the segments
(segment offset + row in the segment); `SegmentedIndex` serves the same verbs as `Index`.

What a loaded segmented index keeps in memory beyond its segments' own `Index` objects: each
passage's language, as a code and as a statistics id (two bytes a passage, concatenated), a live
mask (one byte a passage, only when there are tombstones), and a few numbers per segment.
Everything else is read from the owning segment's memory-mapped files.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from qa.errors import IndexCorruptError

__all__ = [
    "DELETED_SENTENCE_SUMS",
    "DELETED_SUMS",
    "MAX_SEGMENTS",
    "SEGMENTS",
    "SEGMENT_DIR",
    "SEGMENT_SHARE",
    "AddPlan",
    "MergeReport",
    "SegmentedIndex",
    "add_segment",
    "changed_articles",
    "is_segmented",
    "live_rows",
    "merge_index",
    "merge_live",
    "merge_range",
    "open_segmented",
    "plan_add",
    "read_listing",
    "segment_dirs",
]

log = logging.getLogger(__name__)

SEGMENTS = "segments.json"
SEGMENT_DIR = "segments"
DELETED_SUMS = "deleted_sums.npz"
DELETED_SENTENCE_SUMS = "deleted_sentence_sums.npz"
# An add goes to a new segment when the articles added and removed are under this share of the
# live articles; more, and a full build is about as cheap per article and leaves one
# segment with statistics and translation groups over everything.
SEGMENT_SHARE = 0.10
# Each segment costs a search per language per question: past this many, segments merge
# (`qa.index.segments.merge`) whatever their sizes.
MAX_SEGMENTS = 8


def is_segmented(version_dir: Path) -> bool:
    """Whether the version in `version_dir` is made of segments (`segments.json`)."""
    return (Path(version_dir) / SEGMENTS).is_file()


def segment_dirs(version_dir: Path) -> list[Path]:
    """The folders of the version's segments, in order (the version itself when it has none)."""
    version_dir = Path(version_dir)
    if not is_segmented(version_dir):
        return [version_dir]
    return [version_dir / SEGMENT_DIR / entry["name"] for entry in read_listing(version_dir)]




def read_listing(version_dir: Path) -> list[dict]:
    """The entries of `segments.json`: each segment's name and counts, in order."""
    try:
        listing = json.loads((version_dir / SEGMENTS).read_text(encoding="utf-8"))["segments"]
        if not listing or not all({"name", "passages"} <= set(entry) for entry in listing):
            raise ValueError("no segments")
        return listing
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise IndexCorruptError(
            f"{version_dir / SEGMENTS} cannot be read ({exc}). Rebuild the index with `qa index`."
        ) from None


def __getattr__(name: str):
    # The reader and the writer load when first used (`open_index` of a segmented version, an add).
    if name in ("SegmentedIndex", "open_segmented"):
        from qa.index.segments import read

        return getattr(read, name)
    if name in ("AddPlan", "add_segment", "changed_articles", "live_rows", "plan_add"):
        from qa.index.segments import add

        return getattr(add, name)
    if name in ("MergeReport", "merge_index", "merge_live", "merge_range"):
        from qa.index.segments import merge

        return getattr(merge, name)
    raise AttributeError(name)
