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
from dataclasses import dataclass
from itertools import product
from pathlib import Path

import numpy as np

from qa.answer import ANSWER_CANDIDATES as CANDIDATES  # as `ask()`
from qa.answer import CITED_PASSAGES as QUOTED
from qa.answer import combined_evidence, evidence_scores
from qa.config import Settings
from qa.quotes import (
    BY_PASSAGE,
    EVIDENCE_GAP,
    RANKED,
    SENTENCE_END,
    QuoteWeights,
    SentenceCandidate,
    pick,
    ranked_scores,
    select_quotes,
    sentence_features,
    translations,
)

__all__ = [
    "AnswerCase",
    "answer_cases",
    "calibrate_gate",
    "corpus_answer_report",
    "corpus_gate_report",
    "format_answer_report",
    "format_gate_report",
    "gate_report",
    "tune_alone",
    "tune_gap",
    "tune_gate",
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
    p_lang: str = ""  # where the answer is: the asker's language (single, mixed), P (needle), "" (unanswerable)
    evidence: float = float("nan")  # best `qa.answer.combined_evidence` among the ranked passages
    cosine: float = float("nan")  # best cosine among them (the gate before)
    # (n passages, 2): each ranked passage's `evidence_scores` and its best sentence's (the
    # weight between them is chosen from these, `tune_gate`)
    evidence_rows: np.ndarray | None = None
    previous: float = float("nan")  # best passage `evidence_scores` alone (the gate before `combined_evidence`)


COMPONENTS = (
    "lexical", "rank", "answer_type", "context", "anchors", "specific_type", "new_name", "language_rank", "heading",
    "passage_score",
)  # fmt: skip
# 1728 combinations (several minutes with the six languages); the values each cue was found to
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
}
# Pools whose question the pool cannot answer: its paragraph removed in every language (the
# rest of its article stays), or its whole article removed.
UNANSWERABLE = ("no paragraph", "no article")
OLD_MIN_SIMILARITY = 0.79  # the gate before: one raw cosine, any language pair
# The gate before the sentence share (`qa.answer.combined_evidence`): the passage's evidence score
# alone, "not found" under 0.42, hedged under 0.423 (2nd and 5th percentiles of the tune half).
PREVIOUS_GATE = {"evidence_sentence_weight": 0.0, "min_evidence": 0.42, "strong_evidence": 0.423}
SENTENCE_WEIGHTS = (0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0)  # `tune_gate`'s grid
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


def top_visible(scores: np.ndarray, groups: np.ndarray, langs: np.ndarray, lang: str, k: int) -> list[list[int]]:
    """The k best translation groups of each question, shown as `qa.retrieval` shows them (the
    member in the asker's language when the group has one), among the passages a pool holds:
    a passage scored -inf is not in the pool, so it is never the member shown. (Folding by the
    full groups would show a needle question the answer in its own language, which the needle
    pool removed.)"""
    from qa.evaluate.metrics import _top
    from qa.rank import group_members

    members = group_members(groups)
    out = []
    for qi, ranked in enumerate(_top(scores, k=min(scores.shape[1], 40 * k)).tolist()):
        visible = np.isfinite(scores[qi])
        rows, seen = [], set()
        for row in ranked:
            group = int(groups[row])
            if not visible[row] or group in seen:
                continue
            seen.add(group)
            shown = [m for m in members.get(group, [row]) if langs[m] == lang and visible[m]]
            rows.append(shown[0] if shown else row)
            if len(rows) == k:
                break
        out.append(rows)
    return out


def _ranked_rows(scores: np.ndarray, pipeline, pool, q_lang: str, kind: str, hide: np.ndarray | None) -> list[list[int]]:
    from qa.evaluate.metrics import _top

    if kind == "single":
        cols = np.flatnonzero(pool.langs == q_lang)
        return cols[_top(scores[:, cols], CANDIDATES)].tolist()
    if hide is not None:
        scores = np.where(hide, -np.inf, scores)
    return top_visible(scores, pipeline.groups, pool.langs, q_lang, CANDIDATES)


def answer_cases(data, pool, queries: dict[str, np.ndarray], pipeline, settings: Settings) -> list[AnswerCase]:
    """Every question of `data` in the single-language, mixed and needle pools, as `AnswerCase`s.

    `pipeline` is a prepared `qa.evaluate.Pipeline` (its ranking, groups, sentence statistics).
    """
    gold = data.answer_paragraph
    half = np.where(data.article_of[gold] % 2 == 0, "tune", "test")
    by_row = [np.flatnonzero(pool.sentence_owner == row) for row in range(len(pool.texts))]
    cases, unit = [], None
    for q_lang in data.langs:
        raw = queries[q_lang]
        scores = pipeline.scores(raw, data.questions[q_lang], q_lang, pool)
        centered = pipeline.stats.center_query(raw, q_lang, settings.query_centering)
        cosine = raw @ pool.sentence_vectors.T
        z = pipeline.sentence_stats.standardize(
            centered, centered @ pool.sentence_vectors.T, pipeline.sentence_lang_ids
        )
        similarity = raw @ pool.vectors.T
        if unit is None:  # every sentence without its language's mean (translations are found in it)
            norms = np.linalg.norm(pool.sentence_vectors, axis=1, keepdims=True).clip(1e-12)
            unit = pipeline.sentence_stats.centered(pool.sentence_vectors / norms, pipeline.sentence_lang_ids)
        evidence = evidence_scores(raw.T, pool.vectors, pipeline.stats.means[pipeline.lang_ids], settings.evidence_centering).T
        sentence_evidence = _best_sentence_evidence(raw, pool, pipeline, settings.evidence_centering)
        article = data.article_of[pool.para]
        plans = [("single", q_lang, None), ("mixed", q_lang, None)]
        plans += [("needle", p, (pool.langs[None, :] != p) & (pool.para[None, :] == gold[:, None]))
                  for p in data.langs if p != q_lang]  # fmt: skip
        plans += [("no paragraph", "", pool.para[None, :] == gold[:, None]),
                  ("no article", "", article[None, :] == data.article_of[gold][:, None])]  # fmt: skip
        for kind, p_lang, hide in plans:
            tops = _ranked_rows(scores, pipeline, pool, q_lang, kind, hide)
            for qi, rows in enumerate(tops):
                top_cosine = float(similarity[qi, rows].max())
                parts = np.stack([evidence[qi, rows], sentence_evidence[qi, rows]], axis=1)
                best = float(combined_evidence(parts[:, 0], parts[:, 1], settings.evidence_sentence_weight).max())
                gate = {"evidence": best, "cosine": top_cosine, "evidence_rows": parts, "previous": float(parts[:, 0].max())}
                if kind in UNANSWERABLE:  # only the gate is measured on these
                    cases.append(AnswerCase(kind, q_lang, str(half[qi]), data.questions[q_lang][qi], [],
                                            np.zeros(0, bool), p_lang=p_lang, **gate))  # fmt: skip
                    continue
                if best < settings.min_evidence:  # as `ask()`: "not found", nothing quoted
                    rows = []
                candidates, correct = [], []
                for position, row in enumerate(rows):
                    lang = str(pool.langs[row])
                    answer = data.answers[lang][qi]
                    for s in by_row[row].tolist():
                        a, b = pool.sentence_spans[s].tolist()
                        text = pool.texts[row][a:b]
                        candidates.append(
                            SentenceCandidate(position, (row, a), text, lang, float(cosine[qi, s]), float(z[qi, s]),
                                              text[-1:] in SENTENCE_END, unit[s], float(scores[qi, row]))
                        )  # fmt: skip
                        correct.append(bool(answer) and pool.para[row] == gold[qi] and answer in text)
                cases.append(AnswerCase(kind, q_lang, str(half[qi]), data.questions[q_lang][qi],
                                        candidates, np.array(correct, bool), p_lang=p_lang, **gate))  # fmt: skip
    return cases


def _best_sentence_evidence(raw: np.ndarray, pool, pipeline, centering: float) -> np.ndarray:
    """(n questions, n passages): the best sentence `evidence_scores` of each passage, as
    `qa.answer.sentence_evidence` computes it for the passages shown (NaN without sentences)."""
    if pipeline.sentence_stats is None:  # sentences not scored: the passage's score stands alone
        return np.full((len(raw), len(pool.texts)), np.nan)
    means = pipeline.sentence_stats.means[pipeline.sentence_lang_ids]
    scores = evidence_scores(raw.T, pool.sentence_vectors, means, centering).T
    out = np.full((len(raw), len(pool.texts)), -np.inf, np.float32)
    np.maximum.at(out.T, pool.sentence_owner, scores.T)
    return np.where(np.isfinite(out), out, np.nan)


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
    if case._features is None:  # computed once per case: the variants differ only in their weights
        case._features = sentence_features(case.question, case.candidates, idf)
    # What `select_quotes` does, from the cached features.
    scores = ranked_scores(case._features, weights or QuoteWeights())
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


def corpus_gate_report(path: Path, off_topic: Path | None, settings: Settings) -> dict:
    """The "not found" decision on the indexed corpus, per question language: the questions of
    `path` (answerable) and of `off_topic` ({"questions": {lang: [questions]}}, unanswerable),
    before (any of the 10 best passages at cosine `OLD_MIN_SIMILARITY` or more), with the
    previous evidence score (`PREVIOUS_GATE`) and now (`ask()`); "changed" lists the questions
    whose "not found" differs between previous and now."""
    from qa.answer import ANSWER_CANDIDATES, ask, evidence_strength, passage_evidence
    from qa.lang import detect_language
    from qa.retrieval import get_engine

    engine = get_engine(settings)
    previous = settings.model_copy(update=PREVIOUS_GATE)
    asked = [(lang, q, True) for fact in json.loads(Path(path).read_text(encoding="utf-8"))
             for lang, q in fact["questions"].items()]  # fmt: skip
    if off_topic is not None:
        unanswerable = json.loads(Path(off_topic).read_text(encoding="utf-8"))["questions"]
        asked += [(lang, q, False) for lang, questions in unanswerable.items() for q in questions]
    out: dict = {"answerable": {}, "off-topic": {}}
    changed: dict = {"answerable": [], "off-topic": []}
    for lang, question, answerable in asked:
        passages = engine.search(question, ANSWER_CANDIDATES, lang=detect_language(question, cache_dir=settings.cache_dir))
        before = not any(p.similarity >= OLD_MIN_SIMILARITY for p in passages)
        evidence = passage_evidence(passages, engine.embedder.encode_query(question), passages.loaded_index, previous)
        old = evidence_strength(float(evidence.max()) if len(evidence) else -np.inf, previous)
        answer = ask(question, settings=settings)
        kind = "answerable" if answerable else "off-topic"
        out[kind].setdefault(lang, []).append((before, not answer.found, answer.weak_evidence, old == "none", old == "weak"))
        if (old == "none") != (not answer.found):
            changed[kind].append(f"{question} ({'now not found' if not answer.found else 'now answered'})")
    summary: dict = {}
    for kind, by_lang in out.items():
        if not by_lang:
            continue
        every = np.array([x for rows in by_lang.values() for x in rows], float)
        summary[kind] = {
            "not_found_before": round(float(every[:, 0].mean()), 3),
            "not_found_previous": round(float(every[:, 3].mean()), 3),
            "not_found": round(float(every[:, 1].mean()), 3),
            "weak_previous": round(float(every[:, 4].mean()), 3),
            "weak": round(float(every[:, 2].mean()), 3),
            "n": len(every),
            "by_language": {lang: [round(float(x), 3) for x in np.mean(rows, axis=0)[:3]] for lang, rows in sorted(by_lang.items())},
            "changed": changed[kind],
        }
    return summary


# ---------------------------------------------------------------------- the "not found" decision
def _pair(case: AnswerCase) -> str:
    return f"{case.q_lang}>{case.p_lang}"


def _evidence(case: AnswerCase, weight: float | None) -> float:
    """The case's best evidence score: as computed (`weight` None), or with this sentence weight."""
    if weight is None or case.evidence_rows is None:
        return case.evidence
    return float(combined_evidence(case.evidence_rows[:, 0], case.evidence_rows[:, 1], weight).max())


def calibrate_gate(
    cases: list[AnswerCase], not_found: float = 0.01, weak: float = 0.05, weight: float | None = None
) -> dict[str, float]:
    """`min_evidence` and `strong_evidence` from the tune half: the lowest `not_found` and `weak`
    quantiles, over language pairs, of the evidence score of answerable questions (mixed pool:
    the answer in the asker's language; needle: only in P), so that no pair loses more than
    `not_found` of them to "not found", nor more than `weak` to a hedged reply. `weight`: the
    sentence share (`qa.answer.combined_evidence`) to score with, else the cases' own scores."""
    by_pair: dict[str, list[float]] = {}
    for c in cases:
        if c.half == "tune" and c.pool in TUNED_ON:
            by_pair.setdefault(_pair(c), []).append(_evidence(c, weight))
    return {
        "min_evidence": round(min(float(np.quantile(v, not_found)) for v in by_pair.values()), 3),
        "strong_evidence": round(min(float(np.quantile(v, weak)) for v in by_pair.values()), 3),
    }


def tune_gate(cases: list[AnswerCase], weights: tuple[float, ...] = SENTENCE_WEIGHTS, not_found: float = 0.01) -> dict:
    """The sentence share of the evidence score (`Settings.evidence_sentence_weight`) from the
    tune half: for each weight, thresholds from `calibrate_gate` (no pair loses more than
    `not_found` of its answerable questions), then the share of the tune half's unanswerable
    questions (`UNANSWERABLE`, every question language) refused; the weight refusing the most."""
    unanswerable = [c for c in cases if c.half == "tune" and c.pool in UNANSWERABLE]
    grid = {}
    for weight in weights:
        gate = calibrate_gate(cases, not_found=not_found, weight=weight)
        refused = np.mean([_evidence(c, weight) < gate["min_evidence"] for c in unanswerable]) if unanswerable else 0.0
        grid[weight] = {**gate, "refused": round(float(refused), 4)}
    best = max(grid, key=lambda w: grid[w]["refused"])
    return {"evidence_sentence_weight": best, **{k: v for k, v in grid[best].items() if k != "refused"},
            "grid": {str(w): r for w, r in grid.items()}}  # fmt: skip


def gate_report(cases: list[AnswerCase], settings: Settings) -> dict:
    """Per half: answerable questions (mixed and needle pools) per language pair, how many get
    "not found" before (cosine under `OLD_MIN_SIMILARITY`), with the previous evidence score
    (`PREVIOUS_GATE`, when the cases carry it) and now (`qa.answer.evidence_strength`), and how
    many get the hedged reply (previous and now); unanswerable ones (`UNANSWERABLE`) per
    question language, how many are refused and hedged, the same ways."""
    from qa.answer import evidence_strength

    previous = settings.model_copy(update=PREVIOUS_GATE)
    out: dict = {}
    for half in ("tune", "test"):
        pairs: dict[str, list[tuple]] = {}
        refused: dict[str, dict[str, list[tuple]]] = {k: {} for k in UNANSWERABLE}
        for c in cases:
            if c.half != half or c.pool not in (*TUNED_ON, *UNANSWERABLE):
                continue
            now = evidence_strength(c.evidence, settings)
            old = evidence_strength(c.evidence if np.isnan(c.previous) else c.previous, previous)
            row = (c.cosine < OLD_MIN_SIMILARITY, now == "none", now == "weak", old == "none", old == "weak")
            (refused[c.pool].setdefault(c.q_lang, []) if c.pool in UNANSWERABLE else pairs.setdefault(_pair(c), [])).append(row)
        table = {"answerable": {}, **{k: {} for k in UNANSWERABLE}}
        for pair, rows in sorted(pairs.items()):
            before, now, weak, old, old_weak = np.mean(rows, axis=0)
            table["answerable"][pair] = {"not_found_before": round(float(before), 3), "not_found": round(float(now), 3),
                                         "weak": round(float(weak), 3), "not_found_previous": round(float(old), 3),
                                         "weak_previous": round(float(old_weak), 3), "n": len(rows)}  # fmt: skip
        for kind in UNANSWERABLE:
            for lang, rows in sorted(refused[kind].items()):
                before, now, weak, old, old_weak = np.mean(rows, axis=0)
                table[kind][lang] = {"refused_before": round(float(before), 3), "refused": round(float(now), 3),
                                     "weak": round(float(weak), 3), "refused_previous": round(float(old), 3),
                                     "weak_previous": round(float(old_weak), 3), "n": len(rows)}  # fmt: skip
        out[half] = table
    return out


def _column(rows: dict[str, dict], key: str) -> list[float]:
    return [r.get(key, float("nan")) for r in rows.values()]


def _worst(rows: dict[str, dict], values: list[float]) -> str:
    """"0.035 (en>zh)": the highest value and its pair."""
    return f"{max(values):.3f} ({list(rows)[int(np.argmax(values))]})"


def format_gate_report(report: dict, settings: Settings) -> str:
    """The "not found" decision before, previously and now: worst and mean language pair, the
    hedged share, unanswerable questions refused, then every pair."""
    lines = []
    lines.append(f"\nXQuAD \"not found\": before = cosine < {OLD_MIN_SIMILARITY}; previous = passage evidence score < "
                 f"{PREVIOUS_GATE['min_evidence']} (hedged under {PREVIOUS_GATE['strong_evidence']}); now = evidence "
                 f"score with sentence weight {settings.evidence_sentence_weight} < {settings.min_evidence} "
                 f"(hedged under {settings.strong_evidence})")  # fmt: skip
    for half, table in report.items():
        pairs = table["answerable"]
        before, old, now = (_column(pairs, k) for k in ("not_found_before", "not_found_previous", "not_found"))
        lines.append(f"  {half} half: answerable, false 'not found' worst pair {_worst(pairs, before)} -> "
                     f"previous {_worst(pairs, old)} -> now {_worst(pairs, now)}, mean "
                     f"{np.mean(before):.4f} -> {np.mean(old):.4f} -> {np.mean(now):.4f}; hedged "
                     f"{np.mean(_column(pairs, 'weak_previous')):.4f} -> {np.mean(_column(pairs, 'weak')):.4f}")  # fmt: skip
        for kind in UNANSWERABLE:
            by_lang = table[kind]
            mean = {k: np.mean(_column(by_lang, k)) for k in
                    ("refused_before", "refused_previous", "refused", "weak_previous", "weak")}  # fmt: skip
            lines.append(f"    unanswerable ({kind}): refused {mean['refused_before']:.3f} -> previous "
                         f"{mean['refused_previous']:.3f} -> now {mean['refused']:.3f}, hedged "
                         f"{mean['weak_previous']:.3f} -> {mean['weak']:.3f}")  # fmt: skip
        lines.append("    false 'not found' per pair (Q>P, before/previous/now): " + "  ".join(
            f"{p} {r['not_found_before']:.3f}/{r.get('not_found_previous', float('nan')):.3f}/{r['not_found']:.3f}"
            for p, r in pairs.items()))  # fmt: skip
    return "\n".join(lines)


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
