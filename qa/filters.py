"""News filters: which passages a question may find, by language, date and source.

A filter is checked once (`make_filters`: a bad value is an `InvalidQuestionError` naming it)
and turned into a boolean mask over the index's passages (`passage_mask`); the per-language
search, the lexical candidates and the sentence stage then only see passages inside the mask
(`qa.index.ann.LanguageSearch.search_filtered`), so that a filtered question still gets k
results when k passages match. Without a filter nothing here runs.

Dates are the articles' `date` (from a `.jsonl` `date`, HTML metadata or `.md` front matter),
read as ISO 8601 (a calendar date, or a date and time; a time zone is ignored: the day written
is the day kept) or as an e-mail/RSS date. An article without a date, or with one that does not
parse, is kept in the index and found by questions without a date filter, but never by one with
`since` or `until`.
"""

from __future__ import annotations

import datetime as dt
import re
import threading
from collections import OrderedDict
from collections.abc import Iterable
from typing import Any

import numpy as np

from qa.errors import InvalidQuestionError
from qa.models import Filters

__all__ = [
    "NO_DATE",
    "FilterColumns",
    "article_day",
    "filter_columns",
    "make_filters",
    "parse_day",
    "passage_mask",
    "source_matches",
]

NO_DATE = np.iinfo(np.int32).min  # the day number of an article without a (readable) date
_EPOCH = dt.date(1970, 1, 1)
_LANG_CODE = re.compile(r"[a-z]{2,3}(-[A-Za-z0-9]{2,8})?")
_ISO_DAY = re.compile(r"(\d{4})(?:-(\d{2})(?:-(\d{2}))?)?")
MAX_VALUES = 50  # languages or sources in one filter, at most
MASKS_KEPT = 16  # recent filters' masks kept per index (a conversation repeats its filter)


def parse_day(value: Any, name: str, end: bool = False) -> dt.date:
    """A `since`/`until` value as a date: a `date`, a `datetime` or ISO 8601 text (`2024-05-01`,
    `2024-05`, `2024`, `2024-05-01T10:00:00Z`). A month or a year alone means its first day, or
    with `end` (an `until`) its last. InvalidQuestionError naming the value otherwise."""
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    if isinstance(value, str):
        text = value.strip()
        match = _ISO_DAY.fullmatch(text)
        try:
            if match:
                year, month, day = (int(part) if part else None for part in match.groups())
                if month is None:
                    return dt.date(year, 12, 31) if end else dt.date(year, 1, 1)
                if day is None:
                    first = dt.date(year, month, 1)
                    following = dt.date(year + month // 12, month % 12 + 1, 1)
                    return following - dt.timedelta(days=1) if end else first
                return dt.date(year, month, day)
            return dt.datetime.fromisoformat(text).date()
        except ValueError:
            pass
    shown = repr(value) if isinstance(value, str) else type(value).__name__
    raise InvalidQuestionError(
        f"{name} {shown[:60]} is not a date. Write it as ISO 8601: YYYY-MM-DD (such as 2024-05-01), "
        "YYYY-MM or YYYY."
    )


def article_day(date: str | None) -> int:
    """An article's `date` as days since 1970-01-01, or `NO_DATE` when it has none or it does not
    parse (ISO 8601, else an e-mail/RSS date such as `Tue, 07 May 2024 10:00:00 GMT`)."""
    if not date:
        return int(NO_DATE)
    text = date.strip()
    match = re.match(r"(\d{4})-(\d{2})-(\d{2})", text)
    try:
        if match:
            day = dt.date(*(int(part) for part in match.groups()))
        else:
            from email.utils import parsedate_to_datetime

            day = parsedate_to_datetime(text).date()
    except (ValueError, TypeError, IndexError):
        return int(NO_DATE)
    return (day - _EPOCH).days


def _as_list(value: Any, name: str) -> list[str] | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, Iterable) or not all(isinstance(item, str) for item in value):
        raise InvalidQuestionError(f"{name} must be a list of strings, not {type(value).__name__}.")
    # `de,en` is two values: a query string may repeat the parameter or list them in one.
    items = [part.strip() for item in value for part in item.split(",") if part.strip()]
    if len(items) > MAX_VALUES:
        raise InvalidQuestionError(f"{name} lists {len(items)} values; the limit is {MAX_VALUES}.")
    return items or None


def make_filters(
    langs: Any = None, since: Any = None, until: Any = None, sources: Any = None
) -> Filters | None:
    """The checked filters, or None when none is given (the unfiltered search, at no cost).

    `langs`: ISO 639-1 codes (a list, or one comma-separated string); `since`/`until`: the first
    and last day, inclusive (see `parse_day`); `sources`: outlets (the host of an article's URL,
    `bbc.co.uk` also matching `news.bbc.co.uk`) or corpus files and folders (`feeds/de.jsonl`,
    `feeds`). InvalidQuestionError naming a malformed value or a `since` after `until`.
    """
    lang_list = _as_list(langs, "langs")
    for code in lang_list or []:
        if not _LANG_CODE.fullmatch(code):
            raise InvalidQuestionError(
                f"langs: {code[:40]!r} is not a language code. Use ISO 639-1 codes such as 'en' or 'de'."
            )
    first = parse_day(since, "since") if since not in (None, "") else None
    last = parse_day(until, "until", end=True) if until not in (None, "") else None
    if first and last and first > last:
        raise InvalidQuestionError(
            f"since {first.isoformat()} is after until {last.isoformat()}: no day is in between. "
            "Swap them or widen the range."
        )
    source_list = _as_list(sources, "sources")
    if not (lang_list or first or last or source_list):
        return None
    return Filters(
        langs=tuple(code.lower() for code in lang_list) if lang_list else None,
        since=first,
        until=last,
        sources=tuple(source_list) if source_list else None,
    )


def source_matches(wanted: str, outlet: str | None, source: str) -> bool:
    """Whether an article of `outlet` (host of its URL) and corpus `source` is from `wanted`."""
    wanted = wanted.strip().lower().removeprefix("www.")
    if outlet and (outlet.lower() == wanted or outlet.lower().endswith("." + wanted)):
        return True
    path = source.rpartition("#")[0] if "#" in source else source  # a .jsonl line: its file
    folder = wanted.rstrip("/")
    return bool(folder) and (path.lower() == folder or path.lower().startswith(folder + "/"))


class FilterColumns:
    """Per-passage columns that filters read, computed once per index from its articles: the
    article number and day of each passage, each article's outlet and source, and a few recent
    masks."""

    def __init__(self, index: Any):
        from qa.retrieval import url_outlet

        # One pass over the articles, none kept: an index's store reads them from disk one at a
        # time (`qa.index.store`), where a list of a million articles would cost gigabytes.
        # Parsed once per distinct date and per distinct site (an article's URL up to its path):
        # articles share both, and parsing each one cost 1.4 s for 100,000 articles.
        days: dict[str | None, int] = {}
        sites: dict[str, str] = {}
        doc_day, outlets, files = [], [], []
        for article in _articles(index):
            day = days[article.date] if article.date in days else days.setdefault(article.date, article_day(article.date))
            doc_day.append(day)
            outlets.append(_site_outlet(article.url, sites, url_outlet))
            files.append(article.source.rpartition("#")[0] or article.source)
        self.doc_day = np.array(doc_day, np.int32)
        # Outlets and source files as codes into their distinct values: a source filter then
        # matches each distinct value once (tens of outlets, not a million articles).
        self.outlets, self.doc_outlet = _codes(outlets)
        self.files, self.doc_file = _codes(files)
        self.passage_doc = _passage_docs(index)
        self.n = len(self.passage_doc)
        self.langs = set(index.rows_by_language)
        self._masks: OrderedDict[Filters, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    def mask(self, filters: Filters, passage_langs: np.ndarray) -> np.ndarray:
        """The passages `filters` lets through (a cached boolean array); InvalidQuestionError for
        a language or a source that no passage of the index has."""
        key = filters
        with self._lock:
            if key in self._masks:
                self._masks.move_to_end(key)
                return self._masks[key]
        docs = np.ones(len(self.doc_day), bool)
        if filters.since or filters.until:
            first = (filters.since - _EPOCH).days if filters.since else NO_DATE + 1
            last = (filters.until - _EPOCH).days if filters.until else np.iinfo(np.int32).max
            docs &= (self.doc_day >= first) & (self.doc_day <= last)  # NO_DATE is below any first
        if filters.sources:
            docs &= self._source_docs(filters.sources)
        mask = docs[self.passage_doc]
        if filters.langs:
            unknown = [code for code in filters.langs if code not in self.langs]
            if unknown:
                raise InvalidQuestionError(
                    f"langs: no passage is in {unknown[0]!r}; the index holds "
                    f"{', '.join(sorted(self.langs))}."
                )
            mask &= np.isin(passage_langs, filters.langs)
        mask.flags.writeable = False
        with self._lock:
            self._masks[key] = mask
            while len(self._masks) > MASKS_KEPT:
                self._masks.popitem(last=False)
        return mask

    def _source_docs(self, wanted: tuple[str, ...]) -> np.ndarray:
        docs = np.zeros(len(self.doc_day), bool)
        for value in wanted:
            outlets = np.array([source_matches(value, outlet or None, "") for outlet in self.outlets], bool)
            files = np.array([source_matches(value, None, file) for file in self.files], bool)
            hits = outlets[self.doc_outlet] | files[self.doc_file]
            if not hits.any():
                known = sorted({outlet for outlet in self.outlets if outlet})[:8]
                hint = f" Outlets in the index include: {', '.join(known)}." if known else ""
                raise InvalidQuestionError(
                    f"sources: no article comes from {value[:80]!r} (an outlet such as a site's domain, "
                    f"or a corpus file or folder).{hint}"
                )
            docs |= hits
        return docs


def _articles(index: Any) -> Iterable:
    """Every article of `index`, in article-number order (the order of `_passage_docs`)."""
    store = getattr(index, "store", None)
    if store is not None:
        return (store.article_at(number) for number in range(store.n_articles))
    return (index.articles[doc_id] for doc_id in index.articles)


def _passage_docs(index: Any) -> np.ndarray:
    """The article number of each passage (position in `_articles`)."""
    store = getattr(index, "store", None)
    if store is not None:
        return np.asarray(store.columns[:, 0], np.int32)
    number = {doc_id: i for i, doc_id in enumerate(index.articles)}
    return np.fromiter((number[c.doc_id] for c in index.chunks), np.int32, len(index.chunks))


def _site_outlet(url: str | None, sites: dict[str, str], url_outlet) -> str:
    """`url_outlet(url)` ("" for none), looked up by the URL's `scheme://host` part in `sites`."""
    if not url:
        return ""
    site = "/".join(url.strip().split("/", 3)[:3])
    if site not in sites:
        sites[site] = url_outlet(site) or ""
    return sites[site]


def _codes(values: list[str]) -> tuple[list[str], np.ndarray]:
    """(the distinct values, the position of each value among them)."""
    distinct, codes = np.unique(np.array(values, dtype=object).astype(str), return_inverse=True)
    return distinct.tolist(), codes.astype(np.int32)


_columns_lock = threading.Lock()


def filter_columns(index: Any) -> FilterColumns:
    """The index's `FilterColumns`, computed on its first filtered question and kept with it."""
    columns = getattr(index, "_filter_columns", None)
    if columns is None:
        with _columns_lock:
            columns = getattr(index, "_filter_columns", None)
            if columns is None:
                columns = FilterColumns(index)
                index._filter_columns = columns
    return columns


def passage_mask(index: Any, filters: Filters | None) -> np.ndarray | None:
    """The boolean mask of the passages of `index` that `filters` lets through (None: no filter)."""
    if filters is None:
        return None
    return filter_columns(index).mask(filters, index.langs)
