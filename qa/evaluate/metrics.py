"""Recall and MRR of a scorer's ranking over the single, mixed and needle pools (`Report`), and
the two halves of a set's questions: "tune", where weights are chosen, and "test", where they are
reported."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from qa.evaluate.scoring import Pool, Scorer
from qa.rank import fold_groups, group_members
from qa.xquad import XQuAD

__all__ = [
    "TOP",
    "Metrics",
    "Report",
    "asked_rows",
    "evaluate",
    "halves",
    "rank_metrics",
    "score_language",
    "top_k",
    "top_k_grouped",
]

TOP = 10


@dataclass
class Metrics:
    r1: float
    r5: float
    mrr: float
    own_lang_top1: float | None = None
    n: int = 0

    def as_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if v is not None}


def rank_metrics(top_para: np.ndarray, gold: np.ndarray, own: np.ndarray | None = None) -> Metrics:
    """Recall@1, recall@5 and MRR@10 of ranked paragraph ids `top_para` (one row per question)
    against the `gold` paragraphs; `own`: whether each top hit is in the asker's language."""
    hits = top_para == gold[:, None]
    first = np.where(hits.any(axis=1), hits.argmax(axis=1), -1)
    mrr = np.where(first >= 0, 1.0 / (np.maximum(first, 0) + 1), 0.0)
    return Metrics(
        r1=float(hits[:, 0].mean()),
        r5=float(hits[:, :5].any(axis=1).mean()),
        mrr=float(mrr.mean()),
        own_lang_top1=None if own is None else float(own.mean()),
        n=len(gold),
    )


def top_k_grouped(scores: np.ndarray, groups: np.ndarray, langs: np.ndarray, lang: str, k: int = TOP) -> np.ndarray:
    """Like `top_k`, but one hit per translation group, folded as `qa.retrieval` folds them."""
    members = group_members(groups)
    out = np.zeros((len(scores), k), dtype=np.int64)
    for qi, ranked in enumerate(top_k(scores, k=min(scores.shape[1], 40 * k))):
        for n, (_, lead) in enumerate(fold_groups(ranked, groups, members, langs, lang, k)):
            out[qi, n] = lead
    return out


def top_k(scores: np.ndarray, k: int = TOP) -> np.ndarray:
    """The columns of the `k` highest scores of each row, best first."""
    k = min(k, scores.shape[1])
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    order = np.take_along_axis(scores, part, axis=1).argsort(axis=1)[:, ::-1]
    return np.take_along_axis(part, order, axis=1)


@dataclass
class Report:
    single: dict[tuple[str, str], Metrics] = field(default_factory=dict)
    mixed: dict[str, Metrics] = field(default_factory=dict)
    needle: dict[tuple[str, str], Metrics] = field(default_factory=dict)
    distinct_top5: dict[str, float] = field(default_factory=dict)

    def summary(self) -> dict[str, float]:
        same = [m for (q, p), m in self.single.items() if q == p]
        cross = [m for (q, p), m in self.single.items() if q != p]
        out = {}
        for name, group in (("same", same), ("cross", cross)):
            out[f"{name} R@1"] = float(np.mean([m.r1 for m in group])) if group else float("nan")
            out[f"{name} R@5"] = float(np.mean([m.r5 for m in group])) if group else float("nan")
            out[f"{name} MRR@10"] = float(np.mean([m.mrr for m in group])) if group else float("nan")
        mixed = list(self.mixed.values())
        out["mixed R@1"] = float(np.mean([m.r1 for m in mixed]))
        out["mixed R@5"] = float(np.mean([m.r5 for m in mixed]))
        out["mixed own-lang top1"] = float(np.mean([m.own_lang_top1 for m in mixed]))
        out["mixed distinct top5"] = float(np.mean(list(self.distinct_top5.values())))
        needle = list(self.needle.values())
        if needle:
            out["needle R@1"] = float(np.mean([m.r1 for m in needle]))
            out["needle R@5"] = float(np.mean([m.r5 for m in needle]))
            out["needle MRR@10"] = float(np.mean([m.mrr for m in needle]))
        return out

    def per_pair(self) -> dict:
        """The metrics per language pair (single, needle) and per question language (mixed)."""
        return {
            "single": {f"{q}->{p}": m.as_dict() for (q, p), m in self.single.items()},
            "needle": {f"{q}->{p}": m.as_dict() for (q, p), m in self.needle.items()},
            "mixed": {q: m.as_dict() | {"distinct top5": self.distinct_top5[q]} for q, m in self.mixed.items()},
        }


def evaluate(
    data: XQuAD, pool: Pool, queries: dict[str, np.ndarray], scorer: Scorer, select: np.ndarray | None = None
) -> Report:
    """Run one scorer over every pool; vectors come precomputed (and cached) from the caller.

    `select`: a boolean mask of the questions to score (one half of the articles, see `halves`);
    the pool is always every paragraph.
    """
    scorer.prepare(pool)
    report = Report()
    for q_lang in data.langs:
        rows = asked_rows(data, q_lang, select)
        if not len(rows):
            continue
        texts = [data.questions[q_lang][i] for i in rows]
        scores = scorer.scores(queries[q_lang][rows], texts, q_lang, pool)
        score_language(report, data, pool, scores, q_lang, rows, getattr(scorer, "groups", None))
    return report


def asked_rows(data: XQuAD, q_lang: str, select: np.ndarray | None) -> np.ndarray:
    """Positions of the questions asked in `q_lang` (and selected)."""
    asked = np.array([q is not None for q in data.questions[q_lang]], dtype=bool)
    if select is not None:
        asked &= select
    return np.flatnonzero(asked)


def score_language(
    report: Report, data: XQuAD, pool: Pool, scores: np.ndarray, q_lang: str, rows: np.ndarray, groups=None
) -> None:
    """Add to `report` the single, mixed and needle metrics of the questions `rows` asked in
    `q_lang`, given their scores against every passage of the pool."""
    gold = data.answer_paragraph[rows]
    for p_lang in data.langs:
        cols = np.flatnonzero(pool.langs == p_lang)
        has = np.isin(gold, pool.para[cols])  # a set that is not parallel: only where P holds the answer
        if has.any():
            top = top_k(scores[has][:, cols])
            report.single[(q_lang, p_lang)] = rank_metrics(pool.para[cols][top], gold[has])
    top = top_k(scores) if groups is None else top_k_grouped(scores, groups, pool.langs, q_lang)
    report.mixed[q_lang] = rank_metrics(pool.para[top], gold, own=pool.langs[top[:, 0]] == q_lang)
    report.distinct_top5[q_lang] = float(np.mean([len(set(pool.para[row[:5]])) for row in top]))
    for p_lang in data.langs:
        if p_lang == q_lang:
            continue
        has = np.isin(gold, pool.para[pool.langs == p_lang])
        if not has.any():
            continue
        # Hide the answer's translations in every language but P.
        masked = scores[has]
        hide = (pool.langs[None, :] != p_lang) & (pool.para[None, :] == gold[has][:, None])
        masked = np.where(hide, -np.inf, masked)
        report.needle[(q_lang, p_lang)] = rank_metrics(pool.para[top_k(masked)], gold[has])


def halves(data: XQuAD) -> dict[str, np.ndarray]:
    """Question masks of the two halves, split by article so that no paragraph is in both:
    "tune" (articles at even positions in the files), where weights are chosen, and "test" (odd),
    where they are reported. A set of one article is split by paragraph the same way."""
    unit = data.article_of[data.answer_paragraph]
    if len(np.unique(unit)) < 2:  # a single article: split its paragraphs instead
        unit = data.answer_paragraph
    even = unit % 2 == 0
    return {"tune": even, "test": ~even}
