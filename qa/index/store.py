"""The passages and their articles on disk, read only for the rows a question returns.

A loaded index used to hold every article and passage as Python objects (+8.3 GB of heap at a
million passages, most of the 35 s load). Here they stay in files of the version folder, under
`store/`, and a question reads the few rows it returns:

    store/articles.bin         each Article as one JSON array of its fields' values, in the order
                               of `ARTICLE_FIELDS` (text and metadata; trailing fields that are
                               None left out), one after another
    store/article_offsets.npy  int (articles + 1): where each record starts; the last is the end
    store/article_keys.npy     uint64 (articles,): a 64-bit hash of each doc_id, sorted
    store/article_order.npy    int (articles,): the article number of each sorted key
    store/passages.npy         int (passages, 5): article number, chunk id, start, end, tokens
    store/passage_langs.npy    int8 (passages,): the language of each passage, a position in
                               the sorted languages of the manifest (`CorpusSpec.languages`)
    store/passage_keys.npy     int64 (passages,): (article number << 32) + start, sorted
    store/passage_order.npy    int (passages,): the passage row of each sorted key
    store/group_ids.npy, group_starts.npy, group_rows.npy   the translation groups of two or
                               more passages: sorted ids, where each one's rows start, the rows
    store/sentence_members.npy, link_starts.npy   the sentences of each passage: passage p's
                               are sentence_members[link_starts[p]:link_starts[p + 1]]
    store/sentence_langs.npy   int8: the language code of each of those links (its passage's)

"int": int32 when every value of the array fits, else int64 (`narrow_int`); readers take either
(indexes written before the narrowing hold int64). int32 holds any index short of 2^31 passages,
sentences or links, and article offsets short of a 2 GB `articles.bin`: −60 B a passage.

Chosen over SQLite by measurement (benchmarks/bench_store.py, a million passages): reading
the rows of a question costs the same order of time either way, but the columns are plain
arrays that the ranking reads in place (languages, article numbers) with no copy and no load
step, the files are verified and watched like the other files of a version (`Index.damage`),
and there is no second storage engine to keep consistent with the vectors.

The arrays are memory-mapped from descriptors kept open since their verification; the records
are read with `os.pread` on such a descriptor (a truncated file then gives a short read, an
IndexCorruptError, instead of the SIGBUS that reading a truncated mapping would raise).
"""

from __future__ import annotations

import hashlib
import os
import threading
import weakref
from array import array
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np
import pydantic_core
from pydantic import ValidationError

from qa.errors import IndexCorruptError
from qa.index.format import write_file
from qa.models import Article, Chunk

__all__ = [
    "ARTICLE_FIELDS",
    "ARTICLE_KEYS",
    "ARTICLE_OFFSETS",
    "ARTICLE_ORDER",
    "ARTICLE_RECORDS",
    "GROUP_IDS",
    "GROUP_ROWS",
    "GROUP_STARTS",
    "LINK_STARTS",
    "PASSAGE_COLUMNS",
    "PASSAGE_KEYS",
    "PASSAGE_LANGS",
    "PASSAGE_ORDER",
    "SENTENCE_LANGS",
    "SENTENCE_MEMBERS",
    "STORE_DIR",
    "STORE_FILES",
    "ArticleView",
    "ChunkView",
    "GroupMembers",
    "LangColumn",
    "PassageStore",
    "RowLookup",
    "StoreWriter",
    "article_record",
    "doc_key",
    "link_sentences",
    "link_starts",
    "narrow_int",
    "ranges",
    "read_article_record",
    "store_mismatch",
    "write_groups",
    "write_sentence_links",
]

STORE_DIR = "store"
ARTICLE_RECORDS = f"{STORE_DIR}/articles.bin"
ARTICLE_OFFSETS = f"{STORE_DIR}/article_offsets.npy"
ARTICLE_KEYS = f"{STORE_DIR}/article_keys.npy"
ARTICLE_ORDER = f"{STORE_DIR}/article_order.npy"
PASSAGE_COLUMNS = f"{STORE_DIR}/passages.npy"
PASSAGE_LANGS = f"{STORE_DIR}/passage_langs.npy"
PASSAGE_KEYS = f"{STORE_DIR}/passage_keys.npy"
PASSAGE_ORDER = f"{STORE_DIR}/passage_order.npy"
GROUP_IDS = f"{STORE_DIR}/group_ids.npy"
GROUP_STARTS = f"{STORE_DIR}/group_starts.npy"
GROUP_ROWS = f"{STORE_DIR}/group_rows.npy"
SENTENCE_MEMBERS = f"{STORE_DIR}/sentence_members.npy"
LINK_STARTS = f"{STORE_DIR}/link_starts.npy"
SENTENCE_LANGS = f"{STORE_DIR}/sentence_langs.npy"
STORE_FILES = (
    ARTICLE_RECORDS, ARTICLE_OFFSETS, ARTICLE_KEYS, ARTICLE_ORDER,
    PASSAGE_COLUMNS, PASSAGE_LANGS, PASSAGE_KEYS, PASSAGE_ORDER,
    GROUP_IDS, GROUP_STARTS, GROUP_ROWS, SENTENCE_MEMBERS, LINK_STARTS, SENTENCE_LANGS,
)  # fmt: skip
ARTICLES_CACHED = 1024  # parsed articles kept: a question's passages and their translations
# The fields of an article record, by position: `Article`'s own order. Named JSON objects spent
# ~40 B a record on the names of the five fields every article has (~90 with url, date, outlet).
# A new field of `Article` goes last (older records read it as None); reordering them changes
# the index format.
ARTICLE_FIELDS = tuple(Article.model_fields)


def article_record(article: Article) -> bytes:
    """`article` as one record of `store/articles.bin`: a JSON array of its fields' values in the
    order of `ARTICLE_FIELDS`, the trailing ones that are None left out (read back as the same
    Article: every optional field defaults to None)."""
    values = list(article.model_dump(mode="json").values())
    while values and values[-1] is None:
        values.pop()
    return pydantic_core.to_json(values)


def read_article_record(data: bytes) -> Article:
    """The Article of a record of `store/articles.bin` (`article_record`; a named JSON object, as
    earlier stores wrote them, reads too). ValueError or ValidationError for a damaged one."""
    if data[:1] == b"{":
        return Article.model_validate_json(data)
    values = pydantic_core.from_json(data)
    if not isinstance(values, list) or len(values) > len(ARTICLE_FIELDS):
        raise ValueError("not a record of an article's fields")
    return Article.model_validate(dict(zip(ARTICLE_FIELDS, values)))


def narrow_int(table: np.ndarray) -> np.ndarray:
    """`table` as int32 when every value fits, else int64: lossless, half the bytes of the
    row numbers, offsets and links that fill most of the store and the sentence table."""
    table = np.asarray(table)
    fits = not table.size or (int(table.min()) >= np.iinfo(np.int32).min and int(table.max()) <= np.iinfo(np.int32).max)
    return table.astype(np.int32 if fits else np.int64, copy=False)


def doc_key(doc_id: str) -> int:
    """The 64-bit key an article is looked up by (a hash of its doc_id; collisions are resolved
    by comparing the doc_ids of the records that share a key)."""
    return int.from_bytes(hashlib.blake2b(doc_id.encode(), digest_size=8).digest(), "little")


class StoreWriter:
    """Writes the store of a new version, article by article, then passage by passage, with
    bounded memory: the records go to disk as they come, and only a few integers per article
    and per passage are kept (in arrays, not Python objects) until `close`.

    `langs`: the languages' codes, when known in advance; otherwise codes are given as
    languages are met and renumbered in sorted order by `close` (the manifest's order).
    """

    def __init__(self, folder: Path, langs: list[str] | None = None):
        self.folder = Path(folder)
        (self.folder / STORE_DIR).mkdir(parents=True, exist_ok=True)
        self._records = (self.folder / ARTICLE_RECORDS).open("wb")
        self._offsets = array("q", [0])
        self._keys = array("Q")
        self._article_langs = array("b")  # the language code of each article
        self._lang_code = {lang: i for i, lang in enumerate(langs or [])}
        self._columns: list[np.ndarray] = []
        self._langs: list[np.ndarray] = []
        self._lookup: tuple[np.ndarray, np.ndarray, dict[str, int]] | None = None

    @property
    def n_articles(self) -> int:
        return len(self._keys)

    def languages(self) -> list[str]:
        """The languages met so far, sorted (the codes `close` gives them)."""
        return sorted(self._lang_code)

    def lang_counts(self) -> dict[str, int]:
        """Articles per language, sorted by language."""
        counts = np.bincount(np.frombuffer(self._article_langs, np.int8), minlength=len(self._lang_code))
        return {lang: int(counts[code]) for lang, code in sorted(self._lang_code.items()) if counts[code]}

    def add_article(self, article: Article) -> int:
        """Append one article; returns its article number."""
        if self._lookup is not None:
            raise ValueError("articles must all be added before their passages")
        record = article_record(article)
        self._records.write(record)
        self._offsets.append(self._offsets[-1] + len(record))
        self._keys.append(doc_key(article.doc_id))
        self._article_langs.append(self._lang_code.setdefault(article.lang, len(self._lang_code)))
        return len(self._keys) - 1

    def _numbers(self, doc_ids: list[str]) -> np.ndarray:
        """The article number of each doc_id (KeyError for one not added), by its key; keys that
        two articles share (a 64-bit collision) are resolved by reading those articles' records."""
        if self._lookup is None:
            self._records.flush()
            keys = np.frombuffer(self._keys, np.uint64)
            order = np.argsort(keys, kind="stable")
            sorted_keys = keys[order]
            shared = np.flatnonzero(sorted_keys[1:] == sorted_keys[:-1])
            clashes = {}
            for number in np.unique(order[np.concatenate([shared, shared + 1])]).tolist():
                start, end = self._offsets[number], self._offsets[number + 1]
                with (self.folder / ARTICLE_RECORDS).open("rb") as handle:
                    handle.seek(start)
                    clashes[read_article_record(handle.read(end - start)).doc_id] = number
            self._lookup = (sorted_keys, order, clashes)
        sorted_keys, order, clashes = self._lookup
        keys = np.array([doc_key(doc_id) for doc_id in doc_ids], np.uint64)
        if not len(sorted_keys):
            if doc_ids:
                raise KeyError(doc_ids[0])
            return np.zeros(0, np.int64)
        at = np.minimum(np.searchsorted(sorted_keys, keys), len(sorted_keys) - 1)
        numbers = order[at]
        missing = np.flatnonzero(sorted_keys[at] != keys)
        if len(missing):
            raise KeyError(doc_ids[int(missing[0])])
        for i, doc_id in enumerate(doc_ids):
            if doc_id in clashes:
                numbers[i] = clashes[doc_id]
        return numbers.astype(np.int64)

    def add_passages(self, chunks: Sequence[Chunk], langs: Sequence[str] | None = None) -> None:
        """Append passages (in vector order) of articles already added. `langs`: each passage's
        language; its article's by default."""
        numbers = self._numbers([c.doc_id for c in chunks])
        columns = np.array([(0, c.chunk_id, c.start, c.end, c.n_tokens) for c in chunks], np.int64).reshape(-1, 5)
        columns[:, 0] = numbers
        self._columns.append(columns)
        if langs is None:
            self._langs.append(np.frombuffer(self._article_langs, np.int8)[numbers])
        else:
            self._langs.append(np.array([self._lang_code.setdefault(lang, len(self._lang_code)) for lang in langs], np.int8))

    def _recode(self) -> np.ndarray:
        """Old code -> code in sorted language order."""
        recode = np.zeros(max(len(self._lang_code), 1), np.int8)
        for new, lang in enumerate(sorted(self._lang_code)):
            recode[self._lang_code[lang]] = new
        return recode

    def article_lang_codes(self) -> np.ndarray:
        """Each article's language code, in sorted language order (as after `close`)."""
        return self._recode()[np.frombuffer(self._article_langs, np.int8)]

    def close(self) -> tuple[np.ndarray, np.ndarray]:
        """Write the arrays and make every file durable; returns the passage columns and
        language codes (for `write_sentence_links`)."""
        self._records.flush()
        os.fsync(self._records.fileno())
        self._records.close()
        keys = np.frombuffer(self._keys, np.uint64)
        order = np.argsort(keys, kind="stable")
        write_file(self.folder / ARTICLE_OFFSETS, narrow_int(np.frombuffer(self._offsets, np.int64)))
        write_file(self.folder / ARTICLE_KEYS, keys[order])
        write_file(self.folder / ARTICLE_ORDER, narrow_int(order))
        columns = np.concatenate(self._columns) if self._columns else np.zeros((0, 5), np.int64)
        self._columns = []
        write_file(self.folder / PASSAGE_COLUMNS, narrow_int(columns))
        codes = self._recode()[np.concatenate(self._langs)] if self._langs else np.zeros(0, np.int8)
        self._langs = []
        write_file(self.folder / PASSAGE_LANGS, codes)
        passage_keys = (columns[:, 0] << 32) + columns[:, 2]
        order = np.argsort(passage_keys, kind="stable")
        write_file(self.folder / PASSAGE_KEYS, passage_keys[order])
        write_file(self.folder / PASSAGE_ORDER, narrow_int(order))
        return columns, codes


def write_groups(folder: Path, groups: np.ndarray) -> None:
    """The translation groups of two or more passages, as sorted ids and their rows (a passage
    alone in its group is in none: most are)."""

    groups = np.asarray(groups, np.int64)
    order = np.argsort(groups, kind="stable")
    ids, starts, counts = np.unique(groups[order], return_index=True, return_counts=True)
    shared = counts > 1
    rows = np.concatenate([order[s : s + c] for s, c in zip(starts[shared], counts[shared])]) if shared.any() else []
    write_file(folder / GROUP_IDS, narrow_int(ids[shared].astype(np.int64)))
    write_file(folder / GROUP_STARTS, narrow_int(np.concatenate([[0], np.cumsum(counts[shared])]).astype(np.int64)))
    write_file(folder / GROUP_ROWS, narrow_int(np.asarray(rows, np.int64)))


def write_sentence_links(
    folder: Path, columns: np.ndarray, lang_codes: np.ndarray, sentences: np.ndarray, block: int = 65536
) -> None:
    """Which sentences each passage holds (passages overlap, so a sentence may be in two).

    Sentences are sorted by (article, start); a passage's sentences are those of its article
    starting inside it (two binary searches) that also end inside it. Vectorized, a block of
    passages at a time, twice (the links of each block counted, then written into files of the
    total size): the temporaries are a block's, not ~80 B a sentence for the whole corpus.
    """

    sentences = np.asarray(sentences).reshape(-1, 3)
    keys = (sentences[:, 0].astype(np.int64) << 32) + sentences[:, 1]
    # Already sorted when written by build_index: no order array then.
    order = None if np.all(keys[1:] >= keys[:-1]) else np.argsort(keys, kind="stable")
    sorted_keys = keys if order is None else keys[order]
    del keys
    counts = np.zeros(len(columns), np.int64)
    for start in range(0, len(columns), block):
        owners, _ = _links(columns, sentences, sorted_keys, order, start, min(len(columns), start + block))
        counts[start : start + block] = np.bincount(owners - start, minlength=min(block, len(columns) - start))
    total = int(counts.sum())
    # A sentence row each: int32 short of 2^31 sentences (`narrow_int`), known before writing.
    member_type = np.int32 if len(sentences) <= np.iinfo(np.int32).max else np.int64
    members_out = np.lib.format.open_memmap(folder / SENTENCE_MEMBERS, mode="w+", dtype=member_type, shape=(total,))
    langs_out = np.lib.format.open_memmap(folder / SENTENCE_LANGS, mode="w+", dtype=np.int8, shape=(total,))
    at = 0
    codes = np.asarray(lang_codes, np.int8)
    for start in range(0, len(columns), block):
        owners, members = _links(columns, sentences, sorted_keys, order, start, min(len(columns), start + block))
        members_out[at : at + len(members)] = members
        langs_out[at : at + len(members)] = codes[owners]
        at += len(members)
    for out, name in ((members_out, SENTENCE_MEMBERS), (langs_out, SENTENCE_LANGS)):
        out.flush()
        with (folder / name).open("rb+") as handle:
            os.fsync(handle.fileno())
    del members_out, langs_out
    write_file(folder / LINK_STARTS, narrow_int(np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)))


def _links(
    columns: np.ndarray, sentences: np.ndarray, sorted_keys: np.ndarray, order: np.ndarray | None, start: int, end: int
) -> tuple[np.ndarray, np.ndarray]:
    """(passage, sentence) of each link of passages start..end-1, by passage then sentence."""
    part = np.asarray(columns[start:end], np.int64)  # int32 columns would overflow the shift below
    doc, first, last = part[:, 0], part[:, 2], part[:, 3]
    lo = np.searchsorted(sorted_keys, (doc << 32) + first, "left")
    hi = np.searchsorted(sorted_keys, (doc << 32) + last, "left")
    lengths = np.maximum(hi - lo, 0)
    owners = np.repeat(np.arange(start, end, dtype=np.int64), lengths)
    members = ranges(lo, lengths)
    if order is not None:
        members = order[members]
    inside = sentences[members, 2] <= last[owners - start]
    return owners[inside], members[inside]


def link_sentences(columns: np.ndarray, sentences: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(owners, members): each link's passage row (ascending) and sentence row, from the
    passages' columns (article, chunk id, start, end, ...) and the sentences' (article, start,
    end), all at once. Every store links with `_links` (the embedded build a block at a time,
    `qa.postgres` with this at load), so that all agree."""
    columns = np.asarray(columns, dtype=np.int64)
    sentences = np.asarray(sentences, dtype=np.int64).reshape(-1, 3)
    keys = (sentences[:, 0] << 32) + sentences[:, 1]
    order = None if np.all(keys[1:] >= keys[:-1]) else np.argsort(keys, kind="stable")
    sorted_keys = keys if order is None else keys[order]
    return _links(columns, sentences, sorted_keys, order, 0, len(columns))


def link_starts(owners: np.ndarray, passages: int) -> np.ndarray:
    """(passages + 1,) int64: passage p's links are [starts[p], starts[p + 1]) (`owners` ascending)."""
    return np.concatenate([[0], np.cumsum(np.bincount(owners, minlength=passages))]).astype(np.int64)


def ranges(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """The integers of the ranges [start, start + length), concatenated, without a Python loop."""
    offsets = np.repeat(starts - np.concatenate([[0], np.cumsum(lengths)[:-1]]), lengths)
    return offsets + np.arange(int(lengths.sum()), dtype=np.int64)


class GroupMembers:
    """`index.members`: translation group id -> rows of its passages, for groups of two or more
    (`get(group, default)`, as the dict it replaces)."""

    def __init__(self, ids: np.ndarray, starts: np.ndarray, rows: np.ndarray):
        self.ids, self.starts, self.rows = ids, starts, rows

    def get(self, group: int, default: list[int] | None = None) -> list[int] | None:
        at = int(self.ids.searchsorted(group))  # (the method: a third of np.searchsorted's call cost)
        if at < len(self.ids) and int(self.ids[at]) == group:
            return self.rows[int(self.starts[at]) : int(self.starts[at + 1])].tolist()
        return default

    def __len__(self) -> int:
        return len(self.ids)


def store_mismatch(arrays: dict[str, np.ndarray], passages: int, articles: int) -> tuple[str, str] | None:
    """(file, problem) of the first store array whose shape disagrees with `passages` and
    `articles` (the manifest's counts), None when they all agree."""
    expected = {
        ARTICLE_OFFSETS: (articles + 1,), ARTICLE_KEYS: (articles,), ARTICLE_ORDER: (articles,),
        PASSAGE_COLUMNS: (passages, 5), PASSAGE_LANGS: (passages,), PASSAGE_KEYS: (passages,),
        PASSAGE_ORDER: (passages,), LINK_STARTS: (passages + 1,),
        SENTENCE_LANGS: (len(arrays[SENTENCE_MEMBERS]),), GROUP_STARTS: (len(arrays[GROUP_IDS]) + 1,),
    }  # fmt: skip
    for name, shape in expected.items():
        if arrays[name].shape != shape:
            return name, f"holds an array of shape {arrays[name].shape}; the index needs {shape}"
    return None


class PassageStore:
    """The passages and articles of a loaded version, read from its store on demand.

    `arrays`: the store's .npy files by manifest name (memory-mapped); `records`: the open,
    verified descriptor of `articles.bin` and its path (named in errors).
    """

    def __init__(self, arrays: dict[str, np.ndarray], records_fd: int, records_path: Path, langs: list[str]):
        self.offsets = arrays[ARTICLE_OFFSETS]
        self.keys = arrays[ARTICLE_KEYS]
        self.order = arrays[ARTICLE_ORDER]
        self.columns = arrays[PASSAGE_COLUMNS]
        self.lang_codes = arrays[PASSAGE_LANGS]
        self.passage_keys = arrays[PASSAGE_KEYS]
        self.passage_order = arrays[PASSAGE_ORDER]
        self.langs = list(langs)  # the language of each code
        # Its own descriptor (the same open file): the views below may outlive the `Index`
        # whose kept descriptors are closed when it goes (`open_index(...).articles`).
        self._fd = os.dup(records_fd)
        weakref.finalize(self, os.close, self._fd)
        self._path = records_path
        self._cache: OrderedDict[int, Article] = OrderedDict()
        self._lock = threading.Lock()
    @property
    def n_articles(self) -> int:
        return len(self.offsets) - 1

    def __len__(self) -> int:
        return len(self.columns)

    def article_at(self, number: int) -> Article:
        """Article number `number` (its record read and parsed; the last ones kept)."""
        with self._lock:
            cached = self._cache.get(number)
            if cached is not None:
                self._cache.move_to_end(number)
                return cached
        start, end = int(self.offsets[number]), int(self.offsets[number + 1])
        data = os.pread(self._fd, end - start, start) if end > start else b""
        try:
            if len(data) != end - start:
                raise ValueError("short read")
            article = read_article_record(data)
        except (ValueError, ValidationError):
            raise IndexCorruptError(
                f"{self._path} is damaged (article record {number} cannot be read). "
                "Rebuild the index with `qa index`."
            ) from None
        with self._lock:
            self._cache[number] = article
            while len(self._cache) > ARTICLES_CACHED:
                self._cache.popitem(last=False)
        return article

    def article_number(self, doc_id: str) -> int | None:
        """The number of article `doc_id`, None when the store has no such article."""
        key = np.uint64(doc_key(doc_id))
        at = int(np.searchsorted(self.keys, key, "left"))
        while at < len(self.keys) and self.keys[at] == key:
            number = int(self.order[at])
            if self.article_at(number).doc_id == doc_id:
                return number
            at += 1
        return None

    def passage(self, row: int) -> Chunk:
        """Passage `row`, its text cut from its article's."""
        return self.passage_and_article(row)[0]

    def passage_and_article(self, row: int) -> tuple[Chunk, Article]:
        """Passage `row` and the article it was cut from."""
        doc, chunk_id, start, end, tokens = self.columns[row].tolist()
        article = self.article_at(doc)
        chunk = Chunk(
            doc_id=article.doc_id, chunk_id=chunk_id, text=article.text[start:end], start=start, end=end, n_tokens=tokens
        )
        return chunk, article

    def row_of(self, doc_id: str, start: int) -> int | None:
        """The row of the passage of `doc_id` starting at `start`, None when there is none."""
        number = self.article_number(doc_id)
        if number is None:
            return None
        key = (number << 32) + int(start)
        at = int(np.searchsorted(self.passage_keys, key, "left"))
        if at < len(self.passage_keys) and int(self.passage_keys[at]) == key:
            return int(self.passage_order[at])
        return None

    def doc_ids(self) -> Iterator[str]:
        """Every article's doc_id, in article order (reads every record: for small indexes,
        tests and rebuilds, not for questions)."""
        for number in range(self.n_articles):
            yield self.article_at(number).doc_id


class ArticleView(Mapping):
    """`index.articles`: doc_id -> Article, read from the store on demand."""

    def __init__(self, store: PassageStore):
        self._store = store

    def __getitem__(self, doc_id: str) -> Article:
        number = self._store.article_number(doc_id) if isinstance(doc_id, str) else None
        if number is None:
            raise KeyError(doc_id)
        return self._store.article_at(number)

    def __contains__(self, doc_id: object) -> bool:
        return isinstance(doc_id, str) and self._store.article_number(doc_id) is not None

    def __iter__(self) -> Iterator[str]:
        return self._store.doc_ids()

    def __len__(self) -> int:
        return self._store.n_articles


class ChunkView(Sequence):
    """`index.chunks`: the passages in row order, each read from the store when asked for."""

    def __init__(self, store: PassageStore):
        self._store = store

    def __getitem__(self, row):
        if isinstance(row, slice):
            return [self._store.passage(r) for r in range(*row.indices(len(self)))]
        row = int(row)
        if row < 0:
            row += len(self)
        if not 0 <= row < len(self):
            raise IndexError(row)
        return self._store.passage(row)

    def __len__(self) -> int:
        return len(self._store)


class RowLookup:
    """`index.row_of`: (doc_id, start) -> passage row, looked up in the store's sorted keys."""

    def __init__(self, store: PassageStore):
        self._store = store

    def get(self, key: tuple[str, int], default: int | None = None) -> int | None:
        row = self._store.row_of(*key)
        return default if row is None else row

    def __getitem__(self, key: tuple[str, int]) -> int:
        row = self._store.row_of(*key)
        if row is None:
            raise KeyError(key)
        return row

    def __contains__(self, key: object) -> bool:
        return isinstance(key, tuple) and self._store.row_of(*key) is not None


class LangColumn:
    """`index.langs`: the language of each passage as small integer codes (one byte a passage)
    that read like the array of language strings they stand for: `langs[row]` is a str,
    `langs[rows]` an array of str, `langs == "en"` a boolean mask."""

    def __init__(self, codes: np.ndarray, names: list[str]):
        self.codes = codes
        self.names = np.array(names, dtype=str)

    def __len__(self) -> int:
        return len(self.codes)

    def __getitem__(self, rows):
        if isinstance(rows, (int, np.integer)):
            return str(self.names[self.codes[rows]])
        return self.names[self.codes[rows]]

    def code(self, lang: str) -> int:
        """The code of `lang`, -1 when no passage is in it."""
        hits = np.flatnonzero(self.names == lang)
        return int(hits[0]) if len(hits) else -1

    def __eq__(self, lang):  # type: ignore[override]
        if isinstance(lang, str):
            return self.codes == self.code(lang)
        return NotImplemented

    def __ne__(self, lang):  # type: ignore[override]
        if isinstance(lang, str):
            return self.codes != self.code(lang)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        out = self.names[self.codes]
        return out if dtype is None else out.astype(dtype)

    def tolist(self) -> list[str]:
        return self.names[self.codes].tolist()

