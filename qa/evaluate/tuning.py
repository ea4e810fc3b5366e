"""Weights chosen on the tune half: the fusion weights of `qa.rank.fuse` (`tune_fusion`) and the
centring strength of a question language the corpus lacks (`absent_language_centering`)."""

from __future__ import annotations

import numpy as np

from qa.evaluate.metrics import Report, asked_rows, rank_metrics, score_language, top_k, top_k_grouped
from qa.evaluate.scoring import Pipeline, Pool
from qa.rank import ABSENT_LANGUAGE_CENTERING, FusionWeights
from qa.xquad import XQuAD

__all__ = [
    "ABSENT_GRID",
    "LEXICAL_GRID",
    "SENTENCE_GRID",
    "TUNE_SLACK",
    "absent_language_centering",
    "tune_fusion",
]

LEXICAL_GRID = (0.0, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0)
SENTENCE_GRID = (0.0, 0.5, 0.75, 1.0, 1.25, 1.5)


TUNE_SLACK = 0.0  # how much same-language R@1 (and own-language top hit) a weight may lose on the tune half


def tune_fusion(
    data: XQuAD, pool: Pool, queries: dict[str, np.ndarray], pipeline: Pipeline, select: np.ndarray
) -> tuple[FusionWeights, dict[tuple[float, float], dict[str, float]]]:
    """The lexical and sentence weights of `qa.rank.fuse` chosen on the questions `select` (the
    tune half), and the summary of every pair of the grid.

    Chosen: the best needle R@1 (the answer only in another language) among the weights that keep
    same-language R@1 and the top hit in the asker's language within `TUNE_SLACK` of the shipped
    weights' (the targets say neither may drop); ties go to the pair nearest the shipped one.
    Each signal is computed once per question language; only the fusion is repeated per pair.
    """
    pipeline.every_signal = True
    pipeline.prepare(pool)
    signals = {}
    for q_lang in data.langs:
        rows = asked_rows(data, q_lang, select)
        if not len(rows):
            continue
        texts = [data.questions[q_lang][i] for i in rows]
        signals[q_lang] = (rows, pipeline.components(queries[q_lang][rows], texts, q_lang, pool))
    shipped = pipeline.weights
    grid: dict[tuple[float, float], dict[str, float]] = {}
    for key in sorted({(a, b) for a in LEXICAL_GRID for b in SENTENCE_GRID} | {(shipped.lexical, shipped.sentence)}):
        weights = FusionWeights(*key, shipped.sentence_candidates)
        report = Report()
        for q_lang, (rows, parts) in signals.items():
            scores = pipeline.fused(*parts, weights=weights)
            score_language(report, data, pool, scores, q_lang, rows, pipeline.groups)
        grid[key] = report.summary()
    base = grid[(shipped.lexical, shipped.sentence)]
    allowed = [
        key for key, m in grid.items()
        if m["same R@1"] >= base["same R@1"] - TUNE_SLACK
        and m["mixed own-lang top1"] >= base["mixed own-lang top1"] - TUNE_SLACK
    ]

    def rank(key):
        m = grid[key]
        return (round(m.get("needle R@1", 0.0), 4), round(m["cross R@1"], 4),
                -abs(key[0] - shipped.lexical) - abs(key[1] - shipped.sentence))  # fmt: skip

    return FusionWeights(*max(allowed, key=rank), shipped.sentence_candidates), grid


# Shares of the centring strength tried for a question language the corpus lacks
# (`qa.rank.ABSENT_LANGUAGE_CENTERING`).
ABSENT_GRID = (0.0, 0.5, 1.0, 1.5)


def absent_language_centering(
    data: XQuAD, pool: Pool, queries: dict[str, np.ndarray], pipeline: Pipeline, split: dict[str, np.ndarray]
) -> dict:
    """Questions asked in a language the corpus lacks, as `LanguageStats.center_query` centres them.

    Each question language's own question mean is withheld (the others' kept), so its questions
    are centred on the mean of the others' with each share of `ABSENT_GRID`, and scored in the
    one-language pools of the other languages ("cross R@1") and in the mixed pool without their
    language ("mixed R@1"). Returns, per share and half, those means, the test half's cross R@1
    per language pair, and the share chosen on the tune half (best cross R@1; ties: the smaller).
    """
    stats = pipeline.stats
    every = stats.query_means
    grid: dict[float, dict] = {}
    try:
        for share in ABSENT_GRID:
            cross: dict[str, dict] = {"tune": {}, "test": {}}
            mixed: dict[str, list] = {"tune": [], "test": []}
            for q_lang in data.langs:
                rows = asked_rows(data, q_lang, None)
                stats.query_means = {k: m for k, m in every.items() if k != q_lang}
                centered = stats.center_query(queries[q_lang][rows], q_lang, pipeline.settings.query_centering, share)
                stats.query_means = {}  # centred above: `components` must leave it as it is
                texts = [data.questions[q_lang][i] for i in rows]
                scores = pipeline.fused(*pipeline.components(centered, texts, q_lang, pool))
                gold = data.answer_paragraph[rows]
                for half, select in split.items():
                    mine = select[rows]
                    for p_lang in data.langs:
                        cols = np.flatnonzero(pool.langs == p_lang)
                        if p_lang != q_lang and mine.any():
                            top = top_k(scores[mine][:, cols])
                            cross[half][f"{q_lang}->{p_lang}"] = rank_metrics(pool.para[cols][top], gold[mine]).r1
                    masked = np.where(pool.langs[None, :] == q_lang, -np.inf, scores[mine])
                    top = top_k_grouped(masked, pipeline.groups, pool.langs, q_lang)
                    mixed[half].append(rank_metrics(pool.para[top], gold[mine]).r1)
            grid[share] = {
                half: {"cross R@1": float(np.mean(list(cross[half].values()))), "mixed R@1": float(np.mean(mixed[half]))}
                for half in cross
            } | {"test per pair": cross["test"]}
    finally:
        stats.query_means = every
    chosen = max(ABSENT_GRID, key=lambda share: (round(grid[share]["tune"]["cross R@1"], 4), -share))
    return {"grid": grid, "chosen on the tune half": chosen, "shipped": ABSENT_LANGUAGE_CENTERING}
