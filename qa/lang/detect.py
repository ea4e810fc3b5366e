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

import functools
import math
import re
import unicodedata
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from qa.lang.codes import UNDETERMINED
from qa.lang.model import identifier
from qa.lang.scripts import script_counts

if TYPE_CHECKING:
    import numpy as np

__all__ = ["FUNCTION_WORDS", "QUESTION_LANGUAGES", "detect_language"]

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
    cache_dir: Path | None = None,
) -> str:
    """Return the ISO 639-1 code of the language of `text`, or "und" if it has no letters.

    Works on questions of a few words as well as on whole articles (only the first
    10,000 characters are looked at). Text in Han characters only is taken as Chinese.
    For short texts, `history` (the earlier questions of the conversation, oldest first) and
    `corpus_langs` (the languages of the corpus) weigh in, and when no language is clearly
    ahead the answer is the latest earlier question's language or English. `cues=False`: the
    script rules and the classifier alone, as before they were added (for comparisons).
    `cache_dir` (`Settings.cache_dir`) is where the classifier's model is kept (qa.lang.model).
    """
    sample = _URL_OR_EMAIL.sub(" ", text[:_MAX_SAMPLE_CHARS])
    counts = script_counts(sample)
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
        return _classify(sample, allowed=allowed, excluded=excluded, cache_dir=cache_dir)
    previous = _previous_language(history, cache_dir)
    plausible = QUESTION_LANGUAGES.union(corpus_langs)
    decided = _decide(sample, allowed, excluded, plausible, previous, cache_dir)
    if decided is None:  # a tie or a confidence within rounding of the threshold: the exact sums
        decided = _decide_exactly(_weigh(sample, allowed, excluded, plausible, previous, cache_dir))
    if decided is None:
        return UNDETERMINED
    best, sure = decided
    if sure:
        return best
    # Unsure: the conversation's language, else English for Latin script, else the best guess
    # (English cannot be written in Cyrillic).
    if previous is not None:
        return previous
    return "en" if script == "Latin" else best


def _previous_language(history: Sequence[str] | None, cache_dir: Path | None) -> str | None:
    """The language of the latest earlier question that has letters, if any."""
    for earlier in reversed(list(history or [])[-5:]):
        if isinstance(earlier, str):
            lang = detect_language(earlier, cache_dir=cache_dir)
            if lang != UNDETERMINED:
                return lang
    return None


def _weigh(
    text: str,
    allowed: frozenset[str] | None,
    excluded: frozenset[str],
    plausible: frozenset[str],
    previous: str | None,
    cache_dir: Path | None = None,
) -> dict[str, float]:
    """Log-posterior (up to a constant) of each candidate language of a short text, best
    classifier score first: the classifier's log-likelihood, plus function-word evidence, plus
    the prior. The reference `_decide` must agree with; it answers when `_decide` cannot."""
    votes = _votes(text)
    scores: dict[str, float] = {}
    for code, score in _ranking(text, allowed, excluded, cache_dir):
        usual = code in plausible or code == previous
        implausible = 0.0 if usual else _IMPLAUSIBLE_NATS
        scores[code] = _posterior(score, votes.get(code, 0.0), implausible, _HISTORY_NATS if code == previous else 0.0)
    return scores


def _decide_exactly(scores: dict[str, float]) -> tuple[str, bool] | None:
    """The best language of `_weigh`'s scores (the first of equals) and whether its posterior
    reaches `_MIN_CONFIDENCE`; None when there is no candidate."""
    if not scores:
        return None
    best = max(scores, key=scores.get)
    top = scores[best]
    confidence = 1.0 / sum(math.exp(score - top) for score in scores.values())
    return best, confidence >= _MIN_CONFIDENCE


def _decide(
    text: str,
    allowed: frozenset[str] | None,
    excluded: frozenset[str],
    plausible: frozenset[str],
    previous: str | None,
    cache_dir: Path | None = None,
) -> tuple[str, bool] | None:
    """`_decide_exactly(_weigh(...))`, over arrays: py3langid's scores of all its labels at once,
    without its ranking (a dict and a sort of ~140 labels) and a Python step per language, which
    cost about as much as the classifier's own scoring on a short question.

    The scores are the same floats (the same operations on the same values); only the sum of the
    confidence is taken in another order, with numpy's exp: off by far less than 1e-9. So where
    that could flip the threshold, or where two languages tie for best (the reference takes the
    first in the classifier's ranking), this returns None and the caller asks the reference.
    """
    import numpy as np  # (here: `import qa.lang` stays light)

    table = _candidates(allowed, excluded, cache_dir)
    if not table.codes:
        return None
    labels = _label_scores(text, cache_dir)
    # A code's score is that of its best label (arz, ary -> ar), as in `_ranking`.
    loglik = np.maximum.reduceat(labels[table.columns], table.starts).astype(np.float64)
    votes = np.zeros(len(table.codes))
    for lang, count in _votes(text).items():
        if lang in table.position:
            votes[table.position[lang]] = count
    implausible = _implausible(table.codes, plausible).copy()
    history = np.zeros(len(table.codes))
    if previous in table.position:
        implausible[table.position[previous]] = 0.0
        history[table.position[previous]] = _HISTORY_NATS
    scores = _posterior(loglik, votes, implausible, history)
    best = int(np.argmax(scores))
    total = float(np.exp(scores - scores[best]).sum())  # 1 / confidence
    if abs(total - 1.0 / _MIN_CONFIDENCE) < 1e-9 or np.count_nonzero(scores == scores[best]) > 1:
        return None
    return table.codes[best], total <= 1.0 / _MIN_CONFIDENCE


def _posterior(loglik, votes, implausible, history):
    """Log-posterior up to a constant, for floats or arrays alike (the same operations in the same
    order, so `_weigh` and `_decide` get the same floats)."""
    return loglik / _TEMPERATURE + _FUNCTION_WORD_NATS * votes - implausible + history


def _votes(text: str) -> dict[str, float]:
    """Function-word votes per language; a word of several lists votes for each, shared."""
    words = _WORD.findall(unicodedata.normalize("NFC", text).lower().translate(_CEDILLA))
    votes: dict[str, float] = {}
    for word in words:
        langs = _WORD_LANGUAGES.get(word, ())
        for lang in langs:
            votes[lang] = votes.get(lang, 0.0) + 1.0 / len(langs)
    return votes


@dataclass(frozen=True)
class _Candidates:
    """The classifier's labels that `_ranking` lets through for one (allowed, excluded)."""

    codes: tuple[str, ...]  # ISO 639-1 codes
    position: dict[str, int]  # code -> its place in `codes`
    columns: np.ndarray  # score columns of each code's labels, code after code
    starts: np.ndarray  # where each code's columns begin in `columns`
    ascending: np.ndarray  # all those columns, in the classifier's order
    code_of: tuple[str, ...]  # the code of each of `ascending`


@functools.lru_cache(maxsize=32)
def _candidates(allowed: frozenset[str] | None, excluded: frozenset[str], cache_dir: Path | None) -> _Candidates:
    """Built once per (allowed, excluded): a handful of combinations (`detect_language`)."""
    import numpy as np

    groups: dict[str, list[int]] = {}
    seen: set[str] = set()
    for column, label in enumerate(identifier(cache_dir).nb_classes):
        code = _LABEL_ALIASES.get(label, label)
        if label not in seen and _eligible(code, allowed, excluded):  # a label's first column holds its score
            groups.setdefault(code, []).append(column)
        seen.add(label)
    columns = [column for group in groups.values() for column in group]
    sizes = [len(group) for group in groups.values()]
    ascending = sorted(columns)
    code_at = {column: code for code, group in groups.items() for column in group}
    return _Candidates(
        codes=tuple(groups),
        position={code: i for i, code in enumerate(groups)},
        columns=np.array(columns, np.intp),
        starts=np.cumsum([0, *sizes[:-1]], dtype=np.intp),
        ascending=np.array(ascending, np.intp),
        code_of=tuple(code_at[column] for column in ascending),
    )


@functools.lru_cache(maxsize=64)
def _implausible(codes: tuple[str, ...], plausible: frozenset[str]) -> np.ndarray:
    """The prior's penalty of each code (read-only: copy before changing)."""
    import numpy as np

    penalty = np.array([0.0 if code in plausible else _IMPLAUSIBLE_NATS for code in codes])
    penalty.flags.writeable = False
    return penalty


def _label_scores(text: str, cache_dir: Path | None) -> np.ndarray:
    """py3langid's log-likelihood of each of its labels (`nb_classes` order), as `rank()` sorts
    them: a duplicate label's column is folded into its first one (the only one read here)."""
    model = identifier(cache_dir)
    if hasattr(model, "_decide"):  # py3langid 0.4's scoring, before rank() makes a dict and sorts it
        return model._decide(text)
    import numpy as np  # another version: the same scores (float32, as a float), from its ranking

    scores = dict(model.rank(text))
    return np.array([scores[label] for label in model.nb_classes], np.float32)


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


def _classify(
    text: str, allowed: frozenset[str] | None, excluded: frozenset[str], cache_dir: Path | None = None
) -> str:
    """Best-scoring ISO 639-1 language of py3langid's ranking, within `allowed`, not in `excluded`.

    The first of `_ranking`, without the ranking: the best label, the first of equals in the
    classifier's order (its sort is stable)."""
    import numpy as np

    table = _candidates(allowed, excluded, cache_dir)
    if not len(table.ascending):
        return UNDETERMINED
    return table.code_of[int(np.argmax(_label_scores(text, cache_dir)[table.ascending]))]


def _eligible(code: str, allowed: frozenset[str] | None, excluded: frozenset[str]) -> bool:
    """An ISO 639-1 code within `allowed` and not in `excluded`."""
    return len(code) == 2 and code not in excluded and (allowed is None or code in allowed)


def _ranking(
    text: str, allowed: frozenset[str] | None, excluded: frozenset[str], cache_dir: Path | None = None
) -> Iterator[tuple[str, float]]:
    """py3langid's (ISO 639-1 code, log-likelihood) for `text`, best first: labels read as their
    macrolanguage, each code once, only codes within `allowed` and not in `excluded`."""
    seen: set[str] = set()
    for label, score in identifier(cache_dir).rank(text):
        code = _LABEL_ALIASES.get(label, label)
        if not _eligible(code, allowed, excluded) or code in seen:
            continue
        seen.add(code)
        yield code, score
