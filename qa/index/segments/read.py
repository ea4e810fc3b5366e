"""Reading a segmented version: `SegmentedIndex`, the `IndexBackend` verbs over every segment."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from qa.errors import IndexCorruptError
from qa.index.format import (
    LANG_SUMS,
    SENTENCE_SUMS,
    Manifest,
    read_manifest,
)
from qa.index.segments import (
    DELETED_SENTENCE_SUMS,
    DELETED_SUMS,
    SEGMENT_DIR,
    SEGMENTS,
    read_listing,
)
from qa.index.segments.groups import GROUP_LINKS
from qa.index.store import ArticleView, ChunkView, LangColumn, RowLookup, ranges
from qa.language_stats import LanguageStats, LanguageSums, merge_sums, recode_langs, subtract_sums

__all__ = ["SegmentedIndex", "merged_stats", "open_segmented", "read_sums_file"]

log = logging.getLogger(__name__)


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
                 lang_stats: LanguageStats, sentence_stats: LanguageStats, links: np.ndarray | None = None):
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
        self.lang_ids = np.concatenate([recode_langs(s.store.lang_codes, s.store.langs, lang_stats) for s in segments])
        self.rows_by_language = _RowsByLanguage(self.langs, self.alive)
        self.lexical = _segment_lexical(segments, row_starts, tombstones)
        self.passage_vectors = _Concat([s.passage_vectors for s in segments])
        sentence_starts = np.cumsum([0] + [len(s.sentences) for s in segments]).astype(np.int64)
        self.sentences = _Concat([s.sentences for s in segments], [int(x) for x in self.store.article_starts[:-1]], 0)
        self.sentence_vectors = _Concat([s.sentence_vectors for s in segments])
        self.sentence_member = _Concat([s.sentence_member for s in segments], [int(x) for x in sentence_starts[:-1]])
        self.sentence_lang_ids = _Concat(
            [s.sentence_langs for s in segments],
            maps=[recode_langs(np.arange(len(s.store.langs), dtype=np.int8), s.store.langs, sentence_stats) for s in segments],
        )
        self.link_starts = np.cumsum([0] + [len(s.sentence_member) for s in segments]).astype(np.int64)
        group_starts = np.cumsum([0] + [int(np.max(s.groups)) + 1 if len(s) else 0 for s in segments]).astype(np.int64)
        self.groups = _Concat([s.groups for s in segments], [int(x) for x in group_starts[:-1]])
        self.members = _Members(segments, group_starts, row_starts, self.alive)
        if links is not None and len(links):  # translations found across segments at an add
            from qa.index.segments.groups import link_groups

            self.groups, self.members = link_groups(self.groups, self.members, links, self.alive)

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


def read_sums_file(path: Path) -> LanguageSums:
    """The `LanguageSums` stored in the `.npz` archive at `path` (`LanguageSums.to_arrays`)."""
    with np.load(path) as arrays:
        return LanguageSums.from_arrays(arrays)


def open_segmented(version_dir: Path, manifest: Manifest) -> SegmentedIndex:
    """Load a segmented version whose top-level files are verified: each segment verified and
    loaded as an `Index`, statistics from the summed sums minus the tombstones' sums."""
    from qa.index.load import MAPPED_FILES, load_version
    from qa.index.verify import check_files, close_files

    listing = read_listing(version_dir)
    segments, tombstones = [], []
    try:
        for entry in listing:
            folder = version_dir / SEGMENT_DIR / entry["name"]
            seg_manifest = read_manifest(folder)
            mapped = check_files(folder, seg_manifest, keep_open=MAPPED_FILES)
            try:
                segments.append(load_version(folder, seg_manifest, mapped))
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
        lang_stats, sentence_stats = merged_stats(version_dir, segments)
        links = np.load(version_dir / GROUP_LINKS).reshape(-1, 2) if (version_dir / GROUP_LINKS).is_file() else None
    except (OSError, ValueError, KeyError) as exc:
        raise IndexCorruptError(
            f"{version_dir} cannot be read ({' '.join(str(exc).split())[:200]}). Rebuild the index with `qa index`."
        ) from None
    return SegmentedIndex(version_dir, manifest, segments, tombstones, lang_stats, sentence_stats, links)


def merged_stats(version_dir: Path, segments: list) -> tuple[LanguageStats, LanguageStats]:
    """Passage and sentence statistics of the live rows: the segments' sums merged, minus the
    tombstoned rows' sums. The question means come out of the merged question-sample sums: each
    segment's sample mean weighted by its sample's size (the sums add). Returns the passage and
    the sentence `LanguageStats`."""
    out = []
    for name, deleted in ((LANG_SUMS, DELETED_SUMS), (SENTENCE_SUMS, DELETED_SENTENCE_SUMS)):
        sums = read_sums_file(segments[0].path / name)
        for segment in segments[1:]:
            sums = merge_sums(sums, read_sums_file(segment.path / name))
        if (version_dir / deleted).is_file():
            sums = subtract_sums(sums, read_sums_file(version_dir / deleted))
        out.append(LanguageStats.from_sums(sums))
    return out[0], out[1]


