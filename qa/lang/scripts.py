"""What the scripts look like, for every module that cuts text (one owner: this module).

Sentence terminators and closers (qa.chunk's sentence splitter), the ranges of CJK text and of
the scripts written without spaces (qa.lexical's bigrams), and the Unicode blocks of each script,
by which language detection counts letters.
"""

from __future__ import annotations

import bisect
import functools
from collections import Counter

__all__ = [
    "ALWAYS_SENTENCE_ENDS",
    "CJK_RANGES",
    "LATIN_SENTENCE_ENDS",
    "NO_SPACE_CHARS",
    "SENTENCE_CLOSERS",
    "script_counts",
]

# Sentence terminators. Latin-style ones end a sentence only before whitespace; the CJK, Arabic
# and Indic ones end it wherever they are (qa.chunk's sentence splitter).
LATIN_SENTENCE_ENDS = ".!?…‼⁇⁈⁉"
ALWAYS_SENTENCE_ENDS = "。！？．｡؟۔।॥"
SENTENCE_CLOSERS = "\"'”’»)]}」』）】〕〉》›"  # quotes and brackets that may follow a terminator
# Ideographic, kana, Hangul and full-width text: `!?` next to it end a sentence with no space.
CJK_RANGES = (
    (0x3000, 0x303F),
    (0x3040, 0x30FF),
    (0x3400, 0x4DBF),
    (0x4E00, 0x9FFF),
    (0xAC00, 0xD7AF),
    (0xF900, 0xFAFF),
    (0xFF00, 0xFFEF),
    (0x20000, 0x3134F),
)
# Scripts written without spaces between words, as the body of a regex character class: the
# lexical index (qa.lexical) cuts their runs into character bigrams.
NO_SPACE_CHARS = (
    "\u0e00-\u0e7f"  # Thai
    "\u0e80-\u0eff"  # Lao
    "\u1000-\u109f"  # Myanmar
    "\u1780-\u17ff"  # Khmer
    "\u3040-\u30ff"  # Hiragana, Katakana
    "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"  # CJK ideographs
)

# Unicode blocks -> script, sorted by start; letters outside them count as "Other".
_SCRIPT_RANGES: tuple[tuple[int, int, str], ...] = (
    (0x0041, 0x024F, "Latin"),
    (0x0370, 0x03FF, "Greek"),
    (0x0400, 0x052F, "Cyrillic"),
    (0x0530, 0x058F, "Armenian"),
    (0x0590, 0x05FF, "Hebrew"),
    (0x0600, 0x06FF, "Arabic"),
    (0x0750, 0x077F, "Arabic"),
    (0x0780, 0x07BF, "Thaana"),
    (0x0900, 0x097F, "Devanagari"),
    (0x0980, 0x09FF, "Bengali"),
    (0x0A00, 0x0A7F, "Gurmukhi"),
    (0x0A80, 0x0AFF, "Gujarati"),
    (0x0B00, 0x0B7F, "Oriya"),
    (0x0B80, 0x0BFF, "Tamil"),
    (0x0C00, 0x0C7F, "Telugu"),
    (0x0C80, 0x0CFF, "Kannada"),
    (0x0D00, 0x0D7F, "Malayalam"),
    (0x0D80, 0x0DFF, "Sinhala"),
    (0x0E00, 0x0E7F, "Thai"),
    (0x0E80, 0x0EFF, "Lao"),
    (0x0F00, 0x0FFF, "Tibetan"),
    (0x1000, 0x109F, "Myanmar"),
    (0x10A0, 0x10FF, "Georgian"),
    (0x1100, 0x11FF, "Hangul"),
    (0x1200, 0x139F, "Ethiopic"),
    (0x1780, 0x17FF, "Khmer"),
    (0x1800, 0x18AF, "Mongolian"),
    (0x1C80, 0x1C8F, "Cyrillic"),
    (0x1E00, 0x1EFF, "Latin"),
    (0x1F00, 0x1FFF, "Greek"),
    (0x2C00, 0x2C5F, "Other"),
    (0x2DE0, 0x2DFF, "Cyrillic"),
    (0x3040, 0x30FF, "Kana"),
    (0x3130, 0x318F, "Hangul"),
    (0x31F0, 0x31FF, "Kana"),
    (0x3400, 0x4DBF, "Han"),
    (0x4E00, 0x9FFF, "Han"),
    (0xA640, 0xA69F, "Cyrillic"),
    (0xA720, 0xA7FF, "Latin"),
    (0xAC00, 0xD7AF, "Hangul"),
    (0xF900, 0xFAFF, "Han"),
    (0xFB50, 0xFDFF, "Arabic"),
    (0xFE70, 0xFEFF, "Arabic"),
    (0xFF21, 0xFF5A, "Latin"),
    (0xFF66, 0xFF9F, "Kana"),
    (0xFFA0, 0xFFDC, "Hangul"),
    (0x20000, 0x3134F, "Han"),
)
_RANGE_STARTS = [start for start, _, _ in _SCRIPT_RANGES]


@functools.lru_cache(maxsize=4096)  # a few thousand letters make up nearly all text of a language
def _script_of(char: str) -> str:
    point = ord(char)
    index = bisect.bisect_right(_RANGE_STARTS, point) - 1
    if index >= 0 and point <= _SCRIPT_RANGES[index][1]:
        return _SCRIPT_RANGES[index][2]
    return "Other"


def script_counts(text: str) -> dict[str, int]:
    """Count the letters of each script in `text` (scripts in the order they first appear)."""
    if text.isascii():
        latin = sum(map(str.isalpha, text))
        return {"Latin": latin} if latin else {}
    # Characters counted in C, each distinct one (a question has ~30) then looked up once, from a
    # cache: a range search per character was most of the cost. Counter keeps first appearances
    # in order, so the scripts keep theirs (the first of equal counts wins in `detect_language`).
    counts: dict[str, int] = {}
    for char, times in Counter(text).items():
        if char.isalpha():
            script = _script_of(char)
            counts[script] = counts.get(script, 0) + times
    return counts
