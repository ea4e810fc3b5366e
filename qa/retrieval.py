"""Question → ranked passages, across every language of the corpus."""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import threading
import unicodedata
from pathlib import Path

import numpy as np

from qa.config import Settings
from qa.embed import Embedder, get_embedder
from qa.errors import InvalidQuestionError, QAError
from qa.index.ann import Int8Rows
from qa.index.format import current_version, file_stamp, pointer_file
from qa.index.load import Index, check_model, open_index
from qa.models import Filters, Passage, Translation
from qa.question import check_meaning
from qa.rank import FusionWeights, best_sentence_scores, fold_groups, fuse, lexical_by_language_sparse
from qa.runtime import apply_threads

__all__ = [
    "RANKING_SETTINGS",
    "Engine",
    "SearchResults",
    "clean_question",
    "engine_key",
    "get_engine",
    "grouped_passage",
    "retrieve",
    "to_passage",
    "to_translation",
    "url_outlet",
]

log = logging.getLogger(__name__)


def clean_question(question: object, max_chars: int, lang: str | None = None) -> str:
    """The question with control characters removed and whitespace collapsed.

    Raises InvalidQuestionError, naming the problem, for a non-string, empty or too long question,
    and its subclass MeaninglessQuestionError, in language `lang` (the asker's, when known: see
    `qa.question.asker_language`), for one without letters or digits or one character repeated.
    """
    if not isinstance(question, str):
        raise InvalidQuestionError(f"The question must be text, not {type(question).__name__}.")
    if len(question) > max_chars:
        raise InvalidQuestionError(
            f"The question is {len(question)} characters long; the limit is {max_chars} "
            "(QA_MAX_QUESTION_CHARS). Ask a shorter question."
        )
    # Lone surrogates and control characters (NUL, escape sequences) carry no meaning and
    # break tokenizers and terminals; drop them rather than fail.
    kept = "".join(
        ch if unicodedata.category(ch) not in {"Cc", "Cs", "Co", "Cn"} else " " for ch in question
    )
    text = " ".join(kept.split())
    if not text:
        raise InvalidQuestionError("The question is empty. Type a question.")
    check_meaning(text, lang)
    return text


class SearchResults(list[Passage]):
    """The passages a search found, bound to the index version it read (`loaded_index`).

    A build may replace the live index at any moment; whoever goes on to read the passages'
    articles or sentences (the answer's evidence) reads them from this version, so that every
    offset and citation refers to the texts the passages came from.
    """

    def __init__(self, passages: list[Passage], loaded_index: Index):
        super().__init__(passages)
        self.loaded_index = loaded_index


class Engine:
    """The embedder and the live index, loaded once and reused across questions.

    Picks up a rebuilt index between two questions: the `CURRENT` pointer is checked on every
    search (one stat) and a new version is loaded and swapped in atomically.
    """

    def __init__(self, settings: Settings):
        self.settings = settings
        self.embedder: Embedder = get_embedder(settings)
        self._index: Index | None = None
        self._pointer_file = pointer_file(settings.index_dir)
        self._pointer: tuple[int, ...] | None = None  # `pointer_stamp` when _index was checked
        self._lock = threading.Lock()
        self._mapping: threading.Thread | None = None  # reads a new index's mapped vectors in
        self._failed: tuple[tuple, QAError] | None = None  # the last failed load: (folder state, error)
        # With QA_DATABASE_URL the index is the store's live version (qa.postgres), not the folder.
        self._database = None
        if settings.database_url:
            from qa.postgres import Database

            self._database = Database(settings.database_url)

    def index(self) -> Index:
        """The live index, reloaded if a build has replaced it since the last question.

        Also reloaded, verifying every file, when a memory-mapped file of the loaded index has
        changed on disk underneath it (`Index.damage`): the changed mapping is dropped
        before anything reads it. Until a good version loads, each question gets the
        IndexCorruptError naming the file and the fix; a new load is tried only once the index
        folder's files change (a file put back, a rebuild), not on every question. A new version
        that does not load leaves the loaded one (intact) answering.

        With QA_DATABASE_URL: the store's live version (`qa.postgres.Database.index`), checked with
        one read of the live row per question.
        """
        if self._database is not None:  # (no FAISS to size: PostgreSQL searches the vectors)
            return self._database.index(self.embedder.describe)
        stamp = file_stamp(self._pointer_file)
        index = self._index
        if index is not None and (stamp is None or stamp == self._pointer) and index.damage() is None:
            return index
        with self._lock:
            index = self._index
            damage = index.damage() if index is not None else None
            if damage is not None:
                log.error("%s Reloading the index.", damage)
                self._index = index = None  # never read the changed mapping again
            live = current_version(self.settings.index_dir)
            if index is None or (live is not None and index.version != live):
                try:
                    self._index = self._load(damage)
                except QAError:
                    if index is None:
                        raise
                    # A new version that does not load (a damaged pointer, damaged files): the
                    # loaded one is intact, so questions go on being answered from it.
                    return index
            self._pointer = stamp
            return self._index

    def _load(self, damage: str | None) -> Index:
        """Open, check and prepare the live index version (the caller holds the lock).

        A failed load is remembered with the state of the index folder it saw, and raised again
        at once while nothing there changes: at a million passages a load takes half a minute,
        and a question must not pay for it just to fail the same way.
        """
        apply_threads(self.settings)  # FAISS's thread pool, before the first search (see qa.runtime)
        prepare = getattr(self.embedder, "prepare", None)
        if prepare is not None:
            prepare()  # the question model loads on a thread while the index opens
        folder = _folder_state(self.settings.index_dir)
        if self._failed is not None and self._failed[0] == folder:
            raise self._failed[1]
        try:
            loaded = open_index(self.settings.index_dir)
            check_model(loaded.manifest, self.embedder.describe(), self.settings.index_dir)
        except QAError as exc:
            error = type(exc)(f"{damage} Reloading it failed: {exc}") if damage else exc
            self._failed = (folder, error)
            if self._index is not None or damage:
                # A running engine: questions go on being answered from the loaded version (see
                # `index`), or the damage was found under it; the log tells the operator. A first
                # load's error goes only to whoever asked (one line from the CLI, not two).
                log.error("Loading the index failed: %s", error)
            raise error from None
        self._failed = None
        if damage:
            log.warning("Reloaded the index from %s after the damage: answering again.", loaded.path)
        # Build the per-language search structures before the swap, so that the first
        # question on a new index does not pay for them.
        loaded.search_by_language(np.zeros(loaded.passage_vectors.shape[1], np.float32), 1)
        if self.settings.map_in:
            # Its memory-mapped vectors are read in on a background thread: until then a
            # question pays for each first-touched page (up to tens of ms at 1M passages).
            self._mapping = threading.Thread(target=loaded.map_in, name="qa-map-in", daemon=True)
            self._mapping.start()
        return loaded

    def warm_up(self) -> None:
        """Load the model, the index, the language identifier and the compiled lexical loops,
        and read the index's mapped vectors in, now instead of on the first questions."""
        self.index()
        if self._mapping is not None:
            self._mapping.join()
        # A whole question: Latin script goes to the language classifier, whose model takes
        # ~0.5 s to load, and the lexical loops (`qa.kernels`) load or compile. Without this the
        # first question after `qa serve` said ready took 0.5 s (2 s on a fresh install) instead
        # of 20 ms.
        self.search("warm up", 1)

    def score(
        self, question: str, lang: str, index: Index, mask: np.ndarray | None = None, filters: Filters | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Candidate passages and their final scores (see `qa.rank` for the reasoning).

        With `mask` (a filter: `qa.filters`), only passages it lets through are candidates, dense
        and lexical alike, so the sentence stage sees only them too.

        Candidates are each language's best dense matches plus its best lexical matches; each
        is scored by its standardized dense score plus the lexical score scaled per language.
        The best `sentence_candidates` of them then add their best sentence's score; only those
        are returned. The fusion is `qa.rank.fuse`, which `qa eval` runs too.
        """
        settings = self.settings
        stats = index.lang_stats
        query = stats.center_query(self.embedder.encode_query(question)[None, :], lang, settings.query_centering)
        if getattr(index, "searches_filters", False):  # the store: the filters are its WHERE clauses
            by_language = index.search_by_language(query[0], settings.candidates, mask, filters)
        else:
            by_language = index.search_by_language(query[0], settings.candidates, mask)
        candidates = [rows for _, rows in by_language.values()]
        if settings.lexical_weight:
            # Sparse: only passages sharing a word with the question are touched.
            lex_rows, lex_scores = index.lexical.sparse_scores(question, settings.lexical_posting_budget)
            if mask is not None:  # (still sorted)
                keep = mask[lex_rows]
                lex_rows, lex_scores = lex_rows[keep], lex_scores[keep]
            lex_scaled, lex_candidates = lexical_by_language_sparse(
                lex_rows, lex_scores, index.lang_ids, settings.candidates
            )
            candidates.append(lex_candidates)
        rows = np.sort(np.concatenate(candidates)) if candidates else np.zeros(0, np.int64)
        if len(rows):  # (np.unique: 10x slower here; np.r_ twice the cost of a concatenate)
            rows = rows[np.concatenate(([True], rows[1:] != rows[:-1]))]
        if not len(rows):  # a filter that lets no passage through
            return rows, np.zeros(0)
        raw = _row_dots(index, rows, query[0])[None, :]
        dense = stats.standardize(query, raw, index.lang_ids[rows])
        lexical = None
        if settings.lexical_weight and len(lex_rows):
            # lex_rows is sorted: each candidate's lexical score by binary search, 0 if absent.
            at = np.minimum(np.searchsorted(lex_rows, rows), len(lex_rows) - 1)
            lexical = np.where(lex_rows[at] == rows, lex_scaled[at], 0.0)[None, :]

        def sentences(mask: np.ndarray) -> np.ndarray:
            best = np.zeros(mask.shape)
            best[0, mask[0]] = self._best_sentences(query, rows[mask[0]], index)
            return best

        scores, mask = fuse(dense, lexical, sentences, FusionWeights.from_settings(settings))
        keep = np.flatnonzero(mask[0])  # only those scored with their sentences
        return rows[keep], scores[0, keep]

    @staticmethod
    def _best_sentences(query: np.ndarray, rows: np.ndarray, index: Index) -> np.ndarray:
        """For each passage in `rows`, its best standardized sentence score."""
        from qa.kernels import row_dots

        links, owners = index.sentence_runs(rows)
        # int64 whichever the stored type (int32 since the store was narrowed): one compiled `row_dots`
        members = np.asarray(index.sentence_member[links], np.int64)
        vectors = index.sentence_vectors
        if not isinstance(index, Index):  # another backend (qa.postgres): its rows, read in one go
            raw = row_dots(index.sentence_vectors_at(members), np.arange(len(members)), query[0])
        elif isinstance(vectors, Int8Rows):  # the codes read in place, then scaled (no float copy)
            raw = row_dots(vectors.codes, members, query[0]) * vectors.scales[members]
        else:
            raw = row_dots(vectors, members, query[0])
        return best_sentence_scores(
            query, raw[None, :], owners, len(rows), index.sentence_stats, index.sentence_lang_ids[links]
        )[0]

    def search(
        self,
        question: str,
        k: int,
        lang: str | None = None,
        *,
        index: Index | None = None,
        filters: Filters | None = None,
    ) -> SearchResults:
        """The k best passages for one cleaned question, one per translation group.

        Each language's best candidates are scored on a common scale (see `qa.rank`), then
        translations of the same passage are folded into one hit, shown in the asker's language
        (`lang`, detected when not given) when the group has a member in it. Searches `index`,
        by default the live version; the results carry the version searched. `filters`
        (`qa.filters.make_filters`) restricts every stage to the passages they let through,
        translations included; InvalidQuestionError for a language or source the index lacks.
        """
        from qa.filters import passage_mask
        from qa.lang import detect_language

        lang = lang or detect_language(question, cache_dir=self.settings.cache_dir)
        index = self.index() if index is None else index  # (an index with no passages is falsy)
        mask = passage_mask(index, filters)
        rows, scores = self.score(question, lang, index, mask, filters)
        query = self.embedder.encode_query(question)
        order = np.argsort(-scores)
        folded = fold_groups(rows[order], index.groups, index.members, index.langs, lang, k, mask)
        # Every result's vector decoded in one read (one fancy index instead of one per result),
        # then each similarity as the same float32 dot `grouped_passage` computes alone.
        vectors = index.passage_vectors_at([lead for _, lead in folded]) if folded else None
        return SearchResults(
            [
                grouped_passage(index, lead, float(scores[order[i]]), query, mask, float(query @ vectors[at]))
                for at, (i, lead) in enumerate(folded)
            ],
            index,
        )


def _row_dots(index: Index, rows: np.ndarray, query: np.ndarray) -> np.ndarray:
    """The passage vectors of `rows` times `query` (float32): read in place from an embedded
    index's vectors, or fetched at once from another backend and summed the same way."""
    from qa.kernels import row_dots

    if isinstance(index, Index):
        return index.passage_vectors.dots(rows, query)
    return row_dots(index.passage_vectors_at(rows), np.arange(len(rows)), query)


def _folder_state(index_dir: Path) -> tuple:
    """Name, inode, size and modification time of every file under `index_dir`: what changes
    when a file is put back or a build finishes (only looked at after a failed load)."""
    state = []
    for root, folders, names in os.walk(index_dir):
        # Not the build lock nor a build in progress: those change all along a build, while the
        # live version (what failed) changes only when the build swaps the pointer at its end.
        folders[:] = [folder for folder in folders if not folder.startswith(".")]
        for name in names:
            if name.startswith("."):
                continue
            path = os.path.join(root, name)
            with contextlib.suppress(OSError):
                info = os.stat(path)
                state.append((path, info.st_ino, info.st_size, info.st_mtime_ns))
    return tuple(sorted(state))


def grouped_passage(
    index: Index,
    lead: int,
    score: float,
    query: np.ndarray,
    mask: np.ndarray | None = None,
    similarity: float | None = None,
) -> Passage:
    """Passage `lead` with the other members of its translation group (those `mask` lets
    through, when given) as its translations. `similarity`: `query` times its vector, when the
    caller has it already (else read and computed here)."""
    passage = to_passage(index, lead, score)
    if similarity is None:
        similarity = float(query @ index.passage_vectors_at([lead])[0])
    passage.similarity = similarity
    passage.translations = [
        to_translation(index, m) for m in index.group_members(lead) if m != lead and (mask is None or mask[m])
    ]
    return passage


def to_translation(index: Index, row: int) -> Translation:
    """Passage `row` as the translation of another passage."""
    return Translation(**to_passage(index, row, 0.0).model_dump(include=set(Translation.model_fields)))


def to_passage(index: Index, row: int, score: float) -> Passage:
    """The public model of passage `row` of `index`."""
    with_article = getattr(index, "passage_and_article", None)
    if with_article is not None:  # its article by number, not looked up again by doc_id (a hash, a search)
        chunk, article = with_article(row)
    else:
        chunk = index.passage(row)
        article = index.article(chunk.doc_id)
    return Passage(
        text=chunk.text,
        score=score,
        lang=article.lang,
        doc_id=article.doc_id,
        title=article.title,
        source=article.source,
        url=article.url,
        start=chunk.start,
        end=chunk.end,
        date=article.date,
        outlet=article.outlet or url_outlet(article.url),
        author=article.author,
        page=article.page_at(chunk.start),
    )


def url_outlet(url: str | None) -> str | None:
    """The outlet of an article, as far as its URL tells: the host without `www.` (None without
    a web URL)."""
    if not url:  # (before the import: most stored articles have no URL, and a question reads ~5)
        return None
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url.strip())
        host = parts.hostname
    except ValueError:  # a malformed address, such as an unclosed IPv6 bracket
        return None
    if not host or parts.scheme.lower() not in ("http", "https"):
        return None
    return host.removeprefix("www.")


_engines: dict[tuple, Engine] = {}
_engines_lock = threading.Lock()

# The settings an Engine reads when it ranks (besides the index folder and the embedder).
RANKING_SETTINGS = (
    "candidates",
    "lexical_weight",
    "lexical_posting_budget",
    "query_centering",
    "sentence_weight",
    "sentence_candidates",
    "map_in",
)


def engine_key(settings: Settings) -> tuple:
    """What an engine holds: the index folder, the embedder (the process-wide one for these
    settings: `qa.embed.get_embedder`, itself keyed by the settings that change its vectors) and
    the ranking settings. Settings that differ elsewhere (the rate limit, the server's origins)
    share one engine, and load the index once."""
    return (
        os.path.abspath(settings.index_dir),
        settings.database_url,
        id(get_embedder(settings)),
        tuple(getattr(settings, name) for name in RANKING_SETTINGS),
    )


def get_engine(settings: Settings | None = None) -> Engine:
    """The process-wide engine for these settings (see `engine_key`)."""
    settings = settings or Settings()
    key = engine_key(settings)
    with _engines_lock:
        if key not in _engines:
            _engines[key] = Engine(settings)
        return _engines[key]


def retrieve(
    question: str,
    k: int = 5,
    *,
    settings: Settings | None = None,
    langs: list[str] | str | None = None,
    since: str | dt.date | None = None,
    until: str | dt.date | None = None,
    sources: list[str] | str | None = None,
) -> list[Passage]:
    """Return the `k` passages that best answer `question`, whatever its language.

    Filters (see `qa.filters.make_filters`), applied inside the search so that k passages come
    back when k match: `langs` (ISO 639-1 codes), `since`/`until` (publication days, inclusive;
    an article without a date is left out by either), `sources` (outlets such as `bbc.co.uk`, or
    corpus files and folders). A bad value is an InvalidQuestionError naming it.
    """
    from qa.filters import make_filters

    settings = settings or Settings()
    if not isinstance(k, int) or k < 1 or k > 100:
        raise InvalidQuestionError(f"k must be between 1 and 100, not {k!r}.")
    filters = make_filters(langs=langs, since=since, until=until, sources=sources)
    text = clean_question(question, settings.max_question_chars)
    return list(get_engine(settings).search(text, k, filters=filters))
