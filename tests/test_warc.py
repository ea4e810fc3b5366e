"""Web archives: HTML responses become articles with URL, crawl date and the HTTP charset; the
rest is counted; damage is skipped with its offset while the build completes."""

from __future__ import annotations

from pathlib import Path

import pytest

from qa.config import Settings
from qa.index.build import build_index
from qa.ingest import load_corpus, read_file
from tests.fakes import FakeEmbedder
from tests.warc_files import page, write_warc

CORPUS = Path(__file__).resolve().parent.parent / "corpus"


def corpus_paragraphs(title: str, name: str) -> tuple[str, list[str]]:
    """(title, paragraphs) of a seed corpus article: real text."""
    lines = [p.strip() for p in (CORPUS / name).read_text(encoding="utf-8").split("\n\n") if p.strip()]
    return title, [p for p in lines if len(p) > 80][:6]


FR = corpus_paragraphs("Des employés d'OpenAI vers Microsoft", "fr-employes-openai-vers-microsoft.txt")
DE = corpus_paragraphs("Nadella, der Königsmacher", "de-nadella-koenigsmacher.txt")
JA = corpus_paragraphs("ナデラ氏はキングメーカー", "ja-nadella-kingmaker.txt")


def archive_records() -> list[dict]:
    fr_page = page(FR[0], FR[1], '<meta property="article:published_time" content="2023-11-21T09:30:00+01:00">')
    ja_page = page(JA[0], JA[1])  # no <meta charset>: only the HTTP header says Shift_JIS
    return [
        {"type": "request", "url": "https://news.example.fr/a"},
        {"url": "https://news.example.fr/a", "body": fr_page.encode(), "date": "2024-03-01T10:00:00Z"},
        {"url": "https://example.jp/n", "body": ja_page.encode("shift_jis"),
         "content_type": "text/html; charset=Shift_JIS"},
        {"url": "https://example.de/k", "body": page(DE[0], DE[1][:2]).encode(), "date": "2024-01-01T00:00:00Z"},
        {"url": "https://example.de/k", "body": page(DE[0], DE[1]).encode(), "date": "2024-02-01T00:00:00Z"},
        {"type": "revisit", "url": "https://news.example.fr/a", "body": b""},
        {"url": "https://example.de/gone", "status": 404, "body": page("Not found", ["Gone."]).encode()},
        {"url": "https://example.de/logo.png", "content_type": "image/png", "body": b"\x89PNG\r\n\x1a\n"},
        {"url": "https://example.de/bad", "body": b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)) * 8},
    ]


@pytest.mark.parametrize("name", ["crawl.warc.gz", "crawl.warc"])
def test_archive_pages_become_articles(tmp_path: Path, name: str) -> None:
    write_warc(tmp_path / name, archive_records(), gzip=name.endswith(".gz"))
    articles, skipped = load_corpus(tmp_path)
    by_url = {article.url: article for article in articles}
    assert set(by_url) == {"https://news.example.fr/a", "https://example.jp/n", "https://example.de/k"}
    fr, ja, de = by_url["https://news.example.fr/a"], by_url["https://example.jp/n"], by_url["https://example.de/k"]
    assert fr.title == FR[0] and FR[1][0][:60] in fr.text and fr.lang == "fr"
    assert fr.crawl_date == "2024-03-01T10:00:00+00:00" and fr.outlet == "news.example.fr"
    assert fr.date and fr.date.startswith("2023-11-21")  # the page's own date, not the crawl's
    assert ja.encoding == "Shift_JIS" and JA[1][0][:30] in ja.text  # decoded with the HTTP charset
    assert DE[1][-1][:60] in de.text and de.crawl_date.startswith("2024-02-01")  # the newer capture
    assert all(article.source.startswith(f"{name}#") for article in articles)
    reasons = {skip.source: skip.reason for skip in skipped}
    summary = reasons[name]
    for counted in ("1 revisit", "1 request", "1 status 404", "1 not HTML", "1 older capture of the same URL"):
        assert counted in summary
    bad = [reason for source, reason in reasons.items() if source != name]
    assert len(bad) == 1 and bad[0].startswith("https://example.de/bad: binary file")


@pytest.mark.parametrize("fraction", [0.45, 0.6, 0.93])  # inside headers, inside bodies
def test_truncated_archive_keeps_the_pages_before_the_damage(tmp_path: Path, fraction: float) -> None:
    records = [
        {"url": f"https://example.de/{n}", "body": page(f"{DE[0]} {n}", [f"Teil {n}.", *DE[1]]).encode()}
        for n in range(6)
    ]
    whole = write_warc(tmp_path / "whole" / "crawl.warc.gz", records).read_bytes()
    cut = tmp_path / "corpus" / "crawl.warc.gz"
    cut.parent.mkdir()
    cut.write_bytes(whole[: int(len(whole) * fraction)])
    (tmp_path / "corpus" / "other.txt").write_text("Titre\n\nUn autre article, entier.", encoding="utf-8")
    articles, skipped = load_corpus(tmp_path / "corpus")
    from_archive = [a for a in articles if a.source.startswith("crawl.warc.gz")]
    assert 1 <= len(from_archive) < 6 and any(a.source == "other.txt" for a in articles)
    assert all("Teil" in a.text and DE[1][-1][-40:] in a.text for a in from_archive)  # whole pages only
    reasons = [s.reason for s in skipped if s.source.startswith("crawl.warc.gz")]
    assert any(r.startswith(("truncated record", "damaged or truncated")) for r in reasons)


def test_file_that_is_not_an_archive_is_skipped_with_a_reason(tmp_path: Path) -> None:
    (tmp_path / "notes.warc").write_text("just some text, not WARC\n", encoding="utf-8")
    articles, skipped = load_corpus(tmp_path)
    assert not articles and skipped[0].source == "notes.warc"
    assert skipped[0].reason.startswith("not a WARC file")


def test_reindexing_an_unchanged_archive_embeds_nothing(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    write_warc(corpus / "crawl.warc.gz", archive_records())
    settings = Settings(index_dir=tmp_path / "index", chunk_tokens=64)
    first = build_index(corpus, settings=settings, embedder=FakeEmbedder())
    assert first.articles == 3 and first.embedded > 0 and first.kinds == {"warc": 3}
    assert set(first.encodings) == {"UTF-8", "Shift_JIS"}
    embedder = FakeEmbedder()
    again = build_index(corpus, settings=settings, embedder=embedder)
    assert again.embedded == 0 and again.reused == first.passages and embedder.embedded == []


def test_read_file_names_the_archive(tmp_path: Path) -> None:
    path = write_warc(tmp_path / "crawl.warc.gz", archive_records())
    assert len(read_file(path, tmp_path)) == 3


def test_worker_processes_give_the_same_articles_in_the_same_order(tmp_path: Path, monkeypatch) -> None:
    from qa.ingest import formats
    from qa.readers import warc

    records = [
        {"url": f"https://example.de/{n}", "body": page(f"{DE[0]} {n}", [f"Teil {n}.", *DE[1]]).encode()}
        for n in range(40)
    ]
    path = write_warc(tmp_path / "crawl.warc.gz", [*records, *archive_records()])
    serial = warc.read_warc(path, "crawl.warc.gz", formats._warc_article, max_bytes=10**7, workers=1)
    monkeypatch.setattr(warc, "_PARALLEL_MIN_BYTES", 0)  # parallel even for a small archive
    parallel = warc.read_warc(path, "crawl.warc.gz", formats._warc_article, max_bytes=10**7, workers=2)
    assert [a.model_dump() for a in parallel[0]] == [a.model_dump() for a in serial[0]]
    assert parallel[1] == serial[1] and len(serial[0]) == 43
