"""Answer-level metrics: does the reply's first quote (or any quote) hold the answer, for each way
of choosing the quotes, and the quote weights and gap chosen on the tune half."""

from __future__ import annotations

import json
from itertools import product
from pathlib import Path

import numpy as np

from qa.answer import CITED_PASSAGES as QUOTED
from qa.answer_eval.cases import POOLS, TUNED_ON, AnswerCase
from qa.config import Settings
from qa.quotes import (
    BY_PASSAGE,
    EVIDENCE_GAP,
    RANKED,
    QuoteWeights,
    pick,
    ranked_scores,
    select_quotes,
    sentence_features,
    translations,
)

__all__ = [
    "COMPONENTS",
    "GAPS",
    "GRID",
    "corpus_answer_report",
    "format_answer_report",
    "run_variant",
    "tune_alone",
    "tune_gap",
    "tune_weights",
    "variants",
    "xquad_answer_report",
]

COMPONENTS = (
    "lexical", "rank", "answer_type", "context", "anchors", "specific_type", "new_name", "language_rank", "heading",
    "passage_score", "lexical_in_passage",
)  # fmt: skip
# 3456 combinations (several minutes with the six languages); the values each cue was found to
# need, around its chosen weight. XQuAD's paragraphs have no headings: "heading" stays at its
# weight (`QuoteWeights.heading`), shown, not chosen.
GRID = {
    "lexical": [0, 2, 8],
    "rank": [0, 0.25],
    "answer_type": [0, 0.25, 0.5],
    "context": [0, 0.1],
    "anchors": [0, 1, 2],
    "specific_type": [0, 0.5],
    "new_name": [0, 0.25],
    "language_rank": [0, 0.1],
    "heading": [0.1],
    "passage_score": [0, 0.25],
    "lexical_in_passage": [0, 1],
}


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


def _outcome(case: AnswerCase, chosen: list[int], beside: list[int | None] | None = None) -> tuple:
    """(first quote holds the answer, any quote does, not found, quotes shown, quotes holding it);
    a quote holds it when it or the translation shown beside it (`beside`) does."""
    beside = beside or [None] * len(chosen)
    hits = [bool(case.correct[i]) or (t is not None and bool(case.correct[t])) for i, t in zip(chosen, beside)]
    return bool(hits and hits[0]), any(hits), not chosen, len(hits), sum(hits)


def _quotes(case: AnswerCase, method: str, weights: QuoteWeights | None, idf, gap: float | None) -> tuple:
    """The quotes as `qa.answer.quote_evidence` chooses them: (chosen, translation beside each)."""
    if method != RANKED or not case.candidates:
        return select_quotes(case.question, case.candidates, QUOTED, idf=idf, method=method), None
    # What `select_quotes` does, from the case's features (computed once: the variants differ
    # only in their weights).
    scores = ranked_scores(case.features(idf), weights or QuoteWeights())
    chosen = pick(case.candidates, scores, 2 * QUOTED, EVIDENCE_GAP if gap is None else gap)
    pairs = translations(case.candidates, chosen, case.q_lang)[:QUOTED]
    return [i for i, _ in pairs], [t for _, t in pairs]


def run_variant(
    cases: list[AnswerCase], method: str, weights: QuoteWeights | None, idf, gap: float | None = None
) -> np.ndarray:
    """(n_cases, 5) outcomes (`_outcome`) of one selection over every case, through `select_quotes`."""
    return np.array([_outcome(c, *_quotes(c, method, weights, idf, gap)) for c in cases]).reshape(-1, 5)


def _table(cases: list[AnswerCase], outcomes: np.ndarray) -> dict:
    """{half: {pool: {lang: {first, any, precision, not_found, n}, "mean": ...}}}: means over
    languages; precision is the share of the quotes shown that hold the answer."""
    out: dict = {}
    for half in ("tune", "test"):
        for kind in POOLS:
            rows: dict = {}
            for lang in sorted({c.q_lang for c in cases}):
                mask = np.array([c.half == half and c.pool == kind and c.q_lang == lang for c in cases])
                if mask.any():
                    first, anywhere, missing, shown, holding = outcomes[mask].mean(axis=0)
                    rows[lang] = {"first": round(float(first), 3), "any": round(float(anywhere), 3),
                                  "precision": round(float(holding / max(shown, 1e-9)), 3),
                                  "quotes": round(float(shown), 2),
                                  "not_found": round(float(missing), 3), "n": int(mask.sum())}  # fmt: skip
            if rows:
                rows["mean"] = {
                    k: round(float(np.mean([r[k] for r in rows.values()])), 3)
                    for k in ("first", "any", "precision", "quotes")
                }
                out.setdefault(half, {})[kind] = rows
    return out


def xquad_answer_report(
    cases: list[AnswerCase], idf, weights: QuoteWeights | None = None, alone: dict[str, float] | None = None
) -> dict:
    """Every variant (`variants`) over every case: {variant: `_table`}. The last, "ranked
    (now)", quotes only sentences within `EVIDENCE_GAP` of the first; "ranked, 3 quotes" is the
    same ranking always quoting three (the previous rule)."""
    cases = [c for c in cases if c.pool in POOLS]
    out = {}
    for name, (method, w) in variants(weights, alone).items():
        if name == "ranked (now)":
            out["ranked, 3 quotes"] = _table(cases, run_variant(cases, method, w, idf, gap=np.inf))
        out[name] = _table(cases, run_variant(cases, method, w, idf, gap=None if name == "ranked (now)" else np.inf))
    return out


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
        w = QuoteWeights(**dict(zip(COMPONENTS, values)))
        hits = np.array([_outcome(c, pick(c.candidates, ranked_scores(f, w), QUOTED))[0] if c.candidates else False
                         for c, f in zip(tune, features)])  # fmt: skip
        score = float(np.mean([hits[m].mean() for m in members]))
        if score > best_score + 1e-9:
            best, best_score = w, score
    return best, best_score


def tune_alone(cases: list[AnswerCase], idf) -> dict[str, float]:
    """Each cue's best weight with the others off (tune half): what it buys on its own."""
    return {cue: tune_weights(cases, idf, {cue: GRID[cue]})[0].__dict__[cue] for cue in COMPONENTS}


def format_answer_report(report: dict, title: str) -> str:
    """First-quote / any-quote rates: a summary per pool, then per language for each half."""
    lines = []
    names = list(report)
    lines.append(f"\n{title}: share of questions whose FIRST quote / ANY quote holds the answer")
    for half in ("tune", "test"):
        if half not in report[names[0]]:
            continue
        lines.append(f"\n  {half} half (articles at {'even' if half == 'tune' else 'odd'} positions)")
        lines.append("  " + "variant".ljust(22) + "".join(f"{k:>16}" for k in report[names[0]][half]))
        for name in names:
            cells = "".join(f"{m['mean']['first']:>8.3f}/{m['mean']['any']:.3f}" for m in report[name][half].values())
            lines.append("  " + name.ljust(22) + cells)
        lines.append("  share of shown quotes holding the answer / quotes per reply: " + "; ".join(
            f"{name} " + " ".join(f"{m['mean']['precision']:.3f}/{m['mean']['quotes']:.2f}" for m in report[name][half].values())
            for name in names[-2:]))  # fmt: skip
        base, now = report[names[0]][half], report[names[-1]][half]
        for kind in base:
            langs = [k for k in base[kind] if k != "mean"]
            lines.append(f"  {kind:<7} first, per language: " + "  ".join(
                f"{lang} {base[kind][lang]['first']:.2f}->{now[kind][lang]['first']:.2f}" for lang in langs))
    return "\n".join(lines)


def corpus_answer_report(path: Path, settings: Settings, off_topic: Path | None = None) -> dict:
    """First-quote / any-quote rates of `ask()` on questions about the indexed corpus, before
    (quotes by passage) and now; `path` holds [{"evidence": [strings], "questions": {lang: q}}].
    Also the share of shown quotes holding the evidence, and of replies hedged or "not found"."""
    from qa.answer import ask

    facts = json.loads(Path(path).read_text(encoding="utf-8"))
    report = {}
    for name, method in (("by passage (before)", BY_PASSAGE), ("ranked (now)", RANKED)):
        by_lang: dict[str, list[tuple[bool, bool, int, int, bool, bool]]] = {}
        for fact in facts:
            for lang, question in fact["questions"].items():
                answer = ask(question, settings=settings, quotes=method)
                holds = [any(e in c.evidence for e in fact["evidence"]) for c in answer.citations]
                by_lang.setdefault(lang, []).append(
                    (bool(holds and holds[0]), any(holds), len(holds), sum(holds), not answer.found, answer.weak_evidence)
                )
        every = np.array([x for rows in by_lang.values() for x in rows], float)
        report[name] = {
            "first": round(float(every[:, 0].mean()), 3),
            "any": round(float(every[:, 1].mean()), 3),
            "precision": round(float(every[:, 3].sum() / max(every[:, 2].sum(), 1)), 3),
            "quotes": round(float(every[:, 2].mean()), 2),
            "not_found": round(float(every[:, 4].mean()), 3),
            "weak": round(float(every[:, 5].mean()), 3),
            "n": len(every),
            "by_language": {lang: round(float(np.mean([r[0] for r in rows])), 3) for lang, rows in sorted(by_lang.items())},
        }
    return report


GAPS = (0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, np.inf)


def tune_gap(cases: list[AnswerCase], idf, weights: QuoteWeights | None = None, loss: float = 0.01) -> dict:
    """`EVIDENCE_GAP` from the tune half (mixed and needle pools): the gap with the highest share
    of shown quotes holding the answer whose any-quote rate is within `loss` of quoting three."""
    tune = [c for c in cases if c.half == "tune" and c.pool in TUNED_ON]
    rows = {}
    for gap in GAPS:
        o = run_variant(tune, RANKED, weights, idf, gap=gap)
        rows[gap] = (float(o[:, 1].mean()), float(o[:, 4].sum() / max(o[:, 3].sum(), 1)), float(o[:, 3].mean()))
    full = rows[np.inf][0]
    best = max((g for g in GAPS if rows[g][0] >= full - loss), key=lambda g: rows[g][1])
    return {"gap": best, "grid": {str(g): dict(zip(("any", "precision", "quotes"), r)) for g, r in rows.items()}}
