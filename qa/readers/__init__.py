"""Readers of the input kinds beyond plain text: encodings, Markdown, HTML, web archives, feeds, PDFs.

`qa.ingest.formats` builds articles from what they read; each raises `Skip` with a reason for
input it cannot use.
"""

from __future__ import annotations

from qa.readers.base import Skip

__all__ = ["Skip", "input_kind"]

_KINDS = (
    (".warc.gz", "warc"), (".warc", "warc"), (".html", "html"), (".htm", "html"), (".md", "markdown"),
    (".markdown", "markdown"), (".txt", "text"), (".jsonl", "jsonl"), (".rss", "feed"), (".atom", "feed"),
    (".xml", "feed"), (".pdf", "pdf"),
)


def input_kind(source: str) -> str:
    """The kind of input an article's `source` came from: 'html', 'warc', 'feed', 'pdf', 'text', ..."""
    name = source.split("#", 1)[0].lower()
    return next((kind for ending, kind in _KINDS if name.endswith(ending)), "other")
