"""Answer-level quality: does the reply's first quote (or any quote) hold the answer?

What a user reads is the reply, not the ranking. On XQuAD (which marks the answer's text in
every language) each question is run as `ask()` runs it: the pipeline's five best passages
(one per translation group, in the asker's language when the group has one), those under the
similarity threshold dropped, then `qa.quotes.select_quotes` chooses the quotes, the same
function `ask()` calls. A quote holds the answer when it is a sentence of the answering
paragraph that contains the gold answer text of its language.

Weights are chosen on one half of the articles ("tune": even positions in the file) and
reported on the other ("test": odd positions), each printed.

On the corpus's own questions (`--questions FILE`, evidence strings) `ask()` itself is called.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from itertools import product
from pathlib import Path

import numpy as np

from qa.answer import ANSWER_CANDIDATES as CANDIDATES  # as `ask()`
from qa.answer import CITED_PASSAGES as QUOTED
from qa.config import Settings
from qa.quotes import (
    BY_PASSAGE,
    RANKED,
    SENTENCE_END,
    QuoteWeights,
    SentenceCandidate,
    pick,
    ranked_scores,
    select_quotes,
    sentence_features,
)

__all__ = [
    "AnswerCase",
    "answer_cases",
    "corpus_answer_report",
    "print_answer_report",
    "tune_alone",
    "tune_weights",
    "variants",
    "xquad_answer_report",
]

POOLS = ("single", "mixed", "needle")


@dataclass
class AnswerCase:
    """One question against one pool: the candidate sentences and which of them hold the answer."""

    pool: str
    q_lang: str
    half: str  # "tune" or "test"
    question: str
    candidates: list[SentenceCandidate]
    correct: np.ndarray  # (len(candidates),) bool
    _features: np.ndarray | None = None


COMPONENTS = ("lexical", "rank", "answer_type", "context")
GRID = {
    "lexical": [0, 2, 4, 6, 8],
    "rank": [0, 0.1, 0.25, 0.5, 1],
    "answer_type": [0, 0.25, 0.5, 1],
    "context": [0, 0.1, 0.25],
}
TUNED_ON = ("mixed", "needle")  # a multilingual corpus is both: the answer in the asker's language, or only in another


def variants(
    weights: QuoteWeights | None = None, alone: dict[str, float] | None = None
) -> dict[str, tuple[str, QuoteWeights | None]]:
    """The previous choice, the dense ranking alone, each cue added alone (at `alone[cue]`, else
    at its weight in `weights`, else, for a cue left out of `weights`, at 0.25 to show what it
    would do), and all of them (`weights`)."""
    w = weights or QuoteWeights()
    alone = alone or {}
    none = dict.fromkeys(COMPONENTS, 0.0)
    out: dict[str, tuple[str, QuoteWeights | None]] = {"by passage (before)": (BY_PASSAGE, None)}
    out["dense"] = (RANKED, QuoteWeights(**none))
    for cue in COMPONENTS:
        out[f"dense+{cue}"] = (RANKED, QuoteWeights(**{**none, cue: alone.get(cue, getattr(w, cue) or 0.25)}))
    out["ranked (now)"] = (RANKED, w)
    return out


def _ranked_rows(scores: np.ndarray, pipeline, pool, q_lang: str, kind: str, hide: np.ndarray | None) -> np.ndarray:
    from qa.evaluate import _top, _top_grouped

    if kind == "single":
        cols = np.flatnonzero(pool.langs == q_lang)
        return cols[_top(scores[:, cols], CANDIDATES)]
    if hide is not None:
        scores = np.where(hide, -np.inf, scores)
    return _top_grouped(scores, pipeline.groups, pool.langs, q_lang, CANDIDATES)


def answer_cases(data, pool, queries: dict[str, np.ndarray], pipeline, settings: Settings) -> list[AnswerCase]:
    """Every question of `data` in the single-language, mixed and needle pools, as `AnswerCase`s.

    `pipeline` is a prepared `qa.evaluate.Pipeline` (its ranking, groups, sentence statistics).
    """
    gold = data.answer_paragraph
    half = np.where(data.article_of[gold] % 2 == 0, "tune", "test")
    by_row = [np.flatnonzero(pool.sentence_owner == row) for row in range(len(pool.texts))]
    cases = []
    for q_lang in data.langs:
        raw = queries[q_lang]
        scores = pipeline.scores(raw, data.questions[q_lang], q_lang, pool)
        centered = pipeline.stats.center_query(raw, q_lang, settings.query_centering)
        cosine = raw @ pool.sentence_vectors.T
        z = pipeline.sentence_stats.standardize(
            centered, centered @ pool.sentence_vectors.T, pipeline.sentence_lang_ids
        )
        similarity = raw @ pool.vectors.T
        plans = [("single", None, None), ("mixed", None, None)]
        plans += [("needle", p, (pool.langs[None, :] != p) & (pool.para[None, :] == gold[:, None]))
                  for p in data.langs if p != q_lang]  # fmt: skip
        for kind, _, hide in plans:
            tops = _ranked_rows(scores, pipeline, pool, q_lang, kind, hide)
            for qi, rows in enumerate(tops.tolist()):
                rows = [r for r in rows if similarity[qi, r] >= settings.min_similarity]
                candidates, correct = [], []
                for position, row in enumerate(rows):
                    lang = str(pool.langs[row])
                    answer = data.answers[lang][qi]
                    for s in by_row[row].tolist():
                        a, b = pool.sentence_spans[s].tolist()
                        text = pool.texts[row][a:b]
                        candidates.append(
                            SentenceCandidate(position, (row, a), text, lang, float(cosine[qi, s]), float(z[qi, s]),
                                              text[-1:] in SENTENCE_END)
                        )  # fmt: skip
                        correct.append(bool(answer) and pool.para[row] == gold[qi] and answer in text)
                cases.append(AnswerCase(kind, q_lang, str(half[qi]), data.questions[q_lang][qi],
                                        candidates, np.array(correct, bool)))  # fmt: skip
    return cases


def _outcome(case: AnswerCase, chosen: list[int]) -> tuple[bool, bool, bool]:
    """(first quote holds the answer, any quote does, not found)."""
    hits = [bool(case.correct[i]) for i in chosen]
    return bool(hits and hits[0]), any(hits), not chosen


def run_variant(cases: list[AnswerCase], method: str, weights: QuoteWeights | None, idf) -> np.ndarray:
    """(n_cases, 3) outcomes of one selection over every case, through `select_quotes`."""
    return np.array(
        [_outcome(c, select_quotes(c.question, c.candidates, QUOTED, idf=idf, method=method, weights=weights))
         for c in cases]
    ).reshape(-1, 3)


def _table(cases: list[AnswerCase], outcomes: np.ndarray) -> dict:
    """{half: {pool: {lang: {first, any, not_found, n}, "mean": ...}}}: means over languages."""
    out: dict = {}
    for half in ("tune", "test"):
        for kind in POOLS:
            rows: dict = {}
            for lang in sorted({c.q_lang for c in cases}):
                mask = np.array([c.half == half and c.pool == kind and c.q_lang == lang for c in cases])
                if mask.any():
                    first, anywhere, missing = outcomes[mask].mean(axis=0)
                    rows[lang] = {"first": round(float(first), 3), "any": round(float(anywhere), 3),
                                  "not_found": round(float(missing), 3), "n": int(mask.sum())}  # fmt: skip
            if rows:
                rows["mean"] = {k: round(float(np.mean([r[k] for r in rows.values()])), 3) for k in ("first", "any")}
                out.setdefault(half, {})[kind] = rows
    return out


def xquad_answer_report(
    cases: list[AnswerCase], idf, weights: QuoteWeights | None = None, alone: dict[str, float] | None = None
) -> dict:
    """Every variant (`variants`) over every case: {variant: `_table`}."""
    return {
        name: _table(cases, run_variant(cases, method, w, idf))
        for name, (method, w) in variants(weights, alone).items()
    }


def tune_weights(cases: list[AnswerCase], idf, grid: dict[str, list[float]] | None = None) -> tuple[QuoteWeights, float]:
    """The weights with the best first-quote rate on the tune half, averaged over the mixed and
    needle pools and the question languages (the features computed once, then `ranked_scores`
    and `pick`, as `select_quotes` does); a cue missing from `grid` stays at 0."""
    grid = grid or GRID
    tune = [c for c in cases if c.half == "tune" and c.pool in TUNED_ON]
    features = [sentence_features(c.question, c.candidates, idf) for c in tune]
    groups = sorted({(c.pool, c.q_lang) for c in tune})
    members = [np.array([(c.pool, c.q_lang) == g for c in tune]) for g in groups]
    best, best_score = QuoteWeights(**dict.fromkeys(COMPONENTS, 0.0)), -1.0
    for values in product(*(grid.get(cue, [0.0]) for cue in COMPONENTS)):
        w = QuoteWeights(*values)
        hits = np.array([_outcome(c, pick(c.candidates, ranked_scores(f, w), QUOTED))[0] if c.candidates else False
                         for c, f in zip(tune, features)])  # fmt: skip
        score = float(np.mean([hits[m].mean() for m in members]))
        if score > best_score + 1e-9:
            best, best_score = w, score
    return best, best_score


def tune_alone(cases: list[AnswerCase], idf) -> dict[str, float]:
    """Each cue's best weight with the others off (tune half): what it buys on its own."""
    return {cue: tune_weights(cases, idf, {cue: GRID[cue]})[0].__dict__[cue] for cue in COMPONENTS}


def print_answer_report(report: dict, title: str, out=None) -> None:
    """First-quote / any-quote rates: a summary per pool, then per language for each half."""
    out = out or sys.stdout
    names = list(report)
    print(f"\n{title}: share of questions whose FIRST quote / ANY quote holds the answer", file=out)
    for half in ("tune", "test"):
        if half not in report[names[0]]:
            continue
        print(f"\n  {half} half (articles at {'even' if half == 'tune' else 'odd'} positions)", file=out)
        print("  " + "variant".ljust(22) + "".join(f"{k:>16}" for k in report[names[0]][half]), file=out)
        for name in names:
            cells = "".join(f"{m['mean']['first']:>8.3f}/{m['mean']['any']:.3f}" for m in report[name][half].values())
            print("  " + name.ljust(22) + cells, file=out)
        base, now = report[names[0]][half], report[names[-1]][half]
        for kind in base:
            langs = [k for k in base[kind] if k != "mean"]
            print(f"  {kind:<7} first, per language: " + "  ".join(
                f"{lang} {base[kind][lang]['first']:.2f}->{now[kind][lang]['first']:.2f}" for lang in langs), file=out)


def corpus_answer_report(path: Path, settings: Settings) -> dict:
    """First-quote / any-quote rates of `ask()` on questions about the indexed corpus, before
    (quotes by passage) and now; `path` holds {"evidence": [strings], "questions": {lang: q}}."""
    from qa.answer import ask

    facts = json.loads(Path(path).read_text(encoding="utf-8"))
    report = {}
    for name, method in (("by passage (before)", BY_PASSAGE), ("ranked (now)", RANKED)):
        by_lang: dict[str, list[tuple[bool, bool]]] = {}
        for fact in facts:
            for lang, question in fact["questions"].items():
                quotes = [c.evidence for c in ask(question, settings=settings, quotes=method).citations]
                holds = [any(e in q for e in fact["evidence"]) for q in quotes]
                by_lang.setdefault(lang, []).append((bool(holds and holds[0]), any(holds)))
        every = [x for rows in by_lang.values() for x in rows]
        report[name] = {
            "first": round(float(np.mean([f for f, _ in every])), 3),
            "any": round(float(np.mean([a for _, a in every])), 3),
            "n": len(every),
            "by_language": {lang: round(float(np.mean([f for f, _ in rows])), 3) for lang, rows in sorted(by_lang.items())},
        }
    return report
