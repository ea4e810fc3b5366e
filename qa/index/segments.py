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

An add (`add_segment`) makes a new version whose older segments are hard links to the previous
version's files (no byte of them is written, and either version can be loaded or removed on its
own), plus the new segment and the new tombstones; `CURRENT` is swapped as for any build. A full
build ("merge") writes an ordinary version again. Passages are numbered across the segments
(segment offset + row in the segment); `SegmentedIndex` serves the same verbs as `Index`.

What a loaded segmented index keeps in memory beyond its segments' own `Index` objects: each
passage's language, as a code and as a statistics id (two bytes a passage, concatenated), a live
mask (one byte a passage, only when there are tombstones), and a few numbers per segment.
Everything else is read from the owning segment's memory-mapped files.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from qa.errors import IndexCorruptError
from qa.index.format import (
    LANG_SUMS,
    MANIFEST,
    SENTENCE_SUMS,
    STAMPS,
    Manifest,
    fsync_dir,
    read_manifest,
    swap_pointer,
    write_file,
)
from qa.index.store import ArticleView, ChunkView, LangColumn, RowLookup, ranges
from qa.language_stats import LanguageStats, LanguageSums, _moment_sums, merge_sums, subtract_sums

__all__ = [
    "DELETED_SENTENCE_SUMS",
    "DELETED_SUMS",
    "MAX_SEGMENTS",
    "SEGMENTS",
    "SEGMENT_DIR",
    "SEGMENT_SHARE",
    "AddPlan",
    "SegmentedIndex",
    "add_segment",
    "is_segmented",
    "live_rows",
    "open_segmented",
    "plan_add",
    "segment_dirs",
]

log = logging.getLogger(__name__)

SEGMENTS = "segments.json"
SEGMENT_DIR = "segments"
DELETED_SUMS = "deleted_sums.npz"
DELETED_SENTENCE_SUMS = "deleted_sentence_sums.npz"
# An add goes to a new segment when the articles added and removed are under this share of the
# live articles; more, and a full build (the merge) is about as cheap per article and leaves one
# segment with statistics and translation groups over everything.
SEGMENT_SHARE = 0.10
# Each segment costs a search per language per question: past this many, the next change merges.
MAX_SEGMENTS = 8


def is_segmented(version_dir: Path) -> bool:
    """Whether the version in `version_dir` is made of segments (`segments.json`)."""
    return (Path(version_dir) / SEGMENTS).is_file()


def segment_dirs(version_dir: Path) -> list[Path]:
    """The folders of the version's segments, in order (the version itself when it has none)."""
    version_dir = Path(version_dir)
    if not is_segmented(version_dir):
        return [version_dir]
    return [version_dir / SEGMENT_DIR / entry["name"] for entry in _read_listing(version_dir)]


# --------------------------------------------------------------------------- reading


class _Concat:
    """Arrays of several segments read as one, by global row: `view[rows]` gathers each part's
    rows from its own (memory-mapped) array. `shift`: a number added to each part's values (row
    numbers of another table: sentences, groups); `column`: the one column it is added to;
    `maps`: a lookup table per part applied to its values (codes recoded to a merged order)."""

    def __init__(self, parts: list[Any], shift: list[int] | None = None, column: int | None = None,
                 maps: list[np.ndarray] | None = None):
        self.parts = parts
        self.starts = np.cumsum([0] + [len(p) for p in parts]).astype(np.int64)
        self.shift = shift
        self.column = column
        self.maps = maps

    def __len__(self) -> int:
        return int(self.starts[-1])

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self), *np.shape(self.parts[0][:0])[1:])

    def _values(self, part: int, local: np.ndarray) -> np.ndarray:
        values = np.asarray(self.parts[part][local])
        if self.maps is not None:
            values = self.maps[part][np.asarray(values, np.int64)]
        if self.shift is not None and self.shift[part]:
            values = np.array(values, np.int64)
            if self.column is None:
                values += self.shift[part]
            else:
                values[..., self.column] += self.shift[part]
        return values

    def __getitem__(self, rows):
        if isinstance(rows, tuple):  # view[rows, column]: the rows, then the column
            return self[rows[0]][(slice(None), *rows[1:])] if not isinstance(rows[0], (int, np.integer)) \
                else self[rows[0]][rows[1:]]
        if isinstance(rows, (int, np.integer)):
            row = int(rows) + (len(self) if rows < 0 else 0)
            part = int(np.searchsorted(self.starts, row, "right")) - 1
            return self._values(part, np.array([row - self.starts[part]]))[0]
        if isinstance(rows, slice):
            rows = np.arange(*rows.indices(len(self)))
        rows = np.asarray(rows, np.int64)
        part = np.searchsorted(self.starts, rows, "right") - 1
        if len(self.parts) == 1 or (len(rows) and part.min() == part.max()):
            p = int(part[0]) if len(rows) else 0
            return self._values(p, rows - self.starts[p])
        out = None
        for p in np.unique(part).tolist():
            at = np.flatnonzero(part == p)
            values = self._values(p, rows[at] - self.starts[p])
            if out is None:
                out = np.empty((len(rows), *values.shape[1:]), values.dtype)
            out[at] = values
        return out if out is not None else self._values(0, rows)

    def __array__(self, dtype=None, copy=None):
        out = self[:]
        return out if dtype is None else out.astype(dtype)

    def tolist(self) -> list:
        return self[:].tolist()


class _Store:
    """The segments' passage stores read as one (what `ArticleView`, `ChunkView`, `RowLookup`
    and the filters read): articles numbered across segments as passages are; a tombstoned
    article is not found by its doc_id (its newer copy, if any, is)."""

    def __init__(self, segments: list, dead_articles: list[np.ndarray], alive: np.ndarray | None):
        self.segments = segments
        self.dead_articles = dead_articles
        self.alive = alive
        self.row_starts = np.cumsum([0] + [len(s) for s in segments]).astype(np.int64)
        self.article_starts = np.cumsum([0] + [s.store.n_articles for s in segments]).astype(np.int64)
        self.columns = _Concat([s.store.columns for s in segments], [int(x) for x in self.article_starts[:-1]], 0)

    @property
    def n_articles(self) -> int:
        return int(self.article_starts[-1])

    def __len__(self) -> int:
        return int(self.row_starts[-1])

    def _locate(self, row: int, starts: np.ndarray) -> tuple[int, int]:
        part = int(np.searchsorted(starts, row, "right")) - 1
        return part, int(row - starts[part])

    def article_at(self, number: int):
        part, local = self._locate(int(number), self.article_starts)
        return self.segments[part].store.article_at(local)

    def passage(self, row: int):
        part, local = self._locate(int(row), self.row_starts)
        return self.segments[part].store.passage(local)

    def article_number(self, doc_id: str) -> int | None:
        # Newest segment first: an article is in one live segment at most.
        for part in range(len(self.segments) - 1, -1, -1):
            number = self.segments[part].store.article_number(doc_id)
            if number is not None and not _contains(self.dead_articles[part], number):
                return int(self.article_starts[part] + number)
        return None

    def row_of(self, doc_id: str, start: int) -> int | None:
        number = self.article_number(doc_id)
        if number is None:
            return None
        part, _ = self._locate(number, self.article_starts)
        row = self.segments[part].store.row_of(doc_id, start)
        return None if row is None else int(self.row_starts[part] + row)

    def doc_ids(self) -> Iterator[str]:
        for segment in self.segments:
            yield from segment.store.doc_ids()


def _contains(sorted_values: np.ndarray, value: int) -> bool:
    at = int(np.searchsorted(sorted_values, value))
    return at < len(sorted_values) and int(sorted_values[at]) == value


class _Members:
    """Translation group -> its live rows, across segments (groups are within one segment)."""

    def __init__(self, segments: list, group_starts: np.ndarray, row_starts: np.ndarray, alive: np.ndarray | None):
        self.segments, self.group_starts, self.row_starts, self.alive = segments, group_starts, row_starts, alive

    def get(self, group: int, default: list[int] | None = None) -> list[int] | None:
        part = int(np.searchsorted(self.group_starts, group, "right")) - 1
        local = self.segments[part].members.get(int(group - self.group_starts[part]), None)
        if local is None:
            return default
        rows = [int(self.row_starts[part] + m) for m in local]
        return [r for r in rows if self.alive is None or self.alive[r]]


class _RowsByLanguage(Mapping):
    """`rows_by_language`: the live rows of each language, computed when asked for (the keys are
    what serving reads: the corpus's languages)."""

    def __init__(self, langs: LangColumn, alive: np.ndarray | None):
        self._langs, self._alive = langs, alive
        present = np.bincount(np.asarray(langs.codes[alive] if alive is not None else langs.codes, np.int64),
                              minlength=len(langs.names))
        self._names = [str(name) for name, n in zip(langs.names, present) if n]

    def __getitem__(self, lang: str) -> np.ndarray:
        if lang not in self._names:
            raise KeyError(lang)
        mask = self._langs == lang
        return np.flatnonzero(mask if self._alive is None else mask & self._alive)

    def __iter__(self):
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)


def _segment_lexical(segments: list, row_starts: np.ndarray, tombstones: list[np.ndarray]):
    """BM25 over the segments with statistics summed at question time (`qa.lexical.SegmentedLexical`):
    the same scores as one index of the same passages; tombstoned rows are never returned but
    count in the statistics until the next full build, as in Lucene."""
    from qa.lexical import SegmentedLexical

    deleted = []
    for segment, dead in zip(segments, tombstones):
        if len(dead):
            mask = np.zeros(len(segment), bool)
            mask[np.asarray(dead, np.int64)] = True
            deleted.append(mask)
        else:
            deleted.append(None)
    return SegmentedLexical([s.lexical for s in segments], row_starts[:-1].tolist(), deleted)


class SegmentedIndex:
    """A segmented version loaded: the `IndexBackend` verbs over every segment, rows numbered
    across them (segment offset + row in the segment), tombstoned rows never returned.

    Dense search runs per language in each segment and keeps the k best of all; BM25 is each
    segment's, rows offset (see `_SegmentLexical`); passages, articles and sentence vectors are
    read from the owning segment. The ranking statistics are those of the merged sums of the
    segments minus the tombstoned rows' sums (`open_segmented`).

    `articles[doc_id]`, `doc_id in articles` and `row_of` find live articles only; iterating
    `articles` (or `chunks`) lists every article (passage) number in order, tombstoned ones
    included, as the sentence table's article numbers count them (a full build reads them so).
    """

    searches_filters = False

    def __init__(self, path: Path, manifest: Manifest, segments: list, tombstones: list[np.ndarray],
                 lang_stats: LanguageStats, sentence_stats: LanguageStats):
        self.path, self.manifest, self.segments = path, manifest, segments
        self.lang_stats, self.sentence_stats = lang_stats, sentence_stats
        self.ann: dict[str, Any] = {}  # (a build reads the previous version's IVF lists: none here)
        row_starts = np.cumsum([0] + [len(s) for s in segments]).astype(np.int64)
        self.row_starts = row_starts
        self.alive = None
        if any(len(t) for t in tombstones):
            self.alive = np.ones(int(row_starts[-1]), bool)
            for start, dead in zip(row_starts[:-1].tolist(), tombstones):
                self.alive[start + np.asarray(dead, np.int64)] = False
        dead_articles = [
            np.unique(np.asarray(s.store.columns[np.asarray(t, np.int64), 0], np.int64)) if len(t) else np.zeros(0, np.int64)
            for s, t in zip(segments, tombstones)
        ]
        self.tombstones = tombstones
        self.store = _Store(segments, dead_articles, self.alive)
        self.articles = ArticleView(self.store)
        self.chunks = ChunkView(self.store)
        self.row_of = RowLookup(self.store)
        names = sorted({lang for s in segments for lang in s.store.langs})
        codes = [np.array([names.index(x) for x in s.store.langs], np.int8) for s in segments]
        self.langs = LangColumn(np.concatenate([c[np.asarray(s.store.lang_codes, np.int64)] for c, s in zip(codes, segments)]),
                                names)
        self.lang_ids = np.concatenate([_recode_to(s.store.lang_codes, s.store.langs, lang_stats) for s in segments])
        self.rows_by_language = _RowsByLanguage(self.langs, self.alive)
        self.lexical = _segment_lexical(segments, row_starts, tombstones)
        self.passage_vectors = _Concat([s.passage_vectors for s in segments])
        sentence_starts = np.cumsum([0] + [len(s.sentences) for s in segments]).astype(np.int64)
        self.sentences = _Concat([s.sentences for s in segments], [int(x) for x in self.store.article_starts[:-1]], 0)
        self.sentence_vectors = _Concat([s.sentence_vectors for s in segments])
        self.sentence_member = _Concat([s.sentence_member for s in segments], [int(x) for x in sentence_starts[:-1]])
        self.sentence_lang_ids = _Concat(
            [s.sentence_langs for s in segments],
            maps=[_recode_to(np.arange(len(s.store.langs), dtype=np.int8), s.store.langs, sentence_stats) for s in segments],
        )
        self.link_starts = np.cumsum([0] + [len(s.sentence_member) for s in segments]).astype(np.int64)
        group_starts = np.cumsum([0] + [int(np.max(s.groups)) + 1 if len(s) else 0 for s in segments]).astype(np.int64)
        self.groups = _Concat([s.groups for s in segments], [int(x) for x in group_starts[:-1]])
        self.members = _Members(segments, group_starts, row_starts, self.alive)

    @property
    def version(self) -> str:
        return self.path.name

    @property
    def languages(self) -> list[str]:
        return list(self.rows_by_language)

    def __len__(self) -> int:
        return int(self.row_starts[-1])

    def _split(self, rows: np.ndarray) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
        """(segment, positions in `rows`, local rows) of each segment `rows` fall in."""
        rows = np.asarray(rows, np.int64)
        part = np.searchsorted(self.row_starts, rows, "right") - 1
        for p in np.unique(part).tolist():
            at = np.flatnonzero(part == p)
            yield p, at, rows[at] - self.row_starts[p]

    def damage(self) -> str | None:
        """The first segment's `Index.damage`, None while every mapped file is as loaded."""
        return next((problem for s in self.segments if (problem := s.damage()) is not None), None)

    def map_in(self) -> int:
        return sum(s.map_in() for s in self.segments)

    def search_by_language(
        self, query: np.ndarray, k: int, mask: np.ndarray | None = None
    ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """The k best live passages of each language over every segment: {lang: (scores, rows)}."""
        filtered = mask is not None
        if mask is None:
            mask = self.alive
        elif self.alive is not None:
            mask = mask & self.alive
        found: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}
        for position, segment in enumerate(self.segments):
            start, end = int(self.row_starts[position]), int(self.row_starts[position + 1])
            # (without a filter, a segment without tombstones is searched unmasked)
            local = None if mask is None or (not filtered and not len(self.tombstones[position])) else mask[start:end]
            if local is not None and not local.any():
                continue
            for lang, (scores, rows) in segment.search_by_language(query, k, local).items():
                found.setdefault(lang, []).append((scores, np.asarray(rows, np.int64) + start))
        out = {}
        for lang, parts in found.items():
            scores = np.concatenate([s for s, _ in parts])
            rows = np.concatenate([r for _, r in parts])
            top = np.argsort(-scores, kind="stable")[:k]
            out[lang] = (scores[top], rows[top])
        return out

    def search_language(self, lang: str, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        return self.search_by_language(query, k).get(lang, (np.zeros(0, np.float32), np.zeros(0, np.int64)))

    def sentence_runs(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Global link positions of the sentences of passages `rows`, and each link's position in `rows`."""
        rows = np.asarray(rows, np.int64)
        starts = np.zeros(len(rows), np.int64)
        lengths = np.zeros(len(rows), np.int64)
        for p, at, local in self._split(rows):
            link_start = self.segments[p].link_start
            starts[at] = np.asarray(link_start[local], np.int64) + self.link_starts[p]
            lengths[at] = np.asarray(link_start[local + 1], np.int64) - np.asarray(link_start[local], np.int64)
        return ranges(starts, lengths), np.repeat(np.arange(len(rows)), lengths)

    def sentence_links(self, rows: np.ndarray) -> np.ndarray:
        return self.sentence_runs(rows)[0]

    def sentences_of(self, row: int) -> np.ndarray:
        """Global sentence rows of passage `row`, in text order."""
        return np.asarray(self.sentence_member[self.sentence_links(np.array([row]))], np.int64)

    def group_members(self, row: int) -> list[int]:
        return self.members.get(int(self.groups[row]), [int(row)])

    def passage(self, row: int):
        return self.store.passage(int(row))

    def article(self, doc_id: str):
        return self.articles[doc_id]

    def passage_vectors_at(self, rows: np.ndarray) -> np.ndarray:
        return np.asarray(self.passage_vectors[np.asarray(rows, np.int64)], np.float32)

    def sentence_vectors_at(self, rows: np.ndarray) -> np.ndarray:
        return np.asarray(self.sentence_vectors[np.asarray(rows, np.int64)], np.float32)

    def sentence_span(self, sentence: int) -> tuple[str, int, int]:
        doc, start, end = self.sentences[int(sentence)].tolist()
        return self.store.article_at(doc).doc_id, start, end

    def vectors(self) -> np.ndarray:
        """All passage vectors (float32, in memory), tombstoned rows included."""
        return np.asarray(self.passage_vectors[:], np.float32)


def _recode_to(codes: np.ndarray, langs: list[str], stats: LanguageStats) -> np.ndarray:
    """A segment's language codes as positions in `stats.langs` (a language without statistics,
    i.e. whose passages are all tombstoned, gets position 0: it is never read)."""
    table = np.array([stats.langs.index(x) if x in stats.langs else 0 for x in langs], np.int8)
    return table[np.asarray(codes, np.int64)] if len(table) else np.zeros(len(codes), np.int8)


def _read_sums(path: Path) -> LanguageSums:
    with np.load(path) as arrays:
        return LanguageSums.from_arrays(arrays)


def open_segmented(version_dir: Path, manifest: Manifest) -> SegmentedIndex:
    """Load a segmented version whose top-level files are verified: each segment verified and
    loaded as an `Index`, statistics from the summed sums minus the tombstones' sums."""
    from qa.index.load import MAPPED_FILES, _load_version
    from qa.index.verify import check_files, close_files

    listing = _read_listing(version_dir)
    segments, tombstones = [], []
    try:
        for entry in listing:
            folder = version_dir / SEGMENT_DIR / entry["name"]
            seg_manifest = read_manifest(folder)
            mapped = check_files(folder, seg_manifest, keep_open=MAPPED_FILES)
            try:
                segments.append(_load_version(folder, seg_manifest, mapped))
            except BaseException:
                close_files([opened.fd for opened in mapped.values()])
                raise
            dead = version_dir / SEGMENT_DIR / f"{entry['name']}.deleted.npy"
            tombstones.append(np.load(dead) if dead.is_file() else np.zeros(0, np.int64))
            if len(segments[-1]) != entry["passages"]:
                raise IndexCorruptError(
                    f"{folder} holds {len(segments[-1])} passages, {version_dir / SEGMENTS} says "
                    f"{entry['passages']}. Rebuild the index with `qa index`."
                )
        lang_stats, sentence_stats = _merged_stats(version_dir, segments)
    except (OSError, ValueError, KeyError) as exc:
        raise IndexCorruptError(
            f"{version_dir} cannot be read ({' '.join(str(exc).split())[:200]}). Rebuild the index with `qa index`."
        ) from None
    return SegmentedIndex(version_dir, manifest, segments, tombstones, lang_stats, sentence_stats)


def _read_listing(version_dir: Path) -> list[dict]:
    try:
        listing = json.loads((version_dir / SEGMENTS).read_text(encoding="utf-8"))["segments"]
        if not listing or not all({"name", "passages"} <= set(entry) for entry in listing):
            raise ValueError("no segments")
        return listing
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise IndexCorruptError(
            f"{version_dir / SEGMENTS} cannot be read ({exc}). Rebuild the index with `qa index`."
        ) from None


def _merged_stats(version_dir: Path, segments: list) -> tuple[LanguageStats, LanguageStats]:
    """Passage and sentence statistics of the live rows: the segments' sums merged, minus the
    tombstoned rows' sums. The question means come out of the merged question-sample sums: each
    segment's sample mean weighted by its sample's size (the sums add)."""
    out = []
    for name, deleted in ((LANG_SUMS, DELETED_SUMS), (SENTENCE_SUMS, DELETED_SENTENCE_SUMS)):
        sums = _read_sums(segments[0].path / name)
        for segment in segments[1:]:
            sums = merge_sums(sums, _read_sums(segment.path / name))
        if (version_dir / deleted).is_file():
            sums = subtract_sums(sums, _read_sums(version_dir / deleted))
        out.append(LanguageStats.from_sums(sums))
    return out[0], out[1]


# --------------------------------------------------------------------------- writing


class AddPlan:
    """What an add changes: the live articles kept as they are (by doc_id), and the rows to
    tombstone in each segment of the previous version (the passages of removed articles)."""

    def __init__(self, unchanged: set[str], deleted: dict[int, np.ndarray], new_articles: int):
        self.unchanged = unchanged
        self.deleted = deleted  # segment position -> local rows
        self.new_articles = new_articles

    @property
    def deleted_rows(self) -> int:
        return int(sum(len(rows) for rows in self.deleted.values()))


def _segments_of(previous) -> list:
    return previous.segments if isinstance(previous, SegmentedIndex) else [previous]


def live_rows(previous, doc_ids: list[str]) -> tuple[dict[str, list[int]], np.ndarray, int]:
    """What a build finds of the corpus `doc_ids` in the live version `previous` (an `Index` or a
    `SegmentedIndex`; None: nothing): the live rows of each doc_id it holds, the live rows of its
    articles no longer in the corpus, and how many such articles. Read from the store's columns
    and its doc_id look-up, without reading a passage or an article record."""
    if previous is None:
        return {}, np.zeros(0, np.int64), 0
    store = previous.store
    numbers = np.asarray(store.columns[:, 0], np.int64)  # each passage's article number
    order = np.argsort(numbers, kind="stable")
    by_number = numbers[order]
    found: dict[str, list[int]] = {}
    seen = np.zeros(store.n_articles, bool)
    for doc_id in doc_ids:
        if doc_id in found:
            continue
        number = store.article_number(doc_id)  # (a tombstoned article is not found)
        if number is None:
            continue
        lo, hi = np.searchsorted(by_number, [number, number + 1])
        found[doc_id] = np.sort(order[lo:hi]).tolist()
        seen[number] = True
    alive = getattr(previous, "alive", None)
    gone = ~seen[numbers] if alive is None else alive & ~seen[numbers]
    gone_rows = np.flatnonzero(gone)
    return found, gone_rows, len(np.unique(numbers[gone_rows]))


def plan_add(
    previous, doc_ids: list[str], old_rows: dict[str, list[int]], gone_rows: np.ndarray, gone: int, mode: str
) -> AddPlan | None:
    """An `AddPlan` when this change goes to a new segment, else None (a full build).

    `old_rows`, `gone_rows`, `gone`: what `live_rows` found. `mode`: "auto" (a segment when the
    articles added and removed are under `SEGMENT_SHARE` of the live ones and the version has
    fewer than `MAX_SEGMENTS` segments), "segment" (always, when there is a previous version),
    "rebuild" (never).
    """
    if previous is None or mode == "rebuild":
        return None
    unchanged = set(old_rows)
    new = len(set(doc_ids)) - len(unchanged)
    if not new and not gone:
        return None  # only metadata or settings changed: the full build rewrites it
    if mode != "segment":
        share = (new + gone) / max(len(unchanged) + gone, 1)
        if share >= SEGMENT_SHARE or len(_segments_of(previous)) >= MAX_SEGMENTS:
            return None
    starts = np.cumsum([0] + [len(s) for s in _segments_of(previous)])
    rows = np.sort(np.asarray(gone_rows, np.int64))
    part = np.searchsorted(starts, rows, "right") - 1
    deleted = {int(p): rows[part == p] - starts[p] for p in np.unique(part).tolist()}
    return AddPlan(unchanged, deleted, new)


def _link_tree(source: Path, dest: Path) -> dict[str, list[int]]:
    """Hard-link every file of `source` into `dest` (no byte copied). Returns the new stamps
    (`qa.index.verify`) of the files whose recorded stamp matched before the link: a link changes
    a file's change time only, so those are still the files verified, and need not be hashed again."""
    from qa.index.verify import _stamp, read_stamps

    recorded = read_stamps(source)
    stamps = {}
    for path in sorted(source.rglob("*")):
        name = path.relative_to(source).as_posix()
        target = dest / name
        if path.is_dir():
            target.mkdir(parents=True, exist_ok=True)
            continue
        if name == STAMPS:
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        before = _stamp(os.stat(path))
        os.link(path, target)
        if recorded.get(name) == before:
            stamps[name] = _stamp(os.stat(target))
    return stamps


def _sums_of_rows(vectors, rows: np.ndarray, codes: np.ndarray, langs: list[str]) -> LanguageSums:
    """`LanguageSums` of `vectors[rows]` (as float32) by language (`codes` index `langs`)."""
    dim = vectors.shape[1]
    names, parts = [], []
    for code, lang in enumerate(langs):
        mine = rows[codes == code]
        if len(mine):
            names.append(lang)
            parts.append(_moment_sums(np.asarray(vectors[mine], np.float32)))
    return LanguageSums.from_parts(names, parts, None, dim=dim)


def _deleted_sums(segment, rows: np.ndarray) -> tuple[LanguageSums, LanguageSums]:
    """The passage and sentence sums of the tombstoned `rows` of `segment` (an `Index`): their
    passages, and every sentence of their articles (a removed article goes whole)."""
    langs = segment.store.langs
    codes = np.asarray(segment.store.lang_codes[rows], np.int64)
    passages = _sums_of_rows(segment.passage_vectors, rows, codes, langs)
    articles = np.unique(np.asarray(segment.store.columns[rows, 0], np.int64))
    sentences = np.flatnonzero(np.isin(np.asarray(segment.sentences[:, 0], np.int64), articles))
    article_codes = np.array([langs.index(segment.store.article_at(int(a)).lang) for a in articles], np.int64)
    by_article = dict(zip(articles.tolist(), article_codes.tolist()))
    sentence_codes = np.array([by_article[int(a)] for a in segment.sentences[sentences, 0]], np.int64)
    return passages, _sums_of_rows(segment.sentence_vectors, sentences, sentence_codes, langs)


def _add(a: LanguageSums | None, b: LanguageSums) -> LanguageSums:
    return b if a is None else merge_sums(a, b)


def add_segment(building: Path, previous, plan: AddPlan, write_segment) -> str:
    """Make the new version in `building` (a `.building-*` folder): the previous version's
    segments hard-linked, the new segment written by `write_segment(folder)` (None: nothing
    added, only tombstones), the tombstones and their sums, then live (`CURRENT` swapped).
    Returns the version's name. The caller holds the build lock."""
    from qa.index.verify import _record_stamps, file_checksum, write_stamps
    from qa.index.write import _remove_stale

    index_dir = building.parent
    version = building.name.removeprefix(".building-")
    seg_root = building / SEGMENT_DIR
    seg_root.mkdir()
    old = _segments_of(previous)
    listing: list[dict] = []
    old_tombstones = previous.tombstones if isinstance(previous, SegmentedIndex) else [np.zeros(0, np.int64)]
    # The sums of every row tombstoned so far (the previous version's), to which this add's are added.
    deleted_sums, deleted_sentence_sums = (
        _read_sums(previous.path / name) if isinstance(previous, SegmentedIndex) and (previous.path / name).is_file()
        else None
        for name in (DELETED_SUMS, DELETED_SENTENCE_SUMS)
    )
    for position, segment in enumerate(old):
        name = segment.path.name
        stamps = _link_tree(segment.path, seg_root / name)
        _record_stamps(seg_root / name, stamps)
        dead = np.asarray(old_tombstones[position], np.int64)
        fresh = plan.deleted.get(position, np.zeros(0, np.int64))
        if len(fresh):
            passage_sums, sentence_sums = _deleted_sums(segment, fresh)
            deleted_sums = _add(deleted_sums, passage_sums)
            deleted_sentence_sums = _add(deleted_sentence_sums, sentence_sums)
            dead = np.union1d(dead, fresh)
        if len(dead):
            write_file(seg_root / f"{name}.deleted.npy", dead.astype(np.int64))
        listing.append(_entry(name, segment, len(dead)))
    if write_segment is not None:
        scratch = building / ".segment"
        scratch.mkdir()
        name = write_segment(scratch)
        (scratch / name).rename(seg_root / name)
        shutil.rmtree(scratch)
        with open(seg_root / name / MANIFEST, "rb") as handle:
            seg_manifest = Manifest.model_validate_json(handle.read())
        listing.append({"name": name, "passages": seg_manifest.corpus.passages,
                        "articles": seg_manifest.corpus.articles, "deleted": 0})
    for name, sums in ((DELETED_SUMS, deleted_sums), (DELETED_SENTENCE_SUMS, deleted_sentence_sums)):
        if sums is not None:
            with (building / name).open("wb") as handle:
                np.savez(handle, **sums.to_arrays())
    write_file(building / SEGMENTS, json.dumps({"segments": listing}, indent=2).encode())
    top = [SEGMENTS, DELETED_SUMS, DELETED_SENTENCE_SUMS] + [f"{SEGMENT_DIR}/{e['name']}.deleted.npy" for e in listing]
    top = [name for name in top if (building / name).is_file()]
    last = read_manifest(seg_root / listing[-1]["name"])
    manifest = last.model_copy(update={
        "corpus": last.corpus.model_copy(update={
            "articles": sum(e["articles"] for e in listing) - _dead_articles(previous, plan),
            "passages": sum(e["passages"] - e["deleted"] for e in listing),
            "languages": _live_languages(listing, seg_root),
        }),
        "index": last.index.model_copy(update={
            "type": "segmented", "ntotal": sum(e["passages"] for e in listing), "languages": {},
        }),
        "files": {name: (building / name).stat().st_size for name in top},
        "checksums": {name: file_checksum(building / name) for name in top},
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
    })
    write_file(building / MANIFEST, manifest.model_dump_json(indent=2).encode())
    write_stamps(building, top)
    fsync_dir(seg_root)
    fsync_dir(building)
    building.rename(index_dir / version)
    swap_pointer(index_dir, version)
    _remove_stale(index_dir, keep={version})
    # Removing an older version unlinks these files' other names, which moves their change time
    # again: their stamps are refreshed, so that the next load does not hash them all again.
    for entry in listing[: len(old)]:
        _refresh_stamps(index_dir / version / SEGMENT_DIR / entry["name"])
    return version


def _refresh_stamps(folder: Path) -> None:
    """Re-record the stamps (`qa.index.verify`) of the files of a hard-linked segment whose
    inode, size and modification time are still those recorded: only their change time moved,
    by the links added and removed while the build held the lock."""
    from qa.index.verify import _record_stamps, _stamp, read_stamps

    recorded = read_stamps(folder)
    fresh = {}
    for name, stamp in recorded.items():
        try:
            now = _stamp(os.stat(folder / name))
        except OSError:
            continue
        if list(now[:3]) == list(stamp[:3]):
            fresh[name] = now
    if fresh:
        _record_stamps(folder, fresh)


def _entry(name: str, segment, deleted: int) -> dict:
    return {"name": name, "passages": len(segment), "articles": segment.store.n_articles, "deleted": int(deleted)}


def _dead_articles(previous, plan: AddPlan) -> int:
    """Articles tombstoned in the new version (all of them, earlier adds' included)."""
    tombstones = previous.tombstones if isinstance(previous, SegmentedIndex) else [np.zeros(0, np.int64)]
    total = 0
    for position, segment in enumerate(_segments_of(previous)):
        rows = np.union1d(np.asarray(tombstones[position], np.int64), plan.deleted.get(position, np.zeros(0, np.int64)))
        if len(rows):
            total += len(np.unique(np.asarray(segment.store.columns[rows, 0])))
    return total


def _live_languages(listing: list[dict], seg_root: Path) -> dict[str, int]:
    """Articles per language over the segments (tombstoned articles included: an estimate for the
    manifest's summary; the statistics and the search use the live rows)."""
    counts: dict[str, int] = {}
    for entry in listing:
        for lang, n in read_manifest(seg_root / entry["name"]).corpus.languages.items():
            counts[lang] = counts.get(lang, 0) + n
    return dict(sorted(counts.items()))
