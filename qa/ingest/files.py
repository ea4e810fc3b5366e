"""One file's bytes and text: size limit, regular files only, decoding, binary and empty files refused."""

from __future__ import annotations

import logging
import stat
import unicodedata
from pathlib import Path

from qa.errors import unexpected_reason
from qa.ingest.clean import CONTROL_CHARS
from qa.readers import encoding as _encoding
from qa.readers.base import Skip

__all__ = ["DEFAULT_MAX_BYTES", "check_regular_file", "decode", "read_bytes", "unexpected_failure"]

log = logging.getLogger(__name__)

DEFAULT_MAX_BYTES = 20_000_000


def unexpected_failure(source: str, exc: Exception) -> str:
    """The reason given for a file or line that failed in an unforeseen way (traceback in the debug log)."""
    log.debug("reading %s failed", source, exc_info=exc)
    return (
        f"could not be read ({unexpected_reason(exc)}); fix or remove it and run `qa index` again "
        "(QA_DEBUG=1 shows the details)"
    )


def check_regular_file(path: Path) -> None:
    """Raise Skip unless `path` is a regular file that can be looked at (for readers that stream it)."""
    try:
        if not stat.S_ISREG(path.stat().st_mode):
            raise Skip("not a regular file")
    except OSError as error:
        raise Skip(f"cannot read the file: {error.strerror or error}") from None


def read_bytes(path: Path, max_bytes: int) -> bytes:
    """The whole file; raises Skip when it is not a regular file, cannot be read, or is over `max_bytes`."""
    try:
        info = path.stat()
        if not stat.S_ISREG(info.st_mode):
            raise Skip("not a regular file")
        if info.st_size > max_bytes:
            raise Skip(f"too large: {_size(info.st_size)}, over the {_size(max_bytes)} limit (max_bytes)")
        with path.open("rb") as file:
            data = file.read(max_bytes + 1)
    except OSError as error:
        raise Skip(f"cannot read the file: {error.strerror or error}") from None
    if len(data) > max_bytes:  # it grew since stat()
        raise Skip(f"too large: over the {_size(max_bytes)} limit (max_bytes)")
    return data


def decode(data: bytes, *, markup: bool = False, transport: str | None = None) -> tuple[str, str]:
    """Bytes -> (text, encoding name): see qa.readers.encoding; binary and empty files are refused."""
    text, encoding = _encoding.decode(data, markup=markup, transport=transport)
    share = _control_share(text)
    if share > _encoding.BINARY_CONTROL_SHARE:
        raise Skip(f"binary file ({share:.0%} control characters)")
    if not text.strip():
        raise Skip("empty file")
    return unicodedata.normalize("NFC", text.replace("\r\n", "\n").replace("\r", "\n")), encoding


def _control_share(text: str) -> float:
    return len(CONTROL_CHARS.findall(text)) / max(len(text), 1)


def _size(n_bytes: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n_bytes >= scale:
            return f"{n_bytes / scale:.1f} {unit}"
    return f"{n_bytes} bytes"
