"""`qa eval`'s report as text (the summary table, the matrices, the per-pair tables, the weights
chosen on the tune half, the replies' measures) and its per-pair figures for the JSON results."""

from __future__ import annotations

import io
from typing import TYPE_CHECKING

import numpy as np

from qa.config import Settings
from qa.evaluate.metrics import Report

if TYPE_CHECKING:
    from qa.evaluate.runner import EvalRun

__all__ = ["format_comparison", "format_matrix", "format_pairs", "format_run"]


def _format_absent(absent: dict) -> str:
    """`absent_language_centering`'s result as text."""
    lines = [
        (
            "\nQuestions in a language the corpus lacks (own question mean withheld), centred on the others' "
            f"mean x share: chosen on the tune half {absent['chosen on the tune half']}, shipped "
            f"(qa.rank.ABSENT_LANGUAGE_CENTERING) {absent['shipped']}"
        ),
        "share   tune cross/mixed R@1   test cross/mixed R@1",
    ]
    for share, row in absent["grid"].items():
        tune, test = row["tune"], row["test"]
        lines.append(f"{share:<6}  {tune['cross R@1']:.4f} / {tune['mixed R@1']:.4f}        "
                     f"{test['cross R@1']:.4f} / {test['mixed R@1']:.4f}")  # fmt: skip
    return "\n".join(lines)


def _fmt(value: float) -> str:
    return f"{value:.3f}"


def _short(value: float) -> str:
    """A rate in 5 characters: ".934", and "1.00" for 1."""
    return f"{value:.2f}" if value >= 0.9995 else f"{value:.3f}"[1:]


def format_comparison(reports: dict[str, Report]) -> str:
    """The summary table: one row per metric, one column per scorer, and the last minus the first."""
    names = list(reports)
    summaries = {n: r.summary() for n, r in reports.items()}
    keys = list(summaries[names[0]])
    width = max(len(k) for k in keys) + 2
    lines = ["Summary (means over language pairs)", "metric".ljust(width) + "".join(n.rjust(12) for n in names) + "      Δ"]
    for key in keys:
        values = [summaries[n][key] for n in names]
        delta = values[-1] - values[0]
        lines.append(key.ljust(width) + "".join(_fmt(v).rjust(12) for v in values) + f"{delta:+7.3f}")
    return "\n".join(lines)


def format_matrix(report: Report, langs: list[str], title: str, attr: str = "r1") -> str:
    """Recall@1 per question language (rows) and passage language (columns), and the needle's."""
    lines = [
        f"{title}: Recall@1, rows = question language, columns = passage language",
        "Q\\P " + "".join(p.rjust(6) for p in langs) + "  needle",
    ]
    for q in langs:
        if q not in report.mixed:  # no question in this language (in this half)
            continue
        row = "".join(
            _short(getattr(report.single[(q, p)], attr)).rjust(6) if (q, p) in report.single else "-".rjust(6)
            for p in langs
        )
        needles = [report.needle[(q, p)].r1 for p in langs if (q, p) in report.needle]
        lines.append(f"{q:<4}" + row + (f"  {np.mean(needles):.3f}" if needles else "       -"))
    return "\n".join(lines)


def format_pairs(reports: dict[str, Report], langs: list[str]) -> str:
    """Per language pair, each scorer side by side: needle R@1 and R@5 (Q -> P), and per question
    language the mixed pool's R@1, R@5 and top hit in the asker's language."""
    names = list(reports)
    head = "".join(f"{n[:16]:>18}" for n in names)
    lines = ["Needle per language pair (R@1 / R@5)", "Q->P   " + head]
    for q in langs:
        for p in langs:
            if (q, p) in reports[names[0]].needle:
                cells = "".join(
                    f"{r.needle[(q, p)].r1:>12.3f}/{r.needle[(q, p)].r5:.3f}" for r in reports.values()
                )
                lines.append(f"{q}->{p:<4}" + cells)
    lines += ["", "Mixed pool per question language (R@1 / R@5 / top hit in the asker's language)", "Q      " + head]
    for q in langs:
        if q in reports[names[0]].mixed:
            cells = "".join(
                f"{r.mixed[q].r1:>6.3f}/{r.mixed[q].r5:.3f}/{r.mixed[q].own_lang_top1:.3f}" for r in reports.values()
            )
            lines.append(f"{q:<7}" + cells)
    return "\n".join(lines)


def format_run(run: EvalRun) -> str:
    """`qa eval`'s report: the summary table, a matrix per scorer and, when measured, the replies."""
    from qa.answer_eval import format_answer_report

    heading = f"{run.data_name}, test half (articles at odd positions; no weight was chosen on them)"
    parts = [heading, format_comparison(run.reports)]
    parts += ["\n" + format_matrix(report, run.langs, name) for name, report in run.reports.items()]
    parts += ["\n" + format_pairs(run.reports, run.langs)]
    if run.weights is not None:
        fusion = run.results["fusion weights"]
        parts.append(
            f"\nFusion weights (BM25, sentence) chosen on the tune half (even articles): "
            f"{run.weights.lexical}, {run.weights.sentence}; shipped (QA_LEXICAL_WEIGHT, QA_SENTENCE_WEIGHT): "
            f"{fusion['shipped']['lexical']}, {fusion['shipped']['sentence']}"
        )
        grid = fusion["grid (tune half)"]
        sentences = sorted({float(k.split()[1]) for k in grid})
        rows = ["Tune half, needle R@1 / same R@1 per weight: rows BM25, columns sentence",
                "BM25 " + "".join(f"{w:>12}" for w in sentences)]  # fmt: skip
        for lexical in sorted({float(k.split()[0]) for k in grid}):
            cells = [grid.get(f"{lexical} {w}") for w in sentences]
            rows.append(f"{lexical:<5}" + "".join(
                f"{c['needle R@1']:>6.3f}/{c['same R@1']:.3f}" if c else " " * 12 for c in cells))
        parts.append("\n".join(rows))
    if "absent language" in run.results:
        parts.append(_format_absent(run.results["absent language"]))
    if run.tune_reports:
        parts += ["\n" + run.data_name + ", tune half (where the weights were chosen)", format_comparison(run.tune_reports)]
    answers = run.results.get("answers")
    if answers:
        tuned = answers.get("tuned_weights")
        if tuned:
            parts.append(
                f"\nQuote weights chosen on the tune half's mixed and needle pools: {tuned['weights']} "
                f"(first quote {tuned['tune_first']:.3f}); each cue alone: {tuned['alone']}"
            )
        parts.append(_format_gap_and_gate(answers, run.settings or Settings()))
        parts.append(format_answer_report(answers["xquad"], "XQuAD answers"))
        if "corpus" in answers:
            parts.append(f"\nCorpus questions ({run.questions}): first quote / any quote")
            for name, row in answers["corpus"].items():
                langs = " ".join(f"{k} {v:.2f}" for k, v in row["by_language"].items())
                parts.append(
                    f"  {name:<22}{row['first']:.3f} / {row['any']:.3f}  (n={row['n']}; first by language: {langs}); "
                    f"quotes holding the evidence {row['precision']:.3f} of {row['quotes']:.2f} a reply; "
                    f"hedged {row['weak']:.3f}, not found {row['not_found']:.3f}"
                )
        for kind, row in answers.get("corpus_gate", {}).items():
            parts.append(
                f"  {kind} ({row['n']}): 'not found' {row['not_found_before']:.3f} -> previous "
                f"{row.get('not_found_previous', float('nan')):.3f} -> now {row['not_found']:.3f}, hedged "
                f"{row.get('weak_previous', float('nan')):.3f} -> {row['weak']:.3f}; per language (before, now, "
                f"hedged): {row['by_language']}; changed from previous: {row.get('changed', [])}"
            )
    return "\n".join(parts)


def _format_gap_and_gate(answers: dict, settings: Settings) -> str:
    """The quote gap and the "not found" thresholds chosen on the tune half, and the decision's report."""
    from qa.answer_eval import format_gate_report
    from qa.quotes import EVIDENCE_GAP

    gap = answers["tuned_gap"]
    grid = ", ".join(
        f"{g} {r['any']:.3f}/{r['precision']:.3f}/{r['quotes']:.2f}" for g, r in gap["grid"].items()
    )
    text = io.StringIO()
    print(
        f"\nQuote gap from the tune half (highest share of quotes holding the answer, any-quote within 0.01 "
        f"of three quotes): {gap['gap']} (in use: {EVIDENCE_GAP}); any / share / quotes per gap: {grid}",
        file=text,
    )
    print(
        f"\n\"Not found\" thresholds from the tune half: {answers['gate_calibration']} (in use: min_evidence "
        f"{settings.min_evidence}, strong_evidence {settings.strong_evidence})",
        file=text,
    )
    if "tuned_gate" in answers:
        gate = answers["tuned_gate"]
        grid = "; ".join(f"{w}: {r['min_evidence']}/{r['strong_evidence']} refused {r['refused']:.4f}"
                         for w, r in gate["grid"].items())  # fmt: skip
        print(
            f"Sentence weight of the evidence score from the tune half (most unanswerable tune questions refused "
            f"at thresholds losing at most 1 % of any pair's answerable ones): {gate['evidence_sentence_weight']} "
            f"(in use: {settings.evidence_sentence_weight}); weight: min/strong thresholds, refused: {grid}",
            file=text,
        )
    text.write(format_gate_report(answers["gate"], settings))
    return text.getvalue()
