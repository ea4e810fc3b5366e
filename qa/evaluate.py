"""`qa eval`: retrieval quality on XQuAD (or any SQuAD-format set, `qa.xquad.load_squad`), the
bare model and the full pipeline side by side, held out: the fusion weights are chosen on the
articles at even positions and every reported figure is the odd ones' (`halves`, `tune_fusion`).

Pools (a "hit" is the paragraph that answers the question):
- single: questions in Q against the 240 paragraphs of language P, for every Q × P;
- mixed: all paragraphs of all languages at once; a hit is the right paragraph in any language;
- needle: the right paragraph exists only in language P, every other paragraph in every
  language is present; the question is in Q ≠ P. This is the case of a real multilingual corpus
  where the answer was only ever written in one language.
"""

from __future__ import annotations

import io
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from qa.config import Settings
from qa.lexical import LexicalIndex
from qa.rank import (
    ABSENT_LANGUAGE_CENTERING,
    FusionWeights,
    LanguageStats,
    best_sentence_scores,
    fold_groups,
    fuse,
    group_members,
    lexical_by_language,
    translation_groups,
)
from qa.xquad import EmbeddingCache, XQuAD

__all__ = [
    "ABSENT_GRID",
    "BareModel",
    "EvalRun",
    "Pipeline",
    "Pool",
    "Scorer",
    "absent_language_centering",
    "embed_data",
    "evaluate",
    "evaluate_corpus_questions",
    "explain_corpus_misses",
    "format_comparison",
    "format_corpus_hits",
    "format_matrix",
    "format_pairs",
    "format_run",
    "halves",
    "run",
    "score_language",
    "tune_fusion",
]

TOP = 10


@dataclass
class Pool:
    """Every paragraph of every language: vectors, languages and paragraph ids."""

    vectors: np.ndarray  # (n, d)
    langs: np.ndarray  # (n,) language codes
    para: np.ndarray  # (n,) paragraph index (the same for all translations)
    texts: list[str]
    sentence_vectors: np.ndarray | None = None  # (m, d), every sentence of every passage
    sentence_owner: np.ndarray | None = None  # (m,) passage of each sentence
    # What `Pipeline.prepare` computes from the pool, given instead (a built index's own: see
    # `from_index`); None: computed.
    stats: LanguageStats | None = None
    sentence_stats: LanguageStats | None = None
    groups: np.ndarray | None = None
    lexical: LexicalIndex | None = None
    sentence_spans: np.ndarray | None = None  # (m, 2) start and end of each sentence in its passage

    @classmethod
    def from_index(cls, index) -> Pool:
        """The passages of a built index (`qa.index.load.Index`) as a pool, with its statistics,
        translation groups, lexical index and the sentence vectors the engine reads: `Pipeline`
        over it ranks as `qa.retrieval.Engine` over the index (tests/test_parity.py)."""
        sentence_vectors = np.asarray(index.sentence_vectors[index.sentence_member], dtype=np.float32)
        return cls(
            index.vectors(), index.langs, np.arange(len(index)), [c.text for c in index.chunks],
            sentence_vectors=sentence_vectors, sentence_owner=index.sentence_owner,
            stats=index.lang_stats, sentence_stats=index.sentence_stats, groups=index.groups,
            lexical=index.lexical,
        )

    @classmethod
    def from_xquad(cls, data: XQuAD, vectors: dict[str, np.ndarray], embed_sentences=None) -> Pool:
        """The pool of every language; `embed_sentences(texts)` adds the sentence vectors."""
        from qa.chunk import split_sentences

        # (lang, paragraph) of every paragraph that exists: all of them when the set is parallel
        where = [(lang, i) for lang in data.langs for i, t in enumerate(data.paragraphs[lang]) if t is not None]
        langs = np.array([lang for lang, _ in where])
        para = np.array([i for _, i in where], dtype=np.int64)
        texts = [data.paragraphs[lang][i] for lang, i in where]
        pool = cls(np.concatenate([vectors[lang][para[langs == lang]] for lang in data.langs]), langs, para, texts)
        if embed_sentences is not None:
            owner, sentences, spans = [], [], []
            for row, text in enumerate(texts):
                for a, b in split_sentences(text):
                    owner.append(row)
                    sentences.append(text[a:b])
                    spans.append((a, b))
            pool.sentence_vectors = embed_sentences(sentences)
            pool.sentence_owner = np.array(owner, dtype=np.int64)
            pool.sentence_spans = np.array(spans, dtype=np.int64).reshape(-1, 2)
        return pool


class Scorer:
    """Scores questions of one language against every passage of the pool."""

    name = "scorer"

    def prepare(self, pool: Pool) -> None:  # index-time work
        pass

    def scores(self, queries: np.ndarray, texts: list[str], lang: str, pool: Pool) -> np.ndarray:
        raise NotImplementedError


class BareModel(Scorer):
    """The baseline: cosine similarity of the model's embeddings."""

    name = "bare model"

    def scores(self, queries, texts, lang, pool):
        return queries @ pool.vectors.T


class Pipeline(Scorer):
    """The scoring of `qa.retrieve` (`qa.retrieval.Engine.score` and the grouping of `Engine.search`),
    applied to a whole pool at once, with the same settings and the same functions."""

    name = "pipeline"

    def __init__(self, settings: Settings, query_means: dict[str, np.ndarray], weights: FusionWeights | None = None):
        self.settings = settings
        self.query_means = query_means
        self.weights = weights or FusionWeights.from_settings(settings)
        self.every_signal = False  # True: `prepare` readies the signals a weight of 0 turns off (tuning)

    def prepare(self, pool):
        if pool.stats is not None:
            self.stats = pool.stats
        else:
            self.stats = LanguageStats.fit(pool.vectors, pool.langs)
            self.stats.query_means = self.query_means
        self.lang_ids = self.stats.lang_ids(pool.langs)
        if pool.groups is not None:
            self.groups = pool.groups
        else:
            centered = self.stats.centered(pool.vectors, self.lang_ids)
            self.groups = translation_groups(centered, pool.langs, self.settings.group_threshold)
        self.lexical = None
        if self.weights.lexical or self.every_signal:
            self.lexical = pool.lexical if pool.lexical is not None else LexicalIndex.build(pool.texts)
        if (self.weights.sentence or self.every_signal) and pool.sentence_vectors is not None:
            sentence_langs = pool.langs[pool.sentence_owner]
            given = pool.sentence_stats
            self.sentence_stats = given if given is not None else LanguageStats.fit(pool.sentence_vectors, sentence_langs)
            self.sentence_lang_ids = self.sentence_stats.lang_ids(sentence_langs)
        else:
            self.sentence_stats = None

    def components(self, queries, texts, lang, pool) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
        """The three signals `fuse` weighs, for every passage: the standardized dense score, BM25
        scaled per language (None when off) and each passage's best sentence score (None when off)."""
        queries = self.stats.center_query(queries, lang, self.settings.query_centering)
        dense = self.stats.standardize(queries, queries @ pool.vectors.T, self.lang_ids)
        lexical = None
        if self.lexical is not None:
            lexical = np.stack([self.lexical.scores(t) for t in texts]) if texts else np.zeros((0, len(pool.texts)))
            lexical = lexical_by_language(lexical, self.lang_ids, len(self.stats.langs))
        sentences = None
        if self.sentence_stats is not None:  # every passage's (the engine's mask only saves work)
            sentences = best_sentence_scores(
                queries, queries @ pool.sentence_vectors.T, pool.sentence_owner, len(pool.vectors),
                self.sentence_stats, self.sentence_lang_ids,
            )
        return dense, lexical, sentences

    def scores(self, queries, texts, lang, pool):
        dense, lexical, sentences = self.components(queries, texts, lang, pool)
        return self.fused(dense, lexical, sentences)

    def fused(self, dense, lexical, sentences, weights: FusionWeights | None = None) -> np.ndarray:
        """The engine's fusion (`qa.rank.fuse`) of `components`: only each question's
        `sentence_candidates` best passages get their sentence score; the others rank after them,
        in their first-stage order. `weights`: these instead of the pipeline's own."""
        weights = weights or self.weights
        return fuse(dense, lexical, None if sentences is None else (lambda mask: sentences), weights)[0]


@dataclass
class Metrics:
    r1: float
    r5: float
    mrr: float
    own_lang_top1: float | None = None
    n: int = 0

    def as_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if v is not None}


def _metrics(top_para: np.ndarray, gold: np.ndarray, own: np.ndarray | None = None) -> Metrics:
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


def _top_grouped(scores: np.ndarray, groups: np.ndarray, langs: np.ndarray, lang: str, k: int = TOP) -> np.ndarray:
    """Like _top, but one hit per translation group, folded as `qa.retrieval` folds them."""
    members = group_members(groups)
    out = np.zeros((len(scores), k), dtype=np.int64)
    for qi, ranked in enumerate(_top(scores, k=min(scores.shape[1], 40 * k))):
        for n, (_, lead) in enumerate(fold_groups(ranked, groups, members, langs, lang, k)):
            out[qi, n] = lead
    return out


def _top(scores: np.ndarray, k: int = TOP) -> np.ndarray:
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
        rows = _asked(data, q_lang, select)
        if not len(rows):
            continue
        texts = [data.questions[q_lang][i] for i in rows]
        scores = scorer.scores(queries[q_lang][rows], texts, q_lang, pool)
        score_language(report, data, pool, scores, q_lang, rows, getattr(scorer, "groups", None))
    return report


def _asked(data: XQuAD, q_lang: str, select: np.ndarray | None) -> np.ndarray:
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
            top = _top(scores[has][:, cols])
            report.single[(q_lang, p_lang)] = _metrics(pool.para[cols][top], gold[has])
    top = _top(scores) if groups is None else _top_grouped(scores, groups, pool.langs, q_lang)
    report.mixed[q_lang] = _metrics(pool.para[top], gold, own=pool.langs[top[:, 0]] == q_lang)
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
        report.needle[(q_lang, p_lang)] = _metrics(pool.para[_top(masked)], gold[has])


def halves(data: XQuAD) -> dict[str, np.ndarray]:
    """Question masks of the two halves, split by article so that no paragraph is in both:
    "tune" (articles at even positions in the files), where weights are chosen, and "test" (odd),
    where they are reported. A set of one article is split by paragraph the same way."""
    unit = data.article_of[data.answer_paragraph]
    if len(np.unique(unit)) < 2:  # a single article: split its paragraphs instead
        unit = data.answer_paragraph
    even = unit % 2 == 0
    return {"tune": even, "test": ~even}


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
        rows = _asked(data, q_lang, select)
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
                rows = _asked(data, q_lang, None)
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
                            top = _top(scores[mine][:, cols])
                            cross[half][f"{q_lang}->{p_lang}"] = _metrics(pool.para[cols][top], gold[mine]).r1
                    masked = np.where(pool.langs[None, :] == q_lang, -np.inf, scores[mine])
                    top = _top_grouped(masked, pipeline.groups, pool.langs, q_lang)
                    mixed[half].append(_metrics(pool.para[top], gold[mine]).r1)
            grid[share] = {
                half: {"cross R@1": float(np.mean(list(cross[half].values()))), "mixed R@1": float(np.mean(mixed[half]))}
                for half in cross
            } | {"test per pair": cross["test"]}
    finally:
        stats.query_means = every
    chosen = max(ABSENT_GRID, key=lambda share: (round(grid[share]["tune"]["cross R@1"], 4), -share))
    return {"grid": grid, "chosen on the tune half": chosen, "shipped": ABSENT_LANGUAGE_CENTERING}


def _format_absent(absent: dict) -> str:
    """`absent_language_centering`'s result as text."""
    lines = [
        (
            "\nQuestions in a language the corpus lacks (own question mean withheld), centred on the others' "
            f"mean x share: chosen on the tune half {absent['chosen on the tune half']}, shipped "
            f"(qa.rank.ABSENT_LANGUAGE_CENTERING) {absent['shipped']}"
        ),
        "share   tune cross/mixed R@1   test cross/mixed R@1",
    ]
    for share, row in absent["grid"].items():
        tune, test = row["tune"], row["test"]
        lines.append(f"{share:<6}  {tune['cross R@1']:.4f} / {tune['mixed R@1']:.4f}        "
                     f"{test['cross R@1']:.4f} / {test['mixed R@1']:.4f}")  # fmt: skip
    return "\n".join(lines)


def _fmt(value: float) -> str:
    return f"{value:.3f}"


def _short(value: float) -> str:
    """A rate in 5 characters: ".934", and "1.00" for 1."""
    return f"{value:.2f}" if value >= 0.9995 else f"{value:.3f}"[1:]


def format_comparison(reports: dict[str, Report]) -> str:
    """The summary table: one row per metric, one column per scorer, and the last minus the first."""
    names = list(reports)
    summaries = {n: r.summary() for n, r in reports.items()}
    keys = list(summaries[names[0]])
    width = max(len(k) for k in keys) + 2
    lines = ["Summary (means over language pairs)", "metric".ljust(width) + "".join(n.rjust(12) for n in names) + "      Δ"]
    for key in keys:
        values = [summaries[n][key] for n in names]
        delta = values[-1] - values[0]
        lines.append(key.ljust(width) + "".join(_fmt(v).rjust(12) for v in values) + f"{delta:+7.3f}")
    return "\n".join(lines)


def format_matrix(report: Report, langs: list[str], title: str, attr: str = "r1") -> str:
    """Recall@1 per question language (rows) and passage language (columns), and the needle's."""
    lines = [
        f"{title}: Recall@1, rows = question language, columns = passage language",
        "Q\\P " + "".join(p.rjust(6) for p in langs) + "  needle",
    ]
    for q in langs:
        if q not in report.mixed:  # no question in this language (in this half)
            continue
        row = "".join(
            _short(getattr(report.single[(q, p)], attr)).rjust(6) if (q, p) in report.single else "-".rjust(6)
            for p in langs
        )
        needles = [report.needle[(q, p)].r1 for p in langs if (q, p) in report.needle]
        lines.append(f"{q:<4}" + row + (f"  {np.mean(needles):.3f}" if needles else "       -"))
    return "\n".join(lines)


class _CachedQueries:
    """An embedder's `encode_queries` through the evaluation cache."""

    def __init__(self, cache: EmbeddingCache, embedder):
        self.cache, self.embedder = cache, embedder

    def encode_queries(self, texts: list[str]) -> np.ndarray:
        return self.cache.get("query", texts, self.embedder.encode_queries)


def embedding_cache(settings: Settings, embedder) -> EmbeddingCache:
    """The evaluation's cache of this embedder's vectors.

    One file per backend (fp32 keeps the original name): a faster backend's vectors must never
    stand in for the fp32 ones, or the reverse, when their scores are compared.
    """
    backend = getattr(embedder, "backend", "torch-fp32")
    name = "xquad-embeddings.npz" if backend == "torch-fp32" else f"xquad-embeddings.{backend}.npz"
    return EmbeddingCache(settings.cache_dir / "eval" / name, embedder.fingerprint)


@dataclass
class EvalRun:
    """What `qa eval` measured: a report per scorer and the JSON-ready results.

    `reports` are the held-out ("test") half's, with the fusion weights chosen on the other
    ("tune") half, whose reports are `tune_reports`.
    """

    langs: list[str]
    backend: str
    reports: dict[str, Report]
    results: dict
    seconds: float
    questions: str | None = None  # what `--questions` asked, for the report's heading
    settings: Settings | None = None  # the settings it ran with (the gate's thresholds)
    tune_reports: dict[str, Report] = field(default_factory=dict)
    weights: FusionWeights | None = None  # chosen on the tune half
    data_name: str = "XQuAD"


def embed_data(data: XQuAD, cache: EmbeddingCache, embedder) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Passage and question vectors of every language (a text missing in a language, in a set
    that is not parallel: a row of zeros, never scored)."""

    def vectors(kind: str, texts: list[str | None], embed) -> np.ndarray:
        present = [t for t in texts if t is not None]
        got = cache.get(kind, present, embed)
        if len(present) == len(texts):
            return got
        out = np.zeros((len(texts), got.shape[1] if got.size else embedder.dim), np.float32)
        out[[i for i, t in enumerate(texts) if t is not None]] = got
        return out

    passages = {lang: vectors("passage", data.paragraphs[lang], embedder.encode_documents) for lang in data.langs}
    queries = {lang: vectors("query", data.questions[lang], embedder.encode_queries) for lang in data.langs}
    return passages, queries


def run(
    data: XQuAD,
    settings: Settings,
    *,
    answers: bool = False,
    tune_quotes: bool = False,
    questions: Path | None = None,
    off_topic: Path | None = None,
    data_name: str = "XQuAD",
) -> EvalRun:
    """Evaluate the bare model and the full pipeline on `data`, held out: the fusion weights are
    chosen on the tune half of the articles (`halves`, `tune_fusion`) and every figure printed
    is the test half's, for the pipeline with the shipped weights (the settings) and with the
    chosen ones. With `answers`, the replies: `tune_quotes` chooses the quote weights on the tune
    half; `questions`, a JSON file of questions with evidence strings, is asked of the index too,
    and with `off_topic`, a JSON file of questions the corpus does not answer, the "not found"
    decision is measured on both."""
    from qa.embed import get_embedder
    from qa.index.build import query_means

    started = time.perf_counter()
    embedder = get_embedder(settings)
    cache = embedding_cache(settings, embedder)
    passages, queries = embed_data(data, cache, embedder)
    pool = Pool.from_xquad(data, passages, lambda texts: cache.get("passage", texts, embedder.encode_documents))
    means = query_means(_CachedQueries(cache, embedder), pool.texts, pool.langs.tolist())
    pipeline = Pipeline(settings, means)
    split = halves(data)
    weights, grid = tune_fusion(data, pool, queries, Pipeline(settings, means), split["tune"])
    scorers: list[Scorer] = [BareModel(), pipeline]
    if weights != pipeline.weights:
        tuned = Pipeline(settings, means, weights)
        tuned.name = "tuned"
        scorers.append(tuned)
    reports = {s.name: evaluate(data, pool, queries, s, split["test"]) for s in scorers}
    tune_reports = {s.name: evaluate(data, pool, queries, s, split["tune"]) for s in scorers}
    results: dict = {n: r.summary() for n, r in reports.items()}
    results["tune half"] = {n: r.summary() for n, r in tune_reports.items()}
    results["fusion weights"] = {
        "shipped": {"lexical": pipeline.weights.lexical, "sentence": pipeline.weights.sentence},
        "chosen on the tune half": {"lexical": weights.lexical, "sentence": weights.sentence},
        "grid (tune half)": {f"{lex} {sent}": {k: round(v, 4) for k, v in m.items()} for (lex, sent), m in grid.items()},
    }
    results["per pair"] = {n: _per_pair(r) for n, r in reports.items()}
    if len(data.langs) > 1:
        results["absent language"] = absent_language_centering(data, pool, queries, pipeline, split)
    if answers:
        if not data.parallel:
            from qa.errors import QAError

            raise QAError(f"--answers needs a parallel set (every question in every language); {data_name} is not.")
        results["answers"] = _answer_level(
            data, pool, queries, pipeline, settings, tune_quotes, questions, off_topic
        )
    asked = f"{questions.name}, index {settings.index_dir}" if answers and questions else None
    return EvalRun(
        list(data.langs), embedder.backend, reports, results, time.perf_counter() - started, asked, settings,
        tune_reports, weights, data_name,
    )


def _per_pair(report: Report) -> dict:
    """The report's metrics per language pair (single, needle) and per question language (mixed)."""
    return {
        "single": {f"{q}->{p}": m.as_dict() for (q, p), m in report.single.items()},
        "needle": {f"{q}->{p}": m.as_dict() for (q, p), m in report.needle.items()},
        "mixed": {q: m.as_dict() | {"distinct top5": report.distinct_top5[q]} for q, m in report.mixed.items()},
    }


def format_pairs(reports: dict[str, Report], langs: list[str]) -> str:
    """Per language pair, each scorer side by side: needle R@1 and R@5 (Q -> P), and per question
    language the mixed pool's R@1, R@5 and top hit in the asker's language."""
    names = list(reports)
    head = "".join(f"{n[:16]:>18}" for n in names)
    lines = ["Needle per language pair (R@1 / R@5)", "Q->P   " + head]
    for q in langs:
        for p in langs:
            if (q, p) in reports[names[0]].needle:
                cells = "".join(
                    f"{r.needle[(q, p)].r1:>12.3f}/{r.needle[(q, p)].r5:.3f}" for r in reports.values()
                )
                lines.append(f"{q}->{p:<4}" + cells)
    lines += ["", "Mixed pool per question language (R@1 / R@5 / top hit in the asker's language)", "Q      " + head]
    for q in langs:
        if q in reports[names[0]].mixed:
            cells = "".join(
                f"{r.mixed[q].r1:>6.3f}/{r.mixed[q].r5:.3f}/{r.mixed[q].own_lang_top1:.3f}" for r in reports.values()
            )
            lines.append(f"{q:<7}" + cells)
    return "\n".join(lines)


def format_run(run: EvalRun) -> str:
    """`qa eval`'s report: the summary table, a matrix per scorer and, when measured, the replies."""
    from qa.answer_eval import format_answer_report

    heading = f"{run.data_name}, test half (articles at odd positions; no weight was chosen on them)"
    parts = [heading, format_comparison(run.reports)]
    parts += ["\n" + format_matrix(report, run.langs, name) for name, report in run.reports.items()]
    parts += ["\n" + format_pairs(run.reports, run.langs)]
    if run.weights is not None:
        fusion = run.results["fusion weights"]
        parts.append(
            f"\nFusion weights (BM25, sentence) chosen on the tune half (even articles): "
            f"{run.weights.lexical}, {run.weights.sentence}; shipped (QA_LEXICAL_WEIGHT, QA_SENTENCE_WEIGHT): "
            f"{fusion['shipped']['lexical']}, {fusion['shipped']['sentence']}"
        )
        grid = fusion["grid (tune half)"]
        sentences = sorted({float(k.split()[1]) for k in grid})
        rows = ["Tune half, needle R@1 / same R@1 per weight: rows BM25, columns sentence",
                "BM25 " + "".join(f"{w:>12}" for w in sentences)]  # fmt: skip
        for lexical in sorted({float(k.split()[0]) for k in grid}):
            cells = [grid.get(f"{lexical} {w}") for w in sentences]
            rows.append(f"{lexical:<5}" + "".join(
                f"{c['needle R@1']:>6.3f}/{c['same R@1']:.3f}" if c else " " * 12 for c in cells))
        parts.append("\n".join(rows))
    if "absent language" in run.results:
        parts.append(_format_absent(run.results["absent language"]))
    if run.tune_reports:
        parts += ["\n" + run.data_name + ", tune half (where the weights were chosen)", format_comparison(run.tune_reports)]
    answers = run.results.get("answers")
    if answers:
        tuned = answers.get("tuned_weights")
        if tuned:
            parts.append(
                f"\nQuote weights chosen on the tune half's mixed and needle pools: {tuned['weights']} "
                f"(first quote {tuned['tune_first']:.3f}); each cue alone: {tuned['alone']}"
            )
        parts.append(_format_gap_and_gate(answers, run.settings or Settings()))
        parts.append(format_answer_report(answers["xquad"], "XQuAD answers"))
        if "corpus" in answers:
            parts.append(f"\nCorpus questions ({run.questions}): first quote / any quote")
            for name, row in answers["corpus"].items():
                langs = " ".join(f"{k} {v:.2f}" for k, v in row["by_language"].items())
                parts.append(
                    f"  {name:<22}{row['first']:.3f} / {row['any']:.3f}  (n={row['n']}; first by language: {langs}); "
                    f"quotes holding the evidence {row['precision']:.3f} of {row['quotes']:.2f} a reply; "
                    f"hedged {row['weak']:.3f}, not found {row['not_found']:.3f}"
                )
        for kind, row in answers.get("corpus_gate", {}).items():
            parts.append(
                f"  {kind} ({row['n']}): 'not found' {row['not_found_before']:.3f} -> previous "
                f"{row.get('not_found_previous', float('nan')):.3f} -> now {row['not_found']:.3f}, hedged "
                f"{row.get('weak_previous', float('nan')):.3f} -> {row['weak']:.3f}; per language (before, now, "
                f"hedged): {row['by_language']}; changed from previous: {row.get('changed', [])}"
            )
    return "\n".join(parts)


def _format_gap_and_gate(answers: dict, settings: Settings) -> str:
    """The quote gap and the "not found" thresholds chosen on the tune half, and the decision's report."""
    from qa.answer_eval import format_gate_report
    from qa.quotes import EVIDENCE_GAP

    gap = answers["tuned_gap"]
    grid = ", ".join(
        f"{g} {r['any']:.3f}/{r['precision']:.3f}/{r['quotes']:.2f}" for g, r in gap["grid"].items()
    )
    text = io.StringIO()
    print(
        f"\nQuote gap from the tune half (highest share of quotes holding the answer, any-quote within 0.01 "
        f"of three quotes): {gap['gap']} (in use: {EVIDENCE_GAP}); any / share / quotes per gap: {grid}",
        file=text,
    )
    print(
        f"\n\"Not found\" thresholds from the tune half: {answers['gate_calibration']} (in use: min_evidence "
        f"{settings.min_evidence}, strong_evidence {settings.strong_evidence})",
        file=text,
    )
    if "tuned_gate" in answers:
        gate = answers["tuned_gate"]
        grid = "; ".join(f"{w}: {r['min_evidence']}/{r['strong_evidence']} refused {r['refused']:.4f}"
                         for w, r in gate["grid"].items())  # fmt: skip
        print(
            f"Sentence weight of the evidence score from the tune half (most unanswerable tune questions refused "
            f"at thresholds losing at most 1 % of any pair's answerable ones): {gate['evidence_sentence_weight']} "
            f"(in use: {settings.evidence_sentence_weight}); weight: min/strong thresholds, refused: {grid}",
            file=text,
        )
    text.write(format_gate_report(answers["gate"], settings))
    return text.getvalue()


def _answer_level(
    data: XQuAD,
    pool: Pool,
    queries: dict[str, np.ndarray],
    pipeline,
    settings: Settings,
    tune_quotes: bool,
    questions: Path | None,
    off_topic: Path | None = None,
) -> dict:
    """`qa eval --answers`: first-quote / any-quote rates on XQuAD (and on `--questions`)."""
    from qa.answer_eval import (
        answer_cases,
        calibrate_gate,
        corpus_answer_report,
        gate_report,
        tune_alone,
        tune_gap,
        tune_gate,
        tune_weights,
        xquad_answer_report,
    )

    cases = answer_cases(data, pool, queries, pipeline, settings)
    idf = pipeline.lexical.idf if pipeline.lexical is not None else None
    out: dict = {}
    weights = alone = None
    if tune_quotes:
        weights, score = tune_weights(cases, idf)
        alone = tune_alone(cases, idf)
        out["tuned_weights"] = {"weights": weights.__dict__, "tune_first": round(score, 3), "alone": alone}
    out["tuned_gap"] = tune_gap(cases, idf, weights)
    out["gate_calibration"] = calibrate_gate(cases)
    out["tuned_gate"] = tune_gate(cases)
    out["gate"] = gate_report(cases, settings)
    out["xquad"] = xquad_answer_report(cases, idf, weights, alone)
    if questions:
        out["corpus"] = corpus_answer_report(questions, settings)
    if questions and off_topic:
        from qa.answer_eval import corpus_gate_report

        out["corpus_gate"] = corpus_gate_report(questions, off_topic, settings)
    return out


def _has_evidence(texts: list[str], evidence: list[str]) -> bool:
    return any(e in t for t in texts for e in evidence)


def evaluate_corpus_questions(path: Path, settings: Settings, k: int = 5) -> dict[str, dict]:
    """Hit@1/3/5 on questions about the indexed corpus, bare model vs pipeline, overall and per
    question language ("by language": hit@1, hit@5 and n of each).

    `path` is a JSON list of {"evidence": [strings], "questions": {lang: question}}; a hit is a
    retrieved passage (or one of its translations) that contains one of the evidence strings.
    """
    from qa.retrieval import get_engine, to_passage

    engine = get_engine(settings)
    index = engine.index()
    hits: dict[str, dict[str, list]] = {name: {} for name in ("bare model", "pipeline")}
    for fact in json.loads(Path(path).read_text(encoding="utf-8")):
        for lang, question in fact["questions"].items():
            _, rows = index.search(engine.embedder.encode_query(question)[None, :], k)
            bare = [[to_passage(index, int(r), 0.0).text] for r in rows[0] if r >= 0]
            piped = [[p.text] + [t.text for t in p.translations] for p in engine.search(question, k, lang=lang)]
            for name, ranked in (("bare model", bare), ("pipeline", piped)):
                found = [_has_evidence(texts, fact["evidence"]) for texts in ranked]
                hits[name].setdefault(lang, []).append([any(found[:1]), any(found[:3]), any(found[:5])])
    out = {}
    for name, by_lang in hits.items():
        every = np.array([row for rows in by_lang.values() for row in rows], dtype=float)
        out[name] = dict(zip(("hit@1", "hit@3", "hit@5"), every.mean(axis=0).round(3).tolist())) | {"n": len(every)}
        out[name]["by language"] = {
            lang: {"hit@1": round(float(np.mean([r[0] for r in rows])), 3),
                   "hit@5": round(float(np.mean([r[2] for r in rows])), 3), "n": len(rows)}
            for lang, rows in sorted(by_lang.items())
        }  # fmt: skip
    return out


def explain_corpus_misses(path: Path, settings: Settings, k: int = 5, ahead: int = 5) -> str:
    """Why the pipeline misses: for each question of `path` (as `evaluate_corpus_questions`) whose
    evidence is not in its top `k`, the evidence passage's rank and the signals `qa.rank.fuse`
    weighs (standardized dense score, BM25 scaled per language with its raw score, best sentence
    score) for it and for the first `ahead` hits. Ranked as `Pipeline` ranks the index's pool,
    which is the engine's ranking (tests/test_parity.py)."""
    from qa.retrieval import get_engine

    engine = get_engine(settings)
    index = engine.index()
    pool = Pool.from_index(index)
    pipeline = Pipeline(settings, {})
    pipeline.prepare(pool)
    members = group_members(pipeline.groups)
    lines = [f"{Path(path).name}: questions whose evidence is not in the top {k}"]
    for fact in json.loads(Path(path).read_text(encoding="utf-8")):
        holds = np.array([_has_evidence([t], fact["evidence"]) for t in pool.texts])
        for lang, question in fact["questions"].items():
            query = engine.embedder.encode_query(question)[None, :]
            dense, lexical, sentences = pipeline.components(query, [question], lang, pool)
            scores = pipeline.fused(dense, lexical, sentences)[0]
            hits = fold_groups(np.argsort(-scores), pipeline.groups, members, pool.langs, lang, len(scores))
            found = [n for n, (_, row) in enumerate(hits)
                     if holds[members.get(int(pipeline.groups[row]), [row])].any()]  # fmt: skip
            if found and found[0] < k:
                continue
            raw = None if lexical is None else pipeline.lexical.scores(question)
            lines.append(f"  {lang} {question!r} (evidence {fact['evidence'][0]!r}): "
                         f"{'rank ' + str(found[0] + 1) if found else 'not found'}")  # fmt: skip
            for n in list(range(min(ahead, len(hits)))) + found[:1]:
                row = hits[n][1]
                lex = "" if lexical is None else f"  bm25 {lexical[0, row]:.2f} (raw {raw[row]:.2f})"
                sent = "" if sentences is None else f"  sentence {sentences[0, row]:.2f}"
                lines.append(f"    {'*' if n in found else ' '}{n + 1:>3} {pool.langs[row]} total {scores[row]:.2f}  "
                             f"dense {dense[0, row]:.2f}{lex}{sent}  {pool.texts[row][:60]!r}")  # fmt: skip
    return "\n".join(lines)


# What `qa eval --hits` calls the question files it knows; others go by their file name.
CORPUS_QUESTION_SETS = {
    "seed_questions.json": "seed questions",
    "heldout_questions.json": "held-out demo questions (no weight was chosen on them)",
}


def format_corpus_hits(path: Path, result: dict[str, dict]) -> str:
    """`evaluate_corpus_questions`'s result as text: hit@1 / hit@5 overall and per question
    language, bare model and pipeline."""
    name = CORPUS_QUESTION_SETS.get(Path(path).name, Path(path).name)
    first = next(iter(result.values()))
    lines = [f"{name} ({Path(path).name}, {first['n']} questions): hit@1 / hit@5"]
    for scorer, row in result.items():
        langs = " ".join(
            f"{lang} {m['hit@1']:.2f}/{m['hit@5']:.2f} ({m['n']})" for lang, m in row["by language"].items()
        )
        lines.append(f"  {scorer:<11} {row['hit@1']:.3f} / {row['hit@5']:.3f}   by language: {langs}")
    return "\n".join(lines)
