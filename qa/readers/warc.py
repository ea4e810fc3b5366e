"""Web archives (`.warc`, `.warc.gz`): every HTML response of status 200 is one article.

Read with warcio, streaming: one record's body at a time is in memory (cut at `max_bytes`), never
the archive. Revisit, request, metadata and non-200 or non-HTML responses are counted and
skipped; a record that cannot be read is skipped with its offset; a damaged or truncated archive
keeps the records before the damage. The same URL crawled twice keeps the newest capture.
Extraction (decoding with the HTTP charset, trafilatura) runs in worker processes for large
archives, a bounded number of records in flight.
"""

from __future__ import annotations

import logging
import re
from collections import Counter, deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from qa.models import Article, SkippedFile
from qa.readers.base import Skip

__all__ = ["WarcPage", "iter_pages", "read_warc"]

log = logging.getLogger(__name__)

_HTML_TYPES = ("text/html", "application/xhtml+xml")
_CHARSET = re.compile(r"charset\s*=\s*[\"']?([A-Za-z0-9._:-]+)", re.IGNORECASE)
_BATCH = 16  # records a worker extracts per task: fewer round trips between processes
_PARALLEL_MIN_BYTES = 5_000_000  # smaller archives: starting workers costs more than it saves


@dataclass(frozen=True)
class WarcPage:
    """One HTML response of an archive, as handed to extraction."""

    offset: int
    url: str
    date: str | None
    charset: str | None
    body: bytes


def iter_pages(
    path: Path, max_bytes: int, counts: Counter, problems: list[SkippedFile], source: str
) -> Iterator[WarcPage]:
    """The archive's HTML 200 responses in order; counts what else it holds, notes damage in `problems`."""
    from warcio.archiveiterator import ArchiveIterator  # imported only when there is an archive

    size = path.stat().st_size
    with path.open("rb") as stream:
        records = ArchiveIterator(stream)
        offset = end = 0
        try:
            for record in records:
                page = _page(record, records, max_bytes, counts, problems, source)
                offset = records.get_record_offset()  # after the body: asking reads the record to its end
                end = offset + records.get_record_length()
                if page is not None:
                    yield page
            if 0 < end < size:  # warcio stops quietly at a record cut inside its headers
                raise ValueError(f"{size - end} bytes at the end are not a complete record")
        except Exception as error:  # noqa: BLE001 - a damaged archive: keep what came before
            reason = (
                f"damaged or truncated after offset {offset} ({_short(error)}); "
                f"kept the {counts['html']} page(s) before it"
            )
            problems.append(SkippedFile(source=source, reason=reason))


def _page(record, records, max_bytes: int, counts: Counter, problems: list[SkippedFile], source: str):
    kind = record.rec_type
    if kind != "response":
        counts[kind] += 1  # request, metadata, warcinfo, revisit (a revisit has no body of its own)
        return None
    try:
        http = record.http_headers
        status = http.get_statuscode() if http is not None else None
        if status != "200":
            counts[f"status {status}" if status else "not HTTP"] += 1
            return None
        content_type = http.get_header("Content-Type") or ""
        if content_type.split(";")[0].strip().lower() not in _HTML_TYPES:
            counts["not HTML"] += 1
            return None
        url = record.rec_headers.get_header("WARC-Target-URI") or ""
        body = record.content_stream().read(max_bytes + 1)
        missing = getattr(record.raw_stream, "limit", 0) if len(body) <= max_bytes else 0
        offset = records.get_record_offset()
    except Exception as error:  # noqa: BLE001 - one bad record: skip it, go on with the next
        offset = records.get_record_offset()
        problems.append(SkippedFile(source=f"{source}#{offset}", reason=f"unreadable record ({_short(error)})"))
        return None
    if missing:
        reason = f"truncated record: {missing} bytes of {url} missing (a cut archive)"
        problems.append(SkippedFile(source=f"{source}#{offset}", reason=reason))
        return None
    if len(body) > max_bytes:
        problems.append(SkippedFile(source=f"{source}#{offset}", reason=f"page over the {max_bytes} bytes limit"))
        return None
    counts["html"] += 1
    charset = _CHARSET.search(content_type)
    return WarcPage(
        offset=offset,
        url=url,
        date=record.rec_headers.get_header("WARC-Date"),
        charset=charset.group(1) if charset else None,
        body=body,
    )


def read_warc(
    path: Path,
    source: str,
    to_article: Callable[[WarcPage, str], Article],
    *,
    max_bytes: int,
    workers: int = 1,
) -> tuple[list[Article], list[SkippedFile]]:
    """Articles of an archive (one per URL, the newest capture) and what was skipped, with reasons.

    `to_article(page, source)` turns a page into an Article or raises Skip; it must be a
    module-level function when `workers` > 1 (it runs in worker processes).
    """
    with path.open("rb") as stream:
        magic = stream.read(9)
    if not magic.startswith((b"WARC/", b"\x1f\x8b", b"filedesc:")):  # WARC, gzip, the older ARC
        raise Skip(f"not a WARC file (it starts with {magic[:5]!r}, not 'WARC/' or gzip)")
    counts: Counter = Counter()
    problems: list[SkippedFile] = []
    pages = iter_pages(path, max_bytes, counts, problems, source)
    newest: dict[str, Article] = {}
    parallel = workers > 1 and path.stat().st_size >= _PARALLEL_MIN_BYTES
    if parallel:
        results = _extract_parallel(pages, to_article, source, workers)
    else:
        results = _extract(pages, to_article, source)
    for article, problem in results:
        if problem is not None:
            problems.append(problem)
        elif article.url not in newest or (article.crawl_date or "") >= (newest[article.url].crawl_date or ""):
            if article.url in newest:
                counts["older capture of the same URL"] += 1
            newest[article.url] = article
        else:
            counts["older capture of the same URL"] += 1
    if not newest and not problems and not counts:
        raise Skip("no records: not a WARC file, or empty")
    ignored = {k: n for k, n in counts.items() if k != "html"}
    if ignored:
        listed = ", ".join(f"{n} {kind}" for kind, n in sorted(ignored.items(), key=lambda kv: (-kv[1], kv[0])))
        problems.append(SkippedFile(source=source, reason=f"records not indexed: {listed}"))
    return list(newest.values()), problems


def _extract(pages: Iterator[WarcPage], to_article, source: str):
    for page in pages:
        yield _one(page, to_article, source)


def _one(page: WarcPage, to_article, source: str) -> tuple[Article | None, SkippedFile | None]:
    try:
        return to_article(page, f"{source}#{page.offset}"), None
    except Skip as skip:
        return None, SkippedFile(source=f"{source}#{page.offset}", reason=f"{page.url}: {skip.reason}")
    except (Exception, RecursionError) as error:  # noqa: BLE001 - one page never aborts the archive
        reason = f"{page.url}: extraction failed ({_short(error)})"
        return None, SkippedFile(source=f"{source}#{page.offset}", reason=reason)


def _batch(pages: list[WarcPage], to_article, source: str):
    return [_one(page, to_article, source) for page in pages]


def _extract_parallel(pages: Iterator[WarcPage], to_article, source: str, workers: int):
    """Extraction in `workers` processes; at most 2 batches per worker in flight, results in order."""
    in_flight: deque[Future] = deque()
    with ProcessPoolExecutor(max_workers=workers) as pool:
        batch: list[WarcPage] = []
        for page in pages:
            batch.append(page)
            if len(batch) == _BATCH:
                in_flight.append(pool.submit(_batch, batch, to_article, source))
                batch = []
                while len(in_flight) >= 2 * workers:  # bounded memory: wait for the oldest
                    yield from in_flight.popleft().result()
        if batch:
            in_flight.append(pool.submit(_batch, batch, to_article, source))
        while in_flight:
            yield from in_flight.popleft().result()


def _short(error: BaseException) -> str:
    text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return text[:120]
