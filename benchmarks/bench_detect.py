"""Language detection per question: the same answers as before, and what it costs.

`detect_language` once counted letters by script with a range search a character, ranked
py3langid's ~140 labels (a dict and a sort) and weighed each candidate language in a Python step;
it now counts distinct characters (cached), and takes the classifier's score array as it is
(qa.lang.detect `_decide`). The earlier code is kept here, as it was, to compare with:

1. identical answers (and script counts): every question of tests/data (seed, held-out,
   off-topic, with names) and of XQuAD (every language found, whole and cut to three words),
   with and without the short-question cues, with a corpus's languages, with a conversation's
   history; and XQuAD paragraphs (long texts: the classifier alone);
2. CPU per call (thread time), earlier and now alternating in one process, p50 and mean.

    python benchmarks/bench_detect.py [--per-language 300] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import qa.lang.detect as D
from qa.lang.codes import UNDETERMINED
from qa.lang.model import identifier
from qa.lang.scripts import _script_of


# ---- the code before (qa/lang/detect.py and scripts.py at 7f1fe46), unchanged but for the names ----
def before_detect(text, *, history=None, corpus_langs=(), cues=True, cache_dir=None):
    sample = D._URL_OR_EMAIL.sub(" ", text[: D._MAX_SAMPLE_CHARS])
    counts = before_script_counts(sample)
    if not counts:
        return UNDETERMINED
    script = D._dominant_script(counts)
    if script in D._SINGLE_LANGUAGE_SCRIPTS:
        return D._SINGLE_LANGUAGE_SCRIPTS[script]
    if script in D._SHARED_SCRIPTS:
        sample = D._LATIN_WORD.sub(" ", sample)
        allowed, excluded = D._SHARED_SCRIPTS[script], frozenset()
    elif script == "Other":
        allowed, excluded = None, frozenset()
    else:
        allowed, excluded = None, D._NON_LATIN
    if not cues or script == "Other" or len(sample.split()) > D._SHORT_WORDS:
        return next((code for code, _s in before_ranking(sample, allowed, excluded, cache_dir)), UNDETERMINED)
    previous = None
    for earlier in reversed(list(history or [])[-5:]):
        if isinstance(earlier, str):
            lang = before_detect(earlier, cache_dir=cache_dir)
            if lang != UNDETERMINED:
                previous = lang
                break
    plausible = D.QUESTION_LANGUAGES.union(corpus_langs)
    scores = before_weigh(sample, allowed, excluded, plausible, previous, cache_dir)
    if not scores:
        return UNDETERMINED
    best = max(scores, key=scores.get)
    top = scores[best]
    confidence = 1.0 / sum(math.exp(score - top) for score in scores.values())
    if confidence >= D._MIN_CONFIDENCE:
        return best
    if previous is not None:
        return previous
    return "en" if script == "Latin" else best


def before_script_counts(text):
    if text.isascii():
        latin = sum(char.isalpha() for char in text)
        return {"Latin": latin} if latin else {}
    counts: dict[str, int] = {}
    for char in text:
        if char.isalpha():
            script = _script_of.__wrapped__(char)  # (not cached then)
            counts[script] = counts.get(script, 0) + 1
    return counts


def before_weigh(text, allowed, excluded, plausible, previous, cache_dir=None):
    import unicodedata

    words = D._WORD.findall(unicodedata.normalize("NFC", text).lower().translate(D._CEDILLA))
    votes: dict[str, float] = {}
    for word in words:
        langs = D._WORD_LANGUAGES.get(word, ())
        for lang in langs:
            votes[lang] = votes.get(lang, 0.0) + 1.0 / len(langs)
    scores: dict[str, float] = {}
    for code, score in before_ranking(text, allowed, excluded, cache_dir):
        score = score / D._TEMPERATURE + D._FUNCTION_WORD_NATS * votes.get(code, 0.0)
        score -= 0.0 if code in plausible or code == previous else D._IMPLAUSIBLE_NATS
        score += D._HISTORY_NATS if code == previous else 0.0
        scores[code] = score
    return scores


def before_ranking(text, allowed, excluded, cache_dir=None):
    seen: set[str] = set()
    for label, score in identifier(cache_dir).rank(text):
        code = D._LABEL_ALIASES.get(label, label)
        if len(code) != 2 or code in excluded or (allowed is not None and code not in allowed) or code in seen:
            continue
        seen.add(code)
        yield code, score


# ---- material ----
def question_sets(per_language: int) -> dict[str, list[str]]:
    """Question texts by set: tests/data's three files, then XQuAD's languages (if found)."""
    data = ROOT / "tests" / "data"
    sets: dict[str, list[str]] = {}
    for name in ("seed_questions", "heldout_questions"):
        items = json.loads((data / f"{name}.json").read_text(encoding="utf-8"))
        sets[name] = [text for item in items for text in item["questions"].values()]
    off = json.loads((data / "off_topic_questions.json").read_text(encoding="utf-8"))["questions"]
    sets["off_topic_questions"] = [text for texts in off.values() for text in texts]
    named = json.loads((data / "short_questions_with_names.json").read_text(encoding="utf-8"))["questions"]
    sets["short_questions_with_names"] = [text for texts in named.values() for text in texts]
    from benchmarks.bench_lang import truncate
    from qa.xquad import find_xquad, load_xquad

    folder = find_xquad(ROOT)
    if folder is not None:
        xquad = load_xquad(folder)
        for lang in xquad.langs:
            sets[f"xquad {lang}"] = xquad.questions[lang][:per_language]
        # The hardest: cut to their first three words (benchmarks/bench_lang.py).
        sets["xquad 3 words"] = [truncate(q, lang, 3) for lang in xquad.langs for q in xquad.questions[lang][:per_language]]
        sets["xquad paragraphs"] = [p for lang in xquad.langs for p in xquad.paragraphs[lang][:20]]
    return sets


VARIANTS = {
    "plain": {},
    "no cues": {"cues": False},
    "corpus en,de,sw": {"corpus_langs": frozenset({"en", "de", "sw"})},
    "corpus af,sw,id": {"corpus_langs": frozenset({"af", "sw", "id"})},
}


def check(sets: dict[str, list[str]]) -> tuple[int, int]:
    """(calls compared, those that differ); prints each difference."""
    calls = differ = 0
    everything = [q for texts in sets.values() for q in texts]
    for name, texts in sets.items():
        for i, text in enumerate(texts):
            variants = dict(VARIANTS)
            # A conversation: the question before in this set, and one of another set.
            variants["history"] = {"history": texts[max(0, i - 2) : i]}
            variants["history other"] = {"history": [everything[(i * 7919) % len(everything)]]}
            for label, kwargs in variants.items():
                calls += 1
                old, new = before_detect(text, **kwargs), D.detect_language(text, **kwargs)
                counted = list(before_script_counts(text).items()) == list(D.script_counts(text).items())
                if old != new or not counted:
                    differ += 1
                    print(f"DIFFERENT ({name}, {label}): {text[:60]!r}: {old} -> {new}")
    return calls, differ


def fallbacks(sets: dict[str, list[str]]) -> tuple[int, int]:
    """(short Latin/Cyrillic/... questions weighed, those `_decide` left to the reference)."""
    weighed = left = 0
    original = D._decide_exactly

    def counting(scores):
        nonlocal left
        left += 1
        return original(scores)

    D._decide_exactly = counting
    real = D._decide

    def weigh(*args, **kwargs):
        nonlocal weighed
        weighed += 1
        return real(*args, **kwargs)

    D._decide = weigh
    try:
        for texts in sets.values():
            for text in texts:
                D.detect_language(text)
    finally:
        D._decide_exactly, D._decide = original, real
    return weighed, left


def timings(texts: list[str], rounds: int) -> tuple[list[int], list[int]]:
    """Thread CPU ns per call of the earlier and the current code, alternating call by call."""
    before, now = [], []
    for _ in range(rounds):
        for text in texts:
            t0 = time.thread_time_ns()
            before_detect(text)
            t1 = time.thread_time_ns()
            D.detect_language(text)
            t2 = time.thread_time_ns()
            before.append(t1 - t0)
            now.append(t2 - t1)
    return before, now


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--per-language", type=int, default=300, help="XQuAD questions per language")
    parser.add_argument("--rounds", type=int, default=3, help="timed passes over each set")
    args = parser.parse_args()
    sets = question_sets(args.per_language)
    D.detect_language("warm up the model")
    calls, differ = check(sets)
    print(f"identical: {calls - differ:,} of {calls:,} calls ({len(VARIANTS) + 2} variants a text)")
    weighed, left = fallbacks(sets)
    print(f"weighed with the cues: {weighed:,}; left to the reference (tie or confidence at 0.5): {left}")
    print()
    print("| set | texts | p50 before → now µs | ratio | mean before → now µs | ratio |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    all_before, all_now = [], []
    for name, texts in sets.items():
        if name == "xquad paragraphs":
            continue
        before, now = timings(texts, args.rounds)
        all_before += before
        all_now += now
        row(name, len(texts), before, now)
    row("all questions", sum(len(t) for n, t in sets.items() if n != "xquad paragraphs"), all_before, all_now)
    if differ:
        raise SystemExit(f"{differ} calls answered differently")


def row(name: str, n: int, before: list[int], now: list[int]) -> None:
    p50b, p50n = statistics.median(before) / 1e3, statistics.median(now) / 1e3
    mb, mn = statistics.fmean(before) / 1e3, statistics.fmean(now) / 1e3
    print(f"| {name} | {n:,} | {p50b:.1f} → {p50n:.1f} | {p50n / p50b:.2f} | {mb:.1f} → {mn:.1f} | {mn / mb:.2f} |")


if __name__ == "__main__":
    main()
