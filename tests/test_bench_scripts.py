"""The benchmark scripts' own logic at small sizes (their timings are not asserted here)."""

import datetime as dt

import numpy as np


def test_integrity_verify_runs_at_a_thousand_passages(tmp_path) -> None:
    """At 1,000 passages (5.5 MB of files) a case takes milliseconds: the ratios used to divide
    by times rounded to 0.0."""
    from benchmarks.bench_integrity import measure_verify

    rows = measure_verify(tmp_path, 1000)
    assert [(r["page_cache"], r["what"]) for r in rows][:2] == [
        ("cold", "read only (the I/O floor)"),
        ("cold", "verify at load (open_index)"),
    ]
    assert all(r["seconds"] > 0 and r["gb"] > 0 for r in rows), rows
    assert all(r["x_read_only"] == 1.0 for r in rows if r["what"].startswith("read only")), rows
    assert all(r["x_read_only"] > 0 for r in rows), rows


def test_filters_metadata_is_given_when_written() -> None:
    """Dates over 2020-2024 with ~5% undated and 20 outlets, as fields of the written articles
    (a loaded index's articles are read-only); the outlet is what a source filter matches."""
    from benchmarks.bench_filters import OUTLETS, article_metadata
    from qa.models import Article
    from qa.retrieval import url_outlet

    n = 4000
    fields = article_metadata(n, np.random.default_rng(7))
    rows = [fields(i, f"s{i}") for i in range(n)]
    dates = [dt.date.fromisoformat(r["date"]) for r in rows if r["date"] is not None]
    assert 0.03 < 1 - len(dates) / n < 0.07
    assert min(dates) >= dt.date(2020, 1, 1) and max(dates) <= dt.date(2024, 12, 31)
    assert 0.17 < sum(d.year == 2024 for d in dates) / n < 0.21
    assert {url_outlet(r["url"]) for r in rows} == set(OUTLETS)
    article = Article(doc_id="s0", title="t", text="x", lang="en", source="synthetic/0", **rows[0])
    assert (article.date, article.url) == (rows[0]["date"], rows[0]["url"])


def test_rerank_question_likelihood_reorders_by_score_plus_weighted_likelihood() -> None:
    """The reranker benchmark's arithmetic: w = 0 keeps the pipeline's order, a large w follows the
    likelihood, and z standardizes the likelihood over the question's candidates."""
    from benchmarks.rerank_question_likelihood import evidence_ranks, summary

    # The evidence is the pipeline's 6th passage and the likelihood's best.
    row = {
        "lang": "de",
        "question": "q",
        "pipeline": [6.0, 5.0, 4.0, 3.0, 2.0, 1.0],
        "likelihood": [-5.0, -5.0, -5.0, -5.0, -5.0, -1.0],
        "evidence": [False, False, False, False, False, True],
    }
    assert evidence_ranks(row, 0.0, False) == [5]
    assert evidence_ranks(row, 1.0, False) == [2]  # 1 - 1 = 0 beats 3 - 5, 2 - 5; loses to 6 - 5, 5 - 5
    assert evidence_ranks(row, 100.0, False) == [0]
    assert evidence_ranks(row, 2.0, True) == [0]  # z: 2.24 for the evidence, -0.45 for the others
    other = row | {"lang": "en", "evidence": [True, False, False, False, False, False]}
    assert summary([row, other], 0.0, False) == {
        "hit@1": 0.5,
        "hit@5": 0.5,
        "hit@5 by language": {"de": 0.0, "en": 1.0},
    }
    assert summary([row, other], 100.0, False)["hit@5 by language"] == {"de": 1.0, "en": 1.0}
