"""`qa eval`: retrieval quality on XQuAD (or any SQuAD-format set, `qa.xquad.load_squad`), the
bare model and the full pipeline side by side, held out: the fusion weights are chosen on the
articles at even positions and every reported figure is the odd ones' (`halves`, `tune_fusion`).

Pools (a "hit" is the paragraph that answers the question):
- single: questions in Q against the 240 paragraphs of language P, for every Q × P;
- mixed: all paragraphs of all languages at once; a hit is the right paragraph in any language;
- needle: the right paragraph exists only in language P, every other paragraph in every
  language is present; the question is in Q ≠ P. This is the case of a real multilingual corpus
  where the answer was only ever written in one language.

The package, in the order `qa eval` runs: `scoring` (the pool and the scorers), `metrics` (recall
and MRR per pool, the two halves), `tuning` (weights chosen on the tune half), `runner` (the run
itself), `report` (the report as text); `corpus` is `qa eval --hits`, questions about the indexed
corpus.
"""

from __future__ import annotations

from qa.evaluate.corpus import evaluate_corpus_questions, explain_corpus_misses, format_corpus_hits
from qa.evaluate.metrics import Report, evaluate, halves, rank_metrics, score_language, top_k, top_k_grouped
from qa.evaluate.report import format_comparison, format_matrix, format_pairs, format_run
from qa.evaluate.runner import CachedQueries, EvalRun, embed_data, embedding_cache, run
from qa.evaluate.scoring import BareModel, Pipeline, Pool, Scorer
from qa.evaluate.tuning import ABSENT_GRID, absent_language_centering, tune_fusion

__all__ = [
    "ABSENT_GRID",
    "BareModel",
    "CachedQueries",
    "EvalRun",
    "Pipeline",
    "Pool",
    "Report",
    "Scorer",
    "absent_language_centering",
    "embed_data",
    "embedding_cache",
    "evaluate",
    "evaluate_corpus_questions",
    "explain_corpus_misses",
    "format_comparison",
    "format_corpus_hits",
    "format_matrix",
    "format_pairs",
    "format_run",
    "halves",
    "rank_metrics",
    "run",
    "score_language",
    "top_k",
    "top_k_grouped",
    "tune_fusion",
]

# The names the tests knew them by, before they were public.
_metrics, _top, _top_grouped, _CachedQueries = rank_metrics, top_k, top_k_grouped, CachedQueries
