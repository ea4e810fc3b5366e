"""`qa eval`'s run on XQuAD: vectors embedded (and cached), the weights chosen on the tune half,
every scorer reported on the test half and, with `--answers`, the replies measured
(`qa.answer_eval`)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from qa.config import Settings
from qa.evaluate.metrics import Report, evaluate, halves
from qa.evaluate.scoring import BareModel, Pipeline, Pool, Scorer
from qa.evaluate.tuning import absent_language_centering, tune_fusion
from qa.rank import FusionWeights
from qa.xquad import EmbeddingCache, XQuAD

__all__ = ["CachedQueries", "EvalRun", "embed_data", "embedding_cache", "run"]


class CachedQueries:
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
    means = query_means(CachedQueries(cache, embedder), pool.texts, pool.langs.tolist())
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
    results["per pair"] = {n: r.per_pair() for n, r in reports.items()}
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
