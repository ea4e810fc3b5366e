"""Cleaned paragraphs -> an Article: its title, language and stable id."""

from __future__ import annotations

import hashlib
import unicodedata
from collections.abc import Iterable

from qa.chunk import split_sentences
from qa.ingest.clean import clean_lines, is_boilerplate, normalize_line, word_count
from qa.lang import detect_language
from qa.models import Article
from qa.readers.base import Skip

__all__ = [
    "article_of_paragraphs",
    "build_article",
    "looks_like_title",
    "make_doc_id",
    "split_title",
    "title_from_text",
]

_DOC_ID_CHARS = 20


def make_doc_id(title: str, text: str) -> str:
    """A stable id from the normalised title and text: re-ingesting the same article gives the same id."""
    normalized = "\n".join(" ".join(unicodedata.normalize("NFC", part).split()) for part in (title, text))
    return hashlib.sha256(normalized.encode("utf-8")).hexdigest()[:_DOC_ID_CHARS]


def build_article(
    title: str | None,
    body_lines: Iterable[str],
    source: str,
    *,
    lang: str | None = None,
    url: str | None = None,
    date: str | None = None,
    **meta: object,
) -> Article:
    """An article of cleaned paragraphs; `meta`: further Article fields (outlet, author, ...)."""
    paragraphs = clean_lines(body_lines)
    title = normalize_line(title) if title else None
    if title and paragraphs and paragraphs[0] == title:
        paragraphs = paragraphs[1:]  # HTML extractors repeat the <h1> at the top of the text
    return article_of_paragraphs(title, paragraphs, source, lang=lang, url=url, date=date, **meta)


def article_of_paragraphs(
    title: str | None, paragraphs: list[str], source: str, *, lang: str | None = None, **fields: object
) -> Article:
    """An article of kept paragraphs, joined by a blank line; without a title, its first sentence is one.

    Raises Skip when no paragraph is left. `fields`: further Article fields (url, date, author, ...).
    """
    if not paragraphs:
        raise Skip("empty: no text left after removing boilerplate")
    text = "\n\n".join(paragraphs)
    title = title or title_from_text(text)
    return Article(
        doc_id=make_doc_id(title, text),
        title=title,
        text=text,
        lang=lang or detect_language(text),
        source=source,
        **fields,
    )


def split_title(lines: list[str]) -> tuple[str | None, list[str]]:
    """(title, body lines): the first content line is the title if it reads like one and more follows."""
    for index, raw in enumerate(lines):
        line = normalize_line(raw)
        if not line or is_boilerplate(line):
            continue
        rest = lines[index + 1 :]
        has_body = any(normalize_line(other) and not is_boilerplate(other) for other in rest)
        if has_body and looks_like_title(line):
            return line, rest
        return None, lines[index:]
    return None, []


def looks_like_title(line: str) -> bool:
    """Whether a line is short enough, and unlike a sentence enough, to be a title."""
    return len(line) <= 150 and word_count(line) <= 25 and line[-1] not in ".。"


def title_from_text(text: str) -> str:
    """For an article without a title: its first sentence, shortened to about 100 characters."""
    spans = split_sentences(text)
    first = text[spans[0][0] : spans[0][1]] if spans else text
    if len(first) <= 100:
        return first
    cut = first.rfind(" ", 0, 100)
    cut = cut if cut >= 50 else 100
    return first[:cut].rstrip(" ,;:") + "…"
