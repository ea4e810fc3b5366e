"""Pydantic models at the public boundary: articles, passages, citations, answers."""

from __future__ import annotations

import bisect
import datetime as dt
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["Answer", "Article", "Chunk", "Citation", "Filters", "Passage", "SkippedFile", "Translation"]


class Article(BaseModel):
    """One article of the corpus, as read from a file (or one line of a `.jsonl` file)."""

    model_config = ConfigDict(frozen=True)

    # An index stores an article's fields by position (`qa.index.store.ARTICLE_FIELDS`): a new
    # field goes last.
    doc_id: str = Field(description="Stable id: a hash of the article's text and title.")
    title: str
    text: str = Field(description="The article's body text; passage offsets point into it.")
    lang: str = Field(description="ISO 639-1 code of the detected (or declared) language.")
    source: str = Field(description="Corpus-relative file name, with `#N` for a line of a .jsonl file.")
    url: str | None = None
    date: str | None = None
    encoding: str | None = Field(None, description="The encoding the file was read in: 'UTF-8', 'GB18030', ...")
    outlet: str | None = Field(None, description="Who published it: the site's or feed's name, else the URL's host.")
    author: str | None = None
    crawl_date: str | None = Field(None, description="When a web archive captured the page (ISO 8601).")
    is_summary: bool | None = Field(
        None, description="Feeds: True when the feed carried only the entry's summary, not its full text."
    )
    page_starts: list[int] | None = Field(
        None, description="PDF: the offset in `text` where each page starts (page 1 first)."
    )

    def page_at(self, offset: int) -> int | None:
        """The PDF page (from 1) that holds character `offset` of the text; None for other kinds."""
        if not self.page_starts:
            return None
        return bisect.bisect_right(self.page_starts, offset) or 1


class Chunk(BaseModel):
    """A passage of an article as stored in the index (no score)."""

    model_config = ConfigDict(frozen=True)

    doc_id: str
    chunk_id: int = Field(description="Position of the passage within its article.")
    text: str = Field(description="Exactly `article.text[start:end]`.")
    start: int = Field(ge=0, description="Character offset of the passage in the article text.")
    end: int = Field(ge=0)
    n_tokens: int = Field(ge=0, description="Model tokens, special tokens included.")


class Translation(BaseModel):
    """A passage in another language that says the same as the passage it belongs to."""

    text: str
    lang: str
    doc_id: str
    title: str
    source: str
    start: int
    end: int


class Passage(BaseModel):
    """A ranked passage returned by `qa.retrieve`."""

    text: str
    score: float = Field(description="Ranking score: language-standardized similarity plus lexical match.")
    similarity: float = Field(0.0, description="Cosine between the question and the passage.")
    lang: str
    doc_id: str
    title: str
    source: str
    start: int = Field(description="Character offset of the passage in its article's text.")
    end: int
    url: str | None = None
    date: str | None = Field(None, description="The article's publication date (ISO 8601), when known.")
    outlet: str | None = Field(
        None, description="Who published it: the site's name, else the host of the article's URL."
    )
    author: str | None = None
    page: int | None = Field(None, description="PDF: the page the passage starts on, from 1.")
    translations: list[Translation] = Field(default_factory=list)


class Citation(BaseModel):
    """A cited passage and the exact evidence sentence(s) quoted from it."""

    n: int = Field(ge=1, description="The marker number: [n] in the reply.")
    passage: Passage
    evidence: str = Field(description="The quoted sentence(s), verbatim from the article.")
    evidence_lang: str
    evidence_start: int = Field(description="Offset of the evidence in its article's text.")
    evidence_end: int
    date: str | None = Field(None, description="The cited article's date, when it has one.")
    evidence_translation: Translation | None = Field(
        None,
        description="The same sentence in another language, found among the candidates (the asker's "
        "language when it is one of the two): shown beside the quote instead of as another quote. Its "
        "text is verbatim at start:end of its own article.",
    )


class Answer(BaseModel):
    """A reply in the asker's language, with the passages it cites."""

    question: str
    lang: str = Field(description="Detected language of the question.")
    reply: str = Field(description="Plain-text reply with [n] markers.")
    citations: list[Citation] = Field(default_factory=list)
    found: bool = Field(description="False when the corpus does not cover the question.")
    weak_evidence: bool = Field(
        False, description="True when the best evidence is weak: the reply says so instead of asserting it."
    )
    # Generated answers (qa.generate), only when an LLM server is configured.
    mode: Literal["extractive", "generated"] = Field(
        "extractive",
        description="'generated': the reply was written by the configured LLM and each sentence checked "
        "against its citation; 'extractive': the reply quotes the evidence.",
    )
    dropped: list[str] = Field(
        default_factory=list, description="Generated sentences removed as unsupported by their citation."
    )
    fallback_reason: str | None = Field(
        None, description="Why a generated reply was asked for but the quotes are shown instead."
    )


class SkippedFile(BaseModel):
    """A corpus file (or .jsonl line) that could not be ingested, and why."""

    source: str
    reason: str


class Filters(BaseModel):
    """Which passages a question may find (`qa.filters.make_filters` checks and builds it):
    every given condition holds. An article without a date never passes `since` or `until`."""

    model_config = ConfigDict(frozen=True)

    langs: tuple[str, ...] | None = Field(None, description="ISO 639-1 codes of the passages' languages.")
    since: dt.date | None = Field(None, description="First publication day, inclusive.")
    until: dt.date | None = Field(None, description="Last publication day, inclusive.")
    sources: tuple[str, ...] | None = Field(
        None, description="Outlets (domain of the article's URL) or corpus files and folders."
    )
