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
from qa.models import Answer, Citation, Passage
from qa.quotes import RANKED, SENTENCE_END, SentenceCandidate, select_quotes
from qa.retrieval import clean_question, get_engine

__all__ = ["ANSWER_CANDIDATES", "CITED_PASSAGES", "LEAD_IN", "NOT_FOUND", "ask", "index_candidates", "quote_evidence"]

# "According to the sources:" in the languages we answer in; English for the rest.
LEAD_IN = {
    "en": "According to the sources:",
    "fr": "D'après les sources :",
    "de": "Laut den Quellen:",
    "es": "Según las fuentes:",
    "it": "Secondo le fonti:",
    "pt": "Segundo as fontes:",
    "nl": "Volgens de bronnen:",
    "ja": "資料によると：",
    "zh": "根据资料：",
    "ko": "자료에 따르면:",
    "ru": "Согласно источникам:",
    "ar": "وفقًا للمصادر:",
    "hi": "स्रोतों के अनुसार:",
    "tr": "Kaynaklara göre:",
    "pl": "Według źródeł:",
    "el": "Σύμφωνα με τις πηγές:",
    "vi": "Theo các nguồn:",
    "th": "ตามแหล่งข้อมูล:",
    "ro": "Conform surselor:",
}

NOT_FOUND = {
    "en": "I could not find an answer to this question in the articles I have.",
    "fr": "Je n'ai pas trouvé de réponse à cette question dans les articles dont je dispose.",
    "de": "Ich habe in den vorhandenen Artikeln keine Antwort auf diese Frage gefunden.",
    "es": "No encontré una respuesta a esta pregunta en los artículos que tengo.",
    "it": "Non ho trovato una risposta a questa domanda negli articoli che ho.",
    "pt": "Não encontrei uma resposta para esta pergunta nos artigos que tenho.",
    "nl": "Ik heb in de artikelen die ik heb geen antwoord op deze vraag gevonden.",
    "ja": "手元の記事には、この質問への答えが見つかりませんでした。",
    "zh": "在现有的文章中没有找到这个问题的答案。",
    "ko": "가지고 있는 기사에서 이 질문에 대한 답을 찾지 못했습니다.",
    "ru": "В имеющихся статьях я не нашёл ответа на этот вопрос.",
    "ar": "لم أجد إجابة على هذا السؤال في المقالات المتوفرة لدي.",
    "hi": "मेरे पास मौजूद लेखों में इस प्रश्न का उत्तर नहीं मिला।",
    "tr": "Elimdeki makalelerde bu sorunun cevabını bulamadım.",
    "pl": "W dostępnych artykułach nie znalazłem odpowiedzi na to pytanie.",
    "el": "Δεν βρήκα απάντηση σε αυτή την ερώτηση στα άρθρα που έχω.",
    "vi": "Tôi không tìm thấy câu trả lời cho câu hỏi này trong các bài viết hiện có.",
    "th": "ไม่พบคำตอบสำหรับคำถามนี้ในบทความที่มีอยู่",
    "ro": "Nu am găsit un răspuns la această întrebare în articolele pe care le am.",
}

QUOTES = {
    "fr": ("« ", " »"),
    "es": ("«", "»"),
    "it": ("«", "»"),
    "pt": ("«", "»"),
    "ru": ("«", "»"),
    "de": ("„", "“"),
    "ja": ("「", "」"),
    "zh": ("「", "」"),
    "ko": ("“", "”"),
}

CITED_PASSAGES = 3  # passages quoted at most
# Passages whose sentences compete for the quotes: on the seed questions a sentence holding the
# answer is among those of the top 10 for 0.93 of them, of the top 5 for 0.85.
ANSWER_CANDIDATES = 10
FOLLOW_UP_WORDS = 4  # a question this short, after another one, is read as a follow-up...
FOLLOW_UP_CHARS = 12  # ...or this short, for scripts written without spaces


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
    centered = index.lang_stats.center_query(query[None, :], lang, settings.query_centering)
    stats = index.sentence_stats
    out: list[SentenceCandidate] = []
    for position, passage in enumerate(passages):
        row = index.row_of.get((passage.doc_id, passage.start))
        sentences = index.sentences_of(row) if row is not None else np.zeros(0, np.int64)
        text = index.articles[passage.doc_id].text
        if not len(sentences):  # not split at index time: the passage is quoted whole
            key = (passage.doc_id, passage.start)
            out.append(SentenceCandidate(position, key, passage.text, passage.lang, passage.similarity, 0.0, True))
            continue
        spans = index.sentences[sentences][:, 1:].tolist()
        vectors = np.asarray(index.sentence_vectors[sentences], np.float32)
        cosine = vectors @ query
        z = stats.standardize(centered, (vectors @ centered[0])[None, :], stats.lang_ids([passage.lang] * len(spans)))[0]
        for (a, b), c, zz in zip(spans, cosine.tolist(), z.tolist()):
            out.append(
                SentenceCandidate(
                    passage=position, key=(passage.doc_id, a), text=text[a:b], lang=passage.lang,
                    cosine=c, z=zz, finished=text[b - 1 : b] in SENTENCE_END,
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
    in the order they are quoted, with their exact offsets (and the article's date)."""
    candidates = index_candidates(passages, query, lang, index, settings)
    chosen = select_quotes(question, candidates, CITED_PASSAGES, idf=lexical_idf(index), method=method)
    citations = []
    for n, i in enumerate(chosen, 1):
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
            )
        )
    return citations


def _provenance(citation: Citation) -> str:
    """"(title, date)" of a quote's article: a reader sees where and when it was written."""
    title = " ".join(citation.passage.title.split())
    return f"({title}, {citation.date})" if citation.date else f"({title})"


def _has_text(earlier: object) -> bool:
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
    history = [clean_question(h, settings.max_question_chars) for h in (history or []) if _has_text(h)]
    lang = detect_language(text, history=history, corpus_langs=get_engine(settings).index().rows_by_language)
    engine = get_engine(settings)
    query = _with_history(text, history)
    passages = engine.search(query, ANSWER_CANDIDATES, lang=lang, filters=filters)
    relevant = [p for p in passages if p.similarity >= settings.min_similarity]
    if not relevant:
        return Answer(question=text, lang=lang, reply=NOT_FOUND.get(lang, NOT_FOUND["en"]), found=False)

    query_vector = engine.embedder.encode_query(query)
    # Sentences and article texts come from the version the search read: the live one may have
    # been replaced since (a rebuild that removed a cited article made this a KeyError).
    index = passages.loaded_index
    citations = quote_evidence(query, lang, relevant, query_vector, index, settings, method=quotes)
    lines = [LEAD_IN.get(lang, LEAD_IN["en"])]
    open_quote, close_quote = QUOTES.get(lang, ("“", "”"))
    lines += [f"{open_quote}{' '.join(c.evidence.split())}{close_quote} [{c.n}] {_provenance(c)}" for c in citations]
    answer = Answer(question=text, lang=lang, reply="\n".join(lines), citations=citations, found=True)
    if settings.llm_url and generate:
        from qa.generate import generate_answer

        return generate_answer(answer, history, settings=settings, index=index)
    return answer
