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

The package: `cases` (each question run against each pool, as `AnswerCase`s), `replies` (the
answer-level metrics: the quotes' rates, the quote weights and gap chosen on the tune half) and
`gate` (the "not found" decision's report and its thresholds).
"""

from __future__ import annotations

from qa.answer_eval.cases import AnswerCase, answer_cases, top_visible
from qa.answer_eval.gate import calibrate_gate, corpus_gate_report, format_gate_report, gate_report, tune_gate
from qa.answer_eval.replies import (
    corpus_answer_report,
    format_answer_report,
    tune_alone,
    tune_gap,
    tune_weights,
    variants,
    xquad_answer_report,
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
    "top_visible",
    "tune_alone",
    "tune_gap",
    "tune_gate",
    "tune_weights",
    "variants",
    "xquad_answer_report",
]
