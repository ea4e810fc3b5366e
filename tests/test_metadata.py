"""The metadata a news reader needs, from HTML pages: publication date (ISO 8601), outlet, author."""

from __future__ import annotations

from pathlib import Path

import pytest

from qa.ingest import read_file
from qa.readers.dates import iso_date

CORPUS = Path(__file__).resolve().parent.parent / "corpus"
BODY = [p for p in (CORPUS / "de-nadella-koenigsmacher.txt").read_text(encoding="utf-8").split("\n\n") if len(p) > 150][:4]


def page(head: str, extra_body: str = "") -> str:
    paragraphs = "".join(f"<p>{p}</p>" for p in BODY)
    return (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>Nadella, der Königsmacher</title>{head}</head>"
        f"<body><article><h1>Nadella, der Königsmacher</h1>{extra_body}{paragraphs}</article></body></html>"
    )


@pytest.mark.parametrize(
    ("head", "body", "date"),
    [
        ('<meta property="article:published_time" content="2023-11-21T09:30:00+01:00">', "", "2023-11-21"),
        (
            (
                '<script type="application/ld+json">{"@context": "https://schema.org", "@type": "NewsArticle", '
                '"headline": "Nadella", "datePublished": "2023-11-22T08:00:00Z"}</script>'
            ),
            "",
            "2023-11-22",
        ),
        ("", '<time datetime="2023-11-23T10:00:00+01:00">23. November 2023</time>', "2023-11-23"),
    ],
    ids=["article:published_time", "json-ld", "time"],
)
def test_publication_date_from_the_page(tmp_path: Path, head: str, body: str, date: str) -> None:
    (tmp_path / "page.html").write_text(page(head, body), encoding="utf-8")
    (article,) = read_file(tmp_path / "page.html", tmp_path)
    assert article.date == date


def test_outlet_and_author(tmp_path: Path) -> None:
    head = ('<meta property="og:site_name" content="Tech Wochenschau">'
            '<meta name="author" content="Jonas Weber">')
    (tmp_path / "page.html").write_text(page(head), encoding="utf-8")
    (article,) = read_file(tmp_path / "page.html", tmp_path)
    assert (article.outlet, article.author) == ("Tech Wochenschau", "Jonas Weber")


def test_outlet_falls_back_to_the_host_of_the_page_url(tmp_path: Path) -> None:
    head = '<link rel="canonical" href="https://www.woche.example.de/2023/nadella">'
    (tmp_path / "page.html").write_text(page(head), encoding="utf-8")
    (article,) = read_file(tmp_path / "page.html", tmp_path)
    assert article.url == "https://www.woche.example.de/2023/nadella" and article.outlet == "woche.example.de"


@pytest.mark.parametrize(
    ("value", "iso"),
    [
        ("2023-11-21", "2023-11-21"),
        ("2023-11-21T09:30:00+01:00", "2023-11-21T09:30:00+01:00"),
        ("2023-11-21T08:30:00Z", "2023-11-21T08:30:00+00:00"),
        ("Tue, 21 Nov 2023 09:30:00 +0100", "2023-11-21T09:30:00+01:00"),
        ("next Tuesday", None),
        (None, None),
    ],
)
def test_dates_normalised_to_iso_8601(value, iso) -> None:
    assert iso_date(value) == iso
