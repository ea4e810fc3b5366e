"""The cues a sentence is ranked on that come from its text alone: what kind of thing a question
asks for and whether a sentence holds one (`answer_type`, `holds_kind`), the names only a few
candidates hold (`new_names`), and the numbers, weekdays and months a question and a sentence
share across languages (`anchors`)."""

from __future__ import annotations

import re
from functools import lru_cache

import numpy as np

__all__ = ["SPECIFIC_TYPES", "anchors", "answer_type", "cached_anchors", "holds_kind", "new_names"]


# ---------------------------------------------------------------------- answer types
# Question words that ask for a number, a date or a person, in the languages the project
# answers in. Matched on the lower-cased question; CJK patterns need no word boundaries.
_TYPE_PATTERNS = {
    "date": [
        r"\bwhen\b", r"\bwhat year\b", r"\bin which year\b", r"\bwann\b", r"\bin welchem jahr",
        r"cu[aá]ndo", r"\ben qu[eé] a[nñ]o", r"\bquand\b", r"\ben quelle ann[ée]e", r"\bquando\b",
        r"\bin che anno", r"\bem que ano", r"\bkiedy\b", r"\bkdy\b", r"\bwanneer\b", r"когда",
        r"в каком году", r"متى", r"في أي عام", r"في أي سنة", r"什么时候", r"何时", r"哪一?年", r"いつ",
        r"何年", r"언제", r"몇 년", r"ne zaman", r"hangi yıl", r"πότε", r"khi nào", r"năm nào", r"कब",
    ],
    "money": [
        r"\bhow much\b.*\b(invest|pay|paid|cost|spen[dt]|raise|worth)", r"\bwie ?viel\b.*\b(investiert|bezahlt|kostet|gezahlt)",
        r"cu[aá]nto\b.*\b(invirti|invierte|pag[oó]|cuesta|cost[oó])", r"\bcombien\b.*\b(invest|pay|co[uû]t|dépens)",
        r"quanto\b.*\b(investi|pag|cost)", r"сколько.*(инвест|заплат|стои)", r"(投资|投資|支付|花费|花了)了?多少", r"いくら",
        r"얼마를? (투자|지불|지급)", r"多少钱",
    ],
    "percent": [
        r"percent", r"porcentaje", r"pourcentage", r"prozent", r"percentuale", r"porcentagem", r"процент",
        r"نسبة", r"百分之", r"百分比", r"パーセント", r"何%", r"퍼센트", r"yüzde", r"ποσοστό", r"phần trăm", r"प्रतिशत",
    ],
    "number": [
        r"\bhow (many|much|long|old|far|large|big|high|tall)\b", r"\bwhat (percentage|percent|share|proportion|amount)",
        r"wie (viel|viele|lange|alt|hoch|gro(ß|ss))\b", r"\bwieviel", r"prozent", r"cu[aá]nt[oa]s?\b",
        r"porcentaje", r"\bcombien\b", r"pourcentage", r"\bquant[oiae]\b", r"percentuale", r"porcentagem",
        r"\bhoeveel\b", r"сколько", r"какой процент", r"какова доля", r"\bكم\b", r"نسبة", r"多少", r"几",
        r"百分之", r"何パーセント", r"何人", r"何%", r"何割", r"いくら", r"どのくらい", r"どれくらい", r"何億",
        r"몇", r"얼마", r"kaç", r"ne kadar", r"πόσ", r"bao nhiêu", r"कितन",
    ],
    "person": [
        r"\bwho\b", r"\bwhom\b", r"\bwhose\b", r"\bwer\b", r"\bwen\b", r"\bwem\b", r"\bwessen\b",
        r"qui[eé]n", r"\bqui\b", r"\bchi\b", r"\bquem\b", r"\bwie\b(?= (is|was|heeft|werd))", r"\bkto\b",
        r"\bкто\b", r"\bкого\b", r"\bкому\b", r"\bкем\b", r"^من\b", r"谁", r"誰", r"だれ", r"누구", r"kim\b",
        r"ποιος", r"ποια", r"\bai\b", r"कौन",
        # "which company / investors ...": a name is asked for as well
        r"\bwhich (\w+ )?(compan|firm|startup|investor|organi[sz]ation|team|country|city|universit|band|newspaper)",
        r"\bwelche[snmr]? (\w+ )?(firma|unternehmen|investoren|mannschaft|land|stadt|universität)",
        r"qu[eé] (empresa|compañía|inversores|equipo|país|ciudad|universidad)", r"quel(le)?s? (entreprise|société|investisseurs|équipe|pays|ville)",
        r"quale (azienda|società|squadra)", r"quais investidores|que empresa", r"哪家", r"哪个公司", r"哪些投资",
        r"どこ", r"どの(会社|企業)", r"어느 회사", r"어떤 회사", r"какая компания", r"какие инвесторы",
    ],
}
_TYPES = {name: re.compile("|".join(patterns)) for name, patterns in _TYPE_PATTERNS.items()}
# Kinds that a sentence holds only when it says something precise (a "%", a currency, a date).
SPECIFIC_TYPES = frozenset({"money", "percent", "date"})

_PERCENT = re.compile(
    r"%|٪|％|percent|pour ?cent|por ?ciento|por cento|prozent|per ?cento|процент|بالمئة|في المائة|パーセント|百分之|"
    r"퍼센트|yüzde|τοις εκατό|phần trăm|प्रतिशत",
    re.IGNORECASE,
)
_MONEY = re.compile(
    r"[$€£¥₩]|\b(dollars?|dólares|dollari|euros?|yen|milliards?|billions?|millions?|milliarden?|millionen|"
    r"millones|miliardi|bilhões|milhões)\b|ドル|円|美元|亿|億|달러|доллар|евро|млрд|млн",
    re.IGNORECASE,
)
_DIGIT = re.compile(r"\d|[〇一二三四五六七八九十百千万億兆]")
_YEAR_OR_DAY = re.compile(
    r"\b(1[0-9]{3}|20[0-9]{2})\b|\d+\s*(年|月|日|년|월|일)|"
    r"\b(january|february|march|april|may|june|july|august|september|october|november|december|"
    r"januar|februar|märz|mai|juni|juli|oktober|dezember|enero|febrero|marzo|abril|mayo|junio|julio|agosto|"
    r"septiembre|octubre|noviembre|diciembre|janvier|février|mars|avril|juin|juillet|août|septembre|octobre|"
    r"novembre|décembre|gennaio|febbraio|aprile|maggio|giugno|luglio|settembre|ottobre|dicembre|"
    r"января|февраля|марта|апреля|мая|июня|июля|августа|сентября|октября|ноября|декабря|"
    r"monday|tuesday|wednesday|thursday|friday|saturday|sunday|montag|dienstag|mittwoch|donnerstag|"
    r"freitag|samstag|sonntag|lundi|mardi|mercredi|jeudi|vendredi|samedi|dimanche|lunes|martes|"
    r"miércoles|jueves|viernes|sábado|domingo)\b|(星期|周|曜日)",
    re.IGNORECASE,
)
# A capitalized word: a name in scripts with case (the sentence's first word aside, see `_names`).
_CAPITALIZED = re.compile(r"[A-ZÀ-ÖØ-ÞĀ-ŽА-ЯЁΑ-Ω][\w'’-]*")


def answer_type(question: str) -> str | None:
    """"money", "percent", "number", "date" or "person" when the question asks for one (dates
    before numbers: "in what year" asks for a date), else None."""
    text = question.lower()
    for name in ("money", "percent", "date", "number", "person"):
        if _TYPES[name].search(text):
            return name
    return None


def holds_kind(kind: str | None, sentence: str, question: str) -> bool:
    """Whether the sentence holds a `kind` the question does not already state."""
    if kind == "money":
        return bool(_MONEY.search(sentence))
    if kind == "percent":
        return bool(_PERCENT.search(sentence))
    if kind == "number":
        asked = set(_DIGIT.findall(question))
        return any(d not in asked for d in _DIGIT.findall(sentence))
    if kind == "date":
        return bool(_YEAR_OR_DAY.search(sentence))
    if kind == "person":
        return bool(_names(sentence) - _names(question, first=True))
    return False


def _names(text: str, first: bool = False) -> set[str]:
    """Capitalized words of `text` (lower-cased), its first word only with `first`, unless the
    next word is capitalized too ("Thrive Capital ...")."""
    found = [(m.start(), m.group()) for m in _CAPITALIZED.finditer(text)]
    names = set()
    for n, (start, word) in enumerate(found):
        leading = not text[:start].strip(" «“\"'(¿¡-–")
        follows = n + 1 < len(found) and text[start + len(word) : found[n + 1][0]].strip() == ""
        if first or not leading or follows:
            names.add(word.lower())
    return names


_POSSESSIVE = re.compile(r"['’]s$")  # "Microsoft's" names Microsoft


def new_names(question: str, texts: list[str], keys: list | None = None) -> np.ndarray:
    """For each text, how rare among `texts` its rarest name not in `question` is: 1 / the number
    of distinct texts (by `keys`, default the texts themselves) that hold it; 0 without one.

    Names are capitalized words (`_names`), the same in most scripts that have case: a name
    that every candidate repeats is the topic, the one a single sentence holds often answers
    "who / which company". Counted among the candidates, not the corpus, so a topic's names
    are common whatever their corpus frequency.
    """
    keys = list(texts) if keys is None else keys
    asked = {_POSSESSIVE.sub("", n) for n in _names(question, first=True)}
    found = [{_POSSESSIVE.sub("", n) for n in _names(text)} - asked for text in texts]
    holders: dict[str, set] = {}
    for key, names in zip(keys, found):
        for name in names:
            holders.setdefault(name, set()).add(key)
    return np.array([1.0 / min(len(holders[n]) for n in names) if names else 0.0 for names in found], np.float64)


# ---------------------------------------------------------------------- cross-language anchors
# Numbers, weekdays and months are written differently in every language and script ("Sunday",
# "dimanche", "日曜日", "周日"; "1,000", "1.000", "１０００", "千"), so neither the lexical share
# (one language's analyzer) nor, often, the dense score sees that a question and a sentence in
# another language name the same one. Each is mapped to one language-independent token.
# (word, CJK/Arabic forms): words match whole, the others anywhere (no spaces around them).
# Left out as ambiguous: English "may" and "march", the Portuguese weekdays "segunda" to
# "sexta" (also ordinals).
_WEEKDAYS = [
    ("monday|montag|lundi|lunes|lunedì|lunedi|maandag|понедельник[а-я]*|pazartesi", "月曜|星期一|周一|週一|월요일|الاثنين"),
    ("tuesday|dienstag|mardi|martes|martedì|martedi|dinsdag|вторник[а-я]*|salı", "火曜|星期二|周二|週二|화요일|الثلاثاء"),
    ("wednesday|mittwoch|mercredi|miércoles|miercoles|mercoledì|mercoledi|woensdag|çarşamba", "水曜|星期三|周三|週三|수요일|الأربعاء"),
    ("thursday|donnerstag|jeudi|jueves|giovedì|giovedi|donderdag|четверг[а-я]*|perşembe", "木曜|星期四|周四|週四|목요일|الخميس"),
    ("friday|freitag|vendredi|viernes|venerdì|venerdi|vrijdag|пятниц[аыу]|cuma", "金曜|星期五|周五|週五|금요일|الجمعة"),
    ("saturday|samstag|sonnabend|samedi|sábado|sabado|sabato|zaterdag|суббот[аыу]|cumartesi", "土曜|星期六|周六|週六|토요일|السبت"),
    ("sunday|sonntag|dimanche|domingo|domenica|zondag|воскресень[ея]|pazar", "日曜|星期日|星期天|周日|週日|일요일|الأحد"),
]
_MONTHS = [
    "january|januar|janvier|enero|gennaio|janeiro|januari|январ[ьяе]|يناير",
    "february|februar|février|fevrier|febrero|febbraio|fevereiro|februari|феврал[ьяе]|فبراير",
    "märz|mars|marzo|março|maart|марта?|مارس",
    "april|avril|abril|aprile|апрел[ьяе]|أبريل",
    "mai|mayo|maggio|maio|mei|ма[йяе]|مايو",
    "june|juni|juin|junio|giugno|junho|июн[ьяе]|يونيو",
    "july|juli|juillet|julio|luglio|julho|июл[ьяе]|يوليو",
    "august|août|aout|agosto|augustus|августа?|أغسطس",
    "september|septembre|septiembre|settembre|setembro|сентябр[ьяе]|سبتمبر",
    "october|oktober|octobre|octubre|ottobre|outubro|октябр[ьяе]|أكتوبر",
    "november|novembre|noviembre|novembro|ноябр[ьяе]|نوفمبر",
    "december|dezember|décembre|decembre|diciembre|dicembre|dezembro|декабр[ьяе]|ديسمبر",
]
_CJK_MONTH = re.compile(r"(\d{1,2})\s*月")
_NAMED = re.compile(
    "|".join(f"(?P<d{i}>\\b(?:{words})\\b|{other})" for i, (words, other) in enumerate(_WEEKDAYS))
    + "|" + "|".join(f"(?P<m{i + 1}>\\b(?:{p})\\b)" for i, p in enumerate(_MONTHS)),
    re.IGNORECASE,
)  # fmt: skip
_NUMBER = re.compile(r"\d+(?:[.,\u00a0\u202f ]\d{3})*(?:[.,]\d+)?")
_CJK_DIGITS = dict(zip("〇零一二两三四五六七八九", [0, 0, 1, 2, 2, 3, 4, 5, 6, 7, 8, 9]))
_CJK_UNITS = {"十": 10, "百": 100, "千": 1000}
_CJK_NUMBER = re.compile(r"[〇零一二两三四五六七八九十百千]+")


def _cjk_number(text: str) -> int | None:
    """"四十九" -> 49, "七百七十" -> 770 (below ten thousand; larger units are left alone)."""
    total, digit = 0, None
    for ch in text:
        if ch in _CJK_DIGITS:
            digit = _CJK_DIGITS[ch]
        else:
            total += (1 if digit is None else digit) * _CJK_UNITS[ch]
            digit = None
    total += digit or 0
    return total or None


def anchors(text: str) -> frozenset[str]:
    """Language-independent tokens of the numbers, weekdays and months in `text`: "#49", "wd6"
    (Sunday), "m11" (November). Full-width digits and thousands separators are normalized; CJK
    numerals below ten thousand are read as numbers."""
    import unicodedata

    text = unicodedata.normalize("NFKC", text)
    out = set()
    for m in _NUMBER.finditer(text):
        raw = re.sub(r"[.,\u00a0\u202f ](?=\d{3}\b)", "", m.group())
        out.add("#" + raw.replace(",", "."))
    for m in _CJK_NUMBER.finditer(text):
        if len(m.group()) > 1 or m.group() not in "一两十百千":  # a lone 一 is mostly "one/a"
            value = _cjk_number(m.group())
            if value is not None:
                out.add(f"#{value}")
    for m in _NAMED.finditer(text):
        name = m.lastgroup
        out.add(f"wd{name[1:]}" if name.startswith("d") else name)
    for m in _CJK_MONTH.finditer(text):
        out.add(f"m{int(m.group(1))}")
    return frozenset(out)


@lru_cache(maxsize=4096)
def cached_anchors(text: str) -> frozenset[str]:
    return anchors(text)
