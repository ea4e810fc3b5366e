"""Merging segments: adjacent segments of a live version written again as one (`merge_live`).

Every add writes a segment, and every segment costs each question a search per language, so
segments are merged as they pile up, the way Lucene's log merge policy does (`merge_range`):
segments are put in tiers by size (a tier is `MERGE_FACTOR` times the one below), and when
`MERGE_FACTOR` adjacent segments are of one tier they become one segment of the next. The first
segment (the full build, usually most of the index) is never written again by an add, and an
added passage is rewritten about once per tier it climbs: adding 10,000 passages at a time to a
10M index, 1,000 times over, writes ~10 times what was added and never the first 10M
(`tests/test_segments_merge.py` simulates it). Past `MAX_SEGMENTS` segments the adjacent ones of
the smallest total merge whatever their tiers.

A merge reads only the index: the live passages, articles and sentences of the merged segments,
their stored vectors, their translation groups (cross-segment links included) and their
statistics' sums, minus the tombstoned rows' (so the version's statistics are unchanged, no
corpus file is read and nothing is embedded). The merged segments' tombstones disappear with the
rows they hid. The new version goes live as any build's does (`CURRENT` swapped); questions are
answered from the previous one until then. `qa index` merges right after an add is live;
`qa index --merge` merges every segment into one plain version.
"""

from __future__ import annotations

import logging
import math
import shutil
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel

from qa.config import Settings
from qa.errors import QAError
from qa.index.format import LANG_SUMS, SENTENCE_SUMS, build_lock, current_version
from qa.index.segments import DELETED_SENTENCE_SUMS, DELETED_SUMS, SEGMENT_DIR, is_segmented, read_listing
from qa.index.segments.add import (
    articles_by_language,
    deleted_sums_of,
    finish_segmented,
    link_segment,
    write_new_segment,
)
from qa.index.segments.groups import GROUP_LINKS
from qa.index.segments.read import SegmentedIndex, read_sums_file
from qa.language_stats import LanguageStats, LanguageSums, merge_sums, subtract_sums

__all__ = ["MERGE_FACTOR", "MERGE_FLOOR", "MergeReport", "merge_index", "merge_live", "merge_range"]

log = logging.getLogger(__name__)

# Segments per tier before they merge into one of the next tier (Lucene's mergeFactor is 10;
# 4 keeps the segment count, hence the searches a question makes, small).
MERGE_FACTOR = 4
# Passages: segments smaller than this are all of the lowest tier.
MERGE_FLOOR = 1_000
BLOCK = 65_536  # rows copied at a time


class MergeReport(BaseModel):
    """What a merge did: the live version it made, the segments before and after, the passages
    written again and the tombstoned ones dropped, and its time."""

    version: str
    segments_before: int
    segments_after: int
    merged_segments: int
    passages_written: int
    tombstones_dropped: int
    seconds: float


def _tier(size: int, factor: int, floor: int) -> int:
    return int(math.log(max(size, floor) / floor, factor) + 1e-9)


def merge_range(
    sizes: list[int], factor: int = MERGE_FACTOR, limit: int | None = None, floor: int = MERGE_FLOOR
) -> tuple[int, int] | None:
    """The adjacent segments to merge into one next, as (first, end), or None when none should.

    `sizes`: the live passages of each segment, oldest first. A run of `factor` or more adjacent
    segments of one tier merges (the lowest tier's first); else, with more than `limit` (default
    `MAX_SEGMENTS`) segments, the adjacent ones of the smallest total merge until `limit` are
    left. The first segment never merges here (`qa index --merge` or a full build rewrites it).
    Call again after a merge: the merged segment may complete a run of the next tier."""
    from qa.index import segments as package

    limit = package.MAX_SEGMENTS if limit is None else limit
    if len(sizes) < 3 and len(sizes) <= limit:
        return None
    tiers = [_tier(s, factor, floor) for s in sizes]
    runs, first = [], 1
    for end in range(2, len(sizes) + 1):
        if end == len(sizes) or tiers[end] != tiers[first]:
            if end - first >= factor:
                runs.append((tiers[first], first, end))
            first = end
    if runs:
        _, first, end = min(runs)
        return first, end
    if len(sizes) <= limit:
        return None
    width = len(sizes) - limit + 1
    totals = [sum(sizes[i : i + width]) for i in range(1, len(sizes) - width + 1)]
    first = 1 + int(np.argmin(totals))
    return first, first + width


def merge_index(settings: Settings, *, everything: bool = False) -> MergeReport | None:
    """Merge the live version's segments of `settings.index_dir` as `merge_live` does, holding
    the build lock (a build running meanwhile is waited for). None when nothing merges."""
    with build_lock(settings.index_dir):
        return merge_live(settings.index_dir, settings, everything=everything)


def merge_live(index_dir: Path, settings: Settings, *, everything: bool = False) -> MergeReport | None:
    """Merge segments of the live version as `merge_range` says, one merge after another until it
    names none (every segment into a plain version with `everything`), each a new live version.
    The caller holds the build lock. Returns what was done, None when nothing needed merging."""
    from qa.index.build import carry_build_records, keep_corpus_record
    from qa.index.load import open_index

    started = time.perf_counter()
    before = version = current_version(index_dir)
    merges = written = dropped = 0
    segments_before = None
    record = None
    try:
        while version is not None and is_segmented(index_dir / version):
            # (the segment list says whether to merge: the version is loaded only for a merge)
            sizes = [entry["passages"] - entry.get("deleted", 0) for entry in read_listing(index_dir / version)]
            segments_before = segments_before or len(sizes)
            span = (0, len(sizes)) if everything else merge_range(sizes)
            if span is None:
                break
            previous = open_index(index_dir, version)
            record = record or keep_corpus_record(index_dir, before)
            version, rows, gone = _merge(index_dir, previous, *span, settings)
            merges, written, dropped = merges + span[1] - span[0], written + rows, dropped + gone
            del previous
            if everything:
                break
    finally:
        # What the merged version holds is the articles of `before`: its records go with the
        # live version even when a later merge of a cascade failed; with no merge, the kept link goes.
        if merges:
            carry_build_records(index_dir, before, version, record)
        elif record is not None:
            record.unlink(missing_ok=True)
    if not merges:
        return None
    report = MergeReport(
        version=version, segments_before=segments_before,
        segments_after=len(read_listing(index_dir / version)) if is_segmented(index_dir / version) else 1,
        merged_segments=merges, passages_written=written, tombstones_dropped=dropped,
        seconds=round(time.perf_counter() - started, 2),
    )
    log.info("Merged %d segments (%d passages written) in %.1f s", merges, written, report.seconds)
    return report


def _merge(index_dir: Path, previous: SegmentedIndex, first: int, end: int, settings: Settings) -> tuple[str, int, int]:
    """Segments `first` .. `end` of `previous` merged into one, as a new live version; a plain
    version when they are all of them. Returns the version, the passages written and the
    tombstoned rows dropped."""
    from qa.index.write import start_version

    scratch = start_version(index_dir)  # the merged rows' vectors, removed when done
    try:
        contents = _merged_contents(previous, first, end, scratch)
        building = start_version(index_dir)
        if (first, end) == (0, len(previous.segments)):  # the groups whole again, no link left
            if not contents.n_rows:
                raise QAError(f"Every passage of {index_dir} is deleted: there is nothing to merge. Run `qa index`.")
            version = _write_segment(building, previous, contents, settings)
        else:
            version = _publish_merge(building, previous, first, end, contents, settings)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return version, contents.n_rows, int(sum(len(t) for t in previous.tombstones[first:end]))


@dataclass
class _Contents:
    """The live rows of the merged segments, as the writer takes them (see `_merged_contents`)."""

    articles: list[tuple[Any, np.ndarray]]  # (segment, its live article numbers), in order
    rows: np.ndarray  # the live passages' global rows, in order
    sentences: np.ndarray  # (article, start, end), articles numbered as merged
    vectors: np.ndarray
    sentence_vectors: np.ndarray
    groups: np.ndarray  # translation group of each row
    sums: tuple[LanguageSums, LanguageSums]  # of the live passages and sentences
    gone: tuple[LanguageSums | None, LanguageSums | None]  # of the tombstoned ones, dropped

    @property
    def n_rows(self) -> int:
        return len(self.rows)


def _merged_contents(previous: SegmentedIndex, first: int, end: int, scratch: Path) -> _Contents:
    """The merged segments' live articles (numbers by segment), passage rows (global, in
    order), sentences (renumbered to the merged articles) and their vectors (float32, memory-
    mapped in `scratch`), their translation groups, and their statistics' sums without the
    tombstoned rows'."""
    row_starts = previous.row_starts
    articles, rows, sentence_parts, sentence_rows = [], [], [], []
    sums, sentence_sums, gone, gone_sentences = None, None, None, None
    next_article = 0
    for position in range(first, end):
        segment, dead = previous.segments[position], np.asarray(previous.tombstones[position], np.int64)
        live_articles = np.setdiff1d(np.arange(segment.store.n_articles), previous.store.dead_articles[position])
        articles.append((segment, live_articles))
        rows.append(row_starts[position] + np.setdiff1d(np.arange(len(segment)), dead))
        table = np.asarray(segment.sentences[:], np.int64).reshape(-1, 3)
        keep = np.isin(table[:, 0], live_articles)
        renumber = np.full(segment.store.n_articles, -1, np.int64)
        renumber[live_articles] = next_article + np.arange(len(live_articles))
        next_article += len(live_articles)
        sentence_parts.append(np.column_stack([renumber[table[keep, 0]], table[keep, 1:]]))
        sentence_rows.append((segment, np.flatnonzero(keep)))
        own = read_sums_file(segment.path / LANG_SUMS), read_sums_file(segment.path / SENTENCE_SUMS)
        if len(dead):
            removed = deleted_sums_of(segment, dead)
            own = subtract_sums(own[0], removed[0]), subtract_sums(own[1], removed[1])
            gone = removed[0] if gone is None else merge_sums(gone, removed[0])
            gone_sentences = removed[1] if gone_sentences is None else merge_sums(gone_sentences, removed[1])
        sums = own[0] if sums is None else merge_sums(sums, own[0])
        sentence_sums = own[1] if sentence_sums is None else merge_sums(sentence_sums, own[1])
    rows = np.concatenate(rows)
    sentences = np.concatenate(sentence_parts) if sentence_parts else np.zeros((0, 3), np.int64)
    dim = previous.passage_vectors.shape[1]
    vectors = np.lib.format.open_memmap(scratch / "vectors.npy", mode="w+", dtype=np.float32, shape=(len(rows), dim))
    for at in range(0, len(rows), BLOCK):
        vectors[at : at + BLOCK] = previous.passage_vectors_at(rows[at : at + BLOCK])
    sentence_vectors = np.lib.format.open_memmap(
        scratch / "sentence_vectors.npy", mode="w+", dtype=np.float32, shape=(len(sentences), dim)
    )
    at = 0
    for segment, local in sentence_rows:
        for block in range(0, len(local), BLOCK):
            part = local[block : block + BLOCK]
            sentence_vectors[at : at + len(part)] = np.asarray(segment.sentence_vectors[part], np.float32)
            at += len(part)
    # The translation groups the version serves (each segment's, joined by the links found at the
    # adds): as the merged segment's own groups, those among merged rows need no link any more.
    groups = np.unique(np.asarray(previous.groups[rows], np.int64), return_inverse=True)[1].reshape(-1)
    return _Contents(
        articles=articles, rows=rows, sentences=sentences, vectors=vectors,
        sentence_vectors=sentence_vectors, groups=groups, sums=(sums, sentence_sums),
        gone=(gone, gone_sentences),
    )


def _write_segment(folder: Path, previous: SegmentedIndex, contents: _Contents, settings: Settings) -> str:
    """Write the merged rows as a complete version in `folder` (the writer's own layout)."""
    from qa.index.write import write_version

    last = previous.segments[-1].manifest
    stats = LanguageStats.from_sums(contents.sums[0])
    articles = (segment.store.article_at(int(n)) for segment, numbers in contents.articles for n in numbers.tolist())
    chunks = (previous.passage(int(row)) for row in contents.rows.tolist())
    return write_version(
        folder, articles, chunks, contents.vectors, contents.sentences, contents.sentence_vectors,
        settings=settings, model=last.model.model_dump(), chunking=last.chunking.model_dump(),
        query_means=stats.query_means, previous=None, groups=contents.groups, sums=contents.sums,
    )[0]


def _publish_merge(building: Path, previous: SegmentedIndex, first: int, end: int, contents: _Contents,
                   settings: Settings) -> str:
    """The version of the other segments (hard-linked, with their tombstones) and the merged one
    in their place."""
    from qa.index.write import start_version

    seg_root = building / SEGMENT_DIR
    seg_root.mkdir()
    kept = [*range(first), *range(end, len(previous.segments))]
    listing = [link_segment(seg_root, previous.segments[p], previous.tombstones[p]) for p in range(first)]
    if contents.n_rows:  # (segments whose every passage is tombstoned just go)
        write_new_segment(
            building, lambda folder: _write_segment(start_version(folder), previous, contents, settings), listing
        )
    listing += [link_segment(seg_root, previous.segments[p], previous.tombstones[p]) for p in range(end, len(previous.segments))]
    deleted = tuple(_without(previous.path / name, gone) for name, gone in
                    ((DELETED_SUMS, contents.gone[0]), (DELETED_SENTENCE_SUMS, contents.gone[1])))
    # Rows renumbered: the merged ones packed where their segments were, the later ones shifted.
    # Links between a merged row and another segment's are kept; among merged rows they are groups now.
    starts = previous.row_starts
    lo, hi = int(starts[first]), int(starts[end])
    new_row = np.full(len(previous), -1, np.int64)
    new_row[:lo] = np.arange(lo)
    new_row[contents.rows] = lo + np.arange(contents.n_rows)
    new_row[hi:] = lo + contents.n_rows + np.arange(len(previous) - hi)
    links = np.zeros((0, 2), np.int64)
    if (previous.path / GROUP_LINKS).is_file():
        old = np.load(previous.path / GROUP_LINKS).reshape(-1, 2)
        mapped = new_row[old]
        inside = (old >= lo) & (old < hi)
        links = mapped[(mapped >= 0).all(axis=1) & ~inside.all(axis=1)]
    dead_articles = sum(
        (articles_by_language(previous.segments[p], previous.store.dead_articles[p]) for p in kept), Counter()
    )
    return finish_segmented(building, listing, [previous.segments[p].path.name for p in kept], deleted, links,
                            previous.manifest.corpus.fingerprint, dead_articles)


def _without(path: Path, gone: LanguageSums | None) -> LanguageSums | None:
    """The tombstoned rows' sums stored at `path` (None: none) less those of rows merged away."""
    if not path.is_file():
        return None
    sums = read_sums_file(path)
    return sums if gone is None else subtract_sums(sums, gone)
