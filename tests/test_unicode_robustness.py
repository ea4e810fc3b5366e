"""Any text a news desk may scrape goes through token counting, chunking and embedding.

Property tests with the real model's tokenizer and model: text drawn from every Unicode general
category (surrogates aside: they cannot be stored in UTF-8 text), with the characters that break
text pipelines weighted up (zero-width and format characters, the fraction slash, combining
marks, also alone at the start, variation selectors, astral characters, right-to-left marks,
ideographic spaces), mixed with digits, sentence ends and words of many scripts. Nothing raises,
every passage is an exact slice within the budget, and the token count of a text is the one the
embedding sees. Then every paragraph of XQuAD (12 languages), chunked and counted.

QA_FUZZ_EXAMPLES scales the number of generated texts (default 200 -> 50 per property here).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qa.chunk import chunk_article, split_sentences
from qa.config import Settings
from qa.ingest import make_doc_id
from qa.models import Article

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = max(10, int(os.environ.get("QA_FUZZ_EXAMPLES", "200")) // 4)
PROPERTY = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# The characters text pipelines trip on, each on its own so that they come up often.
SPECIALS = [
    "\u200b", "\u200c", "\u200d", "\u200e", "\u200f",  # zero-width space/joiners, LRM, RLM
    "\u2060", "\ufeff", "\u00ad", "\u180e", "\u2061",  # word joiner, BOM, soft hyphen, invisible operators
    "\u2044", "\u2215", "\u00bd", "\u2153",  # fraction slash, division slash, vulgar fractions
    "\u0301", "\u0300", "\u0308", "\u20dd", "\u0e31", "\u093f", "\u0651",  # combining marks
    "\ufe0f", "\ufe0e", "\U000e0100", "\U0001f3fb",  # variation selectors, skin tone
    "\u202a", "\u202b", "\u202e", "\u202c", "\u2066", "\u2069", "\u061c",  # bidi controls
    "\u3000", "\u00a0", "\u202f", "\u2009", "\u2028", "\u2029", "\u0085", "\t", "\n", "\r\n",
    "\U0001f600", "\U0001f468\u200d\U0001f469\u200d\U0001f467", "\U0001f1eb\U0001f1f7",  # emoji
    "\U00020000", "\U0002a6d6", "\U0001d400", "\U00010348", "\U0001f9d1\U0001f3fd",  # astral
    "\x00", "\x1b", "\x7f", "\ue000", "\U000f0000", "\ufffd", "\uffff", "\U0010ffff",  # controls, private, nonchars
    "\u0378",  # unassigned
]
WORDS = [
    "NTSC", "30\u20441.001", "29.97", "1,000", "٣٤٥", "४२", "๓๓", "½",  # digits of several scripts
    "news", "Zürich", "naïve", "Ελλάδα", "Москва", "القاهرة", "ירושלים", "दिल्ली", "กรุงเทพ",
    "東京都", "北京市", "서울", "ካይሮ", "சென்னை", "თბილისი", "Երևան", "ꯏꯝꯐꯥꯜ", "𐌰𐌱𐌲",
    "Hà Nội", "İstanbul", "Bucureşti",
]
ENDS = [". ", "! ", "? ", "。", "！", "؟ ", "। ", " ", "\n\n", "… ", "; "]
ANY_CHAR = st.characters(exclude_categories=["Cs"])  # every other general category, astral included
PIECE = st.one_of(
    st.sampled_from(SPECIALS),
    st.sampled_from(WORDS),
    st.sampled_from(ENDS),
    st.text(ANY_CHAR, min_size=1, max_size=6),
    st.integers(0, 10**6).map(str),
)
LEADING = st.sampled_from(["", "\u0301", "\u0308\u0301", "\u200b", "\ufeff", "\u202e", "\ufe0f", "\u3000"])
# Lengths spread evenly up to several passages' worth (hypothesis alone favours short lists).
PIECES = st.integers(0, 250).flatmap(lambda n: st.lists(PIECE, min_size=n, max_size=n))
TEXT = st.tuples(LEADING, PIECES).map(lambda parts: parts[0] + "".join(parts[1]))


@pytest.fixture(scope="module")
def embedder():
    from qa.embed import get_embedder

    embedder = get_embedder(Settings())
    embedder.count_tokens(["warm"])  # load the model once, outside the examples
    return embedder


def used_tokens(embedder, text: str) -> int:
    """How many tokens the embedding of `text` as a passage actually reads (padding excluded)."""
    model = embedder.model
    features = model.preprocess([text], prompt=model.prompts["document"], task="document")
    return int(features["attention_mask"].sum())


def article(text: str) -> Article:
    return Article(doc_id=make_doc_id("t", text), title="t", text=text, lang="en", source="t.txt")


def check_chunks(text: str, chunks, count_tokens, budget: int) -> None:
    """Exact slices, in order, within the budget, their counts right, every visible character kept."""
    covered = bytearray(len(text))
    for chunk in chunks:
        assert chunk.text == text[chunk.start : chunk.end] and chunk.text
        assert chunk.n_tokens <= budget
        covered[chunk.start : chunk.end] = b"\x01" * (chunk.end - chunk.start)
    assert [c.n_tokens for c in chunks] == count_tokens([c.text for c in chunks])
    assert [c.start for c in chunks] == sorted(c.start for c in chunks)
    assert all(is_covered or char.isspace() for is_covered, char in zip(covered, text))


@PROPERTY
@given(texts=st.lists(TEXT, min_size=0, max_size=4))
def test_count_tokens_never_fails_and_counts_what_the_embedding_reads(embedder, texts: list[str]) -> None:
    counts = embedder.count_tokens(texts)
    assert len(counts) == len(texts)
    (base,) = embedder.count_tokens([""])
    for text, count in zip(texts, counts):
        assert count >= base
        assert embedder.count_tokens([text]) == [count]  # a batch counts each text as alone
        if count <= embedder.max_tokens:
            assert used_tokens(embedder, text) == count  # same prompt, same normalized text


@PROPERTY
@given(text=TEXT, budget=st.sampled_from([32, 64, 200]), overlap=st.integers(0, 2))
def test_chunk_article_never_fails_on_any_text(embedder, text: str, budget: int, overlap: int) -> None:
    chunks = chunk_article(article(text), embedder.count_tokens, budget, overlap)
    check_chunks(text, chunks, embedder.count_tokens, budget)


@settings(max_examples=max(5, EXAMPLES // 3), deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(text=TEXT)
def test_encode_documents_never_fails_on_any_text(embedder, text: str) -> None:
    chunks = chunk_article(article(text), embedder.count_tokens, 64, 1)
    # A few passages and sentences (embedding costs ~100x counting), and the start of the raw text.
    texts = [text[:100], *(c.text for c in chunks[:2]), *(text[a:b] for a, b in split_sentences(text)[:3])]
    vectors = embedder.encode_documents(texts)
    assert vectors.shape == (len(texts), embedder.dim) and vectors.dtype == np.float32
    assert np.isfinite(vectors).all()
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-3)


def test_every_xquad_paragraph_is_chunked_and_counted(embedder) -> None:
    from qa.xquad import find_xquad, load_xquad

    folder = find_xquad() or find_xquad(ROOT)
    if folder is None:
        pytest.skip("XQuAD not found (data/xquad or shared/data/xquad in this folder or above)")
    data = load_xquad(folder)
    budget = min(Settings().chunk_tokens, embedder.max_tokens)
    started, paragraphs, passages = time.perf_counter(), 0, 0
    for lang in data.langs:
        for number, paragraph in enumerate(data.paragraphs[lang]):
            doc = Article(doc_id=f"{lang}-{number}", title="t", text=paragraph, lang=lang, source=f"{lang}#{number}")
            chunks = chunk_article(doc, embedder.count_tokens, budget, Settings().chunk_overlap)
            assert chunks, (lang, number)
            check_chunks(paragraph, chunks, embedder.count_tokens, budget)
            paragraphs += 1
            passages += len(chunks)
    print(f"XQuAD: {paragraphs} paragraphs, {len(data.langs)} languages -> {passages} passages "
          f"in {time.perf_counter() - started:.1f} s")
    assert len(data.langs) >= 12 and paragraphs == len(data.langs) * data.n_paragraphs
