"""Filters by language, date and source: inside the search (k results when k match), in `retrieve`,
`ask` and the REST API, and a clear error for a bad value.

The corpus is a .jsonl file written here: articles on unrelated topics in four languages, with
dates, outlets and two files, one article without a date. Real model, real FAISS, real server.
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import numpy as np
import pytest

from qa.errors import InvalidQuestionError
from qa.filters import NO_DATE, article_day, make_filters, parse_day
from qa.index.ann import EXACT_MATCHES, ByteExact, LanguageSearch, ProbedIVF, fill, train_ivf

# (file, lang, date, url, title, text): one topic an article, so no two are translations.
ARTICLES = [
    ("feeds/news.jsonl", "en", "2024-01-10", "https://www.harbour-times.co.uk/a1", "Harbour crane collapses",
     "A crane collapsed at the container harbour of Felixstowe on Tuesday. Nobody was injured."),
    ("feeds/news.jsonl", "en", "2024-03-05", "https://news.harbour-times.co.uk/a2", "Bakery wins bread prize",
     "A small bakery in Leeds won the national sourdough prize. Its owner has baked bread since 1998."),
    ("feeds/news.jsonl", "en", "2024-06-20", "https://dailyplanet.example/a3", "Marathon record in Berlin",
     "The Berlin marathon saw a new course record of two hours and one minute. Rain did not slow the runners."),
    ("feeds/news.jsonl", "en", None, "https://dailyplanet.example/a4", "Library extends opening hours",
     "The city library will open on Sundays from next month. Readers had asked for longer hours for years."),
    ("feeds/news.jsonl", "de", "2024-01-15T08:30:00+01:00", "https://www.tagesblatt.de/b1",
     "Neue Straßenbahnlinie eröffnet",
     "In Freiburg fährt seit Montag eine neue Straßenbahnlinie. Sie verbindet den Bahnhof mit der Universität."),
    ("feeds/news.jsonl", "de", "2024-04-02", "https://www.tagesblatt.de/b2", "Imker melden gute Honigernte",
     "Die Imker in Bayern melden eine sehr gute Honigernte. Der warme Frühling habe den Bienen geholfen."),
    ("feeds/news.jsonl", "de", "2024-07-30", "https://www.rundschau.de/b3", "Schwimmbad wird saniert",
     "Das alte Hallenbad in Kassel wird für zwölf Millionen Euro saniert. Es bleibt zwei Jahre geschlossen."),
    ("wire.jsonl", "fr", "2024-02-11", "https://www.lejournal.fr/c1", "Un festival de jazz à Lyon",
     "Le festival de jazz de Lyon a accueilli quarante mille spectateurs. La prochaine édition aura lieu en juin."),
    ("wire.jsonl", "fr", "2024-05-18", "https://www.lejournal.fr/c2", "Les vendanges commencent tôt",
     "En Bourgogne, les vendanges ont commencé avec trois semaines d'avance à cause de la chaleur."),
    ("wire.jsonl", "fr", "2024-08-09", "https://www.quotidien.fr/c3", "Un nouveau musée à Nantes",
     "Nantes inaugure un musée consacré aux machines de l'île. L'entrée sera gratuite le premier dimanche."),
    ("wire.jsonl", "es", "2024-03-22", "https://www.eldiario.es/d1", "Sequía en Andalucía",
     "La sequía en Andalucía obliga a restringir el riego. Los embalses están al veinte por ciento."),
    ("wire.jsonl", "es", "2024-09-01", "https://www.eldiario.es/d2", "Nuevo tren rápido a Galicia",
     "El nuevo tren rápido une Madrid y Galicia en tres horas. Los billetes ya están a la venta."),
]


def _write_corpus(folder: Path) -> None:
    for name in sorted({a[0] for a in ARTICLES}):
        lines = []
        for file, lang, date, url, title, text in ARTICLES:
            if file == name:
                record = {"title": title, "text": text, "lang": lang, "url": url}
                if date:
                    record["date"] = date
                lines.append(json.dumps(record, ensure_ascii=False))
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")


@pytest.fixture(scope="module")
def news_settings(tmp_path_factory):
    from qa.config import Settings
    from qa.index.build import build_index

    root = tmp_path_factory.mktemp("news")
    _write_corpus(root / "corpus")
    settings = Settings(corpus_dir=root / "corpus", index_dir=root / "index")
    build_index(settings=settings)
    return settings


def _article(passage) -> tuple:
    return next(a for a in ARTICLES if a[4] == passage.title)


# --- parsing filters (pure logic) ----------------------------------------------------------------


def test_dates_parse_as_iso_days_and_partial_dates_cover_their_month_or_year():
    assert parse_day("2024-05-01", "since").isoformat() == "2024-05-01"
    assert parse_day("2024-02", "until", end=True).isoformat() == "2024-02-29"
    assert parse_day("2024", "since").isoformat() == "2024-01-01"
    assert parse_day("2024-05-01T23:30:00Z", "since").isoformat() == "2024-05-01"
    assert article_day("2024-01-15T08:30:00+01:00") - article_day("2024-01-14") == 1
    assert article_day("Tue, 07 May 2024 10:00:00 GMT") == article_day("2024-05-07")
    assert article_day(None) == article_day("sometime") == NO_DATE


def test_no_filter_is_none_so_the_search_takes_its_usual_path():
    assert make_filters() is None
    assert make_filters(langs=[], sources="", since="") is None
    assert make_filters(langs="de, en").langs == ("de", "en")  # comma-separated, as a query string sends


@pytest.mark.parametrize(
    ("values", "named"),
    [
        ({"langs": ["english"]}, "'english'"),
        ({"since": "yesterday"}, "'yesterday'"),
        ({"until": "2024-13-01"}, "'2024-13-01'"),
        ({"since": "2024-06-01", "until": "2024-05-31"}, "since 2024-06-01 is after until 2024-05-31"),
        ({"sources": [3]}, "sources must be a list of strings"),
    ],
)
def test_bad_filter_values_are_refused_naming_the_value(values, named):
    with pytest.raises(InvalidQuestionError, match=named):
        make_filters(**values)


# --- filtered search inside each language's index (real FAISS, no model) --------------------------


def _clustered(n: int, d: int = 32, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((40, d))
    v = centres[rng.integers(0, 40, n)] + 0.6 * rng.standard_normal((n, d))
    return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)


@pytest.mark.parametrize("share", [0.9, 0.6, 0.05, 0.002])
def test_filtered_search_returns_the_k_best_passages_let_through_in_every_kind_of_index(share):
    vectors = _clustered(20_000, seed=4)
    langs = np.array(["de", "en", "ja"])[np.random.default_rng(5).choice(3, 20_000, p=[0.5, 0.45, 0.05])]
    rows = {lang: np.flatnonzero(langs == lang) for lang in ("de", "en", "ja")}
    searches = {
        "de": (ProbedIVF(fill(train_ivf(vectors[rows["de"]], 64), vectors[rows["de"]]), 8, gap=0.002), rows["de"]),
        "en": (ProbedIVF(fill(train_ivf(vectors[rows["en"]], 64, seed=1), vectors[rows["en"]]), 8), rows["en"]),
        "ja": (ByteExact(vectors[rows["ja"]]), rows["ja"]),
    }
    search = LanguageSearch(searches)
    mask = np.random.default_rng(6).random(20_000) < share
    k, hits, total = 20, dict.fromkeys(rows, 0), dict.fromkeys(rows, 0)
    base_hits = 0  # the same indexes without a filter, against exact search: the recall to keep
    for query in _clustered(20, seed=7):
        found = search.search_filtered(query, k, mask, vectors)
        unfiltered = search.search(query, k)
        for lang, lang_rows in rows.items():
            truth = lang_rows[np.argsort(-(vectors[lang_rows] @ query))[:k]]
            base_hits += len(set(unfiltered[lang][1].tolist()) & set(truth.tolist()))
            allowed = lang_rows[mask[lang_rows]]
            got = found[lang][1]
            assert mask[got].all()
            assert len(got) == min(k, len(allowed))  # k results whenever k are let through
            truth = allowed[np.argsort(-(vectors[allowed] @ query))[:k]]
            hits[lang] += len(set(got.tolist()) & set(truth.tolist()))
            total[lang] += len(truth)
    # Recall against an exact filtered search: no lower than the unfiltered search's own.
    assert sum(hits.values()) / sum(total.values()) >= base_hits / (20 * 3 * k) - 0.02
    for lang in ("de", "en"):
        if np.count_nonzero(mask[rows[lang]]) <= EXACT_MATCHES:
            assert hits[lang] == total[lang]  # few passages let through: scored exactly


def test_a_language_filter_searches_the_kept_languages_as_without_a_filter():
    vectors = _clustered(12_000, seed=9)
    langs = np.array(["de", "en", "ja"])[np.random.default_rng(10).choice(3, 12_000, p=[0.5, 0.45, 0.05])]
    rows = {lang: np.flatnonzero(langs == lang) for lang in ("de", "en", "ja")}
    search = LanguageSearch({
        "de": (ProbedIVF(fill(train_ivf(vectors[rows["de"]], 64), vectors[rows["de"]]), 8, gap=0.002), rows["de"]),
        "en": (ProbedIVF(fill(train_ivf(vectors[rows["en"]], 64, seed=1), vectors[rows["en"]]), 8), rows["en"]),
        "ja": (ByteExact(vectors[rows["ja"]]), rows["ja"]),
    })
    for kept in (["de"], ["en", "ja"], ["de", "en", "ja"]):
        mask = np.isin(langs, kept)
        for query in _clustered(5, seed=11):
            found, unfiltered = search.search_filtered(query, 30, mask, vectors), search.search(query, 30)
            assert list(found) == kept
            for lang in kept:
                np.testing.assert_array_equal(found[lang][1], unfiltered[lang][1])


def test_filtered_search_skips_languages_with_nothing_let_through():
    vectors = _clustered(600, seed=8)
    rows = np.arange(600)
    mask = np.zeros(600, bool)
    assert LanguageSearch({"fr": (ByteExact(vectors), rows)}).search_filtered(vectors[0], 3, mask, vectors) == {}


# --- retrieve, ask and the REST API (real model, real index) ------------------------------------


@pytest.mark.slow
def test_language_filter_returns_only_that_language_and_k_of_them(news_settings):
    from qa.retrieval import retrieve

    found = retrieve("Where was a new tram line opened?", k=3, settings=news_settings, langs=["de"])
    assert [p.lang for p in found] == ["de"] * 3
    assert found[0].title == "Neue Straßenbahnlinie eröffnet"
    # Asked in English, filtered to French: the three French articles, however unrelated.
    found = retrieve("Where was a new tram line opened?", k=5, settings=news_settings, langs="fr")
    assert sorted(p.title for p in found) == sorted(a[4] for a in ARTICLES if a[1] == "fr")
    import qa  # the package's own entry point passes them on

    assert {p.lang for p in qa.retrieve("tram", k=2, settings=news_settings, langs=["es"])} == {"es"}


@pytest.mark.slow
def test_date_filter_keeps_the_range_and_leaves_out_undated_articles(news_settings):
    from qa.retrieval import retrieve

    found = retrieve("library opening hours", k=10, settings=news_settings, since="2024-03", until="2024-06-30")
    expected = {a[4] for a in ARTICLES if a[2] and "2024-03-01" <= a[2][:10] <= "2024-06-30"}
    assert {p.title for p in found} == expected and len(found) == 5
    assert all("2024-03-01" <= p.date[:10] <= "2024-06-30" for p in found)
    undated = retrieve("library opening hours", k=1, settings=news_settings)
    assert undated[0].title == "Library extends opening hours" and undated[0].date is None
    later = retrieve("library opening hours", k=20, settings=news_settings, since="2024-01-01")
    assert "Library extends opening hours" not in {p.title for p in later} and len(later) == 11


@pytest.mark.slow
def test_source_filter_matches_outlets_with_their_subdomains_and_corpus_files(news_settings):
    from qa.retrieval import retrieve

    found = retrieve("bread prize", k=5, settings=news_settings, sources=["harbour-times.co.uk"])
    assert {p.outlet for p in found} == {"harbour-times.co.uk", "news.harbour-times.co.uk"} and len(found) == 2
    assert found[0].title == "Bakery wins bread prize"
    found = retrieve("bread prize", k=10, settings=news_settings, sources="wire.jsonl")
    assert len(found) == 5 and all(p.source.startswith("wire.jsonl#") for p in found)
    found = retrieve("bread prize", k=10, settings=news_settings, sources=["feeds"], langs=["de"], until="2024-05")
    assert sorted(p.title for p in found) == ["Imker melden gute Honigernte", "Neue Straßenbahnlinie eröffnet"]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("filters", "named"),
    [
        ({"langs": ["sw"]}, "no passage is in 'sw'; the index holds de, en, es, fr"),
        ({"sources": ["nowhere.example"]}, "no article comes from 'nowhere.example'"),
        ({"since": "2024-31-01"}, "since '2024-31-01' is not a date"),
        ({"since": "2024-09-01", "until": "2024-01-01"}, "since 2024-09-01 is after until 2024-01-01"),
    ],
)
def test_retrieve_and_ask_refuse_bad_filters_naming_the_value(news_settings, filters, named):
    from qa.answer import ask
    from qa.retrieval import retrieve

    with pytest.raises(InvalidQuestionError, match=named):
        retrieve("bread prize", settings=news_settings, **filters)
    with pytest.raises(InvalidQuestionError, match=named):
        ask("bread prize", settings=news_settings, **filters)


@pytest.mark.slow
def test_ask_quotes_only_filtered_evidence(news_settings):
    from qa.answer import ask

    answer = ask("Quand ont commencé les vendanges ?", settings=news_settings, langs=["fr"], since="2024-05-01")
    assert answer.found and answer.citations
    assert all(c.passage.lang == "fr" and c.date >= "2024-05-01" for c in answer.citations)
    assert "vendanges" in answer.citations[0].evidence
    unfiltered = ask("Wann beginnt die Weinlese in Burgund?", settings=news_settings, langs=["de"])
    assert all(c.passage.lang == "de" for c in unfiltered.citations)


@pytest.fixture(scope="module")
def news_server(news_settings, tmp_path_factory):
    from tests.browser.live import start_server

    live = start_server(news_settings.index_dir, tmp_path_factory.mktemp("news-api"), corpus=news_settings.corpus_dir)
    yield live
    live.stop()


@pytest.mark.slow
def test_rest_search_and_ask_take_the_filters(news_server):
    with httpx.Client(base_url=news_server.url, timeout=60) as client:
        response = client.get(
            "/api/v1/search",
            params=[("q", "new train line"), ("k", "10"), ("lang", "es"), ("lang", "de"), ("since", "2024-04-01")],
        )
        assert response.status_code == 200, response.text
        titles = {p["title"] for p in response.json()}
        assert titles == {"Nuevo tren rápido a Galicia", "Imker melden gute Honigernte", "Schwimmbad wird saniert"}
        response = client.get("/api/v1/search", params={"q": "bread", "source": "dailyplanet.example", "k": 5})
        assert {p["outlet"] for p in response.json()} == {"dailyplanet.example"} and len(response.json()) == 2
        response = client.post(
            "/api/v1/ask", json={"question": "Who won the sourdough prize?", "langs": ["en"], "until": "2024-03-31"}
        )
        assert response.status_code == 200, response.text
        assert all(c["passage"]["lang"] == "en" and c["date"] <= "2024-03-31" for c in response.json()["citations"])


@pytest.mark.slow
@pytest.mark.parametrize(
    ("request_args", "named"),
    [
        (("GET", "/api/v1/search", {"params": {"q": "bread", "lang": "sw"}}), "'sw'"),
        (("GET", "/api/v1/search", {"params": {"q": "bread", "since": "last week"}}), "'last week'"),
        (("GET", "/api/v1/search", {"params": {"q": "bread", "source": "nowhere.example"}}), "'nowhere.example'"),
        (("POST", "/api/v1/ask", {"json": {"question": "bread", "since": "2024-05-01", "until": "2024-04-01"}}),
         "since 2024-05-01 is after until 2024-04-01"),
        (("POST", "/api/v1/ask", {"json": {"question": "bread", "langs": ["english"]}}), "'english'"),
    ],
)
def test_rest_refuses_bad_filters_with_422_naming_the_value(news_server, request_args, named):
    method, path, kwargs = request_args
    response = httpx.request(method, news_server.url + path, timeout=60, **kwargs)
    assert response.status_code == 422
    assert named in response.json()["detail"]


@pytest.mark.slow
def test_mcp_tools_take_the_filters(news_server):
    from tests.aio import run_async
    from tests.test_openai_api import call_tool, list_tools

    url = news_server.url + "/gradio_api/mcp/"
    tools = run_async(list_tools(url))
    for name in ("search", "ask"):
        properties = tools[name].inputSchema["properties"]
        assert {"langs", "since", "until", "sources"} <= set(properties)
        assert "YYYY-MM-DD" in properties["since"]["description"]
    found = run_async(call_tool(url, "search", {"question": "bread", "k": 10, "langs": ["fr"], "until": "2024-06"}))
    passages = json.loads(found.content[0].text)
    assert not found.isError and {p["title"] for p in passages} == {"Un festival de jazz à Lyon", "Les vendanges commencent tôt"}
    answered = run_async(call_tool(url, "ask", {"question": "Who won a prize?", "sources": ["harbour-times.co.uk"]}))
    answer = json.loads(answered.content[0].text)
    assert answer["citations"] and all(c["passage"]["outlet"].endswith("harbour-times.co.uk") for c in answer["citations"])
    refused = run_async(call_tool(url, "search", {"question": "bread", "since": "soon"}))
    # (Gradio escapes an error's quotes as HTML: &#x27;soon&#x27;.)
    assert refused.isError and "soon" in refused.content[0].text and "is not a date" in refused.content[0].text


@pytest.mark.slow
def test_openai_endpoint_takes_the_filters_as_extra_body_fields(news_server):
    import openai

    client = openai.OpenAI(base_url=news_server.url + "/v1", api_key="unused", max_retries=0, timeout=60)
    reply = client.chat.completions.create(
        model="qa",
        messages=[{"role": "user", "content": "Where did a new train line open?"}],
        extra_body={"langs": ["es"], "since": "2024-06-01"},
    )
    citations = reply.model_dump()["citations"]
    assert citations and all(c["passage"]["title"] == "Nuevo tren rápido a Galicia" for c in citations)
    with pytest.raises(openai.BadRequestError, match="'sw'"):
        client.chat.completions.create(
            model="qa", messages=[{"role": "user", "content": "bread"}], extra_body={"langs": ["sw"]}
        )
    with pytest.raises(openai.BadRequestError, match="since 2024-06-01 is after until 2024-01-01"):
        client.chat.completions.create(
            model="qa", messages=[{"role": "user", "content": "bread"}],
            extra_body={"since": "2024-06-01", "until": "2024-01-01"},
        )
