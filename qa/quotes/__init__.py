"""Which sentences a reply quotes: one ranking over every sentence of the best passages.

`ask()` and `qa eval` both call `select_quotes`, so the answer-level figures that `qa eval`
prints describe the replies users get.

A reply used to quote the best sentence of passage 1, then of passage 2, and so on; the passage
ranked first often holds the topic but not the answer, which sits in passage 2 or 3. Here every
sentence of the candidate passages competes at once, on:

- its dense score, standardized against the sentences of its own language (`qa.rank`), so that
  a sentence in another language is not buried by the model's language preference;
- its lexical match: the share of the question's word weight (BM25 idf, the corpus's own
  statistics, the language's analyzer of `qa.lexical`) that the sentence contains, so rare
  words and names count and "the"/"de" do not;
- its passage's rank among the candidate passages of its own language: the ranking weighs whole
  passages with more evidence than one sentence, and counting only passages of the sentence's
  language keeps the ranking's residual preference for the asker's language out of it;
- whether it holds the kind of thing asked for: a number for "how many / what percentage /
  何パーセント", a date for "when / いつ", a name for "who / 誰"; a percentage, a sum of money
  or a date counts for more than a bare number or a capitalized word, which most sentences hold;
- for a question asking for a name, whether the sentence names someone the other candidates do
  not: the names a whole topic repeats (the company, its chief) are no answer, the one that a
  single sentence holds ("Nvidia", "Anthropic") often is;
- how well the heading it sits under matches the question: a section's sentences rarely repeat
  what its heading says.

`BY_PASSAGE` keeps the previous choice (best sentence of each passage, in passage order) as a
named alternative; `qa eval` reports both side by side.

The package: `cues` (what a sentence's text says: the kind of answer it holds, its names, its
numbers and dates in any language) and `ranking` (the features, their weights and the choice).
"""

from __future__ import annotations

from qa.quotes.cues import SPECIFIC_TYPES, anchors, answer_type, new_names
from qa.quotes.ranking import (
    BY_PASSAGE,
    EVIDENCE_GAP,
    RANKED,
    SENTENCE_END,
    TRANSLATION_COSINE,
    QuoteWeights,
    SentenceCandidate,
    pick,
    ranked_scores,
    select_quotes,
    sentence_features,
    translations,
)

__all__ = [
    "BY_PASSAGE",
    "EVIDENCE_GAP",
    "RANKED",
    "SENTENCE_END",
    "SPECIFIC_TYPES",
    "TRANSLATION_COSINE",
    "QuoteWeights",
    "SentenceCandidate",
    "anchors",
    "answer_type",
    "new_names",
    "pick",
    "ranked_scores",
    "select_quotes",
    "sentence_features",
    "translations",
]
