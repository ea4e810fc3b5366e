"""RSS and Atom feeds (feedparser): each entry one article, the feed's title its outlet."""

from __future__ import annotations

from dataclasses import dataclass

from qa.readers.base import Skip
from qa.readers.dates import iso_date
from qa.readers.encoding import browser_codec, display_name

__all__ = ["FeedEntry", "parse_feed"]


@dataclass(frozen=True)
class FeedEntry:
    """One entry: its HTML (full text where the feed carries it, else the summary) and metadata."""

    number: int  # from 1, in the feed's order
    title: str | None
    link: str | None
    date: str | None
    author: str | None
    outlet: str | None
    html: str
    is_summary: bool  # the feed carried only a summary of the article
    encoding: str | None  # what the feed was read in


def parse_feed(data: bytes) -> list[FeedEntry]:
    """The entries of an RSS/Atom document; raises Skip when it is not a feed or has none."""
    import feedparser  # imported only when there is a feed

    parsed = feedparser.parse(data)
    if not parsed.entries:
        problem = getattr(parsed, "bozo_exception", None)
        if problem is not None and not parsed.get("version"):
            raise Skip(f"not an RSS or Atom feed ({_short(problem)})")
        raise Skip("a feed without entries")
    outlet = parsed.feed.get("title") or None
    encoding = display_name(browser_codec(parsed.encoding) or parsed.encoding) if parsed.get("encoding") else None
    return [_entry(number, entry, outlet, encoding) for number, entry in enumerate(parsed.entries, start=1)]


def _entry(number: int, entry, outlet: str | None, encoding: str | None) -> FeedEntry:
    contents = [c.get("value", "") for c in entry.get("content", []) if c.get("value", "").strip()]
    full = max(contents, key=len, default="")
    summary = entry.get("summary", "") or ""
    published = entry.get("published_parsed") or entry.get("updated_parsed")
    return FeedEntry(
        number=number,
        title=entry.get("title") or None,
        link=entry.get("link") or None,
        date=iso_date(published) if published else iso_date(entry.get("published")),
        author=entry.get("author") or None,
        outlet=outlet,
        html=full or summary,
        is_summary=not full,
        encoding=encoding,
    )


def _short(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0][:120]
