"""Language identification of questions and articles, offline.

The script of a text settles most cases exactly (kana is Japanese, Hangul is Korean, Greek is
Greek...). Scripts shared by several languages (Latin, Cyrillic, Arabic, Devanagari) go to
py3langid, a naive-Bayes byte n-gram classifier over ~140 languages: on short questions it was
more accurate than lingua-language-detector (97.9 % vs 95.3 % on 234 questions in 18 languages),
about 7x faster (0.1 ms a question) and uses ~100 MB instead of ~1 GB. The model loads on the
first call, once per process.
"""

from __future__ import annotations

import bisect
import functools
import re
from typing import Any

__all__ = ["LANGUAGE_NAMES", "UNDETERMINED", "detect_language", "normalize_lang_code"]

UNDETERMINED = "und"  # ISO 639-2 code for "undetermined": the text has no letters.

# ISO 639-1, code -> English name (for display, and to validate declared languages).
LANGUAGE_NAMES: dict[str, str] = {
    "aa": "Afar",
    "ab": "Abkhazian",
    "ae": "Avestan",
    "af": "Afrikaans",
    "ak": "Akan",
    "am": "Amharic",
    "an": "Aragonese",
    "ar": "Arabic",
    "as": "Assamese",
    "av": "Avaric",
    "ay": "Aymara",
    "az": "Azerbaijani",
    "ba": "Bashkir",
    "be": "Belarusian",
    "bg": "Bulgarian",
    "bi": "Bislama",
    "bm": "Bambara",
    "bn": "Bengali",
    "bo": "Tibetan",
    "br": "Breton",
    "bs": "Bosnian",
    "ca": "Catalan",
    "ce": "Chechen",
    "ch": "Chamorro",
    "co": "Corsican",
    "cr": "Cree",
    "cs": "Czech",
    "cu": "Church Slavonic",
    "cv": "Chuvash",
    "cy": "Welsh",
    "da": "Danish",
    "de": "German",
    "dv": "Divehi",
    "dz": "Dzongkha",
    "ee": "Ewe",
    "el": "Greek",
    "en": "English",
    "eo": "Esperanto",
    "es": "Spanish",
    "et": "Estonian",
    "eu": "Basque",
    "fa": "Persian",
    "ff": "Fulah",
    "fi": "Finnish",
    "fj": "Fijian",
    "fo": "Faroese",
    "fr": "French",
    "fy": "Western Frisian",
    "ga": "Irish",
    "gd": "Scottish Gaelic",
    "gl": "Galician",
    "gn": "Guarani",
    "gu": "Gujarati",
    "gv": "Manx",
    "ha": "Hausa",
    "he": "Hebrew",
    "hi": "Hindi",
    "ho": "Hiri Motu",
    "hr": "Croatian",
    "ht": "Haitian Creole",
    "hu": "Hungarian",
    "hy": "Armenian",
    "hz": "Herero",
    "ia": "Interlingua",
    "id": "Indonesian",
    "ie": "Interlingue",
    "ig": "Igbo",
    "ii": "Sichuan Yi",
    "ik": "Inupiaq",
    "io": "Ido",
    "is": "Icelandic",
    "it": "Italian",
    "iu": "Inuktitut",
    "ja": "Japanese",
    "jv": "Javanese",
    "ka": "Georgian",
    "kg": "Kongo",
    "ki": "Kikuyu",
    "kj": "Kuanyama",
    "kk": "Kazakh",
    "kl": "Kalaallisut",
    "km": "Khmer",
    "kn": "Kannada",
    "ko": "Korean",
    "kr": "Kanuri",
    "ks": "Kashmiri",
    "ku": "Kurdish",
    "kv": "Komi",
    "kw": "Cornish",
    "ky": "Kyrgyz",
    "la": "Latin",
    "lb": "Luxembourgish",
    "lg": "Ganda",
    "li": "Limburgish",
    "ln": "Lingala",
    "lo": "Lao",
    "lt": "Lithuanian",
    "lu": "Luba-Katanga",
    "lv": "Latvian",
    "mg": "Malagasy",
    "mh": "Marshallese",
    "mi": "Maori",
    "mk": "Macedonian",
    "ml": "Malayalam",
    "mn": "Mongolian",
    "mr": "Marathi",
    "ms": "Malay",
    "mt": "Maltese",
    "my": "Burmese",
    "na": "Nauru",
    "nb": "Norwegian Bokmål",
    "nd": "North Ndebele",
    "ne": "Nepali",
    "ng": "Ndonga",
    "nl": "Dutch",
    "nn": "Norwegian Nynorsk",
    "no": "Norwegian",
    "nr": "South Ndebele",
    "nv": "Navajo",
    "ny": "Chichewa",
    "oc": "Occitan",
    "oj": "Ojibwe",
    "om": "Oromo",
    "or": "Odia",
    "os": "Ossetian",
    "pa": "Punjabi",
    "pi": "Pali",
    "pl": "Polish",
    "ps": "Pashto",
    "pt": "Portuguese",
    "qu": "Quechua",
    "rm": "Romansh",
    "rn": "Kirundi",
    "ro": "Romanian",
    "ru": "Russian",
    "rw": "Kinyarwanda",
    "sa": "Sanskrit",
    "sc": "Sardinian",
    "sd": "Sindhi",
    "se": "Northern Sami",
    "sg": "Sango",
    "si": "Sinhala",
    "sk": "Slovak",
    "sl": "Slovenian",
    "sm": "Samoan",
    "sn": "Shona",
    "so": "Somali",
    "sq": "Albanian",
    "sr": "Serbian",
    "ss": "Swati",
    "st": "Southern Sotho",
    "su": "Sundanese",
    "sv": "Swedish",
    "sw": "Swahili",
    "ta": "Tamil",
    "te": "Telugu",
    "tg": "Tajik",
    "th": "Thai",
    "ti": "Tigrinya",
    "tk": "Turkmen",
    "tl": "Tagalog",
    "tn": "Tswana",
    "to": "Tongan",
    "tr": "Turkish",
    "ts": "Tsonga",
    "tt": "Tatar",
    "tw": "Twi",
    "ty": "Tahitian",
    "ug": "Uyghur",
    "uk": "Ukrainian",
    "ur": "Urdu",
    "uz": "Uzbek",
    "ve": "Venda",
    "vi": "Vietnamese",
    "vo": "Volapük",
    "wa": "Walloon",
    "wo": "Wolof",
    "xh": "Xhosa",
    "yi": "Yiddish",
    "yo": "Yoruba",
    "za": "Zhuang",
    "zh": "Chinese",
    "zu": "Zulu",
}

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

# Scripts written by (practically) one language: no classifier needed.
_SINGLE_LANGUAGE_SCRIPTS = {
    "Greek": "el",
    "Hebrew": "he",
    "Thai": "th",
    "Lao": "lo",
    "Khmer": "km",
    "Myanmar": "my",
    "Georgian": "ka",
    "Armenian": "hy",
    "Hangul": "ko",
    "Kana": "ja",
    "Han": "zh",
    "Tamil": "ta",
    "Telugu": "te",
    "Kannada": "kn",
    "Malayalam": "ml",
    "Gujarati": "gu",
    "Gurmukhi": "pa",
    "Oriya": "or",
    "Sinhala": "si",
    "Tibetan": "bo",
    "Ethiopic": "am",
    "Thaana": "dv",
    "Mongolian": "mn",
}
# Scripts shared by several languages: the classifier picks among these only.
_SHARED_SCRIPTS = {
    "Cyrillic": frozenset(
        {"ru", "uk", "bg", "sr", "mk", "be", "kk", "ky", "mn", "tg", "tt", "ba", "cv", "os"}
    ),
    "Arabic": frozenset({"ar", "fa", "ur", "ps", "ku", "ug", "sd", "ks"}),
    "Devanagari": frozenset({"hi", "mr", "ne", "sa"}),
    "Bengali": frozenset({"bn", "as"}),
}
# Languages never written in Latin script: excluded when classifying Latin text.
_NON_LATIN = frozenset(_SINGLE_LANGUAGE_SCRIPTS.values()).union(*_SHARED_SCRIPTS.values()) - {"ku", "mn"}

# py3langid labels that are not ISO 639-1, mapped to their macrolanguage; others are dropped.
_LABEL_ALIASES = {
    "arz": "ar",
    "ary": "ar",
    "wuu": "zh",
    "yue": "zh",
    "uzs": "uz",
    "sdh": "ku",
    "hbo": "he",
    "grc": "el",
    "gug": "gn",
    "fuv": "ff",
    "kik": "ki",
}

# An ideogram or a Hangul syllable carries about as much as a few Latin letters, so a
# Japanese question with English names in it still counts as Japanese.
_SCRIPT_WEIGHT = {"Han": 3, "Kana": 2, "Hangul": 3}
_MIN_NON_LATIN_SHARE = 0.25  # below this, non-Latin letters are quotes inside Latin text
_MIN_KANA_SHARE = 0.05  # of kana + Han: Japanese prose always has kana, Chinese none
_MAX_SAMPLE_CHARS = 10_000  # enough for a reliable guess; keeps long articles fast

_URL_OR_EMAIL = re.compile(r"https?://\S+|www\.\S+|\S+@\S+\.\w+")
_LATIN_WORD = re.compile(r"[A-Za-z\u00C0-\u024F\u1E00-\u1EFF]+")


def detect_language(text: str) -> str:
    """Return the ISO 639-1 code of the language of `text`, or "und" if it has no letters.

    Works on questions of a few words as well as on whole articles (only the first
    10,000 characters are looked at). Text in Han characters only is taken as Chinese.
    """
    sample = _URL_OR_EMAIL.sub(" ", text[:_MAX_SAMPLE_CHARS])
    counts = _script_counts(sample)
    if not counts:
        return UNDETERMINED
    script = _dominant_script(counts)
    if script in _SINGLE_LANGUAGE_SCRIPTS:
        return _SINGLE_LANGUAGE_SCRIPTS[script]
    if script in _SHARED_SCRIPTS:
        # Latin-script names ("OpenAI") would pull a Russian question towards English.
        stripped = _LATIN_WORD.sub(" ", sample)
        return _classify(stripped, allowed=_SHARED_SCRIPTS[script], excluded=frozenset())
    if script == "Other":  # a script we do not map: let the classifier try all it knows
        return _classify(sample, allowed=None, excluded=frozenset())
    return _classify(sample, allowed=None, excluded=_NON_LATIN)


def normalize_lang_code(code: str) -> str | None:
    """Return the ISO 639-1 code for a declared language ("fr", "FR", "fr-FR", "fr_CA"), else None."""
    primary = re.split(r"[-_]", code.strip(), maxsplit=1)[0].lower()
    return primary if primary in LANGUAGE_NAMES else None


def _script_of(char: str) -> str:
    point = ord(char)
    index = bisect.bisect_right(_RANGE_STARTS, point) - 1
    if index >= 0 and point <= _SCRIPT_RANGES[index][1]:
        return _SCRIPT_RANGES[index][2]
    return "Other"


def _script_counts(text: str) -> dict[str, int]:
    """Count the letters of each script in `text`."""
    if text.isascii():
        latin = sum(char.isalpha() for char in text)
        return {"Latin": latin} if latin else {}
    counts: dict[str, int] = {}
    for char in text:
        if char.isalpha():
            script = _script_of(char)
            counts[script] = counts.get(script, 0) + 1
    return counts


def _dominant_script(counts: dict[str, int]) -> str:
    """Pick the script that decides the language: Latin unless other scripts weigh enough."""
    kana, han = counts.get("Kana", 0), counts.get("Han", 0)
    weighted = {
        script: count * _SCRIPT_WEIGHT.get(script, 1)
        for script, count in counts.items()
        if script not in ("Latin", "Other")
    }
    non_latin = sum(weighted.values())
    if not non_latin:
        return "Latin" if "Latin" in counts else "Other"
    if non_latin < _MIN_NON_LATIN_SHARE * (non_latin + counts.get("Latin", 0)):
        return "Latin"
    if kana and kana >= _MIN_KANA_SHARE * (kana + han) and max(weighted, key=weighted.get) in ("Kana", "Han"):
        return "Kana"
    return max(weighted, key=weighted.get)


def _classify(text: str, allowed: frozenset[str] | None, excluded: frozenset[str]) -> str:
    """Best-scoring ISO 639-1 language of py3langid's ranking, within `allowed`, not in `excluded`."""
    for label, _score in _identifier().rank(text):
        code = _LABEL_ALIASES.get(label, label)
        if len(code) != 2 or code in excluded or (allowed is not None and code not in allowed):
            continue
        return code
    return UNDETERMINED


@functools.cache
def _identifier() -> Any:
    # Loaded on first use (about 0.5 s and 100 MB), then shared: rank() only reads the model.
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    return LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=False)
