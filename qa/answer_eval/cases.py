"""XQuAD's questions as `AnswerCase`s: each question run as `ask()` runs it against the
single-language, mixed and needle pools (and two pools that cannot answer it), with the candidate
sentences it would quote and the evidence scores the "not found" decision weighs."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from qa.answer import ANSWER_CANDIDATES as CANDIDATES  # as `ask()`
from qa.answer import combined_evidence, evidence_scores
from qa.config import Settings
from qa.quotes import SENTENCE_END, SentenceCandidate, sentence_features

__all__ = ["POOLS", "TUNED_ON", "UNANSWERABLE", "AnswerCase", "answer_cases", "top_visible"]

POOLS = ("single", "mixed", "needle")


@dataclass
class AnswerCase:
    """One question against one pool: the candidate sentences and which of them hold the answer."""

    pool: str
    q_lang: str
    half: str  # "tune" or "test"
    question: str
    candidates: list[SentenceCandidate]
    correct: np.ndarray  # (len(candidates),) bool
    _features: np.ndarray | None = None
    p_lang: str = ""  # where the answer is: the asker's language (single, mixed), P (needle), "" (unanswerable)
    evidence: float = float("nan")  # best `qa.answer.combined_evidence` among the ranked passages
    cosine: float = float("nan")  # best cosine among them (the gate before)
    # (n passages, 2): each ranked passage's `evidence_scores` and its best sentence's (the
    # weight between them is chosen from these, `tune_gate`)
    evidence_rows: np.ndarray | None = None
    previous: float = float("nan")  # best passage `evidence_scores` alone (the gate before `combined_evidence`)

    def features(self, idf) -> np.ndarray:
        """The candidates' `qa.quotes.sentence_features` (with `idf`), computed once per case:
        the variants of the quote ranking scored on it differ only in their weights."""
        if self._features is None:
            self._features = sentence_features(self.question, self.candidates, idf)
        return self._features


# Pools whose question the pool cannot answer: its paragraph removed in every language (the
# rest of its article stays), or its whole article removed.
UNANSWERABLE = ("no paragraph", "no article")
TUNED_ON = ("mixed", "needle")  # a multilingual corpus is both: the answer in the asker's language, or only in another


def top_visible(scores: np.ndarray, groups: np.ndarray, langs: np.ndarray, lang: str, k: int) -> list[list[int]]:
    """The k best translation groups of each question, shown as `qa.retrieval` shows them (the
    member in the asker's language when the group has one), among the passages a pool holds:
    a passage scored -inf is not in the pool, so it is never the member shown. (Folding by the
    full groups would show a needle question the answer in its own language, which the needle
    pool removed.)"""
    from qa.evaluate.metrics import top_k
    from qa.rank import group_members

    members = group_members(groups)
    out = []
    for qi, ranked in enumerate(top_k(scores, k=min(scores.shape[1], 40 * k)).tolist()):
        visible = np.isfinite(scores[qi])
        rows, seen = [], set()
        for row in ranked:
            group = int(groups[row])
            if not visible[row] or group in seen:
                continue
            seen.add(group)
            shown = [m for m in members.get(group, [row]) if langs[m] == lang and visible[m]]
            rows.append(shown[0] if shown else row)
            if len(rows) == k:
                break
        out.append(rows)
    return out


def _ranked_rows(scores: np.ndarray, pipeline, pool, q_lang: str, kind: str, hide: np.ndarray | None) -> list[list[int]]:
    from qa.evaluate.metrics import top_k

    if kind == "single":
        cols = np.flatnonzero(pool.langs == q_lang)
        return cols[top_k(scores[:, cols], CANDIDATES)].tolist()
    if hide is not None:
        scores = np.where(hide, -np.inf, scores)
    return top_visible(scores, pipeline.groups, pool.langs, q_lang, CANDIDATES)


def answer_cases(data, pool, queries: dict[str, np.ndarray], pipeline, settings: Settings) -> list[AnswerCase]:
    """Every question of `data` in the single-language, mixed and needle pools, as `AnswerCase`s.

    `pipeline` is a prepared `qa.evaluate.Pipeline` (its ranking, groups, sentence statistics).
    """
    gold = data.answer_paragraph
    half = np.where(data.article_of[gold] % 2 == 0, "tune", "test")
    by_row = [np.flatnonzero(pool.sentence_owner == row) for row in range(len(pool.texts))]
    cases, unit = [], None
    for q_lang in data.langs:
        raw = queries[q_lang]
        scores = pipeline.scores(raw, data.questions[q_lang], q_lang, pool)
        centered = pipeline.stats.center_query(raw, q_lang, settings.query_centering)
        cosine = raw @ pool.sentence_vectors.T
        z = pipeline.sentence_stats.standardize(
            centered, centered @ pool.sentence_vectors.T, pipeline.sentence_lang_ids
        )
        similarity = raw @ pool.vectors.T
        if unit is None:  # every sentence without its language's mean (translations are found in it)
            norms = np.linalg.norm(pool.sentence_vectors, axis=1, keepdims=True).clip(1e-12)
            unit = pipeline.sentence_stats.centered(pool.sentence_vectors / norms, pipeline.sentence_lang_ids)
        evidence = evidence_scores(raw.T, pool.vectors, pipeline.stats.means[pipeline.lang_ids], settings.evidence_centering).T
        sentence_evidence = _best_sentence_evidence(raw, pool, pipeline, settings.evidence_centering)
        article = data.article_of[pool.para]
        plans = [("single", q_lang, None), ("mixed", q_lang, None)]
        plans += [("needle", p, (pool.langs[None, :] != p) & (pool.para[None, :] == gold[:, None]))
                  for p in data.langs if p != q_lang]  # fmt: skip
        plans += [("no paragraph", "", pool.para[None, :] == gold[:, None]),
                  ("no article", "", article[None, :] == data.article_of[gold][:, None])]  # fmt: skip
        for kind, p_lang, hide in plans:
            tops = _ranked_rows(scores, pipeline, pool, q_lang, kind, hide)
            for qi, rows in enumerate(tops):
                top_cosine = float(similarity[qi, rows].max())
                parts = np.stack([evidence[qi, rows], sentence_evidence[qi, rows]], axis=1)
                best = float(combined_evidence(parts[:, 0], parts[:, 1], settings.evidence_sentence_weight).max())
                gate = {"evidence": best, "cosine": top_cosine, "evidence_rows": parts, "previous": float(parts[:, 0].max())}
                if kind in UNANSWERABLE:  # only the gate is measured on these
                    cases.append(AnswerCase(kind, q_lang, str(half[qi]), data.questions[q_lang][qi], [],
                                            np.zeros(0, bool), p_lang=p_lang, **gate))  # fmt: skip
                    continue
                if best < settings.min_evidence:  # as `ask()`: "not found", nothing quoted
                    rows = []
                candidates, correct = [], []
                for position, row in enumerate(rows):
                    lang = str(pool.langs[row])
                    answer = data.answers[lang][qi]
                    for s in by_row[row].tolist():
                        a, b = pool.sentence_spans[s].tolist()
                        text = pool.texts[row][a:b]
                        candidates.append(
                            SentenceCandidate(position, (row, a), text, lang, float(cosine[qi, s]), float(z[qi, s]),
                                              text[-1:] in SENTENCE_END, unit[s], float(scores[qi, row]))
                        )  # fmt: skip
                        correct.append(bool(answer) and pool.para[row] == gold[qi] and answer in text)
                cases.append(AnswerCase(kind, q_lang, str(half[qi]), data.questions[q_lang][qi],
                                        candidates, np.array(correct, bool), p_lang=p_lang, **gate))  # fmt: skip
    return cases


def _best_sentence_evidence(raw: np.ndarray, pool, pipeline, centering: float) -> np.ndarray:
    """(n questions, n passages): the best sentence `evidence_scores` of each passage, as
    `qa.answer.sentence_evidence` computes it for the passages shown (NaN without sentences)."""
    if pipeline.sentence_stats is None:  # sentences not scored: the passage's score stands alone
        return np.full((len(raw), len(pool.texts)), np.nan)
    means = pipeline.sentence_stats.means[pipeline.sentence_lang_ids]
    scores = evidence_scores(raw.T, pool.sentence_vectors, means, centering).T
    out = np.full((len(raw), len(pool.texts)), -np.inf, np.float32)
    np.maximum.at(out.T, pool.sentence_owner, scores.T)
    return np.where(np.isfinite(out), out, np.nan)
