"""Whether a cleaned question carries meaning, and the language to tell the asker it does not.

A question needs at least one letter or digit (Unicode categories L* and N*): format and control
characters (zero-width spaces, byte-order marks, soft hyphens, direction marks), spaces,
punctuation, symbols and emoji alone give the search nothing to match, and it would still return
its nearest passages with confidence. One character repeated ("aaaa", "哈哈哈哈") is typing noise
and is refused too. Everything else passes, however short: "42", "Nadella", "谁?", "ใคร".
"""

from __future__ import annotations

import unicodedata
from collections import Counter
from collections.abc import Sequence

from qa.errors import MeaninglessQuestionError
from qa.i18n import QUESTION_ERRORS, pick_lang

__all__ = ["asker_language", "check_meaning", "meaningful_characters"]

# One letter repeated this often is noise; digits need a longer run, because numbers such as
# 777 or 1111 are real questions.
NOISE_LETTER_RUN = 3
NOISE_DIGIT_RUN = 5
_SHOWN_CODE_POINTS = 3  # the error lists this many distinct characters of the question


def meaningful_characters(text: str) -> list[str]:
    """The letters and digits of `text` (categories L* and N*), case-folded."""
    return [ch.casefold() for ch in text if unicodedata.category(ch)[0] in "LN"]


def check_meaning(text: str, lang: str | None = None) -> None:
    """Raise MeaninglessQuestionError, in language `lang` (English by default), if the cleaned
    question `text` has no letter or digit, or is one letter or digit repeated."""
    kept = meaningful_characters(text)
    if not kept:
        raise _refusal("no_words", text, lang)
    distinct = set(kept)
    if len(distinct) == 1:
        char = next(iter(distinct))
        run = NOISE_DIGIT_RUN if unicodedata.category(char[0])[0] == "N" else NOISE_LETTER_RUN
        if len(kept) >= run:
            raise _refusal("noise", text, lang)


def asker_language(history: Sequence[object] | None = None, accept_language: str | None = None) -> str:
    """The language to refuse a question in when the question itself has no words: that of the
    latest earlier question that has words, else the first of `Accept-Language` we have
    messages in, else English."""
    from qa.lang import UNDETERMINED, detect_language

    for earlier in reversed(list(history or [])[-5:]):
        if isinstance(earlier, str) and earlier.strip():
            lang = detect_language(earlier[:2000])
            if lang != UNDETERMINED:
                return lang if lang in QUESTION_ERRORS["no_words"] else "en"
    return pick_lang(accept_language, QUESTION_ERRORS["no_words"])


def _refusal(kind: str, text: str, lang: str | None) -> MeaninglessQuestionError:
    messages = QUESTION_ERRORS[kind]
    lang = lang if lang in messages else "en"
    return MeaninglessQuestionError(messages[lang].format(chars=_describe(text)), lang)


def _describe(text: str) -> str:
    """The question's most frequent characters as code points with counts: "U+200B×3"."""
    counts = Counter(text).most_common()
    shown = ", ".join(
        f"U+{ord(ch):04X}" + (f"×{n}" if n > 1 else "") for ch, n in counts[:_SHOWN_CODE_POINTS]
    )
    return shown + (", …" if len(counts) > _SHOWN_CODE_POINTS else "")
