"""Language identification of questions and articles, offline, and the facts about scripts and
language codes that the rest of the package cuts and labels text with.

- `detect`: `detect_language`, script rules first, then py3langid with cues for short texts;
- `model`: py3langid's classifier, loaded once per process;
- `scripts`: sentence terminators, CJK and space-less script ranges, letters counted per script;
- `codes`: ISO 639-1 codes and names, `normalize_lang_code` for declared languages.
"""

from __future__ import annotations

from qa.lang.codes import LANGUAGE_NAMES, UNDETERMINED, normalize_lang_code
from qa.lang.detect import FUNCTION_WORDS, QUESTION_LANGUAGES, detect_language
from qa.lang.scripts import (
    ALWAYS_SENTENCE_ENDS,
    CJK_RANGES,
    LATIN_SENTENCE_ENDS,
    NO_SPACE_CHARS,
    SENTENCE_CLOSERS,
)

__all__ = [
    "ALWAYS_SENTENCE_ENDS",
    "CJK_RANGES",
    "FUNCTION_WORDS",
    "LANGUAGE_NAMES",
    "LATIN_SENTENCE_ENDS",
    "NO_SPACE_CHARS",
    "QUESTION_LANGUAGES",
    "SENTENCE_CLOSERS",
    "UNDETERMINED",
    "detect_language",
    "normalize_lang_code",
]
