"""Language identification of short questions: the classifier alone (before) vs with the cues of
a short question (after), in the same run.

Question sets:
* XQuAD's 1,190 questions in each of its 12 languages, cut to their first 3, 4 and 5 words
  (Chinese and Thai are written without spaces: their first 2N and 4N characters, about as many
  words);
* short questions with names, written for this benchmark (tests/data/short_questions_with_names.json);
* the seed questions of the tests (tests/data/seed_questions.json), whole;
* names alone ("Nadella?"), where there is no language to find: the expected reply is English,
  or the language of the conversation when there is one.

Prints a table of accuracy per language, before and after, and writes results/bench_lang.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._common import RESULTS, ROOT, machine

NAMES_FILE = ROOT / "tests" / "data" / "short_questions_with_names.json"
SEED_FILE = ROOT / "tests" / "data" / "seed_questions.json"
WORDS = (3, 4, 5)
CHARS_PER_WORD = {"zh": 2, "th": 4, "ja": 2}  # scripts without spaces between words
# Names alone: no language in them; the reply should be English, or the conversation's language.
BARE_NAMES = ["Nadella?", "Satya Nadella", "Sam Altman?", "Ilya Sutskever", "Mira Murati?", "Emmett Shear",
              "Helen Toner", "Greg Brockman?", "Microsoft?", "OpenAI", "Redmond", "Anthropic?"]
HISTORY = {"fr": "Qui a licencié le patron d'OpenAI ?", "de": "Wer hat den Chef von OpenAI entlassen?"}


def truncate(question: str, lang: str, n: int) -> str:
    """The first `n` words of a question (first n x chars-per-word characters without spaces)."""
    if lang in CHARS_PER_WORD:
        return question[: n * CHARS_PER_WORD[lang]]
    return " ".join(question.split()[:n])


def question_sets(xquad_dir: Path | None) -> dict[str, list[tuple[str, str, list[str] | None]]]:
    """Set name -> [(expected language, question, history)]."""
    sets: dict[str, list[tuple[str, str, list[str] | None]]] = {}
    if xquad_dir is not None:
        from qa.xquad import load_xquad

        data = load_xquad(xquad_dir)
        for n in WORDS:
            sets[f"xquad-{n}w"] = [
                (lang, truncate(q, lang, n), None) for lang in data.langs for q in data.questions[lang]
            ]
    names = json.loads(NAMES_FILE.read_text(encoding="utf-8"))["questions"]
    sets["names"] = [(lang, q, None) for lang, qs in names.items() for q in qs]
    seeds = json.loads(SEED_FILE.read_text(encoding="utf-8"))
    sets["seed"] = [(lang, q, None) for fact in seeds for lang, q in fact["questions"].items()]
    sets["bare-names"] = [("en", q, None) for q in BARE_NAMES] + [
        (lang, q, [earlier]) for lang, earlier in HISTORY.items() for q in BARE_NAMES
    ]
    return sets


def accuracy(rows, detect) -> tuple[dict[str, float], dict[str, int], float, float]:
    """Per-language accuracy, counts, seconds per question, and the share of answers outside
    the languages we reply in (an "unrelated language")."""
    from qa.lang import QUESTION_LANGUAGES

    right: dict[str, int] = defaultdict(int)
    total: dict[str, int] = defaultdict(int)
    unrelated = 0
    start = time.perf_counter()
    for lang, question, history in rows:
        found = detect(question, history)
        total[lang] += 1
        right[lang] += found == lang
        unrelated += found not in QUESTION_LANGUAGES
    seconds = (time.perf_counter() - start) / max(len(rows), 1)
    return {lang: right[lang] / total[lang] for lang in total}, dict(total), seconds, unrelated / max(len(rows), 1)


def main() -> None:
    from tqdm import tqdm

    from qa.lang import detect_language
    from qa.xquad import find_xquad

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=None, help="folder of xquad.<lang>.json")
    parser.add_argument("--out", type=Path, default=RESULTS / "bench_lang.json")
    args = parser.parse_args()
    xquad_dir = args.data or find_xquad()
    if xquad_dir is None:
        print("XQuAD not found (data/xquad or shared/data/xquad here or above): its rows are skipped.")
    detectors = {
        "before": lambda q, h: detect_language(q, cues=False),
        "after": lambda q, h: detect_language(q, history=h),
    }
    detect_language("warm up")
    sets = question_sets(xquad_dir)
    results: dict = {}
    for name, rows in tqdm(sets.items(), desc="question sets", unit="set"):
        results[name] = {}
        for label, detect in detectors.items():
            per_lang, counts, seconds, unrelated = accuracy(rows, detect)
            results[name][label] = {
                "per_language": per_lang,
                "mean": sum(per_lang.values()) / len(per_lang),
                "unrelated": unrelated,
                "ms_per_question": round(seconds * 1000, 3),
            }
        results[name]["questions"] = counts
    table = render(results)
    print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"machine": machine(), "results": results, "table": table}, indent=1))


def render(results: dict) -> str:
    """Languages down, question sets across: accuracy before → after, then the mean of each set."""
    names = list(results)
    langs = sorted({lang for result in results.values() for lang in result["questions"]})
    lines = ["| language | " + " | ".join(names) + " |", "| --- |" + " ---: |" * len(names)]
    for lang in langs:
        cells = []
        for name in names:
            before, after = (results[name][k]["per_language"].get(lang) for k in ("before", "after"))
            cells.append("" if before is None else f"{before:.3f} → {after:.3f}")
        lines.append(f"| {lang} | " + " | ".join(cells) + " |")
    means = [f"**{results[n]['before']['mean']:.3f} → {results[n]['after']['mean']:.3f}**" for n in names]
    lines.append("| **mean** | " + " | ".join(means) + " |")
    unrelated = [f"{results[n]['before']['unrelated']:.3f} → {results[n]['after']['unrelated']:.3f}" for n in names]
    lines.append("| outside the reply languages | " + " | ".join(unrelated) + " |")
    counts = [str(sum(results[n]["questions"].values())) for n in names]
    lines.append("| questions | " + " | ".join(counts) + " |")
    slowest = max((r["before"]["ms_per_question"], r["after"]["ms_per_question"]) for r in results.values())
    lines.append("")
    lines.append(f"Time per question (slowest set): before {slowest[0]} ms, after {slowest[1]} ms.")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
