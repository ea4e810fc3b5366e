"""The pure rendering functions of the chat UI: replies and sources, escaping above all."""

from __future__ import annotations

import html
import itertools
import re
from html.parser import HTMLParser

import pytest
from hypothesis import given
from hypothesis import strategies as st

from qa.i18n import LABELS, pick_lang
from qa.models import Answer, Citation, Passage, Translation
from qa.serve.ui import (
    chat_filters,
    empty_sources,
    escape_markdown,
    highlight,
    language_choices,
    render_citation,
    render_sources,
    reply_markdown,
    stream_prefixes,
)

PAYLOADS = [
    "<script>window.__pwned=1</script>",
    '<img src=x onerror="window.__pwned=1">',
    "[click](javascript:window.__pwned=1)",
    '<a href="javascript:alert(1)">x</a>',
    '<img src="http://example.invalid/x.png">',
    "![x](http://example.invalid/y.png)",
    "<iframe src=//example.invalid></iframe>",
    "${alert(1)} {{7*7}} $x^2$ **bold** _it_ `code` # heading",
    "&lt;script&gt; &amp; &#x3C;",
]
HOSTILE = " ".join(PAYLOADS)


def passage(text: str = "First sentence. Second sentence.", **extra) -> Passage:
    fields = {
        "text": text,
        "score": 0.8123,
        "lang": "fr",
        "doc_id": "d1",
        "title": "Titre",
        "source": "fr-a.txt",
        "start": 100,
        "end": 100 + len(text),
    }
    fields.update(extra)
    return Passage(**fields)


def citation(
    n: int = 1, p: Passage | None = None, evidence: str = "Second sentence.", offset: int | None = None
) -> Citation:
    p = p or passage()
    start = p.start + (p.text.find(evidence) if offset is None else offset)
    return Citation(
        n=n,
        passage=p,
        evidence=evidence,
        evidence_lang=p.lang,
        evidence_start=start,
        evidence_end=start + len(evidence),
    )


def answer(reply: str, citations: list[Citation], question: str = "Q?") -> Answer:
    return Answer(question=question, lang="en", reply=reply, citations=citations, found=bool(citations))


ALLOWED_TAGS = {"article", "div", "a", "span", "blockquote", "mark", "details", "summary", "p", "time"}


class _Tags(HTMLParser):
    def __init__(self, markup: str):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.feed(markup)

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))


def assert_only_our_markup(markup: str) -> None:
    """Only the tags and attributes we write; links only to source cards or http(s) pages."""
    for tag, attrs in _Tags(markup).tags:
        assert tag in ALLOWED_TAGS, tag
        assert not any(name.startswith("on") or name in {"src", "style"} for name in attrs), attrs
        href = attrs.get("href")
        assert href is None or href.startswith(("#src-", "https://", "http://")), href


def render_md(markdown: str) -> str:
    markdown_it = pytest.importorskip("markdown_it")
    # GFM-like: tables, strikethrough, linkify off by default in commonmark; html on (worst case).
    return (
        markdown_it.MarkdownIt("commonmark", {"html": True})
        .enable(["table", "strikethrough"])
        .render(markdown)
    )


# --------------------------------------------------------------------------- markdown


@pytest.mark.parametrize("payload", PAYLOADS)
def test_escaped_markdown_renders_back_to_the_same_text_and_no_tags(payload):
    rendered = render_md(escape_markdown(payload))
    assert html.unescape(re.sub(r"</?p>", "", rendered).strip()) == payload
    assert "<script" not in rendered and "<img" not in rendered and "<a " not in rendered


@given(st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), max_size=200))
def test_escape_markdown_never_lets_markup_through(text):
    escaped = escape_markdown(text)
    assert "<" not in escaped and ">" not in escaped
    # Every Markdown-significant character is backslash-escaped.
    assert not re.search(r"(?<!\\)[\[\]()*_`!#|~$]", escaped.replace("\\\\", ""))


def test_reply_markers_become_links_to_their_source_cards_only():
    a = answer("Lead-in:\n\n“Quote one.” [1]\n\n“Quote [7] two.” [2]", [citation(1), citation(2)])
    md = reply_markdown(a, turn=3)
    assert "[\\[1\\]](#src-3-1)" in md and "[\\[2\\]](#src-3-2)" in md
    assert "#src-3-7" not in md and "\\[7\\]" in md  # not a citation: stays text
    rendered = render_md(md)
    assert '<a href="#src-3-1">[1]</a>' in rendered and '<a href="#src-3-2">[2]</a>' in rendered


def test_reply_with_hostile_quotes_renders_as_text():
    a = answer(f"Lead-in:\n\n“{HOSTILE}” [1]", [citation(1)])
    rendered = render_md(reply_markdown(a))
    assert "<script" not in rendered and "<img" not in rendered and "<iframe" not in rendered
    assert re.findall(r'href="([^"]*)"', rendered) == ["#src-1-1"]
    assert "&lt;script&gt;window.__pwned=1&lt;/script&gt;" in rendered


def test_stream_prefixes_grow_and_never_cut_a_link():
    a = answer("Según las fuentes:\n\n“" + "palabra " * 60 + "” [1] [2]", [citation(1), citation(2)])
    md = reply_markdown(a)
    prefixes = list(stream_prefixes(md))
    assert len(prefixes) > 5
    assert prefixes[-1] == md
    for shorter, longer in itertools.pairwise(prefixes):
        assert longer.startswith(shorter) and len(longer) > len(shorter)
    for prefix in prefixes:
        assert prefix.count("](#src-") == prefix.count("[\\[") - prefix.count("\\[\\[")
        assert not re.search(r"\[\\\[\d+\\\]\]\(#src-[\d-]*$", prefix)  # no half link at the end
        assert not prefix.endswith("\\") and not re.search(r"&[a-z]*$", prefix)


def test_stream_prefixes_of_cjk_text_without_spaces():
    md = escape_markdown("資料によると：" + "従業員" * 50)
    prefixes = list(stream_prefixes(md))
    assert len(prefixes) > 5 and prefixes[-1] == md


# --------------------------------------------------------------------------- sources panel


def test_hostile_corpus_text_is_escaped_everywhere_in_a_card():
    p = passage(
        text=f"Intro. {HOSTILE} End.",
        title=HOSTILE,
        source='evil"><script>x</script>.html',
        lang='fr" onmouseover="x',
        url="javascript:alert(1)",
        translations=[
            Translation(
                text=HOSTILE, lang="<b>", doc_id="d2", title=HOSTILE, source="<x>", start=0, end=len(HOSTILE)
            )
        ],
    )
    out = render_citation(citation(1, p, evidence="Intro."), turn=1, lang="en")
    assert_only_our_markup(out)
    assert [a.get("href") for t, a in _Tags(out).tags if t == "a"] == ["#src-1-1"]  # no javascript: link
    assert "&lt;script&gt;window.__pwned=1&lt;/script&gt;" in out
    assert ' lang="' not in out  # an invalid language code never becomes an attribute
    assert "{{7*7}}" in out and "${alert(1)}" in out  # shown as typed


def test_card_layout_id_link_badge_score_and_article_link():
    p = passage(url="https://news.example.com/a?b=1&c=2")
    out = render_citation(citation(2, p), turn=4, lang="de")
    assert 'id="src-4-2"' in out and 'href="#src-4-2"' in out
    assert ">FR</span>" in out and 'title="Français"' in out
    assert "Wert 0.81" in out  # German label, two decimals
    assert (
        'href="https://news.example.com/a?b=1&amp;c=2"' in out and 'rel="noopener noreferrer nofollow"' in out
    )
    assert ' lang="fr"' in out


def test_card_shows_the_articles_date_and_outlet_escaped():
    p = passage(url="https://www.lemonde.fr/a", date="2023-11-20T08:30:00+01:00", outlet="lemonde.fr")
    out = render_citation(citation(1, p), turn=1, lang="en")
    assert '<span class="qa-outlet">lemonde.fr</span>' in out
    assert '<time class="qa-date" datetime="2023-11-20T08:30:00+01:00">2023-11-20</time>' in out
    hostile = passage(date='"><script>x</script>', outlet="<img src=x onerror=alert(1)>")
    out = render_citation(citation(1, hostile), turn=1, lang="en")
    assert_only_our_markup(out)
    assert "&lt;img src=x onerror=alert(1)&gt;" in out and 'datetime="&quot;&gt;&lt;script&gt;' in out
    assert "qa-date" not in render_citation(citation(1, passage()), turn=1, lang="en")  # no date: nothing


def test_outlet_is_the_host_of_a_web_url():
    from qa.retrieval import url_outlet

    assert url_outlet("https://www.spiegel.de/wirtschaft/a.html") == "spiegel.de"
    assert url_outlet("http://News.Example.COM:8080/x") == "news.example.com"
    assert url_outlet("javascript:alert(1)") is None and url_outlet("fr-a.txt") is None
    assert url_outlet(None) is None and url_outlet("http://[bad") is None


def test_evidence_is_highlighted_by_offsets_or_by_search():
    text = "First sentence. Second sentence. Third."
    assert (
        highlight(text, 100, "Second sentence.", 116, 132)
        == "First sentence. <mark>Second sentence.</mark> Third."
    )
    # Offsets from another article: found by its text.
    assert "<mark>Third.</mark>" in highlight(text, 100, "Third.", 5, 11)
    # Not in this passage at all: no mark, still escaped.
    assert highlight("<b>x</b>", 0, "elsewhere", 50, 59) == "&lt;b&gt;x&lt;/b&gt;"
    # Escaping inside and around the mark.
    assert highlight("a <i> b", 0, "<i>", 2, 5) == "a <mark>&lt;i&gt;</mark> b"


def test_translations_are_folded_alternates_without_duplicates():
    tr = Translation(
        text="Zweiter Satz.", lang="de", doc_id="d2", title="Titel", source="de-a.txt", start=0, end=13
    )
    ja = Translation(text="二番目。", lang="ja", doc_id="d3", title="題", source="ja-a.txt", start=5, end=9)
    out = render_citation(citation(1, passage(translations=[tr, ja, tr])), turn=1, lang="en")
    assert out.count("<details") == 1 and "<summary>Also in other languages" in out
    assert out.count("Zweiter Satz.") == 1 and "二番目。" in out and "Titel" in out
    assert ' lang="de"' in out and ' lang="ja"' in out
    assert_only_our_markup(out)


def test_sources_panel_latest_question_first_and_open():
    a1 = answer("r [1]", [citation(1)], question="first <q>")
    a2 = answer("r [1]", [citation(1)], question="second")
    out = render_sources([a1, a2], "en")
    assert out.index("src-2-1") < out.index("src-1-1")
    assert out.count('<details class="qa-turn" open>') == 1
    assert "first &lt;q&gt;" in out
    assert_only_our_markup(out)


def test_empty_panel_and_answers_without_citations():
    assert "qa-sources-empty" in render_sources([], "fr")
    assert html.escape(LABELS["fr"]["sources_empty"]) in render_sources([answer("Rien.", [])], "fr")
    assert empty_sources("x").count("<p>") == 1


# --------------------------------------------------------------------------- labels


def test_every_language_has_every_label():
    for lang, labels in LABELS.items():
        assert labels.keys() == LABELS["en"].keys(), lang
        assert all(value.strip() for value in labels.values()), lang


@pytest.mark.parametrize(
    "header, lang",
    [
        (None, "en"),
        ("", "en"),
        ("fr-CA,fr;q=0.9,en;q=0.8", "fr"),
        ("ja", "ja"),
        ("zh-Hans-CN", "zh"),
        ("pt-BR,es;q=0.5,de;q=0.7", "de"),
        ("xx, yy;q=0.2", "en"),
        ("de;q=0, es", "es"),
        ("en;q=abc, ja;q=0.1", "ja"),
    ],
)
def test_pick_lang_follows_accept_language(header, lang):
    assert pick_lang(header) == lang


# --------------------------------------------------------------------------- the filter row


def test_filter_row_values_become_asks_filters_and_empty_ones_are_left_out():
    assert chat_filters([], "", "  ", "") == {}
    assert chat_filters(["de", "fr"], " 2023-11-17 ", "2023-11", "bbc.co.uk, lemonde.fr") == {
        "langs": ["de", "fr"],
        "since": "2023-11-17",
        "until": "2023-11",
        "sources": "bbc.co.uk, lemonde.fr",
    }


@pytest.mark.parametrize(
    "values, message",
    [
        (([], "17/11/2023", "", ""), "since '17/11/2023' is not a date"),
        (([], "", "last week", ""), "until 'last week' is not a date"),
        (([], "2023-11-30", "2023-11-01", ""), "since 2023-11-30 is after until 2023-11-01"),
        ((["German"], "", "", ""), "'German' is not a language code"),
        ((5, "", "", ""), "langs must be a list of strings"),
    ],
)
def test_bad_filter_values_are_named(values, message):
    from qa.errors import InvalidQuestionError

    with pytest.raises(InvalidQuestionError, match=re.escape(message)):
        chat_filters(*values)


def test_language_choices_name_each_language_natively_with_its_code():
    assert language_choices(["fr", "de"]) == [("Deutsch (de)", "de"), ("Français (fr)", "fr")]
    assert ("日本語 (ja)", "ja") in language_choices()  # before the index is known: every language named
