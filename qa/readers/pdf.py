"""PDFs (pypdf): the text layer, page by page, so that a passage can name its page."""

from __future__ import annotations

import io
import logging
import re
from dataclasses import dataclass

from qa.readers.base import Skip
from qa.readers.dates import iso_date

__all__ = ["PdfText", "read_pdf_pages"]

log = logging.getLogger(__name__)

_PDF_DATE = re.compile(r"D:(\d{4})(\d{2})?(\d{2})?(\d{2})?(\d{2})?(\d{2})?([Zz+-])?(\d{2})?'?(\d{2})?")


@dataclass(frozen=True)
class PdfText:
    """The pages' text (page 1 first) and the document's metadata."""

    pages: list[str]
    title: str | None
    author: str | None
    date: str | None


def read_pdf_pages(data: bytes) -> PdfText:
    """Text of each page; raises Skip for an encrypted PDF, a damaged one, or one without a text layer."""
    from pypdf import PdfReader  # imported only when there is a PDF
    from pypdf.errors import PdfReadError

    logging.getLogger("pypdf").setLevel(logging.ERROR)  # its warnings on odd files are not the user's
    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted and not _opens_without_password(reader):
            raise Skip("encrypted PDF: it needs a password to be read; save a copy without one")
        pages = [page.extract_text() or "" for page in reader.pages]
        info = reader.metadata or {}
    except Skip:
        raise
    except (PdfReadError, ValueError, KeyError, TypeError, RecursionError) as error:
        raise Skip(f"damaged PDF ({_short(error)})") from None
    except Exception as error:  # noqa: BLE001 - pypdf on a hostile file: never fatal
        if "crypt" in type(error).__name__.lower() or "AES" in str(error):
            raise Skip("encrypted PDF: it needs a password to be read; save a copy without one") from None
        raise Skip(f"damaged PDF ({_short(error)})") from None
    if not any(page.strip() for page in pages):
        raise Skip(f"no text layer ({len(pages)} page(s) of images, a scan?): run OCR on it first")
    return PdfText(pages, _field(info, "/Title"), _field(info, "/Author"), _pdf_date(_field(info, "/CreationDate")))


def _opens_without_password(reader) -> bool:
    try:
        return bool(reader.decrypt(""))  # many PDFs are encrypted only against editing
    except Exception:  # noqa: BLE001 - unsupported encryption: treated as locked
        return False


def _field(info, key: str) -> str | None:
    try:
        value = info.get(key)
    except Exception:  # noqa: BLE001 - a damaged info dictionary: no metadata
        return None
    text = str(value).strip() if value is not None else ""
    return text or None


def _pdf_date(value: str | None) -> str | None:
    """'D:20240301120000+01'00'' -> '2024-03-01T12:00:00+01:00'."""
    match = _PDF_DATE.match(value or "")
    if not match:
        return None
    year, month, day, hour, minute, second, sign, tz_hour, tz_minute = match.groups()
    if hour is None:
        return f"{year}-{month or '01'}-{day or '01'}"
    offset = "+00:00" if sign in (None, "Z", "z") else f"{sign}{tz_hour or '00'}:{tz_minute or '00'}"
    return iso_date(f"{year}-{month}-{day}T{hour}:{minute or '00'}:{second or '00'}{offset}")


def _short(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0][:120]
