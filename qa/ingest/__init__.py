"""Corpus folder -> articles: reading, decoding, text extraction and boilerplate removal.

Every file that cannot be used is reported as a `SkippedFile` with the reason, and the rest of
the corpus still loads. An article's `text` is the cleaned body (kept paragraphs joined by a
blank line), so that passage offsets point into exactly what was indexed.

The steps, one module each:

- `corpus`: walk the folder, send each file to its format, drop duplicate articles;
- `files`: one file's bytes (size limit, regular files only) and its decoded text;
- `formats`: each input format -> articles (the parsers themselves are in `qa.readers`);
- `clean`: raw lines -> paragraphs, scraped boilerplate removed;
- `articles`: paragraphs -> an `Article` with its title, language and stable id.
"""

from __future__ import annotations

from qa.ingest.articles import make_doc_id
from qa.ingest.clean import clean_lines, is_boilerplate
from qa.ingest.corpus import load_corpus, read_file
from qa.ingest.files import DEFAULT_MAX_BYTES
from qa.ingest.formats import SUPPORTED_EXTENSIONS
from qa.readers.html import page_host

__all__ = [
    "DEFAULT_MAX_BYTES",
    "SUPPORTED_EXTENSIONS",
    "clean_lines",
    "is_boilerplate",
    "load_corpus",
    "make_doc_id",
    "page_host",
    "read_file",
]
