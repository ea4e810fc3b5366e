"""Language identification of questions and articles, offline.

The script of a text settles most cases exactly (kana is Japanese, Hangul is Korean, Greek is
Greek...). Scripts shared by several languages (Latin, Cyrillic, Arabic, Devanagari) go to
py3langid, a naive-Bayes byte n-gram classifier over ~140 languages: on short questions it was
more accurate than lingua-language-detector (97.9 % vs 95.3 % on 234 questions in 18 languages),
about 7x faster (0.1 ms a question) and uses ~100 MB instead of ~1 GB. The model loads on the
first call, once per process.

A question of three words carries too few letters for n-grams alone: "Who is Nadella?" scored
Italian, "Who is Satya Nadella?" Xhosa. So for short texts the classifier's log-likelihoods are
combined with what such a question does carry (see `_weigh`):

* its function words (question words, articles, prepositions, auxiliaries: general lists of
  the most frequent words of each Latin-script language we answer in, `FUNCTION_WORDS`);
* a prior over languages: those we answer in, the corpus's, and, a little more, the language
  of the conversation so far; any other language needs clearly more evidence;
* when even then no language is clearly ahead, the previous question's language or English,
  never a language the evidence barely favours.

`benchmarks/bench_lang.py` measures it against the classifier alone on truncated XQuAD questions
and on short questions with names.
"""

from __future__ import annotations

import bisect
import functools
import math
import re
import unicodedata
from collections.abc import Collection, Sequence
from typing import Any

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

UNDETERMINED = "und"  # ISO 639-2 code for "undetermined": the text has no letters.

# ---- What the scripts look like, for every module that cuts text (one owner: this module).
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

# The languages we answer in (qa.i18n.LEAD_IN): the prior favours them for short questions.
QUESTION_LANGUAGES = frozenset(
    {"en", "fr", "de", "es", "it", "pt", "nl", "ja", "zh", "ko", "ru", "ar", "hi", "tr", "pl", "el", "vi", "th", "ro"}
)

# The most frequent function words of each Latin-script language we answer in: question words,
# articles, pronouns, prepositions, conjunctions, auxiliaries. General lists, written from the
# languages' grammar, not from any test set; a word in several lists counts for each, shared.
FUNCTION_WORDS: dict[str, frozenset[str]] = {
    lang: frozenset(words.split())
    for lang, words in {
        "en": "a an the of in on at to for from by with about as into over after before between during and or "
        "but not no nor so if than then that this these those there here it its he she they them his her their "
        "we us our you your i me my who whom whose what which when where why how is are was were be been being "
        "am do does did have has had will would can could should shall may might must many much more most some "
        "any all each other such only also very just",
        "fr": "le la les l un une des du de d au aux et ou mais ni car donc que qu qui quoi quel quelle quels "
        "quelles quand où comment pourquoi combien est sont était étaient été être a ont avait avaient avoir fait "
        "ce cet cette ces c il elle ils elles on nous vous je j me m te se s lui leur leurs son sa ses mon ma mes "
        "ton ta tes notre votre dans sur sous avec pour par sans entre chez vers après avant pendant depuis ne n "
        "pas plus y en très aussi tout tous",
        "de": "der die das den dem des ein eine einen einem einer eines und oder aber nicht kein keine wer wen wem "
        "wessen was welche welcher welches welchen wann wo woher wohin warum wie wieviel ist sind war waren "
        "gewesen sein hat haben hatte hatten wird werden wurde wurden kann können konnte soll sollte muss ich du "
        "er sie es wir ihr mich mir sich seine ihre ihren im in am an auf aus bei mit nach von vor zu zum zur "
        "über unter für gegen durch um ohne dass auch noch nur schon sehr",
        "es": "el la los las lo un una unos unas y o u pero ni no que qué quien quién quienes quiénes cual cuál "
        "cuáles cuando cuándo donde dónde como cómo cuánto cuánta cuántos cuántas por para de del al a en con "
        "sin sobre entre hasta desde hacia es son era eran fue fueron ser estar está están estaba ha han había "
        "hay se su sus le les me te nos mi tu yo él ella ellos ellas este esta estos estas ese esa eso muy más "
        "también",
        "it": "il lo la i gli le l un uno una e ed o ma non né che chi cosa cui quale quali quando dove come "
        "perché quanto quanta quanti quante di del dello della dei degli delle a al allo alla ai agli alle da "
        "dal dalla dai in nel nello nella nei negli nelle con su sul sulla per tra fra è sono era erano fu "
        "furono essere ha hanno aveva avevano avere si ci mi ti vi suo sua suoi sue loro questo questa quello "
        "quella molto più anche",
        "pt": "o a os as um uma uns umas e ou mas nem não que quem qual quais quando onde como porque por quê "
        "quanto quanta quantos quantas de do da dos das em no na nos nas ao aos à às com sem sobre entre até "
        "desde para pelo pela pelos pelas é são era eram foi foram ser estar está estão estava tem têm tinha há "
        "se seu sua seus suas lhe me te nós eu ele ela eles elas este esta isso isto esse essa muito mais também",
        "nl": "de het een en of maar niet geen wie wat welke welk wanneer waar waarom hoe hoeveel is zijn was "
        "waren geweest ben heeft hebben had hadden wordt worden werd werden kan kunnen kon zal zou moet ik jij "
        "je hij zij ze wij we u hem haar hun ons mijn dit dat deze die er hier in op aan bij met naar van voor "
        "uit over door tot om tegen zonder ook nog al zeer te",
        "tr": "bir ve veya ama fakat değil yok kim kimi kimin ne neden niçin niye nasıl nerede nereye nereden "
        "hangi kaç zaman mi mı mu mü midir mıdır mudur müdür bu şu o bunu şunu onu bunun onun için ile gibi "
        "kadar daha en çok ise de da ki var olan oldu olarak olduğu tarafından sonra önce",
        "pl": "i a w we z ze na do od po o u przez przy dla bez nad pod za że czy nie tak jak kto kogo komu co "
        "czego czym który która które którzy gdzie kiedy dlaczego ile jest są był była było byli być ma mają "
        "miał miała się go jej jego ich on ona ono oni to ten ta te tego tym już też także bardzo",
        "vi": "là của và có không được những các một người cho trong với này đó ai gì nào đâu sao bao nhiêu khi "
        "tại vì đã đang sẽ ở từ đến về thì mà cũng rất như bị",
        "ro": "și sau dar nu nici cine ce care când unde cum cât câtă câți câte este sunt era erau a fost au fi "
        "avea are am al ale ai lui lor un o unei unui în pe la cu din de pentru prin spre după fără sub despre "
        "se își său sale acest această acesta aceasta acel mai foarte",
    }.items()
}


def _languages_of_words(lists: dict[str, frozenset[str]]) -> dict[str, tuple[str, ...]]:
    """Word -> the languages whose list has it."""
    langs: dict[str, tuple[str, ...]] = {}
    for lang, words in lists.items():
        for word in words:
            langs[word] = (*langs.get(word, ()), lang)
    return langs


_WORD_LANGUAGES = _languages_of_words(FUNCTION_WORDS)

# How evidence is weighed for a short text (in nats, added to the classifier's log-likelihoods).
# Set from principles and checked on the questions of tests/test_lang.py, not fitted to the
# benchmark's questions: a function word is ~20 times likelier in its own language's text than
# in another's (log 20 ≈ 3); an implausible language is a priori ~400 times less likely.
_FUNCTION_WORD_NATS = 3.0
_IMPLAUSIBLE_NATS = 6.0
_HISTORY_NATS = 1.0
# py3langid is naive Bayes over overlapping byte n-grams: each letter is counted in several
# n-grams, so its log-likelihoods are over-confident by about that factor. (At 1 or 2, a name
# alone, "Nadella?", still looked confidently Italian; 3 and 4 gave the same results.)
_TEMPERATURE = 3.0
_MIN_CONFIDENCE = 0.5  # posterior of the best language below which we fall back
_SHORT_WORDS = 30  # longer texts have letters enough for the classifier alone
_WORD = re.compile(r"[^\W\d_]+")
_CEDILLA = str.maketrans("şţŞŢ", "șțȘȚ")  # Romanian is often typed with cedillas


def detect_language(
    text: str,
    *,
    history: Sequence[str] | None = None,
    corpus_langs: Collection[str] = (),
    cues: bool = True,
) -> str:
    """Return the ISO 639-1 code of the language of `text`, or "und" if it has no letters.

    Works on questions of a few words as well as on whole articles (only the first
    10,000 characters are looked at). Text in Han characters only is taken as Chinese.
    For short texts, `history` (the earlier questions of the conversation, oldest first) and
    `corpus_langs` (the languages of the corpus) weigh in, and when no language is clearly
    ahead the answer is the latest earlier question's language or English. `cues=False`: the
    script rules and the classifier alone, as before they were added (for comparisons).
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
        sample = _LATIN_WORD.sub(" ", sample)
        allowed, excluded = _SHARED_SCRIPTS[script], frozenset()
    elif script == "Other":  # a script we do not map: let the classifier try all it knows
        allowed, excluded = None, frozenset()
    else:
        allowed, excluded = None, _NON_LATIN
    if not cues or script == "Other" or len(sample.split()) > _SHORT_WORDS:
        return _classify(sample, allowed=allowed, excluded=excluded)
    previous = _previous_language(history)
    plausible = QUESTION_LANGUAGES.union(corpus_langs)
    scores = _weigh(sample, allowed, excluded, plausible, previous)
    if not scores:
        return UNDETERMINED
    best = max(scores, key=scores.get)
    top = scores[best]
    confidence = 1.0 / sum(math.exp(score - top) for score in scores.values())
    if confidence >= _MIN_CONFIDENCE:
        return best
    # Unsure: the conversation's language, else English for Latin script, else the best guess
    # (English cannot be written in Cyrillic).
    if previous is not None:
        return previous
    return "en" if script == "Latin" else best


def _previous_language(history: Sequence[str] | None) -> str | None:
    """The language of the latest earlier question that has letters, if any."""
    for earlier in reversed(list(history or [])[-5:]):
        if isinstance(earlier, str):
            lang = detect_language(earlier)
            if lang != UNDETERMINED:
                return lang
    return None


def _weigh(
    text: str,
    allowed: frozenset[str] | None,
    excluded: frozenset[str],
    plausible: frozenset[str],
    previous: str | None,
) -> dict[str, float]:
    """Log-posterior (up to a constant) of each candidate language of a short text: the
    classifier's log-likelihood, plus function-word evidence, plus the prior."""
    words = _WORD.findall(unicodedata.normalize("NFC", text).lower().translate(_CEDILLA))
    votes: dict[str, float] = {}
    for word in words:
        langs = _WORD_LANGUAGES.get(word, ())
        for lang in langs:
            votes[lang] = votes.get(lang, 0.0) + 1.0 / len(langs)
    scores: dict[str, float] = {}
    for label, score in _identifier().rank(text):
        code = _LABEL_ALIASES.get(label, label)
        if len(code) != 2 or code in excluded or (allowed is not None and code not in allowed) or code in scores:
            continue
        score = score / _TEMPERATURE + _FUNCTION_WORD_NATS * votes.get(code, 0.0)
        score -= 0.0 if code in plausible or code == previous else _IMPLAUSIBLE_NATS
        score += _HISTORY_NATS if code == previous else 0.0
        scores[code] = score
    return scores


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
    # Loaded on first use (about 100 MB), then shared: rank() only reads the model.
    from py3langid.langid import MODEL_DIR, MODEL_FILE, LanguageIdentifier

    try:
        ptc, pc, classes, nextmove, row, output = _unpacked_model(MODEL_DIR / MODEL_FILE)
        return LanguageIdentifier(ptc, pc, classes, nextmove, output, norm_probs=False, tk_row=row)
    except Exception:  # noqa: BLE001 -- no cache folder, another py3langid: its own (slower) loader
        return LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=False)


def _unpacked_model(packed: Any) -> tuple:
    """py3langid's model as its `modelio.load_model` returns it, read from a decompressed copy.

    The shipped model is LZMA-compressed: decompressing it took 0.4 s of CPU on every first
    question of a process (most of a `qa ask`). The copy (about 40 MB) is made once, in the
    cache folder (QA_CACHE_DIR), named after the packed file's size and time.
    """
    import os
    from pathlib import Path

    import numpy as np
    from py3langid.modelio import _to_array

    from qa.config import _default_cache_dir

    packed = Path(packed)
    info = packed.stat()
    folder = Path(os.environ.get("QA_CACHE_DIR") or _default_cache_dir()) / "langid"
    plain = folder / f"{packed.name.split('.')[0]}-{info.st_size}-{info.st_mtime_ns}.npz"
    if not plain.exists():
        import lzma
        import shutil
        import uuid

        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".{plain.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}"
        try:
            with lzma.open(packed) as src, tmp.open("wb") as dst:
                shutil.copyfileobj(src, dst, length=1 << 20)
            os.replace(tmp, plain)  # whole or absent, whoever writes it at the same time
        finally:
            tmp.unlink(missing_ok=True)
    with np.load(plain, allow_pickle=False) as data:
        return (
            data["ptc"],
            data["pc"],
            data["classes"].tolist(),
            _to_array(data["nextmove"]),
            _to_array(data["nextmove_row"]),
            data["out_feat"].tolist(),
        )
