"""The "not found" decision measured: how many answerable questions it refuses and how many
unanswerable ones it lets through, before, previously and now, on XQuAD and on the indexed
corpus, and its thresholds and sentence weight chosen on the tune half."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from qa.answer import combined_evidence
from qa.answer_eval.cases import TUNED_ON, UNANSWERABLE, AnswerCase
from qa.config import Settings

__all__ = [
    "OLD_MIN_SIMILARITY",
    "PREVIOUS_GATE",
    "SENTENCE_WEIGHTS",
    "calibrate_gate",
    "corpus_gate_report",
    "format_gate_report",
    "gate_report",
    "tune_gate",
]

OLD_MIN_SIMILARITY = 0.79  # the gate before: one raw cosine, any language pair
# The gate before the sentence share (`qa.answer.combined_evidence`): the passage's evidence score
# alone, "not found" under 0.42, hedged under 0.423 (2nd and 5th percentiles of the tune half).
PREVIOUS_GATE = {"evidence_sentence_weight": 0.0, "min_evidence": 0.42, "strong_evidence": 0.423}
SENTENCE_WEIGHTS = (0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0)  # `tune_gate`'s grid


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
