"""Passages → a short reply in the asker's language that quotes the evidence and cites it.

No language model writes the reply: it leads with a phrase in the asker's language and quotes,
verbatim, the sentences of the retrieved passages that best match the question (scored one by
one with the same embedding model), each followed by its marker [n]. Quoting beats paraphrasing
here: a person can check every word against the cited article.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

import numpy as np

from qa.config import Settings
from qa.errors import InvalidQuestionError
from qa.i18n import LEAD_IN, NOT_FOUND, QUOTES, WEAK_EVIDENCE
from qa.models import Answer, Citation, Passage, Translation
from qa.quotes import RANKED, SENTENCE_END, SentenceCandidate, select_quotes, translations
from qa.retrieval import clean_question, get_engine

__all__ = [
    "ANSWER_CANDIDATES",
    "CITED_PASSAGES",
    "ask",
    "combined_evidence",
    "evidence_scores",
    "evidence_strength",
    "has_text",
    "index_candidates",
    "passage_evidence",
    "quote_evidence",
    "sentence_evidence",
]

CITED_PASSAGES = 3  # passages quoted at most
# Passages whose sentences compete for the quotes: on the seed questions a sentence holding the
# answer is among those of the top 10 for 0.93 of them, of the top 5 for 0.85.
ANSWER_CANDIDATES = 10
FOLLOW_UP_WORDS = 4  # a question this short, after another one, is read as a follow-up...
FOLLOW_UP_CHARS = 12  # ...or this short, for scripts written without spaces


def evidence_scores(query: np.ndarray, vectors: np.ndarray, lang_means: np.ndarray, centering: float) -> np.ndarray:
    """How well each passage answers: its cosine with the question minus `centering` x the
    question's cosine with the mean passage of its language (`lang_means`, one row per passage).

    The raw cosine is higher when question and passage share a language, whatever they say;
    the question's cosine with a language's mean passage carries that share (and the corpus's
    general topic), so taking it off compares a French passage and a German question on the
    same footing as two German texts. Unlike a standardized score it keeps its meaning in a
    small corpus about one topic, where every passage is close to the mean.
    """
    return vectors @ query - centering * (lang_means @ query)


def combined_evidence(passage: np.ndarray, sentence: np.ndarray, weight: float) -> np.ndarray:
    """The "not found" decision's score of each passage: its `evidence_scores` and its best
    sentence's (the same score over the passage's sentences), weighted 1 : `weight`.

    A passage that answers holds one sentence that says it, and that sentence matches the
    question more closely than the passage around it; an off-topic match is loose at both
    levels. The sentence share lifts answerable questions in every language pair (XQuAD) more
    than the off-topic ones. A passage without sentences (NaN) counts its own score twice.
    """
    sentence = np.where(np.isnan(sentence), passage, sentence)
    return (passage + weight * sentence) / (1.0 + weight)


def evidence_strength(best: float, settings: Settings) -> str:
    """"none" (the corpus does not answer), "weak" or "strong", from the best evidence score."""
    if best < settings.min_evidence:
        return "none"
    return "weak" if best < settings.strong_evidence else "strong"


def passage_evidence(passages: list[Passage], query: np.ndarray, index, settings: Settings) -> np.ndarray:
    """`combined_evidence` of `passages` (the rows shown) in `index`."""
    if not passages:
        return np.zeros(0)
    rows = [index.row_of[(p.doc_id, p.start)] for p in passages]
    vectors = np.asarray(index.passage_vectors[rows], np.float32)
    means = index.lang_stats.means[index.lang_ids[rows]]
    scores = evidence_scores(query, vectors, means, settings.evidence_centering)
    if not settings.evidence_sentence_weight:
        return scores
    best = sentence_evidence(query, [p.lang for p in passages], rows, index, settings.evidence_centering)
    return combined_evidence(scores, best, settings.evidence_sentence_weight)


def sentence_evidence(query: np.ndarray, langs: list[str], rows: list[int], index, centering: float) -> np.ndarray:
    """The best `evidence_scores` among the sentences of each passage `rows` (in `langs`), with
    the sentence statistics' language means; NaN for a passage stored without sentences."""
    stats = index.sentence_stats
    position = {name: i for i, name in enumerate(stats.langs)}
    out = np.full(len(rows), np.nan)
    for i, (row, lang) in enumerate(zip(rows, langs)):
        sentences = index.sentences_of(row)
        if len(sentences):
            mean = stats.means[position[lang]][None, :]  # the same for every sentence of the passage
            out[i] = float(evidence_scores(query, index.sentence_vectors_at(sentences), mean, centering).max())
    return out


def _with_history(question: str, history: list[str] | None) -> str:
    """The text to search with: a short follow-up ("and Microsoft?") carries the previous question."""
    words = question.split()
    short = len(words) <= FOLLOW_UP_WORDS if len(words) > 1 else len(question) <= FOLLOW_UP_CHARS
    return f"{history[-1]} {question}" if history and short else question


def index_candidates(
    passages: list[Passage], query: np.ndarray, lang: str, index, settings: Settings
) -> list[SentenceCandidate]:
    """Every sentence of `passages` (ranked best first) as a candidate quote.

    Sentence vectors were computed at index time, so this costs a few dot products. The dense
    score is standardized against the sentences of each sentence's language, with the question
    centred as the ranking centres it (`qa.rank`).
    """
    # A language the corpus lacks is not centred here (absent_share 0), as before the ranking
    # centred it: the quote weights were chosen on XQuAD, where every asker's language has its
    # own mean, and centring it here was not measured there (seed questions, first quote: 0.804
    # uncentred before, 0.783 with the ranking's centring only, 0.761 with both).
    centered = index.lang_stats.center_query(query[None, :], lang, settings.query_centering, absent_share=0.0)
    stats = index.sentence_stats
    out: list[SentenceCandidate] = []
    for position, passage in enumerate(passages):
        row = index.row_of.get((passage.doc_id, passage.start))
        sentences = index.sentences_of(row) if row is not None else np.zeros(0, np.int64)
        text = index.articles[passage.doc_id].text
        if not len(sentences):  # not split at index time: the passage is quoted whole
            key = (passage.doc_id, passage.start)
            out.append(
                SentenceCandidate(position, key, passage.text, passage.lang, passage.similarity, 0.0, True,
                                  passage_score=passage.score)
            )  # fmt: skip
            continue
        spans = index.sentences[sentences][:, 1:].tolist()
        vectors = np.asarray(index.sentence_vectors[sentences], np.float32)
        cosine = vectors @ query
        lang_ids = stats.lang_ids([passage.lang] * len(spans))
        z = stats.standardize(centered, (vectors @ centered[0])[None, :], lang_ids)[0]
        unit = stats.centered(vectors / np.linalg.norm(vectors, axis=1, keepdims=True).clip(1e-12), lang_ids)
        for (a, b), c, zz, u in zip(spans, cosine.tolist(), z.tolist(), unit):
            out.append(
                SentenceCandidate(
                    passage=position, key=(passage.doc_id, a), text=text[a:b], lang=passage.lang,
                    cosine=c, z=zz, finished=text[b - 1 : b] in SENTENCE_END, centered=u, passage_score=passage.score,
                )
            )
    return out


def lexical_idf(index) -> Callable[[list[str]], np.ndarray]:
    """The index's BM25 idf of question tokens (`select_quotes`'s lexical share)."""
    return index.lexical.idf


def quote_evidence(
    question: str,
    lang: str,
    passages: list[Passage],
    query: np.ndarray,
    index,
    settings: Settings,
    method: str = RANKED,
) -> list[Citation]:
    """The citations of a reply: the sentences of `passages` chosen by `select_quotes`, numbered
    in the order they are quoted, with their exact offsets (and the article's date). A sentence
    that translates one already chosen is shown beside it (`qa.quotes.translations`), not quoted
    again."""
    candidates = index_candidates(passages, query, lang, index, settings)
    # Twice as many as shown: a pair of translations takes one place.
    chosen = select_quotes(question, candidates, 2 * CITED_PASSAGES, idf=lexical_idf(index), method=method)
    citations = []
    for n, (i, other) in enumerate(translations(candidates, chosen, lang)[:CITED_PASSAGES], 1):
        candidate = candidates[i]
        passage = passages[candidate.passage]
        start = candidate.key[1]
        citations.append(
            Citation(
                n=n,
                passage=passage,
                evidence=candidate.text,
                evidence_lang=passage.lang,
                evidence_start=start,
                evidence_end=start + len(candidate.text),
                date=index.articles[passage.doc_id].date,
                evidence_translation=None if other is None else _sentence(candidates[other], passages, index),
            )
        )
    return citations


def _sentence(candidate: SentenceCandidate, passages: list[Passage], index) -> Translation:
    """A candidate sentence as a `Translation` (its text verbatim at start:end of its article)."""
    passage = passages[candidate.passage]
    start = candidate.key[1]
    return Translation(
        text=candidate.text, lang=candidate.lang, doc_id=passage.doc_id, title=passage.title,
        source=passage.source, start=start, end=start + len(candidate.text),
    )  # fmt: skip


def _provenance(citation: Citation) -> str:
    """"(title, date)" of a quote's article: a reader sees where and when it was written."""
    title = " ".join(citation.passage.title.split())
    return f"({title}, {citation.date})" if citation.date else f"({title})"


def has_text(earlier: object) -> bool:
    """Whether `earlier`, an item of a conversation's history, is one `clean_question` accepts
    (text with letters or digits, whatever its length): the items kept as context."""
    try:
        clean_question(earlier, len(earlier) if isinstance(earlier, str) else 0)
    except InvalidQuestionError:
        return False
    return True


def ask(
    question: str,
    history: list[str] | None = None,
    *,
    settings: Settings | None = None,
    quotes: str = RANKED,
    generate: bool = True,
    langs: list[str] | str | None = None,
    since: str | dt.date | None = None,
    until: str | dt.date | None = None,
    sources: list[str] | str | None = None,
) -> Answer:
    """Answer `question` in its own language, quoting and citing the evidence from the corpus.

    `quotes` picks how the quoted sentences are chosen (`qa.quotes`; `qa eval` compares them).
    With an LLM server configured (`Settings.llm_url`) and `generate`, the reply is written by it
    and checked sentence by sentence (`qa.generate`); the quotes stay the fallback. `langs`,
    `since`, `until`, `sources`: the evidence's filters, as for `qa.retrieval.retrieve`.
    """
    from qa.filters import make_filters
    from qa.lang import detect_language

    settings = settings or Settings()
    filters = make_filters(langs=langs, since=since, until=until, sources=sources)
    text = clean_question(question, settings.max_question_chars)
    # Earlier questions with nothing left once cleaned (only control characters, say) are skipped:
    # refusing them would tell the user that the question they just typed is empty.
    history = [clean_question(h, settings.max_question_chars) for h in (history or []) if has_text(h)]
    lang = detect_language(
        text,
        history=history,
        corpus_langs=get_engine(settings).index().rows_by_language,
        cache_dir=settings.cache_dir,
    )
    engine = get_engine(settings)
    query = _with_history(text, history)
    passages = engine.search(query, ANSWER_CANDIDATES, lang=lang, filters=filters)
    query_vector = engine.embedder.encode_query(query)
    # Sentences and article texts come from the version the search read: the live one may have
    # been replaced since (a rebuild that removed a cited article made this a KeyError).
    index = passages.loaded_index
    evidence = passage_evidence(passages, query_vector, index, settings)
    strength = evidence_strength(float(evidence.max()) if len(evidence) else -np.inf, settings)
    if strength == "none":
        return Answer(question=text, lang=lang, reply=NOT_FOUND.get(lang, NOT_FOUND["en"]), found=False)

    # Every candidate passage competes: the sentence ranking (and its gap) decides what is
    # quoted. (Dropping passages under a threshold first cost the seed questions' any-quote rate.)
    citations = quote_evidence(query, lang, passages, query_vector, index, settings, method=quotes)
    weak = strength == "weak"
    lines = [(WEAK_EVIDENCE if weak else LEAD_IN).get(lang, (WEAK_EVIDENCE if weak else LEAD_IN)["en"])]
    open_quote, close_quote = QUOTES.get(lang, ("“", "”"))
    for c in citations:
        lines.append(f"{open_quote}{' '.join(c.evidence.split())}{close_quote} [{c.n}] {_provenance(c)}")
        if c.evidence_translation is not None:  # the same sentence in another article's language
            t = c.evidence_translation
            lines.append(f"↳ ({t.lang}) {open_quote}{' '.join(t.text.split())}{close_quote} ({' '.join(t.title.split())})")
    answer = Answer(
        question=text, lang=lang, reply="\n".join(lines), citations=citations, found=True, weak_evidence=weak
    )
    if settings.llm_url and generate:
        from qa.generate import generate_answer

        return generate_answer(answer, history, settings=settings, index=index)
    return answer
