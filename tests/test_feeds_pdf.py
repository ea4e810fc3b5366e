"""RSS/Atom feeds and PDFs as corpus files: entries and pages become articles with their metadata."""

from __future__ import annotations

from pathlib import Path

import pytest

from qa.config import Settings
from qa.index.build import build_index
from qa.index.load import open_index
from qa.ingest import load_corpus
from qa.retrieval import to_passage
from tests.fakes import FakeEmbedder
from tests.pdf_files import encrypt, make_pdf

CORPUS = Path(__file__).resolve().parent.parent / "corpus"


def paragraphs(name: str, n: int) -> list[str]:
    """Real paragraphs of a seed corpus article, with typographic quotes made plain (PDF core fonts)."""
    text = (CORPUS / name).read_text(encoding="utf-8").replace("’", "'").replace("“", '"').replace("”", '"')
    return [p.strip() for p in text.split("\n\n") if len(p.strip()) > 120][:n]


FR = paragraphs("fr-pourquoi-microsoft-a-besoin-de-sam-altman.txt", 6)
DE = paragraphs("de-nadella-koenigsmacher.txt", 4)

RSS = f"""<?xml version="1.0" encoding="utf-8"?>
<rss version="2.0" xmlns:content="http://purl.org/rss/1.0/modules/content/"
     xmlns:dc="http://purl.org/dc/elements/1.1/">
<channel><title>La Gazette Tech</title><link>https://gazette.example.fr/</link>
<item><title>Des employés d'OpenAI vers Microsoft</title>
  <link>https://gazette.example.fr/openai</link><pubDate>Tue, 21 Nov 2023 09:30:00 +0100</pubDate>
  <dc:creator>Claire Martin</dc:creator>
  <description>Un résumé court.</description>
  <content:encoded><![CDATA[{"".join(f"<p>{p}</p>" for p in FR[:3])}]]></content:encoded></item>
<item><title>Nadella, der Königsmacher</title><link>https://gazette.example.fr/nadella</link>
  <pubDate>Wed, 22 Nov 2023 08:00:00 GMT</pubDate>
  <description><![CDATA[<p>{DE[0]}</p>]]></description></item>
</channel></rss>
"""

ATOM = f"""<?xml version="1.0" encoding="utf-8"?>
<feed xmlns="http://www.w3.org/2005/Atom"><title>Tech Wochenschau</title><id>urn:x</id>
<updated>2023-11-22T08:00:00Z</updated>
<entry><title>Nadella</title><id>urn:e1</id><link href="https://woche.example.de/n"/>
<published>2023-11-22T08:00:00+01:00</published><updated>2023-11-23T08:00:00Z</updated>
<author><name>Jonas Weber</name></author>
<content type="html">{"".join(f"&lt;p&gt;{p}&lt;/p&gt;" for p in DE[1:3])}</content></entry>
</feed>
"""


def test_rss_entries_are_articles_with_link_date_outlet_author(tmp_path: Path) -> None:
    (tmp_path / "gazette.rss").write_text(RSS, encoding="utf-8")
    articles, skipped = load_corpus(tmp_path)
    assert not skipped
    full, summary = articles
    assert (full.source, summary.source) == ("gazette.rss#1", "gazette.rss#2")
    assert full.title == "Des employés d'OpenAI vers Microsoft" and full.url == "https://gazette.example.fr/openai"
    assert FR[2][:80] in full.text and "résumé court" not in full.text  # the full text, not the summary
    assert full.is_summary is False and summary.is_summary is True  # labelled
    assert full.date == "2023-11-21T08:30:00+00:00" and summary.date == "2023-11-22T08:00:00+00:00"
    assert full.outlet == summary.outlet == "La Gazette Tech" and full.author == "Claire Martin"
    assert full.lang == "fr" and summary.lang == "de" and DE[0][:80] in summary.text


def test_atom_entry(tmp_path: Path) -> None:
    (tmp_path / "woche.atom").write_text(ATOM, encoding="utf-8")
    (article,), _ = load_corpus(tmp_path)
    assert article.url == "https://woche.example.de/n" and article.outlet == "Tech Wochenschau"
    assert article.date == "2023-11-22T07:00:00+00:00" and article.author == "Jonas Weber"
    assert DE[2][:80] in article.text and article.is_summary is False


@pytest.mark.parametrize("content", [b"this is not xml at all", b"<html><body><p>A page</p></body></html>"])
def test_a_file_that_is_not_a_feed_is_skipped_with_the_reason(tmp_path: Path, content: bytes) -> None:
    (tmp_path / "news.xml").write_bytes(content)
    (tmp_path / "ok.txt").write_text("Titre\n\nUn article qui se lit.", encoding="utf-8")
    articles, skipped = load_corpus(tmp_path)
    assert [a.source for a in articles] == ["ok.txt"]
    assert skipped[0].source == "news.xml"
    assert skipped[0].reason.startswith(("not an RSS or Atom feed", "a feed without entries"))


def test_pdf_pages_are_kept_for_citations(tmp_path: Path) -> None:
    pdf = make_pdf([FR[:2], FR[2:4], FR[4:6]], title="Des employés d'OpenAI vers Microsoft",
                   author="Claire Martin", created="D:20231121093000+01'00'")
    (tmp_path / "rapport.pdf").write_bytes(pdf)
    (article,), skipped = load_corpus(tmp_path)
    assert not skipped and article.title == "Des employés d'OpenAI vers Microsoft" and article.lang == "fr"
    assert article.author == "Claire Martin" and article.date == "2023-11-21T09:30:00+01:00"
    assert len(article.page_starts) == 3
    for page, paragraph in ((1, FR[0]), (2, FR[2]), (3, FR[5])):
        at = article.text.index(paragraph[:40])
        assert article.page_at(at) == page


def test_a_passage_names_its_pdf_page(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "rapport.pdf").write_bytes(make_pdf([FR[:2], FR[2:4], FR[4:6]], title="Rapport"))
    build_index(corpus, settings=Settings(index_dir=tmp_path / "index", chunk_tokens=64), embedder=FakeEmbedder())
    index = open_index(tmp_path / "index")
    page_text = {n + 1: " ".join(" ".join(FR[2 * n : 2 * n + 2]).split()) for n in range(3)}
    seen = set()
    for row in range(len(index.chunks)):
        passage = to_passage(index, row, 0.0)
        start = " ".join(passage.text.split())[:30]
        # The page the passage starts on (a passage may start on the last "?" of the page before).
        on_next = start[:1] in "?!.»" and start[1:].strip() in page_text.get(passage.page + 1, "")
        assert start in page_text[passage.page] or on_next, (passage.page, start)
        seen.add(passage.page)
    assert seen == {1, 2, 3}


def test_pdf_without_text_layer_or_locked_is_skipped_with_the_reason(tmp_path: Path) -> None:
    (tmp_path / "scan.pdf").write_bytes(make_pdf([[], []]))
    (tmp_path / "locked.pdf").write_bytes(encrypt(make_pdf([FR[:2]]), "secret"))
    (tmp_path / "open.pdf").write_bytes(encrypt(make_pdf([FR[:2]]), ""))  # locked against editing only
    (tmp_path / "broken.pdf").write_bytes(b"%PDF-1.4\nnot really a pdf")
    articles, skipped = load_corpus(tmp_path)
    assert [a.source for a in articles] == ["open.pdf"]
    reasons = {s.source: s.reason for s in skipped}
    assert reasons["scan.pdf"].startswith("no text layer (2 page(s)")
    assert reasons["locked.pdf"].startswith("encrypted PDF")
    assert reasons["broken.pdf"].startswith("damaged PDF")
