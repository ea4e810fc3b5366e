"""One ranking: `qa eval`'s pipeline and the served `Engine.search` rank alike (`qa.rank.fuse`).

The README's quality table is measured by `qa eval`; these tests keep it describing what users
get. The parity test runs the real model over the seed corpus (French, German, Japanese
articles) with questions in five languages.
"""

from __future__ import annotations

import numpy as np
import pytest

from qa.config import Settings
from qa.rank import NOT_SHORTLISTED, FusionWeights, fuse


def test_fuse_adds_the_lexical_and_the_shortlisted_sentence_scores():
    dense = np.array([[0.5, 2.0, 1.0, -1.0]])
    lexical = np.array([[1.0, 0.0, 0.0, 0.0]])
    asked = []

    def sentences(mask):
        asked.append(mask.copy())
        return np.array([[10.0, 0.3, 0.2, 99.0]])

    scores, mask = fuse(dense, lexical, sentences, FusionWeights(lexical=1.5, sentence=0.5, sentence_candidates=2))
    # First stage: 2.0, 2.0, 1.0, -1.0 -> the two best (rows 0 and 1) get their sentence scores.
    assert mask.tolist() == [[True, True, False, False]] and asked[0].tolist() == mask.tolist()
    assert scores[0, :2].tolist() == [2.0 + 5.0, 2.0 + 0.15]
    assert scores[0, 2:].tolist() == [1.0 - NOT_SHORTLISTED, -1.0 - NOT_SHORTLISTED]  # 99.0 never read


def test_fuse_without_weights_is_the_dense_score():
    dense = np.array([[0.1, 0.3], [0.2, -0.4]])
    scores, mask = fuse(dense, np.ones_like(dense), lambda mask: np.ones_like(dense), FusionWeights(0.0, 0.0, 1))
    assert np.array_equal(scores, dense) and mask.all()


def test_settings_differing_outside_the_engine_share_one_engine(tmp_path):
    from qa.retrieval import get_engine

    base = Settings(index_dir=tmp_path / "index")
    engine = get_engine(base)
    assert get_engine(base.model_copy(update={"rate_limit_per_minute": 30})) is engine
    assert get_engine(base.model_copy(update={"queue_concurrency": 2, "log_level": "INFO"})) is engine
    assert get_engine(base.model_copy(update={"lexical_weight": 0.0})) is not engine  # ranks otherwise
    assert get_engine(base.model_copy(update={"index_dir": tmp_path / "other"})) is not engine


@pytest.mark.slow
def test_qa_eval_pipeline_top_10_equals_engine_search(seed_settings, seed_facts):
    from qa.evaluate import Pipeline, Pool, _top_grouped
    from qa.retrieval import Engine

    # Every passage a candidate, as the pipeline scores every passage of its pool; the fusion,
    # the statistics, the groups, the lexical index and the sentence vectors are the index's.
    settings = seed_settings.model_copy(update={"candidates": 10_000})
    engine = Engine(settings)
    index = engine.index()
    pool = Pool.from_index(index)
    pipeline = Pipeline(settings, query_means={})  # the index's statistics carry its query means
    pipeline.prepare(pool)
    compared = set()
    for fact in seed_facts:
        for lang, question in fact["questions"].items():
            served = [index.row_of[(p.doc_id, p.start)] for p in engine.search(question, 10, lang=lang)]
            query = engine.embedder.encode_query(question)[None, :]
            ranked = _top_grouped(pipeline.scores(query, [question], lang, pool), pipeline.groups, pool.langs, lang)
            assert ranked[0, : len(served)].tolist() == served, (lang, question)
            compared.add(lang)
    assert compared >= {"en", "de", "es", "ja", "zh"}
