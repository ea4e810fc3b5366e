"""Publication dates from pages, feeds and archives, normalised to ISO 8601."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

__all__ = ["iso_date"]

_DATE_ONLY = re.compile(r"\d{4}-\d{2}-\d{2}")


def iso_date(value: object) -> str | None:
    """ISO 8601 of a date given as ISO text, an RFC 822 date (feeds, HTTP) or a time.struct_time.

    A bare date stays a date ('2019-11-19'); a time keeps its offset ('2019-11-19T07:23:12+01:00',
    UTC when it has none). None when the value cannot be read as a date.
    """
    if value is None:
        return None
    if hasattr(value, "tm_year"):  # feedparser's parsed dates, in UTC
        return datetime(*value[:6], tzinfo=UTC).isoformat(timespec="seconds")
    text = str(value).strip()
    if _DATE_ONLY.fullmatch(text):
        return text
    for parse in (_from_iso, parsedate_to_datetime):
        try:
            moment = parse(text)
        except (TypeError, ValueError, IndexError):
            continue
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        return moment.isoformat(timespec="seconds")
    return None


def _from_iso(text: str) -> datetime:
    return datetime.fromisoformat(text)  # Python 3.11 reads "Z" too
