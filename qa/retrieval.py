"""Question → ranked passages, across every language of the corpus."""

from __future__ import annotations

import threading
import unicodedata

import numpy as np

from qa.ann import Int8Rows
from qa.config import Settings
from qa.embed import Embedder, get_embedder
from qa.errors import InvalidQuestionError
from qa.models import Passage, Translation
from qa.question import check_meaning
from qa.rank import best_sentence_scores, fold_groups, lexical_by_language_sparse, shortlist
from qa.store import LoadedIndex, check_model, current_version, file_stamp, open_index, pointer_file

__all__ = ["Engine", "clean_question", "get_engine", "retrieve"]


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


class Engine:
    """The embedder and the live index, loaded once and reused across questions.

    Picks up a rebuilt index between two questions: the `CURRENT` pointer is checked on every
    search (one stat) and a new version is loaded and swapped in atomically.
    """

    def __init__(self, settings: Settings):
        import faiss

        self.settings = settings
        self.embedder: Embedder = get_embedder(settings)
        # One question is a handful of small searches: FAISS's OpenMP threads cost more to wake
        # than they save, and they fight torch for the cores (measured: 10 ms instead of 0.5 ms
        # at 10k passages).
        faiss.omp_set_num_threads(1)
        self._index: LoadedIndex | None = None
        self._pointer_file = pointer_file(settings.index_dir)
        self._pointer: tuple[int, ...] | None = None  # `pointer_stamp` when _index was checked
        self._lock = threading.Lock()
        self._mapping: threading.Thread | None = None  # reads a new index's mapped vectors in

    def index(self) -> LoadedIndex:
        """The live index, reloaded if a build has replaced it since the last question."""
        stamp = file_stamp(self._pointer_file)
        index = self._index
        if index is not None and (stamp is None or stamp == self._pointer):
            return index
        with self._lock:
            live = current_version(self.settings.index_dir)
            if self._index is None or (live is not None and self._index.version != live):
                loaded = open_index(self.settings.index_dir)
                check_model(loaded.manifest, self.embedder.describe(), self.settings.index_dir)
                # Build the per-language search structures before the swap, so that the first
                # question on a new index does not pay for them.
                loaded.search_by_language(np.zeros(loaded.passage_vectors.shape[1], np.float32), 1)
                if self.settings.map_in:
                    # Its memory-mapped vectors are read in on a background thread: until then a
                    # question pays for each first-touched page (up to tens of ms at 1M passages).
                    self._mapping = threading.Thread(target=loaded.map_in, name="qa-map-in", daemon=True)
                    self._mapping.start()
                self._index = loaded
            self._pointer = stamp
            return self._index

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

    def score(self, question: str, lang: str, index: LoadedIndex) -> tuple[np.ndarray, np.ndarray]:
        """Candidate passages and their final scores (see `qa.rank` for the reasoning).

        Candidates are each language's best dense matches plus its best lexical matches; each
        is scored by its standardized dense score plus the lexical score scaled per language.
        The best `sentence_candidates` of them then add their best sentence's score; only those
        are returned (`qa eval` ranks the same way).
        """
        from qa.kernels import row_dots

        settings = self.settings
        stats = index.lang_stats
        query = stats.center_query(self.embedder.encode_query(question)[None, :], lang, settings.query_centering)
        candidates = [rows for _, rows in index.search_by_language(query[0], settings.candidates).values()]
        if settings.lexical_weight:
            # Sparse: only passages sharing a word with the question are touched.
            lex_rows, lex_scores = index.lexical.sparse_scores(question, settings.lexical_posting_budget)
            lex_scaled, lex_candidates = lexical_by_language_sparse(
                lex_rows, lex_scores, index.lang_ids, settings.candidates
            )
            candidates.append(lex_candidates)
        rows = np.sort(np.concatenate(candidates)) if candidates else np.zeros(0, np.int64)
        rows = rows[np.r_[True, rows[1:] != rows[:-1]]] if len(rows) else rows  # (np.unique: 10x slower here)
        raw = row_dots(index.passage_vectors, rows, query[0])[None, :]
        scores = stats.standardize(query, raw, index.lang_ids[rows])[0]
        if settings.lexical_weight and len(lex_rows):
            # lex_rows is sorted: each candidate's lexical score by binary search, 0 if absent.
            at = np.minimum(np.searchsorted(lex_rows, rows), len(lex_rows) - 1)
            scores = scores + settings.lexical_weight * np.where(lex_rows[at] == rows, lex_scaled[at], 0.0)
        if settings.sentence_weight:
            keep = shortlist(scores, settings.sentence_candidates)
            rows, scores = rows[keep], scores[keep]
            scores = scores + settings.sentence_weight * self._best_sentences(query, rows, index)
        return rows, scores

    @staticmethod
    def _best_sentences(query: np.ndarray, rows: np.ndarray, index: LoadedIndex) -> np.ndarray:
        """For each passage in `rows`, its best standardized sentence score."""
        from qa.kernels import row_dots

        links, owners = index.sentence_runs(rows)
        members = index.sentence_member[links]
        vectors = index.sentence_vectors
        if isinstance(vectors, Int8Rows):  # the codes read in place, then scaled (no float copy)
            raw = row_dots(vectors.codes, members, query[0]) * vectors.scales[members]
        else:
            raw = row_dots(vectors, members, query[0])
        return best_sentence_scores(
            query, raw[None, :], owners, len(rows), index.sentence_stats, index.sentence_lang_ids[links]
        )[0]

    def search(self, question: str, k: int, lang: str | None = None) -> list[Passage]:
        """The k best passages for one cleaned question, one per translation group.

        Each language's best candidates are scored on a common scale (see `qa.rank`), then
        translations of the same passage are folded into one hit, shown in the asker's language
        (`lang`, detected when not given) when the group has a member in it.
        """
        from qa.lang import detect_language

        lang = lang or detect_language(question)
        index = self.index()
        rows, scores = self.score(question, lang, index)
        query = self.embedder.encode_query(question)
        order = np.argsort(-scores)
        folded = fold_groups(rows[order], index.groups, index.members, index.langs, lang, k)
        return [grouped_passage(index, lead, float(scores[order[i]]), query) for i, lead in folded]


def grouped_passage(index: LoadedIndex, lead: int, score: float, query: np.ndarray) -> Passage:
    """Passage `lead` with the other members of its translation group as its translations."""
    passage = to_passage(index, lead, score)
    passage.similarity = float(query @ index.passage_vectors[lead])
    passage.translations = [to_translation(index, m) for m in index.group_members(lead) if m != lead]
    return passage


def to_translation(index: LoadedIndex, row: int) -> Translation:
    """Passage `row` as the translation of another passage."""
    return Translation(**to_passage(index, row, 0.0).model_dump(include=set(Translation.model_fields)))


def to_passage(index: LoadedIndex, row: int, score: float) -> Passage:
    """The public model of passage `row` of `index`."""
    chunk = index.chunks[row]
    article = index.articles[chunk.doc_id]
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
        outlet=article.outlet,
        author=article.author,
        page=article.page_at(chunk.start),
    )


_engines: dict[str, Engine] = {}
_engines_lock = threading.Lock()


def get_engine(settings: Settings | None = None) -> Engine:
    """The process-wide engine for these settings."""
    settings = settings or Settings()
    key = settings.model_dump_json()
    with _engines_lock:
        if key not in _engines:
            _engines[key] = Engine(settings)
        return _engines[key]


def retrieve(question: str, k: int = 5, *, settings: Settings | None = None) -> list[Passage]:
    """Return the `k` passages that best answer `question`, whatever its language."""
    settings = settings or Settings()
    if not isinstance(k, int) or k < 1 or k > 100:
        raise InvalidQuestionError(f"k must be between 1 and 100, not {k!r}.")
    text = clean_question(question, settings.max_question_chars)
    return get_engine(settings).search(text, k)
