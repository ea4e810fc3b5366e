"""Passages → a short reply in the asker's language that quotes the evidence and cites it.

No language model writes the reply: it leads with a phrase in the asker's language and quotes,
verbatim, the sentences of the retrieved passages that best match the question (scored one by
one with the same embedding model), each followed by its marker [n]. Quoting beats paraphrasing
here: a person can check every word against the cited article.
"""

from __future__ import annotations

import numpy as np

from qa.config import Settings
from qa.errors import InvalidQuestionError
from qa.models import Answer, Citation, Passage
from qa.retrieval import clean_question, get_engine

__all__ = ["LEAD_IN", "NOT_FOUND", "ask"]

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

SENTENCE_END = set(".!?…。！？」』»\"”'’)")

CITED_PASSAGES = 3  # passages quoted at most
ANSWER_CANDIDATES = 5  # passages considered for quoting
FOLLOW_UP_WORDS = 4  # a question this short, after another one, is read as a follow-up...
FOLLOW_UP_CHARS = 12  # ...or this short, for scripts written without spaces


def _with_history(question: str, history: list[str] | None) -> str:
    """The text to search with: a short follow-up ("and Microsoft?") carries the previous question."""
    words = question.split()
    short = len(words) <= FOLLOW_UP_WORDS if len(words) > 1 else len(question) <= FOLLOW_UP_CHARS
    return f"{history[-1]} {question}" if history and short else question


def _evidence(passage: Passage, query: np.ndarray, index) -> tuple[int, int, float]:
    """The passage's sentence that best matches the question: article offsets and cosine.

    Sentence vectors were computed at index time, so this costs a few dot products.
    """
    row = index.row_of.get((passage.doc_id, passage.start))
    sentences = index.sentences_of(row) if row is not None else []
    if not len(sentences):
        return passage.start, passage.end, passage.similarity
    scores = index.sentence_vectors[sentences] @ query
    # A heading ("Timeline", "Un autre rival ?" aside) matches the topic but states nothing:
    # quote a sentence that ends like one whenever the passage has any.
    text = index.articles[passage.doc_id].text
    finished = np.array([text[b - 1 : b] in SENTENCE_END for _, _, b in index.sentences[sentences].tolist()])
    if finished.any():
        scores = np.where(finished, scores, -np.inf)
    best = int(np.argmax(scores))
    _, start, end = index.sentences[sentences[best]].tolist()
    return start, end, float(scores[best])


def _has_text(earlier: object) -> bool:
    try:
        clean_question(earlier, len(earlier) if isinstance(earlier, str) else 0)
    except InvalidQuestionError:
        return False
    return True


def ask(
    question: str, history: list[str] | None = None, *, settings: Settings | None = None, generate: bool = True
) -> Answer:
    """Answer `question` in its own language, quoting and citing the evidence from the corpus.

    With an LLM server configured (`Settings.llm_url`) and `generate`, the reply is written by it
    and checked sentence by sentence (`qa.generate`); the quotes stay the fallback.
    """
    from qa.lang import detect_language

    settings = settings or Settings()
    text = clean_question(question, settings.max_question_chars)
    # Earlier questions with nothing left once cleaned (only control characters, say) are skipped:
    # refusing them would tell the user that the question they just typed is empty.
    history = [clean_question(h, settings.max_question_chars) for h in (history or []) if _has_text(h)]
    lang = detect_language(text, history=history, corpus_langs=get_engine(settings).index().rows_by_language)
    engine = get_engine(settings)
    query = _with_history(text, history)
    passages = engine.search(query, ANSWER_CANDIDATES, lang=lang)
    relevant = [p for p in passages if p.similarity >= settings.min_similarity]
    if not relevant:
        return Answer(question=text, lang=lang, reply=NOT_FOUND.get(lang, NOT_FOUND["en"]), found=False)

    query_vector = engine.embedder.encode_query(query)
    # The ranking already weighs each passage's best sentence; quote that sentence, in ranking
    # order, once (overlapping passages share sentences). Sentences and article texts come from
    # the version the search read: the live one may have been replaced since (a rebuild that
    # removed a cited article made this a KeyError).
    index = passages.loaded_index
    evidence = [_evidence(p, query_vector, index) for p in relevant]
    best, quoted = [], set()
    for i, passage in enumerate(relevant):
        key = (passage.doc_id, evidence[i][0])
        if key not in quoted:
            quoted.add(key)
            best.append(i)
    best = best[:CITED_PASSAGES]
    citations = []
    articles = index.articles
    for n, i in enumerate(best, 1):
        passage = relevant[i]
        start, end, _ = evidence[i]
        citations.append(
            Citation(
                n=n,
                passage=passage,
                evidence=articles[passage.doc_id].text[start:end],
                evidence_lang=passage.lang,
                evidence_start=start,
                evidence_end=end,
            )
        )
    lines = [LEAD_IN.get(lang, LEAD_IN["en"])]
    open_quote, close_quote = QUOTES.get(lang, ("“", "”"))
    lines += [f"{open_quote}{' '.join(c.evidence.split())}{close_quote} [{c.n}]" for c in citations]
    answer = Answer(question=text, lang=lang, reply="\n".join(lines), citations=citations, found=True)
    if settings.llm_url and generate:
        from qa.generate import generate_answer

        return generate_answer(answer, history, settings=settings, index=index)
    return answer
