"""Each input format -> articles: text, Markdown, HTML, JSON Lines (from decoded text); web archives,
feeds and PDFs (from the file). The readers in `qa.readers` parse; these build the articles."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from pathlib import Path

from qa.ingest.articles import article_of_paragraphs, build_article, looks_like_title, split_title
from qa.ingest.clean import clean_lines, normalize_line
from qa.ingest.files import check_regular_file, decode, read_bytes, unexpected_failure
from qa.lang import normalize_lang_code
from qa.models import Article, SkippedFile
from qa.readers.base import Skip
from qa.readers.dates import iso_date
from qa.readers.feed import parse_feed
from qa.readers.html import FallbackHTMLText, extract_html, page_host
from qa.readers.markdown import front_matter, markdown_lines
from qa.readers.pdf import read_pdf_pages
from qa.readers.warc import WarcPage, read_warc

__all__ = ["FILE_READERS", "SUPPORTED_EXTENSIONS", "TEXT_READERS"]

SUPPORTED_EXTENSIONS = (
    ".atom", ".htm", ".html", ".jsonl", ".markdown", ".md", ".pdf", ".rss", ".txt", ".warc", ".warc.gz", ".xml"
)
# Extraction processes for a large web archive: one core stays with the reader of the archive. On 2
# cores that is 1, in process: 2 workers there ran at half the speed (benchmarks/bench_warc.py).
_WARC_WORKERS = max(1, (os.cpu_count() or 1) - 1)


def _read_text(text: str, source: str) -> tuple[list[Article], list[SkippedFile]]:
    title, body = split_title(text.split("\n"))
    return [build_article(title, body, source)], []


def _read_markdown(text: str, source: str) -> tuple[list[Article], list[SkippedFile]]:
    fields, text = front_matter(text)
    heading, lines = markdown_lines(text)
    title = heading or fields.get("title")
    if title is None:
        title, lines = split_title(lines)
    lang = normalize_lang_code(fields["lang"]) if fields.get("lang") else None
    return [
        build_article(title, lines, source, lang=lang, url=fields.get("url"), date=fields.get("date"))
    ], []


def _read_html(text: str, source: str) -> tuple[list[Article], list[SkippedFile]]:
    title, body, url, date, meta = extract_html(text)
    return [build_article(title, body.split("\n"), source, url=url, date=date, **meta)], []


def _warc_article(page: WarcPage, source: str) -> Article:
    """One HTML response of a web archive: decoded with its HTTP charset, its URL and crawl date kept."""
    text, encoding = decode(page.body, markup=True, transport=page.charset)
    title, body, url, date, meta = extract_html(text)
    meta.update(outlet=meta.get("outlet") or page_host(page.url), crawl_date=iso_date(page.date))
    return build_article(
        title, body.split("\n"), source, url=page.url or url, date=date, encoding=encoding, **meta
    )


def _read_warc(path: Path, source: str, max_bytes: int) -> tuple[list[Article], list[SkippedFile]]:
    check_regular_file(path)
    return read_warc(path, source, _warc_article, max_bytes=max_bytes, workers=_WARC_WORKERS)


def _read_jsonl(text: str, source: str) -> tuple[list[Article], list[SkippedFile]]:
    """One article per line; a bad line is reported with its number and the others still load."""
    articles, skipped = [], []
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        line_source = f"{source}#{number}"
        try:
            articles.append(_jsonl_article(line, line_source))
        except Skip as skip:
            skipped.append(SkippedFile(source=line_source, reason=f"line {number}: {skip.reason}"))
        except Exception as exc:  # noqa: BLE001 -- a reader bug on one article must not lose the others
            skipped.append(SkippedFile(source=line_source, reason=f"line {number}: {unexpected_failure(line_source, exc)}"))
    if not articles and not skipped:
        raise Skip("empty file")
    return articles, skipped


def _jsonl_article(line: str, source: str) -> Article:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as error:
        raise Skip(f"invalid JSON ({error.msg} at column {error.colno})") from None
    except RecursionError:
        raise Skip("invalid JSON (nested too deeply)") from None
    if not isinstance(record, dict):
        raise Skip(f"expected a JSON object with a 'text' field, not {type(record).__name__}")
    text = record.get("text")
    if not isinstance(text, str) or not text.strip():
        raise Skip("'text' is missing or is not a non-empty string")
    title, url, date, declared = (_optional_string(record, key) for key in ("title", "url", "date", "lang"))
    for key, value in (("text", text), ("title", title), ("url", url), ("date", date), ("lang", declared)):
        _check_no_surrogate(key, value)
    lang = normalize_lang_code(declared) if declared else None
    if declared and lang is None:
        raise Skip(f"'lang' {declared!r} is not an ISO 639-1 language code (such as 'en' or 'fr')")
    lines = text.split("\n")
    if not title:
        title, lines = split_title(lines)
    return build_article(title, lines, source, lang=lang, url=url, date=date)


_SURROGATE = re.compile("[\ud800-\udfff]")


def _check_no_surrogate(key: str, value: str | None) -> None:
    # JSON can escape half of a UTF-16 pair ("\ud800") alone: no text can hold it.
    found = _SURROGATE.search(value or "")
    if found:
        raise Skip(
            f"{key!r} holds a lone surrogate \\u{ord(found.group()):04x} at character {found.start()}: "
            "an escape of half a UTF-16 pair, which is not text; fix that escape"
        )


def _optional_string(record: dict[str, object], key: str) -> str | None:
    value = record.get(key)
    if value is None or isinstance(value, str):
        return value
    raise Skip(f"{key!r} must be a string, not {type(value).__name__}")


TEXT_READERS: dict[str, Callable[[str, str], tuple[list[Article], list[SkippedFile]]]] = {
    ".txt": _read_text,
    ".md": _read_markdown,
    ".markdown": _read_markdown,
    ".html": _read_html,
    ".htm": _read_html,
    ".jsonl": _read_jsonl,
}


def _read_feed(path: Path, source: str, max_bytes: int) -> tuple[list[Article], list[SkippedFile]]:
    """One article per entry of an RSS/Atom feed; a bad entry is reported and the others load."""
    articles, skipped = [], []
    for entry in parse_feed(read_bytes(path, max_bytes)):
        entry_source = f"{source}#{entry.number}"
        body = FallbackHTMLText.parse(entry.html).text() if "<" in entry.html else entry.html
        meta = {"outlet": entry.outlet or page_host(entry.link), "author": entry.author}
        try:
            articles.append(build_article(
                entry.title, body.split("\n"), entry_source, url=entry.link, date=entry.date,
                encoding=entry.encoding, is_summary=entry.is_summary, **meta,
            ))
        except Skip as skip:
            skipped.append(SkippedFile(source=entry_source, reason=f"entry {entry.number}: {skip.reason}"))
    return articles, skipped


def _read_pdf(path: Path, source: str, max_bytes: int) -> tuple[list[Article], list[SkippedFile]]:
    """A PDF's text layer as one article; `page_starts` keeps where each page begins in the text."""
    pdf = read_pdf_pages(read_bytes(path, max_bytes))
    pages = [clean_lines(page.split("\n")) for page in pdf.pages]
    title = normalize_line(pdf.title) if pdf.title else None
    first = next((page for page in pages if page), [])
    if not title and len(first) > 1 and looks_like_title(first[0]):
        title = first.pop(0)
    paragraphs: list[str] = []
    starts: list[int] = []
    offset = 0
    for page in pages:
        starts.append(offset)
        for paragraph in page:
            paragraphs.append(paragraph)
            offset += len(paragraph) + 2  # the blank line that joins paragraphs
    article = article_of_paragraphs(title, paragraphs, source, date=pdf.date, author=pdf.author, page_starts=starts)
    return [article], []


FILE_READERS: dict[str, Callable[[Path, str, int], tuple[list[Article], list[SkippedFile]]]] = {
    ".warc": _read_warc,
    ".warc.gz": _read_warc,
    ".rss": _read_feed,
    ".atom": _read_feed,
    ".xml": _read_feed,
    ".pdf": _read_pdf,
}
